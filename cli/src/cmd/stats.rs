//! `kith stats`.

use kith_engine::stats::stats;

use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    let s = stats(&repo).await?;
    if ctx.global.json {
        output::json(&s)?;
        return Ok(exit::OK);
    }
    if !s.snapshots.is_empty() {
        println!(
            "{:<10} {:>8} {:>12} {:>12} {:>12} {:>6} {:>12}",
            "id", "files", "restore", "raw", "stored", "ratio", "unique"
        );
    }
    for snap in &s.snapshots {
        println!(
            "{:<10} {:>8} {:>12} {:>12} {:>12} {:>5.2}x {:>12}",
            snap.id.short(),
            snap.files,
            output::bytes(snap.restore_size),
            output::bytes(snap.raw_size),
            output::bytes(snap.stored_size),
            snap.compression_ratio,
            output::bytes(snap.unique_stored_size)
        );
    }
    println!("snapshots:            {}", s.snapshots.len());
    println!(
        "total restore size:   {}",
        output::bytes(s.total_restore_size)
    );
    println!(
        "unique data (raw):    {} in {} blobs",
        output::bytes(s.raw_size),
        s.blobs
    );
    println!("stored:               {}", output::bytes(s.stored_size));
    println!("packs:                {}", output::bytes(s.packs_size));
    println!("compression ratio:    {:.2}x", s.compression_ratio);
    println!(
        "space saving ratio:   {:.2}x (restore size / stored)",
        s.space_saving_ratio
    );
    Ok(exit::OK)
}
