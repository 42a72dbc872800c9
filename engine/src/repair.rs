//! Repair of the index from pack headers alone.

use std::collections::{HashMap, HashSet};

use kith_storage::{Handle, Kind};

use crate::crypto::Cipher;
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
}

/// Packs per new index delta.
const PACKS_PER_FILE: usize = 512;

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
    let key = pack::pack_key(repo.secret("repairing the index")?, &trailer.ephemeral, id)?;
    let entries = pack::parse_header(&Cipher::new(&key), &sealed, header_start, id)?;
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
    let mut found = Vec::new();
    for o in repo.backend().list(Kind::Pack, "").await? {
        let Ok(id) = PackId::from_hex(o.handle.name()) else {
            continue;
        };
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
