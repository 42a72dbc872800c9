//! [`NetTransport`]: the daemon's [`ShardTransport`] over kith-net, acting
//! for one owner. It signs holders' challenges with the owner key, dials
//! peers through the node's peer book, and asks friends for their quota
//! to know who is usable.
//!
//! A holder serves an owner's shards only to a peer that proved the owner
//! on the current connection (docs/PROTOCOL.md), so before the first fetch
//! from a holder this transport proves itself with an empty holdings page.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use bytes::Bytes;
use kith_net::{
    ControlRequest, ControlResponse, ErrorCode, FetchBody, Holding, Multiaddr, NetError, NetHandle,
    ObjectTag, OwnerId, OwnerKeypair, OwnerProof, PeerId, ShardKey, ShardRange, MAX_DELETE_BATCH,
    MAX_HOLDINGS_PAGE,
};

use crate::{
    peers::PeerBook,
    policy::PeerProfile,
    transport::{ShardBytes, ShardTransport, TransportError, UsablePeer},
};

/// Uptime assumed for a connected friend until uptime is measured.
const ASSUMED_UPTIME: f64 = 0.95;

/// A [`ShardTransport`] over the node's swarm, for one owner.
#[derive(Debug)]
pub struct NetTransport {
    net: NetHandle,
    owner: OwnerKeypair,
    book: Arc<PeerBook>,
    /// Holders this transport proved the owner to on their current connection.
    proven: Mutex<HashSet<PeerId>>,
}

fn map_err(peer: PeerId, e: NetError) -> TransportError {
    match e {
        NetError::Stopped => TransportError::Stopped,
        NetError::Refused { reply, .. } if reply.code == ErrorCode::NotFound => {
            TransportError::NotFound { peer }
        }
        NetError::Refused { peer, reply } => TransportError::Refused { peer, reply },
        other => TransportError::Unreachable {
            peer,
            reason: other.to_string(),
        },
    }
}

fn unexpected(peer: PeerId, what: &ControlResponse) -> TransportError {
    TransportError::Unreachable {
        peer,
        reason: format!("unexpected answer {what:?}"),
    }
}

/// A failure domain per peer until households are known: peers are
/// assumed independent.
fn failure_domain(peer: &PeerId) -> u32 {
    let b = peer.to_bytes();
    let tail: [u8; 4] = b
        .get(b.len().saturating_sub(4)..)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 4]);
    u32::from_be_bytes(tail)
}

impl NetTransport {
    /// Stores a whole shard of `len` bytes read from `reader` on `peer`,
    /// streaming it: the daemon passes the bytes from its control socket
    /// straight to the holder without holding the shard in memory.
    pub async fn store_from<R: futures::AsyncRead + Unpin>(
        &self,
        peer: PeerId,
        key: ShardKey,
        len: u64,
        reader: R,
    ) -> Result<(), TransportError> {
        self.connect(peer).await?;
        let received = self
            .net
            .store_shard_from(peer, key, len, 0, len, reader)
            .await
            .map_err(|e| map_err(peer, e))?;
        if received != len {
            return Err(TransportError::Unreachable {
                peer,
                reason: format!("the holder confirmed {received} of {len} bytes"),
            });
        }
        Ok(())
    }

    /// A transport for `owner` over `net`.
    pub(crate) fn new(net: NetHandle, owner: OwnerKeypair, book: Arc<PeerBook>) -> Self {
        Self {
            net,
            owner,
            book,
            proven: Mutex::new(HashSet::new()),
        }
    }

    async fn connect(&self, peer: PeerId) -> Result<(), TransportError> {
        self.book
            .connect(&self.net, peer)
            .await
            .map_err(|reason| TransportError::Unreachable { peer, reason })
    }

    /// Asks `peer` for a challenge and signs it; `None` when the holder
    /// holds nothing for this owner.
    async fn prove(&self, peer: PeerId) -> Result<Option<OwnerProof>, TransportError> {
        let owner = self.owner.owner_id();
        match self
            .net
            .request(peer, ControlRequest::Challenge { owner })
            .await
        {
            Ok(ControlResponse::Challenge { nonce }) => Ok(Some(self.owner.prove(&nonce, &peer))),
            Ok(other) => Err(unexpected(peer, &other)),
            Err(e) => match map_err(peer, e) {
                TransportError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    fn set_proven(&self, peer: PeerId, proven: bool) {
        let mut set = self.proven.lock().unwrap_or_else(|e| e.into_inner());
        if proven {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    fn is_proven(&self, peer: &PeerId) -> bool {
        self.proven
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }

    /// One holdings page; `None` when the holder holds nothing for us.
    async fn page(
        &self,
        peer: PeerId,
        after: Option<(ObjectTag, u16)>,
        limit: u32,
    ) -> Result<Option<(Vec<Holding>, bool)>, TransportError> {
        let Some(proof) = self.prove(peer).await? else {
            return Ok(None);
        };
        let req = ControlRequest::ListHoldings {
            proof,
            after,
            limit,
        };
        match self.net.request(peer, req).await {
            Ok(ControlResponse::Holdings { shards, more }) => {
                self.set_proven(peer, true);
                Ok(Some((shards, more)))
            }
            Ok(other) => Err(unexpected(peer, &other)),
            Err(e) => Err(map_err(peer, e)),
        }
    }

    async fn open_fetch_once(
        &self,
        peer: PeerId,
        key: ShardKey,
        range: ShardRange,
        max_len: u64,
    ) -> Result<FetchBody, TransportError> {
        self.net
            .open_fetch(peer, key, range, max_len)
            .await
            .map_err(|e| map_err(peer, e))
    }

    /// Opens a fetch of `len` bytes of a shard from `offset` (`None`: to the
    /// end), proving ownership first where needed: the holder's announced
    /// length and its bytes to read as they arrive.
    pub(crate) async fn open_fetch(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        len: Option<u64>,
        max_len: u64,
    ) -> Result<FetchBody, TransportError> {
        self.connect(peer).await?;
        let range = match (offset, len) {
            (0, None) => ShardRange::All,
            (offset, Some(len)) => ShardRange::Range { offset, len },
            (offset, None) => ShardRange::Range {
                offset,
                len: max_len,
            },
        };
        if !self.is_proven(&peer) && self.page(peer, None, 0).await?.is_none() {
            return Err(TransportError::NotFound { peer });
        }
        match self.open_fetch_once(peer, key, range, max_len).await {
            // The holder forgets proofs when a connection closes: prove
            // again once.
            Err(TransportError::Refused { reply, .. }) if reply.code == ErrorCode::Unauthorized => {
                self.set_proven(peer, false);
                if self.page(peer, None, 0).await?.is_none() {
                    return Err(TransportError::NotFound { peer });
                }
                self.open_fetch_once(peer, key, range, max_len).await
            }
            other => other,
        }
    }
}

/// The most a fetch reserves before its bytes arrive.
const PREALLOC_LIMIT: usize = 64 << 20;

#[async_trait]
impl ShardTransport for NetTransport {
    fn owner(&self) -> OwnerId {
        self.owner.owner_id()
    }

    async fn usable_peers(&self) -> Result<Vec<UsablePeer>, TransportError> {
        let connected = self
            .net
            .connected_peers()
            .await
            .map_err(|_| TransportError::Stopped)?;
        let friends: Vec<_> = self
            .book
            .friend_list()
            .into_iter()
            .filter(|(p, _)| connected.contains(p))
            .collect();
        let asks = friends.into_iter().map(|(peer, addrs)| async move {
            match self.net.request(peer, ControlRequest::Quota).await {
                Ok(ControlResponse::Quota(q)) => {
                    let free = q.offered.saturating_sub(q.used).min(q.free);
                    (free > 0).then(|| UsablePeer {
                        peer,
                        addrs,
                        free,
                        profile: PeerProfile {
                            uptime: ASSUMED_UPTIME,
                            failure_domain: failure_domain(&peer),
                            always_on: q.always_on,
                        },
                    })
                }
                Ok(_) | Err(_) => None,
            }
        });
        let mut usable: Vec<UsablePeer> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        usable.sort_by(|a, b| b.free.cmp(&a.free).then(a.peer.cmp(&b.peer)));
        Ok(usable)
    }

    async fn known_peers(&self) -> Result<Vec<PeerId>, TransportError> {
        let mut known = self.book.known();
        if let Ok(connected) = self.net.connected_peers().await {
            known.extend(connected);
        }
        let mut v: Vec<PeerId> = known.into_iter().collect();
        v.sort();
        Ok(v)
    }

    async fn learn_peers(
        &self,
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<(), TransportError> {
        let local = self.net.local_peer_id();
        let peers: Vec<_> = peers.into_iter().filter(|(p, _)| *p != local).collect();
        for (peer, addrs) in &peers {
            self.book.learn(*peer, addrs.clone());
        }
        let dials = peers.iter().map(|(peer, _)| async move {
            if let Err(reason) = self.book.connect(&self.net, *peer).await {
                tracing::info!(%peer, reason, "a learnt peer is unreachable for now");
            }
        });
        futures::future::join_all(dials).await;
        Ok(())
    }

    async fn store(
        &self,
        peer: PeerId,
        key: ShardKey,
        data: ShardBytes,
    ) -> Result<(), TransportError> {
        use futures::AsyncReadExt as _;
        let [head, body] = data.parts();
        let reader = futures::io::Cursor::new(head).chain(futures::io::Cursor::new(body));
        self.store_from(peer, key, data.len(), reader).await
    }

    async fn fetch(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        len: Option<u64>,
        max_len: u64,
    ) -> Result<Bytes, TransportError> {
        let mut body = self.open_fetch(peer, key, offset, len, max_len).await?;
        // The length is announced before any byte, so the bytes land in
        // place; a holder announcing more than it sends costs at most
        // `PREALLOC_LIMIT` up front.
        let total = usize::try_from(body.len()).unwrap_or(usize::MAX);
        let mut out = vec![0u8; total.min(PREALLOC_LIMIT)];
        let mut at = 0;
        loop {
            if at == out.len() {
                if at == total {
                    break;
                }
                out.resize(out.len().saturating_mul(2).min(total), 0);
            }
            let Some(rest) = out.get_mut(at..) else {
                break;
            };
            match body.read(rest).await {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) => return Err(map_err(peer, e)),
            }
        }
        out.truncate(at);
        if at as u64 != body.len() {
            return Err(crate::transport::short_answer(peer, at as u64, body.len()));
        }
        Ok(Bytes::from(out))
    }

    async fn holdings(&self, peer: PeerId) -> Result<Vec<Holding>, TransportError> {
        self.connect(peer).await?;
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let Some((page, more)) = self.page(peer, after, MAX_HOLDINGS_PAGE).await? else {
                return Ok(out);
            };
            after = page.last().map(|h| (h.tag, h.index));
            out.extend(page);
            if !more || after.is_none() {
                return Ok(out);
            }
        }
    }

    async fn delete(
        &self,
        peer: PeerId,
        shards: Vec<(ObjectTag, u16)>,
    ) -> Result<u32, TransportError> {
        self.connect(peer).await?;
        let mut count = 0u32;
        for batch in shards.chunks(MAX_DELETE_BATCH) {
            let Some(proof) = self.prove(peer).await? else {
                return Ok(count);
            };
            let req = ControlRequest::Delete {
                proof,
                shards: batch.to_vec(),
            };
            match self.net.request(peer, req).await {
                Ok(ControlResponse::Deleted { count: n }) => count = count.saturating_add(n),
                Ok(other) => return Err(unexpected(peer, &other)),
                Err(e) => return Err(map_err(peer, e)),
            }
        }
        Ok(count)
    }
}
