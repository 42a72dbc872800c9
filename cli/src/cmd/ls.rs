//! `kith ls`.

use std::io::Write;

use kith_engine::tree::{Node, NodeKind};
use kith_engine::walk::walk_snapshot;

use crate::args::LsArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

fn kind(node: &Node) -> &'static str {
    match node.kind {
        NodeKind::File { .. } => "file",
        NodeKind::Dir { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice { .. } => "chardev",
        NodeKind::BlockDevice { .. } => "blockdev",
        NodeKind::Socket => "socket",
    }
}

pub(crate) async fn run(ctx: &Context, args: &LsArgs) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    let (id, snapshot) = repo.find_snapshot(&args.snapshot).await?;
    let start = args.path.clone().unwrap_or_else(|| "/".into());
    let json = ctx.global.json;
    let long = args.long;
    let mut entries = Vec::new();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut write_error = None;
    if !json && !ctx.global.quiet {
        eprintln!(
            "snapshot {} of {:?} at {}",
            id.short(),
            snapshot.paths,
            output::local_time(snapshot.time)
        );
    }
    walk_snapshot(
        &repo,
        &snapshot.tree,
        &start,
        &mut |path: &str, node: &Node| {
            if json {
                entries.push(serde_json::json!({
                    "path": path,
                    "name": node.name_lossy(),
                    "type": kind(node),
                    "size": node.size,
                    "mode": node.mode,
                    "uid": node.uid,
                    "gid": node.gid,
                    "mtime": output::rfc3339(node.mtime),
                }));
                return;
            }
            let line = if long {
                format!(
                    "{:>7o} {:>6} {:>6} {:>12} {} {}",
                    node.mode & 0o7777,
                    node.uid,
                    node.gid,
                    node.size,
                    output::local_time(node.mtime),
                    path
                )
            } else {
                path.to_owned()
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_error.get_or_insert(e);
            }
        },
    )
    .await?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    out.flush()?;
    drop(out);
    if json {
        output::json(&entries)?;
    }
    Ok(exit::OK)
}
