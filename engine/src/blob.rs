//! Blobs: a chunk of file data or a serialized tree, compressed with zstd
//! when that pays, then encrypted with its pack's key.
//!
//! The associated data of a blob's encryption is `kind ‖ compression ‖ id`,
//! so a blob cannot be swapped for another one or relabelled without
//! detection; after decryption the plaintext's keyed hash is checked too.

use serde::{Deserialize, Serialize};

use crate::crypto::Cipher;
use crate::id::BlobId;

/// Largest plaintext a blob may claim, so a hostile header cannot make a
/// reader allocate without bound. Data blobs are at most the chunker's
/// maximum (16 MiB); tree blobs of huge folders can be larger.
pub const MAX_BLOB_SIZE: u32 = 256 * 1024 * 1024;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// File content.
    Data,
    /// A serialized tree.
    Tree,
}

impl BlobKind {
    fn byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

/// How a blob's plaintext was transformed before encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// Stored as is.
    None,
    /// zstd frame.
    Zstd,
}

impl Compression {
    fn byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
}

/// The keyed BLAKE3 id of a plaintext.
pub fn blob_id(chunk_id_key: &[u8; 32], plaintext: &[u8]) -> BlobId {
    BlobId(*blake3::keyed_hash(chunk_id_key, plaintext).as_bytes())
}

fn aad(kind: BlobKind, compression: Compression, id: &BlobId) -> [u8; 34] {
    let mut a = [0u8; 34];
    a[0] = kind.byte();
    a[1] = compression.byte();
    a[2..].copy_from_slice(&id.0);
    a
}

/// Blobs at least this long are sampled before they are compressed.
const PROBE_MIN_LEN: usize = 256 * 1024;
/// The sample is this many slices of [`PROBE_SLICE_LEN`] bytes, spread evenly.
const PROBE_SLICES: usize = 8;
const PROBE_SLICE_LEN: usize = 4 * 1024;

/// Reusable compression state for one thread.
pub struct Encoder {
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    sample: Vec<u8>,
}

impl Encoder {
    /// An encoder at a zstd level (0 means zstd's default level).
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(Encoder {
            compressor: zstd::bulk::Compressor::new(level)?,
            scratch: Vec::new(),
            sample: Vec::new(),
        })
    }

    /// Whether compressing `plaintext` may pay. Photos, video and archives
    /// are already compressed, and zstd spends as long failing on them as
    /// it spends succeeding on text; so a large blob is first sampled, and
    /// compressed only when the sample saves at least 1/64 of its size.
    /// The bar is lower than [`Encoder::seal_into`]'s 1/32, because slices
    /// compressed apart lose the context the whole blob would have.
    fn worth_compressing(&mut self, plaintext: &[u8]) -> bool {
        if plaintext.len() < PROBE_MIN_LEN {
            return true;
        }
        let stride = plaintext.len() / PROBE_SLICES;
        self.sample.clear();
        for slice in plaintext.chunks(stride).take(PROBE_SLICES) {
            self.sample
                .extend_from_slice(slice.get(..PROBE_SLICE_LEN).unwrap_or(slice));
        }
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(self.sample.len()));
        match self
            .compressor
            .compress_to_buffer(&self.sample[..], &mut self.scratch)
        {
            Ok(_) => self.scratch.len() + self.sample.len() / 64 < self.sample.len(),
            Err(_) => true,
        }
    }

    /// Compresses when that saves at least 1/32 of the size (large blobs
    /// are sampled first), then appends
    /// `nonce ‖ ciphertext ‖ tag` to `out`. Returns the compression used.
    pub fn seal_into(
        &mut self,
        cipher: &Cipher,
        kind: BlobKind,
        id: &BlobId,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Compression {
        let compressed = self.worth_compressing(plaintext) && {
            let bound = zstd::zstd_safe::compress_bound(plaintext.len());
            self.scratch.clear();
            self.scratch.reserve(bound);
            self.compressor
                .compress_to_buffer(plaintext, &mut self.scratch)
                .is_ok()
                && self.scratch.len() + plaintext.len() / 32 < plaintext.len()
        };
        let (compression, payload) = if compressed {
            (Compression::Zstd, &self.scratch[..])
        } else {
            (Compression::None, plaintext)
        };
        cipher.seal_into(&aad(kind, compression, id), payload, out);
        compression
    }
}

/// Why a blob failed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobError {
    /// Authentication failed.
    Auth,
    /// Decompression failed or gave the wrong length.
    Decompress(String),
    /// The plaintext's id differs from the expected one.
    IdMismatch,
    /// The blob's recorded place lies outside the bytes it is read from.
    OutOfBounds,
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobError::Auth => f.write_str("authentication failed"),
            BlobError::Decompress(e) => write!(f, "decompression failed: {e}"),
            BlobError::IdMismatch => f.write_str("content does not match its id"),
            BlobError::OutOfBounds => f.write_str("its place lies outside its pack"),
        }
    }
}

thread_local! {
    /// One zstd decompression context per thread: creating one per blob
    /// costs more than decompressing a small blob.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(payload: &[u8], capacity: usize) -> Result<Vec<u8>, BlobError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| BlobError::Decompress(e.to_string()))?,
            );
        }
        match slot.as_mut() {
            Some(d) => d
                .decompress(payload, capacity)
                .map_err(|e| BlobError::Decompress(e.to_string())),
            None => Err(BlobError::Decompress("no decompression context".into())),
        }
    })
}

/// Decrypts, decompresses and verifies one blob.
pub fn open_blob(
    cipher: &Cipher,
    chunk_id_key: &[u8; 32],
    kind: BlobKind,
    compression: Compression,
    id: &BlobId,
    raw_length: u32,
    sealed: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let payload = cipher
        .open(&aad(kind, compression, id), sealed)
        .map_err(|_| BlobError::Auth)?;
    let plain = match compression {
        Compression::None => payload,
        Compression::Zstd => {
            let cap = raw_length.min(MAX_BLOB_SIZE) as usize;
            decompress(&payload, cap)?
        }
    };
    if plain.len() != raw_length as usize {
        return Err(BlobError::Decompress(format!(
            "{} bytes where {raw_length} were expected",
            plain.len()
        )));
    }
    if blob_id(chunk_id_key, &plain) != *id {
        return Err(BlobError::IdMismatch);
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SymmetricKey;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn blobs_round_trip(data in proptest::collection::vec(0u8..4, 0..5000), tree in any::<bool>()) {
            let key = [1u8; 32];
            let cipher = Cipher::new(&SymmetricKey([2u8; 32]));
            let kind = if tree { BlobKind::Tree } else { BlobKind::Data };
            let id = blob_id(&key, &data);
            let mut enc = Encoder::new(3).unwrap();
            let mut out = Vec::new();
            let c = enc.seal_into(&cipher, kind, &id, &data, &mut out);
            let back = open_blob(&cipher, &key, kind, c, &id, data.len() as u32, &out).unwrap();
            prop_assert_eq!(back, data.clone());
            prop_assert!(open_blob(&cipher, &key, BlobKind::Data, c, &blob_id(&key, b"x"), data.len() as u32, &out).is_err());
        }
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let data: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let cipher = Cipher::new(&SymmetricKey([2u8; 32]));
        let mut enc = Encoder::new(3).unwrap();
        let mut out = Vec::new();
        let id = blob_id(&[0u8; 32], &data);
        let c = enc.seal_into(&cipher, BlobKind::Data, &id, &data, &mut out);
        assert_eq!(c, Compression::None);
        let zeros = vec![0u8; 10_000];
        out.clear();
        let c = enc.seal_into(&cipher, BlobKind::Data, &id, &zeros, &mut out);
        assert_eq!(c, Compression::Zstd);
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn seal_and_open(data: &[u8]) -> Compression {
        let key = [3u8; 32];
        let cipher = Cipher::new(&SymmetricKey([4u8; 32]));
        let mut enc = Encoder::new(3).unwrap();
        let id = blob_id(&key, data);
        let mut out = Vec::new();
        let c = enc.seal_into(&cipher, BlobKind::Data, &id, data, &mut out);
        let back = open_blob(
            &cipher,
            &key,
            BlobKind::Data,
            c,
            &id,
            data.len() as u32,
            &out,
        )
        .unwrap();
        assert!(back == data);
        c
    }

    #[test]
    fn a_large_incompressible_blob_is_judged_by_its_sample_and_stored_raw() {
        let data = noise(3 * PROBE_MIN_LEN, 7);
        let mut enc = Encoder::new(3).unwrap();
        assert!(!enc.worth_compressing(&data));
        assert_eq!(seal_and_open(&data), Compression::None);
    }

    #[test]
    fn a_large_blob_with_compressible_stretches_is_compressed() {
        // Noise with runs of text between: every sampled slice sees some
        // of the text, so the whole blob is tried, and it pays.
        let text = b"the quick brown fox jumps over the lazy dog; ".repeat(100);
        let mut data = Vec::new();
        let mut seed = 11;
        while data.len() < 2 * PROBE_MIN_LEN {
            data.extend_from_slice(&noise(2048, seed));
            data.extend_from_slice(&text);
            seed += 1;
        }
        let mut enc = Encoder::new(3).unwrap();
        assert!(enc.worth_compressing(&data));
        assert_eq!(seal_and_open(&data), Compression::Zstd);
    }

    #[test]
    fn blobs_just_under_the_sampling_size_are_compressed_whole() {
        // Mostly noise, with a compressible tail that a sample could miss.
        let mut data = noise(PROBE_MIN_LEN - 64 * 1024, 5);
        data.extend(std::iter::repeat_n(0u8, 64 * 1024 - 1));
        let mut enc = Encoder::new(3).unwrap();
        assert!(enc.worth_compressing(&data));
    }
}
