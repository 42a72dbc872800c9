//! What a caller tells a backup, and what it hears back.

use std::path::PathBuf;
use std::sync::Arc;

use crate::id::SnapshotId;
use crate::snapshot::{BackupSummary, Snapshot};

/// Options of a backup.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct BackupOptions {
    /// Host name to record (default: this machine's).
    pub host: Option<String>,
    /// Tags to record.
    pub tags: Vec<String>,
    /// Glob patterns to leave out; a pattern without `/` matches names.
    pub excludes: Vec<String>,
    /// Files with one exclude pattern per line (`#` starts a comment).
    pub exclude_files: Vec<PathBuf>,
    /// Stay on the file system of each path given.
    pub one_file_system: bool,
    /// Reading threads (default: the number of cores).
    pub workers: Option<usize>,
    /// Packs uploading at once (default: what the backend says pays off;
    /// each holds a pack in memory).
    pub uploads: Option<usize>,
    /// Ignore the file cache and read every file.
    pub force: bool,
}

impl BackupOptions {
    /// Sets the host name.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Adds tags.
    pub fn tags(mut self, tags: impl IntoIterator<Item = String>) -> Self {
        self.tags.extend(tags);
        self
    }

    /// Adds exclude patterns.
    pub fn excludes(mut self, patterns: impl IntoIterator<Item = String>) -> Self {
        self.excludes.extend(patterns);
        self
    }

    /// Adds exclude files.
    pub fn exclude_files(mut self, files: impl IntoIterator<Item = PathBuf>) -> Self {
        self.exclude_files.extend(files);
        self
    }

    /// Stays on one file system per path.
    pub fn one_file_system(mut self, yes: bool) -> Self {
        self.one_file_system = yes;
        self
    }

    /// Reads every file, ignoring the file cache.
    pub fn force(mut self, yes: bool) -> Self {
        self.force = yes;
        self
    }

    /// Sets the number of reading threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }
}

/// Progress of a backup, as data.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BackupEvent {
    /// The scanner has found this much so far.
    Scanned {
        /// Files found.
        files: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// The scanner is done: these are the totals.
    ScanFinished {
        /// Files found.
        files: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// Bytes of file content were dealt with (read, or known unchanged).
    Bytes(u64),
    /// A file is done.
    FileDone,
    /// A file or folder could not be read and was skipped, or changed
    /// while it was read.
    Warning {
        /// The path.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

/// A receiver of backup events; it must be cheap, as it is called often.
pub type Observer = Arc<dyn Fn(&BackupEvent) + Send + Sync>;

/// The result of a backup.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// What happened, also stored in the snapshot.
    pub summary: BackupSummary,
    /// Paths that could not be read.
    pub failed: Vec<(PathBuf, String)>,
    /// Packs found in the repository without an index entry (left by a
    /// backup that failed) and recorded before this backup started.
    pub adopted_packs: u64,
}
