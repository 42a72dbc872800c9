//! The read-only file system behind `kith mount` (FUSE, via fuser).
//!
//! Layout (docs/CLI.md):
//!
//! ```text
//! /ids/<short id>/…                 every snapshot, by id
//! /hosts/<host>/<time>/…            by host, then time
//! /dates/<time>/…                   every snapshot by time
//! /latest -> ids/<short id>         the newest snapshot
//! ```
//!
//! Inodes are handed out on first sight: a folder's children get theirs
//! when it is first looked into. File content is read through the engine's
//! pack-centric reader (`Repository::read_blobs`): a read that misses the
//! cache of decrypted blobs fetches the blobs it needs and the next
//! [`READ_AHEAD`] bytes of the file, grouped by pack into one ranged read
//! per region, so a file read in order costs one request per few MiB and
//! each blob is fetched once.
//!
//! fuser calls in on its own threads; engine calls run on the command's
//! tokio runtime through a handle.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use kith_engine::tree::{Node, NodeKind};
use kith_engine::{BlobId, Repository, Snapshot, SnapshotId};

/// Snapshots never change, so the kernel may keep what it learns.
const TTL: Duration = Duration::from_secs(3600);
/// Bytes of decrypted blobs kept for reads.
const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// How far past a read that missed the cache the file is fetched: files
/// are mostly read in order, and the kernel asks in pieces of 128 KiB.
const READ_AHEAD: u64 = 8 * 1024 * 1024;

/// What an inode stands for.
enum What {
    /// A folder made up by the layout.
    Virtual,
    /// A folder of a snapshot (its root has no node).
    Dir { tree: BlobId, node: Option<Node> },
    /// Anything else of a snapshot.
    Entry(Node),
    /// A symbolic link made up by the layout (`latest`).
    Link(Vec<u8>),
}

/// A folder's entries: name and inode.
type Children = Vec<(OsString, u64)>;

struct Inode {
    parent: u64,
    what: What,
    /// Name → inode, once known.
    children: Option<Children>,
    /// A file's blob offsets (start of each blob), once opened.
    offsets: Option<Arc<Vec<(u64, BlobId)>>>,
}

struct Table {
    inodes: Vec<Inode>,
}

impl Table {
    fn add(&mut self, parent: u64, what: What) -> u64 {
        self.inodes.push(Inode {
            parent,
            what,
            children: None,
            offsets: None,
        });
        self.inodes.len() as u64
    }

    fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes
            .get_mut(usize::try_from(ino).ok()?.checked_sub(1)?)
    }
}

/// Decrypted blobs, least recently used out first.
struct BlockCache {
    blobs: HashMap<BlobId, Arc<Vec<u8>>>,
    order: VecDeque<BlobId>,
    bytes: usize,
}

impl BlockCache {
    fn get(&mut self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        let b = self.blobs.get(id)?.clone();
        if let Some(pos) = self.order.iter().position(|x| x == id) {
            self.order.remove(pos);
        }
        self.order.push_back(*id);
        Some(b)
    }

    fn put(&mut self, id: BlobId, data: Arc<Vec<u8>>) {
        self.bytes += data.len();
        match self.blobs.insert(id, data) {
            // Cached again: the old copy's bytes are gone.
            Some(old) => self.bytes = self.bytes.saturating_sub(old.len()),
            None => self.order.push_back(id),
        }
        while self.bytes > BLOCK_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.blobs.remove(&old) {
                self.bytes -= d.len();
            }
        }
    }
}

/// The mounted repository.
pub(crate) struct SnapshotFs {
    repo: Arc<Repository>,
    runtime: tokio::runtime::Handle,
    table: Mutex<Table>,
    cache: Mutex<BlockCache>,
    /// The mount's own times, for made-up folders.
    mounted: SystemTime,
    uid: u32,
    gid: u32,
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A name for a snapshot time, valid as a file name.
fn time_name(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    })
    .unwrap_or_else(|| ns.to_string())
}

/// `name`, or `name-<short id>` when taken.
fn unique(taken: &mut Children, name: String, id: &SnapshotId, ino: u64) {
    let name = if taken.iter().any(|(n, _)| n == name.as_str()) {
        format!("{name}-{}", id.short())
    } else {
        name
    };
    taken.push((OsString::from(name), ino));
}

impl SnapshotFs {
    /// Builds the layout for `snapshots` (oldest first).
    pub(crate) fn new(
        repo: Arc<Repository>,
        runtime: tokio::runtime::Handle,
        snapshots: &[(SnapshotId, Snapshot)],
    ) -> Self {
        let mut t = Table { inodes: Vec::new() };
        let root = t.add(1, What::Virtual);
        let ids = t.add(root, What::Virtual);
        let hosts = t.add(root, What::Virtual);
        let dates = t.add(root, What::Virtual);
        let mut id_children = Vec::new();
        let mut date_children = Vec::new();
        let mut host_dirs: Vec<(String, u64, Children)> = Vec::new();
        let mut latest = None;
        for (id, s) in snapshots {
            let root_of = |t: &mut Table, parent: u64| {
                t.add(
                    parent,
                    What::Dir {
                        tree: s.tree,
                        node: None,
                    },
                )
            };
            let by_id = root_of(&mut t, ids);
            let short = if snapshots
                .iter()
                .filter(|(other, _)| other.short() == id.short())
                .count()
                > 1
            {
                id.to_hex()
            } else {
                id.short()
            };
            id_children.push((OsString::from(&short), by_id));
            latest = Some(short);
            let by_date = root_of(&mut t, dates);
            unique(&mut date_children, time_name(s.time), id, by_date);
            let host_name = if s.host.is_empty() || s.host.contains('/') {
                s.host.replace('/', "_") + "_"
            } else {
                s.host.clone()
            };
            let pos = match host_dirs.iter().position(|(h, _, _)| *h == host_name) {
                Some(p) => p,
                None => {
                    let ino = t.add(hosts, What::Virtual);
                    host_dirs.push((host_name.clone(), ino, Vec::new()));
                    host_dirs.len() - 1
                }
            };
            // `pos` is a position in `host_dirs`, found or just pushed.
            let Some((_, host_ino, children)) = host_dirs.get_mut(pos) else {
                continue;
            };
            let by_host = root_of(&mut t, *host_ino);
            unique(children, time_name(s.time), id, by_host);
        }
        let mut root_children = vec![
            (OsString::from("ids"), ids),
            (OsString::from("hosts"), hosts),
            (OsString::from("dates"), dates),
        ];
        if let Some(short) = latest {
            let link = t.add(root, What::Link(format!("ids/{short}").into_bytes()));
            root_children.push((OsString::from("latest"), link));
        }
        let mut host_children = Vec::new();
        for (name, ino, children) in host_dirs {
            if let Some(i) = t.get_mut(ino) {
                i.children = Some(children);
            }
            host_children.push((OsString::from(name), ino));
        }
        for (ino, children) in [
            (root, root_children),
            (ids, id_children),
            (hosts, host_children),
            (dates, date_children),
        ] {
            if let Some(i) = t.get_mut(ino) {
                i.children = Some(children);
            }
        }
        let (uid, gid) = (current_uid(), current_gid());
        SnapshotFs {
            repo,
            runtime,
            table: Mutex::new(t),
            cache: Mutex::new(BlockCache {
                blobs: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            mounted: SystemTime::now(),
            uid,
            gid,
        }
    }

    fn attr(&self, ino: u64, inode: &Inode) -> FileAttr {
        let virtual_dir = |kind: FileType, perm: u16, size: u64| FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: self.mounted,
            mtime: self.mounted,
            ctime: self.mounted,
            crtime: self.mounted,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        let node = match &inode.what {
            What::Virtual | What::Dir { node: None, .. } => {
                return virtual_dir(FileType::Directory, 0o555, 0)
            }
            What::Link(target) => {
                return virtual_dir(FileType::Symlink, 0o777, target.len() as u64)
            }
            What::Dir { node: Some(n), .. } | What::Entry(n) => n,
        };
        let (kind, size, rdev) = match &node.kind {
            NodeKind::File { .. } => (FileType::RegularFile, node.size, 0),
            NodeKind::Dir { .. } => (FileType::Directory, 0, 0),
            NodeKind::Symlink { target } => (FileType::Symlink, target.len() as u64, 0),
            NodeKind::Fifo => (FileType::NamedPipe, 0, 0),
            NodeKind::CharDevice { rdev } => (FileType::CharDevice, 0, *rdev),
            NodeKind::BlockDevice { rdev } => (FileType::BlockDevice, 0, *rdev),
            NodeKind::Socket => (FileType::Socket, 0, 0),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(node.mtime),
            mtime: time(node.mtime),
            ctime: time(node.ctime),
            crtime: time(node.mtime),
            kind,
            perm: (node.mode & 0o7777) as u16,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: node.uid,
            gid: node.gid,
            rdev: u32::try_from(rdev).unwrap_or(0),
            blksize: 4096,
            flags: 0,
        }
    }

    /// The children of a folder, loading its tree on first use.
    fn children(&self, ino: u64) -> Result<Children, Errno> {
        let tree_id = {
            let t = self.table.lock().map_err(|_| Errno::EIO)?;
            let inode = t.get(ino).ok_or(Errno::ENOENT)?;
            if let Some(c) = &inode.children {
                return Ok(c.clone());
            }
            match &inode.what {
                What::Dir { tree, .. } => *tree,
                _ => return Err(Errno::ENOTDIR),
            }
        };
        let repo = self.repo.clone();
        let tree = self
            .runtime
            .block_on(async move { repo.read_tree(&tree_id).await })
            .map_err(|e| {
                tracing::warn!(tree = %tree_id, error = %e, "cannot read a folder");
                Errno::EIO
            })?;
        let mut t = self.table.lock().map_err(|_| Errno::EIO)?;
        if let Some(c) = t.get(ino).and_then(|i| i.children.clone()) {
            return Ok(c);
        }
        let mut children = Vec::with_capacity(tree.nodes.len());
        for node in tree.nodes {
            let name = OsString::from(OsStr::from_bytes(&node.name));
            let what = match node.kind {
                NodeKind::Dir { subtree } => What::Dir {
                    tree: subtree,
                    node: Some(node),
                },
                _ => What::Entry(node),
            };
            let child = t.add(ino, what);
            children.push((name, child));
        }
        if let Some(i) = t.get_mut(ino) {
            i.children = Some(children.clone());
        }
        Ok(children)
    }

    /// A file's blobs with the offset each starts at.
    fn offsets(&self, ino: u64) -> Result<Arc<Vec<(u64, BlobId)>>, Errno> {
        let content = {
            let t = self.table.lock().map_err(|_| Errno::EIO)?;
            let inode = t.get(ino).ok_or(Errno::ENOENT)?;
            if let Some(o) = &inode.offsets {
                return Ok(o.clone());
            }
            match &inode.what {
                What::Entry(Node {
                    kind: NodeKind::File { content },
                    ..
                }) => content.clone(),
                What::Entry(_) => return Err(Errno::EINVAL),
                _ => return Err(Errno::EISDIR),
            }
        };
        let repo = self.repo.clone();
        let offsets = self
            .runtime
            .block_on(async move {
                let index = repo.index().await?;
                let mut at = 0u64;
                let mut out = Vec::with_capacity(content.len());
                for id in content {
                    let loc = index
                        .lookup(&id)?
                        .ok_or(kith_engine::Error::BlobNotFound(id))?;
                    out.push((at, id));
                    at += u64::from(loc.raw_length);
                }
                Ok::<_, kith_engine::Error>(out)
            })
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot open a file");
                Errno::EIO
            })?;
        let offsets = Arc::new(offsets);
        let mut t = self.table.lock().map_err(|_| Errno::EIO)?;
        if let Some(i) = t.get_mut(ino) {
            i.offsets = Some(offsets.clone());
        }
        Ok(offsets)
    }

    fn blob(&self, id: &BlobId) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some(b) = self.cache.lock().map_err(|_| Errno::EIO)?.get(id) {
            return Ok(b);
        }
        let repo = self.repo.clone();
        let blob_id = *id;
        let data = self
            .runtime
            .block_on(async move { repo.read_blob(&blob_id).await })
            .map_err(|e| {
                tracing::warn!(blob = %blob_id, error = %e, "cannot read data");
                Errno::EIO
            })?;
        let data = Arc::new(data);
        self.cache
            .lock()
            .map_err(|_| Errno::EIO)?
            .put(*id, data.clone());
        Ok(data)
    }

    /// When a blob of `offsets[first..]` that starts before `end` is not
    /// cached, fetches every uncached blob from there to [`READ_AHEAD`]
    /// past `end` in one pack-centric read, and caches them.
    fn fetch_missing(
        &self,
        offsets: &[(u64, BlobId)],
        first: usize,
        end: u64,
    ) -> Result<(), Errno> {
        let needed = offsets
            .iter()
            .skip(first)
            .take_while(|(start, _)| *start < end);
        let missing = {
            let mut cache = self.cache.lock().map_err(|_| Errno::EIO)?;
            needed.clone().any(|(_, id)| cache.get(id).is_none())
        };
        if !missing {
            return Ok(());
        }
        let ahead = end.saturating_add(READ_AHEAD);
        let wanted: Vec<BlobId> = {
            let mut cache = self.cache.lock().map_err(|_| Errno::EIO)?;
            offsets
                .iter()
                .skip(first)
                .take_while(|(start, _)| *start < ahead)
                .map(|(_, id)| *id)
                .filter(|id| cache.get(id).is_none())
                .collect()
        };
        let repo = self.repo.clone();
        let blobs = self
            .runtime
            .block_on(async move { repo.read_blobs(&wanted).await })
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot read data");
                Errno::EIO
            })?;
        let mut cache = self.cache.lock().map_err(|_| Errno::EIO)?;
        for (id, data) in blobs {
            cache.put(id, Arc::new(data));
        }
        Ok(())
    }

    fn read_range(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let offsets = self.offsets(ino)?;
        let file_size = {
            let t = self.table.lock().map_err(|_| Errno::EIO)?;
            match t.get(ino).map(|i| &i.what) {
                Some(What::Entry(n)) => n.size,
                _ => return Err(Errno::ENOENT),
            }
        };
        let end = offset.saturating_add(u64::from(size)).min(file_size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        if offset >= end {
            return Ok(out);
        }
        // The first blob that starts at or before `offset`.
        let first = offsets.partition_point(|(start, _)| *start <= offset);
        self.fetch_missing(&offsets, first.saturating_sub(1), end)?;
        let mut pos = offset;
        for (start, id) in offsets.iter().skip(first.saturating_sub(1)) {
            if pos >= end {
                break;
            }
            let data = self.blob(id)?;
            let blob_end = start + data.len() as u64;
            if blob_end <= pos {
                continue;
            }
            let from = (pos - start) as usize;
            let to = (end.min(blob_end) - start) as usize;
            // `pos` lies in this blob and `to` is at most its end.
            let Some(part) = data.get(from..to) else {
                break;
            };
            out.extend_from_slice(part);
            pos = start + to as u64;
        }
        Ok(out)
    }
}

#[allow(unsafe_code)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[allow(unsafe_code)]
fn current_gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let children = match self.children(parent.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let Some((_, ino)) = children.iter().find(|(n, _)| n == name) else {
            return reply.error(Errno::ENOENT);
        };
        let Ok(t) = self.table.lock() else {
            return reply.error(Errno::EIO);
        };
        match t.get(*ino) {
            Some(inode) => reply.entry(&TTL, &self.attr(*ino, inode), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Ok(t) = self.table.lock() else {
            return reply.error(Errno::EIO);
        };
        match t.get(ino.0) {
            Some(inode) => reply.attr(&TTL, &self.attr(ino.0, inode)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Ok(t) = self.table.lock() else {
            return reply.error(Errno::EIO);
        };
        match t.get(ino.0).map(|i| &i.what) {
            Some(What::Link(target))
            | Some(What::Entry(Node {
                kind: NodeKind::Symlink { target },
                ..
            })) => reply.data(target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.offsets(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_range(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let children = match self.children(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let Ok(t) = self.table.lock() else {
            return reply.error(Errno::EIO);
        };
        let parent = t.get(ino.0).map(|i| i.parent).unwrap_or(1);
        let mut entries = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in children {
            let kind = t
                .get(child)
                .map(|i| self.attr(child, i).kind)
                .unwrap_or(FileType::RegularFile);
            entries.push((child, kind, name));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}
