//! [`ObjectStore`]: named objects stored as erasure-coded shards on peers.
//!
//! Put: hash, choose `k`-of-`n` and the holders from the usable peers
//! (`crate::policy`), cut the object into shards, prefix each with its
//! authenticated header, upload them in parallel (one shard per peer; a
//! failed upload moves to a spare peer), record the placement in the map,
//! and rewrite the root capsule when a new holder appears. If some shard
//! cannot be placed at all, the shards already stored are deleted again.
//!
//! Get: fetch shards in parallel from their holders, data shards first,
//! verify each header and body hash, replace every bad or missing shard by
//! another one, and rebuild from the first `k` good ones. Ranged reads
//! fetch only the blocks of the data shards that cover the range and check
//! them against the block hashes, falling back to a whole read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use kith_net::{Multiaddr, ObjectTag, PeerId, ShardKey};
use kith_storage::{Handle, Kind};

use super::capsule::RootCapsule;
use super::erasure;
use super::error::ObjectError;
use super::header::{block_hashes, block_size_for, body_digest, shard_len, ShardHeader, VERSION};
use super::keys::OwnerKeys;
use super::map::{ObjectRecord, PlacementMap, ShardRecord};
use super::name::{content_digest, object_tag, rewritten_in_place, seal, SealedIdentity};
use crate::policy::{choose_placement, PolicyError, PolicyGoal};
use crate::transport::{ShardBytes, ShardTransport, TransportError, UsablePeer};

/// Options of an [`ObjectStore`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The placement goal (F, the cap on n, replication of small objects).
    pub goal: PolicyGoal,
}

impl StoreOptions {
    /// Sets the placement goal.
    pub fn goal(mut self, goal: PolicyGoal) -> Self {
        self.goal = goal;
        self
    }
}

/// A shard that could not be used, as reported by reads and rebuilds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardProblem {
    /// Its holder.
    pub peer: PeerId,
    /// Its object tag.
    pub tag: ObjectTag,
    /// Its index.
    pub index: u16,
    /// What was wrong: unreachable, missing, or failed verification.
    pub reason: String,
}

/// Objects on peers for one owner.
pub struct ObjectStore<T: ShardTransport> {
    pub(crate) transport: Arc<T>,
    pub(crate) keys: Arc<OwnerKeys>,
    pub(crate) map: Arc<PlacementMap>,
    pub(crate) goal: PolicyGoal,
    problems: Mutex<Vec<ShardProblem>>,
    capsule_lock: tokio::sync::Mutex<()>,
    /// Set once a miss made the map be rebuilt from the holders in this
    /// session: a name missing from the map then really is missing.
    refreshed: std::sync::atomic::AtomicBool,
    /// Holders that were unreachable recently, and when: reads ask them
    /// last, so a restore with holders gone does not wait on each of them
    /// for every object.
    away: Mutex<BTreeMap<PeerId, Instant>>,
    /// The peers the node was connected to at the last look, and when:
    /// reads ask the others last, so a holder that went down before the
    /// restore began costs no dial at all when the rest suffice.
    connected: tokio::sync::Mutex<Option<(Instant, BTreeSet<PeerId>)>>,
    /// The last rebuild of an incomplete map, which failing reads pace.
    last_refresh: tokio::sync::Mutex<Option<Refresh>>,
    /// The folder of a private placement map, when the shared one was busy.
    _private_map: Option<tempfile::TempDir>,
}

/// How long an unreachable holder is asked last.
const AWAY_FOR: Duration = Duration::from_secs(60);
/// How long a look at the connected peers is trusted.
const CONNECTED_FOR: Duration = Duration::from_secs(2);
/// The pause between rebuilds of an incomplete placement map that failing
/// reads ask for: it starts short, so a holder whose connection was still
/// coming up is found within a second or two, and doubles up to a cap, so
/// a holder that is really gone costs few rebuilds.
const REFRESH_FIRST_GAP: Duration = Duration::from_secs(1);
const REFRESH_MAX_GAP: Duration = Duration::from_secs(16);
/// How long a read that finds too few shards keeps asking for rebuilds of
/// an incomplete map before it reports the object unavailable.
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// One rebuild of the placement map.
#[derive(Clone, Copy, Debug)]
struct Refresh {
    started: Instant,
    finished: Instant,
    /// How long after `finished` the next one may start.
    gap: Duration,
}

impl<T: ShardTransport> std::fmt::Debug for ObjectStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("owner", &self.keys.owner_id())
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

/// The pause before a whole read asks the holders that failed it once more.
const SECOND_ROUND_PAUSE: Duration = Duration::from_millis(200);

fn now_ns() -> u64 {
    u64::try_from(kith_engine::now_ns()).unwrap_or(0)
}

/// The tag `data` gets when cut `k` ways ([`build_shards`]), from its data
/// shards alone.
fn tag_if_cut(
    keys: &OwnerKeys,
    id: &SealedIdentity,
    data: &Bytes,
    k: u16,
) -> Result<ObjectTag, ObjectError> {
    let len = data.len() as u64;
    let block_size = block_size_for(shard_len(len, k));
    let blocks: Vec<Vec<[u8; 32]>> = erasure::data_shards(data, k)?
        .iter()
        .map(|b| block_hashes(b, block_size))
        .collect();
    Ok(object_tag(keys, id, &content_digest(len, k, &blocks)))
}

/// Cuts `data` into its `k`-of-`n` shards with their headers and derives
/// the object's tag from the data shards' block hashes, so that every byte
/// is hashed once (docs/PROTOCOL.md, "Shard format").
fn build_shards(
    keys: &OwnerKeys,
    id: &SealedIdentity,
    data: &Bytes,
    k: u16,
    n: u16,
) -> Result<(ObjectTag, Vec<(ShardHeader, ShardBytes)>), ObjectError> {
    build_shards_in(VERSION, keys, id, data, k, n)
}

/// [`build_shards`] in shard format `version`, whose erasure code it uses.
fn build_shards_in(
    version: u8,
    keys: &OwnerKeys,
    id: &SealedIdentity,
    data: &Bytes,
    k: u16,
    n: u16,
) -> Result<(ObjectTag, Vec<(ShardHeader, ShardBytes)>), ObjectError> {
    let len = data.len() as u64;
    let bodies = erasure::encode_with(erasure::Code::of_version(version), data, k, n)?;
    let body_len = shard_len(len, k);
    let block_size = block_size_for(body_len);
    let blocks: Vec<Vec<[u8; 32]>> = if k == 1 {
        // Whole copies: one set of block hashes serves them all.
        vec![block_hashes(data, block_size); bodies.len()]
    } else {
        bodies.iter().map(|b| block_hashes(b, block_size)).collect()
    };
    let content = content_digest(len, k, blocks.iter().take(usize::from(k)));
    let tag = object_tag(keys, id, &content);
    let sealed_name = seal(keys, &tag, id).ok_or(ObjectError::Keys {
        reason: "cannot seal the object name".into(),
    })?;
    let shards = bodies
        .into_iter()
        .zip(blocks)
        .enumerate()
        .map(|(i, (body, blocks))| {
            let header = ShardHeader {
                version,
                owner: keys.owner_id(),
                tag,
                sealed_name,
                index: u16::try_from(i).unwrap_or(u16::MAX),
                k,
                n,
                object_len: len,
                body_len,
                body_hash: body_digest(&blocks),
                block_size,
                blocks,
            };
            let head = Bytes::from(header.encode(keys.header_key()));
            (header, ShardBytes { head, body })
        })
        .collect();
    Ok((tag, shards))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A shard body that passed verification.
struct GoodShard {
    index: u16,
    body: Bytes,
    /// The code its parity was computed with, from its format version.
    code: erasure::Code,
}

impl<T: ShardTransport> ObjectStore<T> {
    /// Opens the store of `keys`' owner over `transport`, with its placement
    /// map in `cache_dir`. A missing map (a fresh machine) is rebuilt from
    /// the holders' listings, starting from the root capsule on any
    /// reachable peer.
    pub async fn open(
        transport: T,
        keys: OwnerKeys,
        cache_dir: &Path,
        options: StoreOptions,
    ) -> Result<Self, ObjectError> {
        let owner = keys.owner_id();
        let path = cache_dir.join(format!("placement-{}.redb", hex(&owner.0[..8])));
        // Another process of this owner (a backup while `snapshots` runs)
        // may hold the map: this one then works on a private copy rebuilt
        // from the holders, removed when the store is dropped.
        let (map, private) = tokio::task::spawn_blocking(move || match PlacementMap::open(&path) {
            Err(ObjectError::MapBusy { path }) => {
                tracing::info!(path = %path.display(), "placement map in use; using a private one");
                let dir = tempfile::tempdir().map_err(|e| ObjectError::Map {
                    path: path.clone(),
                    reason: format!("cannot create a private map: {e}"),
                })?;
                let map = PlacementMap::open(&dir.path().join("placement.redb"))?;
                Ok((map, Some(dir)))
            }
            other => other.map(|m| (m, None)),
        })
        .await
        .map_err(|e| ObjectError::Task(e.to_string()))??;
        let store = Self {
            transport: Arc::new(transport),
            keys: Arc::new(keys),
            map: Arc::new(map),
            goal: options.goal,
            problems: Mutex::new(Vec::new()),
            capsule_lock: tokio::sync::Mutex::new(()),
            refreshed: std::sync::atomic::AtomicBool::new(false),
            away: Mutex::new(BTreeMap::new()),
            connected: tokio::sync::Mutex::new(None),
            last_refresh: tokio::sync::Mutex::new(None),
            _private_map: private,
        };
        if !store.in_map(|m| m.is_complete()).await? {
            let started = Instant::now();
            store.rebuild_map().await?;
            *store.last_refresh.lock().await = Some(Refresh {
                started,
                finished: Instant::now(),
                gap: REFRESH_FIRST_GAP,
            });
        }
        store.retry_pending_deletes().await?;
        Ok(store)
    }

    /// The owner's keys.
    pub fn keys(&self) -> &OwnerKeys {
        &self.keys
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Shard problems seen since the last call (bad or unreachable shards
    /// that reads and rebuilds worked around).
    pub fn take_problems(&self) -> Vec<ShardProblem> {
        std::mem::take(&mut *self.problems.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn report(&self, peer: PeerId, tag: ObjectTag, index: u16, reason: String) {
        tracing::warn!(%peer, tag = ?tag, index, %reason, "shard discarded");
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ShardProblem {
                peer,
                tag,
                index,
                reason,
            });
    }

    /// Notes whether a holder answered.
    fn note_reachable(&self, peer: PeerId, error: Option<&TransportError>) {
        let mut away = self.away.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            Some(TransportError::Unreachable { .. }) => {
                away.insert(peer, Instant::now());
            }
            Some(_) => {}
            None => {
                away.remove(&peer);
            }
        }
    }

    /// Whether a holder was unreachable in the last [`AWAY_FOR`].
    fn is_away(&self, peer: &PeerId) -> bool {
        let away = self.away.lock().unwrap_or_else(|e| e.into_inner());
        away.get(peer).is_some_and(|t| t.elapsed() < AWAY_FOR)
    }

    /// The holders worth asking last: unreachable in the last
    /// [`AWAY_FOR`], or not connected at the last look (refreshed at most
    /// every [`CONNECTED_FOR`]). Only an order: they are still asked when
    /// the others do not suffice.
    async fn unlikely(&self) -> impl Fn(&PeerId) -> bool + '_ {
        let connected = {
            let mut slot = self.connected.lock().await;
            match slot.as_ref() {
                Some((at, peers)) if at.elapsed() < CONNECTED_FOR => Some(peers.clone()),
                _ => match self.transport.usable_peers().await {
                    Ok(usable) => {
                        let peers: BTreeSet<PeerId> = usable.into_iter().map(|u| u.peer).collect();
                        *slot = Some((Instant::now(), peers.clone()));
                        Some(peers)
                    }
                    Err(_) => None,
                },
            }
        };
        move |peer: &PeerId| {
            self.is_away(peer)
                || connected
                    .as_ref()
                    .is_some_and(|c| !c.is_empty() && !c.contains(peer))
        }
    }

    /// Runs a placement-map operation off the async runtime.
    pub(crate) async fn in_map<R: Send + 'static>(
        &self,
        f: impl FnOnce(&PlacementMap) -> Result<R, ObjectError> + Send + 'static,
    ) -> Result<R, ObjectError> {
        let map = self.map.clone();
        tokio::task::spawn_blocking(move || f(&map))
            .await
            .map_err(|e| ObjectError::Task(e.to_string()))?
    }

    /// Marks the placement map as complete: for a repository created on
    /// this machine there is nothing to rebuild.
    pub async fn mark_new(&self) -> Result<(), ObjectError> {
        self.in_map(|m| m.mark_complete()).await
    }

    /// Stores `data` under `name`. Storing the same bytes again is a no-op;
    /// other bytes replace the earlier object.
    pub async fn put(&self, name: &Handle, data: Bytes) -> Result<(), ObjectError> {
        let id = SealedIdentity {
            handle: name.clone(),
            written: if rewritten_in_place(name.kind) {
                now_ns()
            } else {
                0
            },
        };
        let h = name.clone();
        let old = self.in_map(move |m| m.get(&h)).await?;
        let unchanged = old.as_ref().map(|o| o.tag);
        // Storing the same bytes again is a no-op whoever is reachable: the
        // tag they had when cut the old record's way is checked first, with
        // no coding and no network.
        if let Some(o) = old
            .as_ref()
            .filter(|o| o.object_len == data.len() as u64 && !rewritten_in_place(name.kind))
        {
            let (keys, identity, bytes, k) = (self.keys.clone(), id.clone(), data.clone(), o.k);
            let tag = tokio::task::spawn_blocking(move || tag_if_cut(&keys, &identity, &bytes, k))
                .await
                .map_err(|e| ObjectError::Task(e.to_string()))??;
            if Some(tag.0) == unchanged {
                return Ok(());
            }
        }
        let Some((record, holders)) = self.upload(&id, unchanged, data).await? else {
            return Ok(());
        };
        let h = name.clone();
        let rec = record.clone();
        let new_holders = self.in_map(move |m| m.insert(&h, &rec, &holders)).await?;
        if let Some(old) = old {
            self.delete_shards(old.tag(), old.placements()).await?;
        }
        if !new_holders.is_empty() {
            self.write_capsule().await?;
        }
        Ok(())
    }

    /// Cuts and places the object; `None` when its tag is `unchanged`, so
    /// the holders already have these very shards.
    async fn upload(
        &self,
        id: &SealedIdentity,
        unchanged: Option<[u8; 32]>,
        data: Bytes,
    ) -> Result<Option<(ObjectRecord, Vec<(PeerId, Vec<Multiaddr>)>)>, ObjectError> {
        let name = &id.handle;
        let len = data.len() as u64;
        let peers = self.transport.usable_peers().await?;
        // Peers without room for a shard are not usable for this object.
        let room = |p: &UsablePeer, k: u64| {
            let body = if k <= 1 { len } else { len.div_ceil(k) + 1 };
            p.free >= body + super::header::header_len(body) as u64
        };
        let with_room: Vec<&UsablePeer> = peers
            .iter()
            .filter(|p| room(p, u64::from(self.goal.losses_survivable).max(1)))
            .collect();
        let profiles: Vec<_> = with_room.iter().map(|p| p.profile.clone()).collect();
        let placement = choose_placement(&profiles, &self.goal, len).map_err(|e| match e {
            PolicyError::NotEnoughPeers { usable, needed } => ObjectError::NotEnoughPeers {
                name: name.clone(),
                usable,
                needed,
            },
            PolicyError::InvalidGoal(why) => ObjectError::InvalidGoal(why),
        })?;
        let n = u16::try_from(placement.n).map_err(|_| ObjectError::InvalidGoal("n too large"))?;
        let k = if len == 0 {
            1
        } else {
            u16::try_from(placement.k).map_err(|_| ObjectError::InvalidGoal("k too large"))?
        };
        let keys = self.keys.clone();
        let identity = id.clone();
        let (tag, built) =
            tokio::task::spawn_blocking(move || build_shards(&keys, &identity, &data, k, n))
                .await
                .map_err(|e| ObjectError::Task(e.to_string()))??;
        if unchanged == Some(tag.0) {
            return Ok(None);
        }
        let owner = self.keys.owner_id();
        let chosen: Vec<&UsablePeer> = placement
            .peers
            .iter()
            .filter_map(|&i| with_room.get(i).copied())
            .collect();
        let mut spares: Vec<&UsablePeer> = with_room
            .iter()
            .filter(|p| !chosen.iter().any(|c| c.peer == p.peer))
            .copied()
            .collect();
        let attempts = built.iter().zip(chosen.iter()).map(|((h, bytes), p)| {
            let key = ShardKey {
                owner,
                tag,
                index: h.index,
            };
            let peer = p.peer;
            let bytes = bytes.clone();
            async move { (h.index, peer, self.transport.store(peer, key, bytes).await) }
        });
        let results = futures::future::join_all(attempts).await;
        let mut placed: BTreeMap<u16, &UsablePeer> = BTreeMap::new();
        let mut failed = Vec::new();
        for (index, peer, result) in results {
            match result {
                Ok(()) => {
                    if let Some(p) = chosen.iter().find(|c| c.peer == peer) {
                        placed.insert(index, *p);
                    }
                }
                Err(e) => failed.push((index, e)),
            }
        }
        let mut first_error = None;
        for (index, error) in failed {
            tracing::warn!(%error, index, object = %name, "shard upload failed; trying a spare peer");
            let mut done = false;
            let Some((_, bytes)) = built.get(usize::from(index)) else {
                continue;
            };
            while let Some(spare) = spares.pop() {
                let key = ShardKey { owner, tag, index };
                match self.transport.store(spare.peer, key, bytes.clone()).await {
                    Ok(()) => {
                        placed.insert(index, spare);
                        done = true;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, index, "spare peer refused the shard"),
                }
            }
            if !done {
                first_error.get_or_insert(error.to_string());
            }
        }
        if placed.len() < usize::from(n) {
            let stored: Vec<(PeerId, u16)> = placed.iter().map(|(i, p)| (p.peer, *i)).collect();
            self.delete_shards(tag, stored).await?;
            return Err(ObjectError::Upload {
                name: name.clone(),
                failures: usize::from(n) - placed.len(),
                first: first_error.unwrap_or_else(|| "no peer took the shard".into()),
            });
        }
        let header_len = built.first().map_or(0, |(h, _)| {
            u32::try_from(h.encoded_len()).unwrap_or(u32::MAX)
        });
        let data_count = usize::from(k);
        let record = ObjectRecord {
            tag: tag.0,
            written: id.written,
            object_len: len,
            k,
            n,
            header_len,
            block_size: built.first().map_or(0, |(h, _)| h.block_size),
            shards: built
                .iter()
                .map(|(h, _)| ShardRecord {
                    index: h.index,
                    peers: placed
                        .get(&h.index)
                        .map(|p| vec![p.peer.to_bytes()])
                        .unwrap_or_default(),
                    body_hash: h.body_hash,
                })
                .collect(),
            data_blocks: built
                .iter()
                .take(data_count)
                .map(|(h, _)| h.blocks.clone())
                .collect(),
        };
        let holders = placed.values().map(|p| (p.peer, p.addrs.clone())).collect();
        Ok(Some((record, holders)))
    }

    /// Reads a whole object.
    pub async fn get(&self, name: &Handle) -> Result<Bytes, ObjectError> {
        let record = self.record(name).await?;
        self.read_whole(name, &record).await
    }

    /// The size of an object, if it exists.
    pub async fn stat(&self, name: &Handle) -> Result<Option<u64>, ObjectError> {
        Ok(self.find(name).await?.map(|r| r.object_len))
    }

    /// Objects of `kind` whose names start with `prefix`, with their sizes.
    pub async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<(Handle, u64)>, ObjectError> {
        let prefix = prefix.to_owned();
        self.in_map(move |m| m.list(kind, &prefix)).await
    }

    /// Deletes an object and all its shards; deleting a missing object is
    /// not an error. Shards on unreachable holders are deleted later.
    pub async fn delete(&self, name: &Handle) -> Result<(), ObjectError> {
        let h = name.clone();
        if let Some(record) = self.in_map(move |m| m.remove(&h)).await? {
            self.delete_shards(record.tag(), record.placements())
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn record(&self, name: &Handle) -> Result<ObjectRecord, ObjectError> {
        self.find(name)
            .await?
            .ok_or_else(|| ObjectError::NotFound(name.clone()))
    }

    /// The record of `name`. A name the map does not know may have been
    /// written by another machine of this owner: the first miss of a
    /// session refreshes the map from the holders before answering.
    async fn find(&self, name: &Handle) -> Result<Option<ObjectRecord>, ObjectError> {
        use std::sync::atomic::Ordering;
        let h = name.clone();
        if let Some(r) = self.in_map(move |m| m.get(&h)).await? {
            return Ok(Some(r));
        }
        if self.refreshed.swap(true, Ordering::Relaxed) {
            return Ok(None);
        }
        tracing::debug!(object = %name, "not in the placement map; refreshing it from the holders");
        self.rebuild_map().await?;
        let h = name.clone();
        self.in_map(move |m| m.get(&h)).await
    }

    /// Deletes shards, remembering those whose holder did not answer.
    pub(crate) async fn delete_shards(
        &self,
        tag: ObjectTag,
        placements: Vec<(PeerId, u16)>,
    ) -> Result<(), ObjectError> {
        let mut by_peer: BTreeMap<PeerId, Vec<(ObjectTag, u16)>> = BTreeMap::new();
        for (peer, index) in placements {
            by_peer.entry(peer).or_default().push((tag, index));
        }
        let results =
            futures::future::join_all(by_peer.into_iter().map(|(peer, shards)| async move {
                let r = self.transport.delete(peer, shards.clone()).await;
                (peer, shards, r)
            }))
            .await;
        let mut pending = Vec::new();
        for (peer, shards, r) in results {
            if let Err(e) = r {
                tracing::warn!(%peer, error = %e, "shard delete postponed");
                pending.extend(shards.into_iter().map(|(t, i)| (peer, t, i)));
            }
        }
        if !pending.is_empty() {
            self.in_map(move |m| m.add_pending_deletes(&pending))
                .await?;
        }
        Ok(())
    }

    /// Retries deletes postponed because their holder was unreachable.
    pub async fn retry_pending_deletes(&self) -> Result<(), ObjectError> {
        let pending = self.in_map(|m| m.pending_deletes()).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        for (peer, tag, index) in pending {
            match self.transport.delete(peer, vec![(tag, index)]).await {
                Ok(_) | Err(TransportError::NotFound { .. }) => done.push((peer, tag, index)),
                Err(_) => {}
            }
        }
        self.in_map(move |m| m.clear_pending_deletes(&done)).await
    }

    /// Fetches and verifies one whole shard.
    async fn fetch_shard(
        &self,
        record: &ObjectRecord,
        peer: PeerId,
        index: u16,
    ) -> Result<GoodShard, String> {
        let key = ShardKey {
            owner: self.keys.owner_id(),
            tag: record.tag(),
            index,
        };
        let body_len = shard_len(record.object_len, record.k);
        let max = u64::from(record.header_len) + body_len;
        let fetched = self.transport.fetch(peer, key, 0, None, max).await;
        self.note_reachable(peer, fetched.as_ref().err());
        let bytes = fetched.map_err(|e| e.to_string())?;
        let (header, hlen) =
            ShardHeader::decode(&bytes, self.keys.header_key()).map_err(|e| e.to_string())?;
        if header.owner != key.owner
            || header.tag != key.tag
            || header.index != index
            || header.k != record.k
            || header.n != record.n
            || header.object_len != record.object_len
        {
            return Err("shard header does not describe the expected shard".into());
        }
        let body = bytes.slice(hlen.min(bytes.len())..);
        if body.len() as u64 != body_len {
            return Err(format!(
                "shard body has {} bytes, {body_len} expected",
                body.len()
            ));
        }
        let expected = record
            .shards
            .iter()
            .find(|s| s.index == index)
            .map_or(header.body_hash, |s| s.body_hash);
        if header.body_hash != expected || !header.body_matches(&body) {
            return Err("shard body hash does not match".into());
        }
        Ok(GoodShard {
            index,
            body,
            code: erasure::Code::of_version(header.version),
        })
    }

    /// Reads a whole object from the first `k` good shards. When too few
    /// are known and the map is incomplete (a holder did not answer when
    /// it was rebuilt, as on a fresh machine while connections come up),
    /// the map is rebuilt from the holders and the read tried again, for
    /// up to [`READ_PATIENCE`].
    pub(crate) async fn read_whole(
        &self,
        name: &Handle,
        record: &ObjectRecord,
    ) -> Result<Bytes, ObjectError> {
        let give_up = Instant::now() + READ_PATIENCE;
        let mut newer = None;
        loop {
            let failed_at = Instant::now();
            match self
                .read_whole_once(name, newer.as_ref().unwrap_or(record))
                .await
            {
                Err(e @ ObjectError::Unavailable { .. }) => {
                    if Instant::now() >= give_up || !self.refresh_incomplete_map(failed_at).await? {
                        return Err(e);
                    }
                    newer = Some(self.record(name).await?);
                }
                other => return other,
            }
        }
    }

    /// Makes sure an incomplete map was rebuilt after `failed_at`, when a
    /// read found too few shards: one rebuild serves every read that
    /// failed before it began, and rebuilds are paced by a doubling gap.
    /// True when the read is worth trying again; false when the map is
    /// complete, so no rebuild would find more.
    async fn refresh_incomplete_map(&self, failed_at: Instant) -> Result<bool, ObjectError> {
        let mut last = self.last_refresh.lock().await;
        if let Some(r) = *last {
            if r.started > failed_at {
                return Ok(true);
            }
        }
        if self.in_map(|m| m.is_complete()).await? {
            return Ok(false);
        }
        let gap = match *last {
            Some(r) => {
                tokio::time::sleep_until((r.finished + r.gap).into()).await;
                (r.gap * 2).min(REFRESH_MAX_GAP)
            }
            None => REFRESH_FIRST_GAP,
        };
        tracing::info!("too few shards known; rebuilding the placement map from the holders");
        let started = Instant::now();
        self.rebuild_map().await?;
        *last = Some(Refresh {
            started,
            finished: Instant::now(),
            gap,
        });
        Ok(true)
    }

    async fn read_whole_once(
        &self,
        name: &Handle,
        record: &ObjectRecord,
    ) -> Result<Bytes, ObjectError> {
        let k = usize::from(record.k);
        // Data shards first: with all of them no decoding is needed.
        let mut candidates = record.placements();
        let unlikely = self.unlikely().await;
        candidates.sort_by_key(|(p, i)| (unlikely(p), *i >= record.k, *i));
        let mut good: BTreeMap<u16, Bytes> = BTreeMap::new();
        let mut in_flight: BTreeSet<u16> = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        let mut problems = Vec::new();
        let mut failed: Vec<(PeerId, u16)> = Vec::new();
        let mut second_round = false;
        let mut parity_code = None;
        loop {
            // With k = 1 any copy will do, so one fetch at a time suffices.
            while good.len() + running.len() < k {
                let Some(pos) = candidates.iter().position(|(_, i)| {
                    !good.contains_key(i) && (record.k == 1 || !in_flight.contains(i))
                }) else {
                    break;
                };
                let (peer, index) = candidates.remove(pos);
                in_flight.insert(index);
                running.push(
                    async move { (peer, index, self.fetch_shard(record, peer, index).await) },
                );
            }
            let Some((peer, index, result)) = running.next().await else {
                // Every holder was asked and too few answered. A connection
                // can close under a request (either side dropping it as the
                // stream opens) while a fresh dial works: the failed ones
                // get one more try before the read gives up.
                if !second_round && !failed.is_empty() {
                    second_round = true;
                    candidates = std::mem::take(&mut failed);
                    tokio::time::sleep(SECOND_ROUND_PAUSE).await;
                    continue;
                }
                break;
            };
            in_flight.remove(&index);
            // Parity shards of one object written by different kith
            // versions (same tag, another code) cannot be mixed in a decode.
            let result = result.and_then(|shard| match parity_code {
                Some(code) if shard.index >= record.k && shard.code != code => {
                    Err("parity shard of another erasure code".to_string())
                }
                _ => Ok(shard),
            });
            match result {
                Ok(shard) => {
                    if shard.index >= record.k {
                        parity_code = Some(shard.code);
                    }
                    good.insert(shard.index, shard.body);
                }
                Err(reason) => {
                    self.report(peer, record.tag(), index, reason.clone());
                    problems.push(format!("shard {index} on {peer}: {reason}"));
                    failed.push((peer, index));
                }
            }
            if good.len() >= k {
                break;
            }
        }
        if good.len() < k {
            return Err(ObjectError::Unavailable {
                name: name.clone(),
                good: good.len(),
                needed: k,
                problems: if problems.is_empty() {
                    "no holder known".into()
                } else {
                    problems.join("; ")
                },
            });
        }
        if record.k == 1 {
            return good.into_values().next().ok_or(ObjectError::Erasure {
                reason: "no copy".into(),
            });
        }
        let (object_len, kk, n) = (record.object_len, record.k, record.n);
        // With every data shard at hand no parity is used and the code
        // does not matter.
        let code = parity_code.unwrap_or(erasure::Code::Gf8);
        tokio::task::spawn_blocking(move || {
            let shards: Vec<(u16, &[u8])> = good.iter().map(|(i, b)| (*i, b.as_ref())).collect();
            erasure::decode(code, object_len, kk, n, &shards).map(Bytes::from)
        })
        .await
        .map_err(|e| ObjectError::Task(e.to_string()))?
    }

    /// Reads `len` bytes at `offset` of an object.
    pub async fn get_range(
        &self,
        name: &Handle,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ObjectError> {
        let record = self.record(name).await?;
        let end = offset.checked_add(len).filter(|e| *e <= record.object_len);
        let Some(end) = end else {
            return Err(ObjectError::OutOfRange {
                name: name.clone(),
                size: record.object_len,
                offset,
                len,
            });
        };
        if len == 0 {
            return Ok(Bytes::new());
        }
        if offset == 0 && end == record.object_len {
            // The whole object (restores read whole packs): the whole-shard
            // path needs no block bookkeeping and, with holders away, goes
            // straight to the shards that are there.
            return self.read_whole(name, &record).await;
        }
        match self.read_range(&record, offset, end).await {
            Some(bytes) => Ok(bytes),
            None => {
                let whole = self.read_whole(name, &record).await?;
                let (a, b) = (
                    usize::try_from(offset).unwrap_or(usize::MAX),
                    usize::try_from(end).unwrap_or(usize::MAX),
                );
                if b > whole.len() {
                    return Err(ObjectError::OutOfRange {
                        name: name.clone(),
                        size: whole.len() as u64,
                        offset,
                        len,
                    });
                }
                Ok(whole.slice(a..b))
            }
        }
    }

    /// Reads `[offset, end)` from the data shards alone, verifying each
    /// block; `None` when that is not possible (a data shard unreachable or
    /// bad), and the caller rebuilds the whole object instead.
    ///
    /// Blocks are verified whole, so each data shard's part is widened to
    /// block boundaries. Consecutive data shards hold consecutive bytes of
    /// the object, so the widened parts are adjacent: each is fetched
    /// straight into its place in one buffer, and the answer is a slice of
    /// it, with no copy.
    async fn read_range(&self, record: &ObjectRecord, offset: u64, end: u64) -> Option<Bytes> {
        let s = shard_len(record.object_len, record.k);
        let bs = u64::from(record.block_size);
        if s == 0 || bs == 0 {
            return None;
        }
        let first = offset / s;
        let last = (end - 1) / s;
        // Holders that were just unreachable or are not connected are
        // skipped: rebuilding from other shards is quicker than waiting on
        // them. A data shard left with no holder makes the whole read fall
        // back to rebuilding the object: find that out before fetching the
        // other parts, which would be fetched again.
        let unlikely = self.unlikely().await;
        let placements = record.placements();
        let mut holders = Vec::new();
        for i in first..=last {
            let index = u16::try_from(i).ok()?;
            let of_part: Vec<(PeerId, u16)> = placements
                .iter()
                .copied()
                .filter(|(p, j)| (record.k == 1 || *j == index) && !unlikely(p))
                .collect();
            if of_part.is_empty() {
                return None;
            }
            holders.push((index, of_part));
        }
        // The block-aligned part of data shard `i`, in shard coordinates.
        let part = |i: u64| {
            let a = offset.max(i * s) - i * s;
            let b = end.min((i + 1) * s) - i * s;
            (a / bs * bs, ((b - 1) / bs + 1).saturating_mul(bs).min(s))
        };
        let base = first * s + part(first).0;
        let top = last * s + part(last).1;
        let mut buf = vec![0u8; usize::try_from(top - base).ok()?];
        let mut rest: &mut [u8] = &mut buf;
        let mut reads = Vec::new();
        for (index, of_part) in holders {
            let (from, to) = part(u64::from(index));
            let (here, tail) = rest.split_at_mut_checked(usize::try_from(to - from).ok()?)?;
            rest = tail;
            reads.push(self.read_data_part(record, index, of_part, from, here));
        }
        if !futures::future::join_all(reads)
            .await
            .into_iter()
            .all(|ok| ok)
        {
            return None;
        }
        let from = usize::try_from(offset - base).ok()?;
        let to = usize::try_from(end - base).ok()?;
        Some(Bytes::from(buf).slice(from..to))
    }

    /// Fills `dest` with data shard `index` from `from` (a block boundary)
    /// on, block-verified, from the first of `holders` that has it right.
    async fn read_data_part(
        &self,
        record: &ObjectRecord,
        index: u16,
        holders: Vec<(PeerId, u16)>,
        from: u64,
        dest: &mut [u8],
    ) -> bool {
        let bs = u64::from(record.block_size);
        let Some(blocks) =
            record
                .data_blocks
                .get(if record.k == 1 { 0 } else { usize::from(index) })
        else {
            return false;
        };
        let first_block = from / bs;
        let last_block = (from + dest.len() as u64).saturating_sub(1) / bs;
        let (Ok(skip), Ok(chunk)) = (usize::try_from(first_block), usize::try_from(bs)) else {
            return false;
        };
        if blocks.len() as u64 <= last_block {
            return false;
        }
        for (peer, shard_index) in holders {
            let key = ShardKey {
                owner: self.keys.owner_id(),
                tag: record.tag(),
                index: shard_index,
            };
            let got = self
                .transport
                .fetch_into(peer, key, u64::from(record.header_len) + from, dest)
                .await;
            self.note_reachable(peer, got.as_ref().err());
            if let Err(e) = got {
                self.report(peer, key.tag, shard_index, e.to_string());
                continue;
            }
            let verified = dest
                .chunks(chunk)
                .zip(blocks.iter().skip(skip))
                .all(|(block, hash)| blake3::hash(block).as_bytes() == hash);
            if !verified {
                self.report(
                    peer,
                    key.tag,
                    shard_index,
                    "block hash does not match".into(),
                );
                continue;
            }
            return true;
        }
        false
    }

    /// Writes a new root capsule naming every holder to every holder, then
    /// deletes the generation it replaces.
    pub async fn write_capsule(&self) -> Result<(), ObjectError> {
        let _one_at_a_time = self.capsule_lock.lock().await;
        let holders = self.in_map(|m| m.holders()).await?;
        let previous = self.in_map(|m| m.capsule_generation()).await?;
        let capsule = RootCapsule {
            generation: previous + 1,
            written_ns: i64::try_from(now_ns()).unwrap_or(i64::MAX),
            holders: holders.clone(),
        };
        let bytes = Bytes::from(capsule.seal(&self.keys).ok_or(ObjectError::Keys {
            reason: "cannot seal the root capsule".into(),
        })?);
        let owner = self.keys.owner_id();
        let tag = self.keys.capsule_tag();
        let key = ShardKey {
            owner,
            tag,
            index: capsule.index(),
        };
        let old_index = (previous % 65536) as u16;
        let stores = holders.iter().map(|(peer, _)| {
            let bytes = bytes.clone();
            async move {
                let r = self.transport.store(*peer, key, bytes.into()).await;
                if r.is_ok() && previous > 0 && old_index != key.index {
                    let _ = self.transport.delete(*peer, vec![(tag, old_index)]).await;
                }
                (peer, r)
            }
        });
        let mut stored = 0;
        for (peer, r) in futures::future::join_all(stores).await {
            match r {
                Ok(()) => stored += 1,
                Err(e) => tracing::warn!(%peer, error = %e, "root capsule not stored"),
            }
        }
        tracing::debug!(
            generation = capsule.generation,
            stored,
            "root capsule written"
        );
        let generation = capsule.generation;
        self.in_map(move |m| m.set_capsule_generation(generation))
            .await
    }

    /// Reads the newest root capsule that any of `peers` holds.
    pub async fn read_capsule(&self, peers: &[PeerId]) -> Option<RootCapsule> {
        let tag = self.keys.capsule_tag();
        let owner = self.keys.owner_id();
        let mut best: Option<RootCapsule> = None;
        for peer in peers {
            let Ok(holdings) = self.transport.holdings(*peer).await else {
                continue;
            };
            for h in holdings.iter().filter(|h| h.tag == tag) {
                let key = ShardKey {
                    owner,
                    tag,
                    index: h.index,
                };
                let max = super::capsule::MAX_CAPSULE_LEN as u64;
                let Ok(bytes) = self.transport.fetch(*peer, key, 0, None, max).await else {
                    continue;
                };
                match RootCapsule::open(&self.keys, &bytes) {
                    Some(c) if best.as_ref().is_none_or(|b| c.generation > b.generation) => {
                        best = Some(c)
                    }
                    Some(_) => {}
                    None => self.report(*peer, tag, h.index, "root capsule does not open".into()),
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_engine::MasterSecret;

    #[test]
    fn the_tag_from_data_shards_alone_is_the_tag_of_the_cut_shards() {
        let keys = OwnerKeys::derive(&MasterSecret::from_bytes([3; 32])).unwrap();
        let id = SealedIdentity {
            handle: Handle::new(Kind::Pack, "ab").unwrap(),
            written: 0,
        };
        for len in [0usize, 1, 1000, 200_001, 3 << 20] {
            let data = Bytes::from((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
            for (k, n) in [(1u16, 3u16), (2, 4), (3, 5), (4, 6)] {
                if len == 0 && k > 1 {
                    continue;
                }
                let (tag, shards) = build_shards(&keys, &id, &data, k, n).unwrap();
                assert_eq!(tag_if_cut(&keys, &id, &data, k).unwrap(), tag, "{len} {k}");
                assert_eq!(shards.len(), usize::from(n));
                for (h, s) in &shards {
                    assert_eq!(s.head.len(), h.encoded_len());
                    assert!(h.body_matches(&s.body), "{len} {k}");
                }
            }
        }
    }

    /// Shards of format 2 (GF(2^16) parity) written by an older kith are
    /// still rebuilt when data shards are missing: the reader picks the code
    /// from the version in their headers.
    #[tokio::test]
    async fn an_object_in_shard_format_2_is_rebuilt_with_its_own_code() {
        use super::super::memory::{MemoryNetwork, MemoryTransport};
        let master = MasterSecret::from_bytes([4; 32]);
        let keys = OwnerKeys::derive(&master).unwrap();
        let net = MemoryNetwork::new();
        let peers = net.add_holders(5);
        let name = Handle::new(Kind::Pack, "ab").unwrap();
        let data = Bytes::from(
            (0..1_000_000u32)
                .map(|i| (i * 7 % 253) as u8)
                .collect::<Vec<_>>(),
        );
        let dir = tempfile::tempdir().unwrap();
        let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
        let owner_keys = OwnerKeys::derive(&master).unwrap();
        let store = ObjectStore::open(transport, owner_keys, dir.path(), StoreOptions::default())
            .await
            .unwrap();
        store.put(&name, data.clone()).await.unwrap();
        let record = store.record(&name).await.unwrap();
        drop(store);

        // Replace every shard with its format 2 counterpart, as an older
        // kith would have written it.
        let id = SealedIdentity {
            handle: name.clone(),
            written: 0,
        };
        let (tag, old) = build_shards_in(2, &keys, &id, &data, record.k, record.n).unwrap();
        assert_eq!(tag, record.tag());
        let writer = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
        for (peer, index) in record.placements() {
            let (_, bytes) = old[usize::from(index)].clone();
            let key = ShardKey {
                owner: keys.owner_id(),
                tag,
                index,
            };
            writer.store(peer, key, bytes).await.unwrap();
        }
        // The holders of the first two data shards are gone.
        for (peer, index) in record.placements() {
            if index < 2 {
                net.set_down(&peer, true);
            }
        }
        let fresh_dir = tempfile::tempdir().unwrap();
        let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
        let fresh = ObjectStore::open(transport, keys, fresh_dir.path(), StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(fresh.get(&name).await.unwrap(), data);
        assert_eq!(peers.len(), 5);
    }
}
