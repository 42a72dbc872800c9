//! Rewriting a snapshot's trees without what is lost: files whose content
//! cannot be had and folders whose tree cannot be read are left out, and
//! every folder above them gets a new tree. Used by `repair snapshots` and
//! by a backup commit whose sources changed before a re-upload.

use std::collections::{HashMap, HashSet};

use crate::blob::blob_id;
use crate::id::BlobId;
use crate::tree::{NodeKind, Tree};

/// Deeper folders than this are treated as unreadable (a hostile tree
/// cannot make the rewrite recurse without bound).
const MAX_DEPTH: usize = 4096;

/// A snapshot's trees after a rewrite.
#[derive(Debug)]
pub(crate) struct Rewritten {
    /// The new root tree.
    pub(crate) root: BlobId,
    /// Trees that did not exist before, with their bytes.
    pub(crate) trees: Vec<(BlobId, Vec<u8>)>,
    /// Paths left out, with why.
    pub(crate) lost: Vec<(String, String)>,
}

/// Rewrites the tree at `root`. `trees` holds every readable tree (a tree
/// missing from it is unreadable); `usable` says whether a data blob can be
/// had. Returns `None` when nothing needs to change.
pub(crate) fn drop_lost(
    root: BlobId,
    trees: &HashMap<BlobId, Tree>,
    usable: &dyn Fn(&BlobId) -> bool,
    chunk_id_key: &[u8; 32],
) -> Option<Rewritten> {
    let mut r = Rewriter {
        trees,
        usable,
        key: chunk_id_key,
        done: HashMap::new(),
        out: Rewritten {
            root,
            trees: Vec::new(),
            lost: Vec::new(),
        },
        written: HashSet::new(),
    };
    let new_root = match r.visit(&root, "/", 0) {
        Some(id) => id,
        None => {
            r.out
                .lost
                .push(("/".into(), "the root tree cannot be read".into()));
            r.store(&Tree { nodes: Vec::new() })
        }
    };
    if new_root == root && r.out.lost.is_empty() {
        return None;
    }
    r.out.root = new_root;
    Some(r.out)
}

struct Rewriter<'a> {
    trees: &'a HashMap<BlobId, Tree>,
    usable: &'a dyn Fn(&BlobId) -> bool,
    key: &'a [u8; 32],
    /// Trees already visited: their new id (None: unreadable).
    done: HashMap<BlobId, Option<BlobId>>,
    out: Rewritten,
    written: HashSet<BlobId>,
}

impl Rewriter<'_> {
    fn store(&mut self, tree: &Tree) -> BlobId {
        let bytes = tree.to_bytes();
        let id = blob_id(self.key, &bytes);
        if self.written.insert(id) && !self.trees.contains_key(&id) {
            self.out.trees.push((id, bytes));
        }
        id
    }

    /// The new id of the tree `id` at `path`; `None` when it is unreadable.
    fn visit(&mut self, id: &BlobId, path: &str, depth: usize) -> Option<BlobId> {
        if let Some(done) = self.done.get(id) {
            return *done;
        }
        let result = match self.trees.get(id) {
            Some(tree) if depth < MAX_DEPTH => {
                let mut nodes = Vec::with_capacity(tree.nodes.len());
                let mut changed = false;
                for node in &tree.nodes {
                    let child = format!("{}/{}", path.trim_end_matches('/'), node.name_lossy());
                    match &node.kind {
                        NodeKind::Dir { subtree } => match self.visit(subtree, &child, depth + 1) {
                            Some(new) => {
                                let mut n = node.clone();
                                changed |= new != *subtree;
                                n.kind = NodeKind::Dir { subtree: new };
                                nodes.push(n);
                            }
                            None => {
                                changed = true;
                                self.out
                                    .lost
                                    .push((child, "its folder listing cannot be read".into()));
                            }
                        },
                        NodeKind::File { content } => {
                            if let Some(b) = content.iter().find(|b| !(self.usable)(b)) {
                                changed = true;
                                self.out.lost.push((
                                    child,
                                    format!("content blob {} cannot be had", b.short()),
                                ));
                            } else {
                                nodes.push(node.clone());
                            }
                        }
                        _ => nodes.push(node.clone()),
                    }
                }
                if changed {
                    Some(self.store(&Tree { nodes }))
                } else {
                    Some(*id)
                }
            }
            _ => None,
        };
        self.done.insert(*id, result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    fn node(name: &str, kind: NodeKind) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            ctime: 0,
            inode: 0,
            device: 0,
            links: 1,
        }
    }

    #[test]
    fn files_with_lost_content_and_unreadable_folders_are_left_out_and_reported() {
        let key = [1u8; 32];
        let good = BlobId([1; 32]);
        let gone = BlobId([2; 32]);
        let missing_tree = BlobId([3; 32]);
        let sub = Tree {
            nodes: vec![
                node(
                    "a",
                    NodeKind::File {
                        content: vec![good],
                    },
                ),
                node(
                    "b",
                    NodeKind::File {
                        content: vec![good, gone],
                    },
                ),
            ],
        };
        let sub_id = blob_id(&key, &sub.to_bytes());
        let root = Tree {
            nodes: vec![
                node(
                    "broken",
                    NodeKind::Dir {
                        subtree: missing_tree,
                    },
                ),
                node("d", NodeKind::Dir { subtree: sub_id }),
                node(
                    "l",
                    NodeKind::Symlink {
                        target: b"x".to_vec(),
                    },
                ),
            ],
        };
        let root_id = blob_id(&key, &root.to_bytes());
        let trees: HashMap<BlobId, Tree> = [(sub_id, sub), (root_id, root)].into_iter().collect();
        let usable = |b: &BlobId| *b != gone;
        let r = drop_lost(root_id, &trees, &usable, &key).unwrap();
        let lost: Vec<&str> = r.lost.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(lost, vec!["/broken", "/d/b"]);
        assert_ne!(r.root, root_id);
        assert_eq!(r.trees.len(), 2, "a new folder d and a new root");
        let new_root = Tree::from_bytes(
            &r.trees.iter().find(|(id, _)| *id == r.root).unwrap().1,
            &r.root,
        )
        .unwrap();
        assert_eq!(new_root.nodes.len(), 2);
        let all = |_: &BlobId| true;
        let trees_ok: HashMap<BlobId, Tree> = trees
            .into_iter()
            .filter(|(id, _)| *id != missing_tree)
            .collect();
        assert!(
            drop_lost(sub_id, &trees_ok, &all, &key).is_none(),
            "nothing lost, nothing changes"
        );
    }
}
