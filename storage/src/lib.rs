//! Named-object storage for kith repositories.
//!
//! A kith repository is a set of named, immutable objects grouped by [`Kind`]:
//! the `config`, key files, packs, index deltas, snapshots, locks and sessions.
//! This crate knows names and bytes, never what the bytes mean. The engine
//! talks to every place a repository can live (a local folder, an SFTP
//! server, an S3 bucket, a set of peers) through the one async [`Backend`]
//! trait defined here.
//!
//! ```
//! # use kith_storage::{Backend, Handle, Kind, LocalBackend};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let repo = LocalBackend::new(dir.path().join("repo"));
//! repo.create().await.unwrap();
//! let handle = Handle::new(Kind::Snapshot, "00ff").unwrap();
//! repo.put(&handle, bytes::Bytes::from_static(b"hello")).await.unwrap();
//! assert_eq!(&repo.get(&handle).await.unwrap()[..], b"hello");
//! assert_eq!(&repo.get_range(&handle, 1, 3).await.unwrap()[..], b"ell");
//! assert_eq!(repo.list(Kind::Snapshot, "").await.unwrap().len(), 1);
//! # });
//! ```

mod backend;
mod crash;
mod error;
mod fault;
mod handle;
mod local;
mod location;
mod pause;
mod retry;
mod s3;
mod sftp;

pub use backend::{Backend, ObjectInfo};
pub use bytes::Bytes;
pub use crash::{CrashAfter, CRASH_AFTER_WRITES_ENV};
pub use error::{Error, Result};
pub use fault::{Fault, FaultConfig, FaultStats};
pub use handle::{Handle, Kind};
pub use local::LocalBackend;
pub use location::Location;
pub use pause::{StopBeforePut, STOP_BEFORE_PUT_ENV};
pub use retry::{Retry, RetryPolicy};
pub use s3::{S3Backend, S3Config};
pub use sftp::{SftpBackend, SftpConfig};
