//! `kith forget`.

use kith_engine::forget::{forget, parse_duration, GroupBy, RetentionPolicy};

use crate::args::ForgetArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

fn group_by(text: &str) -> Result<GroupBy, CliError> {
    let mut g = GroupBy {
        host: false,
        paths: false,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "host" => g.host = true,
            "paths" => g.paths = true,
            other => {
                return Err(CliError::Usage(format!(
                    "--group-by knows host and paths, not {other:?}"
                )))
            }
        }
    }
    Ok(g)
}

pub(crate) async fn run(ctx: &Context, args: &ForgetArgs) -> Result<u8, CliError> {
    let mut policy = RetentionPolicy::default();
    policy.last = args.keep_last;
    policy.hourly = args.keep_hourly;
    policy.daily = args.keep_daily;
    policy.weekly = args.keep_weekly;
    policy.monthly = args.keep_monthly;
    policy.yearly = args.keep_yearly;
    policy.within = args
        .keep_within
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    policy.tags = args.keep_tags.clone();
    if !args.snapshots.is_empty() && !policy.is_empty() {
        return Err(CliError::Usage(
            "give snapshot ids or a policy, not both".into(),
        ));
    }
    let grouping = group_by(&args.group_by)?;
    let prune_options = if args.prune {
        Some(super::prune::options(&args.prune_options, args.dry_run)?)
    } else {
        None
    };
    let repo = ctx.open().await?;
    let mut ids = Vec::new();
    for spec in &args.snapshots {
        ids.push(repo.find_snapshot(spec).await?.0);
    }
    let report = forget(&repo, &policy, grouping, &ids, args.dry_run).await?;
    let pruned = match &prune_options {
        Some(o) => Some(super::prune::run_on(ctx, &repo, o).await?),
        None => None,
    };
    if ctx.global.json {
        let list: Vec<_> = report
            .decisions
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id.to_hex(),
                    "group": d.group,
                    "keep": d.keep,
                    "reasons": d.reasons,
                })
            })
            .collect();
        output::json(&serde_json::json!({
            "dry_run": args.dry_run,
            "snapshots": list,
            "removed": report.removed.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "prune": pruned.as_ref().map(|(_, r)| super::prune::json(r)),
        }))?;
    } else if !ctx.global.quiet {
        let mut group = None;
        for d in &report.decisions {
            if group != Some(&d.group) {
                println!("group {}:", d.group.trim());
                group = Some(&d.group);
            }
            let verdict = if d.keep {
                format!("keep ({})", d.reasons.join(", "))
            } else {
                "forget".to_owned()
            };
            println!("  {}  {verdict}", d.id.short());
        }
        let forgotten = report.decisions.iter().filter(|d| !d.keep).count();
        if args.dry_run {
            println!("would forget {forgotten} snapshots (dry run: nothing removed)");
        } else {
            println!(
                "forgot {} snapshots; run a prune to free their data",
                report.removed.len()
            );
        }
        if let Some((_, r)) = &pruned {
            super::prune::print(r);
        }
    }
    Ok(pruned.map(|(code, _)| code).unwrap_or(exit::OK))
}
