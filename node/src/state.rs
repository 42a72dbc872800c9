//! The node database (`node.redb`): friends, pending invites and the
//! hold's index. One file so that a change touching two of them commits
//! atomically; redb is the record, the hold's files follow it (see
//! [`crate::hold`]).

use std::path::{Path, PathBuf};

use redb::{Database, TableDefinition};

use crate::NodeError;

/// Held shards: `owner (32) ‖ tag (32) ‖ index (2, big-endian)` → postcard
/// [`crate::hold::ShardEntry`]. Big-endian index keeps one owner's shards
/// in `(tag, index)` order, the order holdings are listed in.
pub(crate) const SHARDS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("shards");
/// Friends: peer id bytes → postcard [`crate::friends::FriendRecord`].
pub(crate) const FRIENDS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("friends");
/// Pending invites: secret (32) → expiry, seconds since the Unix epoch.
pub(crate) const INVITES: TableDefinition<'_, &[u8], u64> = TableDefinition::new("invites");

/// The open node database.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
}

impl State {
    /// Opens (or creates) the database and its tables.
    pub(crate) fn open(path: &Path) -> Result<Self, NodeError> {
        let db = Database::create(path).map_err(|e| db_err(path, e))?;
        let state = Self {
            db,
            path: path.to_path_buf(),
        };
        let tx = state.db.begin_write().map_err(|e| state.err(e))?;
        tx.open_table(SHARDS).map_err(|e| state.err(e))?;
        tx.open_table(FRIENDS).map_err(|e| state.err(e))?;
        tx.open_table(INVITES).map_err(|e| state.err(e))?;
        tx.commit().map_err(|e| state.err(e))?;
        Ok(state)
    }

    /// Wraps a redb error with the database path.
    pub(crate) fn err(&self, e: impl Into<redb::Error>) -> NodeError {
        db_err(&self.path, e)
    }
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> NodeError {
    let e: redb::Error = e.into();
    let reason = match &e {
        redb::Error::DatabaseAlreadyOpen => {
            "already open: is another `kith node run` using this folder?".to_owned()
        }
        other => other.to_string(),
    };
    NodeError::Database {
        path: path.to_path_buf(),
        reason,
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
