//! The owner side of the peer backend: named objects stored as
//! erasure-coded shards on peers.
//!
//! - [`keys`]: the owner keys derived from the master secret;
//! - `name`: object tags and sealed names (what holders see instead of names);
//! - [`header`]: shard format v1, the authenticated header of every shard;
//! - `erasure`: the Reed-Solomon code;
//! - `map`: the placement map in redb;
//! - [`capsule`]: the root capsule naming the holders;
//! - `store`: [`ObjectStore`] put, get, ranged get, list, delete;
//! - `rebuild`: the placement map rebuilt from holdings;
//! - [`memory`]: an in-memory network with fault switches (tests, benches).

pub mod capsule;
mod erasure;
mod error;
pub mod header;
pub mod keys;
mod map;
pub mod memory;
mod name;
mod rebuild;
mod store;

#[cfg(test)]
mod tests;

pub use capsule::RootCapsule;
pub use error::ObjectError;
pub use header::{HeaderError, ShardHeader};
pub use keys::OwnerKeys;
pub use rebuild::RebuildReport;
pub use store::{ObjectStore, ShardProblem, StoreOptions};

/// The header key of `keys`, for the fuzz targets.
#[doc(hidden)]
pub fn header_key_for_fuzzing(keys: &OwnerKeys) -> &[u8; 32] {
    keys.header_key()
}

/// Encodes an object into `n` shard bodies of a `k`-of-`n` code and decodes
/// it back from any `k` of them (for benchmarks).
pub mod coding {
    use super::error::ObjectError;

    /// The `n` shard bodies of `data`.
    pub fn encode(data: &bytes::Bytes, k: u16, n: u16) -> Result<Vec<bytes::Bytes>, ObjectError> {
        super::erasure::encode(data, k, n)
    }

    /// Rebuilds an object of `object_len` bytes from at least `k` shard
    /// bodies `(index, body)`.
    pub fn decode(
        object_len: u64,
        k: u16,
        n: u16,
        shards: &[(u16, &[u8])],
    ) -> Result<Vec<u8>, ObjectError> {
        super::erasure::decode(super::erasure::Code::Gf8, object_len, k, n, shards)
    }
}
