//! Prune: remove the data no snapshot needs, in two steps.
//!
//! A prune works under the exclusive (maintenance) lock, which it only gets
//! while no fresh backup session or lock exists. It reads every snapshot and
//! tree to learn which blobs are used, then:
//!
//! - **condemns** packs holding no used blob: they leave the index (so no
//!   backup deduplicates against them any more) and are listed, with the
//!   time, in a condemnation record;
//! - **repacks** packs whose unused share exceeds `max_unused`: their used
//!   blobs are copied into new packs, and the old packs are condemned;
//! - **deletes** packs condemned at least `grace` before this prune read the
//!   snapshots, if they are still unused;
//! - **rescues** condemned packs that a snapshot needs after all (they go
//!   back into the index), and **adopts** packs no index lists (left by a
//!   killed backup or prune) into the index when they are kept.
//!
//! Why two steps: a backup checks at commit, under a shared lock, that no
//! pack it relies on is missing or condemned, and re-uploads what is. A
//! backup that checked just before a condemnation finishes its commit well
//! within half the staleness limit (or checks again), so with
//! `grace ≥ staleness`, every snapshot that relies on a pack is stored before
//! a prune deletes that pack, and that prune sees the snapshot and rescues the
//! pack instead. Deletion also requires that this prune's own lock never went
//! stale since it read the snapshots.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kith_storage::{Handle, Kind};

use crate::blob::BlobKind;
use crate::condemned::{self, Condemnation, CondemnedPack};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{IndexFile, IndexPack};
use crate::lock::{self, Watch};
use crate::pack::{self, PackEntry};
use crate::packer::PackSink;
use crate::repo::{host_name, now_ns, Repository};
use crate::tree::{NodeKind, Tree};
use crate::{Error, Result};

/// Default share of a pack's bytes that may be unused before it is repacked.
pub const DEFAULT_MAX_UNUSED_PERCENT: f64 = 10.0;
/// Default time between condemning a pack and deleting it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Packs per index delta written by a prune.
const PACKS_PER_DELTA: usize = 512;

/// How a prune behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Repack a partly used pack when more than this percentage of its
    /// bytes is unused.
    pub max_unused_percent: f64,
    /// Delete condemned packs only this long after they were condemned.
    pub grace: Duration,
    /// Only report what would be done.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: DEFAULT_MAX_UNUSED_PERCENT,
            grace: DEFAULT_GRACE,
            dry_run: false,
        }
    }
}

impl PruneOptions {
    /// Sets the repacking threshold, in percent.
    pub fn max_unused_percent(mut self, percent: f64) -> Self {
        self.max_unused_percent = percent;
        self
    }

    /// Sets the grace period.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Only reports.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }
}

/// What a prune did (or, on a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots read.
    pub snapshots: u64,
    /// Packs in the repository.
    pub packs: u64,
    /// Blobs some snapshot uses.
    pub blobs_used: u64,
    /// Packs kept as they are.
    pub kept: u64,
    /// Packs condemned now (unused, or repacked).
    pub condemned: Vec<PackId>,
    /// Their bytes.
    pub bytes_condemned: u64,
    /// Partly used packs whose used blobs were copied into new packs.
    pub repacked: Vec<PackId>,
    /// Blobs copied.
    pub blobs_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Condemned packs deleted.
    pub deleted: Vec<PackId>,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Condemned packs still within their grace period.
    pub waiting: Vec<PackId>,
    /// Condemned packs a snapshot needs after all: back in the index.
    pub rescued: Vec<PackId>,
    /// Packs no index listed, now indexed.
    pub adopted: Vec<PackId>,
    /// Packs the index listed that are gone (and no snapshot needs): dropped
    /// from the index.
    pub forgotten: Vec<PackId>,
    /// Packs whose header or data could not be read: left alone.
    pub unreadable: Vec<(PackId, String)>,
    /// Index deltas written.
    pub index_written: u64,
    /// Index deltas removed.
    pub index_removed: u64,
    /// Stale lock and session records removed.
    pub stale_records_removed: u64,
    /// Deletion was put off because this prune's lock went stale meanwhile
    /// (the process was suspended or starved): run it again.
    pub deletion_postponed: bool,
}

/// One pack as the prune sees it.
#[derive(Clone, Debug)]
struct PackState {
    index: IndexPack,
    indexed: bool,
    condemned: Option<i64>,
}

/// What a prune will do, decided before anything is changed.
#[derive(Debug, Default)]
struct Plan {
    report: PruneReport,
    /// Packs the new index lists (before repacking adds the new ones).
    index: Vec<IndexPack>,
    /// Used blobs to copy out of each repacked pack.
    repack: Vec<(IndexPack, Vec<PackEntry>)>,
    /// Condemned packs that stay condemned (waiting or due), with their time.
    still_condemned: Vec<CondemnedPack>,
    /// Packs to condemn now.
    condemn: Vec<CondemnedPack>,
    /// Condemned packs to delete.
    due: Vec<CondemnedPack>,
    /// Whether the set of indexed packs changes.
    index_changes: bool,
    /// Index deltas read.
    old_deltas: Vec<IndexId>,
    /// Condemnation records read.
    old_records: Vec<String>,
}

/// Prunes the repository (see the module documentation).
pub async fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    repo.secret("pruning")?;
    if !(0.0..=100.0).contains(&options.max_unused_percent) {
        return Err(Error::InvalidInput(
            "the unused share allowed in a pack must be between 0% and 100%".into(),
        ));
    }
    if options.grace < repo.stale_after() {
        return Err(Error::InvalidInput(format!(
            "the grace period ({:?}) must be at least the staleness limit ({:?}): a backup \
             whose lock looks stale may still be committing",
            options.grace,
            repo.stale_after()
        )));
    }
    if options.dry_run {
        let mut plan = plan(repo, options).await?;
        plan.report.dry_run = true;
        return Ok(plan.report);
    }
    let mut held = lock::lock(repo, true, "prune", repo.stale_after()).await?;
    let watch = Watch::default();
    let result = lock::refreshing(repo, &mut held, &watch, async {
        let removed = lock::unlock(repo, false, repo.stale_after()).await?;
        let mut plan = plan(repo, options).await?;
        plan.report.stale_records_removed = removed as u64;
        execute(repo, plan, &watch).await
    })
    .await;
    let released = held.release(repo).await;
    let report = result?;
    released?;
    Ok(report)
}

async fn read_index(repo: &Repository) -> Result<(HashMap<PackId, IndexPack>, Vec<IndexId>, bool)> {
    let mut packs: HashMap<PackId, IndexPack> = HashMap::new();
    let mut old = Vec::new();
    let mut duplicates = false;
    for o in repo.backend().list(Kind::Index, "").await? {
        let Ok(id) = IndexId::from_hex(o.handle.name()) else {
            continue;
        };
        let file = repo.read_index_file(&id).await.map_err(|e| {
            if e.is_damage() {
                Error::corrupt(
                    format!("index {id}"),
                    format!("{e}; run `kith repair index` before pruning"),
                )
            } else {
                e
            }
        })?;
        for p in file.packs {
            duplicates |= packs.insert(p.id, p).is_some();
        }
        old.push(id);
    }
    Ok((packs, old, duplicates))
}

async fn plan(repo: &Repository, options: &PruneOptions) -> Result<Plan> {
    let mut plan = Plan::default();
    // Snapshots first: every pack a listed snapshot needs was stored before
    // it, so the listing of packs below holds them all. A snapshot committed
    // after this listing (possible only while this prune's lock looked
    // stale) may rely on packs that seem unused here: they are condemned,
    // never deleted, and the next prune rescues them. Snapshots are read
    // after `read_at`: a pack condemned a grace period before it may go.
    let read_at = now_ns();
    let (snapshots, errors) = repo.snapshots().await?;
    if let Some(e) = errors.into_iter().next() {
        return Err(refuse(e, "a snapshot cannot be read"));
    }
    plan.report.snapshots = snapshots.len() as u64;
    let (indexed, old_deltas, duplicates) = read_index(repo).await?;
    plan.old_deltas = old_deltas;
    let listed: HashMap<PackId, u64> = repo
        .backend()
        .list(Kind::Pack, "")
        .await?
        .into_iter()
        .filter_map(|o| {
            PackId::from_hex(o.handle.name())
                .ok()
                .map(|id| (id, o.size))
        })
        .collect();
    plan.report.packs = listed.len() as u64;
    let (records, record_errors) = condemned::list(repo).await?;
    for e in record_errors {
        tracing::warn!(error = %e, "ignoring an unreadable condemnation record");
    }
    plan.old_records = records.iter().map(|(name, _)| name.clone()).collect();
    let condemned = condemned::merge(records.iter().map(|(_, c)| c));

    // Every present pack with its blobs: from the index, else its header.
    let mut packs: HashMap<PackId, PackState> = HashMap::new();
    for (id, size) in &listed {
        let index = match indexed.get(id) {
            Some(p) if p.size == *size => p.clone(),
            _ => match crate::repair::read_header(repo, id, *size).await {
                Ok(p) => p,
                Err(e @ Error::Unsupported { .. }) => return Err(e),
                Err(e) if e.is_damage() => {
                    plan.report.unreadable.push((*id, e.to_string()));
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        packs.insert(
            *id,
            PackState {
                index,
                indexed: indexed.contains_key(id),
                condemned: condemned.get(id).map(|c| c.condemned),
            },
        );
    }
    let unreadable: HashSet<PackId> = plan.report.unreadable.iter().map(|(p, _)| *p).collect();
    for id in indexed.keys() {
        if !listed.contains_key(id) {
            plan.report.forgotten.push(*id);
        }
    }

    // Where each blob can be found, best place first.
    let rank = |s: &PackState| match (s.condemned.is_some(), s.indexed) {
        (false, true) => 0,
        (false, false) => 1,
        (true, _) => 2,
    };
    let mut places: HashMap<BlobId, Vec<(u8, PackId, PackEntry)>> = HashMap::new();
    for (id, s) in &packs {
        for b in &s.index.blobs {
            places.entry(b.id).or_default().push((rank(s), *id, *b));
        }
    }
    for list in places.values_mut() {
        list.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    }

    let used = used_blobs(repo, &snapshots, &places, &packs).await?;
    plan.report.blobs_used = used.len() as u64;

    // Each used blob counts in one pack: its best place.
    let mut used_in: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for b in &used {
        match places.get(b).and_then(|l| l.first()) {
            Some((_, pack, entry)) => used_in.entry(*pack).or_default().push(*entry),
            None => {
                return Err(Error::corrupt(
                    format!("blob {b}"),
                    "a snapshot needs it but no pack holds it: run `kith check`, then \
                     `kith repair snapshots`, before pruning",
                ))
            }
        }
    }

    let now = now_ns();
    let grace = i64::try_from(options.grace.as_nanos()).unwrap_or(i64::MAX);
    let mut ids: Vec<&PackId> = packs.keys().collect();
    ids.sort();
    for id in ids {
        let Some(s) = packs.get(id) else { continue };
        let size = s.index.size;
        let used = used_in.remove(id).unwrap_or_default();
        if let Some(at) = s.condemned {
            if !used.is_empty() {
                plan.report.rescued.push(*id);
                plan.index.push(s.index.clone());
                plan.index_changes = true;
            } else if at.saturating_add(grace) <= read_at {
                plan.due.push(CondemnedPack {
                    id: *id,
                    size,
                    condemned: at,
                });
                plan.report.deleted.push(*id);
                plan.report.bytes_deleted = plan.report.bytes_deleted.saturating_add(size);
                plan.index_changes |= s.indexed;
            } else {
                plan.still_condemned.push(CondemnedPack {
                    id: *id,
                    size,
                    condemned: at,
                });
                plan.report.waiting.push(*id);
                plan.index_changes |= s.indexed;
            }
            continue;
        }
        let used_bytes: u64 = used.iter().map(|e| u64::from(e.length)).sum();
        let unused = size.saturating_sub(used_bytes) as f64 * 100.0 / (size.max(1) as f64);
        if used.is_empty() {
            plan.condemn.push(CondemnedPack {
                id: *id,
                size,
                condemned: now,
            });
            plan.report.condemned.push(*id);
            plan.report.bytes_condemned = plan.report.bytes_condemned.saturating_add(size);
            plan.index_changes |= s.indexed;
        } else if unused > options.max_unused_percent && used.len() < s.index.blobs.len() {
            plan.report.repacked.push(*id);
            plan.report.blobs_repacked += used.len() as u64;
            plan.repack.push((s.index.clone(), used));
            plan.index_changes = true;
        } else {
            if !s.indexed {
                plan.report.adopted.push(*id);
                plan.index_changes = true;
            }
            plan.report.kept += 1;
            plan.index.push(s.index.clone());
        }
    }
    // Packs the index knows but whose header could not be read now stay
    // indexed as they were; nothing is decided about them.
    for id in &unreadable {
        if let Some(p) = indexed.get(id) {
            plan.index.push(p.clone());
        }
    }
    plan.index_changes |= !plan.report.forgotten.is_empty() || duplicates;
    Ok(plan)
}

fn refuse(e: Error, what: &str) -> Error {
    if e.is_damage() {
        Error::corrupt(
            "repository",
            format!(
                "{what} ({e}); a prune must see every snapshot to know what is used: \
                 run `kith check`, then repair or forget the damaged snapshots"
            ),
        )
    } else {
        e
    }
}

/// Every blob the snapshots use: their trees and the data of their files.
async fn used_blobs(
    repo: &Repository,
    snapshots: &[(SnapshotId, crate::snapshot::Snapshot)],
    places: &HashMap<BlobId, Vec<(u8, PackId, PackEntry)>>,
    packs: &HashMap<PackId, PackState>,
) -> Result<HashSet<BlobId>> {
    let mut used = HashSet::new();
    let mut stack: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    while let Some(tree_id) = stack.pop() {
        if !used.insert(tree_id) {
            continue;
        }
        let tree = read_tree(repo, &tree_id, places, packs).await?;
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir { subtree } => stack.push(subtree),
                NodeKind::File { content } => used.extend(content),
                _ => {}
            }
        }
    }
    Ok(used)
}

async fn read_tree(
    repo: &Repository,
    id: &BlobId,
    places: &HashMap<BlobId, Vec<(u8, PackId, PackEntry)>>,
    packs: &HashMap<PackId, PackState>,
) -> Result<Tree> {
    let mut last = Error::corrupt(
        format!("tree {id}"),
        "a snapshot needs it but no pack holds it",
    );
    for (_, pack, entry) in places.get(id).map(Vec::as_slice).unwrap_or_default() {
        if entry.kind != BlobKind::Tree {
            continue;
        }
        let Some(state) = packs.get(pack) else {
            continue;
        };
        match repo.read_blob_at(pack, &state.index.ephemeral, entry).await {
            Ok(bytes) => match Tree::from_bytes(&bytes, id) {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            },
            Err(e) if e.is_damage() => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(refuse(last, "a tree cannot be read"))
}

async fn execute(repo: &Repository, mut plan: Plan, watch: &Watch) -> Result<PruneReport> {
    // 1. Copy the used blobs of partly used packs into new packs.
    let mut sink = PackSink::new(repo)?;
    let repack = std::mem::take(&mut plan.repack);
    for (old, used) in repack {
        match repo.read_pack(&old.id).await {
            Ok((bytes, cipher, _)) => {
                let key = *repo.chunk_id_key();
                let mut blobs = Vec::with_capacity(used.len());
                let mut damaged = None;
                for e in &used {
                    match pack::open_entry(&cipher, &key, e, &bytes) {
                        Ok(plain) => blobs.push((e.kind, e.id, plain)),
                        Err(why) => {
                            damaged = Some(format!("blob {}: {why}", e.id.short()));
                            break;
                        }
                    }
                }
                if let Some(why) = damaged {
                    keep_unreadable(&mut plan, old, why);
                    continue;
                }
                for (kind, id, plain) in blobs {
                    sink.add(kind, id, &plain).await?;
                }
                plan.condemn.push(CondemnedPack {
                    id: old.id,
                    size: old.size,
                    condemned: now_ns(),
                });
                plan.report.condemned.push(old.id);
                plan.report.bytes_condemned = plan.report.bytes_condemned.saturating_add(old.size);
            }
            Err(e) if e.is_damage() => keep_unreadable(&mut plan, old, e.to_string()),
            Err(e) => return Err(e),
        }
    }
    let written = sink.finish().await?;
    plan.report.packs_written = written.len() as u64;
    plan.index.extend(written);

    // 2. Condemn: one record holding every pack that is, or stays, condemned.
    // Only while this prune's lock never looked stale: otherwise a backup
    // may have committed a snapshot after the snapshots were read, and
    // condemning the packs it needs would take them out of the index.
    if !watch.is_current(repo.stale_after()) {
        return Err(Error::LockLapsed(
            "nothing was condemned, deleted or re-indexed".into(),
        ));
    }
    let mut record = Condemnation {
        created: now_ns(),
        host: host_name(),
        packs: plan.still_condemned.clone(),
    };
    record.packs.extend(plan.condemn.iter().copied());
    record.packs.extend(plan.due.iter().copied());
    record.packs.sort_by_key(|p| p.id);
    let records_change = !plan.condemn.is_empty()
        || !plan.due.is_empty()
        || !plan.report.rescued.is_empty()
        || plan.old_records.len() > 1;
    let mut current_records = plan.old_records.clone();
    if records_change {
        let name = write_record(repo, &record, &plan.old_records).await?;
        current_records = name.into_iter().collect();
    }

    // 3. The new index: kept, adopted, rescued and new packs only.
    if plan.index_changes {
        plan.index.sort_by_key(|p| p.id);
        plan.index.dedup_by_key(|p| p.id);
        let mut written = HashSet::new();
        for chunk in plan.index.chunks(PACKS_PER_DELTA) {
            let file = IndexFile {
                packs: chunk.to_vec(),
                supersedes: plan.old_deltas.clone(),
            };
            written.insert(repo.write_index_file(&file).await?);
            plan.report.index_written += 1;
        }
        for id in &plan.old_deltas {
            if !written.contains(id) {
                repo.backend()
                    .delete(&Handle::new(Kind::Index, id.to_hex())?)
                    .await?;
                plan.report.index_removed += 1;
            }
        }
    }

    // 4. Delete what is due, if this prune's view is still current.
    if !plan.due.is_empty() {
        // No commit can have begun since the snapshots were read unless this
        // prune's lock looked stale at some point: then put deletion off.
        let current = watch.is_current(repo.stale_after());
        if !current {
            plan.report.deletion_postponed = true;
            plan.report.deleted.clear();
            plan.report.bytes_deleted = 0;
        } else {
            for p in &plan.due {
                repo.backend()
                    .delete(&Handle::new(Kind::Pack, p.id.to_hex())?)
                    .await?;
            }
            record
                .packs
                .retain(|p| !plan.due.iter().any(|d| d.id == p.id));
            record.created = now_ns();
            write_record(repo, &record, &current_records).await?;
        }
    }
    Ok(plan.report)
}

fn keep_unreadable(plan: &mut Plan, pack: IndexPack, why: String) {
    plan.report.repacked.retain(|p| *p != pack.id);
    plan.report.unreadable.push((pack.id, why));
    plan.report.kept += 1;
    plan.index.push(pack);
}

/// Stores `record` (unless it is empty) and then removes `old`: a crash in
/// between leaves packs condemned twice, never not at all.
async fn write_record(
    repo: &Repository,
    record: &Condemnation,
    old: &[String],
) -> Result<Option<String>> {
    let name = if record.packs.is_empty() {
        None
    } else {
        Some(condemned::write(repo, record).await?)
    };
    for o in old {
        if Some(o) != name.as_ref() {
            condemned::delete(repo, o).await?;
        }
    }
    Ok(name)
}
