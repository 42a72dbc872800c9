//! `kith restore`.

use std::sync::Arc;

use kith_engine::restore::{restore, RestoreEvent, RestoreOptions};

use crate::args::RestoreArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, args: &RestoreArgs) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    let snapshot = repo.find_snapshot(&args.snapshot).await?;
    let options = RestoreOptions::default()
        .includes(args.includes.iter().cloned())
        .excludes(args.excludes.iter().cloned());
    let bar = output::byte_bar(&ctx.global);
    let b = bar.clone();
    let quiet = ctx.global.quiet;
    let observer = Arc::new(move |e: &RestoreEvent| match e {
        RestoreEvent::Planned { bytes, .. } => b.set_length(*bytes),
        RestoreEvent::Bytes(n) => b.inc(*n),
        RestoreEvent::Warning { path, message } if !quiet => {
            b.suspend(|| eprintln!("warning: {path}: {message}"));
        }
        _ => {}
    });
    if !quiet && !ctx.global.json {
        eprintln!(
            "restoring snapshot {} into {}",
            snapshot.0.short(),
            args.target.display()
        );
    }
    let outcome = restore(&repo, &snapshot, &args.target, &options, observer).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    if ctx.global.json {
        output::json(&serde_json::json!({
            "snapshot_id": snapshot.0.to_hex(),
            "target": args.target.display().to_string(),
            "files": outcome.files,
            "dirs": outcome.dirs,
            "others": outcome.others,
            "bytes": outcome.bytes,
            "errors": outcome.errors.iter().map(|(o, m)| serde_json::json!({"object": o, "error": m})).collect::<Vec<_>>(),
        }))?;
    } else {
        for (object, message) in &outcome.errors {
            eprintln!("error: {object}: {message}");
        }
        if !quiet {
            println!(
                "restored {} files, {} folders, {} other entries, {}",
                outcome.files,
                outcome.dirs,
                outcome.others,
                output::bytes(outcome.bytes)
            );
        }
    }
    Ok(if outcome.damage {
        exit::DAMAGED
    } else if outcome.errors.is_empty() {
        exit::OK
    } else {
        exit::ERROR
    })
}
