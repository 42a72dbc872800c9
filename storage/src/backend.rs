//! The `Backend` trait: what every place a repository can live must offer.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Handle, Kind, Result};

/// An object as seen by a listing: its handle and its size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's address.
    pub handle: Handle,
    /// Its size in bytes.
    pub size: u64,
}

/// Storage of named, immutable objects.
///
/// Implementations must make `put` atomic: a reader sees either no object or
/// the whole object under its final name, never a partial one, even if the
/// writer crashes. Objects are immutable once written; writing the same name
/// twice writes the same bytes (names are content hashes or fresh random ids).
///
/// None of the methods has a default: a wrapper that forgot to forward one
/// would silently change behaviour.
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    /// A human-readable description of where the objects live.
    fn location(&self) -> String;

    /// How many large transfers pay off at once: about 1 for a local disk,
    /// more where each transfer waits on a network round trip. Writers use it
    /// to size their upload queues (each transfer holds a pack in memory).
    fn parallel_transfers(&self) -> usize;

    /// The longest ranged read worth making in one request. A local disk
    /// reads a few MiB at a time to keep memory low; a remote store pays a
    /// round trip (and on S3 a billed request) per read, so it reads up to
    /// a whole pack at once. Readers that want many ranges of one object
    /// coalesce them up to this size.
    fn read_size(&self) -> u64;

    /// Creates the repository layout. Fails if a repository already exists there.
    async fn create(&self) -> Result<()>;

    /// Stores an object atomically under its final name.
    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()>;

    /// Reads a whole object.
    async fn get(&self, handle: &Handle) -> Result<Bytes>;

    /// Reads `length` bytes starting at `offset`; fails with
    /// [`crate::Error::ShortRead`] if the object is shorter.
    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes>;

    /// Lists the objects of one kind whose names start with `prefix` (all of
    /// them when `prefix` is empty), in no particular order.
    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// The size of one object, or [`crate::Error::NotFound`].
    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo>;

    /// Deletes one object; deleting a missing object is not an error.
    async fn delete(&self, handle: &Handle) -> Result<()>;
}
