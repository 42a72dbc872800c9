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

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::core::Endpoint;
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, Stream, StreamProtocol, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

/// Inbound streams waiting for the accepting task, across all connections.
pub(crate) const QUEUE: usize = 256;

/// An inbound shard stream and the peer that opened it.
pub(crate) type Incoming = (PeerId, Stream);

/// The behaviour: listens for one protocol on every connection.
pub(crate) struct Behaviour {
    protocol: StreamProtocol,
    queue: mpsc::Sender<Incoming>,
}

impl Behaviour {
    /// Listens for `protocol`; the receiver yields the streams.
    pub(crate) fn new(protocol: StreamProtocol) -> (Self, mpsc::Receiver<Incoming>) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        (Self { protocol, queue }, receiver)
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocol: self.protocol.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
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
