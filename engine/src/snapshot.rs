//! Snapshots: the commit point of a backup.
//!
//! A snapshot file is a sealed object (kind 5) whose plaintext is the
//! postcard [`Snapshot`]. Its id is the BLAKE3 of the stored file.

use serde::{Deserialize, Serialize};

use crate::crypto::{RepoPublicKey, RepoSecretKey};
use crate::envelope::{self, FileKind};
use crate::id::{BlobId, SnapshotId};
use crate::Result;

/// What a backup did, stored with its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Files not seen before.
    pub files_new: u64,
    /// Files whose content or metadata changed.
    pub files_changed: u64,
    /// Files unchanged since the last backup.
    pub files_unmodified: u64,
    /// Folders visited.
    pub dirs: u64,
    /// Files that could not be read and were skipped.
    pub files_failed: u64,
    /// Bytes of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes read from files this time.
    pub bytes_read: u64,
    /// Plaintext bytes of new blobs.
    pub data_added: u64,
    /// Stored bytes of new packs.
    pub data_added_packed: u64,
    /// New blobs.
    pub blobs_added: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// A snapshot record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started, Unix nanoseconds.
    pub time: i64,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// Absolute paths that were backed up.
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Root tree.
    pub tree: BlobId,
    /// The snapshot this one was compared with, if any.
    pub parent: Option<SnapshotId>,
    /// What the backup did.
    pub summary: BackupSummary,
    /// The kith version that wrote it.
    pub program: String,
}

impl Snapshot {
    /// Encrypts for storage.
    pub fn to_bytes(&self, public: &RepoPublicKey) -> Vec<u8> {
        envelope::seal_object(FileKind::Snapshot, public, &envelope::encode(self))
    }

    /// Decrypts and decodes.
    pub fn from_bytes(secret: &RepoSecretKey, bytes: &[u8], id: &SnapshotId) -> Result<Self> {
        let object = format!("snapshot {}", id.short());
        let plain = envelope::open_object(FileKind::Snapshot, secret, bytes, &object)?;
        envelope::decode(&plain, &object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_flips_are_detected() {
        let secret = RepoSecretKey::from_bytes([3; 32]);
        let s = Snapshot {
            time: 1,
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/x".into()],
            tags: vec!["t".into()],
            tree: BlobId([2; 32]),
            parent: None,
            summary: BackupSummary::default(),
            program: "kith".into(),
        };
        let id = SnapshotId([0; 32]);
        let bytes = s.to_bytes(&secret.public());
        assert_eq!(Snapshot::from_bytes(&secret, &bytes, &id).unwrap(), s);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x80;
            assert!(Snapshot::from_bytes(&secret, &b, &id).is_err());
        }
    }
}
