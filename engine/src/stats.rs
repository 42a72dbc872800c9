//! Repository statistics: how much the snapshots hold, how much of it is
//! unique after deduplication, and how much is stored after compression
//! and encryption; per snapshot and for the whole repository.
//!
//! Every distinct tree is read once however many snapshots share it. A
//! snapshot's distinct blobs are then found by walking those trees in
//! memory. Keeping, per tree, the whole set of blobs below it would spare
//! that walk but costs memory in the depth of the folders times their
//! size; the walk costs time in the snapshot's own size, which computing
//! its deduplicated size needs anyway.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::id::{BlobId, PackId, SnapshotId};
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
    /// Plaintext bytes of the distinct blobs the snapshot uses, trees
    /// included: its size after deduplication.
    pub raw_size: u64,
    /// Stored bytes of those blobs (after compression and encryption).
    pub stored_size: u64,
    /// `raw_size / stored_size`; 0 when nothing is stored.
    pub compression_ratio: f64,
    /// Stored bytes of the blobs no other snapshot uses: what forgetting
    /// only this snapshot lets a prune free.
    pub unique_stored_size: u64,
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

/// What stats needs of one tree, kept once however many snapshots and
/// folders share it.
#[derive(Default)]
struct TreeEntries {
    /// Its folders' trees, repeated as often as they appear (a restore
    /// writes every copy).
    subtrees: Vec<BlobId>,
    /// Its files' content blobs.
    content: Vec<BlobId>,
    /// Files directly in it.
    files: u64,
    /// Bytes of those files.
    bytes: u64,
}

/// Files and bytes a restore of one tree writes, its folders included.
#[derive(Clone, Copy, Default)]
struct RestoreSize {
    files: u64,
    bytes: u64,
}

/// One distinct blob: its sizes and which snapshots use it.
struct Usage {
    raw: u64,
    stored: u64,
    /// How many snapshots use it.
    users: u32,
    /// The last snapshot (position in `Stats::snapshots`) found using it:
    /// while that snapshot is walked, it marks the blob as counted.
    last: usize,
}

/// Computes the statistics of every snapshot and of the repository.
pub async fn stats(repo: &Repository) -> Result<Stats> {
    let index = repo.index().await?;
    let (snapshots, _) = repo.snapshots().await?;
    let trees = read_trees(repo, snapshots.iter().map(|(_, s)| s.tree)).await?;
    let mut out = Stats::default();
    let mut usage: HashMap<BlobId, Usage> = HashMap::new();
    let mut packs: HashSet<PackId> = HashSet::new();
    let mut restore_sizes: HashMap<BlobId, RestoreSize> = HashMap::new();
    for (position, (id, snapshot)) in snapshots.iter().enumerate() {
        let restore = restore_size(&snapshot.tree, &trees, &mut restore_sizes)?;
        let mut s = SnapshotStats {
            id: *id,
            files: restore.files,
            restore_size: restore.bytes,
            raw_size: 0,
            stored_size: 0,
            compression_ratio: 0.0,
            unique_stored_size: 0,
        };
        let mut count = |blob: BlobId| -> Result<()> {
            let u = match usage.entry(blob) {
                Entry::Occupied(e) => {
                    let u = e.into_mut();
                    if u.last == position {
                        return Ok(());
                    }
                    u.users = u.users.saturating_add(1);
                    u.last = position;
                    u
                }
                Entry::Vacant(e) => {
                    let loc = index.lookup(&blob)?.ok_or(Error::BlobNotFound(blob))?;
                    packs.insert(loc.pack);
                    e.insert(Usage {
                        raw: u64::from(loc.raw_length),
                        stored: u64::from(loc.length),
                        users: 1,
                        last: position,
                    })
                }
            };
            s.raw_size = s.raw_size.saturating_add(u.raw);
            s.stored_size = s.stored_size.saturating_add(u.stored);
            Ok(())
        };
        walk_blobs(&snapshot.tree, &trees, &mut count)?;
        out.total_restore_size = out.total_restore_size.saturating_add(s.restore_size);
        out.snapshots.push(s);
    }
    for u in usage.values() {
        out.raw_size = out.raw_size.saturating_add(u.raw);
        out.stored_size = out.stored_size.saturating_add(u.stored);
        if u.users == 1 {
            if let Some(s) = out.snapshots.get_mut(u.last) {
                s.unique_stored_size = s.unique_stored_size.saturating_add(u.stored);
            }
        }
    }
    for s in &mut out.snapshots {
        s.compression_ratio = ratio(s.raw_size, s.stored_size);
    }
    for p in packs {
        if let Some(info) = index.pack(&p)? {
            out.packs_size = out.packs_size.saturating_add(info.size);
        }
    }
    out.blobs = usage.len() as u64;
    out.space_saving_ratio = ratio(out.total_restore_size, out.stored_size);
    out.compression_ratio = ratio(out.raw_size, out.stored_size);
    Ok(out)
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Reads every tree below `roots`, each once.
async fn read_trees(
    repo: &Repository,
    roots: impl Iterator<Item = BlobId>,
) -> Result<HashMap<BlobId, TreeEntries>> {
    let mut trees: HashMap<BlobId, TreeEntries> = HashMap::new();
    let mut stack: Vec<BlobId> = roots.collect();
    while let Some(id) = stack.pop() {
        if trees.contains_key(&id) {
            continue;
        }
        let mut entries = TreeEntries::default();
        for node in repo.read_tree(&id).await?.nodes {
            match node.kind {
                NodeKind::Dir { subtree } => {
                    entries.subtrees.push(subtree);
                    if !trees.contains_key(&subtree) {
                        stack.push(subtree);
                    }
                }
                NodeKind::File { content } => {
                    entries.files += 1;
                    // Sizes come from trees on disk: saturate, never overflow.
                    entries.bytes = entries.bytes.saturating_add(node.size);
                    entries.content.extend(content);
                }
                _ => {}
            }
        }
        trees.insert(id, entries);
    }
    Ok(trees)
}

/// What a restore of tree `root` writes, every copy of a repeated folder
/// included. Each tree is summed once, after its folders (in `memo`, which
/// later snapshots reuse).
fn restore_size(
    root: &BlobId,
    trees: &HashMap<BlobId, TreeEntries>,
    memo: &mut HashMap<BlobId, RestoreSize>,
) -> Result<RestoreSize> {
    // (tree, whether its folders are on the stack already)
    let mut stack = vec![(*root, false)];
    // Trees whose folders are being summed: meeting one again is a cycle,
    // which a keyed hash makes impossible in an intact repository.
    let mut open: HashSet<BlobId> = HashSet::new();
    while let Some((id, expanded)) = stack.pop() {
        if memo.contains_key(&id) {
            continue;
        }
        let entries = trees.get(&id).ok_or(Error::BlobNotFound(id))?;
        if !expanded {
            if !open.insert(id) {
                return Err(Error::corrupt(format!("tree {id}"), "it contains itself"));
            }
            stack.push((id, true));
            stack.extend(entries.subtrees.iter().map(|s| (*s, false)));
            continue;
        }
        let mut size = RestoreSize {
            files: entries.files,
            bytes: entries.bytes,
        };
        for sub in &entries.subtrees {
            let s = memo.get(sub).copied().unwrap_or_default();
            size.files = size.files.saturating_add(s.files);
            size.bytes = size.bytes.saturating_add(s.bytes);
        }
        open.remove(&id);
        memo.insert(id, size);
    }
    Ok(memo.get(root).copied().unwrap_or_default())
}

/// Calls `count` with every blob below tree `root`, the trees themselves
/// included. Each tree is walked once; a content blob in several files
/// reaches `count` once per file, and `count` tells repeats apart.
fn walk_blobs(
    root: &BlobId,
    trees: &HashMap<BlobId, TreeEntries>,
    count: &mut dyn FnMut(BlobId) -> Result<()>,
) -> Result<()> {
    let mut walked: HashSet<BlobId> = HashSet::new();
    let mut stack = vec![*root];
    while let Some(id) = stack.pop() {
        if !walked.insert(id) {
            continue;
        }
        count(id)?;
        let entries = trees.get(&id).ok_or(Error::BlobNotFound(id))?;
        for b in &entries.content {
            count(*b)?;
        }
        stack.extend(entries.subtrees.iter().filter(|s| !walked.contains(s)));
    }
    Ok(())
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

    async fn new_repo(dir: &tempfile::TempDir) -> Repository {
        let backend = Arc::new(kith_storage::LocalBackend::new(dir.path().join("repo")));
        let fast = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        Repository::init(backend, "pw", &InitOptions::default().kdf(fast), None)
            .await
            .unwrap()
            .0
    }

    /// Stores `blobs` in one pack and indexes it; returns their ids.
    async fn store(repo: &Repository, blobs: &[(BlobKind, &[u8])]) -> Vec<BlobId> {
        let mut sink = PackSink::new(repo).unwrap();
        let mut ids = Vec::new();
        for (kind, bytes) in blobs {
            let id = repo.blob_id(bytes);
            sink.add(*kind, id, bytes).await.unwrap();
            ids.push(id);
        }
        let packs = sink.finish().await.unwrap();
        repo.write_index_file(&IndexFile {
            packs,
            supersedes: Vec::new(),
        })
        .await
        .unwrap();
        ids
    }

    /// Stores `tree` and returns its id.
    async fn store_tree(repo: &Repository, tree: &Tree) -> BlobId {
        store(repo, &[(BlobKind::Tree, &tree.to_bytes())]).await[0]
    }

    async fn snapshot(repo: &Repository, time: i64, tree: BlobId) -> SnapshotId {
        repo.write_snapshot(&Snapshot {
            time,
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/".into()],
            tags: Vec::new(),
            tree,
            parent: None,
            original: None,
            summary: Default::default(),
            program: "kith".into(),
        })
        .await
        .unwrap()
    }

    fn node(name: &str, kind: NodeKind, size: u64) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            ctime: 0,
            inode: 0,
            device: 0,
            links: 1,
        }
    }

    fn file(name: &str, content: Vec<BlobId>, size: u64) -> Node {
        node(name, NodeKind::File { content }, size)
    }

    fn dir(name: &str, subtree: BlobId) -> Node {
        node(name, NodeKind::Dir { subtree }, 0)
    }

    fn of(stats: &Stats, id: SnapshotId) -> &SnapshotStats {
        stats.snapshots.iter().find(|s| s.id == id).unwrap()
    }

    /// Two snapshots share one content blob and one folder; each has a
    /// content blob and a root tree of its own. Per snapshot, raw and
    /// stored sizes count every distinct blob it uses once; unique sizes
    /// count only its own blobs, so they and the shared blobs add up to
    /// the repository's stored size.
    #[tokio::test]
    async fn per_snapshot_sizes_count_shared_blobs_in_each_and_unique_blobs_in_one() {
        let scratch = tempfile::tempdir().unwrap();
        let repo = new_repo(&scratch).await;
        let shared_text = b"shared and very compressible ".repeat(400);
        let only_first = b"first only ".repeat(100);
        let only_second: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let ids = store(
            &repo,
            &[
                (BlobKind::Data, &shared_text),
                (BlobKind::Data, &only_first),
                (BlobKind::Data, &only_second),
            ],
        )
        .await;
        let (shared, first, second) = (ids[0], ids[1], ids[2]);
        let len = |b: &[u8]| b.len() as u64;
        // One folder both snapshots hold, with the shared blob in it.
        let common = store_tree(
            &repo,
            &Tree {
                nodes: vec![file("s", vec![shared], len(&shared_text))],
            },
        )
        .await;
        let root1 = store_tree(
            &repo,
            &Tree {
                nodes: vec![
                    dir("common", common),
                    file(
                        "f",
                        vec![first, shared],
                        len(&only_first) + len(&shared_text),
                    ),
                ],
            },
        )
        .await;
        let root2 = store_tree(
            &repo,
            &Tree {
                nodes: vec![
                    dir("common", common),
                    file("g", vec![second], len(&only_second)),
                ],
            },
        )
        .await;
        let snap1 = snapshot(&repo, 1, root1).await;
        let snap2 = snapshot(&repo, 2, root2).await;

        let index = repo.index().await.unwrap();
        let loc = |id: BlobId| index.lookup(&id).unwrap().unwrap();
        let raw =
            |ids: &[BlobId]| -> u64 { ids.iter().map(|i| u64::from(loc(*i).raw_length)).sum() };
        let stored =
            |ids: &[BlobId]| -> u64 { ids.iter().map(|i| u64::from(loc(*i).length)).sum() };

        let stats = stats(&repo).await.unwrap();
        let (s1, s2) = (of(&stats, snap1), of(&stats, snap2));
        let uses1 = [root1, common, shared, first];
        let uses2 = [root2, common, shared, second];
        assert_eq!(s1.raw_size, raw(&uses1), "the shared blob counts once");
        assert_eq!(s1.stored_size, stored(&uses1));
        assert_eq!(s2.raw_size, raw(&uses2));
        assert_eq!(s2.stored_size, stored(&uses2));
        assert_eq!(s1.unique_stored_size, stored(&[root1, first]));
        assert_eq!(s2.unique_stored_size, stored(&[root2, second]));
        assert!((s1.compression_ratio - s1.raw_size as f64 / s1.stored_size as f64).abs() < 1e-9);
        assert!(s1.compression_ratio > 1.0, "repeated text compresses");

        let all = [root1, root2, common, shared, first, second];
        assert_eq!(stats.blobs, 6);
        assert_eq!(stats.raw_size, raw(&all));
        assert_eq!(stats.stored_size, stored(&all));
        assert_eq!(
            s1.unique_stored_size + s2.unique_stored_size + stored(&[common, shared]),
            stats.stored_size,
            "unique plus shared is everything"
        );
        assert_eq!(
            s1.stored_size + s2.stored_size - stored(&[common, shared]),
            stats.stored_size
        );
        assert_eq!(s1.files, 2);
        assert_eq!(s1.restore_size, len(&only_first) + 2 * len(&shared_text));
    }

    /// A folder that appears twice in one snapshot is restored twice but
    /// stored once, wherever the copies sit in the tree; a snapshot alone
    /// in the repository owns every blob it uses.
    #[tokio::test]
    async fn a_repeated_folder_counts_twice_for_restore_and_once_for_storage() {
        let scratch = tempfile::tempdir().unwrap();
        let repo = new_repo(&scratch).await;
        let content = b"inside the repeated folder".to_vec();
        let data = store(&repo, &[(BlobKind::Data, &content)]).await[0];
        let size = content.len() as u64;
        let leaf = store_tree(
            &repo,
            &Tree {
                nodes: vec![file("x", vec![data], size)],
            },
        )
        .await;
        // `leaf` at /a/leaf and /b/c/copy: different depths, so a walk
        // that skips a folder it has already seen would count it once.
        let c = store_tree(
            &repo,
            &Tree {
                nodes: vec![dir("copy", leaf)],
            },
        )
        .await;
        let b = store_tree(
            &repo,
            &Tree {
                nodes: vec![dir("c", c)],
            },
        )
        .await;
        let a = store_tree(
            &repo,
            &Tree {
                nodes: vec![dir("leaf", leaf)],
            },
        )
        .await;
        let root = store_tree(
            &repo,
            &Tree {
                nodes: vec![dir("a", a), dir("b", b)],
            },
        )
        .await;
        let id = snapshot(&repo, 1, root).await;
        let stats = stats(&repo).await.unwrap();
        let s = of(&stats, id);
        assert_eq!(s.files, 2);
        assert_eq!(s.restore_size, 2 * size);
        assert_eq!(stats.blobs, 6, "root, a, b, c, leaf and the content");
        assert_eq!(s.stored_size, stats.stored_size);
        assert_eq!(s.unique_stored_size, stats.stored_size);
        assert_eq!(s.raw_size, stats.raw_size);
    }

    /// Sizes come from trees on disk: two files that each claim `u64::MAX`
    /// bytes must not overflow the sum.
    #[tokio::test]
    async fn sizes_past_u64_max_saturate_instead_of_overflowing() {
        let scratch = tempfile::tempdir().unwrap();
        let repo = new_repo(&scratch).await;
        let tree_id = store_tree(
            &repo,
            &Tree {
                nodes: vec![
                    file("a", Vec::new(), u64::MAX),
                    file("b", Vec::new(), u64::MAX),
                ],
            },
        )
        .await;
        for time in [1, 2] {
            snapshot(&repo, time, tree_id).await;
        }
        let stats = stats(&repo).await.unwrap();
        assert_eq!(stats.snapshots.len(), 2);
        assert!(stats.snapshots.iter().all(|s| s.restore_size == u64::MAX));
        assert_eq!(stats.total_restore_size, u64::MAX);
        assert!(
            stats.snapshots.iter().all(|s| s.unique_stored_size == 0),
            "both use the one tree"
        );
    }
}
