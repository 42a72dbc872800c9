//! Makes the hold's files and index agree at start, after whatever
//! interrupted the last run.
//!
//! - an entry whose file is missing is dropped (its bytes are gone);
//! - a file shorter than the entry's `received` lowers `received`;
//! - a file longer than `received` is truncated (unconfirmed bytes);
//! - a file without an entry is deleted (nobody is charged for it);
//! - anything in `hold/` that is not named like a shard is left alone
//!   and logged.

use std::{collections::HashSet, path::Path};

use redb::ReadableTable;

use super::{key_from_bytes, shard_path, Ledger, ShardEntry};
use crate::{
    state::{State, SHARDS},
    NodeError,
};
use kith_net::{ObjectTag, OwnerId, ShardKey};

pub(super) fn reconcile(state: &State, dir: &Path) -> Result<Ledger, NodeError> {
    let s = state;
    let mut ledger = Ledger::default();
    let mut known = HashSet::new();
    let tx = s.db.begin_write().map_err(|e| s.err(e))?;
    {
        let mut table = tx.open_table(SHARDS).map_err(|e| s.err(e))?;
        let mut fixes: Vec<(Vec<u8>, Option<ShardEntry>)> = Vec::new();
        for row in table.iter().map_err(|e| s.err(e))? {
            let (k, v) = row.map_err(|e| s.err(e))?;
            let kb = k.value().to_vec();
            let (Some(key), Ok(mut entry)) = (
                key_from_bytes(&kb),
                postcard::from_bytes::<ShardEntry>(v.value()),
            ) else {
                tracing::warn!("dropping an unreadable hold index entry");
                fixes.push((kb, None));
                continue;
            };
            let path = shard_path(dir, &key);
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && entry.received == 0 => 0,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "a held shard's file is missing; forgetting it");
                    fixes.push((kb, None));
                    continue;
                }
                Err(e) => return Err(NodeError::io(&path, e)),
            };
            if len < entry.received {
                tracing::warn!(path = %path.display(), len, received = entry.received, "a held shard's file is short");
                entry.received = len;
                fixes.push((kb.clone(), Some(entry.clone())));
            } else if len > entry.received {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| NodeError::io(&path, e))?;
                f.set_len(entry.received)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| NodeError::io(&path, e))?;
            }
            known.insert(key);
            ledger.add(&entry);
        }
        for (kb, fix) in fixes {
            match fix {
                None => {
                    table.remove(kb.as_slice()).map_err(|e| s.err(e))?;
                }
                Some(entry) => {
                    let bytes = postcard::to_stdvec(&entry)
                        .map_err(|e| NodeError::Control(e.to_string()))?;
                    table
                        .insert(kb.as_slice(), bytes.as_slice())
                        .map_err(|e| s.err(e))?;
                }
            }
        }
    }
    tx.commit().map_err(|e| s.err(e))?;
    remove_unknown_files(dir, &known)?;
    Ok(ledger)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

fn remove_unknown_files(dir: &Path, known: &HashSet<ShardKey>) -> Result<(), NodeError> {
    let entries = std::fs::read_dir(dir).map_err(|e| NodeError::io(dir, e))?;
    for owner_dir in entries.flatten() {
        let name = owner_dir.file_name().to_string_lossy().into_owned();
        let Some(owner) = parse_hex32(&name) else {
            tracing::warn!(name, "leaving a foreign entry in the hold folder alone");
            continue;
        };
        let Ok(files) = std::fs::read_dir(owner_dir.path()) else {
            continue;
        };
        let mut left = 0usize;
        for file in files.flatten() {
            let fname = file.file_name().to_string_lossy().into_owned();
            let parsed = fname.split_once('.').and_then(|(tag, index)| {
                Some(ShardKey {
                    owner: OwnerId(owner),
                    tag: ObjectTag(parse_hex32(tag)?),
                    index: index.parse().ok()?,
                })
            });
            match parsed {
                Some(key) if known.contains(&key) => left += 1,
                Some(_) => {
                    tracing::warn!(file = %file.path().display(), "removing a held file the index does not know");
                    let _ = std::fs::remove_file(file.path());
                }
                None => {
                    left += 1;
                    tracing::warn!(file = %file.path().display(), "leaving a foreign file in the hold folder alone");
                }
            }
        }
        if left == 0 {
            let _ = std::fs::remove_dir(owner_dir.path());
        }
    }
    Ok(())
}
