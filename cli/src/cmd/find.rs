//! `kith find`.

use kith_engine::find::find;

use crate::args::FindArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, args: &FindArgs) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    let hits = find(&repo, &args.pattern, args.limit).await?;
    if ctx.global.json {
        let list: Vec<_> = hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "snapshot": h.snapshot.to_hex(),
                    "snapshot_time": output::rfc3339(h.snapshot_time),
                    "path": h.path,
                    "type": h.kind,
                    "size": h.size,
                    "mtime": output::rfc3339(h.mtime),
                    "score": h.score,
                })
            })
            .collect();
        output::json(&list)?;
    } else {
        for h in &hits {
            println!(
                "{}  {}  {:>10}  {}  {}",
                h.snapshot.short(),
                output::local_time(h.snapshot_time),
                if h.kind == "file" {
                    output::bytes(h.size)
                } else {
                    h.kind.to_owned()
                },
                output::local_time(h.mtime),
                h.path
            );
        }
        if !ctx.global.quiet {
            println!("{} matches", hits.len());
        }
    }
    Ok(if hits.is_empty() {
        exit::NOT_FOUND
    } else {
        exit::OK
    })
}
