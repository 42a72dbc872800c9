//! Differences between two snapshots. Both trees are walked together in
//! name order; a folder whose tree id is the same on both sides is identical
//! all the way down and is not read.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind, Tree};
use crate::Result;

/// How an entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// A file whose content differs.
    Modified,
    /// Same content, different metadata (mode, owner, time).
    Metadata,
    /// A different kind of entry (file became folder, …).
    Type,
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The path inside the snapshots.
    pub path: String,
    /// What changed.
    pub change: Change,
    /// Size in the first snapshot (files).
    pub size_before: Option<u64>,
    /// Size in the second snapshot (files).
    pub size_after: Option<u64>,
}

fn kind_tag(n: &Node) -> u8 {
    match n.kind {
        NodeKind::File { .. } => 0,
        NodeKind::Dir { .. } => 1,
        NodeKind::Symlink { .. } => 2,
        NodeKind::Fifo => 3,
        NodeKind::CharDevice { .. } => 4,
        NodeKind::BlockDevice { .. } => 5,
        NodeKind::Socket => 6,
    }
}

fn size(n: &Node) -> Option<u64> {
    matches!(n.kind, NodeKind::File { .. }).then_some(n.size)
}

/// A folder's time changes whenever an entry does, which the entries' own
/// differences already show; only its mode and owner count.
fn metadata_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode || a.uid != b.uid || a.gid != b.gid || (!a.is_dir() && a.mtime != b.mtime)
}

/// Every difference between the trees `a` and `b`, in path order. Folders
/// that appear or disappear are listed with everything under them.
pub async fn diff_trees(repo: &Repository, a: &BlobId, b: &BlobId) -> Result<Vec<Difference>> {
    let mut out = Vec::new();
    walk(repo, Some(*a), Some(*b), String::new(), &mut out).await?;
    Ok(out)
}

fn walk<'a>(
    repo: &'a Repository,
    a: Option<BlobId>,
    b: Option<BlobId>,
    path: String,
    out: &'a mut Vec<Difference>,
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        if a == b {
            return Ok(());
        }
        let left = match a {
            Some(id) => repo.read_tree(&id).await?,
            None => Tree::default(),
        };
        let right = match b {
            Some(id) => repo.read_tree(&id).await?,
            None => Tree::default(),
        };
        let (mut i, mut j) = (0, 0);
        while i < left.nodes.len() || j < right.nodes.len() {
            let l = left.nodes.get(i);
            let r = right.nodes.get(j);
            let order = match (l, r) {
                (Some(l), Some(r)) => l.name.cmp(&r.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let name = match order {
                std::cmp::Ordering::Greater => r.map(Node::name_lossy),
                _ => l.map(Node::name_lossy),
            }
            .unwrap_or_default();
            let child = format!("{path}/{name}");
            let subtree = |n: Option<&Node>| match n.map(|n| &n.kind) {
                Some(NodeKind::Dir { subtree }) => Some(*subtree),
                _ => None,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let l = l.cloned();
                    i += 1;
                    if let Some(l) = l {
                        out.push(Difference {
                            path: child.clone(),
                            change: Change::Removed,
                            size_before: size(&l),
                            size_after: None,
                        });
                        if let Some(t) = subtree(Some(&l)) {
                            walk(repo, Some(t), None, child, out).await?;
                        }
                    }
                }
                std::cmp::Ordering::Greater => {
                    let r = r.cloned();
                    j += 1;
                    if let Some(r) = r {
                        out.push(Difference {
                            path: child.clone(),
                            change: Change::Added,
                            size_before: None,
                            size_after: size(&r),
                        });
                        if let Some(t) = subtree(Some(&r)) {
                            walk(repo, None, Some(t), child, out).await?;
                        }
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (Some(l), Some(r)) = (l.cloned(), r.cloned()) else {
                        break;
                    };
                    i += 1;
                    j += 1;
                    let change = if kind_tag(&l) != kind_tag(&r) {
                        Some(Change::Type)
                    } else {
                        match (&l.kind, &r.kind) {
                            (NodeKind::File { content: a }, NodeKind::File { content: b })
                                if a != b =>
                            {
                                Some(Change::Modified)
                            }
                            (NodeKind::Symlink { target: a }, NodeKind::Symlink { target: b })
                                if a != b =>
                            {
                                Some(Change::Modified)
                            }
                            _ if metadata_differs(&l, &r) => Some(Change::Metadata),
                            _ => None,
                        }
                    };
                    if let Some(change) = change {
                        out.push(Difference {
                            path: child.clone(),
                            change,
                            size_before: size(&l),
                            size_after: size(&r),
                        });
                    }
                    let (ta, tb) = (subtree(Some(&l)), subtree(Some(&r)));
                    if ta.is_some() || tb.is_some() {
                        walk(repo, ta, tb, child, out).await?;
                    }
                }
            }
        }
        Ok(())
    })
}
