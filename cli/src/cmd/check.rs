//! `kith check`.

use std::sync::Arc;

use kith_engine::check::{check, CheckEvent, ReadData};

use crate::args::CheckArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

fn parse_percent(text: &str) -> Result<f64, CliError> {
    let n: f64 = text.trim().trim_end_matches('%').parse().map_err(|_| {
        CliError::Usage(format!(
            "--read-data-subset wants a percentage like 10%, not {text:?}"
        ))
    })?;
    if !(0.0..=100.0).contains(&n) {
        return Err(CliError::Usage(
            "--read-data-subset must be between 0% and 100%".into(),
        ));
    }
    Ok(n)
}

pub(crate) async fn run(ctx: &Context, args: &CheckArgs) -> Result<u8, CliError> {
    let read = if args.read_data {
        ReadData::All
    } else if let Some(p) = &args.read_data_subset {
        ReadData::Subset(parse_percent(p)?)
    } else {
        ReadData::None
    };
    let repo = ctx.open().await?;
    let quiet = ctx.global.quiet || ctx.global.json;
    let observer = Arc::new(move |e: &CheckEvent| {
        if let CheckEvent::Phase(p) = e {
            if !quiet {
                eprintln!("checking {p}");
            }
        }
    });
    let report = check(&repo, read, observer).await?;
    if ctx.global.json {
        output::json(&report)?;
    } else {
        for w in &report.warnings {
            eprintln!("warning: {}: {} ({})", w.object, w.message, w.kind);
        }
        for e in &report.errors {
            eprintln!("error: {}: {} ({})", e.object, e.message, e.kind);
        }
        if !ctx.global.quiet {
            println!(
                "{} snapshots, {} trees, {} packs ({} read), {} blobs: {}",
                report.snapshots,
                report.trees,
                report.packs,
                report.packs_read,
                report.blobs,
                if report.errors.is_empty() {
                    "no errors".to_owned()
                } else {
                    format!("{} errors", report.errors.len())
                }
            );
        }
    }
    Ok(if report.errors.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}
