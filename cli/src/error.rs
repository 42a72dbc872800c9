//! The CLI's error type: an engine error or a usage problem.

use crate::exit;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Engine(#[from] kith_engine::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Node(#[from] kith_node::NodeError),
    /// Storing or reading a repository on peers failed.
    #[error(transparent)]
    Peers(#[from] kith_node::objects::ObjectError),
    /// The config file or profile is wrong (exit 2).
    #[error("{0}")]
    Config(String),
    /// The mount point cannot be used (exit 15).
    #[error("{0}")]
    Mountpoint(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Engine(e) => exit::code_for(e),
            CliError::Usage(_) => exit::ERROR,
            CliError::Node(e) => exit::node_code_for(e),
            CliError::Peers(_) => exit::ERROR,
            CliError::Config(_) => exit::USAGE,
            CliError::Mountpoint(_) => exit::MOUNTPOINT,
            CliError::Output(_) => exit::ERROR,
        }
    }
}
