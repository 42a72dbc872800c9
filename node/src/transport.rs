//! The seam between the owner side of the peer backend (erasure coding,
//! placement, the placement map) and the network.
//!
//! The owner-side object store is written against [`ShardTransport`] so
//! that it can be tested with an in-memory transport and run over the
//! libp2p swarm of `kith-net` in the node. A transport authenticates as the
//! owner (signed challenge) before it lists, fetches or deletes, and knows
//! which peers are usable for placement right now.

use async_trait::async_trait;
use bytes::Bytes;
use kith_net::{Holding, Multiaddr, ObjectTag, OwnerId, PeerId, ShardKey};

use crate::policy::PeerProfile;

/// A peer the owner may place shards on, as the transport sees it now.
#[derive(Clone, Debug)]
pub struct UsablePeer {
    /// The peer.
    pub peer: PeerId,
    /// Its last known addresses (recorded in the root capsule).
    pub addrs: Vec<Multiaddr>,
    /// Bytes it still accepts from this owner.
    pub free: u64,
    /// Uptime, failure domain and always-on flag for the placement policy.
    pub profile: PeerProfile,
}

/// A shard's bytes on their way to a holder: its header, then its body.
/// They are kept apart so that a data shard's body can be a slice of the
/// object it was cut from instead of a copy of it; a holder receives the
/// two as one run of bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardBytes {
    /// The authenticated header.
    pub head: Bytes,
    /// The body.
    pub body: Bytes,
}

impl ShardBytes {
    /// The shard's length, header and body.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.body.len()) as u64
    }

    /// Whether the shard has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.body.is_empty()
    }

    /// The two parts, in the order they are sent.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, &self.body]
    }

    /// The shard as one buffer (copies unless one part is empty).
    pub fn contiguous(&self) -> Bytes {
        if self.body.is_empty() {
            return self.head.clone();
        }
        if self.head.is_empty() {
            return self.body.clone();
        }
        let mut all = Vec::with_capacity(self.head.len() + self.body.len());
        all.extend_from_slice(&self.head);
        all.extend_from_slice(&self.body);
        Bytes::from(all)
    }
}

impl From<Bytes> for ShardBytes {
    fn from(bytes: Bytes) -> Self {
        Self {
            head: bytes,
            body: Bytes::new(),
        }
    }
}

impl From<Vec<u8>> for ShardBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

/// Why a transport operation failed, in terms the object store can act on.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached now (dial failure, timeout, disconnect).
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What happened.
        reason: String,
    },
    /// The peer refused: over quota, unauthorized, not found, busy, ...
    #[error("peer {peer} refused: {reply}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// The peer's answer.
        reply: kith_net::ErrorReply,
    },
    /// The peer does not hold the shard.
    #[error("peer {peer} does not hold the shard")]
    NotFound {
        /// The peer.
        peer: PeerId,
    },
    /// The node's own network task has stopped.
    #[error("the node's network task has stopped")]
    Stopped,
}

/// Moves shards between this owner and holders.
#[async_trait]
pub trait ShardTransport: Send + Sync + 'static {
    /// The owner these shards belong to.
    fn owner(&self) -> OwnerId;

    /// The peers that could take shards now (connected friends with quota
    /// left), best first.
    async fn usable_peers(&self) -> Result<Vec<UsablePeer>, TransportError>;

    /// Every peer worth asking for holdings: usable peers, peers named in a
    /// root capsule, peers found on the LAN or in the DHT.
    async fn known_peers(&self) -> Result<Vec<PeerId>, TransportError>;

    /// Tells the transport about peers (and their last known addresses)
    /// that hold this owner's shards, e.g. from a root capsule, so that
    /// `known_peers` includes them and they can be dialled (through the
    /// addresses or the DHT).
    async fn learn_peers(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>)
        -> Result<(), TransportError>;

    /// Stores a whole shard on `peer` (idempotent: storing the same key
    /// twice with the same bytes succeeds).
    async fn store(
        &self,
        peer: PeerId,
        key: ShardKey,
        data: ShardBytes,
    ) -> Result<(), TransportError>;

    /// Reads `len` bytes of a shard from `offset` (`None`: to the end),
    /// refusing answers longer than `max_len`.
    async fn fetch(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        len: Option<u64>,
        max_len: u64,
    ) -> Result<Bytes, TransportError>;

    /// Reads exactly `dest.len()` bytes of a shard from `offset` into
    /// `dest`, so a reader can assemble an object in place. A shorter
    /// answer is an error; `dest` is then partly written.
    async fn fetch_into(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        dest: &mut [u8],
    ) -> Result<(), TransportError> {
        let len = dest.len() as u64;
        let bytes = self.fetch(peer, key, offset, Some(len), len).await?;
        if bytes.len() != dest.len() {
            return Err(short_answer(peer, bytes.len() as u64, len));
        }
        dest.copy_from_slice(&bytes);
        Ok(())
    }

    /// Every shard `peer` holds for this owner.
    async fn holdings(&self, peer: PeerId) -> Result<Vec<Holding>, TransportError>;

    /// Deletes shards on `peer`; returns how many existed.
    async fn delete(
        &self,
        peer: PeerId,
        shards: Vec<(ObjectTag, u16)>,
    ) -> Result<u32, TransportError>;
}

/// The error for an answer of `got` bytes where `wanted` were asked.
pub(crate) fn short_answer(peer: PeerId, got: u64, wanted: u64) -> TransportError {
    TransportError::Unreachable {
        peer,
        reason: format!("the answer has {got} bytes, {wanted} were asked"),
    }
}
