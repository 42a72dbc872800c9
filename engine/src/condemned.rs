//! Condemnation records: the packs a prune found unused and will delete
//! once the grace period has passed (two-step deletion).
//!
//! A record is `header (kind 8) ‖ nonce ‖ E(postcard Condemnation) ‖ tag`
//! under the coordination key with the header as AAD, so write-only keys,
//! whose backups must not rely on a condemned pack, can read it too. Its
//! name is the BLAKE3 of its bytes. Records are written once; a prune
//! replaces them by writing the new record before deleting the old ones, so
//! a crash leaves a pack condemned twice, never not at all.

use std::collections::HashMap;

use bytes::Bytes;
use kith_storage::{Handle, Kind};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::envelope::{self, FileKind};
use crate::id::{hash_of, PackId};
use crate::repo::Repository;
use crate::{Error, Result};

/// One condemned pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CondemnedPack {
    /// The pack.
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// When it was condemned, Unix nanoseconds (the grace period runs from here).
    pub condemned: i64,
}

/// A condemnation record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condemnation {
    /// When the record was written, Unix nanoseconds.
    pub created: i64,
    /// The host that wrote it.
    pub host: String,
    /// The packs it condemns.
    pub packs: Vec<CondemnedPack>,
}

impl Condemnation {
    /// Encrypts under the coordination key.
    pub fn to_bytes(&self, key: &crypto::SymmetricKey) -> Vec<u8> {
        let header = envelope::header(FileKind::Condemned);
        let mut out = header.to_vec();
        crypto::Cipher::new(key).seal_into(&header, &envelope::encode(self), &mut out);
        out
    }

    /// Decrypts and decodes.
    pub fn from_bytes(key: &crypto::SymmetricKey, bytes: &[u8], name: &str) -> Result<Self> {
        let object = format!("condemnation record {name}");
        let body = envelope::check(bytes, FileKind::Condemned, &object)?;
        let header = bytes
            .get(..envelope::HEADER_LEN)
            .ok_or_else(|| Error::corrupt(&object, "too short"))?;
        let plain = crypto::open(key, header, body)
            .map_err(|_| Error::corrupt(&object, "authentication failed"))?;
        envelope::decode(&plain, &object)
    }
}

/// How many times a listing is read again because a record vanished
/// between the listing and its read.
const LIST_ATTEMPTS: usize = 8;

/// Every readable record with its name, and the errors of the others.
///
/// A prune replaces records by writing the new one before deleting the old
/// ones, so a record that vanished between the listing and its read was
/// replaced by one this listing missed: the whole listing is read again.
/// Skipping it instead would report its packs as not condemned.
pub async fn list(repo: &Repository) -> Result<(Vec<(String, Condemnation)>, Vec<Error>)> {
    let key = repo.write_keys().coordination_key();
    for _ in 0..LIST_ATTEMPTS {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut vanished = false;
        for o in repo.backend().list(Kind::Condemned, "").await? {
            match repo.backend().get(&o.handle).await {
                Ok(bytes) => match Condemnation::from_bytes(&key, &bytes, o.handle.name()) {
                    Ok(c) => out.push((o.handle.name().to_owned(), c)),
                    Err(e) => errors.push(e),
                },
                Err(e) if e.is_not_found() => {
                    vanished = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !vanished {
            return Ok((out, errors));
        }
    }
    Err(Error::Task(
        "the condemnation records kept changing while they were read (prunes running back to back); try again"
            .into(),
    ))
}

/// Packs that are present and not condemned. The records are read before
/// the listing: a pack leaves the records only once deleted, so a pack that
/// was condemned before this call is either in the records or not listed.
pub async fn alive_packs(repo: &Repository) -> Result<std::collections::HashSet<PackId>> {
    let condemned = condemned_packs(repo).await?;
    Ok(repo
        .backend()
        .list(Kind::Pack, "")
        .await?
        .into_iter()
        .filter_map(|o| PackId::from_hex(o.handle.name()).ok())
        .filter(|id| !condemned.contains_key(id))
        .collect())
}

/// Every condemned pack, with the earliest time it was condemned.
pub async fn condemned_packs(repo: &Repository) -> Result<HashMap<PackId, CondemnedPack>> {
    let (records, errors) = list(repo).await?;
    for e in errors {
        tracing::warn!(error = %e, "ignoring an unreadable condemnation record");
    }
    Ok(merge(records.iter().map(|(_, c)| c)))
}

/// The union of records; a pack condemned twice keeps its earliest time.
pub fn merge<'a>(
    records: impl Iterator<Item = &'a Condemnation>,
) -> HashMap<PackId, CondemnedPack> {
    let mut out: HashMap<PackId, CondemnedPack> = HashMap::new();
    for r in records {
        for p in &r.packs {
            out.entry(p.id)
                .and_modify(|e| e.condemned = e.condemned.min(p.condemned))
                .or_insert(*p);
        }
    }
    out
}

/// Stores a record; returns its name.
pub async fn write(repo: &Repository, record: &Condemnation) -> Result<String> {
    let bytes = record.to_bytes(&repo.write_keys().coordination_key());
    let name = hex::encode(hash_of(&bytes));
    repo.backend()
        .put(
            &Handle::new(Kind::Condemned, name.clone())?,
            Bytes::from(bytes),
        )
        .await?;
    Ok(name)
}

/// Removes a record.
pub async fn delete(repo: &Repository, name: &str) -> Result<()> {
    repo.backend()
        .delete(&Handle::new(Kind::Condemned, name)?)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(packs: Vec<(u8, u64, i64)>) -> Condemnation {
        Condemnation {
            created: 5,
            host: "h".into(),
            packs: packs
                .into_iter()
                .map(|(i, size, condemned)| CondemnedPack {
                    id: PackId([i; 32]),
                    size,
                    condemned,
                })
                .collect(),
        }
    }

    /// A backend on which a prune replaces a condemnation record (new one
    /// written, old one deleted) between a listing and the read of the old one.
    #[derive(Debug)]
    struct ReplacedWhileRead {
        inner: kith_storage::LocalBackend,
        replacement: std::sync::Mutex<Option<(Handle, Bytes)>>,
    }

    #[async_trait::async_trait]
    impl kith_storage::Backend for ReplacedWhileRead {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn parallel_transfers(&self) -> usize {
            1
        }
        fn read_size(&self) -> u64 {
            1 << 20
        }
        async fn create(&self) -> kith_storage::Result<()> {
            self.inner.create().await
        }
        async fn put(&self, h: &Handle, data: Bytes) -> kith_storage::Result<()> {
            self.inner.put(h, data).await
        }
        async fn get(&self, h: &Handle) -> kith_storage::Result<Bytes> {
            let replace = if h.kind == Kind::Condemned {
                self.replacement.lock().unwrap().take()
            } else {
                None
            };
            if let Some((new, bytes)) = replace {
                self.inner.put(&new, bytes).await?;
                self.inner.delete(h).await?;
            }
            self.inner.get(h).await
        }
        async fn get_range(&self, h: &Handle, o: u64, l: u64) -> kith_storage::Result<Bytes> {
            self.inner.get_range(h, o, l).await
        }
        async fn list(
            &self,
            k: Kind,
            p: &str,
        ) -> kith_storage::Result<Vec<kith_storage::ObjectInfo>> {
            self.inner.list(k, p).await
        }
        async fn stat(&self, h: &Handle) -> kith_storage::Result<kith_storage::ObjectInfo> {
            self.inner.stat(h).await
        }
        async fn delete(&self, h: &Handle) -> kith_storage::Result<()> {
            self.inner.delete(h).await
        }
    }

    #[tokio::test]
    async fn a_record_replaced_during_the_listing_still_counts_its_packs() {
        let dir = tempfile::tempdir().unwrap();
        let backend = std::sync::Arc::new(ReplacedWhileRead {
            inner: kith_storage::LocalBackend::new(dir.path().join("repo")),
            replacement: std::sync::Mutex::new(None),
        });
        let fast = crate::KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let (repo, _) = Repository::init(
            backend.clone(),
            "pw",
            &crate::InitOptions::default().kdf(fast),
            None,
        )
        .await
        .unwrap();
        write(&repo, &record(vec![(1, 10, 100)])).await.unwrap();
        // The prune's new record keeps pack 1 and adds pack 2.
        let newer = record(vec![(1, 10, 100), (2, 20, 200)]);
        let bytes = newer.to_bytes(&repo.write_keys().coordination_key());
        let handle = Handle::new(Kind::Condemned, hex::encode(hash_of(&bytes))).unwrap();
        *backend.replacement.lock().unwrap() = Some((handle, Bytes::from(bytes)));

        let packs = condemned_packs(&repo).await.unwrap();
        assert!(packs.contains_key(&PackId([1; 32])));
        assert!(
            packs.contains_key(&PackId([2; 32])),
            "the new record is read"
        );
    }

    proptest! {
        #[test]
        fn records_round_trip_and_refuse_the_wrong_key_or_any_flip(
            packs in proptest::collection::vec((any::<u8>(), any::<u64>(), any::<i64>()), 0..8),
            flip in any::<prop::sample::Index>(),
        ) {
            let key = crypto::SymmetricKey::from_bytes([3; 32]);
            let r = record(packs);
            let bytes = r.to_bytes(&key);
            prop_assert_eq!(Condemnation::from_bytes(&key, &bytes, "x").unwrap(), r);
            let other = crypto::SymmetricKey::from_bytes([4; 32]);
            prop_assert!(Condemnation::from_bytes(&other, &bytes, "x").is_err());
            let mut bad = bytes.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1;
            prop_assert!(Condemnation::from_bytes(&key, &bad, "x").is_err());
            for n in 0..bytes.len() {
                prop_assert!(Condemnation::from_bytes(&key, &bytes[..n], "x").is_err());
            }
        }
    }

    #[test]
    fn merging_keeps_the_earliest_condemnation() {
        let a = record(vec![(1, 10, 100), (2, 20, 50)]);
        let b = record(vec![(1, 10, 30)]);
        let m = merge([&a, &b].into_iter());
        assert_eq!(m.len(), 2);
        assert_eq!(m[&PackId([1; 32])].condemned, 30);
        assert_eq!(m[&PackId([2; 32])].condemned, 50);
    }
}
