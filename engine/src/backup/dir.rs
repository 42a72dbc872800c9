//! Folders under construction.
//!
//! A folder's tree can be written as soon as every entry is known. Each
//! [`DirBuilder`] has one slot per entry and a countdown; whichever thread
//! fills the last slot (a worker finishing a file, or the walker) serializes
//! the tree, stores its blob, and fills the folder's own slot in its parent.
//! The walker holds one extra count while it is still listing the folder.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::id::BlobId;
use crate::tree::{Node, NodeKind, Tree};

use super::pipeline::Shared;

/// Where a finished folder reports its tree id.
pub(crate) enum Parent {
    /// A slot in the parent folder.
    Dir(Arc<DirBuilder>, usize),
    /// The snapshot root.
    Root(crossbeam_channel::Sender<BlobId>),
}

/// A folder whose entries are still being backed up.
pub(crate) struct DirBuilder {
    slots: Mutex<Vec<Option<Node>>>,
    remaining: AtomicUsize,
    parent: Parent,
    node: Node,
}

impl DirBuilder {
    /// A folder with `len` entries; `node` describes it in its parent.
    pub(crate) fn new(len: usize, parent: Parent, node: Node) -> Arc<Self> {
        Arc::new(DirBuilder {
            slots: Mutex::new(vec![None; len]),
            remaining: AtomicUsize::new(len + 1),
            parent,
            node,
        })
    }

    /// Records entry `index` (`None`: it was skipped).
    pub(crate) fn fill(self: &Arc<Self>, shared: &Shared, index: usize, node: Option<Node>) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.get_mut(index) {
                *slot = node;
            }
        }
        self.count_down(shared);
    }

    /// The walker has listed every entry.
    pub(crate) fn release(self: &Arc<Self>, shared: &Shared) {
        self.count_down(shared);
    }

    fn count_down(self: &Arc<Self>, shared: &Shared) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(shared);
        }
    }

    fn complete(self: &Arc<Self>, shared: &Shared) {
        let nodes: Vec<Node> = match self.slots.lock() {
            Ok(mut slots) => slots.drain(..).flatten().collect(),
            Err(_) => Vec::new(),
        };
        let bytes = Tree { nodes }.to_bytes();
        let id = shared.blob_id(&bytes);
        if let Err(e) = shared.store_tree(id, &bytes) {
            shared.fail(e);
        }
        match &self.parent {
            Parent::Dir(parent, index) => {
                let mut node = self.node.clone();
                node.kind = NodeKind::Dir { subtree: id };
                parent.fill(shared, *index, Some(node));
            }
            Parent::Root(tx) => {
                let _ = tx.send(id);
            }
        }
    }
}
