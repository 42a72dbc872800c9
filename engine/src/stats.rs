//! Repository statistics: how much the snapshots hold, how much of it is
//! unique after deduplication, and how much is stored after compression
//! and encryption.

use std::collections::HashSet;

use serde::Serialize;

use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::tree::NodeKind;
use crate::{Error, Result};

/// Sizes of one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotStats {
    /// The snapshot.
    pub id: SnapshotId,
    /// Files.
    pub files: u64,
    /// Bytes a restore writes.
    pub restore_size: u64,
}

/// Sizes of the whole repository.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Per snapshot.
    pub snapshots: Vec<SnapshotStats>,
    /// Bytes all snapshots' restores would write together.
    pub total_restore_size: u64,
    /// Plaintext bytes of the distinct blobs the snapshots use (after deduplication).
    pub raw_size: u64,
    /// Stored bytes of those blobs (after compression and encryption).
    pub stored_size: u64,
    /// Distinct blobs used.
    pub blobs: u64,
    /// Bytes of the packs holding those blobs (what a prune would keep, before repacking).
    pub packs_size: u64,
    /// `total_restore_size / stored_size`: what deduplication and compression save together.
    pub space_saving_ratio: f64,
    /// `raw_size / stored_size`: what compression alone saves.
    pub compression_ratio: f64,
}

/// Computes the statistics of every snapshot and of the repository.
pub async fn stats(repo: &Repository) -> Result<Stats> {
    let index = repo.index().await?;
    let (snapshots, _) = repo.snapshots().await?;
    let mut out = Stats::default();
    let mut blobs: HashSet<BlobId> = HashSet::new();
    let mut packs = HashSet::new();
    for (id, snapshot) in &snapshots {
        let mut s = SnapshotStats {
            id: *id,
            files: 0,
            restore_size: 0,
        };
        let mut stack = vec![snapshot.tree];
        let mut seen_here = HashSet::new();
        while let Some(tree_id) = stack.pop() {
            let first_time = blobs.insert(tree_id);
            if first_time {
                if let Some(loc) = index.lookup(&tree_id)? {
                    out.raw_size += u64::from(loc.raw_length);
                    out.stored_size += u64::from(loc.length);
                    packs.insert(loc.pack);
                }
            }
            seen_here.insert(tree_id);
            let tree = repo.read_tree(&tree_id).await?;
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Dir { subtree } if !seen_here.contains(&subtree) => {
                        stack.push(subtree)
                    }
                    NodeKind::File { content } => {
                        s.files += 1;
                        s.restore_size += node.size;
                        for b in content {
                            if blobs.insert(b) {
                                let loc = index.lookup(&b)?.ok_or(Error::BlobNotFound(b))?;
                                out.raw_size += u64::from(loc.raw_length);
                                out.stored_size += u64::from(loc.length);
                                packs.insert(loc.pack);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        out.total_restore_size += s.restore_size;
        out.snapshots.push(s);
    }
    for p in packs {
        if let Some(info) = index.pack(&p)? {
            out.packs_size += info.size;
        }
    }
    out.blobs = blobs.len() as u64;
    if out.stored_size > 0 {
        out.space_saving_ratio = out.total_restore_size as f64 / out.stored_size as f64;
        out.compression_ratio = out.raw_size as f64 / out.stored_size as f64;
    }
    Ok(out)
}
