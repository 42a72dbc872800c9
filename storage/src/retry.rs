//! A [`Backend`] wrapper that retries transient failures.
//!
//! Every remote backend is wrapped in [`Retry`]: each attempt of an operation
//! runs under a timeout (longer for bigger transfers), transient errors
//! ([`Error::is_transient`]: dropped connections, timeouts, busy servers) are
//! retried with exponential backoff and full jitter, and permanent ones
//! (authentication, a refused host key, a missing object, a full disk, a
//! refused request) are returned at once. The remote backends drop a broken
//! connection when they see one and open a new one on the next call, so a
//! retry after a dropped connection reconnects.
//!
//! Retrying is safe because every operation is idempotent: objects are
//! immutable and named by content or fresh random ids, so a retried `put`
//! writes the same bytes again, and every backend's `put` is atomic (a
//! temporary name and a rename over SFTP, a single PUT on S3), so a failed
//! attempt never leaves a half object under the final name. A ranged read
//! that comes back shorter than asked is treated as a truncated transfer and
//! retried.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng as _;

use crate::{Backend, Error, Handle, Kind, ObjectInfo, Result};

/// The transfer size assumed for the timeout of a whole-object read.
const WHOLE_OBJECT_HINT: u64 = 64 << 20;

/// How hard [`Retry`] tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included (at least 1).
    pub attempts: u32,
    /// The backoff before the first retry; it doubles on each further retry.
    pub base_delay: Duration,
    /// The longest backoff between two attempts.
    pub max_delay: Duration,
    /// The timeout of one attempt of an operation that moves little data.
    pub timeout: Duration,
    /// The slowest transfer rate, in bytes per second, that is still
    /// waited for: an attempt that moves `n` bytes gets `timeout + n / rate`.
    pub min_rate: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            min_rate: 256 * 1024,
        }
    }
}

/// Attempts per operation, the first included (`KITH_RETRY_ATTEMPTS`).
pub(crate) const ATTEMPTS_VAR: &str = "KITH_RETRY_ATTEMPTS";
/// Seconds one attempt that moves little data may take
/// (`KITH_RETRY_TIMEOUT`); bigger transfers get more.
pub(crate) const TIMEOUT_VAR: &str = "KITH_RETRY_TIMEOUT";

impl RetryPolicy {
    /// The default policy, with the attempts and the timeout taken from
    /// `KITH_RETRY_ATTEMPTS` (1 to 1000) and `KITH_RETRY_TIMEOUT` (seconds,
    /// 1 to 86400) when they are set.
    pub fn from_env() -> Result<Self> {
        let mut policy = RetryPolicy::default();
        let number =
            |name: &'static str, range: std::ops::RangeInclusive<u64>, reason| match std::env::var(
                name,
            ) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .map(Some)
                    .ok_or(Error::InvalidSetting {
                        name,
                        value: v,
                        reason,
                    }),
                _ => Ok(None),
            };
        if let Some(n) = number(
            ATTEMPTS_VAR,
            1..=1000,
            "give a number of attempts from 1 to 1000",
        )? {
            policy.attempts = u32::try_from(n).unwrap_or(policy.attempts);
        }
        if let Some(s) = number(
            TIMEOUT_VAR,
            1..=86_400,
            "give a number of seconds from 1 to 86400",
        )? {
            policy.timeout = Duration::from_secs(s);
        }
        Ok(policy)
    }

    /// The timeout of one attempt that moves `bytes` bytes.
    pub fn timeout_for(&self, bytes: u64) -> Duration {
        let extra = bytes.checked_div(self.min_rate).unwrap_or(0);
        self.timeout.saturating_add(Duration::from_secs(extra))
    }

    /// The backoff before retry number `retry` (0 for the first retry):
    /// a uniformly random duration up to `base_delay * 2^retry`, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }
}

/// Retries the transient failures of the backend it wraps.
#[derive(Debug)]
pub struct Retry<B> {
    inner: B,
    policy: RetryPolicy,
}

impl<B: Backend> Retry<B> {
    /// Wraps `inner` with the default policy.
    pub fn new(inner: B) -> Self {
        Self::with_policy(inner, RetryPolicy::default())
    }

    /// Wraps `inner` with `policy`.
    pub fn with_policy(inner: B, mut policy: RetryPolicy) -> Self {
        policy.attempts = policy.attempts.max(1);
        Retry { inner, policy }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    async fn run<T, F, Fut>(&self, op: &'static str, bytes: u64, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let timeout = self.policy.timeout_for(bytes);
        let mut retry = 0u32;
        let started = std::time::Instant::now();
        loop {
            let result = match tokio::time::timeout(timeout, f()).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    op,
                    location: self.inner.location(),
                    seconds: timeout.as_secs(),
                }),
            };
            match result {
                Err(e) if e.is_transient() && retry + 1 < self.policy.attempts => {
                    let delay = self.policy.backoff(retry);
                    retry += 1;
                    tracing::warn!(
                        "{op} failed ({e}); retry {retry} of {} in {} ms",
                        self.policy.attempts - 1,
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) if e.is_transient() && retry > 0 => {
                    return Err(Error::GaveUp {
                        attempts: retry + 1,
                        seconds: started.elapsed().as_secs(),
                        last: Box::new(e),
                    })
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for Retry<B> {
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
        // Only failures to connect are retried: a create that failed half-way
        // may have written the layout, and a retry would then see a repository
        // and refuse.
        let mut retry = 0u32;
        loop {
            match self.inner.create().await {
                Err(e @ Error::Connection { .. }) if retry + 1 < self.policy.attempts => {
                    let delay = self.policy.backoff(retry);
                    retry += 1;
                    tracing::warn!(
                        "create failed ({e}); retry {retry} in {} ms",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.run("put", len, || self.inner.put(handle, data.clone()))
            .await
    }

    async fn get(&self, handle: &Handle) -> Result<Bytes> {
        // The size of a whole-object read is not known in advance: allow
        // for a large pack.
        self.run("get", WHOLE_OBJECT_HINT, || self.inner.get(handle))
            .await
    }

    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
        self.run("get_range", length, || async move {
            let data = self.inner.get_range(handle, offset, length).await?;
            if data.len() as u64 != length {
                return Err(Error::Remote {
                    op: "read",
                    path: handle.relative_path(),
                    message: format!(
                        "truncated transfer: got {} of {length} bytes at offset {offset}",
                        data.len()
                    ),
                    transient: true,
                });
            }
            Ok(data)
        })
        .await
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run("list", 0, || self.inner.list(kind, prefix)).await
    }

    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
        self.run("stat", 0, || self.inner.stat(handle)).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        self.run("delete", 0, || self.inner.delete(handle)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::LocalBackend;

    /// Fails the first `fail` calls of every operation with `make()`.
    #[derive(Debug)]
    struct Flaky {
        inner: LocalBackend,
        fail: u32,
        calls: AtomicU32,
        permanent: bool,
    }

    impl Flaky {
        fn check(&self) -> Result<()> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                if self.permanent {
                    return Err(Error::Auth {
                        location: "test".into(),
                        message: "bad key".into(),
                    });
                }
                return Err(Error::Connection {
                    location: "test".into(),
                    message: "dropped".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Backend for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }

        fn parallel_transfers(&self) -> usize {
            1
        }
        fn read_size(&self) -> u64 {
            1 << 20
        }
        async fn create(&self) -> Result<()> {
            self.inner.create().await
        }
        async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
            self.check()?;
            self.inner.put(handle, data).await
        }
        async fn get(&self, handle: &Handle) -> Result<Bytes> {
            self.check()?;
            self.inner.get(handle).await
        }
        async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
            self.check()?;
            self.inner.get_range(handle, offset, length).await
        }
        async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.check()?;
            self.inner.list(kind, prefix).await
        }
        async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
            self.check()?;
            self.inner.stat(handle).await
        }
        async fn delete(&self, handle: &Handle) -> Result<()> {
            self.check()?;
            self.inner.delete(handle).await
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
            min_rate: 1 << 20,
        }
    }

    async fn flaky(fail: u32, permanent: bool) -> (tempfile::TempDir, Retry<Flaky>) {
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalBackend::new(dir.path().join("repo"));
        inner.create().await.unwrap();
        let b = Flaky {
            inner,
            fail,
            calls: AtomicU32::new(0),
            permanent,
        };
        (dir, Retry::with_policy(b, fast()))
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_they_pass() {
        let (_dir, b) = flaky(3, false).await;
        let h = Handle::new(Kind::Snapshot, "ab").unwrap();
        b.put(&h, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 4);
        assert_eq!(&b.get(&h).await.unwrap()[..], b"x");
    }

    #[tokio::test]
    async fn retries_give_up_after_the_last_attempt() {
        let (_dir, b) = flaky(10, false).await;
        let h = Handle::new(Kind::Snapshot, "ab").unwrap();
        let e = b.put(&h, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(
            matches!(&e, Error::GaveUp { attempts: 4, last, .. } if last.is_transient()),
            "{e}"
        );
        assert!(e.to_string().contains("gave up after 4 attempts"), "{e}");
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let (_dir, b) = flaky(10, true).await;
        let h = Handle::new(Kind::Snapshot, "ab").unwrap();
        let e = b.get(&h).await.unwrap_err();
        assert!(matches!(e, Error::Auth { .. }), "{e}");
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 1);
        let (_dir, b) = flaky(0, true).await;
        let e = b.get(&h).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 1);
    }

    #[derive(Debug)]
    struct Slow(Arc<AtomicU32>);

    #[async_trait]
    impl Backend for Slow {
        fn location(&self) -> String {
            "slow".into()
        }

        fn parallel_transfers(&self) -> usize {
            1
        }
        fn read_size(&self) -> u64 {
            1 << 20
        }
        async fn create(&self) -> Result<()> {
            Ok(())
        }
        async fn put(&self, _: &Handle, _: Bytes) -> Result<()> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok(())
        }
        async fn get(&self, h: &Handle) -> Result<Bytes> {
            Err(Error::NotFound(h.clone()))
        }
        async fn get_range(&self, h: &Handle, _: u64, _: u64) -> Result<Bytes> {
            Err(Error::NotFound(h.clone()))
        }
        async fn list(&self, _: Kind, _: &str) -> Result<Vec<ObjectInfo>> {
            Ok(Vec::new())
        }
        async fn stat(&self, h: &Handle) -> Result<ObjectInfo> {
            Err(Error::NotFound(h.clone()))
        }
        async fn delete(&self, _: &Handle) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut policy = fast();
        policy.timeout = Duration::from_millis(50);
        let b = Retry::with_policy(Slow(calls.clone()), policy);
        let h = Handle::new(Kind::Snapshot, "ab").unwrap();
        b.put(&h, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 0..40 {
            assert!(p.backoff(retry) <= p.max_delay);
        }
        assert!(p.backoff(0) <= p.base_delay);
        assert_eq!(
            p.timeout_for(10 * 256 * 1024),
            p.timeout + Duration::from_secs(10)
        );
    }
}
