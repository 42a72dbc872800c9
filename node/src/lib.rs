//! The long-running kith node: the peer backend (erasure-coded shards on
//! friends' machines), placement, the hold of others' shards, friends,
//! the local control socket the CLI talks to, and the owner side.
//!
//! - [`policy`]: how many shards, how many to rebuild, on which peers;
//!   shared with the durability simulator.
//! - [`transport`]: [`transport::ShardTransport`], the seam between the
//!   owner side and the network.
//! - [`objects`]: the owner side: [`objects::OwnerKeys`] derived from the
//!   master secret, shard format v1 ([`objects::ShardHeader`]), the
//!   erasure code, the placement map (redb), the root capsule, and
//!   [`objects::ObjectStore`] (put, get, ranged get, list, delete, rebuild
//!   from holdings), plus an in-memory network with fault switches
//!   ([`objects::memory`]) for tests and benchmarks.
//! - [`peer_backend`]: [`peer_backend::PeerBackend`], the storage
//!   `Backend` over the object store, so every engine command works on peers.
//! - [`fuzz`]: entry points for fuzzing the node's decoders.
//! - [`NodeDir`], [`NodeConfig`]: a node's folder and its config.
//! - [`daemon`]: `kith node run`: the swarm, the hold, friends, invites and
//!   the control socket.
//! - [`control`]: the control socket's protocol and its client, which
//!   includes a [`transport::ShardTransport`] over a running daemon.
//! - [`net_transport`]: the daemon's [`transport::ShardTransport`] over kith-net.
//!
//! Storing and reading an object on five in-memory peers, then reading it
//! on a fresh machine that knows only the master secret and one peer:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use kith_node::objects::memory::{MemoryNetwork, MemoryTransport};
//! use kith_node::objects::{ObjectStore, OwnerKeys, StoreOptions};
//! use kith_storage::{Bytes, Handle, Kind};
//!
//! let net = MemoryNetwork::new();
//! let peers = net.add_holders(5);
//! let master = kith_engine::MasterSecret::generate();
//! let keys = OwnerKeys::derive(&master).unwrap();
//! let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
//! let cache = tempfile::tempdir().unwrap();
//! let store = ObjectStore::open(transport, keys, cache.path(), StoreOptions::default())
//!     .await
//!     .unwrap();
//! let pack = Handle::new(Kind::Pack, "00ff").unwrap();
//! let data = Bytes::from(vec![42u8; 1 << 20]);
//! store.put(&pack, data.clone()).await.unwrap(); // 3-of-5 shards
//! net.set_down(&peers[1], true); // any two holders may go away
//! net.set_down(&peers[3], true);
//!
//! let keys = OwnerKeys::derive(&master).unwrap();
//! let transport = MemoryTransport::new(net.clone(), keys.owner_id(), [peers[0]]);
//! let fresh_cache = tempfile::tempdir().unwrap();
//! let fresh = ObjectStore::open(transport, keys, fresh_cache.path(), StoreOptions::default())
//!     .await
//!     .unwrap();
//! assert_eq!(fresh.get(&pack).await.unwrap(), data);
//! assert_eq!(&fresh.get_range(&pack, 10, 5).await.unwrap()[..], &[42u8; 5]);
//! # });
//! ```

pub mod config;
pub mod control;
pub mod daemon;
mod error;
mod friends;
pub mod fuzz;
pub mod hold;
pub mod invite;
mod layout;
pub mod net_transport;
pub mod objects;
mod owners;
pub mod peer_backend;
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
