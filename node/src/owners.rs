//! Owner state kept in a node folder for the repositories stored through
//! the node (`peers://`): the owners' placement maps, and the owner keys
//! saved at `kith init` so that later commands given only a password can
//! find the repository's objects before they can read its config.
//!
//! ```text
//! DIR/owners/                      mode 0700
//!   <owner id, 16 hex>.key         saved owner keys, mode 0600
//!   placement-<owner id>.redb      the owner's placement map
//! ```
//!
//! What is saved is [`OwnerKeys::to_saved`]: keys derived one way from the
//! master secret, never the master secret itself (docs/DECISIONS.md).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::layout::set_mode;
use crate::objects::OwnerKeys;
use crate::{NodeDir, NodeError};

fn owner_hex(keys: &OwnerKeys) -> String {
    hex::encode(keys.owner_id().0.get(..8).unwrap_or_default())
}

impl NodeDir {
    /// The folder of owner keys and placement maps (created on demand).
    pub fn owners(&self) -> PathBuf {
        self.root().join("owners")
    }

    /// Creates the owners folder (mode 0700) and returns it.
    pub fn create_owners(&self) -> Result<PathBuf, NodeError> {
        let dir = self.owners();
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
        set_mode(&dir, 0o700)?;
        Ok(dir)
    }

    /// Saves `keys` (mode 0600, written whole then renamed into place).
    pub fn save_owner_keys(&self, keys: &OwnerKeys) -> Result<PathBuf, NodeError> {
        let dir = self.create_owners()?;
        let path = dir.join(format!("{}.key", owner_hex(keys)));
        let tmp = dir.join(format!("{}.key.tmp", owner_hex(keys)));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(keys.to_saved().as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| NodeError::io(&tmp, e))?;
        set_mode(&tmp, 0o600)?;
        std::fs::rename(&tmp, &path).map_err(|e| NodeError::io(&path, e))?;
        Ok(path)
    }

    /// Every owner's saved keys, in file-name order.
    pub fn saved_owner_keys(&self) -> Result<Vec<OwnerKeys>, NodeError> {
        let dir = self.owners();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NodeError::io(&dir, e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| NodeError::io(&dir, e))?.path();
            if path.extension().is_some_and(|x| x == "key") {
                paths.push(path);
            }
        }
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let text = zeroize::Zeroizing::new(
                    std::fs::read_to_string(&path).map_err(|e| NodeError::io(&path, e))?,
                );
                OwnerKeys::from_saved(&text).map_err(|e| NodeError::OwnerKeys {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn saved_owner_keys_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeDir::new(dir.path());
        assert!(node.saved_owner_keys().unwrap().is_empty());
        let keys = OwnerKeys::derive(&kith_engine::MasterSecret::from_bytes([4; 32])).unwrap();
        let path = node.save_owner_keys(&keys).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let saved = node.saved_owner_keys().unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].owner_id(), keys.owner_id());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeDir::new(dir.path());
        let owners = node.create_owners().unwrap();
        std::fs::write(owners.join("0011.key"), "garbage").unwrap();
        let e = node.saved_owner_keys().unwrap_err();
        assert!(e.to_string().contains("0011.key"), "{e}");
    }
}
