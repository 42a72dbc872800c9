//! The second phase of a backup: under a brief shared lock, make sure every
//! blob the snapshot refers to is in a pack that exists and is not
//! condemned, store again whatever is not (from where it was read), and
//! write the snapshot, the commit point.
//!
//! Why the checks hold: a prune takes the exclusive lock, so none runs while
//! this lock is fresh; and the snapshot is written only if the check that
//! preceded it is less than half the staleness limit old. If the process was
//! suspended for longer (its lock may have looked abandoned, and a prune may
//! have run), it checks again; and if its lock went unrefreshed long enough
//! to look abandoned, it takes the lock again first, which waits for a
//! prune that began meanwhile, so that the check sees what that prune
//! condemned. A prune deletes a pack only a grace period
//! (at least the staleness limit) after condemning it, so a commit that
//! checked before the condemnation has written its snapshot before the
//! deletion, and the prune sees that snapshot and keeps the pack.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::blob::BlobKind;
use crate::condemned;
use crate::id::{BlobId, SnapshotId};
use crate::index::IndexPack;
use crate::lock;
use crate::packer::PackSink;
use crate::repo::Repository;
use crate::rewrite;
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};
use crate::{Error, Result};

use super::options::BackupEvent;
use super::pipeline::Shared;

/// How many times the check may find something to store again before the
/// commit gives up (each time, something else removed packs meanwhile).
const MAX_ROUNDS: usize = 8;

/// Commits `snapshot`; returns its id, the snapshot as written (its root
/// changes when files had to be left out) and the paths left out.
pub(crate) async fn commit(
    repo: &Repository,
    shared: &Arc<Shared>,
    mut snapshot: Snapshot,
) -> Result<(SnapshotId, Snapshot, Vec<(PathBuf, String)>)> {
    let stale = repo.stale_after();
    // A prune holding the lock is waited for; one that stopped refreshing
    // its lock stops counting after the staleness limit.
    let patience = (stale * 2).max(Duration::from_secs(10));
    let mut lost = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let mut held = lock::lock_patiently(repo, false, "backup commit", patience).await?;
        // Storing blobs again can take long: keep the lock fresh meanwhile.
        let watch = lock::Watch::default();
        let result = lock::refreshing(
            repo,
            &mut held,
            &watch,
            commit_locked(repo, shared, &mut snapshot, &mut lost, &watch),
        )
        .await;
        let released = held.release(repo).await;
        match result {
            // The lock looked abandoned for a while, so a prune may have
            // begun: take it again (waiting for that prune) and check again.
            Ok(Outcome::Lapsed) => {
                released?;
                tracing::info!("the commit lock lapsed; taking it again");
            }
            Ok(Outcome::Written(id)) => {
                released?;
                return Ok((id, snapshot, lost));
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Task(
        "this process kept losing its commit lock; no snapshot was written: run the backup again"
            .into(),
    ))
}

/// How a commit under one lock ended.
enum Outcome {
    Written(SnapshotId),
    /// The lock went unrefreshed long enough for others to ignore it.
    Lapsed,
}

async fn commit_locked(
    repo: &Repository,
    shared: &Arc<Shared>,
    snapshot: &mut Snapshot,
    lost_files: &mut Vec<(PathBuf, String)>,
    watch: &lock::Watch,
) -> Result<Outcome> {
    let stale = repo.stale_after();
    for _ in 0..MAX_ROUNDS {
        let checked = lock::Stopwatch::start();
        let needed = needed_blobs(shared, &snapshot.tree)?;
        let redo = unplaced(repo, shared, &needed).await?;
        if redo.is_empty() {
            if checked.elapsed() >= stale / 2 {
                // Suspended or starved since the check: check again.
                continue;
            }
            if !watch.is_current(stale) {
                // While this lock looked stale a prune may have condemned
                // packs after the check above: its exclusive lock must be
                // waited for before any check can be trusted.
                return Ok(Outcome::Lapsed);
            }
            let id = repo.write_snapshot(snapshot).await?;
            heal(repo, shared, &needed).await?;
            return Ok(Outcome::Written(id));
        }
        tracing::info!(
            blobs = redo.len(),
            "storing again blobs whose packs were removed or condemned"
        );
        let since = lock::Stopwatch::start();
        let (mut sink, lost) = reupload(repo, shared, &redo).await?;
        if !lost.is_empty() {
            let trees = load_trees(shared, &snapshot.tree)?;
            let usable = |b: &BlobId| !lost.contains(b);
            if let Some(r) = rewrite::drop_lost(snapshot.tree, &trees, &usable, repo.chunk_id_key())
            {
                for (id, bytes) in &r.trees {
                    shared.sources.tree(*id, bytes)?;
                    sink.add(BlobKind::Tree, *id, bytes).await?;
                }
                snapshot.tree = r.root;
                for (path, why) in r.lost {
                    shared.emit(&BackupEvent::Warning {
                        path: PathBuf::from(&path),
                        message: format!("left out of the snapshot: {why}"),
                    });
                    lost_files.push((PathBuf::from(path), why));
                    snapshot.summary.files_failed += 1;
                }
            }
        }
        record(repo, shared, sink.finish().await?, since).await?;
    }
    Err(Error::Task(
        "the packs this backup relies on keep disappearing; no snapshot was written: run the backup again"
            .into(),
    ))
}

/// Every blob reachable from `root`, read from the trees this backup made.
fn needed_blobs(shared: &Shared, root: &BlobId) -> Result<HashSet<BlobId>> {
    let trees = load_trees(shared, root)?;
    let mut out: HashSet<BlobId> = trees.keys().copied().collect();
    out.insert(*root);
    for t in trees.values() {
        for n in &t.nodes {
            if let NodeKind::File { content } = &n.kind {
                out.extend(content.iter().copied());
            }
        }
    }
    Ok(out)
}

/// The trees reachable from `root`, from this backup's spill.
fn load_trees(shared: &Shared, root: &BlobId) -> Result<HashMap<BlobId, Tree>> {
    let mut trees = HashMap::new();
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        if trees.contains_key(&id) {
            continue;
        }
        let Ok((BlobKind::Tree, bytes)) = shared.sources.read(&id) else {
            continue;
        };
        let tree = Tree::from_bytes(&bytes, &id)?;
        for n in &tree.nodes {
            if let NodeKind::Dir { subtree } = n.kind {
                stack.push(subtree);
            }
        }
        trees.insert(id, tree);
    }
    Ok(trees)
}

/// Blobs of `needed` whose pack is gone, condemned, or unknown.
async fn unplaced(
    repo: &Repository,
    shared: &Shared,
    needed: &HashSet<BlobId>,
) -> Result<Vec<BlobId>> {
    let alive = condemned::alive_packs(repo).await?;
    let placed = shared
        .placed
        .lock()
        .map_err(|_| Error::Task("blob places poisoned".into()))?;
    let mut out: Vec<BlobId> = needed
        .iter()
        .filter(|b| match placed.get(b) {
            Some(p) => !alive.contains(p),
            None => true,
        })
        .copied()
        .collect();
    out.sort();
    Ok(out)
}

/// Reads `blobs` again from their sources into new packs; returns the sink
/// (not yet finished) and the blobs that could not be had.
async fn reupload<'a>(
    repo: &'a Repository,
    shared: &Shared,
    blobs: &[BlobId],
) -> Result<(PackSink<'a>, HashSet<BlobId>)> {
    let mut sink = PackSink::new(repo)?;
    let mut lost = HashSet::new();
    for b in blobs {
        match shared.sources.read(b) {
            Ok((kind, bytes)) if shared.blob_id(&bytes) == *b => {
                sink.add(kind, *b, &bytes).await?;
            }
            Ok(_) => {
                tracing::warn!(blob = %b, path = ?shared.sources.path_of(b), "changed since it was read");
                lost.insert(*b);
            }
            Err(why) => {
                tracing::warn!(blob = %b, %why, "cannot be read again");
                lost.insert(*b);
            }
        }
    }
    Ok((sink, lost))
}

/// Lists newly stored packs (stored after `since`) in an index delta and in
/// the cache, and moves their blobs' places there.
async fn record(
    repo: &Repository,
    shared: &Arc<Shared>,
    stored: Vec<IndexPack>,
    since: lock::Stopwatch,
) -> Result<()> {
    if let Ok(mut placed) = shared.placed.lock() {
        for p in &stored {
            for b in &p.blobs {
                placed.insert(b.id, p.id);
            }
        }
    }
    super::delta::write_and_cache(repo, &shared.index, stored, since, false).await
}

/// After the snapshot is written: if a pack it needs vanished in the last
/// instant (this process was suspended between its check and its write),
/// store those blobs again so the snapshot is whole.
async fn heal(repo: &Repository, shared: &Arc<Shared>, needed: &HashSet<BlobId>) -> Result<()> {
    let redo = unplaced(repo, shared, needed).await?;
    if redo.is_empty() {
        return Ok(());
    }
    let since = lock::Stopwatch::start();
    let (sink, lost) = reupload(repo, shared, &redo).await?;
    record(repo, shared, sink.finish().await?, since).await?;
    if !lost.is_empty() {
        return Err(Error::corrupt(
            "the new snapshot",
            format!(
                "{} blobs it refers to were removed while it was written and cannot be read \
                 again; run `kith check` and `kith repair snapshots`",
                lost.len()
            ),
        ));
    }
    Ok(())
}
