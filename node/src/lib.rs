//! The long-running kith node: the peer backend (erasure-coded shards on
//! friends' machines), placement, audits, repair, the hold of others' shards,
//! scheduled backups and the local control API.
//!
//! The node is built up in steps (see ARCHITECTURE.md). What is here now:
//! - [`policy`]: the pure function that chooses how many shards to cut an
//!   object into and how many are needed to rebuild it, shared by the node's
//!   placement and by the durability simulator.
pub mod policy;

pub mod transport;
