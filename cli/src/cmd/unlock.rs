//! `kith unlock`.

use kith_engine::lock::unlock;

use crate::args::UnlockArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, args: &UnlockArgs) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    let removed = unlock(&repo, args.remove_all, repo.stale_after()).await?;
    if ctx.global.json {
        output::json(&serde_json::json!({ "removed": removed }))?;
    } else if !ctx.global.quiet {
        println!("removed {removed} locks and session markers");
    }
    Ok(exit::OK)
}
