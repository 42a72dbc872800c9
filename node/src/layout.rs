//! Where a node keeps its files inside its folder.
//!
//! ```text
//! DIR/                 mode 0700
//!   node.toml          the config (docs/NODE.md)
//!   node.key           the libp2p ed25519 identity, mode 0600
//!   node.redb          friends, invites and the hold's index
//!   control.sock       the control socket while the daemon runs, mode 0600
//!   hold/<owner>/<tag>.<index>   shards held for others, as opaque files
//! ```

use std::path::{Path, PathBuf};

use crate::{config::NodeConfig, NodeError};

/// A node folder.
#[derive(Clone, Debug)]
pub struct NodeDir {
    root: PathBuf,
}

impl NodeDir {
    /// The node folder at `root`, whether or not a node is there yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.root.join("node.toml")
    }

    /// The identity key file.
    pub fn identity(&self) -> PathBuf {
        self.root.join("node.key")
    }

    /// The node database.
    pub fn database(&self) -> PathBuf {
        self.root.join("node.redb")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// The folder of held shards.
    pub fn hold(&self) -> PathBuf {
        self.root.join("hold")
    }

    /// Creates a node: the folder (mode 0700), its identity and config.
    /// Refuses a folder that already holds a node. Returns the peer id.
    pub fn init(&self, config: &NodeConfig) -> Result<kith_net::PeerId, NodeError> {
        let cfg = self.config();
        if cfg.exists() {
            return Err(NodeError::AlreadyExists {
                dir: self.root.clone(),
                config: cfg,
            });
        }
        config.check().map_err(|reason| NodeError::Config {
            path: cfg.clone(),
            reason,
        })?;
        std::fs::create_dir_all(&self.root).map_err(|e| NodeError::io(&self.root, e))?;
        set_mode(&self.root, 0o700)?;
        std::fs::create_dir_all(self.hold()).map_err(|e| NodeError::io(self.hold(), e))?;
        let key = kith_net::load_or_create_identity(&self.identity())?;
        let text = config.to_toml()?;
        let tmp = self.root.join("node.toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| NodeError::io(&tmp, e))?;
        std::fs::rename(&tmp, &cfg).map_err(|e| NodeError::io(&cfg, e))?;
        Ok(key.public().to_peer_id())
    }

    /// Reads the config, failing with [`NodeError::NoNode`] when there is none.
    pub fn load_config(&self) -> Result<NodeConfig, NodeError> {
        let cfg = self.config();
        if !cfg.exists() {
            return Err(NodeError::NoNode {
                dir: self.root.clone(),
            });
        }
        NodeConfig::load(&cfg)
    }

    /// Loads the identity of an existing node.
    pub fn load_identity(&self) -> Result<kith_net::Keypair, NodeError> {
        if !self.config().exists() {
            return Err(NodeError::NoNode {
                dir: self.root.clone(),
            });
        }
        Ok(kith_net::load_identity(&self.identity())?)
    }
}

/// Sets a file's or folder's permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| NodeError::io(path, e))
}
