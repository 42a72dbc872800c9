//! `kith repair`.

use kith_engine::repair::repair_index;

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
    }
}
