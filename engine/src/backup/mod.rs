//! Backup: walk → read → chunk → hash → dedup → compress → encrypt → pack →
//! upload, as a pipeline of bounded stages.
//!
//! Data flow:
//! - the walker thread visits folders depth-first, decides per file whether
//!   the file cache proves it unchanged, and queues the others as jobs;
//! - worker threads (one per core) read and chunk files, skip blobs the
//!   repository or this session already has, and seal new blobs into a pack
//!   of their own; a full pack goes to the upload queue;
//! - the uploader task stores packs a few at a time and writes an index
//!   delta every so often, which is also when blobs enter the index cache;
//! - a folder's tree is built as soon as its last entry is known (see
//!   [`dir`]), so no stage waits for a whole folder to drain.
//!
//! Every queue is bounded, so memory stays within a few packs and chunk
//! buffers per worker however large the backup. The snapshot is written
//! last: it is the commit point.

mod commit;
mod delta;
mod dir;
mod meta;
mod options;
mod pipeline;
mod resume;
mod sources;
mod upload;
mod walk;

pub use options::{BackupEvent, BackupOptions, BackupOutcome, Observer};
pub use pipeline::backup;
