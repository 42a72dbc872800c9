//! The local index cache in redb.
//!
//! Invariant: the `blobs` and `packs` tables hold exactly the content of the
//! index deltas listed in `index_files`. Blobs enter the cache only together
//! with the delta that records them, after that delta is stored in the
//! repository, so the cache never claims a blob the repository lacks an
//! index entry for. If the file is lost or damaged it is deleted and rebuilt.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::blob::{BlobKind, Compression};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::IndexFile;
use crate::{Error, Result};

const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
const PACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("packs");
const INDEX_FILES: TableDefinition<&[u8], u8> = TableDefinition::new("index_files");
const FILES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("files");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The name index of `find`: tree id → its entries' names and metadata
/// (`engine/src/find.rs`). Trees never change, so an entry never goes stale;
/// a tree missing here is read from the repository and added.
const NAMES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("names");

/// Version of the cache's own layout; a mismatch rebuilds it.
const SCHEMA: &[u8] = b"kith-cache-1";

/// Where a blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack.
    pub pack: PackId,
    /// Offset of the sealed blob.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// What it holds.
    pub kind: BlobKind,
    /// Its compression.
    pub compression: Compression,
}

impl BlobLocation {
    fn encode(&self) -> [u8; 46] {
        let mut b = [0u8; 46];
        b[..32].copy_from_slice(&self.pack.0);
        b[32..36].copy_from_slice(&self.offset.to_le_bytes());
        b[36..40].copy_from_slice(&self.length.to_le_bytes());
        b[40..44].copy_from_slice(&self.raw_length.to_le_bytes());
        b[44] = u8::from(self.kind == BlobKind::Tree);
        b[45] = u8::from(self.compression == Compression::Zstd);
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; 46] = b.try_into().ok()?;
        let [pack @ .., o0, o1, o2, o3, l0, l1, l2, l3, r0, r1, r2, r3, kind, compression] = *b;
        Some(BlobLocation {
            pack: PackId(pack),
            offset: u32::from_le_bytes([o0, o1, o2, o3]),
            length: u32::from_le_bytes([l0, l1, l2, l3]),
            raw_length: u32::from_le_bytes([r0, r1, r2, r3]),
            kind: if kind == 1 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            compression: if compression == 1 {
                Compression::Zstd
            } else {
                Compression::None
            },
        })
    }
}

/// What the cache knows of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackInfo {
    /// The ephemeral key its key is sealed with.
    pub ephemeral: [u8; 32],
    /// Its size.
    pub size: u64,
}

/// What was known of a file when it was last backed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCacheEntry {
    /// Size.
    pub size: u64,
    /// Modification time, ns.
    pub mtime: i64,
    /// Change time, ns.
    pub ctime: i64,
    /// Inode.
    pub inode: u64,
    /// Device.
    pub device: u64,
    /// Content blobs.
    pub content: Vec<BlobId>,
}

/// The redb-backed cache of one repository's index.
pub struct IndexCache {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexCache({})", self.path.display())
    }
}

thread_local! {
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into `None` without printing it.
///
/// The cache is a local file that anything may have damaged, and redb 2
/// answers some damaged files (a truncated one, say) with an assertion
/// failure instead of an error. The cache is only a cache: a damaged one is
/// deleted and rebuilt from the repository. The panic hook installed here
/// once stays silent only for panics raised inside this function on this
/// thread, and hands every other panic to the hook that was there before.
fn without_panics<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    result.ok()
}

impl IndexCache {
    /// Opens the cache at `path` for repository `repo_id`, deleting and
    /// recreating it when it is unreadable or belongs to something else.
    /// Returns the cache and whether it was (re)created empty.
    pub fn open(path: &Path, repo_id: &[u8]) -> Result<(Self, bool)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create cache folder", dir, e))?;
        }
        if path.exists() {
            let probe = without_panics(|| {
                matches!(
                    Database::open(path),
                    Err(redb::DatabaseError::DatabaseAlreadyOpen)
                )
            });
            if probe == Some(true) {
                // Another process uses it: it is not damaged, and must not be replaced.
                return Err(Error::CacheInUse(path.to_owned()));
            }
            let opened =
                without_panics(|| Self::open_existing(path, repo_id)).unwrap_or_else(|| {
                    Err(cache_err(
                        path,
                        "the database is damaged (its reader gave up)",
                    ))
                });
            match opened {
                Ok(cache) => return Ok((cache, false)),
                Err(e @ Error::CacheInUse(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "index cache unusable; rebuilding it");
                    std::fs::remove_file(path)
                        .map_err(|e| Error::io("remove damaged cache", path, e))?;
                }
            }
        }
        let cache = Self::create(path, repo_id)?;
        Ok((cache, true))
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        cache_err(&self.path, e)
    }

    fn open_existing(path: &Path, repo_id: &[u8]) -> Result<Self> {
        let db = Database::open(path).map_err(|e| match e {
            // Another process opened it after the probe: in use, not damaged.
            redb::DatabaseError::DatabaseAlreadyOpen => Error::CacheInUse(path.to_owned()),
            e => cache_err(path, e),
        })?;
        let cache = IndexCache {
            db,
            path: path.to_owned(),
        };
        let txn = cache.db.begin_read().map_err(|e| cache.err(e))?;
        let meta = txn.open_table(META).map_err(|e| cache.err(e))?;
        let schema = meta.get("schema").map_err(|e| cache.err(e))?;
        let id = meta.get("repository").map_err(|e| cache.err(e))?;
        if schema.as_ref().map(|v| v.value()) != Some(SCHEMA)
            || id.as_ref().map(|v| v.value()) != Some(repo_id)
        {
            return Err(cache.err("written for another repository or cache version"));
        }
        // Walk the tables once: redb verifies page checksums as it reads.
        for t in [BLOBS, PACKS, FILES] {
            let table = txn.open_table(t).map_err(|e| cache.err(e))?;
            table.len().map_err(|e| cache.err(e))?;
        }
        let files = txn.open_table(INDEX_FILES).map_err(|e| cache.err(e))?;
        for entry in files.iter().map_err(|e| cache.err(e))? {
            entry.map_err(|e| cache.err(e))?;
        }
        drop(files);
        drop(meta);
        drop(txn);
        Ok(cache)
    }

    fn create(path: &Path, repo_id: &[u8]) -> Result<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::CacheInUse(path.to_owned()),
            e => cache_err(path, e),
        })?;
        let cache = IndexCache {
            db,
            path: path.to_owned(),
        };
        let txn = cache.db.begin_write().map_err(|e| cache.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| cache.err(e))?;
            meta.insert("schema", SCHEMA).map_err(|e| cache.err(e))?;
            meta.insert("repository", repo_id)
                .map_err(|e| cache.err(e))?;
            txn.open_table(BLOBS).map_err(|e| cache.err(e))?;
            txn.open_table(PACKS).map_err(|e| cache.err(e))?;
            txn.open_table(INDEX_FILES).map_err(|e| cache.err(e))?;
            txn.open_table(FILES).map_err(|e| cache.err(e))?;
        }
        txn.commit().map_err(|e| cache.err(e))?;
        Ok(cache)
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a blob is, if known.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        let value = table.get(&id.0[..]).map_err(|e| self.err(e))?;
        match value {
            None => Ok(None),
            Some(v) => BlobLocation::decode(v.value())
                .map(Some)
                .ok_or_else(|| self.err("malformed blob entry")),
        }
    }

    /// What is known of a pack.
    pub fn pack(&self, id: &PackId) -> Result<Option<PackInfo>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(PACKS).map_err(|e| self.err(e))?;
        let value = table.get(&id.0[..]).map_err(|e| self.err(e))?;
        match value {
            None => Ok(None),
            Some(v) => {
                let b: &[u8; 40] = v
                    .value()
                    .try_into()
                    .map_err(|_| self.err("malformed pack entry"))?;
                let [ephemeral @ .., s0, s1, s2, s3, s4, s5, s6, s7] = *b;
                let size = [s0, s1, s2, s3, s4, s5, s6, s7];
                Ok(Some(PackInfo {
                    ephemeral,
                    size: u64::from_le_bytes(size),
                }))
            }
        }
    }

    /// The name listings of `trees` that the cache holds, in order.
    pub fn tree_names(&self, trees: &[BlobId]) -> Result<Vec<Option<Vec<u8>>>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(NAMES) {
            Ok(t) => t,
            // A cache made before the name index existed.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; trees.len()]),
            Err(e) => return Err(self.err(e)),
        };
        trees
            .iter()
            .map(|t| {
                table
                    .get(&t.0[..])
                    .map(|v| v.map(|v| v.value().to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    /// Adds name listings of trees.
    pub fn put_tree_names(&self, listings: &[(BlobId, Vec<u8>)]) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(NAMES).map_err(|e| self.err(e))?;
            for (id, bytes) in listings {
                table
                    .insert(&id.0[..], &bytes[..])
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The index deltas whose content the cache holds.
    pub fn index_files(&self) -> Result<HashSet<IndexId>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        let mut out = HashSet::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, _) = entry.map_err(|e| self.err(e))?;
            let id: [u8; 32] = k
                .value()
                .try_into()
                .map_err(|_| self.err("malformed index entry"))?;
            out.insert(IndexId(id));
        }
        Ok(out)
    }

    /// Adds the content of several index deltas in one transaction.
    pub fn add_index_files(&self, files: &[(IndexId, IndexFile)], durable: bool) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut blobs = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            let mut packs = txn.open_table(PACKS).map_err(|e| self.err(e))?;
            let mut index_files = txn.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
            for (id, file) in files {
                for p in &file.packs {
                    let mut info = [0u8; 40];
                    info[..32].copy_from_slice(&p.ephemeral);
                    info[32..].copy_from_slice(&p.size.to_le_bytes());
                    packs
                        .insert(&p.id.0[..], &info[..])
                        .map_err(|e| self.err(e))?;
                    for b in &p.blobs {
                        let loc = BlobLocation {
                            pack: p.id,
                            offset: b.offset,
                            length: b.length,
                            raw_length: b.raw_length,
                            kind: b.kind,
                            compression: b.compression,
                        };
                        blobs
                            .insert(&b.id.0[..], &loc.encode()[..])
                            .map_err(|e| self.err(e))?;
                    }
                }
                index_files.insert(&id.0[..], 1).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Forgets every blob, pack and index delta (the file cache stays).
    pub fn clear_index(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        for t in [BLOBS, PACKS] {
            txn.delete_table(t).map_err(|e| self.err(e))?;
            txn.open_table(t).map_err(|e| self.err(e))?;
        }
        txn.delete_table(INDEX_FILES).map_err(|e| self.err(e))?;
        txn.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Calls `f` with every blob entry, `None` for one that does not decode.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobId, Option<BlobLocation>)) -> Result<()> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            match <[u8; 32]>::try_from(k.value()) {
                Ok(id) => f(BlobId(id), BlobLocation::decode(v.value())),
                Err(_) => f(BlobId([0; 32]), None),
            }
        }
        Ok(())
    }

    /// Number of blobs known.
    pub fn blob_count(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        table.len().map_err(|e| self.err(e))
    }

    /// The cached record of a file, by its absolute path bytes.
    pub fn file(&self, path: &[u8]) -> Result<Option<FileCacheEntry>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(FILES).map_err(|e| self.err(e))?;
        let value = table.get(path).map_err(|e| self.err(e))?;
        Ok(value.and_then(|v| postcard::from_bytes(v.value()).ok()))
    }

    /// Records files in one transaction.
    pub fn put_files(&self, entries: &[(Vec<u8>, FileCacheEntry)], durable: bool) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut table = txn.open_table(FILES).map_err(|e| self.err(e))?;
            for (path, entry) in entries {
                let bytes = crate::envelope::encode(entry);
                table
                    .insert(&path[..], &bytes[..])
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Cache {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::IndexPack;
    use crate::pack::PackEntry;

    fn sample() -> IndexFile {
        IndexFile {
            packs: vec![IndexPack {
                id: PackId([2; 32]),
                ephemeral: [3; 32],
                size: 500,
                blobs: vec![PackEntry {
                    kind: BlobKind::Tree,
                    id: BlobId([1; 32]),
                    offset: 0,
                    length: 100,
                    raw_length: 70,
                    compression: Compression::Zstd,
                }],
            }],
            supersedes: vec![],
        }
    }

    #[test]
    fn index_deltas_are_cached_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let (cache, fresh) = IndexCache::open(&path, b"r").unwrap();
        assert!(fresh);
        cache
            .add_index_files(&[(IndexId([9; 32]), sample())], true)
            .unwrap();
        drop(cache);
        let (cache, fresh) = IndexCache::open(&path, b"r").unwrap();
        assert!(!fresh);
        let loc = cache.lookup(&BlobId([1; 32])).unwrap().unwrap();
        assert_eq!(loc.pack, PackId([2; 32]));
        assert_eq!(loc.kind, BlobKind::Tree);
        assert_eq!(cache.pack(&PackId([2; 32])).unwrap().unwrap().size, 500);
        assert!(cache.index_files().unwrap().contains(&IndexId([9; 32])));
        cache.clear_index().unwrap();
        assert!(cache.lookup(&BlobId([1; 32])).unwrap().is_none());
    }

    #[test]
    fn a_damaged_or_foreign_cache_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let (cache, _) = IndexCache::open(&path, b"r").unwrap();
        cache
            .add_index_files(&[(IndexId([9; 32]), sample())], true)
            .unwrap();
        drop(cache);
        let (_, fresh) = IndexCache::open(&path, b"other").unwrap();
        assert!(fresh);
        std::fs::write(&path, b"garbage").unwrap();
        let (cache, fresh) = IndexCache::open(&path, b"r").unwrap();
        assert!(fresh);
        assert!(cache.index_files().unwrap().is_empty());
    }
}
