//! The kith repository engine.
//!
//! kith-engine owns the repository format (see docs/FORMAT.md) and the
//! operations on it: backup, restore, check and repair. It stores
//! everything through [`kith_storage::Backend`], so it cannot tell a local
//! folder from a bucket or from shards on friends' machines. It never prints
//! and never opens a socket; progress reaches the caller as events.
//!
//! ```
//! # use std::sync::Arc;
//! # use kith_engine::{Repository, InitOptions, Credentials, KdfParams};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let backend = Arc::new(kith_storage::LocalBackend::new(dir.path().join("repo")));
//! let fast = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
//! let (repo, _master) = Repository::init(backend.clone(), "pw", &InitOptions::default().kdf(fast), None)
//!     .await
//!     .unwrap();
//! let again = Repository::open(backend, &Credentials::Password("pw".into()), None).await.unwrap();
//! assert_eq!(again.config().id, repo.config().id);
//! # });
//! ```

pub mod backup;
pub mod blob;
pub mod buffers;
pub mod check;
pub mod chunker;
pub mod condemned;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod diff;
pub mod envelope;
mod error;
#[doc(hidden)]
pub mod find;
pub mod forget;
pub mod fuzz;
pub mod id;
pub mod index;
pub mod keys;
pub mod lock;
pub mod pack;
mod packer;
mod patterns;
pub mod prune;
pub mod repair;
mod repo;
pub mod restore;
mod rewrite;
pub mod snapshot;
pub mod stats;
pub mod tree;
pub mod walk;

pub use error::{Error, Result};
pub use id::{BlobId, IndexId, KeyId, PackId, SnapshotId};
pub use keys::{Access, KdfParams, MasterSecret};
pub use repo::{host_name, now_ns, user_name, Credentials, InitOptions, KeyListing, Repository};
pub use snapshot::{BackupSummary, Snapshot};
