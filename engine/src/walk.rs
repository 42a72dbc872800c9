//! Walking a snapshot's trees: the listing behind `ls`.

use std::future::Future;
use std::pin::Pin;

use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};
use crate::{Error, Result};

/// Calls `f` with the path and node of every entry under `start` (an
/// absolute path inside the snapshot, `/` for everything), parents before
/// children, in name order.
pub async fn walk_snapshot(
    repo: &Repository,
    root: &BlobId,
    start: &str,
    f: &mut (dyn FnMut(&str, &Node) + Send),
) -> Result<()> {
    let components: Vec<&str> = start.split('/').filter(|c| !c.is_empty()).collect();
    let mut tree_id = *root;
    let mut path = String::new();
    for (i, c) in components.iter().enumerate() {
        let tree = repo.read_tree(&tree_id).await?;
        let node = tree
            .nodes
            .into_iter()
            .find(|n| n.name == c.as_bytes())
            .ok_or_else(|| Error::PathNotInSnapshot {
                path: start.to_owned(),
            })?;
        path.push('/');
        path.push_str(c);
        match &node.kind {
            NodeKind::Dir { subtree } => {
                if i + 1 == components.len() {
                    f(&path, &node);
                }
                tree_id = *subtree;
            }
            _ if i + 1 == components.len() => {
                f(&path, &node);
                return Ok(());
            }
            _ => {
                return Err(Error::PathNotInSnapshot {
                    path: start.to_owned(),
                })
            }
        }
    }
    walk_tree(repo, tree_id, path, f).await
}

fn walk_tree<'a>(
    repo: &'a Repository,
    id: BlobId,
    path: String,
    f: &'a mut (dyn FnMut(&str, &Node) + Send),
) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let tree = repo.read_tree(&id).await?;
        for node in &tree.nodes {
            let child = format!("{}/{}", path, node.name_lossy());
            f(&child, node);
            if let NodeKind::Dir { subtree } = node.kind {
                walk_tree(repo, subtree, child, f).await?;
            }
        }
        Ok(())
    })
}
