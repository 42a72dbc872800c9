//! `kith tag`.

use kith_engine::lock;

use crate::args::TagArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, args: &TagArgs) -> Result<u8, CliError> {
    if args.add.is_empty() && args.remove.is_empty() && args.set.is_empty() {
        return Err(CliError::Usage(
            "say what to change: --add, --remove or --set".into(),
        ));
    }
    let set: Option<Vec<String>> = if args.set.is_empty() {
        None
    } else {
        Some(args.set.iter().filter(|t| !t.is_empty()).cloned().collect())
    };
    let repo = ctx.open().await?;
    let targets = if args.snapshots.is_empty() {
        repo.snapshots().await?.0
    } else {
        let mut v = Vec::new();
        for spec in &args.snapshots {
            v.push(repo.find_snapshot(spec).await?);
        }
        v
    };
    // Rewriting snapshots must not race with maintenance.
    let changed = lock::with_lock(&repo, true, "tag", || async {
        let mut changed = Vec::new();
        for (id, snapshot) in &targets {
            let new = repo
                .retag(id, snapshot, &args.add, &args.remove, set.as_deref())
                .await?;
            if let Some(new) = new {
                changed.push((*id, new));
            }
        }
        Ok(changed)
    })
    .await?;
    if ctx.global.json {
        let list: Vec<_> = changed
            .iter()
            .map(|(old, new)| serde_json::json!({"old": old.to_hex(), "new": new.to_hex()}))
            .collect();
        output::json(&list)?;
    } else if !ctx.global.quiet {
        for (old, new) in &changed {
            println!("{} is now {}", old.short(), new.short());
        }
        println!("changed {} snapshots", changed.len());
    }
    Ok(exit::OK)
}
