//! What a caller tells a restore, and what it hears back.

use std::sync::Arc;

/// Options of a restore.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Restore only paths matching one of these globs (and what is under them).
    pub includes: Vec<String>,
    /// Leave out paths matching these globs (and what is under them).
    pub excludes: Vec<String>,
    /// Packs read at once (default 4).
    pub concurrency: Option<usize>,
}

impl RestoreOptions {
    /// Adds include patterns.
    pub fn includes(mut self, patterns: impl IntoIterator<Item = String>) -> Self {
        self.includes.extend(patterns);
        self
    }

    /// Adds exclude patterns.
    pub fn excludes(mut self, patterns: impl IntoIterator<Item = String>) -> Self {
        self.excludes.extend(patterns);
        self
    }
}

/// Progress of a restore, as data.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RestoreEvent {
    /// The plan is made: this much will be written.
    Planned {
        /// Files.
        files: u64,
        /// Bytes.
        bytes: u64,
    },
    /// Bytes were written.
    Bytes(u64),
    /// Something could not be restored.
    Warning {
        /// What.
        path: String,
        /// Why.
        message: String,
    },
}

/// A receiver of restore events.
pub type RestoreObserver = Arc<dyn Fn(&RestoreEvent) + Send + Sync>;

/// What a restore did.
#[derive(Clone, Debug, Default)]
pub struct RestoreOutcome {
    /// Files restored.
    pub files: u64,
    /// Folders restored.
    pub dirs: u64,
    /// Other entries restored (links, specials).
    pub others: u64,
    /// Bytes of file content written or known zero.
    pub bytes: u64,
    /// Problems: the path or object, and what went wrong.
    pub errors: Vec<(String, String)>,
    /// True when any problem was damage in the repository.
    pub damage: bool,
}
