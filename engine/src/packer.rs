//! Writing blobs into new packs outside the backup pipeline (prune's
//! repacking, a backup commit's re-upload): seal, fill, store, and remember
//! each stored pack for the index delta that will list it.

use kith_storage::{Handle, Kind};

use crate::blob::{BlobKind, Encoder};
use crate::id::BlobId;
use crate::index::IndexPack;
use crate::pack::PackWriter;
use crate::repo::Repository;
use crate::{Error, Result};

/// Packs being filled and stored one at a time.
pub(crate) struct PackSink<'a> {
    repo: &'a Repository,
    writer: Option<PackWriter>,
    encoder: Encoder,
    /// Packs stored so far.
    pub(crate) stored: Vec<IndexPack>,
}

impl<'a> PackSink<'a> {
    pub(crate) fn new(repo: &'a Repository) -> Result<Self> {
        let level = repo.config().compression_level;
        Ok(PackSink {
            repo,
            writer: None,
            encoder: Encoder::new(level)
                .map_err(|e| Error::InvalidInput(format!("zstd level {level}: {e}")))?,
            stored: Vec::new(),
        })
    }

    /// Adds one blob; stores the pack once it is full.
    pub(crate) async fn add(&mut self, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<()> {
        let size = self.repo.config().pack_size as usize;
        let public = self.repo.write_keys().repo_public();
        let writer = self
            .writer
            .get_or_insert_with(|| PackWriter::new(&public, size + size / 8));
        writer.add(&mut self.encoder, kind, id, data)?;
        if writer.len() >= size {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        if w.is_empty() {
            return Ok(());
        }
        let pack = w.finish();
        let size = pack.bytes.len() as u64;
        self.repo
            .backend()
            .put(&Handle::new(Kind::Pack, pack.id.to_hex())?, pack.bytes)
            .await?;
        self.stored.push(IndexPack {
            id: pack.id,
            ephemeral: pack.ephemeral,
            size,
            blobs: pack.entries,
        });
        Ok(())
    }

    /// Stores the last pack; returns every pack stored.
    pub(crate) async fn finish(mut self) -> Result<Vec<IndexPack>> {
        self.flush().await?;
        Ok(self.stored)
    }
}
