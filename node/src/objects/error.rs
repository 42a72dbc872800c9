//! What can go wrong in the object store, in terms a caller can act on.

use kith_storage::Handle;

use super::header::HeaderError;
use crate::transport::TransportError;

/// An error of the owner-side object store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// Fewer usable peers than the policy needs (`F + 1`). Nothing was stored.
    #[error(
        "not enough usable peers to store {name}: {usable} usable, {needed} needed; \
         add friends or wait until more of them are online"
    )]
    NotEnoughPeers {
        /// The object being stored.
        name: Handle,
        /// Usable peers found.
        usable: usize,
        /// Peers needed.
        needed: usize,
    },
    /// The placement goal is self-contradictory.
    #[error("invalid placement goal: {0}")]
    InvalidGoal(&'static str),
    /// Some shards could not be stored and no other peer could take them;
    /// the shards that were stored have been deleted again.
    #[error("could not store {name}: {failures} shard(s) failed ({first}); nothing was kept")]
    Upload {
        /// The object.
        name: Handle,
        /// Shards that could not be placed.
        failures: usize,
        /// The first failure, for the message.
        first: String,
    },
    /// Fewer than `k` good shards could be read.
    #[error(
        "cannot read {name}: {good} good shard(s) of the {needed} needed \
         ({problems}); bring more holders online and try again"
    )]
    Unavailable {
        /// The object.
        name: Handle,
        /// Good shards found.
        good: usize,
        /// Shards needed (`k`).
        needed: usize,
        /// What went wrong with the others.
        problems: String,
    },
    /// The object does not exist.
    #[error("{0} does not exist")]
    NotFound(Handle),
    /// A ranged read past the end of the object.
    #[error("{name} has {size} bytes: cannot read {len} bytes at offset {offset}")]
    OutOfRange {
        /// The object.
        name: Handle,
        /// Its size.
        size: u64,
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
    },
    /// The network could not be used at all.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A shard header was refused.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The placement map (redb, in the cache folder) failed.
    #[error("placement map {path}: {reason}; delete it to have it rebuilt from the holders")]
    Map {
        /// The map file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// Another process of this owner has the placement map open.
    #[error("placement map {path} is in use by another kith process")]
    MapBusy {
        /// The map file.
        path: std::path::PathBuf,
    },
    /// No root capsule could be read from any reachable peer.
    #[error(
        "no root capsule found on {asked} reachable peer(s): give the address of a peer \
         that holds this repository's shards"
    )]
    NoCapsule {
        /// Peers asked.
        asked: usize,
    },
    /// The erasure code failed (a broken invariant, or a hostile shard).
    #[error("erasure code: {reason}")]
    Erasure {
        /// What failed.
        reason: String,
    },
    /// Keys could not be derived.
    #[error("owner keys: {reason}")]
    Keys {
        /// What failed.
        reason: String,
    },
    /// A background task failed.
    #[error("object store task failed: {0}")]
    Task(String),
}

impl ObjectError {
    /// True when trying again later may succeed (peers come back online).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Upload { .. }
                | Self::Transport(_)
                | Self::NotEnoughPeers { .. }
        )
    }
}
