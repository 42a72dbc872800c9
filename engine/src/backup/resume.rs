//! Resuming an interrupted backup: packs that a killed backup (or prune)
//! stored but never listed in an index delta are found by their headers and
//! indexed, so the next backup deduplicates against them instead of
//! uploading their blobs again.
//!
//! Why headers rather than a journal or more frequent deltas: a pack's
//! header is written with the pack in one atomic put, so every stored pack
//! can be found this way whatever moment the process died at, with no new
//! object kind; it costs one listing per backup (which the commit needs
//! anyway) and two ranged reads per unlisted pack.

use std::sync::Arc;

use kith_storage::Kind;

use crate::condemned;
use crate::id::PackId;
use crate::index::IndexCache;
use crate::lock::Stopwatch;
use crate::repo::Repository;
use crate::{Error, Result};

/// Packs per index delta written for found packs.
const PACKS_PER_DELTA: usize = 512;

/// Indexes every stored pack that no index delta lists and no prune
/// condemned; returns how many were found. Needs the repository secret (a
/// write-only key cannot read headers, and does not resume).
pub(crate) async fn adopt_unindexed(repo: &Repository, index: &Arc<IndexCache>) -> Result<usize> {
    if repo.master().is_none() {
        return Ok(0);
    }
    let mut unindexed = Vec::new();
    for o in repo.backend().list(Kind::Pack, "").await? {
        let Ok(id) = PackId::from_hex(o.handle.name()) else {
            continue;
        };
        if index.pack(&id)?.is_none() {
            unindexed.push((id, o.size));
        }
    }
    if unindexed.is_empty() {
        return Ok(0);
    }
    // Every pack kept below is present and not condemned from here on.
    let since = Stopwatch::start();
    let condemned = condemned::condemned_packs(repo).await?;
    let mut found = Vec::new();
    for (id, size) in unindexed {
        if condemned.contains_key(&id) {
            continue;
        }
        match crate::repair::read_header(repo, &id, size).await {
            Ok(p) => found.push(p),
            Err(e) if e.is_damage() || matches!(e, Error::Unsupported { .. }) => {
                tracing::warn!(pack = %id, error = %e, "leaving an unreadable pack alone");
            }
            // Removed by a prune between the listing and the read.
            Err(Error::Storage(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let count = found.len();
    for chunk in found.chunks(PACKS_PER_DELTA) {
        super::delta::write_and_cache(repo, index, chunk.to_vec(), since, true).await?;
    }
    if count > 0 {
        tracing::info!(
            packs = count,
            "indexed packs an interrupted run left behind"
        );
    }
    Ok(count)
}
