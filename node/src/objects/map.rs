//! The placement map: which peers hold which shards of which object.
//!
//! It lives in redb in the store's cache folder. It is a cache of what the
//! holders say: when it is missing (a fresh machine) it is rebuilt from the
//! holders' listings and shard headers (see `rebuild.rs`). Objects are keyed
//! by kind code and name, so listing a kind with a name prefix is one range
//! scan.

// redb's error type is large; it only travels out of the closures below
// once per map operation, into an `ObjectError` that keeps its message.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use kith_net::{Multiaddr, ObjectTag, PeerId};
use kith_storage::{Handle, Kind};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::error::ObjectError;
use super::name::kind_code;

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PENDING: TableDefinition<&[u8], u8> = TableDefinition::new("pending_deletes");

/// Set once the map is known to list every object (written by the store,
/// or rebuilt from the holders).
const COMPLETE: &str = "complete";
/// Generation of the last root capsule written.
const CAPSULE_GENERATION: &str = "capsule_generation";

/// Where one shard is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardRecord {
    /// Shard index.
    pub(crate) index: u16,
    /// Peers holding it (peer id bytes).
    pub(crate) peers: Vec<Vec<u8>>,
    /// BLAKE3 of its body.
    pub(crate) body_hash: [u8; 32],
}

/// Everything the owner keeps about one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectRecord {
    /// Its tag.
    pub(crate) tag: [u8; 32],
    /// Write time for kinds rewritten in place, else 0.
    pub(crate) written: u64,
    /// Its length.
    pub(crate) object_len: u64,
    /// Shards needed.
    pub(crate) k: u16,
    /// Shards stored.
    pub(crate) n: u16,
    /// Length of each shard's header.
    pub(crate) header_len: u32,
    /// Block size of the shard bodies.
    pub(crate) block_size: u32,
    /// The shards found or placed, by index.
    pub(crate) shards: Vec<ShardRecord>,
    /// Block hashes of the data shards (one entry when replicated: every
    /// copy is the same body), for verified ranged reads.
    pub(crate) data_blocks: Vec<Vec<[u8; 32]>>,
}

impl ObjectRecord {
    pub(crate) fn tag(&self) -> ObjectTag {
        ObjectTag(self.tag)
    }

    /// Every (peer, shard index) pair.
    pub(crate) fn placements(&self) -> Vec<(PeerId, u16)> {
        let mut out = Vec::new();
        for s in &self.shards {
            for p in &s.peers {
                if let Ok(peer) = PeerId::from_bytes(p) {
                    out.push((peer, s.index));
                }
            }
        }
        out
    }
}

fn object_key(handle: &Handle) -> Vec<u8> {
    let mut key = vec![kind_code(handle.kind)];
    key.extend_from_slice(handle.name().as_bytes());
    key
}

fn pending_key(peer: &PeerId, tag: &ObjectTag, index: u16) -> Vec<u8> {
    let mut key = tag.0.to_vec();
    key.extend_from_slice(&index.to_le_bytes());
    key.extend_from_slice(&peer.to_bytes());
    key
}

/// The redb database of the placement map.
pub(crate) struct PlacementMap {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for PlacementMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlacementMap({})", self.path.display())
    }
}

impl PlacementMap {
    /// Opens or creates the map at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, ObjectError> {
        let fail = |reason: String| ObjectError::Map {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => ObjectError::MapBusy {
                path: path.to_path_buf(),
            },
            e => fail(e.to_string()),
        })?;
        let map = Self {
            db,
            path: path.to_path_buf(),
        };
        // Create the tables so that reads never meet a missing table.
        map.write(|tx| {
            tx.open_table(OBJECTS)?;
            tx.open_table(PEERS)?;
            tx.open_table(META)?;
            tx.open_table(PENDING)?;
            Ok(())
        })?;
        Ok(map)
    }

    fn fail(&self, e: impl std::fmt::Display) -> ObjectError {
        ObjectError::Map {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write<R>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, ObjectError> {
        let tx = self.db.begin_write().map_err(|e| self.fail(e))?;
        let r = f(&tx).map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(r)
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, ObjectError> {
        let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
        f(&tx).map_err(|e| self.fail(e))
    }

    fn decode(&self, bytes: &[u8]) -> Result<ObjectRecord, ObjectError> {
        postcard::from_bytes(bytes).map_err(|e| self.fail(format!("damaged record: {e}")))
    }

    /// The record of one object.
    pub(crate) fn get(&self, handle: &Handle) -> Result<Option<ObjectRecord>, ObjectError> {
        let bytes = self.read(|tx| {
            let t = tx.open_table(OBJECTS)?;
            Ok(t.get(object_key(handle).as_slice())?
                .map(|v| v.value().to_vec()))
        })?;
        bytes.map(|b| self.decode(&b)).transpose()
    }

    /// Records an object (replacing any earlier record of the name) and the
    /// addresses of its holders; returns the holders the map did not know.
    pub(crate) fn insert(
        &self,
        handle: &Handle,
        record: &ObjectRecord,
        holders: &[(PeerId, Vec<Multiaddr>)],
    ) -> Result<Vec<PeerId>, ObjectError> {
        let bytes = postcard::to_stdvec(record).map_err(|e| self.fail(e))?;
        self.write(|tx| {
            let mut t = tx.open_table(OBJECTS)?;
            t.insert(object_key(handle).as_slice(), bytes.as_slice())?;
            let mut peers = tx.open_table(PEERS)?;
            let mut new = Vec::new();
            for (peer, addrs) in holders {
                let key = peer.to_bytes();
                let known = peers.get(key.as_slice())?.is_some();
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                let value = postcard::to_stdvec(&addrs).unwrap_or_default();
                peers.insert(key.as_slice(), value.as_slice())?;
                if !known {
                    new.push(*peer);
                }
            }
            Ok(new)
        })
    }

    /// Forgets an object; returns its record.
    pub(crate) fn remove(&self, handle: &Handle) -> Result<Option<ObjectRecord>, ObjectError> {
        let bytes = self.write(|tx| {
            let mut t = tx.open_table(OBJECTS)?;
            let old = t.remove(object_key(handle).as_slice())?;
            Ok(old.map(|v| v.value().to_vec()))
        })?;
        bytes.map(|b| self.decode(&b)).transpose()
    }

    /// Objects of `kind` whose names start with `prefix`, with their sizes.
    pub(crate) fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<(Handle, u64)>, ObjectError> {
        let mut start = vec![kind_code(kind)];
        start.extend_from_slice(prefix.as_bytes());
        let rows = self.read(|tx| {
            let t = tx.open_table(OBJECTS)?;
            let mut rows = Vec::new();
            for row in t.range(start.as_slice()..)? {
                let (k, v) = row?;
                if !k.value().starts_with(&start) {
                    break;
                }
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(rows)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            let name = key
                .get(1..)
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| self.fail("damaged object key"))?;
            let handle = Handle::new(kind, name).map_err(|e| self.fail(e))?;
            out.push((handle, self.decode(&value)?.object_len));
        }
        Ok(out)
    }

    /// Every object with its record.
    pub(crate) fn records(&self) -> Result<Vec<(Handle, ObjectRecord)>, ObjectError> {
        let rows = self.read(|tx| {
            let t = tx.open_table(OBJECTS)?;
            let mut rows = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(rows)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            let kind = key
                .first()
                .and_then(|c| Kind::ALL.into_iter().find(|k| kind_code(*k) == *c));
            let name = key.get(1..).and_then(|n| std::str::from_utf8(n).ok());
            let (Some(kind), Some(name)) = (kind, name) else {
                return Err(self.fail("damaged object key"));
            };
            let handle = Handle::new(kind, name).map_err(|e| self.fail(e))?;
            out.push((handle, self.decode(&value)?));
        }
        Ok(out)
    }

    /// Replaces the whole map with what the holders said, marking it
    /// complete or not (when some holders did not answer).
    pub(crate) fn replace_all(
        &self,
        objects: &[(Handle, ObjectRecord)],
        holders: &[(PeerId, Vec<Multiaddr>)],
        complete: bool,
    ) -> Result<(), ObjectError> {
        let mut encoded = Vec::with_capacity(objects.len());
        for (h, r) in objects {
            encoded.push((
                object_key(h),
                postcard::to_stdvec(r).map_err(|e| self.fail(e))?,
            ));
        }
        self.write(|tx| {
            tx.delete_table(OBJECTS)?;
            tx.delete_table(PEERS)?;
            let mut t = tx.open_table(OBJECTS)?;
            for (k, v) in &encoded {
                t.insert(k.as_slice(), v.as_slice())?;
            }
            let mut peers = tx.open_table(PEERS)?;
            for (peer, addrs) in holders {
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                let value = postcard::to_stdvec(&addrs).unwrap_or_default();
                peers.insert(peer.to_bytes().as_slice(), value.as_slice())?;
            }
            let mut meta = tx.open_table(META)?;
            if complete {
                meta.insert(COMPLETE, 1)?;
            } else {
                meta.remove(COMPLETE)?;
            }
            Ok(())
        })
    }

    /// Marks the map as listing every object (a new repository).
    pub(crate) fn mark_complete(&self) -> Result<(), ObjectError> {
        self.write(|tx| {
            tx.open_table(META)?.insert(COMPLETE, 1)?;
            Ok(())
        })
    }

    /// Whether the map lists every object.
    pub(crate) fn is_complete(&self) -> Result<bool, ObjectError> {
        self.read(|tx| Ok(tx.open_table(META)?.get(COMPLETE)?.is_some()))
    }

    /// Generation of the last root capsule written (0: none).
    pub(crate) fn capsule_generation(&self) -> Result<u64, ObjectError> {
        self.read(|tx| {
            Ok(tx
                .open_table(META)?
                .get(CAPSULE_GENERATION)?
                .map_or(0, |v| v.value()))
        })
    }

    /// Records the generation of the root capsule just written.
    pub(crate) fn set_capsule_generation(&self, generation: u64) -> Result<(), ObjectError> {
        self.write(|tx| {
            tx.open_table(META)?
                .insert(CAPSULE_GENERATION, generation)?;
            Ok(())
        })
    }

    /// Every peer holding shards of this owner, with its last known addresses.
    pub(crate) fn holders(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, ObjectError> {
        self.read(|tx| {
            let t = tx.open_table(PEERS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let Ok(peer) = PeerId::from_bytes(k.value()) else {
                    continue;
                };
                let addrs: Vec<String> = postcard::from_bytes(v.value()).unwrap_or_default();
                out.push((peer, addrs.iter().filter_map(|a| a.parse().ok()).collect()));
            }
            Ok(out)
        })
    }

    /// Remembers shards to delete once their holder is reachable again.
    pub(crate) fn add_pending_deletes(
        &self,
        shards: &[(PeerId, ObjectTag, u16)],
    ) -> Result<(), ObjectError> {
        self.write(|tx| {
            let mut t = tx.open_table(PENDING)?;
            for (peer, tag, index) in shards {
                t.insert(pending_key(peer, tag, *index).as_slice(), 0)?;
            }
            Ok(())
        })
    }

    /// Shards still to delete.
    pub(crate) fn pending_deletes(&self) -> Result<Vec<(PeerId, ObjectTag, u16)>, ObjectError> {
        self.read(|tx| {
            let t = tx.open_table(PENDING)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, _) = row?;
                let k = k.value();
                let (Some(tag), Some(index), Some(peer)) = (
                    k.get(..32).and_then(|t| <[u8; 32]>::try_from(t).ok()),
                    k.get(32..34).and_then(|i| <[u8; 2]>::try_from(i).ok()),
                    k.get(34..).and_then(|p| PeerId::from_bytes(p).ok()),
                ) else {
                    continue;
                };
                out.push((peer, ObjectTag(tag), u16::from_le_bytes(index)));
            }
            Ok(out)
        })
    }

    /// Forgets pending deletes that are done.
    pub(crate) fn clear_pending_deletes(
        &self,
        shards: &[(PeerId, ObjectTag, u16)],
    ) -> Result<(), ObjectError> {
        self.write(|tx| {
            let mut t = tx.open_table(PENDING)?;
            for (peer, tag, index) in shards {
                t.remove(pending_key(peer, tag, *index).as_slice())?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: u64) -> ObjectRecord {
        ObjectRecord {
            tag: [1; 32],
            written: 0,
            object_len: len,
            k: 1,
            n: 3,
            header_len: 0,
            block_size: 65536,
            shards: vec![],
            data_blocks: vec![],
        }
    }

    #[test]
    fn listing_by_kind_and_prefix_sees_only_matching_names() {
        let dir = tempfile::tempdir().unwrap();
        let map = PlacementMap::open(&dir.path().join("map.redb")).unwrap();
        for (kind, name, len) in [
            (Kind::Pack, "aa01", 1),
            (Kind::Pack, "aa02", 2),
            (Kind::Pack, "ab03", 3),
            (Kind::Index, "aa04", 4),
        ] {
            map.insert(&Handle::new(kind, name).unwrap(), &record(len), &[])
                .unwrap();
        }
        let mut got = map.list(Kind::Pack, "aa").unwrap();
        got.sort();
        let names: Vec<_> = got.iter().map(|(h, l)| (h.name().to_owned(), *l)).collect();
        assert_eq!(names, vec![("aa01".into(), 1), ("aa02".into(), 2)]);
        assert_eq!(map.list(Kind::Pack, "").unwrap().len(), 3);
        assert_eq!(map.list(Kind::Snapshot, "").unwrap().len(), 0);
        let h = Handle::new(Kind::Index, "aa04").unwrap();
        assert_eq!(map.remove(&h).unwrap().unwrap().object_len, 4);
        assert!(map.get(&h).unwrap().is_none());
    }

    #[test]
    fn map_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.redb");
        let peer = PeerId::random();
        {
            let map = PlacementMap::open(&path).unwrap();
            assert!(!map.is_complete().unwrap());
            let new = map
                .insert(&Handle::config(), &record(9), &[(peer, vec![])])
                .unwrap();
            assert_eq!(new, vec![peer]);
            map.mark_complete().unwrap();
            map.set_capsule_generation(4).unwrap();
            map.add_pending_deletes(&[(peer, ObjectTag([5; 32]), 2)])
                .unwrap();
        }
        let map = PlacementMap::open(&path).unwrap();
        assert!(map.is_complete().unwrap());
        assert_eq!(map.capsule_generation().unwrap(), 4);
        assert_eq!(map.get(&Handle::config()).unwrap().unwrap().object_len, 9);
        assert_eq!(map.holders().unwrap().len(), 1);
        let pending = map.pending_deletes().unwrap();
        assert_eq!(pending, vec![(peer, ObjectTag([5; 32]), 2)]);
        map.clear_pending_deletes(&pending).unwrap();
        assert!(map.pending_deletes().unwrap().is_empty());
    }
}
