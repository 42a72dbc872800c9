//! The index: where each blob lives. Index deltas in the repository are the
//! record; a redb file on the local machine is a cache of them.

mod cache;
mod file;

pub use cache::{BlobLocation, FileCacheEntry, IndexCache, PackInfo};
pub use file::{IndexFile, IndexPack};
