//! A repository in a local folder.
//!
//! Layout: `config`, `keys/`, `packs/00..ff/`, `index/`, `snapshots/`,
//! `locks/`, `sessions/`. Writes go to a hidden temporary file in the target
//! folder, which is fsynced, renamed over the final name, and followed by an
//! fsync of the folder, so a crash leaves either the old state or the whole
//! new object. Hidden files (a leading `.`) are never listed.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Backend, Error, Handle, Kind, ObjectInfo, Result};

/// A repository stored in a folder of the local file system.
#[derive(Clone, Debug)]
pub struct LocalBackend {
    root: Arc<PathBuf>,
}

impl LocalBackend {
    /// A backend rooted at `root`; nothing is touched until it is used.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: Arc::new(root.into()),
        }
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, handle: &Handle) -> PathBuf {
        self.root.join(handle.relative_path())
    }

    fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.root.join(kind.dir())
    }
}

/// Runs blocking file-system work off the async runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

fn create_layout(root: &Path) -> Result<()> {
    if root.join("config").exists() {
        return Err(Error::io(
            "create repository at",
            root,
            std::io::Error::new(ErrorKind::AlreadyExists, "a repository already exists here"),
        ));
    }
    fs::create_dir_all(root).map_err(|e| Error::io("create folder", root, e))?;
    for kind in Kind::ALL {
        if kind == Kind::Config {
            continue;
        }
        let dir = root.join(kind.dir());
        fs::create_dir_all(&dir).map_err(|e| Error::io("create folder", &dir, e))?;
    }
    let packs = root.join(Kind::Pack.dir());
    for fan in 0..=255u8 {
        let dir = packs.join(format!("{fan:02x}"));
        fs::create_dir_all(&dir).map_err(|e| Error::io("create folder", &dir, e))?;
    }
    sync_dir(&packs)?;
    sync_dir(root)?;
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("open folder", dir, e))?;
    f.sync_all().map_err(|e| Error::io("sync folder", dir, e))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        Error::io(
            "write",
            path,
            std::io::Error::new(ErrorKind::InvalidInput, "object path has no parent folder"),
        )
    })?;
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| Error::io("create folder", dir, e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // The temporary name is hidden from listings; removing it is a courtesy.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn not_found_or(handle: &Handle, op: &'static str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::NotFound(handle.clone())
    } else {
        Error::io(op, path, e)
    }
}

fn list_dir(dir: &Path, kind: Kind, prefix: &str, out: &mut Vec<ObjectInfo>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.starts_with(prefix) {
            continue;
        }
        let Ok(handle) = Handle::new(kind, name) else {
            continue;
        };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Removed between the directory read and now (a lock released,
            // a pack pruned): a listing is a moment's view, and it is gone.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", entry.path(), e)),
        };
        if meta.is_file() {
            out.push(ObjectInfo {
                handle,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read_size(&self) -> u64 {
        4 << 20
    }

    fn parallel_transfers(&self) -> usize {
        1
    }

    async fn create(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || create_layout(&root)).await
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
        let path = self.path_of(handle);
        blocking(move || write_atomic(&path, &data)).await
    }

    async fn get(&self, handle: &Handle) -> Result<Bytes> {
        let path = self.path_of(handle);
        let handle = handle.clone();
        blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| not_found_or(&handle, "read", &path, e))
        })
        .await
    }

    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
        let path = self.path_of(handle);
        let handle = handle.clone();
        blocking(move || {
            let mut f = File::open(&path).map_err(|e| not_found_or(&handle, "open", &path, e))?;
            let size = f.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
            let short = Error::ShortRead {
                handle: handle.clone(),
                offset,
                wanted: length,
            };
            if offset.checked_add(length).is_none_or(|end| end > size) {
                return Err(short);
            }
            let len = usize::try_from(length).map_err(|_| short)?;
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io("seek", &path, e))?;
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf).map_err(|e| {
                if e.kind() == ErrorKind::UnexpectedEof {
                    Error::ShortRead {
                        handle: handle.clone(),
                        offset,
                        wanted: length,
                    }
                } else {
                    Error::io("read", &path, e)
                }
            })?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let dir = self.kind_dir(kind);
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            match kind {
                Kind::Config => {
                    let path = root.join("config");
                    if let Ok(meta) = fs::metadata(&path) {
                        if "config".starts_with(&prefix) {
                            out.push(ObjectInfo {
                                handle: Handle::config(),
                                size: meta.len(),
                            });
                        }
                    }
                }
                Kind::Pack => {
                    if let Some(fan) = prefix.get(..2) {
                        list_dir(&dir.join(fan), kind, &prefix, &mut out)?;
                    } else {
                        let fans = match fs::read_dir(&dir) {
                            Ok(fans) => fans,
                            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
                            Err(e) => return Err(Error::io("list", &dir, e)),
                        };
                        for fan in fans {
                            let fan = fan.map_err(|e| Error::io("list", &dir, e))?;
                            if fan.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                                list_dir(&fan.path(), kind, &prefix, &mut out)?;
                            }
                        }
                    }
                }
                _ => list_dir(&dir, kind, &prefix, &mut out)?,
            }
            Ok(out)
        })
        .await
    }

    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
        let path = self.path_of(handle);
        let handle = handle.clone();
        blocking(move || {
            let meta = fs::metadata(&path).map_err(|e| not_found_or(&handle, "stat", &path, e))?;
            Ok(ObjectInfo {
                handle,
                size: meta.len(),
            })
        })
        .await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let path = self.path_of(handle);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    sync_dir(dir)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", &path, e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn objects_round_trip_and_list_by_kind_and_prefix() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let b = LocalBackend::new(dir.path().join("r"));
            b.create().await.unwrap();
            for name in ["aa01", "aa02", "bb01"] {
                let h = Handle::new(Kind::Pack, name).unwrap();
                b.put(&h, Bytes::from(name.as_bytes().to_vec()))
                    .await
                    .unwrap();
            }
            let all = b.list(Kind::Pack, "").await.unwrap();
            assert_eq!(all.len(), 3);
            let aa = b.list(Kind::Pack, "aa").await.unwrap();
            assert_eq!(aa.len(), 2);
            let aa0 = b.list(Kind::Pack, "aa02").await.unwrap();
            assert_eq!(aa0.len(), 1);
            assert!(b.list(Kind::Index, "").await.unwrap().is_empty());
            let h = Handle::new(Kind::Pack, "bb01").unwrap();
            assert_eq!(b.stat(&h).await.unwrap().size, 4);
            b.delete(&h).await.unwrap();
            b.delete(&h).await.unwrap();
            assert!(b.get(&h).await.unwrap_err().is_not_found());
        });
    }

    #[test]
    fn creating_over_an_existing_repository_fails() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let b = LocalBackend::new(dir.path());
            b.create().await.unwrap();
            b.put(&Handle::config(), Bytes::from_static(b"c"))
                .await
                .unwrap();
            assert!(b.create().await.is_err());
        });
    }

    #[test]
    fn ranged_reads_past_the_end_are_short_reads() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let b = LocalBackend::new(dir.path());
            b.create().await.unwrap();
            let h = Handle::new(Kind::Index, "01").unwrap();
            b.put(&h, Bytes::from_static(b"0123456789")).await.unwrap();
            assert_eq!(&b.get_range(&h, 8, 2).await.unwrap()[..], b"89");
            assert!(matches!(
                b.get_range(&h, 8, 3).await,
                Err(Error::ShortRead { .. })
            ));
            assert!(matches!(
                b.get_range(&h, u64::MAX, 3).await,
                Err(Error::ShortRead { .. })
            ));
        });
    }

    #[test]
    fn temporary_files_are_never_listed() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let b = LocalBackend::new(dir.path());
            b.create().await.unwrap();
            fs::write(dir.path().join("index/.tmp-1"), b"partial").unwrap();
            assert!(b.list(Kind::Index, "").await.unwrap().is_empty());
        });
    }
}
