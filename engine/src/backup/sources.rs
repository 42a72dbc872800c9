//! Where each blob of a backup was read, so that a commit can store a blob
//! again when the pack it was in disappeared or was condemned meanwhile.
//!
//! Data blobs are remembered as (file, offset, length): re-reading them
//! costs nothing until needed, and a file that changed since is detected
//! because the bytes no longer hash to the blob id. Trees exist only in
//! memory while a backup runs, so their bytes go to an unnamed temporary
//! file (removed by the system when the backup ends).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::blob::BlobKind;
use crate::id::BlobId;
use crate::{Error, Result};

/// Where one blob can be read again.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// A slice of a file.
    File {
        path: Arc<PathBuf>,
        offset: u64,
        len: u32,
    },
    /// A tree, in the spill file.
    Tree { offset: u64, len: u32 },
}

struct Spill {
    file: File,
    len: u64,
}

/// The sources of one backup's blobs.
pub(crate) struct Sources {
    map: Mutex<HashMap<BlobId, Source>>,
    spill: Mutex<Spill>,
}

impl Sources {
    pub(crate) fn new() -> Result<Self> {
        let file = tempfile::tempfile()
            .map_err(|e| Error::io("create a temporary file in", std::env::temp_dir(), e))?;
        Ok(Sources {
            map: Mutex::new(HashMap::new()),
            spill: Mutex::new(Spill { file, len: 0 }),
        })
    }

    /// A shared path for the blobs of one file.
    pub(crate) fn file(&self, path: &Path) -> Arc<PathBuf> {
        Arc::new(path.to_owned())
    }

    /// Remembers that blob `id` is `len` bytes of `path` at `offset`.
    pub(crate) fn data(&self, id: BlobId, path: &Arc<PathBuf>, offset: u64, len: u32) {
        if let Ok(mut map) = self.map.lock() {
            map.entry(id).or_insert_with(|| Source::File {
                path: path.clone(),
                offset,
                len,
            });
        }
    }

    /// Keeps a tree's bytes.
    pub(crate) fn tree(&self, id: BlobId, bytes: &[u8]) -> Result<()> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| Error::Task("blob sources poisoned".into()))?;
        if map.contains_key(&id) {
            return Ok(());
        }
        let mut spill = self
            .spill
            .lock()
            .map_err(|_| Error::Task("tree spill poisoned".into()))?;
        let offset = spill.len;
        spill
            .file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io("write a temporary file in", std::env::temp_dir(), e))?;
        let len =
            u32::try_from(bytes.len()).map_err(|_| Error::Task("a tree over 4 GiB".into()))?;
        spill.len += u64::from(len);
        map.insert(id, Source::Tree { offset, len });
        Ok(())
    }

    /// Where `id` was read.
    pub(crate) fn get(&self, id: &BlobId) -> Option<Source> {
        self.map.lock().ok().and_then(|m| m.get(id).cloned())
    }

    /// Reads a blob again: its kind and bytes, or why it cannot be had (a
    /// file changed or vanished; the caller checks the bytes against the id).
    pub(crate) fn read(&self, id: &BlobId) -> Result<(BlobKind, Vec<u8>), String> {
        match self.get(id) {
            None => Err("this backup does not know where it read it".into()),
            Some(Source::Tree { offset, len }) => {
                let spill = self
                    .spill
                    .lock()
                    .map_err(|_| "tree spill poisoned".to_owned())?;
                let mut buf = vec![0u8; len as usize];
                spill
                    .file
                    .read_exact_at(&mut buf, offset)
                    .map_err(|e| format!("cannot read the temporary tree file: {e}"))?;
                Ok((BlobKind::Tree, buf))
            }
            Some(Source::File { path, offset, len }) => {
                let file = File::open(&*path)
                    .map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| format!("{}: cannot read again: {e}", path.display()))?;
                Ok((BlobKind::Data, buf))
            }
        }
    }

    /// The file a data blob was read from.
    pub(crate) fn path_of(&self, id: &BlobId) -> Option<PathBuf> {
        match self.get(id) {
            Some(Source::File { path, .. }) => Some((*path).clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_trees_are_read_back_from_where_they_were_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"hello world").unwrap();
        let s = Sources::new().unwrap();
        let p = s.file(&f);
        s.data(BlobId([1; 32]), &p, 6, 5);
        s.tree(BlobId([2; 32]), b"tree one").unwrap();
        s.tree(BlobId([3; 32]), b"tree two").unwrap();
        assert_eq!(s.read(&BlobId([1; 32])).unwrap().1, b"world");
        assert_eq!(s.read(&BlobId([3; 32])).unwrap().1, b"tree two");
        assert_eq!(
            s.read(&BlobId([2; 32])).unwrap(),
            (BlobKind::Tree, b"tree one".to_vec())
        );
        assert!(s.read(&BlobId([9; 32])).is_err());
        std::fs::write(&f, b"short").unwrap();
        assert!(
            s.read(&BlobId([1; 32])).is_err(),
            "a shrunk file cannot give the blob"
        );
    }
}
