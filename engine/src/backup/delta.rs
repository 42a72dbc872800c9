//! Index deltas of a backup, written so that none outlives a pack it lists.
//!
//! A backup writes deltas without a lock. If it was suspended after storing
//! a pack, a prune may have condemned that pack (nothing used it yet) and,
//! a grace period later, deleted it. A delta written after that second
//! prune read the index would then list a pack that is gone, and nothing
//! would ever remove it. A delta is safe when it reaches the repository
//! before `since + staleness`, where `since` is a moment at which every pack
//! it lists was known to be present and not condemned: a later condemnation
//! plus the grace period (at least the staleness limit) puts any deletion
//! after a prune that reads the delta, and that prune rewrites the index
//! without the pack.
//!
//! So a delta that took longer is checked after it is stored: if one of its
//! packs is condemned or gone, the delta is deleted and written again
//! without it (the commit stores that pack's blobs again). Deleting first
//! means a crash in between leaves unindexed packs, which the next backup
//! adopts, never a delta that lists a missing pack.

use std::sync::Arc;

use kith_storage::{Handle, Kind};

use crate::condemned;
use crate::id::IndexId;
use crate::index::{IndexCache, IndexFile, IndexPack};
use crate::lock::Stopwatch;
use crate::repo::Repository;
use crate::{Error, Result};

/// Stores a delta listing `packs`, all known present and not condemned at
/// `since` (for packs this process stored: when their upload began).
/// Returns the delta as stored, or `None` when none of the packs is left.
pub(crate) async fn write_checked(
    repo: &Repository,
    mut packs: Vec<IndexPack>,
    mut since: Stopwatch,
) -> Result<Option<(IndexId, IndexFile)>> {
    // Half the limit leaves room for the clocks of this host and the
    // pruning one running at slightly different rates.
    let safe_for = repo.stale_after() / 2;
    loop {
        if packs.is_empty() {
            return Ok(None);
        }
        let file = IndexFile {
            packs,
            supersedes: Vec::new(),
        };
        let id = repo.write_index_file(&file).await?;
        if since.elapsed() < safe_for {
            return Ok(Some((id, file)));
        }
        since = Stopwatch::start();
        let alive = condemned::alive_packs(repo).await?;
        let (kept, dropped): (Vec<IndexPack>, Vec<IndexPack>) =
            file.packs.into_iter().partition(|p| alive.contains(&p.id));
        if dropped.is_empty() {
            return Ok(Some((
                id,
                IndexFile {
                    packs: kept,
                    supersedes: Vec::new(),
                },
            )));
        }
        tracing::info!(
            packs = dropped.len(),
            "a prune removed packs this backup stored while it was suspended; \
             listing only the others"
        );
        match repo
            .backend()
            .delete(&Handle::new(Kind::Index, id.to_hex())?)
            .await
        {
            Ok(()) => {}
            // A prune rewrote the index meanwhile and removed it already.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        packs = kept;
    }
}

/// [`write_checked`], then adds the delta to `index` (`durable`: committed
/// to disk before returning).
pub(crate) async fn write_and_cache(
    repo: &Repository,
    index: &Arc<IndexCache>,
    packs: Vec<IndexPack>,
    since: Stopwatch,
    durable: bool,
) -> Result<()> {
    let Some(delta) = write_checked(repo, packs, since).await? else {
        return Ok(());
    };
    let index = index.clone();
    tokio::task::spawn_blocking(move || index.add_index_files(&[delta], durable))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
