//! Trees: one folder's entries, stored as a blob.
//!
//! A tree blob is `version (u8 = 1) ‖ postcard Vec<Node>`, nodes sorted by
//! name bytes. Identical folders give identical blobs, which deduplicate.

use serde::{Deserialize, Serialize};

use crate::id::BlobId;
use crate::{Error, Result};

/// Tree encoding version.
pub const TREE_VERSION: u8 = 1;

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file with its content chunks in order.
    File {
        /// Content blobs.
        content: Vec<BlobId>,
    },
    /// A folder and its tree.
    Dir {
        /// The tree blob.
        subtree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// The raw target bytes.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
    /// A Unix socket (recorded, not restored).
    Socket,
}

/// One entry of a folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The raw name bytes (any byte but `/` and NUL).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Permission and type bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, Unix nanoseconds.
    pub mtime: i64,
    /// Status change time, Unix nanoseconds.
    pub ctime: i64,
    /// Inode number at backup time.
    pub inode: u64,
    /// Device at backup time.
    pub device: u64,
    /// Hard link count at backup time.
    pub links: u64,
}

impl Node {
    /// The name as text, with invalid UTF-8 replaced.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// True for folders.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }
}

/// A folder's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Serializes to blob plaintext.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![TREE_VERSION];
        out.extend_from_slice(&crate::envelope::encode(&self.nodes));
        out
    }

    /// Parses blob plaintext, checking names and order.
    pub fn from_bytes(bytes: &[u8], id: &BlobId) -> Result<Self> {
        let object = format!("tree {}", id.short());
        let body = match bytes.split_first() {
            Some((&TREE_VERSION, body)) => body,
            Some((&v, _)) if v > TREE_VERSION => {
                return Err(Error::Unsupported {
                    object,
                    version: u32::from(v),
                })
            }
            _ => return Err(Error::corrupt(&object, "bad version byte")),
        };
        let nodes: Vec<Node> = crate::envelope::decode(body, &object)?;
        let mut previous: Option<&Node> = None;
        for n in &nodes {
            if n.name.is_empty()
                || n.name.contains(&b'/')
                || n.name.contains(&0)
                || n.name == b"."
                || n.name == b".."
            {
                return Err(Error::corrupt(
                    &object,
                    format!("invalid entry name {:?}", n.name_lossy()),
                ));
            }
            if previous.is_some_and(|p| p.name >= n.name) {
                return Err(Error::corrupt(
                    &object,
                    "entries out of order or duplicated",
                ));
            }
            previous = Some(n);
        }
        Ok(Tree { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File {
                content: vec![BlobId([1; 32])],
            },
            mode: 0o100644,
            uid: 1,
            gid: 2,
            size: 3,
            mtime: -4,
            ctime: 6,
            inode: 7,
            device: 8,
            links: 1,
        }
    }

    proptest! {
        #[test]
        fn trees_round_trip(names in proptest::collection::btree_set("[a-zé🦀 ]{1,12}", 0..20)) {
            let tree = Tree { nodes: names.iter().map(|n| node(n)).collect() };
            let id = BlobId([0; 32]);
            prop_assert_eq!(Tree::from_bytes(&tree.to_bytes(), &id).unwrap(), tree);
        }
    }

    #[test]
    fn hostile_names_and_order_are_refused() {
        let id = BlobId([0; 32]);
        for bad in ["..", ".", "a/b", ""] {
            let t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(Tree::from_bytes(&t.to_bytes(), &id).is_err(), "{bad:?}");
        }
        let t = Tree {
            nodes: vec![node("b"), node("a")],
        };
        assert!(Tree::from_bytes(&t.to_bytes(), &id).is_err());
        let bytes = Tree {
            nodes: vec![node("a")],
        }
        .to_bytes();
        for n in 0..bytes.len() {
            assert!(Tree::from_bytes(&bytes[..n], &id).is_err());
        }
    }
}
