//! The crate's error type.

use std::{io, path::PathBuf};

use libp2p::{Multiaddr, PeerId};

use crate::message::ErrorReply;

/// Everything that can go wrong in kith-net.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The network task has stopped (shut down or crashed); build a new one.
    #[error("the network task has stopped; restart the node's network")]
    Stopped,
    /// The swarm could not be built (transport or behaviour setup failed).
    #[error("cannot set up the network: {reason}")]
    Setup {
        /// Why.
        reason: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address that failed.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A bootstrap address lacks the `/p2p/<peer id>` suffix that names the peer.
    #[error("address {0} has no /p2p/<peer id> suffix; bootstrap peers must be named")]
    AddressWithoutPeerId(Multiaddr),
    /// Dialing failed.
    #[error("cannot connect to {addr}: {reason}")]
    Dial {
        /// The address dialed.
        addr: Multiaddr,
        /// Why it failed.
        reason: String,
    },
    /// A control request failed below the application (timeout, connection lost,
    /// the peer does not speak the protocol).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer asked.
        peer: PeerId,
        /// Why it failed.
        reason: String,
    },
    /// The peer answered with an error reply.
    #[error("{peer} refused: {reply}")]
    Refused {
        /// The peer that refused.
        peer: PeerId,
        /// Its reply.
        reply: ErrorReply,
    },
    /// The peer does not support the protocol (no common protocol id).
    #[error("{peer} does not support {protocol}; it may run an incompatible kith version")]
    Unsupported {
        /// The peer.
        peer: PeerId,
        /// The protocol id we offered.
        protocol: &'static str,
    },
    /// A message or shard is larger than this side accepts.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its (declared) size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The peer sent bytes that are not a valid message.
    #[error("malformed {what} from the peer: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The peer sent something valid but not what the protocol allows here.
    #[error("protocol violation by {peer}: {reason}")]
    Protocol {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: String,
    },
    /// The peer went silent for longer than the timeout.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// An I/O error on a stream.
    #[error("stream I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer could not be found in the DHT.
    #[error("peer {0} not found in the DHT")]
    PeerNotFound(PeerId),
    /// No known peers to bootstrap the DHT from.
    #[error("no known peers to bootstrap the DHT from; add a bootstrap address")]
    NoKnownPeers,
    /// An owner's signature over a holdings challenge did not verify.
    #[error("the owner signature does not verify for this challenge")]
    BadSignature,
    /// The node identity file could not be read or written.
    #[error("identity file {path}: {reason}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },
}
