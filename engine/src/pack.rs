//! Packs: many encrypted blobs followed by their encrypted header.
//!
//! Layout:
//! ```text
//! blob 0 ‖ blob 1 ‖ … ‖ header ‖ trailer
//! blob    = nonce (12) ‖ ciphertext ‖ tag (16)
//! header  = nonce ‖ E(postcard Vec<PackEntry>) ‖ tag, AAD "KTHP" ‖ version
//! trailer = ephemeral x25519 public key (32) ‖ header length u32 LE ‖
//!           version u8 ‖ 3 zero bytes ‖ "KTHP"            (44 bytes)
//! ```
//! The pack key is sealed to the repository key through the ephemeral key
//! in the trailer, so the index can be rebuilt from packs alone by whoever
//! holds the repository secret. A pack's id is the BLAKE3 of its bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blob::{BlobKind, Compression, Encoder, MAX_BLOB_SIZE};
use crate::buffers;
use crate::crypto::{self, Cipher, RepoPublicKey, RepoSecretKey, SymmetricKey};
use crate::envelope;
use crate::id::{hash_of, BlobId, PackId};
use crate::{Error, Result};

/// Magic at the very end of a pack.
pub const PACK_MAGIC: &[u8; 4] = b"KTHP";
/// Length of the trailer.
pub const TRAILER_LEN: usize = 44;
/// Pack format version.
pub const PACK_VERSION: u8 = 1;
/// Most entries a header may list.
const MAX_ENTRIES: usize = 1 << 20;

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// What the blob holds.
    pub kind: BlobKind,
    /// Its id.
    pub id: BlobId,
    /// Offset of its sealed bytes in the pack.
    pub offset: u32,
    /// Length of its sealed bytes.
    pub length: u32,
    /// Length of its plaintext.
    pub raw_length: u32,
    /// How the plaintext was compressed.
    pub compression: Compression,
}

fn header_aad() -> [u8; 5] {
    [
        PACK_MAGIC[0],
        PACK_MAGIC[1],
        PACK_MAGIC[2],
        PACK_MAGIC[3],
        PACK_VERSION,
    ]
}

/// A pack being filled.
pub struct PackWriter {
    cipher: Cipher,
    ephemeral: [u8; 32],
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// BLAKE3 of `bytes`.
    pub id: PackId,
    /// The stored bytes.
    pub bytes: Bytes,
    /// The blobs it holds.
    pub entries: Vec<PackEntry>,
    /// The ephemeral public key its key is sealed with.
    pub ephemeral: [u8; 32],
}

impl PackWriter {
    /// An empty pack whose key is sealed to `public`.
    pub fn new(public: &RepoPublicKey, capacity: usize) -> Self {
        let (ephemeral, key) = crypto::new_sealed_key(public);
        PackWriter {
            cipher: Cipher::new(&key),
            ephemeral,
            buf: buffers::POOL.take(capacity),
            entries: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Compresses, encrypts and appends one blob.
    pub fn add(
        &mut self,
        encoder: &mut Encoder,
        kind: BlobKind,
        id: BlobId,
        plaintext: &[u8],
    ) -> Result<()> {
        let offset = self.buf.len();
        let compression = encoder.seal_into(&self.cipher, kind, &id, plaintext, &mut self.buf);
        let too_big = || Error::InvalidInput("pack grew past 4 GiB".into());
        self.entries.push(PackEntry {
            kind,
            id,
            offset: u32::try_from(offset).map_err(|_| too_big())?,
            length: u32::try_from(self.buf.len() - offset).map_err(|_| too_big())?,
            raw_length: u32::try_from(plaintext.len()).map_err(|_| too_big())?,
            compression,
        });
        Ok(())
    }

    /// Appends the header and trailer.
    pub fn finish(mut self) -> FinishedPack {
        let header = envelope::encode(&self.entries);
        let before = self.buf.len();
        self.cipher.seal_into(&header_aad(), &header, &mut self.buf);
        let header_len = u32::try_from(self.buf.len() - before).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&self.ephemeral);
        self.buf.extend_from_slice(&header_len.to_le_bytes());
        self.buf.extend_from_slice(&[PACK_VERSION, 0, 0, 0]);
        self.buf.extend_from_slice(PACK_MAGIC);
        let id = PackId(hash_of(&self.buf));
        FinishedPack {
            id,
            bytes: buffers::POOL.into_bytes(self.buf),
            entries: self.entries,
            ephemeral: self.ephemeral,
        }
    }
}

/// The parsed trailer of a pack.
#[derive(Clone, Copy, Debug)]
pub struct Trailer {
    /// The ephemeral public key.
    pub ephemeral: [u8; 32],
    /// Length of the sealed header just before the trailer.
    pub header_len: u32,
}

/// Parses the last [`TRAILER_LEN`] bytes of a pack.
pub fn parse_trailer(tail: &[u8], pack: &PackId) -> Result<Trailer> {
    let object = format!("pack {pack}");
    let tail: &[u8; TRAILER_LEN] = tail
        .try_into()
        .map_err(|_| Error::corrupt(&object, "too short for a trailer"))?;
    let [ephemeral @ .., h0, h1, h2, h3, version, r0, r1, r2, m0, m1, m2, m3] = *tail;
    if [m0, m1, m2, m3] != *PACK_MAGIC {
        return Err(Error::corrupt(&object, "bad trailer magic"));
    }
    if version > PACK_VERSION {
        return Err(Error::Unsupported {
            object,
            version: u32::from(version),
        });
    }
    if version == 0 || [r0, r1, r2] != [0, 0, 0] {
        return Err(Error::corrupt(
            &object,
            "bad trailer version or reserved bytes",
        ));
    }
    Ok(Trailer {
        ephemeral,
        header_len: u32::from_le_bytes([h0, h1, h2, h3]),
    })
}

/// The pack key for an ephemeral key.
pub fn pack_key(
    secret: &RepoSecretKey,
    ephemeral: &[u8; 32],
    pack: &PackId,
) -> Result<SymmetricKey> {
    crypto::open_sealed_key(secret, ephemeral)
        .map_err(|_| Error::corrupt(format!("pack {pack}"), "invalid ephemeral key"))
}

/// Every key the pack may have: one per repository secret held, current
/// first (see [`crypto::open_sealed_keys`]).
pub fn pack_keys(
    secret: &RepoSecretKey,
    ephemeral: &[u8; 32],
    pack: &PackId,
) -> Result<Vec<SymmetricKey>> {
    crypto::open_sealed_keys(secret, ephemeral)
        .map_err(|_| Error::corrupt(format!("pack {pack}"), "invalid ephemeral key"))
}

/// The cipher under which `sealed` (a pack header) authenticates, with the
/// entries it holds: tries every key the pack may have.
pub fn open_header(
    keys: &[SymmetricKey],
    sealed: &[u8],
    blob_area: u64,
    pack: &PackId,
) -> Result<(Cipher, Vec<PackEntry>)> {
    let mut first_error = None;
    for key in keys {
        let cipher = Cipher::new(key);
        match parse_header(&cipher, sealed, blob_area, pack) {
            Ok(entries) => return Ok((cipher, entries)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| Error::corrupt(format!("pack {pack}"), "no key to open it with")))
}

/// Decrypts and validates a pack header: every entry must lie inside the
/// blob area, in order, without overlap.
pub fn parse_header(
    cipher: &Cipher,
    sealed: &[u8],
    blob_area: u64,
    pack: &PackId,
) -> Result<Vec<PackEntry>> {
    let object = format!("pack {pack}");
    let plain = cipher
        .open(&header_aad(), sealed)
        .map_err(|_| Error::corrupt(&object, "header authentication failed"))?;
    let entries: Vec<PackEntry> = envelope::decode(&plain, &object)?;
    if entries.len() > MAX_ENTRIES {
        return Err(Error::corrupt(&object, "too many entries"));
    }
    validate_entries(&entries, blob_area, &object)?;
    Ok(entries)
}

/// Checks that entries are in order, disjoint and inside `blob_area`.
pub fn validate_entries(entries: &[PackEntry], blob_area: u64, object: &str) -> Result<()> {
    let mut next = 0u64;
    for e in entries {
        let start = u64::from(e.offset);
        let end = start + u64::from(e.length);
        if start < next
            || end > blob_area
            || (e.length as usize) < crypto::OVERHEAD
            || e.raw_length > MAX_BLOB_SIZE
        {
            return Err(Error::corrupt(
                object,
                format!("entry for blob {} is out of bounds", e.id.short()),
            ));
        }
        next = end;
    }
    Ok(())
}

/// Opens the blob `entry` describes, from the bytes of its whole pack.
pub fn open_entry(
    cipher: &Cipher,
    chunk_id_key: &[u8; 32],
    entry: &PackEntry,
    pack: &[u8],
) -> std::result::Result<Vec<u8>, crate::blob::BlobError> {
    let start = entry.offset as usize;
    let sealed = pack
        .get(start..start + entry.length as usize)
        .ok_or(crate::blob::BlobError::OutOfBounds)?;
    crate::blob::open_blob(
        cipher,
        chunk_id_key,
        entry.kind,
        entry.compression,
        &entry.id,
        entry.raw_length,
        sealed,
    )
}

/// Reads a whole pack from memory: verifies its hash, trailer and header.
pub fn read_pack(
    secret: &RepoSecretKey,
    id: &PackId,
    bytes: &[u8],
) -> Result<(Cipher, Vec<PackEntry>)> {
    let object = format!("pack {id}");
    if hash_of(bytes) != id.0 {
        return Err(Error::corrupt(
            &object,
            "content does not match its name (hash mismatch)",
        ));
    }
    let (cipher, entries, _) = read_pack_unchecked(secret, id, bytes)?;
    Ok((cipher, entries))
}

/// Like [`read_pack`] without the hash check; also returns the ephemeral key.
pub fn read_pack_unchecked(
    secret: &RepoSecretKey,
    id: &PackId,
    bytes: &[u8],
) -> Result<(Cipher, Vec<PackEntry>, [u8; 32])> {
    let object = format!("pack {id}");
    let (before, tail) = bytes
        .split_last_chunk::<TRAILER_LEN>()
        .ok_or_else(|| Error::corrupt(&object, "too short"))?;
    let trailer = parse_trailer(tail, id)?;
    let header_start = usize::try_from(trailer.header_len)
        .ok()
        .and_then(|len| before.len().checked_sub(len))
        .ok_or_else(|| Error::corrupt(&object, "header length past the start"))?;
    let (_, header) = before
        .split_at_checked(header_start)
        .ok_or_else(|| Error::corrupt(&object, "header length past the start"))?;
    let keys = pack_keys(secret, &trailer.ephemeral, id)?;
    let (cipher, entries) = open_header(&keys, header, header_start as u64, id)?;
    Ok((cipher, entries, trailer.ephemeral))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::blob_id;

    #[test]
    fn a_pack_round_trips_and_every_flipped_byte_is_detected() {
        let secret = RepoSecretKey::from_bytes([4u8; 32]);
        let key = [9u8; 32];
        let mut enc = Encoder::new(3).unwrap();
        let mut w = PackWriter::new(&secret.public(), 1024);
        let blobs: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![0u8; 300], b"tree".to_vec()];
        for (i, b) in blobs.iter().enumerate() {
            let kind = if i == 2 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            };
            w.add(&mut enc, kind, blob_id(&key, b), b).unwrap();
        }
        let pack = w.finish();
        let (cipher, entries) = read_pack(&secret, &pack.id, &pack.bytes).unwrap();
        assert_eq!(entries, pack.entries);
        for (e, b) in entries.iter().zip(&blobs) {
            assert_eq!(&open_entry(&cipher, &key, e, &pack.bytes).unwrap(), b);
        }
        for i in 0..pack.bytes.len() {
            let mut b = pack.bytes.to_vec();
            b[i] ^= 0x01;
            assert!(read_pack(&secret, &pack.id, &b).is_err());
            // Without the hash check, a flip inside a blob is caught when the blob is opened.
            if let Ok((cipher, entries, _)) = read_pack_unchecked(&secret, &pack.id, &b) {
                let bad = entries
                    .iter()
                    .any(|e| open_entry(&cipher, &key, e, &b).is_err());
                assert!(bad, "flip at {i} went unnoticed");
            }
        }
        for n in 0..pack.bytes.len() {
            assert!(read_pack_unchecked(&secret, &pack.id, &pack.bytes[..n]).is_err());
        }
    }
}
