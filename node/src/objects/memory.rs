//! An in-memory shard network for tests and benchmarks: holders that keep
//! shards in maps, with fault switches (a peer down, a peer serving
//! corrupted bytes, a quota), and a [`ShardTransport`] over it for one
//! owner. Several transports (several machines of one owner, or several
//! owners) can share one [`MemoryNetwork`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use kith_net::{ErrorCode, ErrorReply, Holding, Multiaddr, ObjectTag, OwnerId, PeerId, ShardKey};

use crate::policy::PeerProfile;
use crate::transport::{ShardBytes, ShardTransport, TransportError, UsablePeer};

struct Holder {
    addr: Multiaddr,
    profile: PeerProfile,
    shards: BTreeMap<ShardKey, Bytes>,
    down: bool,
    corrupt: bool,
    refuse: bool,
    quota: u64,
    /// Fetches still to fail as if the connection closed under them.
    failing_fetches: u32,
    /// Holdings requests still to fail the same way.
    failing_listings: u32,
}

impl Holder {
    fn used(&self) -> u64 {
        self.shards.values().map(|b| b.len() as u64).sum()
    }
}

/// A set of in-memory holders.
#[derive(Default)]
pub struct MemoryNetwork {
    holders: Mutex<BTreeMap<PeerId, Holder>>,
    fetches: AtomicU64,
    fetched_bytes: AtomicU64,
    /// Requests that found their peer down (a dial that would fail).
    unreachable: AtomicU64,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").finish_non_exhaustive()
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<PeerId, Holder>> {
        // A panic while holding the lock leaves plain maps behind, still
        // consistent enough for tests.
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `count` holders, each always on, in its own failure domain,
    /// without a quota; returns their ids.
    pub fn add_holders(&self, count: usize) -> Vec<PeerId> {
        let mut holders = self.lock();
        (0..count)
            .map(|_| {
                let peer = PeerId::random();
                let domain = u32::try_from(holders.len()).unwrap_or(u32::MAX);
                let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 4000 + domain)
                    .parse()
                    .unwrap_or_else(|_| Multiaddr::empty());
                holders.insert(
                    peer,
                    Holder {
                        addr,
                        profile: PeerProfile::new(0.99, domain),
                        shards: BTreeMap::new(),
                        down: false,
                        corrupt: false,
                        refuse: false,
                        quota: u64::MAX,
                        failing_fetches: 0,
                        failing_listings: 0,
                    },
                );
                peer
            })
            .collect()
    }

    /// Every holder.
    pub fn holders(&self) -> Vec<PeerId> {
        self.lock().keys().copied().collect()
    }

    /// Takes a holder offline (every request to it fails as unreachable)
    /// or brings it back.
    pub fn set_down(&self, peer: &PeerId, down: bool) {
        if let Some(h) = self.lock().get_mut(peer) {
            h.down = down;
        }
    }

    /// Makes a holder flip a byte in every shard range it serves.
    pub fn set_corrupt(&self, peer: &PeerId, corrupt: bool) {
        if let Some(h) = self.lock().get_mut(peer) {
            h.corrupt = corrupt;
        }
    }

    /// Makes a holder refuse every store as over quota while still
    /// reporting free space (its quota was taken by others since it was
    /// asked).
    pub fn set_refuse_stores(&self, peer: &PeerId, refuse: bool) {
        if let Some(h) = self.lock().get_mut(peer) {
            h.refuse = refuse;
        }
    }

    /// Makes a holder's next `count` fetches fail as unreachable while it
    /// stays up, as when a connection closes under a request.
    pub fn fail_next_fetches(&self, peer: &PeerId, count: u32) {
        if let Some(h) = self.lock().get_mut(peer) {
            h.failing_fetches = count;
        }
    }

    /// Makes a holder's next `count` holdings requests fail as unreachable
    /// while it stays up, as when its connection is still coming up.
    pub fn fail_next_listings(&self, peer: &PeerId, count: u32) {
        if let Some(h) = self.lock().get_mut(peer) {
            h.failing_listings = count;
        }
    }

    /// Sets how many bytes a holder accepts in total.
    pub fn set_quota(&self, peer: &PeerId, bytes: u64) {
        if let Some(h) = self.lock().get_mut(peer) {
            h.quota = bytes;
        }
    }

    /// Shards held by `peer`.
    pub fn shard_count(&self, peer: &PeerId) -> usize {
        self.lock().get(peer).map_or(0, |h| h.shards.len())
    }

    /// Every shard held anywhere, with its holder: what holders see.
    pub fn held(&self) -> Vec<(PeerId, ShardKey, Bytes)> {
        let holders = self.lock();
        holders
            .iter()
            .flat_map(|(p, h)| h.shards.iter().map(|(k, b)| (*p, *k, b.clone())))
            .collect()
    }

    /// Requests sent to a peer that was down, so far.
    pub fn unreachable_requests(&self) -> u64 {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Fetch requests served so far, and the bytes they returned.
    pub fn fetch_stats(&self) -> (u64, u64) {
        (
            self.fetches.load(Ordering::Relaxed),
            self.fetched_bytes.load(Ordering::Relaxed),
        )
    }
}

/// A [`ShardTransport`] for one owner over a [`MemoryNetwork`].
pub struct MemoryTransport {
    net: Arc<MemoryNetwork>,
    owner: OwnerId,
    known: Mutex<BTreeSet<PeerId>>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl MemoryTransport {
    /// A transport for `owner` that knows only the peers `known` (a fresh
    /// machine knows one bootstrap peer; it learns the others).
    pub fn new(
        net: Arc<MemoryNetwork>,
        owner: OwnerId,
        known: impl IntoIterator<Item = PeerId>,
    ) -> Self {
        Self {
            net,
            owner,
            known: Mutex::new(known.into_iter().collect()),
        }
    }

    /// A transport for `owner` that knows every holder of the network.
    pub fn knowing_all(net: Arc<MemoryNetwork>, owner: OwnerId) -> Self {
        let all = net.holders();
        Self::new(net, owner, all)
    }

    fn known(&self) -> BTreeSet<PeerId> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reach<R>(
        &self,
        peer: PeerId,
        f: impl FnOnce(&mut Holder) -> Result<R, TransportError>,
    ) -> Result<R, TransportError> {
        let mut holders = self.net.lock();
        match holders.get_mut(&peer) {
            Some(h) if !h.down => f(h),
            Some(_) => {
                self.net.unreachable.fetch_add(1, Ordering::Relaxed);
                Err(TransportError::Unreachable {
                    peer,
                    reason: "the peer is down".into(),
                })
            }
            None => Err(TransportError::Unreachable {
                peer,
                reason: "no such peer".into(),
            }),
        }
    }
}

#[async_trait]
impl ShardTransport for MemoryTransport {
    fn owner(&self) -> OwnerId {
        self.owner
    }

    async fn usable_peers(&self) -> Result<Vec<UsablePeer>, TransportError> {
        let known = self.known();
        let holders = self.net.lock();
        Ok(holders
            .iter()
            .filter(|(p, h)| known.contains(p) && !h.down)
            .map(|(p, h)| UsablePeer {
                peer: *p,
                addrs: vec![h.addr.clone()],
                free: h.quota.saturating_sub(h.used()),
                profile: h.profile.clone(),
            })
            .collect())
    }

    async fn known_peers(&self) -> Result<Vec<PeerId>, TransportError> {
        Ok(self.known().into_iter().collect())
    }

    async fn learn_peers(
        &self,
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<(), TransportError> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(peers.into_iter().map(|(p, _)| p));
        Ok(())
    }

    async fn store(
        &self,
        peer: PeerId,
        key: ShardKey,
        data: ShardBytes,
    ) -> Result<(), TransportError> {
        if key.owner != self.owner {
            return Err(TransportError::Refused {
                peer,
                reply: ErrorReply::new(ErrorCode::Unauthorized, "not this owner's shard"),
            });
        }
        self.reach(peer, |h| {
            let old = h.shards.get(&key).map_or(0, |b| b.len() as u64);
            let used = h.used() - old;
            if h.refuse || used.saturating_add(data.len()) > h.quota {
                return Err(TransportError::Refused {
                    peer,
                    reply: ErrorReply::new(ErrorCode::OverQuota, "over quota"),
                });
            }
            h.shards.insert(key, data.contiguous());
            Ok(())
        })
    }

    async fn fetch(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        len: Option<u64>,
        max_len: u64,
    ) -> Result<Bytes, TransportError> {
        let out = self.reach(peer, |h| {
            if h.failing_fetches > 0 {
                h.failing_fetches -= 1;
                return Err(TransportError::Unreachable {
                    peer,
                    reason: "connection is closed".into(),
                });
            }
            let shard = h
                .shards
                .get(&key)
                .ok_or(TransportError::NotFound { peer })?;
            let total = shard.len() as u64;
            let start = offset.min(total);
            let end = len.map_or(total, |l| start.saturating_add(l).min(total));
            if end - start > max_len {
                return Err(TransportError::Refused {
                    peer,
                    reply: ErrorReply::new(ErrorCode::TooLarge, "answer longer than allowed"),
                });
            }
            let mut bytes = shard.slice(start as usize..end as usize);
            if h.corrupt && !bytes.is_empty() {
                let mut v = bytes.to_vec();
                let mid = v.len() / 2;
                if let Some(b) = v.get_mut(mid) {
                    *b ^= 0x5a;
                }
                bytes = Bytes::from(v);
            }
            Ok(bytes)
        })?;
        self.net.fetches.fetch_add(1, Ordering::Relaxed);
        self.net
            .fetched_bytes
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    async fn holdings(&self, peer: PeerId) -> Result<Vec<Holding>, TransportError> {
        let owner = self.owner;
        self.reach(peer, |h| {
            if h.failing_listings > 0 {
                h.failing_listings -= 1;
                return Err(TransportError::Unreachable {
                    peer,
                    reason: "the connection closed".into(),
                });
            }
            Ok(h.shards
                .iter()
                .filter(|(k, _)| k.owner == owner)
                .map(|(k, b)| Holding {
                    tag: k.tag,
                    index: k.index,
                    len: b.len() as u64,
                })
                .collect())
        })
    }

    async fn delete(
        &self,
        peer: PeerId,
        shards: Vec<(ObjectTag, u16)>,
    ) -> Result<u32, TransportError> {
        let owner = self.owner;
        self.reach(peer, |h| {
            let mut count = 0u32;
            for (tag, index) in shards {
                if h.shards.remove(&ShardKey { owner, tag, index }).is_some() {
                    count += 1;
                }
            }
            Ok(count)
        })
    }
}
