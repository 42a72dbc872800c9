//! A [`Backend`] wrapper that suspends the process (SIGSTOP) right before
//! its first write of one kind of object, for tests of what happens when a
//! process sleeps at that exact moment.
//!
//! A process suspended between storing packs and listing them in an index
//! delta is the hardest case of concurrent pruning; signals sent from
//! outside hit it only by chance. With `KITH_TEST_STOP_BEFORE_PUT=index`
//! the process stops itself there, the test prunes meanwhile and then
//! resumes it with SIGCONT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Backend, Handle, Kind, ObjectInfo, Result};

/// The environment variable that makes the CLI wrap its backend in
/// [`StopBeforePut`]: the directory name of the kind (`index`, `snapshots`, ...).
pub const STOP_BEFORE_PUT_ENV: &str = "KITH_TEST_STOP_BEFORE_PUT";

/// Stops the process before the first put of one kind (see the module docs).
#[derive(Debug)]
pub struct StopBeforePut {
    inner: Arc<dyn Backend>,
    kind: Kind,
    stopped: AtomicBool,
}

impl StopBeforePut {
    /// Wraps `inner`; the process stops before its first put of `kind`.
    pub fn new(inner: Arc<dyn Backend>, kind: Kind) -> Self {
        StopBeforePut {
            inner,
            kind,
            stopped: AtomicBool::new(false),
        }
    }

    /// The kind whose directory name is `dir`.
    pub fn kind_named(dir: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.dir() == dir)
    }

    fn stop_once(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // `kill` delivers the signal before it exits, so the process is
        // stopped by the time this returns, until someone continues it.
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
        if let Err(e) = stopped {
            tracing::warn!(%e, "cannot stop this process for the test");
        }
    }
}

#[async_trait]
impl Backend for StopBeforePut {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn parallel_transfers(&self) -> usize {
        self.inner.parallel_transfers()
    }

    fn read_size(&self) -> u64 {
        self.inner.read_size()
    }

    async fn create(&self) -> Result<()> {
        self.inner.create().await
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
        if handle.kind == self.kind {
            self.stop_once();
        }
        self.inner.put(handle, data).await
    }

    async fn get(&self, handle: &Handle) -> Result<Bytes> {
        self.inner.get(handle).await
    }

    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
        self.inner.get_range(handle, offset, length).await
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind, prefix).await
    }

    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
        self.inner.stat(handle).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        self.inner.delete(handle).await
    }
}
