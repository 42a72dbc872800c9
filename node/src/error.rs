//! The node's error type.

use std::path::PathBuf;

use kith_net::NetError;

/// Everything that can go wrong in the node, outside the shard transport
/// (whose narrower [`crate::transport::TransportError`] the object store
/// branches on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node folder has no node in it.
    #[error("no node in {dir}: create one with `kith node init --dir {dir}`")]
    NoNode {
        /// The folder.
        dir: PathBuf,
    },
    /// `node init` on a folder that already holds a node.
    #[error("{dir} already holds a node (its config is {config})")]
    AlreadyExists {
        /// The folder.
        dir: PathBuf,
        /// The config file found there.
        config: PathBuf,
    },
    /// The node is not running (no control socket answers).
    #[error("the node in {dir} is not running: start it with `kith node run --dir {dir}`")]
    NotRunning {
        /// The node folder.
        dir: PathBuf,
    },
    /// Another daemon already serves this node folder.
    #[error("the node in {dir} is already running (its control socket answers)")]
    AlreadyRunning {
        /// The node folder.
        dir: PathBuf,
    },
    /// The config file is not valid.
    #[error("config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    /// A size such as `10GiB` could not be read.
    #[error("invalid size {text:?}: {reason} (examples: 500M, 10GiB, 1T, 123456)")]
    Size {
        /// The text given.
        text: String,
        /// Why it is not a size.
        reason: &'static str,
    },
    /// An invite code could not be read.
    #[error("invalid invite code: {0}")]
    InviteCode(String),
    /// A file or folder of the node could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The node's database failed.
    #[error("node database {path}: {reason}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        reason: String,
    },
    /// The peer network failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The control socket spoke something this side does not understand.
    #[error("control socket: {0}")]
    Control(String),
    /// Owner keys saved in the node folder cannot be read.
    #[error(
        "{path}: {reason}; give the master key (KITH_MASTER_KEY or --master-key-file) instead"
    )]
    OwnerKeys {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The daemon answered a control request with an error.
    #[error("{0}")]
    Daemon(String),
}

impl NodeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
