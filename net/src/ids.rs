//! Identifiers carried on the wire: owners, objects and shards.
//!
//! net treats all of them as opaque fixed-size byte strings; what an object
//! tag names (a pack, a metadata file) is node's business.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a repository owner: the 32-byte ed25519 public key derived
/// from the owner's master secret (see [`crate::OwnerKeypair`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnerId(pub [u8; 32]);

/// Names an erasure-coded object within an owner's holdings. Opaque to net.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectTag(pub [u8; 32]);

/// Addresses one shard on a holder: whose it is, which object, which index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct ShardKey {
    /// The owner the shard is held for.
    pub owner: OwnerId,
    /// The object the shard belongs to.
    pub tag: ObjectTag,
    /// The shard's index among the object's n shards.
    pub index: u16,
}

fn hex_prefix(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    write!(f, "{name}(")?;
    for b in bytes.iter().take(8) {
        write!(f, "{b:02x}")?;
    }
    write!(f, "…)")
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex_prefix(f, "OwnerId", &self.0)
    }
}

impl fmt::Debug for ObjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex_prefix(f, "ObjectTag", &self.0)
    }
}
