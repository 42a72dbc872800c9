//! [`PeerBackend`]: a repository stored on peers, behind the same
//! [`Backend`] trait as a local folder, SFTP or S3, so the engine works on
//! it unchanged.
//!
//! Every object is one [`ObjectStore`] object (erasure-coded shards on
//! peers). One wrinkle: `Repository::init` creates the master secret, and
//! the owner keys that name objects on peers derive from it, so the store
//! cannot exist before init has run. A backend made with
//! [`PeerBackend::staging`] keeps init's writes (a key file and the config)
//! in memory; [`PeerBackend::attach`] then stores them on peers and
//! serves everything from the object store from then on.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use kith_storage::{Backend, Error, Handle, Kind, ObjectInfo, Result};
use tokio::sync::RwLock;

use crate::objects::{ObjectError, ObjectStore};
use crate::transport::ShardTransport;

enum State<T: ShardTransport> {
    Staging(BTreeMap<Handle, Bytes>),
    Open(Arc<ObjectStore<T>>),
}

/// A [`Backend`] over an [`ObjectStore`].
pub struct PeerBackend<T: ShardTransport> {
    state: RwLock<State<T>>,
}

impl<T: ShardTransport> std::fmt::Debug for PeerBackend<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerBackend")
    }
}

/// How ranged reads on peers are sized: a round trip per read makes whole
/// packs the right unit, as on S3. Packs of the default 16 MiB run to about
/// 20 MiB; a read must not cut one in two, since with a data shard missing
/// each part would fetch and rebuild the whole pack.
const READ_SIZE: u64 = 64 << 20;

impl<T: ShardTransport> PeerBackend<T> {
    /// A backend over an open object store.
    pub fn new(store: ObjectStore<T>) -> Self {
        Self {
            state: RwLock::new(State::Open(Arc::new(store))),
        }
    }

    /// Opens the object store of the repository whose master secret is
    /// `master` over `transport`, with its placement map in `cache_dir`
    /// (rebuilt from the holders on a fresh machine), and serves it.
    pub async fn open(
        transport: T,
        master: &kith_engine::MasterSecret,
        cache_dir: &std::path::Path,
    ) -> std::result::Result<Self, ObjectError> {
        let keys = crate::objects::OwnerKeys::derive(master)?;
        let store = ObjectStore::open(
            transport,
            keys,
            cache_dir,
            crate::objects::StoreOptions::default(),
        )
        .await?;
        Ok(Self::new(store))
    }

    /// A backend that keeps writes in memory until [`PeerBackend::attach`]:
    /// for `Repository::init`, which creates the master secret that the
    /// object store's keys derive from.
    pub fn staging() -> Self {
        Self {
            state: RwLock::new(State::Staging(BTreeMap::new())),
        }
    }

    /// Stores what was written while staging in `store` and serves every
    /// later request from it. On error nothing changes and attach can be
    /// tried again.
    pub async fn attach(&self, store: ObjectStore<T>) -> std::result::Result<(), ObjectError> {
        let mut state = self.state.write().await;
        if let State::Staging(staged) = &*state {
            store.mark_new().await?;
            for (handle, bytes) in staged {
                store.put(handle, bytes.clone()).await?;
            }
        }
        *state = State::Open(Arc::new(store));
        Ok(())
    }

    /// The object store, once attached.
    pub async fn store(&self) -> Option<Arc<ObjectStore<T>>> {
        match &*self.state.read().await {
            State::Open(s) => Some(s.clone()),
            State::Staging(_) => None,
        }
    }
}

/// Maps an object-store error to the storage error the engine branches on.
fn storage_error(op: &'static str, handle: Option<&Handle>, e: ObjectError) -> Error {
    match e {
        ObjectError::NotFound(h) => Error::NotFound(h),
        ObjectError::OutOfRange {
            name, offset, len, ..
        } => Error::ShortRead {
            handle: name,
            offset,
            wanted: len,
        },
        e => Error::Remote {
            op,
            path: handle.map(Handle::relative_path).unwrap_or_default(),
            transient: e.is_transient(),
            message: e.to_string(),
        },
    }
}

#[async_trait]
impl<T: ShardTransport> Backend for PeerBackend<T> {
    fn location(&self) -> String {
        match self.state.try_read().as_deref() {
            Ok(State::Open(s)) => {
                let id = s.keys().owner_id();
                let hex: String = id.0.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("peers:// (owner {hex})")
            }
            _ => "peers://".to_owned(),
        }
    }

    fn parallel_transfers(&self) -> usize {
        // Each transfer is n shard uploads to n peers at once already.
        4
    }

    fn read_size(&self) -> u64 {
        READ_SIZE
    }

    async fn create(&self) -> Result<()> {
        // Peers need no layout; a repository exists once its config does.
        Ok(())
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
        let store = match &mut *self.state.write().await {
            State::Staging(staged) => {
                staged.insert(handle.clone(), data);
                return Ok(());
            }
            State::Open(s) => s.clone(),
        };
        store
            .put(handle, data)
            .await
            .map_err(|e| storage_error("put", Some(handle), e))
    }

    async fn get(&self, handle: &Handle) -> Result<Bytes> {
        let store = match &*self.state.read().await {
            State::Staging(staged) => {
                return staged
                    .get(handle)
                    .cloned()
                    .ok_or_else(|| Error::NotFound(handle.clone()))
            }
            State::Open(s) => s.clone(),
        };
        store
            .get(handle)
            .await
            .map_err(|e| storage_error("get", Some(handle), e))
    }

    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
        let store = match &*self.state.read().await {
            State::Staging(staged) => {
                let bytes = staged
                    .get(handle)
                    .ok_or_else(|| Error::NotFound(handle.clone()))?;
                let short = || Error::ShortRead {
                    handle: handle.clone(),
                    offset,
                    wanted: length,
                };
                let start = usize::try_from(offset).map_err(|_| short())?;
                let end = offset
                    .checked_add(length)
                    .and_then(|e| usize::try_from(e).ok())
                    .filter(|e| *e <= bytes.len())
                    .ok_or_else(short)?;
                return Ok(bytes.slice(start..end));
            }
            State::Open(s) => s.clone(),
        };
        store
            .get_range(handle, offset, length)
            .await
            .map_err(|e| storage_error("get", Some(handle), e))
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let store = match &*self.state.read().await {
            State::Staging(staged) => {
                return Ok(staged
                    .iter()
                    .filter(|(h, _)| h.kind == kind && h.name().starts_with(prefix))
                    .map(|(h, b)| ObjectInfo {
                        handle: h.clone(),
                        size: b.len() as u64,
                    })
                    .collect())
            }
            State::Open(s) => s.clone(),
        };
        let objects = store
            .list(kind, prefix)
            .await
            .map_err(|e| storage_error("list", None, e))?;
        Ok(objects
            .into_iter()
            .map(|(handle, size)| ObjectInfo { handle, size })
            .collect())
    }

    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
        let store = match &*self.state.read().await {
            State::Staging(staged) => {
                return staged
                    .get(handle)
                    .map(|b| ObjectInfo {
                        handle: handle.clone(),
                        size: b.len() as u64,
                    })
                    .ok_or_else(|| Error::NotFound(handle.clone()))
            }
            State::Open(s) => s.clone(),
        };
        match store.stat(handle).await {
            Ok(Some(size)) => Ok(ObjectInfo {
                handle: handle.clone(),
                size,
            }),
            Ok(None) => Err(Error::NotFound(handle.clone())),
            Err(e) => Err(storage_error("stat", Some(handle), e)),
        }
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let store = match &mut *self.state.write().await {
            State::Staging(staged) => {
                staged.remove(handle);
                return Ok(());
            }
            State::Open(s) => s.clone(),
        };
        store
            .delete(handle)
            .await
            .map_err(|e| storage_error("delete", Some(handle), e))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use kith_engine::backup::{backup, BackupOptions};
    use kith_engine::restore::{restore, RestoreOptions};
    use kith_engine::{Credentials, InitOptions, KdfParams, Repository};
    use kith_storage::Backend;

    use super::*;
    use crate::objects::memory::{MemoryNetwork, MemoryTransport};
    use crate::objects::{OwnerKeys, StoreOptions};

    fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push((rel, std::fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_backs_up_to_peers_and_a_fresh_machine_restores_bit_exact() {
        let net = MemoryNetwork::new();
        let holders = net.add_holders(5);
        let work = tempfile::tempdir().unwrap();

        // init creates the master secret; the store is attached after.
        let backend = Arc::new(PeerBackend::<MemoryTransport>::staging());
        let fast = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let options = InitOptions::default().kdf(fast).pack_size(1 << 20);
        let (repo, master) = Repository::init(backend.clone(), "pw", &options, None)
            .await
            .unwrap();
        let keys = OwnerKeys::derive(&master).unwrap();
        let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
        let store = ObjectStore::open(
            transport,
            keys,
            &work.path().join("a"),
            StoreOptions::default(),
        )
        .await
        .unwrap();
        backend.attach(store).await.unwrap();
        assert!(backend.location().starts_with("peers://"));

        let source = work.path().join("source");
        std::fs::create_dir_all(source.join("inner")).unwrap();
        let marker = b"plaintext marker that no holder may see";
        std::fs::write(source.join("zebra-secret-name.txt"), marker.repeat(1000)).unwrap();
        let mut big = Vec::with_capacity(3 << 20);
        let mut s = 0x1234_5678_9abc_def1u64;
        while big.len() < 3 << 20 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            big.extend_from_slice(&s.to_le_bytes());
        }
        std::fs::write(source.join("inner").join("big.bin"), &big).unwrap();
        std::fs::write(source.join("empty"), b"").unwrap();
        let outcome = backup(
            &repo,
            std::slice::from_ref(&source),
            &BackupOptions::default(),
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        assert!(outcome.failed.is_empty());
        drop(repo);

        // A fresh machine: only the master secret and one holder's id;
        // two other holders are gone.
        net.set_down(&holders[3], true);
        net.set_down(&holders[4], true);
        let keys = OwnerKeys::derive(&master).unwrap();
        let bootstrap = net
            .holders()
            .into_iter()
            .find(|p| !holders[3..].contains(p) && net.shard_count(p) > 0)
            .unwrap();
        let transport = MemoryTransport::new(net.clone(), keys.owner_id(), [bootstrap]);
        let fresh: Arc<dyn Backend> = Arc::new(
            PeerBackend::open(transport, &master, &work.path().join("b"))
                .await
                .unwrap(),
        );
        let repo = Repository::open(fresh, &Credentials::Master(master.clone()), None)
            .await
            .unwrap();
        let snapshot = repo.find_snapshot("latest").await.unwrap();
        let target = work.path().join("target");
        restore(
            &repo,
            &snapshot,
            &target,
            &RestoreOptions::default(),
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        let restored_root = target.join(source.strip_prefix("/").unwrap());
        let want = files(&source);
        let got = files(&restored_root);
        assert_eq!(want.len(), got.len());
        assert!(want == got, "restored files differ from the source");
        let report =
            kith_engine::check::check(&repo, kith_engine::check::ReadData::All, Arc::new(|_| {}))
                .await
                .unwrap();
        assert!(
            report.errors.is_empty(),
            "{} check errors",
            report.errors.len()
        );
        assert!(report.packs_read > 0);

        // Holders see neither contents nor names.
        for (_, _, bytes) in net.held() {
            assert!(!contains(&bytes, &marker[..24]), "a holder sees plaintext");
            assert!(
                !contains(&bytes, b"zebra-secret-name"),
                "a holder sees a file name"
            );
            assert!(
                !contains(&bytes, &big[1000..1032]),
                "a holder sees plaintext"
            );
        }
    }

    #[tokio::test]
    async fn staged_writes_are_served_before_attach_and_stored_by_it() {
        let backend = PeerBackend::<MemoryTransport>::staging();
        let h = Handle::new(Kind::Key, "k1").unwrap();
        backend
            .put(&h, Bytes::from_static(b"key file"))
            .await
            .unwrap();
        assert_eq!(&backend.get_range(&h, 4, 4).await.unwrap()[..], b"file");
        assert!(backend.get_range(&h, 4, 5).await.is_err());
        assert_eq!(backend.list(Kind::Key, "").await.unwrap().len(), 1);
        assert!(backend
            .stat(&Handle::config())
            .await
            .unwrap_err()
            .is_not_found());

        let net = MemoryNetwork::new();
        net.add_holders(3);
        let keys = OwnerKeys::derive(&kith_engine::MasterSecret::from_bytes([1; 32])).unwrap();
        let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(transport, keys, dir.path(), StoreOptions::default())
            .await
            .unwrap();
        backend.attach(store).await.unwrap();
        assert_eq!(&backend.get(&h).await.unwrap()[..], b"key file");
        assert_eq!(backend.stat(&h).await.unwrap().size, 8);
        assert!(!net.held().is_empty());
        backend.delete(&h).await.unwrap();
        assert!(backend.get(&h).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn too_few_peers_is_a_clear_storage_error() {
        let net = MemoryNetwork::new();
        net.add_holders(2);
        let keys = OwnerKeys::derive(&kith_engine::MasterSecret::from_bytes([2; 32])).unwrap();
        let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(transport, keys, dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let backend = PeerBackend::new(store);
        let h = Handle::new(Kind::Snapshot, "s1").unwrap();
        let e = backend.put(&h, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(e.to_string().contains("not enough usable peers"), "{e}");
        assert!(net.held().is_empty());
    }
}
