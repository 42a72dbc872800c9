//! Index deltas: sealed objects (kind 4) listing packs and their blobs.

use serde::{Deserialize, Serialize};

use crate::crypto::{RepoPublicKey, RepoSecretKey};
use crate::envelope::{self, FileKind};
use crate::id::{IndexId, PackId};
use crate::pack::{validate_entries, PackEntry, TRAILER_LEN};
use crate::{Error, Result};

/// One pack as the index records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// The pack's ephemeral public key, so that a blob can be read with one
    /// ranged read and no trip to the pack's trailer.
    pub ephemeral: [u8; 32],
    /// The pack's size in bytes.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<PackEntry>,
}

/// An index delta.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs described by this delta.
    pub packs: Vec<IndexPack>,
    /// Older deltas whose content this one includes (they may be deleted).
    pub supersedes: Vec<IndexId>,
}

impl IndexFile {
    /// Encrypts for storage.
    pub fn to_bytes(&self, public: &RepoPublicKey) -> Vec<u8> {
        envelope::seal_object(FileKind::Index, public, &envelope::encode(self))
    }

    /// Decrypts, decodes and checks every entry's bounds.
    pub fn from_bytes(secret: &RepoSecretKey, bytes: &[u8], id: &IndexId) -> Result<Self> {
        let object = format!("index {}", id.short());
        let plain = envelope::open_object(FileKind::Index, secret, bytes, &object)?;
        let file: IndexFile = envelope::decode(&plain, &object)?;
        for p in &file.packs {
            let area = p.size.checked_sub(TRAILER_LEN as u64).ok_or_else(|| {
                Error::corrupt(
                    &object,
                    format!("pack {} has an impossible size", p.id.short()),
                )
            })?;
            validate_entries(&p.blobs, area, &object)?;
        }
        Ok(file)
    }

    /// Number of blobs listed.
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobKind, Compression};
    use crate::id::BlobId;

    #[test]
    fn index_files_round_trip_and_refuse_out_of_bounds_entries() {
        let secret = RepoSecretKey::from_bytes([6; 32]);
        let entry = PackEntry {
            kind: BlobKind::Data,
            id: BlobId([1; 32]),
            offset: 0,
            length: 100,
            raw_length: 70,
            compression: Compression::None,
        };
        let mut f = IndexFile {
            packs: vec![IndexPack {
                id: PackId([2; 32]),
                ephemeral: [3; 32],
                size: 200,
                blobs: vec![entry],
            }],
            supersedes: vec![],
        };
        let id = IndexId([0; 32]);
        let bytes = f.to_bytes(&secret.public());
        assert_eq!(IndexFile::from_bytes(&secret, &bytes, &id).unwrap(), f);
        f.packs[0].size = 120;
        let bytes = f.to_bytes(&secret.public());
        assert!(IndexFile::from_bytes(&secret, &bytes, &id).is_err());
        for n in 0..bytes.len() {
            assert!(IndexFile::from_bytes(&secret, &bytes[..n], &id).is_err());
        }
    }
}
