//! A [`Backend`] wrapper that injects faults, for tests.
//!
//! [`Fault`] makes a healthy backend misbehave like a bad network or a flaky
//! server: transient errors, latency, failed and truncated reads, writes
//! whose request or answer is lost. Every decision is drawn from a seeded
//! generator keyed by the operation, the object and how many times that
//! operation was already tried on that object, so a run with the same seed
//! makes the same decisions whatever the order in which concurrent
//! operations arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Backend, Error, Handle, Kind, ObjectInfo, Result};

/// What faults to inject and how often. Rates are probabilities in `0..=1`.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// The seed of every decision.
    pub seed: u64,
    /// Chance that any operation fails with a transient error before it
    /// reaches the wrapped backend.
    pub error_rate: f64,
    /// Added delay: each operation sleeps a random duration up to this.
    pub max_latency: Duration,
    /// Chance that a read fails with a transient error after reading.
    pub failed_read_rate: f64,
    /// Chance that a read returns only part of the bytes, without an error
    /// (a truncated transfer).
    pub truncated_read_rate: f64,
    /// Chance that a write is lost on its way: nothing is stored and the
    /// caller gets a transient error.
    pub dropped_write_rate: f64,
    /// Chance that a write is stored but its answer is lost: the caller gets
    /// a transient error although the object is there.
    pub lost_ack_rate: f64,
}

impl FaultConfig {
    /// No faults at all, with `seed`.
    pub fn none(seed: u64) -> Self {
        FaultConfig {
            seed,
            error_rate: 0.0,
            max_latency: Duration::ZERO,
            failed_read_rate: 0.0,
            truncated_read_rate: 0.0,
            dropped_write_rate: 0.0,
            lost_ack_rate: 0.0,
        }
    }

    /// Every kind of transient fault at `rate` each, with `seed`.
    pub fn transient(seed: u64, rate: f64) -> Self {
        FaultConfig {
            seed,
            error_rate: rate,
            max_latency: Duration::ZERO,
            failed_read_rate: rate,
            truncated_read_rate: rate,
            dropped_write_rate: rate,
            lost_ack_rate: rate,
        }
    }
}

/// Counts of the faults injected so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Operations that failed before reaching the wrapped backend.
    pub errors: u64,
    /// Reads that failed after reading.
    pub failed_reads: u64,
    /// Reads that returned fewer bytes.
    pub truncated_reads: u64,
    /// Writes that were not stored.
    pub dropped_writes: u64,
    /// Writes that were stored but reported as failed.
    pub lost_acks: u64,
}

/// Injects faults into the backend it wraps; see the module documentation.
#[derive(Debug)]
pub struct Fault<B> {
    inner: B,
    config: FaultConfig,
    attempts: Mutex<HashMap<(u8, String, u64), u64>>,
    errors: AtomicU64,
    failed_reads: AtomicU64,
    truncated_reads: AtomicU64,
    dropped_writes: AtomicU64,
    lost_acks: AtomicU64,
}

/// One decision's random stream (splitmix64).
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `rate`.
    fn chance(&mut self, rate: f64) -> bool {
        // 53 random bits as a float in [0, 1).
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x < rate
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

const OP_PUT: u8 = 1;
const OP_GET: u8 = 2;
const OP_RANGE: u8 = 3;
const OP_LIST: u8 = 4;
const OP_STAT: u8 = 5;
const OP_DELETE: u8 = 6;

impl<B: Backend> Fault<B> {
    /// Wraps `inner`, injecting the faults of `config`.
    pub fn new(inner: B, config: FaultConfig) -> Self {
        Fault {
            inner,
            config,
            attempts: Mutex::new(HashMap::new()),
            errors: AtomicU64::new(0),
            failed_reads: AtomicU64::new(0),
            truncated_reads: AtomicU64::new(0),
            dropped_writes: AtomicU64::new(0),
            lost_acks: AtomicU64::new(0),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// How many faults were injected so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            errors: self.errors.load(Ordering::Relaxed),
            failed_reads: self.failed_reads.load(Ordering::Relaxed),
            truncated_reads: self.truncated_reads.load(Ordering::Relaxed),
            dropped_writes: self.dropped_writes.load(Ordering::Relaxed),
            lost_acks: self.lost_acks.load(Ordering::Relaxed),
        }
    }

    /// The random stream of this attempt of `op` on `path` at `offset`.
    fn draw(&self, op: u8, path: &str, offset: u64) -> Draw {
        let attempt = {
            let mut attempts = self
                .attempts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = attempts.entry((op, path.to_owned(), offset)).or_insert(0);
            *n += 1;
            *n
        };
        let mut h = fnv(&self.config.seed.to_le_bytes(), 0xCBF2_9CE4_8422_2325);
        h = fnv(&[op], h);
        h = fnv(path.as_bytes(), h);
        h = fnv(&offset.to_le_bytes(), h);
        h = fnv(&attempt.to_le_bytes(), h);
        Draw(h)
    }

    /// Latency and up-front errors common to every operation.
    async fn before(&self, draw: &mut Draw, op: &'static str, path: &str) -> Result<()> {
        let max = u64::try_from(self.config.max_latency.as_micros()).unwrap_or(u64::MAX);
        let wait = draw.below(max.saturating_add(1));
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        if draw.chance(self.config.error_rate) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return Err(injected(op, path, "connection reset"));
        }
        Ok(())
    }

    /// Failed and truncated reads.
    fn after_read(&self, draw: &mut Draw, path: &str, data: Bytes) -> Result<Bytes> {
        if draw.chance(self.config.failed_read_rate) {
            self.failed_reads.fetch_add(1, Ordering::Relaxed);
            return Err(injected(
                "read",
                path,
                "connection dropped during the transfer",
            ));
        }
        if !data.is_empty() && draw.chance(self.config.truncated_read_rate) {
            self.truncated_reads.fetch_add(1, Ordering::Relaxed);
            let keep = usize::try_from(draw.below(data.len() as u64)).unwrap_or(0);
            return Ok(data.slice(..keep));
        }
        Ok(data)
    }
}

fn injected(op: &'static str, path: &str, what: &str) -> Error {
    Error::Remote {
        op,
        path: path.to_owned(),
        message: format!("injected fault: {what}"),
        transient: true,
    }
}

#[async_trait]
impl<B: Backend> Backend for Fault<B> {
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
        let path = handle.relative_path();
        let mut draw = self.draw(OP_PUT, &path, 0);
        self.before(&mut draw, "write", &path).await?;
        if draw.chance(self.config.dropped_write_rate) {
            self.dropped_writes.fetch_add(1, Ordering::Relaxed);
            return Err(injected("write", &path, "write lost on its way"));
        }
        self.inner.put(handle, data).await?;
        if draw.chance(self.config.lost_ack_rate) {
            self.lost_acks.fetch_add(1, Ordering::Relaxed);
            return Err(injected("write", &path, "answer lost after the write"));
        }
        Ok(())
    }

    async fn get(&self, handle: &Handle) -> Result<Bytes> {
        let path = handle.relative_path();
        let mut draw = self.draw(OP_GET, &path, 0);
        self.before(&mut draw, "read", &path).await?;
        let data = self.inner.get(handle).await?;
        // A whole-object read has no expected length to check against, so
        // only failures are injected here, never silent truncation.
        if draw.chance(self.config.failed_read_rate) {
            self.failed_reads.fetch_add(1, Ordering::Relaxed);
            return Err(injected(
                "read",
                &path,
                "connection dropped during the transfer",
            ));
        }
        Ok(data)
    }

    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
        let path = handle.relative_path();
        let mut draw = self.draw(OP_RANGE, &path, offset);
        self.before(&mut draw, "read", &path).await?;
        let data = self.inner.get_range(handle, offset, length).await?;
        self.after_read(&mut draw, &path, data)
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let path = format!("{}/{prefix}", kind.dir());
        let mut draw = self.draw(OP_LIST, &path, 0);
        self.before(&mut draw, "list", &path).await?;
        self.inner.list(kind, prefix).await
    }

    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
        let path = handle.relative_path();
        let mut draw = self.draw(OP_STAT, &path, 0);
        self.before(&mut draw, "stat", &path).await?;
        self.inner.stat(handle).await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let path = handle.relative_path();
        let mut draw = self.draw(OP_DELETE, &path, 0);
        self.before(&mut draw, "delete", &path).await?;
        self.inner.delete(handle).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalBackend, Retry, RetryPolicy};

    async fn local() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().await.unwrap();
        (dir, b)
    }

    fn handle(i: u32) -> Handle {
        Handle::new(Kind::Pack, format!("{i:08x}")).unwrap()
    }

    /// The outcome of each of 200 operations, as text.
    async fn outcomes(seed: u64) -> Vec<String> {
        let (_dir, b) = local().await;
        let f = Fault::new(b, FaultConfig::transient(seed, 0.2));
        let mut out = Vec::new();
        for i in 0..50 {
            let h = handle(i);
            out.push(format!(
                "{:?}",
                f.put(&h, Bytes::from(vec![7u8; 100])).await
            ));
            out.push(format!("{:?}", f.stat(&h).await.map(|o| o.size)));
            out.push(format!(
                "{:?}",
                f.get_range(&h, 10, 50).await.map(|d| d.len())
            ));
            out.push(format!("{:?}", f.get(&h).await.map(|d| d.len())));
        }
        out
    }

    #[tokio::test]
    async fn the_same_seed_makes_the_same_faults() {
        let a = outcomes(42).await;
        assert_eq!(a, outcomes(42).await);
        assert_ne!(a, outcomes(43).await);
        assert!(a.iter().any(|o| o.starts_with("Err")), "some faults");
        assert!(a.iter().any(|o| o.starts_with("Ok")), "some successes");
    }

    #[tokio::test]
    async fn each_kind_of_fault_happens_at_about_its_rate() {
        let (_dir, b) = local().await;
        let mut config = FaultConfig::none(7);
        config.truncated_read_rate = 0.3;
        let f = Fault::new(b, config);
        let h = handle(1);
        f.put(&h, Bytes::from(vec![1u8; 1000])).await.unwrap();
        let mut short = 0;
        for i in 0..500 {
            let d = f.get_range(&h, i, 100).await.unwrap();
            if d.len() < 100 {
                short += 1;
            }
        }
        assert!((100..200).contains(&short), "{short} truncated of 500");
        assert_eq!(f.stats().truncated_reads, short);
        assert_eq!(f.stats().errors, 0);
    }

    #[tokio::test]
    async fn dropped_writes_store_nothing_and_lost_acks_store_everything() {
        let (_dir, b) = local().await;
        let mut config = FaultConfig::none(3);
        config.dropped_write_rate = 1.0;
        let f = Fault::new(b.clone(), config);
        let h = handle(1);
        assert!(f
            .put(&h, Bytes::from_static(b"x"))
            .await
            .unwrap_err()
            .is_transient());
        assert!(b.get(&h).await.unwrap_err().is_not_found());
        let mut config = FaultConfig::none(3);
        config.lost_ack_rate = 1.0;
        let f = Fault::new(b.clone(), config);
        assert!(f
            .put(&h, Bytes::from_static(b"x"))
            .await
            .unwrap_err()
            .is_transient());
        assert_eq!(&b.get(&h).await.unwrap()[..], b"x");
    }

    #[tokio::test]
    async fn latency_is_added() {
        let (_dir, b) = local().await;
        let mut config = FaultConfig::none(5);
        config.max_latency = Duration::from_millis(20);
        let f = Fault::new(b, config);
        let start = std::time::Instant::now();
        for _ in 0..20 {
            let _ = f.stat(&handle(1)).await;
        }
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn retry_hides_twenty_percent_faults_completely() {
        let (_dir, b) = local().await;
        let f = Fault::new(b, FaultConfig::transient(11, 0.2));
        let policy = RetryPolicy {
            attempts: 30,
            base_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let r = Retry::with_policy(f, policy);
        for i in 0..100 {
            let h = handle(i);
            let data: Vec<u8> = (0..1000u32).map(|x| (x * i) as u8).collect();
            r.put(&h, Bytes::from(data.clone())).await.unwrap();
            assert_eq!(r.stat(&h).await.unwrap().size, 1000);
            assert_eq!(
                &r.get_range(&h, 100, 300).await.unwrap()[..],
                &data[100..400]
            );
            assert_eq!(&r.get(&h).await.unwrap()[..], &data[..]);
        }
        assert_eq!(r.list(Kind::Pack, "").await.unwrap().len(), 100);
        let s = r.inner().stats();
        assert!(s.errors > 0 && s.truncated_reads > 0 && s.dropped_writes > 0 && s.lost_acks > 0);
    }
}
