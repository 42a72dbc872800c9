//! `kith copy`.

use kith_engine::copy::copy;
use kith_engine::Repository;

use crate::args::CopyArgs;
use crate::context::{Context, Secrets};
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, args: &CopyArgs) -> Result<u8, CliError> {
    let target = ctx.open().await?;
    let secrets = Secrets {
        password_file: args.from_password_file.clone(),
        password_command: args.from_password_command.clone(),
        password_env: "KITH_FROM_PASSWORD",
        master_key_file: args.from_master_key_file.clone(),
        master_key_env: "KITH_FROM_MASTER_KEY",
        what: "source repository",
    };
    let backend = ctx.backend_for(&args.from_repo, &secrets).await?;
    let source = Repository::open(backend, &secrets.credentials()?, ctx.cache_dir()).await?;
    let snapshots = if args.snapshots.is_empty() {
        source.snapshots().await?.0
    } else {
        let mut list = Vec::new();
        for spec in &args.snapshots {
            list.push(source.find_snapshot(spec).await?);
        }
        list
    };
    let report = copy(&source, &target, &snapshots).await?;
    if ctx.global.json {
        output::json(&serde_json::json!({
            "copied": report.copied.iter().map(|(from, to)| serde_json::json!({"original": from.to_hex(), "id": to.to_hex()})).collect::<Vec<_>>(),
            "skipped": report.skipped.iter().map(|(from, to)| serde_json::json!({"original": from.to_hex(), "id": to.to_hex()})).collect::<Vec<_>>(),
            "blobs_added": report.blobs_added,
            "bytes_added": report.bytes_added,
        }))?;
    } else if !ctx.global.quiet {
        for (from, to) in &report.copied {
            println!("copied {} as {}", from.short(), to.short());
        }
        for (from, to) in &report.skipped {
            println!("skipped {}: already copied as {}", from.short(), to.short());
        }
        println!(
            "{} snapshots copied, {} already there; {} new blobs ({})",
            report.copied.len(),
            report.skipped.len(),
            report.blobs_added,
            output::bytes(report.bytes_added)
        );
    }
    Ok(exit::OK)
}
