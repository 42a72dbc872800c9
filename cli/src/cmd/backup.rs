//! `kith backup`.

use std::sync::Arc;

use kith_engine::backup::{backup, BackupEvent, BackupOptions};
use kith_engine::Error;

use crate::args::BackupArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, args: &BackupArgs) -> Result<u8, CliError> {
    if args.paths.is_empty() {
        return Err(CliError::Config(
            "nothing to back up: give paths, or a profile (--profile) with paths".into(),
        ));
    }
    let repo = match ctx.open().await {
        Err(CliError::Engine(Error::RepositoryNotFound { .. })) if args.init => {
            let (repo, master) = super::init::create(ctx, &args.kdf, 16).await?;
            super::init::announce(ctx, &repo, &master);
            repo
        }
        other => other?,
    };
    let mut options = BackupOptions::default()
        .tags(args.tags.iter().cloned())
        .excludes(args.excludes.iter().cloned())
        .exclude_files(args.exclude_files.iter().cloned())
        .one_file_system(args.one_file_system)
        .force(args.force);
    if let Some(h) = &args.host {
        options = options.host(h.clone());
    }
    let bar = output::byte_bar(&ctx.global);
    let observer_bar = bar.clone();
    let quiet = ctx.global.quiet;
    let verbose = ctx.global.verbose;
    let observer = Arc::new(move |event: &BackupEvent| match event {
        BackupEvent::Bytes(n) => observer_bar.inc(*n),
        BackupEvent::Scanned { bytes, .. } => {
            observer_bar.set_length((*bytes).max(observer_bar.position()))
        }
        BackupEvent::ScanFinished { files, bytes } => {
            observer_bar.set_length(*bytes);
            observer_bar.set_message(format!("{files} files"));
        }
        BackupEvent::Warning { path, message } if !quiet => {
            observer_bar.suspend(|| eprintln!("warning: {}: {message}", path.display()));
        }
        BackupEvent::FileDone if verbose > 1 => {
            observer_bar.tick();
        }
        _ => {}
    });
    let outcome = backup(&repo, &args.paths, &options, observer).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    let s = &outcome.summary;
    if ctx.global.json {
        output::json(&serde_json::json!({
            "snapshot_id": outcome.id.to_hex(),
            "short_id": outcome.id.short(),
            "parent": outcome.snapshot.parent.map(|p| p.to_hex()),
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified,
            "files_failed": s.files_failed,
            "dirs": s.dirs,
            "total_bytes": s.total_bytes,
            "bytes_read": s.bytes_read,
            "data_added": s.data_added,
            "data_added_packed": s.data_added_packed,
            "blobs_added": s.blobs_added,
            "duration_ms": s.duration_ms,
            "failed": outcome.failed.iter().map(|(p, m)| serde_json::json!({"path": p.display().to_string(), "error": m})).collect::<Vec<_>>(),
            "adopted_packs": outcome.adopted_packs,
        }))?;
    } else if !ctx.global.quiet {
        println!(
            "Files: {} new, {} changed, {} unmodified{}",
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            if s.files_failed > 0 {
                format!(", {} unreadable", s.files_failed)
            } else {
                String::new()
            }
        );
        println!("Folders: {}", s.dirs);
        if outcome.adopted_packs > 0 {
            println!(
                "Recorded {} packs an earlier, unfinished backup had stored",
                outcome.adopted_packs
            );
        }
        println!(
            "Added: {} ({} stored) in {} new blobs; processed {} in total",
            output::bytes(s.data_added),
            output::bytes(s.data_added_packed),
            s.blobs_added,
            output::bytes(s.total_bytes)
        );
        println!("Duration: {:.2}s", s.duration_ms as f64 / 1000.0);
        println!("snapshot {} saved", outcome.id.short());
    }
    Ok(if s.files_failed > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    })
}
