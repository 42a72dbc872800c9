//! `kith cat`: repository objects, decrypted, for debugging.

use std::io::Write;

use kith_engine::{BlobId, IndexId, PackId};

use crate::args::CatCommand;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, command: &CatCommand) -> Result<u8, CliError> {
    let repo = ctx.open().await?;
    match command {
        CatCommand::Config => output::json(repo.config())?,
        CatCommand::Snapshot { id } => {
            let (id, snapshot) = repo.find_snapshot(id).await?;
            output::json(&serde_json::json!({ "id": id, "snapshot": snapshot }))?;
        }
        CatCommand::Index { id } => {
            output::json(&repo.read_index_file(&IndexId::from_hex(id)?).await?)?
        }
        CatCommand::Pack { id } => {
            let (bytes, _, entries) = repo.read_pack(&PackId::from_hex(id)?).await?;
            output::json(&serde_json::json!({ "size": bytes.len(), "blobs": entries }))?;
        }
        CatCommand::Tree { id } => output::json(&repo.read_tree(&BlobId::from_hex(id)?).await?)?,
        CatCommand::Blob { id } => {
            let data = repo.read_blob(&BlobId::from_hex(id)?).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(exit::OK)
}
