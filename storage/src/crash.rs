//! A [`Backend`] wrapper that ends the process right after a chosen write,
//! for crash-point tests.
//!
//! The crash tests of the project run a real `kith` process and need it to
//! die at an exact point of an operation: after its first write, its second,
//! and so on, until the operation completes. [`CrashAfter`] counts every
//! call that changes the repository (create, put, delete) and aborts the
//! process as soon as the `n`-th of them has returned, success or not, so
//! that everything the operation would have done afterwards is lost, as in
//! a power cut or a `kill -9`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Backend, Handle, Kind, ObjectInfo, Result};

/// The environment variable that makes the CLI wrap its backend in
/// [`CrashAfter`]: the number of writes after which the process dies.
pub const CRASH_AFTER_WRITES_ENV: &str = "KITH_TEST_CRASH_AFTER_WRITES";

/// Aborts the process after the `n`-th write (see the module docs).
#[derive(Debug)]
pub struct CrashAfter {
    inner: Arc<dyn Backend>,
    after: u64,
    writes: AtomicU64,
}

impl CrashAfter {
    /// Wraps `inner`; the process aborts once `after` writes have returned.
    pub fn new(inner: Arc<dyn Backend>, after: u64) -> Self {
        CrashAfter {
            inner,
            after,
            writes: AtomicU64::new(0),
        }
    }

    fn wrote(&self) {
        let done = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if done >= self.after {
            // No unwinding, no destructors, no flushing: the process is gone
            // the way a killed one is.
            std::process::abort();
        }
    }
}

#[async_trait]
impl Backend for CrashAfter {
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
        let r = self.inner.create().await;
        self.wrote();
        r
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
        let r = self.inner.put(handle, data).await;
        self.wrote();
        r
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
        let r = self.inner.delete(handle).await;
        self.wrote();
        r
    }
}
