//! Planning: walk the snapshot's trees, create the skeleton of the restore
//! (folders, links, empty files of their final length) and list, per blob,
//! every place it must be written.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::id::BlobId;
use crate::patterns::Patterns;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind, Tree};
use crate::{Error, Result};

use super::options::{RestoreEvent, RestoreObserver, RestoreOptions, RestoreOutcome};

/// A file to fill.
pub(crate) struct PlannedFile {
    pub(crate) target: PathBuf,
    pub(crate) node: Node,
}

/// Everything a restore will do.
pub(crate) struct Plan {
    /// Folders, parents before children.
    pub(crate) dirs: Vec<(PathBuf, Node)>,
    /// Files with content, and their nodes.
    pub(crate) files: Vec<PlannedFile>,
    /// Links, hard links and specials, for metadata.
    pub(crate) others: Vec<(PathBuf, Node)>,
    /// Every place each blob goes: (file index, offset).
    pub(crate) blobs: HashMap<BlobId, Vec<(u32, u64)>>,
    /// Bytes of all planned files.
    pub(crate) total_bytes: u64,
}

struct Filter {
    includes: Option<Patterns>,
    excludes: Patterns,
}

impl Filter {
    /// Whether to restore `path`; `inherited` is true when an ancestor was
    /// included.
    fn selects(&self, path: &Path, inherited: bool) -> (bool, bool) {
        if self.excludes.matches(path) {
            return (false, false);
        }
        match &self.includes {
            None => (true, true),
            Some(inc) => {
                let hit = inherited || inc.matches(path);
                (hit, hit)
            }
        }
    }
}

fn warn(observer: &RestoreObserver, outcome: &mut RestoreOutcome, path: &Path, message: String) {
    observer(&RestoreEvent::Warning {
        path: path.display().to_string(),
        message: message.clone(),
    });
    outcome.errors.push((path.display().to_string(), message));
}

/// Trees read ahead of the walk. When the walk needs a tree it does not
/// hold, it reads it together with the trees waiting on the stack, grouped
/// by pack (`Repository::read_blobs`): on a remote repository that is one
/// round trip per region of a tree pack instead of one per folder.
#[derive(Default)]
struct TreesAhead {
    ready: HashMap<BlobId, Tree>,
    /// Trees a batch could not read: each is read alone, which names the
    /// damage, and never batched again.
    unreadable: std::collections::HashSet<BlobId>,
}

/// Trees read in one batch at most.
const TREES_AHEAD: usize = 256;

impl TreesAhead {
    async fn take(
        &mut self,
        repo: &Repository,
        id: &BlobId,
        waiting: impl Iterator<Item = BlobId>,
    ) -> Result<Tree> {
        if let Some(tree) = self.ready.remove(id) {
            return Ok(tree);
        }
        if !self.unreadable.contains(id) {
            let mut batch: Vec<BlobId> = std::iter::once(*id)
                .chain(waiting)
                .filter(|w| !self.ready.contains_key(w) && !self.unreadable.contains(w))
                .take(TREES_AHEAD)
                .collect();
            // A damaged or missing tree fails the whole batch: set it aside
            // and read the rest (a few tries, then one at a time).
            for _ in 0..4 {
                match repo.read_blobs(&batch).await {
                    Ok(blobs) => {
                        for (blob, bytes) in blobs {
                            if let Ok(tree) = Tree::from_bytes(&bytes, &blob) {
                                self.ready.insert(blob, tree);
                            }
                        }
                        break;
                    }
                    Err(Error::BlobNotFound(bad) | Error::BlobDamaged { blob: bad, .. }) => {
                        self.unreadable.insert(bad);
                        batch.retain(|b| *b != bad);
                    }
                    Err(_) => break,
                }
            }
        }
        match self.ready.remove(id) {
            Some(tree) => Ok(tree),
            None => repo.read_tree(id).await,
        }
    }
}

pub(crate) async fn build(
    repo: &Repository,
    root: &BlobId,
    target: &Path,
    options: &RestoreOptions,
    observer: &RestoreObserver,
    outcome: &mut RestoreOutcome,
) -> Result<Plan> {
    let filter = Filter {
        includes: if options.includes.is_empty() {
            None
        } else {
            Some(Patterns::new(&options.includes, &[])?)
        },
        excludes: Patterns::new(&options.excludes, &[])?,
    };
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        others: Vec::new(),
        blobs: HashMap::new(),
        total_bytes: 0,
    };
    let mut hardlinks: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Depth-first over trees: (tree id, snapshot path, target path, included).
    let mut stack: Vec<(BlobId, PathBuf, PathBuf, bool)> =
        vec![(*root, PathBuf::from("/"), target.to_owned(), false)];
    let mut created_dirs: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut pending_dirs: HashMap<PathBuf, Node> = HashMap::new();
    let mut trees = TreesAhead::default();
    while let Some((tree_id, snap_path, dest, inherited)) = stack.pop() {
        let waiting = stack.iter().rev().map(|(id, ..)| *id);
        let tree = match trees.take(repo, &tree_id, waiting).await {
            Ok(t) => t,
            Err(e) if e.is_damage() => {
                outcome.damage = true;
                warn(
                    observer,
                    outcome,
                    &snap_path,
                    format!("folder cannot be read: {e}"),
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        for node in tree.nodes.into_iter().rev() {
            let name = OsStr::from_bytes(&node.name);
            let child_snap = snap_path.join(name);
            let child_dest = dest.join(name);
            let (selected, pass_down) = filter.selects(&child_snap, inherited);
            if let NodeKind::Dir { subtree } = &node.kind {
                if filter.excludes.matches(&child_snap) {
                    continue;
                }
                if selected {
                    ensure_dir(&child_dest, target, &mut created_dirs)?;
                    plan.dirs.push((child_dest.clone(), node.clone()));
                    outcome.dirs += 1;
                } else {
                    pending_dirs.insert(child_dest.clone(), node.clone());
                }
                stack.push((*subtree, child_snap, child_dest, pass_down));
                continue;
            }
            if !selected {
                continue;
            }
            if let Some(parent) = child_dest.parent() {
                if parent != target && !created_dirs.contains(parent) {
                    ensure_dir(parent, target, &mut created_dirs)?;
                    let mut p = parent.to_owned();
                    // Folders created only to hold a selected entry get their own metadata too.
                    while p != target {
                        if let Some(n) = pending_dirs.remove(&p) {
                            plan.dirs.push((p.clone(), n));
                            outcome.dirs += 1;
                        }
                        if !p.pop() {
                            break;
                        }
                    }
                }
            }
            match &node.kind {
                NodeKind::File { content } => {
                    if node.links > 1 {
                        let key = (node.device, node.inode);
                        if let Some(first) = hardlinks.get(&key) {
                            match std::fs::hard_link(first, &child_dest) {
                                Ok(()) => {
                                    outcome.others += 1;
                                    continue;
                                }
                                Err(e) => {
                                    observer(&RestoreEvent::Warning {
                                        path: child_dest.display().to_string(),
                                        message: format!("cannot hard link, writing a copy: {e}"),
                                    });
                                }
                            }
                        } else {
                            hardlinks.insert(key, child_dest.clone());
                        }
                    }
                    let f = std::fs::File::create(&child_dest)
                        .map_err(|e| Error::io("create", &child_dest, e))?;
                    f.set_len(node.size)
                        .map_err(|e| Error::io("size", &child_dest, e))?;
                    let index = u32::try_from(plan.files.len())
                        .map_err(|_| Error::InvalidInput("too many files".into()))?;
                    let mut offset = 0u64;
                    let mut sizes_unknown = false;
                    let index_cache = repo.index().await?;
                    for id in content {
                        // Without a blob's length the offsets of the ones after it are
                        // unknown: the file keeps a hole from there on.
                        let Some(loc) = index_cache.lookup(id)? else {
                            sizes_unknown = true;
                            break;
                        };
                        plan.blobs.entry(*id).or_default().push((index, offset));
                        offset += u64::from(loc.raw_length);
                    }
                    if sizes_unknown {
                        outcome.damage = true;
                        warn(
                            observer,
                            outcome,
                            &child_dest,
                            "some of its content is missing from the repository".into(),
                        );
                    }
                    // A size from a tree on disk: saturate, never overflow.
                    plan.total_bytes = plan.total_bytes.saturating_add(node.size);
                    plan.files.push(PlannedFile {
                        target: child_dest,
                        node,
                    });
                }
                NodeKind::Symlink { target: link } => {
                    match std::os::unix::fs::symlink(OsStr::from_bytes(link), &child_dest) {
                        Ok(()) => {
                            outcome.others += 1;
                            plan.others.push((child_dest, node));
                        }
                        Err(e) => warn(
                            observer,
                            outcome,
                            &child_dest,
                            format!("cannot create link: {e}"),
                        ),
                    }
                }
                NodeKind::Socket => {
                    // A socket belongs to the process that listened on it; it is recorded, not recreated.
                }
                NodeKind::Fifo | NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } => {
                    match make_special(&child_dest, &node) {
                        Ok(()) => {
                            outcome.others += 1;
                            plan.others.push((child_dest, node));
                        }
                        Err(e) => warn(
                            observer,
                            outcome,
                            &child_dest,
                            format!("cannot create special file: {e}"),
                        ),
                    }
                }
                NodeKind::Dir { .. } => {}
            }
        }
    }
    Ok(plan)
}

fn ensure_dir(
    dir: &Path,
    target: &Path,
    created: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    if dir == target || created.contains(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create folder", dir, e))?;
    let mut p = dir.to_owned();
    while p != target && created.insert(p.clone()) {
        if !p.pop() {
            break;
        }
    }
    Ok(())
}

fn make_special(path: &Path, node: &Node) -> nix::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let mode = Mode::from_bits_truncate(node.mode & 0o7777);
    match node.kind {
        NodeKind::Fifo => nix::unistd::mkfifo(path, mode),
        NodeKind::CharDevice { rdev } => mknod(path, SFlag::S_IFCHR, mode, rdev),
        NodeKind::BlockDevice { rdev } => mknod(path, SFlag::S_IFBLK, mode, rdev),
        _ => Ok(()),
    }
}
