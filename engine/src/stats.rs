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
                        // Sizes come from trees on disk: saturate, never overflow.
                        s.restore_size = s.restore_size.saturating_add(node.size);
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
        out.total_restore_size = out.total_restore_size.saturating_add(s.restore_size);
        out.snapshots.push(s);
    }
    for p in packs {
        if let Some(info) = index.pack(&p)? {
            out.packs_size = out.packs_size.saturating_add(info.size);
        }
    }
    out.blobs = blobs.len() as u64;
    if out.stored_size > 0 {
        out.space_saving_ratio = out.total_restore_size as f64 / out.stored_size as f64;
        out.compression_ratio = out.raw_size as f64 / out.stored_size as f64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blob::BlobKind;
    use crate::index::IndexFile;
    use crate::packer::PackSink;
    use crate::snapshot::Snapshot;
    use crate::tree::{Node, Tree};
    use crate::{InitOptions, KdfParams};

    fn huge_file(name: &str) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File {
                content: Vec::new(),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: u64::MAX,
            mtime: 0,
            ctime: 0,
            inode: 0,
            device: 0,
            links: 1,
        }
    }

    /// Sizes come from trees on disk: two files that each claim `u64::MAX`
    /// bytes must not overflow the sum.
    #[tokio::test]
    async fn sizes_past_u64_max_saturate_instead_of_overflowing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(kith_storage::LocalBackend::new(dir.path().join("repo")));
        let fast = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let (repo, _) = Repository::init(backend, "pw", &InitOptions::default().kdf(fast), None)
            .await
            .unwrap();
        let tree = Tree {
            nodes: vec![huge_file("a"), huge_file("b")],
        };
        let bytes = tree.to_bytes();
        let tree_id = repo.blob_id(&bytes);
        let mut sink = PackSink::new(&repo).unwrap();
        sink.add(BlobKind::Tree, tree_id, &bytes).await.unwrap();
        let packs = sink.finish().await.unwrap();
        repo.write_index_file(&IndexFile {
            packs,
            supersedes: Vec::new(),
        })
        .await
        .unwrap();
        for time in [1, 2] {
            repo.write_snapshot(&Snapshot {
                time,
                host: "h".into(),
                user: "u".into(),
                paths: vec!["/".into()],
                tags: Vec::new(),
                tree: tree_id,
                parent: None,
                original: None,
                summary: Default::default(),
                program: "kith".into(),
            })
            .await
            .unwrap();
        }
        let stats = stats(&repo).await.unwrap();
        assert_eq!(stats.snapshots.len(), 2);
        assert!(stats.snapshots.iter().all(|s| s.restore_size == u64::MAX));
        assert_eq!(stats.total_restore_size, u64::MAX);
    }
}
