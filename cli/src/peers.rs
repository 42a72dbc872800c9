//! `peers://` repositories: stored on friends' machines through the local
//! node (`--node DIR` or `KITH_NODE_DIR`), as erasure-coded shards.
//!
//! The engine reads the repository's config only after the object store
//! can find objects, and the store needs the owner keys for that: they
//! derive from the master key when one is given, and otherwise come from
//! the copy `kith init` saved in the node folder (docs/NODE.md).

use std::path::PathBuf;
use std::sync::Arc;

use kith_engine::{InitOptions, MasterSecret, Repository};
use kith_node::control::client::{DaemonTransport, NodeClient};
use kith_node::objects::{ObjectError, ObjectStore, OwnerKeys, StoreOptions};
use kith_node::peer_backend::PeerBackend;
use kith_node::transport::ShardTransport;
use kith_node::NodeDir;
use kith_storage::{Backend, Handle};

use crate::context::Secrets;
use crate::error::CliError;

/// The repository URL of a repository on peers.
pub(crate) const URL: &str = "peers://";

/// Whether `location` names a repository on peers; `peers://` takes no
/// host or path.
pub(crate) fn is_peers(location: &str) -> Result<bool, CliError> {
    if location.trim_end_matches('/') == "peers:" {
        return Ok(true);
    }
    if location.starts_with("peers:") {
        return Err(CliError::Usage(format!(
            "{location}: a repository on peers is written `{URL}` alone; \
             the node that stores it comes from --node DIR or KITH_NODE_DIR"
        )));
    }
    Ok(false)
}

fn node_dir(node: Option<&PathBuf>) -> Result<PathBuf, CliError> {
    node.cloned().ok_or_else(|| {
        CliError::Usage(format!(
            "{URL} needs the local node: pass --node DIR or set KITH_NODE_DIR \
             (create one with `kith node init --dir DIR`)"
        ))
    })
}

/// Opens the object store of `keys` through the node in `dir`.
async fn store(
    dir: &std::path::Path,
    keys: OwnerKeys,
) -> Result<ObjectStore<DaemonTransport>, CliError> {
    let transport = DaemonTransport::connect(dir, keys.signing_seed()).await?;
    let owners = NodeDir::new(dir).create_owners()?;
    Ok(ObjectStore::open(transport, keys, &owners, StoreOptions::default()).await?)
}

/// The backend of an existing repository on peers.
pub(crate) async fn open(
    node: Option<&PathBuf>,
    secrets: &Secrets,
) -> Result<Arc<dyn Backend>, CliError> {
    let dir = node_dir(node)?;
    // Exit 16/17 before anything else when the node is missing or stopped.
    drop(NodeClient::connect(&dir).await?);
    let keys = match secrets.master_key()? {
        Some(master) => OwnerKeys::derive(&master)?,
        None => {
            let mut saved = NodeDir::new(&dir).saved_owner_keys()?;
            match saved.len() {
                1 => saved.remove(0),
                // As for a folder without a repository (exit 10, and
                // `backup --init` creates one); the message says what to do.
                0 => {
                    return Err(CliError::Engine(kith_engine::Error::RepositoryNotFound {
                        location: format!(
                            "{URL} (no repository was created through the node in {}; \
                             give the master key, KITH_MASTER_KEY or --master-key-file, \
                             to open one made elsewhere)",
                            dir.display()
                        ),
                    }))
                }
                n => {
                    return Err(CliError::Usage(format!(
                        "{n} repositories were created through the node in {}: give the master \
                         key (KITH_MASTER_KEY or --master-key-file) to say which one",
                        dir.display()
                    )))
                }
            }
        }
    };
    Ok(Arc::new(PeerBackend::new(store(&dir, keys).await?)))
}

/// Creates a repository on peers: the engine initializes it in memory,
/// the owner keys derive from its new master secret, and only when the
/// node has at least `F + 1` usable peers is anything stored. Saves the
/// owner keys in the node folder for commands given only a password.
pub(crate) async fn init(
    node: Option<&PathBuf>,
    password: &str,
    options: &InitOptions,
    cache_dir: Option<PathBuf>,
) -> Result<(Repository, MasterSecret), CliError> {
    let dir = node_dir(node)?;
    drop(NodeClient::connect(&dir).await?);
    let staging = Arc::new(PeerBackend::<DaemonTransport>::staging());
    let (repo, master) = Repository::init(staging.clone(), password, options, cache_dir).await?;
    let keys = OwnerKeys::derive(&master)?;
    let transport = DaemonTransport::connect(&dir, keys.signing_seed()).await?;
    let usable = transport
        .usable_peers()
        .await
        .map_err(ObjectError::from)?
        .len();
    let needed = StoreOptions::default().goal.losses_survivable as usize + 1;
    if usable < needed {
        return Err(ObjectError::NotEnoughPeers {
            name: Handle::config(),
            usable,
            needed,
        }
        .into());
    }
    drop(transport);
    let store = store(&dir, OwnerKeys::derive(&master)?).await?;
    staging.attach(store).await?;
    NodeDir::new(&dir).save_owner_keys(&keys)?;
    Ok((repo, master))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bare_url_names_peers() {
        assert!(is_peers("peers://").unwrap());
        assert!(is_peers("peers:").unwrap());
        assert!(!is_peers("/tmp/repo").unwrap());
        assert!(!is_peers("s3://bucket/x").unwrap());
        assert!(is_peers("peers://host/path").is_err());
    }
}
