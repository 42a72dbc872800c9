//! Snapshots: the commit point of a backup.
//!
//! A snapshot file is a sealed object (kind 5) whose plaintext is the
//! postcard [`Snapshot`]. Its id is the BLAKE3 of the stored file.
//!
//! Snapshot records have their own version in the common header: version 1
//! has no `original`; version 2 (a copy from another repository) appends
//! it. A snapshot without `original` is still written as version 1, so older
//! kith keep reading everything but copies (docs/FORMAT.md).

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
    /// For a copy made by `kith copy`: the snapshot's id in the repository
    /// it was copied from (version 2 records only).
    pub original: Option<SnapshotId>,
}

/// Version 1 of the record: [`Snapshot`] without `original`.
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    time: i64,
    host: String,
    user: String,
    paths: Vec<String>,
    tags: Vec<String>,
    tree: BlobId,
    parent: Option<SnapshotId>,
    summary: BackupSummary,
    program: String,
}

/// The newest snapshot record version this kith reads.
pub const SNAPSHOT_VERSION: u8 = 2;

impl Snapshot {
    /// Encrypts for storage: version 1 when there is no `original`.
    pub fn to_bytes(&self, public: &RepoPublicKey) -> Vec<u8> {
        match self.original {
            None => envelope::seal_object_versioned(
                FileKind::Snapshot,
                1,
                public,
                &envelope::encode(&SnapshotV1 {
                    time: self.time,
                    host: self.host.clone(),
                    user: self.user.clone(),
                    paths: self.paths.clone(),
                    tags: self.tags.clone(),
                    tree: self.tree,
                    parent: self.parent,
                    summary: self.summary.clone(),
                    program: self.program.clone(),
                }),
            ),
            Some(_) => envelope::seal_object_versioned(
                FileKind::Snapshot,
                2,
                public,
                &envelope::encode(self),
            ),
        }
    }

    /// Decrypts and decodes either version.
    pub fn from_bytes(secret: &RepoSecretKey, bytes: &[u8], id: &SnapshotId) -> Result<Self> {
        let object = format!("snapshot {}", id.short());
        let (version, plain) = envelope::open_object_versioned(
            FileKind::Snapshot,
            SNAPSHOT_VERSION,
            secret,
            bytes,
            &object,
        )?;
        if version >= 2 {
            return envelope::decode(&plain, &object);
        }
        let v1: SnapshotV1 = envelope::decode(&plain, &object)?;
        Ok(Snapshot {
            time: v1.time,
            host: v1.host,
            user: v1.user,
            paths: v1.paths,
            tags: v1.tags,
            tree: v1.tree,
            parent: v1.parent,
            summary: v1.summary,
            program: v1.program,
            original: None,
        })
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
            original: None,
        };
        let id = SnapshotId([0; 32]);
        let copy = Snapshot {
            original: Some(SnapshotId([9; 32])),
            ..s.clone()
        };
        for s in [s, copy] {
            let bytes = s.to_bytes(&secret.public());
            assert_eq!(bytes[4], if s.original.is_some() { 2 } else { 1 });
            assert_eq!(Snapshot::from_bytes(&secret, &bytes, &id).unwrap(), s);
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0x80;
                assert!(Snapshot::from_bytes(&secret, &b, &id).is_err());
            }
        }
    }

    #[test]
    fn a_version_1_record_written_by_an_older_kith_still_reads() {
        let secret = RepoSecretKey::from_bytes([4; 32]);
        let old = SnapshotV1 {
            time: 7,
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/a".into()],
            tags: vec![],
            tree: BlobId([1; 32]),
            parent: Some(SnapshotId([2; 32])),
            summary: BackupSummary::default(),
            program: "kith 0.1.0".into(),
        };
        // Exactly what kith 0.1.0 wrote: common header version 1.
        let bytes = envelope::seal_object(
            FileKind::Snapshot,
            &secret.public(),
            &envelope::encode(&old),
        );
        let read = Snapshot::from_bytes(&secret, &bytes, &SnapshotId([0; 32])).unwrap();
        assert_eq!(read.original, None);
        assert_eq!(read.parent, Some(SnapshotId([2; 32])));
        assert_eq!(read.program, "kith 0.1.0");
    }

    #[test]
    fn a_record_newer_than_version_2_is_unsupported() {
        let secret = RepoSecretKey::from_bytes([4; 32]);
        let bytes = envelope::seal_object_versioned(FileKind::Snapshot, 3, &secret.public(), b"x");
        assert!(matches!(
            Snapshot::from_bytes(&secret, &bytes, &SnapshotId([0; 32])),
            Err(crate::Error::Unsupported { .. })
        ));
    }
}
