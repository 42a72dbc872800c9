//! Accepting shard streams: a behaviour whose connection handlers hand every
//! negotiated inbound stream of the shard protocol to one queue.
//!
//! libp2p-stream opens kith's outbound shard streams, but its inbound side
//! passes streams through a channel with room for one: a second stream
//! that arrives before the receiving task has run is dropped, which the
//! opener sees as a connection closing under its request. On a busy
//! machine, with several shards stored or fetched at once per peer, that
//! happened within a backup. Here the queue holds [`QUEUE`] streams and the
//! accepting task applies kith's own limit on pending streams.

use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
};
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::per_peer::PerPeer;

/// Inbound streams waiting for the accepting task, across all connections.
pub(crate) const QUEUE: usize = 256;

/// An inbound shard stream and the peer that opened it.
pub(crate) type Incoming = (PeerId, Stream);

/// The behaviour: listens for `protocol` on every connection; the
/// receiver yields the streams.
pub(crate) fn behaviour(protocol: StreamProtocol) -> (PerPeer<Handler>, mpsc::Receiver<Incoming>) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    let make = move |peer| Handler {
        peer,
        protocol: protocol.clone(),
        queue: queue.clone(),
    };
    (PerPeer::new(make), receiver)
}

/// One connection's side: accepts the protocol and queues each stream.
pub(crate) struct Handler {
    peer: PeerId,
    protocol: StreamProtocol,
    queue: mpsc::Sender<Incoming>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            // A full queue means the node is far behind; dropping the stream
            // resets it, and the opener reports the peer as busy.
            if self.queue.try_send((self.peer, stream)).is_err() {
                tracing::debug!(peer = %self.peer, "inbound shard queue full; resetting a stream");
            }
        }
    }
}
