//! Locks and session markers: advisory coordination between processes that
//! share a repository.
//!
//! Both are small records sealed with the coordination key (which write-only
//! keys also hold, since backups take part in the protocol):
//! `header (kind 6 or 7) ‖ nonce ‖ E(postcard Record) ‖ tag`, AAD = header.
//! A lock is shared (backup commits, check) or exclusive (maintenance); an
//! exclusive lock conflicts with every other fresh lock and every fresh
//! session, a shared one only with fresh exclusive locks. A record is stale
//! when it was not refreshed within the staleness limit, or when it names a
//! process on this host that no longer runs. Taking a lock writes the record
//! first and looks for conflicts after, so two racing writers both back off
//! rather than both proceed.

use std::time::Duration;

use bytes::Bytes;
use kith_storage::{Handle, Kind};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::envelope::{self, FileKind};
use crate::repo::{host_name, now_ns, user_name, Repository};
use crate::{Error, Result};

/// Records older than this are stale unless refreshed.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its record.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// A lock or session record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Exclusive (maintenance) or shared.
    pub exclusive: bool,
    /// What the holder is doing, e.g. `backup`.
    pub purpose: String,
    /// Host of the holder.
    pub host: String,
    /// User of the holder.
    pub user: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When the record was first written, Unix nanoseconds.
    pub created: i64,
    /// When it was last refreshed, Unix nanoseconds.
    pub refreshed: i64,
}

impl Record {
    fn new(exclusive: bool, purpose: &str) -> Self {
        let now = now_ns();
        Record {
            exclusive,
            purpose: purpose.to_owned(),
            host: host_name(),
            user: user_name(),
            pid: std::process::id(),
            created: now,
            refreshed: now,
        }
    }

    /// True when the record no longer protects anything.
    pub fn is_stale(&self, stale_after: Duration) -> bool {
        let age_ns = now_ns().saturating_sub(self.refreshed);
        if age_ns > i64::try_from(stale_after.as_nanos()).unwrap_or(i64::MAX) {
            return true;
        }
        self.host == host_name() && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// "backup by me@laptop (pid 42), refreshed 3 minutes ago".
    pub fn describe(&self) -> String {
        let minutes = now_ns().saturating_sub(self.refreshed) / 60_000_000_000;
        format!(
            "{} {} by {}@{} (pid {}), refreshed {minutes} min ago",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.purpose,
            self.user,
            self.host,
            self.pid
        )
    }
}

fn file_kind(kind: Kind) -> FileKind {
    if kind == Kind::Session {
        FileKind::Session
    } else {
        FileKind::Lock
    }
}

fn encode(repo: &Repository, kind: Kind, record: &Record) -> Vec<u8> {
    encode_record(&repo.write_keys().coordination_key(), kind, record)
}

/// Encrypts a lock (`Kind::Lock`) or session (`Kind::Session`) record.
pub fn encode_record(key: &crypto::SymmetricKey, kind: Kind, record: &Record) -> Vec<u8> {
    let header = envelope::header(file_kind(kind));
    let mut out = header.to_vec();
    crypto::Cipher::new(key).seal_into(&header, &envelope::encode(record), &mut out);
    out
}

fn decode(repo: &Repository, kind: Kind, bytes: &[u8], name: &str) -> Result<Record> {
    decode_record(&repo.write_keys().coordination_key(), kind, bytes, name)
}

/// Decrypts and decodes a lock or session record.
pub fn decode_record(
    key: &crypto::SymmetricKey,
    kind: Kind,
    bytes: &[u8],
    name: &str,
) -> Result<Record> {
    let object = format!("{} {name}", kind.noun());
    let body = envelope::check(bytes, file_kind(kind), &object)?;
    let header = bytes
        .get(..envelope::HEADER_LEN)
        .ok_or_else(|| Error::corrupt(&object, "too short"))?;
    let plain = crypto::open(key, header, body)
        .map_err(|_| Error::corrupt(&object, "authentication failed"))?;
    envelope::decode(&plain, &object)
}

/// Every record of one kind with its name; unreadable ones are skipped
/// (a record another repository's key wrote protects nothing here).
pub async fn list(repo: &Repository, kind: Kind) -> Result<Vec<(String, Record)>> {
    let mut out = Vec::new();
    for o in repo.backend().list(kind, "").await? {
        match repo.backend().get(&o.handle).await {
            Ok(bytes) => match decode(repo, kind, &bytes, o.handle.name()) {
                Ok(r) => out.push((o.handle.name().to_owned(), r)),
                Err(e) => {
                    tracing::warn!(object = %o.handle, error = %e, "ignoring unreadable record")
                }
            },
            // Removed between the listing and the read: released meanwhile.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// How often a holder refreshes its record when others treat records older
/// than `stale_after` as stale: six times per period, so that a few missed
/// refreshes (a slow disk, a busy machine) do not make a live record stale.
pub fn refresh_every(stale_after: Duration) -> Duration {
    (stale_after / 6).clamp(Duration::from_millis(10), REFRESH_EVERY)
}

/// A held lock or session; release it with [`Held::release`].
#[derive(Debug)]
pub struct Held {
    handle: Handle,
    record: Record,
    /// When the record was last written, on the monotonic clock.
    written: std::time::Instant,
    /// Set once the holder went longer than half the staleness limit
    /// without refreshing (it was suspended, or starved): others may have
    /// treated the record as stale meanwhile.
    lapsed: bool,
}

impl Held {
    /// Rewrites the record with a fresh time.
    pub async fn refresh(&mut self, repo: &Repository) -> Result<()> {
        if self.age() > repo.stale_after() / 2 {
            self.lapsed = true;
        }
        self.record.refreshed = now_ns();
        let bytes = encode(repo, self.handle.kind, &self.record);
        repo.backend().put(&self.handle, Bytes::from(bytes)).await?;
        self.written = std::time::Instant::now();
        Ok(())
    }

    /// Time since the record was last written, by the monotonic clock or the
    /// wall clock, whichever says longer (the monotonic clock stops while
    /// the machine sleeps; the wall clock may jump).
    pub fn age(&self) -> Duration {
        let wall = now_ns().saturating_sub(self.record.refreshed);
        let wall = Duration::from_nanos(u64::try_from(wall).unwrap_or(0));
        self.written.elapsed().max(wall)
    }

    /// True once the holder went so long without refreshing that other
    /// processes may have treated its record as stale.
    pub fn lapsed(&self) -> bool {
        self.lapsed
    }

    /// Refreshes the record, then makes sure no conflicting fresh record
    /// appeared meanwhile (one that was taken while this one looked stale).
    pub async fn revalidate(&mut self, repo: &Repository) -> Result<()> {
        self.refresh(repo).await?;
        if let Some(r) = conflict(repo, self.name(), self.record.exclusive).await? {
            return Err(Error::Locked {
                holder: r.describe(),
            });
        }
        Ok(())
    }

    /// Removes the record.
    pub async fn release(self, repo: &Repository) -> Result<()> {
        repo.backend().delete(&self.handle).await?;
        Ok(())
    }

    /// The record's name.
    pub fn name(&self) -> &str {
        self.handle.name()
    }
}

async fn write_new(repo: &Repository, kind: Kind, record: Record) -> Result<Held> {
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    let handle = Handle::new(kind, hex::encode(id))?;
    repo.backend()
        .put(&handle, Bytes::from(encode(repo, kind, &record)))
        .await?;
    Ok(Held {
        handle,
        record,
        written: std::time::Instant::now(),
        lapsed: false,
    })
}

/// Marks a running backup.
pub async fn start_session(repo: &Repository, purpose: &str) -> Result<Held> {
    write_new(repo, Kind::Session, Record::new(false, purpose)).await
}

/// The first fresh record other than `own` that conflicts with a lock of
/// the given kind.
async fn conflict(repo: &Repository, own: &str, exclusive: bool) -> Result<Option<Record>> {
    let stale_after = repo.stale_after();
    for (name, r) in list(repo, Kind::Lock).await? {
        if name != own && (exclusive || r.exclusive) && !r.is_stale(stale_after) {
            return Ok(Some(r));
        }
    }
    if exclusive {
        return Ok(list(repo, Kind::Session)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| !r.is_stale(stale_after)));
    }
    Ok(None)
}

/// Takes a lock, or fails with [`Error::Locked`] naming the holder.
/// Records older than the repository's staleness limit do not count;
/// `_stale_after` is kept for callers that name one explicitly, and must
/// equal [`Repository::stale_after`].
pub async fn lock(
    repo: &Repository,
    exclusive: bool,
    purpose: &str,
    _stale_after: Duration,
) -> Result<Held> {
    let held = write_new(repo, Kind::Lock, Record::new(exclusive, purpose)).await?;
    match conflict(repo, held.name(), exclusive).await {
        Ok(None) => Ok(held),
        Ok(Some(r)) => {
            held.release(repo).await?;
            Err(Error::Locked {
                holder: r.describe(),
            })
        }
        Err(e) => {
            let _ = held.release(repo).await;
            Err(e)
        }
    }
}

/// Like [`lock`], but while the repository is locked by someone else,
/// tries again every so often for up to `patience`.
pub async fn lock_patiently(
    repo: &Repository,
    exclusive: bool,
    purpose: &str,
    patience: Duration,
) -> Result<Held> {
    let started = std::time::Instant::now();
    let pause = (repo.stale_after() / 10).clamp(Duration::from_millis(20), Duration::from_secs(5));
    loop {
        match lock(repo, exclusive, purpose, repo.stale_after()).await {
            Err(Error::Locked { .. }) if started.elapsed() + pause < patience => {
                // Two racing lockers both back off; a random pause keeps them
                // from meeting again.
                let jitter = rand::random::<u64>() % (pause.as_millis() as u64 + 1);
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
            }
            other => return other,
        }
    }
}

/// Runs `f` under a lock, releasing it afterwards whatever `f` returned;
/// `f`'s error wins over a failed release.
pub async fn with_lock<T, F, Fut>(
    repo: &Repository,
    exclusive: bool,
    purpose: &str,
    f: F,
) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let held = lock(repo, exclusive, purpose, repo.stale_after()).await?;
    let result = f().await;
    let released = held.release(repo).await;
    let value = result?;
    released?;
    Ok(value)
}

/// Removes stale locks and sessions (all of them with `all`); returns how
/// many were removed.
pub async fn unlock(repo: &Repository, all: bool, stale_after: Duration) -> Result<usize> {
    let mut removed = 0;
    for kind in [Kind::Lock, Kind::Session] {
        for (name, r) in list(repo, kind).await? {
            if all || r.is_stale(stale_after) {
                repo.backend().delete(&Handle::new(kind, name)?).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// What a refresher learned about a held record, for the work it guards.
#[derive(Debug, Default)]
pub struct Watch {
    lapsed: std::sync::atomic::AtomicBool,
    refreshed: std::sync::atomic::AtomicI64,
}

impl Watch {
    fn note(&self, held: &Held) {
        use std::sync::atomic::Ordering;
        if held.lapsed() {
            self.lapsed.store(true, Ordering::SeqCst);
        }
        self.refreshed
            .store(held.record.refreshed, Ordering::SeqCst);
    }

    /// True when the record was refreshed within half the staleness limit
    /// and never went long enough without a refresh that others could have
    /// taken it for abandoned: what the holder read under it still holds.
    pub fn is_current(&self, stale_after: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let age = now_ns().saturating_sub(self.refreshed.load(Ordering::SeqCst));
        let limit = i64::try_from((stale_after / 2).as_nanos()).unwrap_or(i64::MAX);
        !self.lapsed.load(Ordering::SeqCst) && age < limit
    }
}

/// Runs `work` while refreshing `held` on schedule; `watch` tells the work
/// whether the record stayed fresh throughout.
pub async fn refreshing<T>(
    repo: &Repository,
    held: &mut Held,
    watch: &Watch,
    work: impl std::future::Future<Output = T>,
) -> T {
    let every = refresh_every(repo.stale_after());
    watch.note(held);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let work = async {
        let r = work.await;
        let _ = stop_tx.send(());
        r
    };
    let refresher = async {
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep(every) => {
                    if let Err(e) = held.refresh(repo).await {
                        tracing::warn!(error = %e, "cannot refresh a lock or session record");
                    }
                    watch.note(held);
                }
            }
        }
    };
    let (r, ()) = tokio::join!(work, refresher);
    r
}

/// The first fresh record that conflicts with a held exclusive lock or, for
/// a shared one, the first fresh exclusive lock; `None` when there is none.
pub async fn find_conflict(repo: &Repository, held: &Held) -> Result<Option<Record>> {
    conflict(repo, held.name(), held.record.exclusive).await
}

/// Time since a moment, by the monotonic clock or the wall clock, whichever
/// says longer: the monotonic clock stops while the machine sleeps, and a
/// suspended process must see the time it lost.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch {
    at: std::time::Instant,
    wall: i64,
}

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Self {
        Stopwatch {
            at: std::time::Instant::now(),
            wall: now_ns(),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        let wall = now_ns().saturating_sub(self.wall);
        self.at
            .elapsed()
            .max(Duration::from_nanos(u64::try_from(wall).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_refresh_six_times_per_staleness_period_within_bounds() {
        assert_eq!(
            refresh_every(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert_eq!(refresh_every(DEFAULT_STALE_AFTER), REFRESH_EVERY);
        assert_eq!(
            refresh_every(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn a_watch_is_current_only_while_refreshed_recently_and_never_lapsed() {
        let w = Watch::default();
        assert!(!w.is_current(Duration::from_secs(60)), "never refreshed");
        w.refreshed
            .store(now_ns(), std::sync::atomic::Ordering::SeqCst);
        assert!(w.is_current(Duration::from_secs(60)));
        assert!(
            !w.is_current(Duration::from_nanos(1)),
            "older than half the limit"
        );
        w.lapsed.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(
            !w.is_current(Duration::from_secs(60)),
            "lapsed once, never current again"
        );
    }

    #[test]
    fn a_stopwatch_counts_from_its_start() {
        let s = Stopwatch::start();
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.elapsed() >= Duration::from_millis(5));
    }
}
