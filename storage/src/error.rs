//! The one error type of this crate.

use std::path::PathBuf;

use crate::Handle;

/// A result whose error is a storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while storing or fetching an object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{0} does not exist")]
    NotFound(Handle),
    /// An object name contains characters that are not allowed.
    #[error("invalid object name {name:?}: names are lowercase hex digits, letters, '-' and '_'")]
    InvalidName {
        /// The offending name.
        name: String,
    },
    /// A ranged read asked for bytes past the end of the object.
    #[error("{handle} is shorter than expected: wanted {wanted} bytes at offset {offset}")]
    ShortRead {
        /// The object that was read.
        handle: Handle,
        /// Offset of the read.
        offset: u64,
        /// Bytes requested.
        wanted: u64,
    },
    /// The storage device is full.
    #[error("no space left while writing {path}: free some space and run the command again")]
    NoSpace {
        /// Where the write failed.
        path: PathBuf,
    },
    /// Permission was denied by the storage.
    #[error("permission denied on {path}")]
    PermissionDenied {
        /// The path that could not be accessed.
        path: PathBuf,
    },
    /// Any other I/O error, with the operation and path it happened on.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A background task failed unexpectedly.
    #[error("storage task failed: {0}")]
    Task(String),
    /// A repository location (URL) could not be understood, or its
    /// environment is incomplete.
    #[error("invalid repository location {location:?}: {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting from the environment has a value that cannot be used.
    #[error("invalid {name}={value:?}: {reason}")]
    InvalidSetting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What values it takes.
        reason: &'static str,
    },
    /// Every attempt of an operation failed with a transient error; the
    /// retry budget is spent.
    #[error("gave up after {attempts} attempts in {seconds} s: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Seconds from the first attempt to the last failure.
        seconds: u64,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// The server could not be reached, or the connection dropped.
    #[error("cannot reach {location}: {message}")]
    Connection {
        /// The server or repository location.
        location: String,
        /// What happened.
        message: String,
    },
    /// An operation took longer than the configured timeout.
    #[error("{op} timed out after {seconds} s on {location}")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// The repository location.
        location: String,
        /// The timeout that expired, in seconds.
        seconds: u64,
    },
    /// The server refused our credentials; retrying will not help.
    #[error("authentication failed on {location}: {message}")]
    Auth {
        /// The server or repository location.
        location: String,
        /// What the server said, and what to check.
        message: String,
    },
    /// The server's host key is unknown or differs from the one on record.
    #[error("host key of {host} refused: {message}")]
    HostKey {
        /// The host (and port) that was contacted.
        host: String,
        /// Why it was refused and how to fix it.
        message: String,
    },
    /// A remote server answered an operation with an error.
    #[error("{op} {path}: {message}")]
    Remote {
        /// What was being done.
        op: &'static str,
        /// On which object path (relative to the repository root).
        path: String,
        /// What the server said.
        message: String,
        /// Whether trying again later may succeed (a busy or failing
        /// server, as opposed to a refused request).
        transient: bool,
    },
}

impl Error {
    /// Wraps an I/O error, classifying the cases a user can act on.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::StorageFull => Error::NoSpace { path },
            std::io::ErrorKind::PermissionDenied => Error::PermissionDenied { path },
            _ if source.raw_os_error() == Some(28) => Error::NoSpace { path },
            _ => Error::Io { op, path, source },
        }
    }

    /// True when the object simply is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ),
            Error::Task(_) => true,
            Error::Connection { .. } | Error::Timeout { .. } => true,
            Error::Remote { transient, .. } => *transient,
            _ => false,
        }
    }
}
