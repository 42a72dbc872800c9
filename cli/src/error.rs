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
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Engine(e) => exit::code_for(e),
            CliError::Usage(_) => exit::ERROR,
            CliError::Node(e) => exit::node_code_for(e),
            CliError::Output(_) => exit::ERROR,
        }
    }
}
