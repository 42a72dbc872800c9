//! The shape of kith's own small behaviours: every connection gets a
//! handler made from its peer id, and the behaviour itself does nothing
//! else (no events either way). [`crate::inbound`] and [`crate::keep`]
//! supply only their handlers.

use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// A behaviour whose connection handlers are made by `make` from the peer.
pub(crate) struct PerPeer<H> {
    make: Box<dyn Fn(PeerId) -> H + Send + 'static>,
}

impl<H> PerPeer<H> {
    pub(crate) fn new(make: impl Fn(PeerId) -> H + Send + 'static) -> Self {
        Self {
            make: Box::new(make),
        }
    }
}

impl<H> NetworkBehaviour for PerPeer<H>
where
    H: ConnectionHandler<FromBehaviour = Infallible, ToBehaviour = Infallible>,
{
    type ConnectionHandler = H;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok((self.make)(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok((self.make)(peer))
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
