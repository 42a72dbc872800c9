//! Adoption of packs that no index delta lists.
//!
//! A backup records its packs in an index delta every few dozen packs and at
//! the end. When it fails in between (the server or the network gone for
//! longer than the retry budget, the process killed), the packs it already
//! stored stay in the repository, complete (every backend's `put` is
//! atomic) but unknown to the index. Before the next backup starts, the
//! packs the index does not know are read (trailer and header only) and
//! recorded in one new delta, so that the blobs they hold are not uploaded
//! again. A pack whose header is damaged is left alone (`check` reports it).
//!
//! A pack that a concurrent backup has stored but not yet recorded may be
//! adopted too; it then appears in two deltas with the same entries, which
//! the index treats as one.

use kith_storage::Kind;

use crate::id::PackId;
use crate::index::{IndexCache, IndexFile};
use crate::repair::read_header;
use crate::repo::Repository;
use crate::{Error, Result};

/// Records the repository's unindexed packs in a new index delta; returns
/// how many were adopted. Needs the master secret (pack headers are
/// sealed); without it, nothing is done.
pub(crate) async fn adopt_unindexed(
    repo: &Repository,
    index: &std::sync::Arc<IndexCache>,
) -> Result<u64> {
    if repo.master().is_none() {
        return Ok(0);
    }
    let mut orphans = Vec::new();
    for object in repo.backend().list(Kind::Pack, "").await? {
        let Ok(id) = PackId::from_hex(object.handle.name()) else {
            continue;
        };
        if index.pack(&id)?.is_none() {
            orphans.push((id, object.size));
        }
    }
    if orphans.is_empty() {
        return Ok(0);
    }
    let mut packs = Vec::with_capacity(orphans.len());
    for (id, size) in orphans {
        match read_header(repo, &id, size).await {
            Ok(pack) => packs.push(pack),
            Err(e) if e.is_damage() => {
                tracing::warn!("pack {id} is not in the index and its header is unreadable: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    if packs.is_empty() {
        return Ok(0);
    }
    let adopted = packs.len() as u64;
    let file = IndexFile {
        packs,
        supersedes: Vec::new(),
    };
    let id = repo.write_index_file(&file).await?;
    let index = index.clone();
    tokio::task::spawn_blocking(move || index.add_index_files(&[(id, file)], false))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    Ok(adopted)
}
