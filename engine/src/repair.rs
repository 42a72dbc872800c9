//! Repair of the index from pack headers alone.

use std::collections::{HashMap, HashSet};

use kith_storage::{Handle, Kind};

use crate::id::{IndexId, PackId};
use crate::index::{IndexFile, IndexPack};
use crate::pack::{self, TRAILER_LEN};
use crate::repo::Repository;
use crate::{Error, Result};

/// What `repair index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs whose headers were read.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Index deltas written.
    pub written: u64,
    /// Old index deltas removed.
    pub removed: u64,
    /// Packs that could not be read, and why.
    pub unreadable: Vec<(String, String)>,
    /// Condemned packs left out of the index.
    pub condemned: u64,
}

/// Packs per new index delta.
const PACKS_PER_FILE: usize = 512;

/// Reads a pack's trailer and header (two ranged reads) into an index entry.
pub(crate) async fn read_header(repo: &Repository, id: &PackId, size: u64) -> Result<IndexPack> {
    let object = format!("pack {id}");
    if size < TRAILER_LEN as u64 {
        return Err(Error::corrupt(&object, "too short"));
    }
    let handle = Handle::new(Kind::Pack, id.to_hex())?;
    let tail = repo
        .backend()
        .get_range(&handle, size - TRAILER_LEN as u64, TRAILER_LEN as u64)
        .await?;
    let trailer = pack::parse_trailer(&tail, id)?;
    let header_start = (size - TRAILER_LEN as u64)
        .checked_sub(u64::from(trailer.header_len))
        .ok_or_else(|| Error::corrupt(&object, "header length past the start"))?;
    let sealed = repo
        .backend()
        .get_range(&handle, header_start, u64::from(trailer.header_len))
        .await?;
    let keys = pack::pack_keys(repo.secret("repairing the index")?, &trailer.ephemeral, id)?;
    let (_, entries) = pack::open_header(&keys, &sealed, header_start, id)?;
    Ok(IndexPack {
        id: *id,
        ephemeral: trailer.ephemeral,
        size,
        blobs: entries,
    })
}

/// Rebuilds `index/` from the headers of every pack, then removes the old
/// index deltas.
///
/// Nothing is repaired away: a pack whose header cannot be read keeps the
/// entries an old delta had for it, and an error that is not damage (the
/// storage failing, a pack from a newer kith) stops the repair before any
/// old delta is removed.
pub async fn repair_index(repo: &Repository) -> Result<RepairIndexReport> {
    repo.secret("repairing the index")?;
    crate::lock::with_lock(repo, true, "repair index", || repair_index_locked(repo)).await
}

async fn repair_index_locked(repo: &Repository) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let old: Vec<IndexId> = repo
        .backend()
        .list(Kind::Index, "")
        .await?
        .into_iter()
        .filter_map(|o| IndexId::from_hex(o.handle.name()).ok())
        .collect();
    let mut previous: HashMap<PackId, IndexPack> = HashMap::new();
    for id in &old {
        // Damaged deltas are what a repair is for; whatever they lose, the
        // pack headers provide.
        if let Ok(file) = repo.read_index_file(id).await {
            for p in file.packs {
                previous.insert(p.id, p);
            }
        }
    }
    // Condemned packs stay out of the index: backups must not deduplicate
    // against what a prune is about to delete.
    let condemned = crate::condemned::condemned_packs(repo).await?;
    let mut found = Vec::new();
    for o in repo.backend().list(Kind::Pack, "").await? {
        let Ok(id) = PackId::from_hex(o.handle.name()) else {
            continue;
        };
        if condemned.contains_key(&id) {
            report.condemned += 1;
            continue;
        }
        match read_header(repo, &id, o.size).await {
            Ok(p) => {
                report.packs += 1;
                report.blobs += p.blobs.len() as u64;
                found.push(p);
            }
            Err(e @ Error::Unsupported { .. }) => return Err(e),
            Err(e) if !e.is_damage() && !matches!(e, Error::Corrupt { .. }) => return Err(e),
            Err(e) => {
                if let Some(p) = previous.remove(&id) {
                    report.packs += 1;
                    report.blobs += p.blobs.len() as u64;
                    report.unreadable.push((
                        format!("pack {id}"),
                        format!("{e}; kept its entries from the old index"),
                    ));
                    found.push(p);
                } else {
                    report
                        .unreadable
                        .push((format!("pack {id}"), e.to_string()));
                }
            }
        }
    }
    found.sort_by_key(|p| p.id);
    let mut written = HashSet::new();
    for chunk in found.chunks(PACKS_PER_FILE) {
        let file = IndexFile {
            packs: chunk.to_vec(),
            supersedes: old.clone(),
        };
        written.insert(repo.write_index_file(&file).await?);
        report.written += 1;
    }
    for id in old {
        if !written.contains(&id) {
            repo.backend()
                .delete(&Handle::new(Kind::Index, id.to_hex())?)
                .await?;
            report.removed += 1;
        }
    }
    Ok(report)
}

/// One snapshot rewritten by `repair snapshots`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RepairedSnapshot {
    /// The damaged snapshot.
    pub original: crate::id::SnapshotId,
    /// Its repaired copy (none on a dry run).
    pub repaired: Option<crate::id::SnapshotId>,
    /// Paths left out, and why.
    pub lost: Vec<(String, String)>,
}

/// What `repair snapshots` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots read.
    pub snapshots: u64,
    /// Damaged snapshots and their repaired copies.
    pub repaired: Vec<RepairedSnapshot>,
    /// Damaged originals removed (with `forget`).
    pub forgotten: Vec<crate::id::SnapshotId>,
    /// Snapshot records that cannot be read at all, and why (removed with
    /// `forget` when damaged; never when written by a newer kith).
    pub unreadable: Vec<(String, String)>,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// Rewrites every snapshot whose trees refer to missing blobs or cannot be
/// read, leaving out the damaged files and folders and reporting them. The
/// copies are tagged `repaired`; the originals stay unless `forget`.
pub async fn repair_snapshots(
    repo: &Repository,
    forget: bool,
    dry_run: bool,
) -> Result<RepairSnapshotsReport> {
    repo.secret("repairing snapshots")?;
    if dry_run {
        return repair_snapshots_locked(repo, forget, true).await;
    }
    crate::lock::with_lock(repo, true, "repair snapshots", || {
        repair_snapshots_locked(repo, forget, false)
    })
    .await
}

async fn repair_snapshots_locked(
    repo: &Repository,
    forget: bool,
    dry_run: bool,
) -> Result<RepairSnapshotsReport> {
    use crate::tree::{NodeKind, Tree};
    let mut report = RepairSnapshotsReport {
        dry_run,
        ..Default::default()
    };
    let index = repo.index().await?;
    let present: HashSet<PackId> = repo
        .backend()
        .list(Kind::Pack, "")
        .await?
        .into_iter()
        .filter_map(|o| PackId::from_hex(o.handle.name()).ok())
        .collect();
    let usable =
        |b: &crate::id::BlobId| matches!(index.lookup(b), Ok(Some(l)) if present.contains(&l.pack));
    // Unreadable snapshot records.
    for o in repo.backend().list(Kind::Snapshot, "").await? {
        let Ok(id) = crate::id::SnapshotId::from_hex(o.handle.name()) else {
            continue;
        };
        let bytes = match repo.backend().get(&o.handle).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match crate::snapshot::Snapshot::from_bytes(
            repo.secret("repairing snapshots")?,
            &bytes,
            &id,
        ) {
            Ok(_) => {}
            Err(e @ Error::Unsupported { .. }) => {
                report
                    .unreadable
                    .push((format!("snapshot {id}"), e.to_string()));
            }
            Err(e) => {
                report
                    .unreadable
                    .push((format!("snapshot {id}"), e.to_string()));
                if forget && !dry_run {
                    repo.backend().delete(&o.handle).await?;
                    report.forgotten.push(id);
                }
            }
        }
    }
    let (snapshots, _) = repo.snapshots().await?;
    report.snapshots = snapshots.len() as u64;
    let mut sink = crate::packer::PackSink::new(repo)?;
    let mut pending = Vec::new();
    for (id, snapshot) in snapshots {
        let mut trees: HashMap<crate::id::BlobId, Tree> = HashMap::new();
        let mut stack = vec![snapshot.tree];
        while let Some(t) = stack.pop() {
            if trees.contains_key(&t) || !usable(&t) {
                continue;
            }
            match repo.read_tree(&t).await {
                Ok(tree) => {
                    for n in &tree.nodes {
                        if let NodeKind::Dir { subtree } = n.kind {
                            stack.push(subtree);
                        }
                    }
                    trees.insert(t, tree);
                }
                Err(e) if e.is_damage() => {}
                Err(e) => return Err(e),
            }
        }
        let Some(r) =
            crate::rewrite::drop_lost(snapshot.tree, &trees, &usable, repo.chunk_id_key())
        else {
            continue;
        };
        if dry_run {
            report.repaired.push(RepairedSnapshot {
                original: id,
                repaired: None,
                lost: r.lost,
            });
            continue;
        }
        for (tree_id, bytes) in &r.trees {
            if !usable(tree_id) {
                sink.add(crate::blob::BlobKind::Tree, *tree_id, bytes)
                    .await?;
            }
        }
        let mut copy = snapshot.clone();
        copy.tree = r.root;
        if !copy.tags.iter().any(|t| t == "repaired") {
            copy.tags.push("repaired".into());
        }
        pending.push((id, copy, r.lost));
    }
    // Store the new trees and index them before any snapshot refers to them.
    let stored = sink.finish().await?;
    if !stored.is_empty() {
        repo.write_index_file(&IndexFile {
            packs: stored,
            supersedes: Vec::new(),
        })
        .await?;
    }
    for (id, copy, lost) in pending {
        let new = repo.write_snapshot(&copy).await?;
        if forget && new != id {
            repo.backend()
                .delete(&Handle::new(Kind::Snapshot, id.to_hex())?)
                .await?;
            report.forgotten.push(id);
        }
        report.repaired.push(RepairedSnapshot {
            original: id,
            repaired: Some(new),
            lost,
        });
    }
    Ok(report)
}
