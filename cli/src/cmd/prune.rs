//! `kith prune`.

use kith_engine::forget::parse_duration;
use kith_engine::prune::{prune, PruneOptions, PruneReport};
use kith_engine::{PackId, Repository};

use crate::args::{PruneArgs, PruneOptionArgs};
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

/// Prune options from flags.
pub(crate) fn options(args: &PruneOptionArgs, dry_run: bool) -> Result<PruneOptions, CliError> {
    let percent: f64 = args
        .max_unused
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| {
            CliError::Usage(format!(
                "--max-unused wants a percentage like 10%, not {:?}",
                args.max_unused
            ))
        })?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(CliError::Usage(
            "--max-unused must be between 0% and 100%".into(),
        ));
    }
    let grace =
        parse_duration(&args.grace).map_err(|e| CliError::Usage(format!("--grace: {e}")))?;
    Ok(PruneOptions::default()
        .max_unused_percent(percent)
        .grace(grace)
        .dry_run(dry_run))
}

fn ids(list: &[PackId]) -> Vec<String> {
    list.iter().map(PackId::to_hex).collect()
}

/// The report as JSON.
pub(crate) fn json(r: &PruneReport) -> serde_json::Value {
    serde_json::json!({
        "dry_run": r.dry_run,
        "snapshots": r.snapshots,
        "packs": r.packs,
        "blobs_used": r.blobs_used,
        "kept": r.kept,
        "condemned": ids(&r.condemned),
        "bytes_condemned": r.bytes_condemned,
        "repacked": ids(&r.repacked),
        "blobs_repacked": r.blobs_repacked,
        "packs_written": r.packs_written,
        "deleted": ids(&r.deleted),
        "bytes_deleted": r.bytes_deleted,
        "waiting": ids(&r.waiting),
        "rescued": ids(&r.rescued),
        "adopted": ids(&r.adopted),
        "forgotten": ids(&r.forgotten),
        "unreadable": r.unreadable.iter().map(|(p, e)| serde_json::json!({"pack": p.to_hex(), "error": e})).collect::<Vec<_>>(),
        "index_written": r.index_written,
        "index_removed": r.index_removed,
        "stale_records_removed": r.stale_records_removed,
        "deletion_postponed": r.deletion_postponed,
    })
}

/// The report for people, on stdout.
pub(crate) fn print(r: &PruneReport) {
    let would = if r.dry_run { "would " } else { "" };
    println!(
        "{} snapshots use {} blobs; {} packs, {} kept as they are",
        r.snapshots, r.blobs_used, r.packs, r.kept
    );
    println!(
        "{would}condemn {} packs ({}), of which {} repacked ({} blobs copied into {} new packs)",
        r.condemned.len(),
        output::bytes(r.bytes_condemned),
        r.repacked.len(),
        r.blobs_repacked,
        r.packs_written
    );
    println!(
        "{would}delete {} condemned packs ({}); {} wait for their grace period; {} rescued; {} adopted into the index",
        r.deleted.len(),
        output::bytes(r.bytes_deleted),
        r.waiting.len(),
        r.rescued.len(),
        r.adopted.len()
    );
    if r.deletion_postponed {
        println!(
            "deletion put off: this prune was paused for longer than the lock allows; run it again"
        );
    }
    if r.dry_run {
        println!("dry run: nothing changed");
    }
}

/// Runs a prune on an open repository and renders it; returns the exit code.
pub(crate) async fn run_on(
    ctx: &Context,
    repo: &Repository,
    options: &PruneOptions,
) -> Result<(u8, PruneReport), CliError> {
    let report = prune(repo, options).await?;
    for (pack, why) in &report.unreadable {
        eprintln!("error: pack {pack}: {why} (left alone)");
    }
    let code = if report.unreadable.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    };
    let _ = ctx;
    Ok((code, report))
}

pub(crate) async fn run(ctx: &Context, args: &PruneArgs) -> Result<u8, CliError> {
    let options = options(&args.options, args.dry_run)?;
    let repo = ctx.open().await?;
    let (code, report) = run_on(ctx, &repo, &options).await?;
    if ctx.global.json {
        output::json(&json(&report))?;
    } else if !ctx.global.quiet {
        print(&report);
    }
    Ok(code)
}
