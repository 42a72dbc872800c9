//! `kith snapshots`.

use crate::args::SnapshotsArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, args: &SnapshotsArgs) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    let (snapshots, errors) = repo.snapshots().await?;
    let snapshots: Vec<_> = snapshots
        .into_iter()
        .filter(|(_, s)| args.host.as_ref().is_none_or(|h| &s.host == h))
        .filter(|(_, s)| args.tags.iter().all(|t| s.tags.contains(t)))
        .collect();
    for e in &errors {
        eprintln!("error: {e}");
    }
    if ctx.global.json {
        let list: Vec<_> = snapshots
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": output::rfc3339(s.time),
                    "host": s.host,
                    "username": s.user,
                    "paths": s.paths,
                    "tags": s.tags,
                    "tree": s.tree.to_hex(),
                    "parent": s.parent.map(|p| p.to_hex()),
                    "original": s.original.map(|o| o.to_hex()),
                    "program_version": s.program,
                    "summary": {
                        "files_new": s.summary.files_new,
                        "files_changed": s.summary.files_changed,
                        "files_unmodified": s.summary.files_unmodified,
                        "files_failed": s.summary.files_failed,
                        "total_bytes": s.summary.total_bytes,
                        "data_added": s.summary.data_added,
                        "data_added_packed": s.summary.data_added_packed,
                        "duration_ms": s.summary.duration_ms,
                    },
                })
            })
            .collect();
        output::json(&list)?;
    } else {
        println!(
            "{:<10} {:<19} {:<16} {:<12} {:>10}  paths",
            "id", "time", "host", "tags", "size"
        );
        for (id, s) in &snapshots {
            println!(
                "{:<10} {:<19} {:<16} {:<12} {:>10}  {}",
                id.short(),
                output::local_time(s.time),
                s.host,
                s.tags.join(","),
                output::bytes(s.summary.total_bytes),
                s.paths.join(" ")
            );
        }
        if !ctx.global.quiet {
            println!("{} snapshots", snapshots.len());
        }
    }
    Ok(if errors.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}
