//! Entry points for fuzzing every decoder of untrusted bytes.
//!
//! Each function feeds arbitrary bytes to one decoder and must return
//! without panicking, whatever the input. The cargo-fuzz targets in `fuzz/`
//! call these, and a test replays the committed corpus through them, so the
//! corpus keeps guarding the decoders even where cargo-fuzz is not installed.

use crate::blob::{open_blob, BlobKind, Compression};
use crate::config::Config;
use crate::crypto::{Cipher, RepoSecretKey, SymmetricKey};
use crate::envelope;
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::IndexFile;
use crate::keys::{parse_paper_key, KeyFile};
use crate::pack;
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// The repository secret the fuzz targets decrypt with.
pub fn secret() -> RepoSecretKey {
    RepoSecretKey::from_bytes([7u8; 32])
}

/// A whole pack: trailer, header, entries.
pub fn pack(data: &[u8]) {
    let id = PackId([0; 32]);
    let _ = pack::read_pack(&secret(), &id, data);
    let _ = pack::read_pack_unchecked(&secret(), &id, data);
}

/// A pack header's plaintext (the postcard list of entries).
pub fn pack_entries(data: &[u8]) {
    if let Ok(entries) = envelope::decode::<Vec<pack::PackEntry>>(data, "fuzz") {
        let _ = pack::validate_entries(&entries, u64::from(u32::MAX), "fuzz");
    }
}

/// A tree blob's plaintext.
pub fn tree(data: &[u8]) {
    let _ = Tree::from_bytes(data, &BlobId([0; 32]));
}

/// A sealed snapshot file, and a snapshot's plaintext.
pub fn snapshot(data: &[u8]) {
    let _ = Snapshot::from_bytes(&secret(), data, &SnapshotId([0; 32]));
    let _ = envelope::decode::<Snapshot>(data, "fuzz");
}

/// A sealed index delta, and an index delta's plaintext.
pub fn index(data: &[u8]) {
    let _ = IndexFile::from_bytes(&secret(), data, &IndexId([0; 32]));
    let _ = envelope::decode::<IndexFile>(data, "fuzz");
}

/// A key file. Opening is tried only with cheap Argon2 parameters, so the
/// fuzzer explores the decoder rather than the key derivation.
pub fn key_file(data: &[u8]) {
    if let Ok(k) = KeyFile::parse(data, "fuzz") {
        if k.info.kdf.memory_kib <= 64 && k.info.kdf.iterations <= 2 && k.info.kdf.parallelism <= 2
        {
            let _ = k.open(b"password", "fuzz");
        }
    }
}

/// The config object.
pub fn config(data: &[u8]) {
    let _ = Config::parse_unverified(data);
}

/// A paper key typed by a person.
pub fn paper_key(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_paper_key(text);
    }
}

/// A sealed blob, decrypted and decompressed.
pub fn blob(data: &[u8]) {
    let cipher = Cipher::new(&SymmetricKey([9u8; 32]));
    let raw = data.first().map(|b| u32::from(*b) << 8).unwrap_or(0);
    for compression in [Compression::None, Compression::Zstd] {
        let _ = open_blob(
            &cipher,
            &[1u8; 32],
            BlobKind::Data,
            compression,
            &BlobId([0; 32]),
            raw,
            data,
        );
    }
}

/// The coordination records: locks, sessions and condemnation records,
/// sealed and as plaintext.
pub fn coordination(data: &[u8]) {
    let key = SymmetricKey::from_bytes([5u8; 32]);
    let _ = crate::lock::decode_record(&key, kith_storage::Kind::Lock, data, "fuzz");
    let _ = crate::lock::decode_record(&key, kith_storage::Kind::Session, data, "fuzz");
    let _ = crate::condemned::Condemnation::from_bytes(&key, data, "fuzz");
    let _ = envelope::decode::<crate::lock::Record>(data, "fuzz");
    let _ = envelope::decode::<crate::condemned::Condemnation>(data, "fuzz");
}

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("pack", pack),
    ("pack_entries", pack_entries),
    ("tree", tree),
    ("snapshot", snapshot),
    ("index", index),
    ("key_file", key_file),
    ("config", config),
    ("paper_key", paper_key),
    ("blob", blob),
    ("coordination", coordination),
];
