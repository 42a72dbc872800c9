//! One module per command.

pub(crate) mod backup;
pub(crate) mod cat;
pub(crate) mod check;
pub(crate) mod copy;
pub(crate) mod diff;
pub(crate) mod find;
pub(crate) mod forget;
pub(crate) mod generate;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod ls;
pub(crate) mod mount;
pub(crate) mod node;
pub(crate) mod peer;
pub(crate) mod prune;
pub(crate) mod repair;
pub(crate) mod restore;
pub(crate) mod snapshots;
pub(crate) mod stats;
pub(crate) mod tag;
pub(crate) mod unlock;
