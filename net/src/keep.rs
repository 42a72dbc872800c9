//! Keeping connections open: a behaviour whose connection handlers keep a
//! connection up while it is idle when the node wants that peer kept.
//!
//! libp2p closes a connection once no stream has been open on it for the
//! idle timeout. That suits strangers met through the DHT, but a node's
//! friends are the peers it stores on and serves: closing their
//! connections after every quiet minute left an owner with no connected
//! friends until the next redial, and a backup started in that gap found
//! too few usable peers. The node says which peers to keep (its friends);
//! their connections stay up until the peer goes away, which ping notices.
//! The answer is asked again whenever a connection falls idle and when its
//! idle timer runs out, so a peer that stops being kept is closed after at
//! most one more idle timeout.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{ConnectionHandler, ConnectionHandlerEvent, SubstreamProtocol};
use libp2p::PeerId;

use crate::per_peer::PerPeer;

/// Which peers' connections stay up while idle.
#[derive(Clone)]
pub(crate) struct KeepPeers(Arc<dyn Fn(&PeerId) -> bool + Send + Sync>);

impl KeepPeers {
    /// Keeps the peers for which `keep` answers true.
    pub(crate) fn new(keep: impl Fn(&PeerId) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(keep))
    }

    /// Keeps no peer: every idle connection closes after the idle timeout.
    pub(crate) fn none() -> Self {
        Self::new(|_| false)
    }

    fn keeps(&self, peer: &PeerId) -> bool {
        (self.0)(peer)
    }
}

impl fmt::Debug for KeepPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeepPeers(..)")
    }
}

/// The behaviour: every connection's handler asks `keep` about its peer.
pub(crate) fn behaviour(keep: KeepPeers) -> PerPeer<Handler> {
    PerPeer::new(move |peer| Handler {
        peer,
        keep: keep.clone(),
    })
}

/// One connection's side: opens and accepts no streams, only answers
/// whether the connection stays up while idle.
pub(crate) struct Handler {
    peer: PeerId,
    keep: KeepPeers,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep.keeps(&self.peer)
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
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}
