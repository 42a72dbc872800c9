//! What the network task tells the embedding node, and how the node answers
//! inbound control requests.

use libp2p::{request_response::ResponseChannel, Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::{
    message::{ControlRequest, ControlResponse, ErrorReply},
    shard::InboundShard,
    NetError,
};

/// Where a peer's addresses were learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoverySource {
    /// Multicast DNS on the local network.
    Mdns,
    /// The Kademlia DHT (`/kith/kad/1`).
    Dht,
}

/// An event from the network task to the node, delivered on the bounded
/// channel returned by [`crate::NetBuilder::spawn`].
#[derive(Debug)]
#[non_exhaustive]
pub enum NetEvent {
    /// The swarm listens on a new address.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// A peer's addresses were learnt (LAN or DHT). Not yet a friend: the
    /// node decides whom to trust.
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// How they were learnt.
        source: DiscoverySource,
    },
    /// The first connection to a peer was established.
    PeerConnected {
        /// The peer, authenticated by noise (TCP) or TLS (QUIC).
        peer: PeerId,
        /// The remote address of that connection.
        addr: Multiaddr,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer sent a control request; answer it through `responder`.
    /// A request not answered before the requester's timeout fails there.
    InboundRequest {
        /// The requesting peer.
        peer: PeerId,
        /// Its request.
        request: ControlRequest,
        /// Where the answer goes.
        responder: ControlResponder,
    },
    /// A peer opened a shard stream (store or fetch).
    InboundShard(InboundShard),
    /// A connected peer told us (identify) the addresses it listens on.
    /// Self-reported, so not proof of anything: the node may record them
    /// for a friend, but must not trust them for strangers.
    PeerIdentified {
        /// The peer.
        peer: PeerId,
        /// The addresses it says it listens on.
        listen_addrs: Vec<Multiaddr>,
    },
}

pub(crate) type ResponseQueue = mpsc::Sender<(ResponseChannel<ControlResponse>, ControlResponse)>;

/// Answers one inbound control request. Dropping it without answering
/// makes the request fail on the requester's side.
pub struct ControlResponder {
    pub(crate) channel: ResponseChannel<ControlResponse>,
    pub(crate) queue: ResponseQueue,
}

impl ControlResponder {
    /// Sends `response`.
    pub async fn respond(self, response: ControlResponse) -> Result<(), NetError> {
        self.queue
            .send((self.channel, response))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Sends an error reply.
    pub async fn refuse(self, reply: ErrorReply) -> Result<(), NetError> {
        self.respond(ControlResponse::Error(reply)).await
    }
}

impl std::fmt::Debug for ControlResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlResponder").finish_non_exhaustive()
    }
}
