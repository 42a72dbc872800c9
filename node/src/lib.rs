//! The long-running kith node: the peer backend (erasure-coded shards on
//! friends' machines), placement, the hold of others' shards, friends and
//! the local control socket the CLI talks to.
//!
//! - [`policy`]: how many shards, how many to rebuild, on which peers;
//!   shared with the durability simulator.
//! - [`transport`]: the [`transport::ShardTransport`] seam between the
//!   owner-side object store and the network.
//! - [`NodeDir`], [`NodeConfig`]: a node's folder and its config.
//! - [`daemon`]: `kith node run`: the swarm, the hold, friends, invites and
//!   the control socket.
//! - [`control`]: the control socket's protocol and its client, which
//!   includes a [`transport::ShardTransport`] over a running daemon.
//! - [`net_transport`]: the daemon's [`transport::ShardTransport`] over kith-net.

pub mod config;
pub mod control;
pub mod daemon;
mod error;
mod friends;
pub mod hold;
pub mod invite;
mod layout;
pub mod net_transport;
mod peers;
pub mod policy;
pub mod size;
mod state;
pub mod transport;

pub use config::NodeConfig;
pub use error::NodeError;
pub use friends::FriendRecord;
pub use kith_net::{Multiaddr, PeerId};
pub use layout::NodeDir;
