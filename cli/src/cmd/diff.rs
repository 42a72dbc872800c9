//! `kith diff`.

use kith_engine::diff::{diff_trees, Change};

use crate::args::DiffArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

fn mark(c: Change) -> char {
    match c {
        Change::Added => '+',
        Change::Removed => '-',
        Change::Modified => 'M',
        Change::Metadata => 'U',
        Change::Type => 'T',
    }
}

pub(crate) async fn run(ctx: &Context, args: &DiffArgs) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    let (a_id, a) = repo.find_snapshot(&args.first).await?;
    let (b_id, b) = repo.find_snapshot(&args.second).await?;
    let diffs = diff_trees(&repo, &a.tree, &b.tree).await?;
    let count = |c: Change| diffs.iter().filter(|d| d.change == c).count();
    if ctx.global.json {
        output::json(&serde_json::json!({
            "first": a_id.to_hex(),
            "second": b_id.to_hex(),
            "changes": diffs,
            "added": count(Change::Added),
            "removed": count(Change::Removed),
            "modified": count(Change::Modified),
            "metadata": count(Change::Metadata),
            "type": count(Change::Type),
        }))?;
    } else {
        for d in &diffs {
            let sizes = match (d.size_before, d.size_after) {
                (Some(x), Some(y)) if x != y => {
                    format!("  ({} -> {})", output::bytes(x), output::bytes(y))
                }
                (None, Some(y)) => format!("  ({})", output::bytes(y)),
                (Some(x), None) => format!("  ({})", output::bytes(x)),
                _ => String::new(),
            };
            println!("{}  {}{sizes}", mark(d.change), d.path);
        }
        if !ctx.global.quiet {
            println!(
                "{} added, {} removed, {} modified, {} metadata only, {} changed type",
                count(Change::Added),
                count(Change::Removed),
                count(Change::Modified),
                count(Change::Metadata),
                count(Change::Type)
            );
        }
    }
    Ok(exit::OK)
}
