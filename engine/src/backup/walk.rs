//! The walker: visits the paths to back up, depth-first in name order, and
//! turns each entry into a node, a file job, or a folder to descend into.
//!
//! Paths are stored under their absolute location: backing up `/home/a/docs`
//! gives a root tree with `home`, which holds `a`, which holds `docs`. The
//! folders on the way are recorded with their own metadata.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tree::NodeKind;

use super::dir::{DirBuilder, Parent};
use super::meta;
use super::options::BackupEvent;
use super::pipeline::{FileJob, Shared};
use crate::patterns::Patterns;

/// The folders leading to the paths given, as a trie of name components.
#[derive(Default)]
pub(crate) struct PathTrie {
    children: BTreeMap<Vec<u8>, PathTrie>,
    target: bool,
}

impl PathTrie {
    pub(crate) fn new(paths: &[PathBuf]) -> Self {
        let mut root = PathTrie::default();
        for p in paths {
            let mut node = &mut root;
            for c in p.components().skip(1) {
                if node.target {
                    break;
                }
                node = node
                    .children
                    .entry(c.as_os_str().as_bytes().to_vec())
                    .or_default();
            }
            node.target = true;
            node.children.clear();
        }
        root
    }
}

pub(crate) struct Walker<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) jobs: &'a crossbeam_channel::Sender<FileJob>,
    pub(crate) excludes: &'a Patterns,
    pub(crate) one_file_system: bool,
    pub(crate) force: bool,
}

impl Walker<'_> {
    fn warn(&self, path: &Path, message: String) {
        self.shared.file_failed(path, message);
    }

    /// Walks the trie rooted at `/`; the root's tree id goes to `root`.
    pub(crate) fn walk(&self, trie: &PathTrie, root: crossbeam_channel::Sender<crate::id::BlobId>) {
        self.visit_trie(Path::new("/"), trie, Parent::Root(root));
    }

    fn visit_trie(&self, path: &Path, trie: &PathTrie, parent: Parent) {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(path, format!("cannot read metadata: {e}"));
                skip(self.shared, parent);
                return;
            }
        };
        if trie.target {
            self.visit_target(path, &meta, parent);
            return;
        }
        let name = path.file_name().map(|n| n.as_bytes()).unwrap_or(b"/");
        let node = meta::node(
            name,
            &meta,
            NodeKind::Dir {
                subtree: crate::id::BlobId([0; 32]),
            },
        );
        let dir = DirBuilder::new(trie.children.len(), parent, node);
        for (i, (name, child)) in trie.children.iter().enumerate() {
            let child_path = path.join(std::ffi::OsStr::from_bytes(name));
            self.visit_trie(&child_path, child, Parent::Dir(dir.clone(), i));
        }
        dir.release(self.shared);
    }

    fn visit_target(&self, path: &Path, meta: &Metadata, parent: Parent) {
        let root_dev = meta.dev();
        let name = path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_else(|| b"/".to_vec());
        if meta.is_dir() {
            self.visit_dir(path, &name, meta, parent, root_dev);
        } else {
            // A single file or link given on the command line: a folder
            // holding just that entry stands for it.
            let dir = match parent {
                Parent::Dir(d, i) => (d, i),
                Parent::Root(tx) => {
                    let holder = DirBuilder::new(
                        1,
                        Parent::Root(tx),
                        meta::node(
                            b"/",
                            meta,
                            NodeKind::Dir {
                                subtree: crate::id::BlobId([0; 32]),
                            },
                        ),
                    );
                    self.visit_entry(path, &name, meta, holder.clone(), 0, root_dev);
                    holder.release(self.shared);
                    return;
                }
            };
            self.visit_entry(path, &name, meta, dir.0, dir.1, root_dev);
        }
    }

    fn visit_dir(&self, path: &Path, name: &[u8], meta: &Metadata, parent: Parent, root_dev: u64) {
        self.shared
            .stats
            .dirs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let node = meta::node(
            name,
            meta,
            NodeKind::Dir {
                subtree: crate::id::BlobId([0; 32]),
            },
        );
        let mut entries: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        let crosses = self.one_file_system && meta.dev() != root_dev;
        if !crosses {
            match std::fs::read_dir(path) {
                Ok(rd) => {
                    for entry in rd {
                        match entry {
                            Ok(e) => {
                                let child = e.path();
                                if !self.excludes.matches(&child) {
                                    entries.push((e.file_name().as_bytes().to_vec(), child));
                                }
                            }
                            Err(e) => self.warn(path, format!("cannot list folder: {e}")),
                        }
                    }
                }
                Err(e) => {
                    self.warn(path, format!("cannot list folder: {e}"));
                    skip(self.shared, parent);
                    return;
                }
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let dir = DirBuilder::new(entries.len(), parent, node);
        for (i, (name, child)) in entries.iter().enumerate() {
            if self.shared.aborted() {
                dir.fill(self.shared, i, None);
                continue;
            }
            match std::fs::symlink_metadata(child) {
                Ok(m) => {
                    if m.is_dir() {
                        self.visit_dir(child, name, &m, Parent::Dir(dir.clone(), i), root_dev);
                    } else {
                        self.visit_entry(child, name, &m, dir.clone(), i, root_dev);
                    }
                }
                Err(e) => {
                    self.warn(child, format!("cannot read metadata: {e}"));
                    dir.fill(self.shared, i, None);
                }
            }
        }
        dir.release(self.shared);
    }

    fn visit_entry(
        &self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        dir: Arc<DirBuilder>,
        index: usize,
        _root_dev: u64,
    ) {
        match meta::special_kind(path, meta) {
            Ok(Some(kind)) => {
                dir.fill(self.shared, index, Some(meta::node(name, meta, kind)));
                return;
            }
            Ok(None) => {}
            Err(e) => {
                self.warn(path, format!("cannot read link: {e}"));
                dir.fill(self.shared, index, None);
                return;
            }
        }
        let path_bytes = path.as_os_str().as_bytes();
        let cached = if self.force {
            None
        } else {
            self.shared.cached_file(path_bytes)
        };
        if let Some(entry) = &cached {
            if meta::unchanged(entry, meta) && self.shared.all_known(path, &entry.content) {
                let node = meta::node(
                    name,
                    meta,
                    NodeKind::File {
                        content: entry.content.clone(),
                    },
                );
                self.shared.file_unmodified(meta.len());
                dir.fill(self.shared, index, Some(node));
                return;
            }
        }
        let job = FileJob {
            path: path.to_owned(),
            node: meta::node(
                name,
                meta,
                NodeKind::File {
                    content: Vec::new(),
                },
            ),
            meta: meta.clone(),
            seen_before: cached.is_some(),
            dir: dir.clone(),
            index,
        };
        if let Err(crossbeam_channel::SendError(job)) = self.jobs.send(job) {
            job.dir.fill(self.shared, job.index, None);
        }
    }
}

fn skip(shared: &Arc<Shared>, parent: Parent) {
    match parent {
        Parent::Dir(d, i) => d.fill(shared, i, None),
        Parent::Root(tx) => {
            let node = crate::tree::Node {
                name: b"/".to_vec(),
                kind: NodeKind::Dir {
                    subtree: crate::id::BlobId([0; 32]),
                },
                mode: 0o40755,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
                ctime: 0,
                inode: 0,
                device: 0,
                links: 1,
            };
            DirBuilder::new(0, Parent::Root(tx), node).release(shared);
        }
    }
}

/// Counts files and bytes under the paths, for progress and ETA.
pub(crate) fn scan(paths: &[PathBuf], excludes: &Patterns, one_file_system: bool, shared: &Shared) {
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut stack: Vec<(PathBuf, u64)> = Vec::new();
    for p in paths {
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                stack.push((p.clone(), m.dev()));
            } else if m.is_file() {
                files += 1;
                bytes += m.len();
            }
        }
    }
    while let Some((dir, dev)) = stack.pop() {
        if shared.aborted() {
            return;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if excludes.matches(&path) {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if m.is_dir() {
                if !(one_file_system && m.dev() != dev) {
                    stack.push((path, dev));
                }
            } else if m.is_file() {
                files += 1;
                bytes += m.len();
                if files.is_multiple_of(1000) {
                    shared.emit(&BackupEvent::Scanned { files, bytes });
                }
            }
        }
    }
    shared.emit(&BackupEvent::ScanFinished { files, bytes });
}
