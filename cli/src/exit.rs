//! Exit codes, documented in docs/CLI.md.

use kith_engine::Error;

/// Everything went well.
pub(crate) const OK: u8 = 0;
/// An error stopped the command.
pub(crate) const ERROR: u8 = 1;
/// The command line, config file or profile is wrong.
pub(crate) const USAGE: u8 = 2;
/// Backup finished, but some files could not be read.
pub(crate) const PARTIAL: u8 = 3;
/// The repository holds damaged or missing data (check, restore).
pub(crate) const DAMAGED: u8 = 4;
/// No repository at the location.
pub(crate) const NO_REPOSITORY: u8 = 10;
/// The repository is locked.
pub(crate) const LOCKED: u8 = 11;
/// Wrong password or master key.
pub(crate) const WRONG_PASSWORD: u8 = 12;
/// No such snapshot, or an ambiguous prefix, or no such path.
pub(crate) const NOT_FOUND: u8 = 13;
/// The restore target is not empty.
pub(crate) const TARGET_NOT_EMPTY: u8 = 14;
/// The mount point is missing, not a folder, not empty, or in use.
pub(crate) const MOUNTPOINT: u8 = 15;
/// The node is not running (no daemon answers on its control socket).
pub(crate) const NODE_NOT_RUNNING: u8 = 16;
/// No node in the folder given.
pub(crate) const NO_NODE: u8 = 17;
/// Interrupted by a signal.
pub(crate) const INTERRUPTED: u8 = 130;

/// The exit code for an engine error.
pub(crate) fn code_for(e: &Error) -> u8 {
    match e {
        Error::RepositoryNotFound { .. } => NO_REPOSITORY,
        Error::Locked { .. } | Error::LockLapsed(_) => LOCKED,
        Error::WrongPassword | Error::WrongMasterKey => WRONG_PASSWORD,
        Error::SnapshotNotFound(_)
        | Error::AmbiguousSnapshot { .. }
        | Error::PathNotInSnapshot { .. } => NOT_FOUND,
        Error::TargetNotEmpty(_) => TARGET_NOT_EMPTY,
        Error::Interrupted => INTERRUPTED,
        e if e.is_damage() => DAMAGED,
        _ => ERROR,
    }
}

/// The exit code for a node error.
pub(crate) fn node_code_for(e: &kith_node::NodeError) -> u8 {
    match e {
        kith_node::NodeError::NotRunning { .. } => NODE_NOT_RUNNING,
        kith_node::NodeError::NoNode { .. } => NO_NODE,
        _ => ERROR,
    }
}
