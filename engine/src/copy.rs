//! Copying snapshots between repositories.
//!
//! Blob ids are keyed per repository, so a copy cannot move packs: it reads
//! every blob's plaintext from the source, names it with the target's key,
//! stores in new packs (sealed to the target) what the target lacks, and
//! rewrites every tree bottom-up with the new ids. The copy records its
//! source snapshot in `original`, so copying again skips it, and so does
//! copying it back to where it came from.
//!
//! Order, as in a backup: packs, then their index delta, then the snapshot.
//! The target is held under a shared lock, refreshed while the copy runs, so
//! no prune removes its new packs before the snapshot names them.

use std::collections::{HashMap, HashSet};

use crate::blob::BlobKind;
use crate::id::{BlobId, SnapshotId};
use crate::index::IndexFile;
use crate::packer::PackSink;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};
use crate::{Error, Result};

/// Deeper folders than this are refused (a hostile tree cannot make the
/// copy recurse without bound).
const MAX_DEPTH: usize = 4096;

/// What a copy did.
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// Source snapshot → its new copy.
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Source snapshots the target already had a copy of → that copy.
    pub skipped: Vec<(SnapshotId, SnapshotId)>,
    /// Blobs stored in the target.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
}

/// Copies `snapshots` of `source` into `target`.
pub async fn copy(
    source: &Repository,
    target: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<CopyReport> {
    source.secret("copying from a repository")?;
    target.secret("copying into a repository")?;
    if source.config().id == target.config().id {
        return Err(Error::InvalidInput(
            "the source and the target are the same repository".into(),
        ));
    }
    let mut held = crate::lock::lock(target, false, "copy", target.stale_after()).await?;
    let watch = crate::lock::Watch::default();
    let result = crate::lock::refreshing(
        target,
        &mut held,
        &watch,
        copy_locked(source, target, snapshots),
    )
    .await;
    let released = held.release(target).await;
    let report = result?;
    released?;
    Ok(report)
}

async fn copy_locked(
    source: &Repository,
    target: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let (existing, _) = target.snapshots().await?;
    // Every snapshot of the target under the first original it stands
    // for: a copy under the snapshot it copies, any other under itself, so
    // a snapshot copied A→B and then back B→A is recognised too.
    let copies: HashMap<SnapshotId, SnapshotId> = existing
        .iter()
        .map(|(id, s)| (s.original.unwrap_or(*id), *id))
        .collect();
    let mut copier = Copier {
        source,
        target,
        sink: PackSink::new(target)?,
        mapped: HashMap::new(),
        added: HashSet::new(),
        report: &mut report,
    };
    let mut pending = Vec::new();
    let mut seen = HashSet::new();
    for (id, snapshot) in snapshots {
        if !seen.insert(*id) {
            continue;
        }
        // A copy of a copy records the first original, so copying A→B→C
        // and A→C does not duplicate either.
        let original = snapshot.original.unwrap_or(*id);
        if let Some(existing) = copies.get(&original) {
            copier.report.skipped.push((*id, *existing));
            continue;
        }
        let tree = copier.tree(&snapshot.tree, 0).await?;
        let mut copy = snapshot.clone();
        copy.tree = tree;
        copy.parent = None;
        copy.original = Some(original);
        pending.push((*id, copy));
    }
    let stored = copier.sink.finish().await?;
    if !stored.is_empty() {
        target
            .write_index_file(&IndexFile {
                packs: stored,
                supersedes: Vec::new(),
            })
            .await?;
    }
    for (id, copy) in pending {
        let new = target.write_snapshot(&copy).await?;
        report.copied.push((id, new));
    }
    Ok(report)
}

struct Copier<'a> {
    source: &'a Repository,
    target: &'a Repository,
    sink: PackSink<'a>,
    /// Source blob id → target blob id.
    mapped: HashMap<BlobId, BlobId>,
    /// Target blobs stored by this copy.
    added: HashSet<BlobId>,
    report: &'a mut CopyReport,
}

impl Copier<'_> {
    /// Stores `data` under the target's id unless the target has it.
    async fn store(&mut self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = self.target.blob_id(data);
        if self.added.contains(&id) {
            return Ok(id);
        }
        let index = self.target.index().await?;
        if index.lookup(&id)?.is_none() {
            self.sink.add(kind, id, data).await?;
            self.added.insert(id);
            self.report.blobs_added += 1;
            self.report.bytes_added += data.len() as u64;
        }
        Ok(id)
    }

    async fn data(&mut self, id: &BlobId) -> Result<BlobId> {
        if let Some(m) = self.mapped.get(id) {
            return Ok(*m);
        }
        let data = self.source.read_blob(id).await?;
        let new = self.store(BlobKind::Data, &data).await?;
        self.mapped.insert(*id, new);
        Ok(new)
    }

    /// Copies the tree `id` and everything under it; returns its new id.
    async fn tree(&mut self, id: &BlobId, depth: usize) -> Result<BlobId> {
        if let Some(m) = self.mapped.get(id) {
            return Ok(*m);
        }
        if depth > MAX_DEPTH {
            return Err(Error::corrupt(
                format!("tree {}", id.short()),
                "folders nested too deep",
            ));
        }
        let mut tree: Tree = self.source.read_tree(id).await?;
        for node in &mut tree.nodes {
            match &mut node.kind {
                NodeKind::File { content } => {
                    for blob in content.iter_mut() {
                        *blob = self.data(blob).await?;
                    }
                }
                NodeKind::Dir { subtree } => {
                    *subtree = Box::pin(self.tree(subtree, depth + 1)).await?;
                }
                _ => {}
            }
        }
        let new = self.store(BlobKind::Tree, &tree.to_bytes()).await?;
        self.mapped.insert(*id, new);
        Ok(new)
    }
}
