//! File metadata into tree nodes.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::index::FileCacheEntry;
use crate::tree::{Node, NodeKind};

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node for `name` with `meta`, and kind `kind`.
pub(crate) fn node(name: &[u8], meta: &Metadata, kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: if meta.is_file() { meta.len() } else { 0 },
        mtime: ns(meta.mtime(), meta.mtime_nsec()),
        ctime: ns(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
    }
}

/// The kind of a non-file, non-folder entry; `None` for files and folders.
pub(crate) fn special_kind(path: &Path, meta: &Metadata) -> std::io::Result<Option<NodeKind>> {
    let t = meta.file_type();
    Ok(Some(if t.is_symlink() {
        NodeKind::Symlink {
            target: std::fs::read_link(path)?.as_os_str().as_bytes().to_vec(),
        }
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_socket() {
        NodeKind::Socket
    } else if t.is_char_device() {
        NodeKind::CharDevice { rdev: meta.rdev() }
    } else if t.is_block_device() {
        NodeKind::BlockDevice { rdev: meta.rdev() }
    } else {
        return Ok(None);
    }))
}

/// True when the cache entry describes the file as it is now.
pub(crate) fn unchanged(entry: &FileCacheEntry, meta: &Metadata) -> bool {
    entry.size == meta.len()
        && entry.mtime == ns(meta.mtime(), meta.mtime_nsec())
        && entry.ctime == ns(meta.ctime(), meta.ctime_nsec())
        && entry.inode == meta.ino()
        && entry.device == meta.dev()
}

/// A cache entry for a file read now.
pub(crate) fn cache_entry(meta: &Metadata, content: Vec<crate::id::BlobId>) -> FileCacheEntry {
    FileCacheEntry {
        size: meta.len(),
        mtime: ns(meta.mtime(), meta.mtime_nsec()),
        ctime: ns(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        device: meta.dev(),
        content,
    }
}
