//! The node's persistent libp2p identity: an ed25519 keypair in a file
//! readable by its owner only (mode 0600), in libp2p's protobuf key encoding.
//!
//! These functions do blocking file I/O; call them at startup or from
//! `spawn_blocking`.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

use crate::NetError;

fn err(path: &Path, reason: impl Into<String>) -> NetError {
    NetError::Identity {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Loads the identity at `path`, refusing a file others can read.
pub fn load_identity(path: &Path) -> Result<Keypair, NetError> {
    check_private(path)?;
    let bytes = fs::read(path).map_err(|e| err(path, e.to_string()))?;
    if bytes.len() > 4096 {
        return Err(err(path, "too large to be a key file"));
    }
    let key = Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| err(path, format!("not a libp2p key file: {e}")))?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(err(
            path,
            "not an ed25519 key; kith node identities are ed25519",
        ));
    }
    Ok(key)
}

/// Writes `key` to `path` with mode 0600, atomically (temporary file, fsync, rename).
pub fn save_identity(path: &Path, key: &Keypair) -> Result<(), NetError> {
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| err(path, format!("cannot encode key: {e}")))?;
    let tmp = tmp_path(path);
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = private_create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(path, e.to_string())
    })
}

/// Loads the identity at `path`, or creates and saves a new ed25519 one if
/// the file does not exist.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, NetError> {
    match fs::metadata(path) {
        Ok(_) => load_identity(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            save_identity(path, &key)?;
            Ok(key)
        }
        Err(e) => Err(err(path, e.to_string())),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(unix)]
fn private_create(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_create(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), NetError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(|e| err(path, e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(
            path,
            format!(
                "mode {:o} lets others read the node key; run chmod 600 on it",
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), NetError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let a = load_or_create_identity(&path).unwrap();
        let b = load_or_create_identity(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_identity_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        save_identity(&path, &Keypair::generate_ed25519()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_identity(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn garbage_identity_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let mut f = private_create(&path).unwrap();
        f.write_all(b"not a key").unwrap();
        drop(f);
        assert!(load_identity(&path).is_err());
    }
}
