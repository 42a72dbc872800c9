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
    async fn store(&self, peer: PeerId, key: ShardKey, data: Bytes) -> Result<(), TransportError>;

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

    /// Every shard `peer` holds for this owner.
    async fn holdings(&self, peer: PeerId) -> Result<Vec<Holding>, TransportError>;

    /// Deletes shards on `peer`; returns how many existed.
    async fn delete(
        &self,
        peer: PeerId,
        shards: Vec<(ObjectTag, u16)>,
    ) -> Result<u32, TransportError>;
}
