//! The one error enum of the engine.

use std::path::PathBuf;

use crate::id::{BlobId, PackId};

/// A result whose error is an engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine. Variants carry the object or
/// path concerned, and messages say what a user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage under the repository failed.
    #[error(transparent)]
    Storage(#[from] kith_storage::Error),
    /// There is no repository at the given location.
    #[error("no repository at {location}: create one with `kith init`")]
    RepositoryNotFound {
        /// Where one was looked for.
        location: String,
    },
    /// A repository already exists where one was to be created.
    #[error("a repository already exists at {location}")]
    RepositoryExists {
        /// Where.
        location: String,
    },
    /// No key file accepted the password.
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    /// The master key given does not belong to this repository.
    #[error("the master key does not belong to this repository")]
    WrongMasterKey,
    /// The key only allows writing new backups.
    #[error("this key can only add backups; {operation} needs a full key or the master key")]
    WriteOnly {
        /// What was attempted.
        operation: &'static str,
    },
    /// An object failed authentication or could not be decoded.
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// The damaged object, e.g. "pack 3fa2…" or "snapshot 91c0…".
        object: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An object was written by a newer kith.
    #[error("{object} uses format version {version}, which this kith does not know: upgrade kith")]
    Unsupported {
        /// The object.
        object: String,
        /// Its version.
        version: u32,
    },
    /// A blob the repository needs is not in the index.
    #[error("blob {0} is not in the index")]
    BlobNotFound(BlobId),
    /// A blob could not be read back intact.
    #[error("blob {blob} in pack {pack} is damaged: {reason}")]
    BlobDamaged {
        /// The blob.
        blob: BlobId,
        /// The pack it is stored in.
        pack: PackId,
        /// What failed.
        reason: String,
    },
    /// No snapshot matches an id or prefix.
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    /// More than one snapshot matches a prefix.
    #[error("{prefix:?} matches {count} snapshots: give more characters of the id")]
    AmbiguousSnapshot {
        /// The prefix given.
        prefix: String,
        /// How many snapshots match it.
        count: usize,
    },
    /// A path inside a snapshot does not exist.
    #[error("{path} does not exist in the snapshot")]
    PathNotInSnapshot {
        /// The path looked for.
        path: String,
    },
    /// A restore target folder already has content.
    #[error("target folder {0} is not empty: restore into a new or empty folder")]
    TargetNotEmpty(PathBuf),
    /// A file-system operation on the local machine failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The local index cache failed; it can be deleted safely.
    #[error("local cache at {path}: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another process has the local cache open.
    #[error("local cache at {0} is in use by another kith process")]
    CacheInUse(PathBuf),
    /// An argument is invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// The paper key could not be parsed.
    #[error("the master key is not valid: {0}")]
    InvalidMasterKey(&'static str),
    /// Nothing was backed up because no path could be read.
    #[error("nothing to back up: {0}")]
    NothingToBackUp(String),
    /// The repository is locked by another process.
    #[error("repository is locked by {holder}: wait for it to finish, or remove a stale lock with `kith unlock`")]
    Locked {
        /// Who holds the lock.
        holder: String,
    },
    /// This process went so long without refreshing its lock that others
    /// may have taken it for abandoned; what it read may be out of date.
    #[error("this process's lock lapsed (it was suspended or starved for longer than the staleness limit), so another process may have changed the repository meanwhile; {0}: run it again")]
    LockLapsed(String),
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
    /// The operation was cancelled.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// A `Corrupt` error for the named object.
    pub(crate) fn corrupt(object: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.to_string(),
            reason: reason.into(),
        }
    }

    /// An `Io` error with the operation and path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error means the repository holds damaged data.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::BlobDamaged { .. } | Error::BlobNotFound(_)
        ) || matches!(self, Error::Storage(kith_storage::Error::ShortRead { .. }))
    }
}
