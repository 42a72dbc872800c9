//! An open repository: its backend, config, keys and index cache, and the
//! reads and writes of whole objects that every command shares.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kith_storage::{Backend, Handle, Kind};
use tokio::sync::OnceCell;

use crate::blob::{self, BlobKind};
use crate::config::{ChunkerParams, Config};
use crate::crypto::{Cipher, RepoSecretKey};
use crate::id::{hash_of, BlobId, IndexId, KeyId, PackId, SnapshotId};
use crate::index::{BlobLocation, IndexCache, IndexFile};
use crate::keys::MasterSecretBytes;
use crate::keys::{Access, KdfParams, KeyFile, KeyMaterial, MasterSecret, WriteKeys};
use crate::pack;
use crate::snapshot::Snapshot;
use crate::tree::Tree;
use crate::{Error, Result};

/// How to unlock a repository.
#[derive(Clone)]
pub enum Credentials {
    /// A password tried against every key file.
    Password(String),
    /// The master secret itself (paper key), which needs no key file.
    Master(MasterSecret),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Password(_) => "Credentials::Password(..)",
            Credentials::Master(_) => "Credentials::Master(..)",
        })
    }
}

/// Options of `init`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InitOptions {
    /// Argon2id parameters of the first key.
    pub kdf: KdfParams,
    /// Chunker bounds.
    pub chunker: ChunkerParams,
    /// Target pack size.
    pub pack_size: u32,
    /// zstd level.
    pub compression_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::default(),
            chunker: ChunkerParams::default(),
            pack_size: 16 * 1024 * 1024,
            compression_level: 3,
        }
    }
}

impl InitOptions {
    /// Sets the Argon2id parameters.
    pub fn kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    /// Sets the target pack size.
    pub fn pack_size(mut self, size: u32) -> Self {
        self.pack_size = size;
        self
    }

    /// Sets the chunker bounds.
    pub fn chunker(mut self, chunker: ChunkerParams) -> Self {
        self.chunker = chunker;
        self
    }
}

/// A key file as listed.
#[derive(Clone, Debug)]
pub struct KeyListing {
    /// Its id.
    pub id: KeyId,
    /// Its readable fields, or why they could not be read.
    pub info: Result<crate::keys::KeyFileInfo, String>,
    /// True for the key that opened this repository.
    pub current: bool,
}

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: Config,
    write_keys: WriteKeys,
    master: Option<MasterSecret>,
    /// Master secrets replaced by rotations, oldest first (full keys only).
    earlier: Vec<MasterSecret>,
    secret: Option<RepoSecretKey>,
    key_id: Option<KeyId>,
    cache_dir: Option<PathBuf>,
    index: OnceCell<Arc<IndexCache>>,
    /// A private cache folder, removed on drop, when there is no shared one
    /// or another process holds it.
    temp_cache: Mutex<Option<tempfile::TempDir>>,
    ciphers: Mutex<HashMap<PackId, Arc<Cipher>>>,
    /// After how long without a refresh a lock or session record of another
    /// process is stale.
    stale_after: std::time::Duration,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.backend.location())
    }
}

/// Now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The current user's name.
pub fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

async fn read_config_bytes(backend: &dyn Backend) -> Result<Bytes> {
    match backend.get(&Handle::config()).await {
        Ok(b) => Ok(b),
        Err(e) if e.is_not_found() => {
            // Key files without a config: a repository that lost its
            // config, not an empty place. init writes the key file first
            // and the config last, so an init cut short between the two
            // looks the same; the message allows for both.
            let keys = backend.list(Kind::Key, "").await.unwrap_or_default();
            if keys.is_empty() {
                Err(Error::RepositoryNotFound {
                    location: backend.location(),
                })
            } else {
                Err(Error::corrupt(
                    "config",
                    format!(
                        "is missing at {} although key files are there: the repository is damaged \
                         (or its creation was interrupted); restore the config from a copy",
                        backend.location()
                    ),
                ))
            }
        }
        Err(e) => Err(e.into()),
    }
}

impl Repository {
    /// Creates a repository with one full key under `password`; returns it
    /// open, with the master secret to show the user once.
    pub async fn init(
        backend: Arc<dyn Backend>,
        password: &str,
        options: &InitOptions,
        cache_dir: Option<PathBuf>,
    ) -> Result<(Self, MasterSecret)> {
        options.chunker.validate()?;
        if options.pack_size == 0 || options.pack_size > crate::config::MAX_PACK_SIZE {
            return Err(Error::InvalidInput("pack size out of range".into()));
        }
        match backend.stat(&Handle::config()).await {
            Ok(_) => {
                return Err(Error::RepositoryExists {
                    location: backend.location(),
                })
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        backend.create().await.map_err(|e| match e {
            kith_storage::Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Error::RepositoryExists {
                    location: backend.location(),
                }
            }
            e => e.into(),
        })?;
        let master = MasterSecret::generate();
        let signer = master.config_signing_key();
        let mut id = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let config = Config {
            id,
            created: now_ns(),
            chunker: options.chunker,
            pack_size: options.pack_size,
            compression_level: options.compression_level,
            repo_public: master.repo_secret().public().0,
            verifying_key: signer.verifying_key().to_bytes(),
            earlier: Vec::new(),
        };
        let material = KeyMaterial::Full(MasterSecretBytes(*master.as_bytes()));
        let key_id =
            put_key_file(backend.as_ref(), material.clone(), password, options.kdf).await?;
        // The config is written last: a repository without one does not exist yet.
        backend
            .put(&Handle::config(), Bytes::from(config.to_bytes(&signer)))
            .await?;
        let repo = Self::assemble(backend, config, material, Some(key_id), cache_dir)?;
        Ok((repo, master))
    }

    /// Opens a repository.
    pub async fn open(
        backend: Arc<dyn Backend>,
        credentials: &Credentials,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let config_bytes = read_config_bytes(backend.as_ref()).await?;
        let (material, key_id) = match credentials {
            Credentials::Master(m) => (KeyMaterial::Full(MasterSecretBytes(*m.as_bytes())), None),
            Credentials::Password(p) => {
                let (material, id) = Self::unlock(backend.as_ref(), p, &config_bytes).await?;
                (material, Some(id))
            }
        };
        let trusted = material
            .write_keys()
            .config_verifying_key()
            .ok_or_else(|| Error::corrupt("key", "invalid config verifying key"))?;
        let config =
            Config::parse(&config_bytes, &trusted).map_err(|e| match (credentials, &e) {
                // A well-formed config whose signature does not verify, opened with
                // a master key: the key is another repository's.
                (Credentials::Master(_), Error::Corrupt { .. })
                    if Config::parse_unverified(&config_bytes).is_ok() =>
                {
                    Error::WrongMasterKey
                }
                _ => e,
            })?;
        Self::assemble(backend, config, material, key_id, cache_dir)
    }

    /// The key file `password` opens. A key whose secret does not verify
    /// the config belongs to a master secret replaced by a rotation (left
    /// by an interrupted one): another key for the same password is
    /// preferred, and it is returned only when there is none.
    async fn unlock(
        backend: &dyn Backend,
        password: &str,
        config_bytes: &[u8],
    ) -> Result<(KeyMaterial, KeyId)> {
        let keys = backend.list(Kind::Key, "").await?;
        let count = keys.len();
        let mut damaged = Vec::new();
        let mut superseded = None;
        for info in keys {
            let bytes = match backend.get(&info.handle).await {
                Ok(b) => b,
                Err(e) => {
                    damaged.push(e.to_string());
                    continue;
                }
            };
            let name = info.handle.name().to_owned();
            let id = KeyId::from_hex(&name).unwrap_or(KeyId(hash_of(&bytes)));
            let object = format!("key {}", id.short());
            // A key file is named after the hash of its bytes: a mismatch
            // is damage, told apart from a wrong password before Argon2
            // spends its time on it.
            if hash_of(&bytes) != id.0 {
                damaged.push(format!(
                    "{object}: its content does not match its name (damaged)"
                ));
                continue;
            }
            let password = password.to_owned();
            let opened = tokio::task::spawn_blocking(move || {
                KeyFile::parse(&bytes, &object).and_then(|k| k.open(password.as_bytes(), &object))
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
            match opened {
                Ok(Some(material)) => {
                    let verifies = material
                        .write_keys()
                        .config_verifying_key()
                        .is_some_and(|k| Config::parse(config_bytes, &k).is_ok());
                    if verifies {
                        return Ok((material, id));
                    }
                    superseded.get_or_insert((material, id));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, "skipping unreadable key file");
                    damaged.push(e.to_string());
                }
            }
        }
        if let Some(found) = superseded {
            return Ok(found);
        }
        if !damaged.is_empty() && damaged.len() == count {
            return Err(Error::corrupt("every key file", damaged.join("; ")));
        }
        if !damaged.is_empty() {
            // The key for this password may be the damaged one: say so
            // rather than blame the password.
            return Err(Error::corrupt(
                "key files",
                format!(
                    "no intact key opens with this password, and {}; it may be this password's key: \
                     open the repository with another password or the master key and add a new key",
                    damaged.join("; ")
                ),
            ));
        }
        Err(Error::WrongPassword)
    }

    fn assemble(
        backend: Arc<dyn Backend>,
        config: Config,
        material: KeyMaterial,
        key_id: Option<KeyId>,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let mut write_keys = material.write_keys();
        if write_keys.repo_public != config.repo_public {
            return Err(Error::corrupt(
                "config",
                "its public key does not match the key file",
            ));
        }
        let master = material.master();
        let earlier = match (&master, config.earlier.is_empty()) {
            (Some(m), false) => m.open_earlier(&config.earlier)?,
            _ => Vec::new(),
        };
        // Blob ids keep the first master's key across rotations, so
        // deduplication goes on (docs/FORMAT.md, master key rotation).
        if let Some(first) = earlier.first() {
            write_keys.chunk_id_key = first.chunk_id_key();
        }
        let secret = master.as_ref().map(|m| {
            m.repo_secret()
                .with_earlier(earlier.iter().rev().map(MasterSecret::repo_secret))
        });
        Ok(Repository {
            backend,
            config,
            write_keys,
            master,
            earlier,
            secret,
            key_id,
            cache_dir,
            index: OnceCell::new(),
            temp_cache: Mutex::new(None),
            ciphers: Mutex::new(HashMap::new()),
            stale_after: crate::lock::DEFAULT_STALE_AFTER,
        })
    }

    /// After how long without a refresh a lock or session record is stale
    /// (default [`crate::lock::DEFAULT_STALE_AFTER`]).
    pub fn stale_after(&self) -> std::time::Duration {
        self.stale_after
    }

    /// Sets the staleness limit. Every process sharing the repository
    /// should use the same one: holders refresh their records six times
    /// per period, and others treat a record older than it as abandoned.
    pub fn set_stale_after(&mut self, stale_after: std::time::Duration) {
        self.stale_after = stale_after.max(std::time::Duration::from_millis(60));
    }

    /// The storage.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The keys needed to write.
    pub fn write_keys(&self) -> &WriteKeys {
        &self.write_keys
    }

    /// The master secret, when the key is a full one.
    pub fn master(&self) -> Option<&MasterSecret> {
        self.master.as_ref()
    }

    /// The key file that opened the repository, if any.
    pub fn key_id(&self) -> Option<KeyId> {
        self.key_id
    }

    /// The repository secret, or an error naming the operation.
    pub fn secret(&self, operation: &'static str) -> Result<&RepoSecretKey> {
        self.secret.as_ref().ok_or(Error::WriteOnly { operation })
    }

    /// The folder of this repository's caches.
    pub fn cache_path(&self) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(self.config.id_hex()))
    }

    /// The index cache, brought up to date with the repository's index
    /// deltas (rebuilt from scratch when one it knew has disappeared).
    pub async fn index(&self) -> Result<Arc<IndexCache>> {
        self.index
            .get_or_try_init(|| async {
                let id = self.config.id;
                let shared = match self.cache_path() {
                    Some(dir) => {
                        let path = dir.join("index.redb");
                        match tokio::task::spawn_blocking(move || IndexCache::open(&path, &id))
                            .await
                            .map_err(|e| Error::Task(e.to_string()))?
                        {
                            Ok((cache, _)) => Some(cache),
                            Err(Error::CacheInUse(path)) => {
                                tracing::info!(path = %path.display(), "cache in use; using a private one");
                                None
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    None => None,
                };
                let cache = match shared {
                    Some(c) => c,
                    None => {
                        let dir = tempfile::Builder::new()
                            .prefix("kith-cache-")
                            .tempdir()
                            .map_err(|e| Error::io("create temporary cache", std::env::temp_dir(), e))?;
                        let path = dir.path().join("index.redb");
                        if let Ok(mut slot) = self.temp_cache.lock() {
                            *slot = Some(dir);
                        }
                        tokio::task::spawn_blocking(move || IndexCache::open(&path, &id))
                            .await
                            .map_err(|e| Error::Task(e.to_string()))??
                            .0
                    }
                };
                let cache = Arc::new(cache);
                self.sync_index(&cache).await?;
                Ok(cache)
            })
            .await
            .cloned()
    }

    async fn sync_index(&self, cache: &Arc<IndexCache>) -> Result<()> {
        let listed = self.backend.list(Kind::Index, "").await?;
        let mut present = std::collections::HashSet::new();
        for o in &listed {
            if let Ok(id) = IndexId::from_hex(o.handle.name()) {
                present.insert(id);
            }
        }
        let known = cache.index_files()?;
        if !known.is_subset(&present) {
            cache.clear_index()?;
        }
        let known = cache.index_files()?;
        let Some(secret) = self.secret.clone() else {
            // A write-only key cannot read index deltas; it deduplicates
            // only against what it wrote itself.
            return Ok(());
        };
        let missing: Vec<IndexId> = present.difference(&known).copied().collect();
        let mut batch = Vec::new();
        for chunk in missing.chunks(64) {
            let mut fetches = Vec::new();
            for id in chunk {
                let backend = self.backend.clone();
                let id = *id;
                fetches.push(tokio::spawn(async move {
                    let handle = Handle::new(Kind::Index, id.to_hex())?;
                    match backend.get(&handle).await {
                        Ok(bytes) => Ok::<_, Error>((id, Some(bytes))),
                        // A prune replaced it after the listing; the delta
                        // that replaces it is read at the next sync.
                        Err(e) if e.is_not_found() => Ok((id, None)),
                        Err(e) => Err(e.into()),
                    }
                }));
            }
            for f in fetches {
                let (id, bytes) = f.await.map_err(|e| Error::Task(e.to_string()))??;
                let Some(bytes) = bytes else { continue };
                match IndexFile::from_bytes(&secret, &bytes, &id) {
                    Ok(file) => batch.push((id, file)),
                    Err(e) => {
                        tracing::warn!(index = %id, error = %e, "skipping damaged index delta")
                    }
                }
            }
            if batch.len() >= 256 {
                let b = std::mem::take(&mut batch);
                let c = cache.clone();
                tokio::task::spawn_blocking(move || c.add_index_files(&b, false))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))??;
            }
        }
        let c = cache.clone();
        tokio::task::spawn_blocking(move || c.add_index_files(&batch, true))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        Ok(())
    }

    /// Reads and decrypts one index delta.
    pub async fn read_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        let secret = self.secret("reading the index")?;
        let bytes = self
            .backend
            .get(&Handle::new(Kind::Index, id.to_hex())?)
            .await?;
        IndexFile::from_bytes(secret, &bytes, id)
    }

    /// Stores an index delta; returns its id.
    pub async fn write_index_file(&self, file: &IndexFile) -> Result<IndexId> {
        let bytes = file.to_bytes(&self.write_keys.repo_public());
        let id = IndexId(hash_of(&bytes));
        self.backend
            .put(&Handle::new(Kind::Index, id.to_hex())?, Bytes::from(bytes))
            .await?;
        Ok(id)
    }

    /// The cipher of a pack with a known ephemeral key. After a master key
    /// rotation the pack may be sealed to an earlier key: its header tells
    /// which (one more ranged read, once per pack).
    pub async fn pack_cipher_with(
        &self,
        pack: &PackId,
        ephemeral: &[u8; 32],
    ) -> Result<Arc<Cipher>> {
        if let Some(c) = self
            .ciphers
            .lock()
            .map_err(|_| Error::Task("cipher cache poisoned".into()))?
            .get(pack)
        {
            return Ok(c.clone());
        }
        let secret = self.secret("reading data")?;
        let keys = pack::pack_keys(secret, ephemeral, pack)?;
        let c = if let [key] = keys.as_slice() {
            Arc::new(Cipher::new(key))
        } else {
            Arc::new(self.header_cipher(pack, &keys).await?)
        };
        let mut ciphers = self
            .ciphers
            .lock()
            .map_err(|_| Error::Task("cipher cache poisoned".into()))?;
        if ciphers.len() > 4096 {
            ciphers.clear();
        }
        ciphers.insert(*pack, c.clone());
        Ok(c)
    }

    /// The cipher, among `keys`, that opens the header of `pack`.
    async fn header_cipher(
        &self,
        pack: &PackId,
        keys: &[crate::crypto::SymmetricKey],
    ) -> Result<Cipher> {
        let handle = Handle::new(Kind::Pack, pack.to_hex())?;
        let size = self.backend.stat(&handle).await?.size;
        let trailer_len = pack::TRAILER_LEN as u64;
        let object = format!("pack {pack}");
        if size < trailer_len {
            return Err(Error::corrupt(&object, "too short"));
        }
        let tail = self
            .backend
            .get_range(&handle, size - trailer_len, trailer_len)
            .await?;
        let trailer = pack::parse_trailer(&tail, pack)?;
        let header_start = (size - trailer_len)
            .checked_sub(u64::from(trailer.header_len))
            .ok_or_else(|| Error::corrupt(&object, "header length past the start"))?;
        let sealed = self
            .backend
            .get_range(&handle, header_start, u64::from(trailer.header_len))
            .await?;
        let (cipher, _) = pack::open_header(keys, &sealed, header_start, pack)?;
        Ok(cipher)
    }

    /// The cipher of a pack known to the index.
    pub async fn pack_cipher(&self, pack: &PackId) -> Result<Arc<Cipher>> {
        let index = self.index().await?;
        let info = index
            .pack(pack)?
            .ok_or_else(|| Error::corrupt(format!("pack {pack}"), "not in the index"))?;
        self.pack_cipher_with(pack, &info.ephemeral).await
    }

    /// Decodes a sealed blob read from `location`.
    pub fn open_blob(
        &self,
        cipher: &Cipher,
        id: &BlobId,
        location: &BlobLocation,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        blob::open_blob(
            cipher,
            &self.write_keys.chunk_id_key,
            location.kind,
            location.compression,
            id,
            location.raw_length,
            sealed,
        )
        .map_err(|e| Error::BlobDamaged {
            blob: *id,
            pack: location.pack,
            reason: e.to_string(),
        })
    }

    /// Reads one blob from a given place, whether or not the index knows it.
    pub async fn read_blob_at(
        &self,
        pack: &PackId,
        ephemeral: &[u8; 32],
        entry: &crate::pack::PackEntry,
    ) -> Result<Vec<u8>> {
        let cipher = self.pack_cipher_with(pack, ephemeral).await?;
        let handle = Handle::new(Kind::Pack, pack.to_hex())?;
        let sealed = self
            .backend
            .get_range(&handle, u64::from(entry.offset), u64::from(entry.length))
            .await?;
        blob::open_blob(
            &cipher,
            &self.write_keys.chunk_id_key,
            entry.kind,
            entry.compression,
            &entry.id,
            entry.raw_length,
            &sealed,
        )
        .map_err(|e| Error::BlobDamaged {
            blob: entry.id,
            pack: *pack,
            reason: e.to_string(),
        })
    }

    /// Reads one blob.
    pub async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.secret("reading data")?;
        let index = self.index().await?;
        let location = index.lookup(id)?.ok_or(Error::BlobNotFound(*id))?;
        let cipher = self.pack_cipher(&location.pack).await?;
        let handle = Handle::new(Kind::Pack, location.pack.to_hex())?;
        let sealed = self
            .backend
            .get_range(
                &handle,
                u64::from(location.offset),
                u64::from(location.length),
            )
            .await?;
        self.open_blob(&cipher, id, &location, &sealed)
    }

    /// Reads several blobs pack by pack: blobs that lie close together in
    /// one pack come in one ranged read, so a reader that knows what it
    /// needs next (a file read in order) pays one request per region of a
    /// pack, not one per blob. Returns each distinct blob once, in the
    /// order asked.
    pub async fn read_blobs(&self, ids: &[BlobId]) -> Result<Vec<(BlobId, Vec<u8>)>> {
        self.secret("reading data")?;
        let index = self.index().await?;
        let mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
        let mut asked = std::collections::HashSet::new();
        for id in ids {
            if asked.insert(*id) {
                let location = index.lookup(id)?.ok_or(Error::BlobNotFound(*id))?;
                by_pack
                    .entry(location.pack)
                    .or_default()
                    .push((*id, location));
            }
        }
        let mut read: HashMap<BlobId, Vec<u8>> = HashMap::new();
        let mut ciphers: HashMap<PackId, Arc<Cipher>> = HashMap::new();
        for range in crate::restore::pack_reads(self.backend.as_ref(), by_pack) {
            let pack = range.pack;
            let cipher = match ciphers.get(&pack) {
                Some(c) => c.clone(),
                None => {
                    let c = self.pack_cipher(&pack).await?;
                    ciphers.insert(pack, c.clone());
                    c
                }
            };
            let handle = Handle::new(Kind::Pack, pack.to_hex())?;
            let bytes = self
                .backend
                .get_range(&handle, range.offset, range.length)
                .await?;
            for (id, location) in &range.blobs {
                let from = usize::try_from(u64::from(location.offset) - range.offset).ok();
                let sealed = from
                    .and_then(|f| bytes.get(f..f.checked_add(location.length as usize)?))
                    .ok_or_else(|| Error::BlobDamaged {
                        blob: *id,
                        pack,
                        reason: "the pack is shorter than its index says".into(),
                    })?;
                read.insert(*id, self.open_blob(&cipher, id, location, sealed)?);
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| read.remove(id).map(|data| (*id, data)))
            .collect())
    }

    /// Reads one tree.
    pub async fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(id).await?;
        Tree::from_bytes(&bytes, id)
    }

    /// Stores a snapshot: the commit point of a backup.
    pub async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let bytes = snapshot.to_bytes(&self.write_keys.repo_public());
        let id = SnapshotId(hash_of(&bytes));
        self.backend
            .put(
                &Handle::new(Kind::Snapshot, id.to_hex())?,
                Bytes::from(bytes),
            )
            .await?;
        Ok(id)
    }

    /// Replaces a snapshot with a copy whose tags are changed; returns the
    /// new id (a snapshot's id is the hash of its bytes). The new record is
    /// stored before the old one is deleted, so a crash leaves both, never
    /// neither.
    pub async fn retag(
        &self,
        id: &SnapshotId,
        snapshot: &Snapshot,
        add: &[String],
        remove: &[String],
        set: Option<&[String]>,
    ) -> Result<Option<SnapshotId>> {
        let mut tags: Vec<String> = match set {
            Some(s) => s.to_vec(),
            None => snapshot.tags.clone(),
        };
        for t in add {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        tags.retain(|t| !remove.contains(t));
        if tags == snapshot.tags {
            return Ok(None);
        }
        let mut changed = snapshot.clone();
        changed.tags = tags;
        let new = self.write_snapshot(&changed).await?;
        if new != *id {
            self.backend
                .delete(&Handle::new(Kind::Snapshot, id.to_hex())?)
                .await?;
        }
        Ok(Some(new))
    }

    /// Every snapshot, oldest first, with the errors of those that could
    /// not be read.
    pub async fn snapshots(&self) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<Error>)> {
        let secret = self.secret("listing snapshots")?.clone();
        let listed = self.backend.list(Kind::Snapshot, "").await?;
        let mut tasks = Vec::new();
        for o in listed {
            let backend = self.backend.clone();
            tasks.push(tokio::spawn(async move {
                let id = SnapshotId::from_hex(o.handle.name())?;
                let bytes = backend.get(&o.handle).await?;
                Ok::<_, Error>((id, bytes))
            }));
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for t in tasks {
            match t.await.map_err(|e| Error::Task(e.to_string()))? {
                Ok((id, bytes)) => match Snapshot::from_bytes(&secret, &bytes, &id) {
                    Ok(s) => out.push((id, s)),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((out, errors))
    }

    /// Finds a snapshot by `latest`, a full id, or a unique id prefix.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        let (all, _) = self.snapshots().await?;
        if spec == "latest" {
            return all
                .into_iter()
                .last()
                .ok_or_else(|| Error::SnapshotNotFound(spec.to_owned()));
        }
        let spec_lower = spec.to_ascii_lowercase();
        let mut matches: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lower))
            .collect();
        match matches.len() {
            0 => Err(Error::SnapshotNotFound(spec.to_owned())),
            1 => Ok(matches.remove(0)),
            count => Err(Error::AmbiguousSnapshot {
                prefix: spec.to_owned(),
                count,
            }),
        }
    }

    /// Adds a key file for `password`.
    pub async fn add_key(&self, password: &str, access: Access, kdf: KdfParams) -> Result<KeyId> {
        let material = match access {
            Access::Full => {
                let m = self.master.as_ref().ok_or(Error::WriteOnly {
                    operation: "adding a full key",
                })?;
                KeyMaterial::Full(MasterSecretBytes(*m.as_bytes()))
            }
            Access::WriteOnly => KeyMaterial::WriteOnly(self.write_keys.clone()),
        };
        put_key_file(self.backend.as_ref(), material, password, kdf).await
    }

    /// Lists key files.
    pub async fn keys(&self) -> Result<Vec<KeyListing>> {
        let mut out = Vec::new();
        for o in self.backend.list(Kind::Key, "").await? {
            let Ok(id) = KeyId::from_hex(o.handle.name()) else {
                continue;
            };
            let info = match self.backend.get(&o.handle).await {
                Ok(bytes) => KeyFile::parse(&bytes, &format!("key {}", id.short()))
                    .map(|k| k.info)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            out.push(KeyListing {
                id,
                info,
                current: Some(id) == self.key_id,
            });
        }
        out.sort_by_key(|k| k.info.as_ref().map(|i| i.created).unwrap_or(0));
        Ok(out)
    }

    /// Key files that are damaged: unreadable, not named after the hash of
    /// their bytes, or not decodable. Each as (object, problem).
    pub async fn damaged_keys(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for o in self.backend.list(Kind::Key, "").await? {
            let object = format!("key {}", o.handle.name());
            let Ok(id) = KeyId::from_hex(o.handle.name()) else {
                out.push((object, "is not named like a key file".to_owned()));
                continue;
            };
            match self.backend.get(&o.handle).await {
                Ok(bytes) if hash_of(&bytes) != id.0 => out.push((
                    object,
                    "its content does not match its name (damaged)".to_owned(),
                )),
                Ok(bytes) => {
                    if let Err(e) = KeyFile::parse(&bytes, &object) {
                        out.push((object, e.to_string()));
                    }
                }
                Err(e) => out.push((object, e.to_string())),
            }
        }
        Ok(out)
    }

    /// Resolves a key id prefix.
    pub async fn find_key(&self, prefix: &str) -> Result<KeyId> {
        let keys = self.keys().await?;
        let m: Vec<_> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        match m.as_slice() {
            [k] => Ok(k.id),
            [] => Err(Error::InvalidInput(format!("no key matches {prefix:?}"))),
            _ => Err(Error::InvalidInput(format!(
                "{prefix:?} matches {} keys: give more characters",
                m.len()
            ))),
        }
    }

    /// Removes a key file; refuses the key in use and the last full key.
    pub async fn remove_key(&self, id: &KeyId) -> Result<()> {
        if self.master.is_none() {
            return Err(Error::WriteOnly {
                operation: "removing keys",
            });
        }
        if Some(*id) == self.key_id {
            return Err(Error::InvalidInput(
                "refusing to remove the key in use: open the repository with another key to remove this one".into(),
            ));
        }
        let keys = self.keys().await?;
        let full_left = keys
            .iter()
            .filter(|k| k.id != *id && matches!(&k.info, Ok(i) if i.access == Access::Full))
            .count();
        if full_left == 0 && self.master.is_none() {
            return Err(Error::InvalidInput(
                "refusing to remove the last full key".into(),
            ));
        }
        if !keys.iter().any(|k| k.id == *id) {
            return Err(Error::InvalidInput(format!("no key {id}")));
        }
        self.backend
            .delete(&Handle::new(Kind::Key, id.to_hex())?)
            .await?;
        Ok(())
    }

    /// Replaces the key in use with one under a new password.
    pub async fn change_password(&mut self, new_password: &str, kdf: KdfParams) -> Result<KeyId> {
        let old = self.key_id;
        let access = if self.master.is_some() {
            Access::Full
        } else {
            Access::WriteOnly
        };
        let new = self.add_key(new_password, access, kdf).await?;
        if let Some(old) = old {
            self.backend
                .delete(&Handle::new(Kind::Key, old.to_hex())?)
                .await?;
        }
        self.key_id = Some(new);
        Ok(new)
    }

    /// Replaces the master secret with a new random one (master key
    /// rotation): the config keeps every earlier secret sealed under the new
    /// one, so what was written before stays readable, and everything
    /// written from now on is sealed to the new key. A new full key file
    /// under `password` holds the new secret; every other key file still
    /// holds the old one and is removed. Returns the new secret and key.
    ///
    /// Order: new key file, new config, then the old key files. A crash
    /// after the key file leaves the old config, which the new key does not
    /// verify and the old key does; after the config, the reverse. Opening
    /// prefers the key that verifies the config, so either way the password
    /// opens the repository.
    pub async fn rotate_master(
        &mut self,
        password: &str,
        kdf: KdfParams,
    ) -> Result<(MasterSecret, KeyId)> {
        let current = self.master.clone().ok_or(Error::WriteOnly {
            operation: "rotating the master key",
        })?;
        let held = crate::lock::lock(self, true, "rotate master key", self.stale_after).await?;
        let result = self.rotate_locked(&current, password, kdf).await;
        let released = held.release(self).await;
        let rotated = result?;
        released?;
        Ok(rotated)
    }

    async fn rotate_locked(
        &mut self,
        current: &MasterSecret,
        password: &str,
        kdf: KdfParams,
    ) -> Result<(MasterSecret, KeyId)> {
        let new = MasterSecret::generate();
        let mut earlier = self.earlier.clone();
        earlier.push(current.clone());
        let signer = new.config_signing_key();
        let mut config = self.config.clone();
        config.repo_public = new.repo_secret().public().0;
        config.verifying_key = signer.verifying_key().to_bytes();
        config.earlier = new.seal_earlier(&earlier);
        let material = KeyMaterial::Full(MasterSecretBytes(*new.as_bytes()));
        let key_id = put_key_file(self.backend.as_ref(), material, password, kdf).await?;
        self.backend
            .put(&Handle::config(), Bytes::from(config.to_bytes(&signer)))
            .await?;
        for info in self.backend.list(Kind::Key, "").await? {
            if info.handle.name() != key_id.to_hex() {
                self.backend.delete(&info.handle).await?;
            }
        }
        let mut write_keys = new.write_keys();
        if let Some(first) = earlier.first() {
            write_keys.chunk_id_key = first.chunk_id_key();
        }
        self.secret = Some(
            new.repo_secret()
                .with_earlier(earlier.iter().rev().map(MasterSecret::repo_secret)),
        );
        self.write_keys = write_keys;
        self.config = config;
        self.master = Some(new.clone());
        self.earlier = earlier;
        self.key_id = Some(key_id);
        Ok((new, key_id))
    }

    /// The chunk-id key.
    pub fn chunk_id_key(&self) -> &[u8; 32] {
        &self.write_keys.chunk_id_key
    }

    /// The id a plaintext would have in this repository.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        blob::blob_id(&self.write_keys.chunk_id_key, data)
    }

    /// Reads a whole pack and opens its header.
    pub async fn read_pack(
        &self,
        id: &PackId,
    ) -> Result<(Bytes, Cipher, Vec<crate::pack::PackEntry>)> {
        let secret = self.secret("reading packs")?.clone();
        let bytes = self
            .backend
            .get(&Handle::new(Kind::Pack, id.to_hex())?)
            .await?;
        let id = *id;
        tokio::task::spawn_blocking(move || {
            let (cipher, entries) = pack::read_pack(&secret, &id, &bytes)?;
            Ok((bytes, cipher, entries))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Kind of a blob as recorded by the index, if known.
    pub async fn blob_kind(&self, id: &BlobId) -> Result<Option<BlobKind>> {
        Ok(self.index().await?.lookup(id)?.map(|l| l.kind))
    }
}

/// Seals `material` under `password` in a new key file (the key derivation
/// runs off the async threads) and stores it under the hash of its bytes.
async fn put_key_file(
    backend: &dyn Backend,
    material: KeyMaterial,
    password: &str,
    kdf: KdfParams,
) -> Result<KeyId> {
    let password = password.to_owned();
    let key = tokio::task::spawn_blocking(move || {
        KeyFile::create(
            &material,
            password.as_bytes(),
            kdf,
            &host_name(),
            &user_name(),
            now_ns(),
        )
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    let id = KeyId(hash_of(key.bytes()));
    backend
        .put(
            &Handle::new(Kind::Key, id.to_hex())?,
            Bytes::copy_from_slice(key.bytes()),
        )
        .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blob::BlobKind;
    use crate::packer::PackSink;
    use crate::{InitOptions, KdfParams};

    #[tokio::test]
    async fn read_blobs_returns_each_asked_blob_once_in_order_across_packs() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(kith_storage::LocalBackend::new(dir.path().join("repo")));
        let fast = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let repo = Repository::init(backend, "pw", &InitOptions::default().kdf(fast), None)
            .await
            .unwrap()
            .0;
        let mut ids = Vec::new();
        let mut contents = HashMap::new();
        let mut packs = Vec::new();
        for pack in 0..2u8 {
            let mut sink = PackSink::new(&repo).unwrap();
            for i in 0..3u8 {
                // One larger blob between two small ones.
                let bytes = vec![pack * 16 + i; if i == 1 { 300_000 } else { 1000 }];
                let id = repo.blob_id(&bytes);
                sink.add(BlobKind::Data, id, &bytes).await.unwrap();
                ids.push(id);
                contents.insert(id, bytes);
            }
            packs.extend(sink.finish().await.unwrap());
        }
        repo.write_index_file(&IndexFile {
            packs,
            supersedes: Vec::new(),
        })
        .await
        .unwrap();
        let asked = [ids[5], ids[0], ids[2], ids[0], ids[3]];
        let got = repo.read_blobs(&asked).await.unwrap();
        let order: Vec<BlobId> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, vec![ids[5], ids[0], ids[2], ids[3]]);
        for (id, data) in got {
            assert_eq!(data, contents[&id]);
        }
        let unknown = BlobId([7; 32]);
        assert!(matches!(
            repo.read_blobs(&[ids[0], unknown]).await,
            Err(Error::BlobNotFound(id)) if id == unknown
        ));
    }
}
