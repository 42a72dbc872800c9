//! `kith repair`.

use kith_engine::repair::{repair_index, repair_snapshots};

use crate::args::RepairCommand;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, command: &RepairCommand) -> Result<u8, CliError> {
    match command {
        RepairCommand::Index => {
            let repo = ctx.open().await?;
            let report = repair_index(&repo).await?;
            if ctx.global.json {
                output::json(&report)?;
            } else {
                for (object, why) in &report.unreadable {
                    eprintln!("error: {object}: {why}");
                }
                if !ctx.global.quiet {
                    println!(
                        "indexed {} blobs in {} packs; wrote {} index files, removed {}",
                        report.blobs, report.packs, report.written, report.removed
                    );
                }
            }
            Ok(if report.unreadable.is_empty() {
                exit::OK
            } else {
                exit::DAMAGED
            })
        }
        RepairCommand::Snapshots { forget, dry_run } => {
            let repo = ctx.open().await?;
            let report = repair_snapshots(&repo, *forget, *dry_run).await?;
            if ctx.global.json {
                output::json(&report)?;
            } else {
                for (object, why) in &report.unreadable {
                    eprintln!("error: {object}: {why}");
                }
                if !ctx.global.quiet {
                    for r in &report.repaired {
                        match r.repaired {
                            Some(new) => println!(
                                "snapshot {} repaired as {}:",
                                r.original.short(),
                                new.short()
                            ),
                            None => println!("snapshot {} is damaged:", r.original.short()),
                        }
                        for (path, why) in &r.lost {
                            println!("  lost {path}: {why}");
                        }
                    }
                    let verb = if *dry_run { "would repair" } else { "repaired" };
                    println!(
                        "{verb} {} of {} snapshots; {} originals removed",
                        report.repaired.len(),
                        report.snapshots,
                        report.forgotten.len()
                    );
                }
            }
            // Unreadable records stay unless removed with --forget.
            let left_unreadable = !report.unreadable.is_empty() && (!*forget || *dry_run);
            Ok(if left_unreadable {
                exit::DAMAGED
            } else {
                exit::OK
            })
        }
    }
}
