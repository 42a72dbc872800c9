//! Filling files: blobs grouped by pack, adjacent blobs read with one
//! ranged read, each blob decrypted, verified and written to every offset
//! that needs it. Blobs of zeros are not written, leaving holes in sparse
//! files (the files were created at full length).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use kith_storage::{Handle, Kind};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::blob::open_blob;
use crate::id::{BlobId, PackId};
use crate::index::BlobLocation;
use crate::repo::Repository;
use crate::{Error, Result};

use super::options::{RestoreEvent, RestoreObserver, RestoreOptions, RestoreOutcome};
use super::plan::Plan;

/// Blobs closer than this are read together, gap included.
const MAX_GAP: u64 = 1024 * 1024;
/// Bounds on the longest single ranged read, which the backend chooses
/// (`Backend::read_size`: a few MiB locally, a whole pack remotely).
const MIN_RANGE: u64 = 1024 * 1024;
const MAX_RANGE: u64 = 64 * 1024 * 1024;

/// One ranged read of a pack and the blobs it holds.
pub(crate) struct Range {
    pub(crate) pack: PackId,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) blobs: Vec<(BlobId, BlobLocation)>,
}

/// The ranged reads that fetch `by_pack`'s blobs from `backend`: neighbours
/// merged, each read at most the backend's read size.
pub(crate) fn pack_reads(
    backend: &dyn kith_storage::Backend,
    by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>>,
) -> Vec<Range> {
    ranges(by_pack, backend.read_size().clamp(MIN_RANGE, MAX_RANGE))
}

#[derive(Default)]
struct RangeResult {
    bytes: u64,
    errors: Vec<(String, String)>,
    damage: bool,
}

fn ranges(mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>>, max_range: u64) -> Vec<Range> {
    let mut out = Vec::new();
    for (pack, blobs) in by_pack.iter_mut() {
        blobs.sort_by_key(|(_, l)| l.offset);
        let mut current: Option<Range> = None;
        for (id, loc) in blobs.drain(..) {
            let start = u64::from(loc.offset);
            let end = start + u64::from(loc.length);
            match &mut current {
                Some(r)
                    if start <= r.offset + r.length + MAX_GAP && end - r.offset <= max_range =>
                {
                    r.length = r.length.max(end - r.offset);
                    r.blobs.push((id, loc));
                }
                _ => {
                    if let Some(r) = current.take() {
                        out.push(r);
                    }
                    current = Some(Range {
                        pack: *pack,
                        offset: start,
                        length: end - start,
                        blobs: vec![(id, loc)],
                    });
                }
            }
        }
        if let Some(r) = current {
            out.push(r);
        }
    }
    out
}

/// Granularity of hole detection when writing a blob.
const HOLE_BLOCK: usize = 64 * 1024;

/// The parts of `data` that are not all zeros, as coalesced byte ranges of
/// [`HOLE_BLOCK`] granularity. Files are created at full length, so the
/// skipped parts read as zeros and stay holes.
fn nonzero_segments(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let start = i * HOLE_BLOCK;
        let end = start + block.len();
        match out.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

/// Names the files a lost blob leaves incomplete, for the error message:
/// the user needs to know which files to distrust, not which blob.
fn needed_by(
    places: &HashMap<BlobId, Vec<(u32, u64)>>,
    targets: &[PathBuf],
    id: &BlobId,
) -> String {
    const SHOWN: usize = 8;
    let mut files: Vec<&u32> = places
        .get(id)
        .map(|v| v.iter().map(|(f, _)| f).collect())
        .unwrap_or_default();
    files.sort_unstable();
    files.dedup();
    if files.is_empty() {
        return String::new();
    }
    let names: Vec<String> = files
        .iter()
        .take(SHOWN)
        .filter_map(|f| targets.get(**f as usize))
        .map(|p| p.display().to_string())
        .collect();
    let more = files.len().saturating_sub(SHOWN);
    if more > 0 {
        format!(" (needed by {} and {more} more files)", names.join(", "))
    } else {
        format!(" (needed by {})", names.join(", "))
    }
}

pub(crate) async fn fill(
    repo: &Repository,
    plan: &Plan,
    options: &RestoreOptions,
    observer: &RestoreObserver,
    outcome: &mut RestoreOutcome,
) -> Result<()> {
    let index = repo.index().await?;
    let targets: Arc<Vec<PathBuf>> =
        Arc::new(plan.files.iter().map(|f| f.target.clone()).collect());
    let mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
    for id in plan.blobs.keys() {
        if let Some(loc) = index.lookup(id)? {
            by_pack.entry(loc.pack).or_default().push((*id, loc));
        }
    }
    let mut ciphers = HashMap::new();
    for pack in by_pack.keys() {
        match repo.pack_cipher(pack).await {
            Ok(c) => {
                ciphers.insert(*pack, c);
            }
            Err(e) => {
                outcome.damage = true;
                outcome.errors.push((format!("pack {pack}"), e.to_string()));
            }
        }
    }
    let places = Arc::new(plan.blobs.clone());
    let key = *repo.chunk_id_key();
    // Reads in flight: at least 4 (a local disk keeps one write in flight
    // but reads well in parallel), more where the backend says so.
    let reads = options
        .concurrency
        .unwrap_or_else(|| repo.backend().parallel_transfers().max(4));
    let permits = Arc::new(Semaphore::new(reads.max(1)));
    let mut tasks: JoinSet<RangeResult> = JoinSet::new();
    for range in pack_reads(repo.backend().as_ref(), by_pack) {
        let Some(cipher) = ciphers.get(&range.pack).cloned() else {
            continue;
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        let backend = repo.backend().clone();
        let places = places.clone();
        let targets = targets.clone();
        let observer = observer.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut result = RangeResult::default();
            let fetched = match Handle::new(Kind::Pack, range.pack.to_hex()) {
                Ok(h) => backend
                    .get_range(&h, range.offset, range.length)
                    .await
                    .map_err(Error::from),
                Err(e) => Err(e.into()),
            };
            let bytes = match fetched {
                Ok(b) => b,
                Err(e) => {
                    result.damage =
                        e.is_damage() || matches!(&e, Error::Storage(s) if s.is_not_found());
                    for (id, _) in &range.blobs {
                        result.errors.push((
                            format!("blob {} in pack {}", id.short(), range.pack.short()),
                            format!("{e}{}", needed_by(&places, &targets, id)),
                        ));
                    }
                    return result;
                }
            };
            let decoded = tokio::task::spawn_blocking(move || {
                let mut files: HashMap<u32, File> = HashMap::new();
                for (id, loc) in &range.blobs {
                    let start = (u64::from(loc.offset) - range.offset) as usize;
                    let Some(sealed) = bytes.get(start..start + loc.length as usize) else {
                        result.damage = true;
                        result.errors.push((
                            format!("pack {}", range.pack.short()),
                            format!(
                                "short read of blob {}{}",
                                id.short(),
                                needed_by(&places, &targets, id)
                            ),
                        ));
                        continue;
                    };
                    let plain = match open_blob(
                        &cipher,
                        &key,
                        loc.kind,
                        loc.compression,
                        id,
                        loc.raw_length,
                        sealed,
                    ) {
                        Ok(p) => p,
                        Err(e) => {
                            result.damage = true;
                            let who = needed_by(&places, &targets, id);
                            result.errors.push((
                                format!("pack {}", range.pack),
                                format!("blob {} is damaged: {e}{who}", id.short()),
                            ));
                            continue;
                        }
                    };
                    let segments = nonzero_segments(&plain);
                    for (file, offset) in places.get(id).map(Vec::as_slice).unwrap_or(&[]) {
                        result.bytes += plain.len() as u64;
                        if segments.is_empty() {
                            continue;
                        }
                        let Some(path) = targets.get(*file as usize) else {
                            continue;
                        };
                        let f = match files.entry(*file) {
                            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => {
                                match OpenOptions::new().write(true).open(path) {
                                    Ok(f) => v.insert(f),
                                    Err(e) => {
                                        result.errors.push((
                                            path.display().to_string(),
                                            format!("cannot open for writing: {e}"),
                                        ));
                                        continue;
                                    }
                                }
                            }
                        };
                        for (start, end) in &segments {
                            // Segments are ranges of `plain` by construction.
                            let Some(part) = plain.get(*start..*end) else {
                                continue;
                            };
                            if let Err(e) = f.write_all_at(part, *offset + *start as u64) {
                                result.errors.push((
                                    path.display().to_string(),
                                    format!("write failed: {e}"),
                                ));
                                break;
                            }
                        }
                    }
                    observer(&RestoreEvent::Bytes(plain.len() as u64));
                }
                result
            })
            .await;
            decoded.unwrap_or_else(|e| RangeResult {
                bytes: 0,
                errors: vec![("restore".into(), e.to_string())],
                damage: false,
            })
        });
    }
    while let Some(done) = tasks.join_next().await {
        let r = done.map_err(|e| Error::Task(e.to_string()))?;
        outcome.bytes += r.bytes;
        outcome.damage |= r.damage;
        outcome.errors.extend(r.errors);
    }
    outcome.files = plan.files.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobKind, Compression};

    fn loc(pack: u8, offset: u32, length: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            offset,
            length,
            raw_length: length,
            kind: BlobKind::Data,
            compression: Compression::None,
        }
    }

    #[test]
    fn zero_blocks_become_holes_and_data_blocks_coalesce() {
        let mut data = vec![0u8; 5 * HOLE_BLOCK + 10];
        data[HOLE_BLOCK + 1] = 1;
        data[2 * HOLE_BLOCK] = 1;
        data[5 * HOLE_BLOCK + 9] = 1;
        assert_eq!(
            nonzero_segments(&data),
            vec![
                (HOLE_BLOCK, 3 * HOLE_BLOCK),
                (5 * HOLE_BLOCK, 5 * HOLE_BLOCK + 10)
            ]
        );
        assert!(nonzero_segments(&[0u8; 100]).is_empty());
    }

    #[test]
    fn adjacent_blobs_are_read_together_and_distant_ones_apart() {
        let mut m = HashMap::new();
        m.insert(
            PackId([1; 32]),
            vec![
                (BlobId([3; 32]), loc(1, 5_000_000, 100)),
                (BlobId([1; 32]), loc(1, 0, 100)),
                (BlobId([2; 32]), loc(1, 100, 100)),
            ],
        );
        let r = ranges(m, 4 << 20);
        assert_eq!(r.len(), 2);
        let first = r.iter().find(|r| r.offset == 0).unwrap();
        assert_eq!(first.length, 200);
        assert_eq!(first.blobs.len(), 2);
    }
}
