//! Check: every index delta readable, every pack it names present at its
//! size, every snapshot readable, every tree readable and every blob a
//! snapshot needs indexed; with `--read-data`, every byte of (some or all)
//! packs verified. Problems name the object that holds them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kith_storage::{Handle, Kind};

use crate::blob::{open_blob, BlobKind};
use crate::crypto::Cipher;
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{BlobLocation, IndexFile};
use crate::pack::{self, PackEntry};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};
use crate::{Error, Result};

/// How much pack data to read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// A random share of packs, in percent.
    Subset(f64),
}

/// Progress of a check.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CheckEvent {
    /// A phase started.
    Phase(&'static str),
    /// Packs to read in the data phase.
    PacksToRead(u64),
    /// A pack was read.
    PackRead,
}

/// A receiver of check events.
pub type CheckObserver = Arc<dyn Fn(&CheckEvent) + Send + Sync>;

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// What kind of problem: `unreadable_index`, `missing_pack`,
    /// `size_mismatch`, `unreferenced_pack`, `unreadable_condemnation`,
    /// `unreadable_snapshot`, `missing_tree`, `unreadable_tree`,
    /// `missing_blob`, `wrong_blob_kind`, `damaged_pack`, `damaged_blob` or
    /// `index_mismatch`.
    pub kind: &'static str,
    /// The damaged or missing object, e.g. `pack 3fa2…`.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// What a check found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Errors: the repository is damaged.
    pub errors: Vec<Problem>,
    /// Warnings: nothing lost, but something to tidy.
    pub warnings: Vec<Problem>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Trees read.
    pub trees: u64,
    /// Packs in the repository.
    pub packs: u64,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Packs condemned by a prune, waiting to be deleted.
    pub condemned: u64,
}

struct Known {
    blob: PackEntry,
    pack: PackId,
}

/// Compares the local index cache with the index deltas just read: an
/// entry that names a blob no delta has, or a place no delta gives, would
/// make backups skip blobs the repository lacks or restores read the wrong
/// bytes. Such a cache is emptied (it refills from the repository) and
/// reported as a warning: the repository itself is not damaged.
async fn check_cache(
    repo: &Repository,
    by_pack: &HashMap<PackId, Vec<PackEntry>>,
    read_indexes: HashSet<IndexId>,
    report: &mut CheckReport,
) -> Result<()> {
    if repo.cache_path().is_none() {
        return Ok(());
    }
    let cache = repo.index().await?;
    let mut truth: HashMap<BlobId, Vec<BlobLocation>> = HashMap::new();
    for (pack, entries) in by_pack {
        for b in entries {
            truth.entry(b.id).or_default().push(BlobLocation {
                pack: *pack,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
                compression: b.compression,
            });
        }
    }
    let worker = cache.clone();
    let wrong = tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
        // A delta stored after our listing (a backup running beside the
        // check) cannot be judged from what was read: leave it for the
        // next check.
        if !worker.index_files()?.is_subset(&read_indexes) {
            return Ok(None);
        }
        let mut wrong = 0u64;
        worker.for_each_blob(|id, location| {
            let right = location.is_some_and(|l| truth.get(&id).is_some_and(|t| t.contains(&l)));
            if !right {
                wrong += 1;
            }
        })?;
        if wrong > 0 {
            worker.clear_index()?;
        }
        Ok(Some(wrong))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    match wrong {
        Some(wrong) if wrong > 0 => report.warnings.push(Problem {
            kind: "damaged_cache",
            object: format!("cache {}", cache.path().display()),
            message: format!(
                "{wrong} index entries disagree with the repository's index; they were dropped and are read again from the repository by the next command"
            ),
        }),
        Some(_) => {}
        None => tracing::debug!("index cache not compared: an index delta appeared during the check"),
    }
    Ok(())
}

/// Checks the repository, under a shared lock so that no maintenance
/// changes it meanwhile.
pub async fn check(
    repo: &Repository,
    read_data: ReadData,
    observer: CheckObserver,
) -> Result<CheckReport> {
    repo.secret("checking")?;
    crate::lock::with_lock(repo, false, "check", || {
        check_locked(repo, read_data, observer)
    })
    .await
}

async fn check_locked(
    repo: &Repository,
    read_data: ReadData,
    observer: CheckObserver,
) -> Result<CheckReport> {
    let secret = repo.secret("checking")?.clone();
    let backend = repo.backend().clone();
    let mut report = CheckReport::default();
    let err = |r: &mut CheckReport, kind: &'static str, object: String, message: String| {
        r.errors.push(Problem {
            kind,
            object,
            message,
        })
    };

    observer(&CheckEvent::Phase("keys"));
    for (object, message) in repo.damaged_keys().await? {
        err(&mut report, "damaged_key", object, message);
    }

    observer(&CheckEvent::Phase("index"));
    let mut blobs: HashMap<BlobId, Known> = HashMap::new();
    let mut packs: HashMap<PackId, (u64, [u8; 32], IndexId)> = HashMap::new();
    let mut by_pack: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    let mut read_indexes: HashSet<IndexId> = HashSet::new();
    for o in backend.list(Kind::Index, "").await? {
        let Ok(id) = IndexId::from_hex(o.handle.name()) else {
            continue;
        };
        let file = match backend.get(&o.handle).await {
            Ok(bytes) => IndexFile::from_bytes(&secret, &bytes, &id),
            Err(e) => Err(e.into()),
        };
        match file {
            Ok(file) => {
                read_indexes.insert(id);
                for p in file.packs {
                    packs.insert(p.id, (p.size, p.ephemeral, id));
                    by_pack.insert(p.id, p.blobs.clone());
                    for b in p.blobs {
                        blobs.insert(
                            b.id,
                            Known {
                                blob: b,
                                pack: p.id,
                            },
                        );
                    }
                }
            }
            Err(e) => err(
                &mut report,
                "unreadable_index",
                format!("index {id}"),
                e.to_string(),
            ),
        }
    }
    report.blobs = blobs.len() as u64;

    observer(&CheckEvent::Phase("cache"));
    check_cache(repo, &by_pack, read_indexes, &mut report).await?;

    observer(&CheckEvent::Phase("packs"));
    let listed: HashMap<PackId, u64> = backend
        .list(Kind::Pack, "")
        .await?
        .into_iter()
        .filter_map(|o| {
            PackId::from_hex(o.handle.name())
                .ok()
                .map(|id| (id, o.size))
        })
        .collect();
    report.packs = listed.len() as u64;
    // A blob listed in several packs is looked for in one that exists.
    for (pack, entries) in &by_pack {
        if listed.contains_key(pack) {
            for b in entries {
                blobs.insert(
                    b.id,
                    Known {
                        blob: *b,
                        pack: *pack,
                    },
                );
            }
        }
    }
    for (id, (size, _, index)) in &packs {
        match listed.get(id) {
            None => err(
                &mut report,
                "missing_pack",
                format!("pack {id}"),
                format!("is missing (listed in index {})", index.short()),
            ),
            Some(actual) if actual != size => err(
                &mut report,
                "size_mismatch",
                format!("pack {id}"),
                format!("has {actual} bytes where the index says {size}"),
            ),
            Some(_) => {}
        }
    }
    // A pack no index lists is left over from a backup that was interrupted
    // or is still running: the next backup adopts it (reading its header) and
    // prune removes what nothing needs, so it costs space but loses nothing.
    // It is a warning, as in restic, so that a repository an interrupted
    // backup left behind passes `check`. Condemned packs are expected.
    let (records, record_errors) = crate::condemned::list(repo).await?;
    for e in record_errors {
        err(
            &mut report,
            "unreadable_condemnation",
            "condemnation record".into(),
            e.to_string(),
        );
    }
    let condemned = crate::condemned::merge(records.iter().map(|(_, c)| c));
    let stale_after = repo.stale_after();
    let backup_running = crate::lock::list(repo, Kind::Session)
        .await?
        .iter()
        .any(|(_, r)| !r.is_stale(stale_after));
    let mut unreferenced: Vec<&PackId> = listed
        .keys()
        .filter(|id| !packs.contains_key(id) && !condemned.contains_key(id))
        .collect();
    unreferenced.sort();
    let message = if backup_running {
        "is not in any index yet (a backup is running)"
    } else {
        "is not in any index (left by an interrupted backup): the next backup adopts it, `kith repair index` indexes it, `kith prune` removes it if nothing needs it"
    };
    for id in unreferenced {
        report.warnings.push(Problem {
            kind: "unreferenced_pack",
            object: format!("pack {id}"),
            message: message.into(),
        });
    }
    report.condemned = condemned.len() as u64;

    observer(&CheckEvent::Phase("snapshots"));
    let mut ciphers: HashMap<PackId, Arc<Cipher>> = HashMap::new();
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    for o in backend.list(Kind::Snapshot, "").await? {
        let Ok(id) = SnapshotId::from_hex(o.handle.name()) else {
            continue;
        };
        let snapshot = match backend.get(&o.handle).await {
            Ok(bytes) => Snapshot::from_bytes(&secret, &bytes, &id),
            Err(e) => Err(e.into()),
        };
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                err(
                    &mut report,
                    "unreadable_snapshot",
                    format!("snapshot {id}"),
                    e.to_string(),
                );
                continue;
            }
        };
        report.snapshots += 1;
        let mut stack = vec![(snapshot.tree, String::from("/"))];
        while let Some((tree_id, path)) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            let Some(known) = blobs.get(&tree_id) else {
                err(
                    &mut report,
                    "missing_tree",
                    format!("snapshot {}", id.short()),
                    format!("tree {} of {path} is not in the index", tree_id.short()),
                );
                continue;
            };
            let tree = match read_tree(repo, &packs, &mut ciphers, &tree_id, known).await {
                Ok(t) => t,
                Err(e) => {
                    err(
                        &mut report,
                        "unreadable_tree",
                        format!("pack {}", known.pack),
                        format!(
                            "tree {} of {path} in snapshot {}: {e}",
                            tree_id.short(),
                            id.short()
                        ),
                    );
                    continue;
                }
            };
            report.trees += 1;
            for node in tree.nodes {
                let child = format!("{}/{}", path.trim_end_matches('/'), node.name_lossy());
                match node.kind {
                    NodeKind::Dir { subtree } => stack.push((subtree, child)),
                    NodeKind::File { content } => {
                        for b in content {
                            match blobs.get(&b) {
                                None => err(
                                    &mut report,
                                    "missing_blob",
                                    format!("snapshot {}", id.short()),
                                    format!("{child}: blob {} is not in the index", b.short()),
                                ),
                                Some(k) if !listed.contains_key(&k.pack) => err(
                                    &mut report,
                                    "missing_blob",
                                    format!("snapshot {}", id.short()),
                                    format!(
                                        "{child}: blob {} is in pack {}, which is missing",
                                        b.short(),
                                        k.pack.short()
                                    ),
                                ),
                                Some(k) if k.blob.kind != BlobKind::Data => err(
                                    &mut report,
                                    "wrong_blob_kind",
                                    format!("snapshot {}", id.short()),
                                    format!("{child}: blob {} is not a data blob", b.short()),
                                ),
                                Some(_) => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    if read_data != ReadData::None {
        observer(&CheckEvent::Phase("data"));
        let mut selected: Vec<PackId> = listed.keys().copied().collect();
        selected.sort();
        if let ReadData::Subset(percent) = read_data {
            let salt: [u8; 8] = rand::random();
            selected.retain(|p| {
                let mut h = blake3::Hasher::new();
                h.update(&salt);
                h.update(&p.0);
                let v =
                    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]));
                (v as f64 / u64::MAX as f64) * 100.0 < percent
            });
        }
        observer(&CheckEvent::PacksToRead(selected.len() as u64));
        for id in selected {
            let result = repo.read_pack(&id).await;
            observer(&CheckEvent::PackRead);
            report.packs_read += 1;
            let (bytes, cipher, entries) = match result {
                Ok(r) => r,
                Err(e) => {
                    err(
                        &mut report,
                        "damaged_pack",
                        format!("pack {id}"),
                        e.to_string(),
                    );
                    continue;
                }
            };
            let key = *repo.chunk_id_key();
            let object = format!("pack {id}");
            let problems = tokio::task::spawn_blocking(move || {
                let mut problems = Vec::new();
                for e in &entries {
                    if let Err(why) = pack::open_entry(&cipher, &key, e, &bytes) {
                        problems.push(format!("blob {}: {why}", e.id.short()));
                    }
                }
                (problems, entries)
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
            let (problems, entries) = problems;
            for p in problems {
                err(&mut report, "damaged_blob", object.clone(), p);
            }
            // The index's entries for this pack must be exactly its header's.
            let indexed: HashSet<(BlobId, u32, u32)> = by_pack
                .get(&id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| (e.id, e.offset, e.length))
                .collect();
            let header: HashSet<(BlobId, u32, u32)> =
                entries.iter().map(|e| (e.id, e.offset, e.length)).collect();
            if packs.contains_key(&id) && indexed != header {
                let extra = indexed.difference(&header).count();
                let absent = header.difference(&indexed).count();
                err(
                    &mut report,
                    "index_mismatch",
                    object.clone(),
                    format!(
                        "the index lists {extra} blobs the pack header does not, and misses {absent} it does: run `kith repair index`"
                    ),
                );
            }
        }
    }
    Ok(report)
}

async fn read_tree(
    repo: &Repository,
    packs: &HashMap<PackId, (u64, [u8; 32], IndexId)>,
    ciphers: &mut HashMap<PackId, Arc<Cipher>>,
    id: &BlobId,
    known: &Known,
) -> Result<Tree> {
    let cipher = match ciphers.get(&known.pack) {
        Some(c) => c.clone(),
        None => {
            let (_, ephemeral, _) = packs.get(&known.pack).ok_or_else(|| {
                Error::corrupt(format!("pack {}", known.pack), "not in the index")
            })?;
            let c = repo.pack_cipher_with(&known.pack, ephemeral).await?;
            ciphers.insert(known.pack, c.clone());
            c
        }
    };
    let handle = Handle::new(Kind::Pack, known.pack.to_hex())?;
    let sealed = repo
        .backend()
        .get_range(
            &handle,
            u64::from(known.blob.offset),
            u64::from(known.blob.length),
        )
        .await?;
    let b = &known.blob;
    let plain = open_blob(
        &cipher,
        repo.chunk_id_key(),
        b.kind,
        b.compression,
        id,
        b.raw_length,
        &sealed,
    )
    .map_err(|e| Error::corrupt(format!("blob {}", id.short()), e.to_string()))?;
    Tree::from_bytes(&plain, id)
}
