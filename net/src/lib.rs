//! The peer network of kith: libp2p transports, discovery and the
//! shard-exchange protocol.
//!
//! This crate moves opaque shard bytes tagged with peer and owner ids; it
//! knows nothing of packs, snapshots or the repository format. A node
//! builds a swarm with [`NetBuilder`], gets a cloneable [`NetHandle`] and a
//! bounded receiver of [`NetEvent`]s, and answers inbound requests through
//! the responders those events carry. docs/PROTOCOL.md describes the wire.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kith_net::NetError> {
//! use kith_net::{ControlRequest, ControlResponse, NetBuilder, NetEvent, QuotaReport};
//! use libp2p::identity::Keypair;
//!
//! let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("valid address");
//! let (holder, mut events) = NetBuilder::new(Keypair::generate_ed25519())
//!     .listen_on(listen)
//!     .spawn()
//!     .await?;
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         if let NetEvent::InboundRequest { request: ControlRequest::Quota, responder, .. } = event {
//!             let report = QuotaReport { offered: 10 << 30, used: 0, free: 50 << 30, always_on: true };
//!             let _ = responder.respond(ControlResponse::Quota(report)).await;
//!         }
//!     }
//! });
//! let (owner, _events) = NetBuilder::new(Keypair::generate_ed25519()).spawn().await?;
//! let holder_addr = holder.listen_addrs().await?[0].clone();
//! let peer = owner.connect(&holder_addr).await?;
//! assert_eq!(peer, holder.local_peer_id());
//! let answer = owner.request(peer, ControlRequest::Quota).await?;
//! assert!(matches!(answer, ControlResponse::Quota(q) if q.always_on));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod builder;
mod challenge;
mod coalesce;
mod codec;
mod error;
mod event;
pub mod fuzz;
mod handle;
mod identity;
mod ids;
mod inbound;
mod keep;
mod message;
mod muxer;
mod per_peer;
mod secure;
mod shard;
mod task;
mod wire;

#[cfg(test)]
mod tests;

pub use builder::{NetBuilder, IDENTIFY_VERSION, KAD_PROTOCOL};
pub use challenge::{
    challenge_message, Nonce, OwnerKeypair, OwnerProof, OwnerSignature, CHALLENGE_DOMAIN,
};
pub use codec::CONTROL_PROTOCOL;
pub use error::NetError;
pub use event::{ControlResponder, DiscoverySource, NetEvent};
pub use handle::{NetHandle, ShardRange};
pub use identity::{load_identity, load_or_create_identity, save_identity};
pub use ids::{ObjectTag, OwnerId, ShardKey};
pub use message::{
    ControlRequest, ControlResponse, ErrorCode, ErrorReply, Holding, QuotaReport, ShardOpen,
    ShardReply, ShardStatus, MAX_CONTROL_REQUEST, MAX_CONTROL_RESPONSE, MAX_DELETE_BATCH,
    MAX_ERROR_MESSAGE, MAX_HOLDINGS_PAGE, MAX_SHARD_HEADER, MAX_SHARD_LEN,
};
pub use shard::{
    FetchBody, InboundFetch, InboundShard, InboundStore, StoreBody, CHUNK, SHARD_PROTOCOL,
};

/// Re-exported so the node names peers, addresses and keys with the same types.
pub use libp2p::{identity::Keypair, multiaddr::Protocol, Multiaddr, PeerId};
