//! The hold: other owners' shards kept here as opaque files, with their
//! index in the node database and a ledger of bytes held per peer.
//!
//! The index is the record. A shard is first reserved in the index (its
//! whole length counts against the quota from then on), then its bytes
//! are written to `hold/<owner>/<tag>.<index>` and synced, and only then
//! does the index advance `received`. So after a crash a file may hold
//! more bytes than the index says, never fewer; [`Hold::open`] reconciles
//! the two (truncating files, dropping entries whose file is gone, and
//! deleting files the index does not know).

pub(crate) mod direct;
mod reconcile;
pub(crate) mod writeback;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use kith_net::{
    ErrorCode, ErrorReply, Holding, ObjectTag, OwnerId, PeerId, QuotaReport, ShardKey, ShardStatus,
};
use serde::{Deserialize, Serialize};

use crate::{
    state::{now_secs, State, SHARDS},
    NodeError,
};

/// What the index records about one held shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The shard's complete length, reserved against the quota.
    pub total_len: u64,
    /// Bytes held contiguously from offset 0 (equal to `total_len` once complete).
    pub received: u64,
    /// The peer the bytes are charged to (peer id bytes).
    pub from: Vec<u8>,
    /// When the shard was first stored, seconds since the Unix epoch.
    pub stored_at: u64,
}

impl ShardEntry {
    fn complete(&self) -> bool {
        self.received == self.total_len
    }

    fn peer(&self) -> Option<PeerId> {
        PeerId::from_bytes(&self.from).ok()
    }
}

/// The index key of a shard.
pub(crate) fn key_bytes(key: &ShardKey) -> [u8; 66] {
    let mut out = [0u8; 66];
    out[..32].copy_from_slice(&key.owner.0);
    out[32..64].copy_from_slice(&key.tag.0);
    out[64..].copy_from_slice(&key.index.to_be_bytes());
    out
}

pub(crate) fn key_from_bytes(bytes: &[u8]) -> Option<ShardKey> {
    let owner: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
    let tag: [u8; 32] = bytes.get(32..64)?.try_into().ok()?;
    let index: [u8; 2] = bytes.get(64..66)?.try_into().ok()?;
    (bytes.len() == 66).then(|| ShardKey {
        owner: OwnerId(owner),
        tag: ObjectTag(tag),
        index: u16::from_be_bytes(index),
    })
}

/// Bytes held, in total and per peer charged.
#[derive(Debug, Default)]
struct Ledger {
    total: u64,
    by_peer: HashMap<PeerId, u64>,
}

impl Ledger {
    fn add(&mut self, entry: &ShardEntry) {
        self.total += entry.total_len;
        if let Some(p) = entry.peer() {
            *self.by_peer.entry(p).or_default() += entry.total_len;
        }
    }

    fn remove(&mut self, entry: &ShardEntry) {
        self.total = self.total.saturating_sub(entry.total_len);
        if let Some(p) = entry.peer() {
            if let Some(n) = self.by_peer.get_mut(&p) {
                *n = n.saturating_sub(entry.total_len);
            }
        }
    }
}

/// A store in progress: the shard is reserved and marked busy until the
/// ticket is finished or dropped.
#[derive(Debug)]
pub(crate) struct StoreTicket {
    hold: Arc<Hold>,
    key: ShardKey,
    /// Where the incoming bytes start.
    pub(crate) offset: u64,
    /// The file to write them to.
    pub(crate) path: PathBuf,
}

impl Drop for StoreTicket {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.hold.busy.lock() {
            busy.remove(&self.key);
        }
    }
}

/// Others' shards held here.
#[derive(Debug)]
pub struct Hold {
    state: Arc<State>,
    dir: PathBuf,
    quota: u64,
    ledger: Mutex<Ledger>,
    busy: Mutex<HashSet<ShardKey>>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(code, message)
}

fn internal(e: &NodeError) -> ErrorReply {
    tracing::error!(%e, "hold failure");
    refuse(ErrorCode::Internal, "the holder failed to update its hold")
}

impl Hold {
    /// Opens the hold in `dir`, reconciling its files with the index.
    pub(crate) fn open(state: Arc<State>, dir: PathBuf, quota: u64) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
        let ledger = reconcile::reconcile(&state, &dir)?;
        Ok(Self {
            state,
            dir,
            quota,
            ledger: Mutex::new(ledger),
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// The file of a shard.
    pub(crate) fn path(&self, key: &ShardKey) -> PathBuf {
        shard_path(&self.dir, key)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A poisoned ledger is still consistent: every update is one add or remove.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held, all peers together.
    pub fn total(&self) -> u64 {
        self.ledger().total
    }

    /// Bytes held for (charged to) `peer`.
    pub fn held_for(&self, peer: &PeerId) -> u64 {
        self.ledger().by_peer.get(peer).copied().unwrap_or(0)
    }

    /// The quota report for `peer`; strangers are offered nothing.
    pub(crate) fn quota_report(&self, peer: &PeerId, friend: bool, always_on: bool) -> QuotaReport {
        let ledger = self.ledger();
        QuotaReport {
            offered: if friend { self.quota } else { 0 },
            used: ledger.by_peer.get(peer).copied().unwrap_or(0),
            free: self.quota.saturating_sub(ledger.total),
            always_on,
        }
    }

    /// The index entry of a shard.
    pub fn entry(&self, key: &ShardKey) -> Result<Option<ShardEntry>, NodeError> {
        let s = &self.state;
        let tx = s.db.begin_read().map_err(|e| s.err(e))?;
        let table = tx.open_table(SHARDS).map_err(|e| s.err(e))?;
        let kb = key_bytes(key);
        let entry = table
            .get(kb.as_slice())
            .map_err(|e| s.err(e))?
            .and_then(|v| postcard::from_bytes::<ShardEntry>(v.value()).ok());
        Ok(entry)
    }

    /// How much of a shard is held.
    pub(crate) fn status(&self, key: &ShardKey) -> Result<ShardStatus, NodeError> {
        Ok(match self.entry(key)? {
            None => ShardStatus::Absent,
            Some(e) if e.complete() => ShardStatus::Complete { len: e.total_len },
            Some(e) => ShardStatus::Partial {
                received: e.received,
                total_len: e.total_len,
            },
        })
    }

    fn put_entry(&self, key: &ShardKey, entry: &ShardEntry) -> Result<(), NodeError> {
        let s = &self.state;
        let bytes = postcard::to_stdvec(entry).map_err(|e| NodeError::Control(e.to_string()))?;
        let tx = s.db.begin_write().map_err(|e| s.err(e))?;
        {
            let mut table = tx.open_table(SHARDS).map_err(|e| s.err(e))?;
            let kb = key_bytes(key);
            table
                .insert(kb.as_slice(), bytes.as_slice())
                .map_err(|e| s.err(e))?;
        }
        tx.commit().map_err(|e| s.err(e))
    }

    /// Reserves a store of bytes `offset..offset + len` of a shard
    /// `total_len` long from `peer`, or says why not.
    pub(crate) fn begin_store(
        self: &Arc<Self>,
        peer: PeerId,
        key: ShardKey,
        total_len: u64,
        offset: u64,
    ) -> Result<StoreTicket, ErrorReply> {
        {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(key) {
                return Err(refuse(
                    ErrorCode::Busy,
                    "this shard is being stored right now",
                ));
            }
        }
        // From here on the ticket clears the busy mark when dropped.
        let ticket = StoreTicket {
            hold: Arc::clone(self),
            key,
            offset,
            path: self.path(&key),
        };
        let old = self.entry(&key).map_err(|e| internal(&e))?;
        let mut entry = match &old {
            Some(e) if e.total_len == total_len => {
                if offset > e.received {
                    return Err(refuse(
                        ErrorCode::Malformed,
                        format!(
                            "offset {offset} is past the {} bytes held; resume from there",
                            e.received
                        ),
                    ));
                }
                ShardEntry {
                    received: e.received.min(offset),
                    ..e.clone()
                }
            }
            _ if offset != 0 => {
                return Err(refuse(
                    ErrorCode::Malformed,
                    "no upload of this shard to resume; store from offset 0",
                ))
            }
            _ => ShardEntry {
                total_len,
                received: 0,
                from: peer.to_bytes(),
                stored_at: now_secs(),
            },
        };
        entry.from = peer.to_bytes();
        {
            let mut ledger = self.ledger();
            let old_len = old.as_ref().map_or(0, |e| e.total_len);
            let after = ledger
                .total
                .saturating_sub(old_len)
                .saturating_add(total_len);
            if after > self.quota {
                return Err(refuse(
                    ErrorCode::OverQuota,
                    format!(
                        "a shard of {total_len} bytes would exceed the quota of {} bytes ({} held)",
                        self.quota, ledger.total
                    ),
                ));
            }
            self.put_entry(&key, &entry).map_err(|e| internal(&e))?;
            if let Some(old) = &old {
                ledger.remove(old);
            }
            ledger.add(&entry);
        }
        Ok(ticket)
    }

    /// Records that the ticket's bytes up to `end` are written and synced;
    /// returns the bytes now held contiguously.
    pub(crate) fn finish_store(&self, ticket: &StoreTicket, end: u64) -> Result<u64, NodeError> {
        let Some(mut entry) = self.entry(&ticket.key)? else {
            // Deleted by its owner while the bytes came in.
            return Ok(0);
        };
        if ticket.offset <= entry.received {
            entry.received = end.min(entry.total_len).max(entry.received);
        }
        self.put_entry(&ticket.key, &entry)?;
        Ok(entry.received)
    }

    /// Whether any shard (complete or not) is held for `owner`.
    pub(crate) fn knows_owner(&self, owner: &OwnerId) -> Result<bool, NodeError> {
        let s = &self.state;
        let tx = s.db.begin_read().map_err(|e| s.err(e))?;
        let table = tx.open_table(SHARDS).map_err(|e| s.err(e))?;
        let (lo, hi) = owner_range(owner);
        let mut range = table
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(|e| s.err(e))?;
        Ok(range.next().is_some())
    }

    /// Up to `limit` complete shards of `owner` after `after`, in
    /// `(tag, index)` order, and whether more follow.
    pub(crate) fn list(
        &self,
        owner: &OwnerId,
        after: Option<(ObjectTag, u16)>,
        limit: usize,
    ) -> Result<(Vec<Holding>, bool), NodeError> {
        let s = &self.state;
        let tx = s.db.begin_read().map_err(|e| s.err(e))?;
        let table = tx.open_table(SHARDS).map_err(|e| s.err(e))?;
        let (lo, hi) = owner_range(owner);
        let mut out = Vec::new();
        let start = match after {
            Some((tag, index)) => key_bytes(&ShardKey {
                owner: *owner,
                tag,
                index,
            })
            .to_vec(),
            None => lo.to_vec(),
        };
        for row in table
            .range(start.as_slice()..=hi.as_slice())
            .map_err(|e| s.err(e))?
        {
            let (k, v) = row.map_err(|e| s.err(e))?;
            let Some(key) = key_from_bytes(k.value()) else {
                continue;
            };
            if after.is_some_and(|(t, i)| (key.tag, key.index) <= (t, i)) {
                continue;
            }
            let Ok(entry) = postcard::from_bytes::<ShardEntry>(v.value()) else {
                continue;
            };
            if !entry.complete() {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(Holding {
                tag: key.tag,
                index: key.index,
                len: entry.total_len,
            });
        }
        Ok((out, false))
    }

    /// Deletes shards of `owner`; returns how many existed.
    pub(crate) fn delete(
        &self,
        owner: &OwnerId,
        shards: &[(ObjectTag, u16)],
    ) -> Result<u32, NodeError> {
        let s = &self.state;
        let mut removed = Vec::new();
        let tx = s.db.begin_write().map_err(|e| s.err(e))?;
        {
            let mut table = tx.open_table(SHARDS).map_err(|e| s.err(e))?;
            for (tag, index) in shards {
                let key = ShardKey {
                    owner: *owner,
                    tag: *tag,
                    index: *index,
                };
                let kb = key_bytes(&key);
                let old = table.remove(kb.as_slice()).map_err(|e| s.err(e))?;
                if let Some(entry) =
                    old.and_then(|v| postcard::from_bytes::<ShardEntry>(v.value()).ok())
                {
                    removed.push((key, entry));
                }
            }
        }
        tx.commit().map_err(|e| s.err(e))?;
        let mut ledger = self.ledger();
        for (key, entry) in &removed {
            ledger.remove(entry);
            let path = self.path(key);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    // The next start removes files without an index entry.
                    tracing::warn!(path = %path.display(), %e, "cannot remove a deleted shard's file");
                }
            }
        }
        Ok(u32::try_from(removed.len()).unwrap_or(u32::MAX))
    }
}

fn owner_range(owner: &OwnerId) -> ([u8; 66], [u8; 66]) {
    let mut lo = [0u8; 66];
    lo[..32].copy_from_slice(&owner.0);
    let mut hi = [0xffu8; 66];
    hi[..32].copy_from_slice(&owner.0);
    (lo, hi)
}

/// `hold/<owner hex>/<tag hex>.<index>`.
pub(crate) fn shard_path(dir: &std::path::Path, key: &ShardKey) -> PathBuf {
    dir.join(hex::encode(key.owner.0))
        .join(format!("{}.{}", hex::encode(key.tag.0), key.index))
}

#[cfg(test)]
mod tests;
