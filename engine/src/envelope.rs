//! The common header of kith's repository files and the sealed-object layout.
//!
//! Every file except packs starts with `"KITH" ‖ version (u8) ‖ kind (u8)`.
//! A sealed object (index delta, snapshot) continues with the 32-byte
//! ephemeral x25519 public key and then `nonce ‖ ciphertext ‖ tag`, with the
//! first 38 bytes as associated data. See docs/FORMAT.md.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::crypto::{self, RepoPublicKey, RepoSecretKey};
use crate::{Error, Result};

/// Magic bytes at the start of every non-pack file.
pub const MAGIC: &[u8; 4] = b"KITH";
/// The repository format version this kith writes and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 6;

/// What a file holds, as recorded in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    /// The repository config.
    Config = 1,
    /// A key file.
    Key = 2,
    /// An index delta.
    Index = 4,
    /// A snapshot.
    Snapshot = 5,
    /// A lock record.
    Lock = 6,
    /// A session marker.
    Session = 7,
    /// A record of condemned packs.
    Condemned = 8,
}

/// The six header bytes for `kind`.
pub fn header(kind: FileKind) -> [u8; HEADER_LEN] {
    [
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        FORMAT_VERSION,
        kind as u8,
    ]
}

/// Checks the header of `bytes` and returns what follows it.
pub fn check<'a>(bytes: &'a [u8], kind: FileKind, object: &str) -> Result<&'a [u8]> {
    check_versioned(bytes, kind, object, FORMAT_VERSION).map(|(_, body)| body)
}

/// [`check`] for a kind whose own version may be above [`FORMAT_VERSION`]
/// (snapshots: docs/FORMAT.md); returns the version and what follows the
/// header.
pub fn check_versioned<'a>(
    bytes: &'a [u8],
    kind: FileKind,
    object: &str,
    newest: u8,
) -> Result<(u8, &'a [u8])> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(Error::corrupt(object, "not a kith file (bad magic)"));
    }
    if bytes[4] > newest {
        return Err(Error::Unsupported {
            object: object.to_owned(),
            version: u32::from(bytes[4]),
        });
    }
    if bytes[4] == 0 {
        return Err(Error::corrupt(object, "format version 0"));
    }
    if bytes[5] != kind as u8 {
        return Err(Error::corrupt(
            object,
            format!(
                "holds object kind {} where {} was expected",
                bytes[5], kind as u8
            ),
        ));
    }
    Ok((bytes[4], &bytes[HEADER_LEN..]))
}

/// Serializes with postcard; in-memory serialization of kith's own types
/// cannot fail, so an error here is a broken invariant reported as such.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Deserializes a postcard body, naming the object on failure. Trailing
/// bytes are refused: a body is exactly one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], object: &str) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| Error::corrupt(object, format!("cannot decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(
            object,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}

/// Encrypts `plaintext` as a sealed object of `kind` for the repository key.
pub fn seal_object(kind: FileKind, public: &RepoPublicKey, plaintext: &[u8]) -> Vec<u8> {
    seal_object_versioned(kind, FORMAT_VERSION, public, plaintext)
}

/// [`seal_object`] with an explicit header version.
pub fn seal_object_versioned(
    kind: FileKind,
    version: u8,
    public: &RepoPublicKey,
    plaintext: &[u8],
) -> Vec<u8> {
    let (ephemeral, key) = crypto::new_sealed_key(public);
    let mut out = Vec::with_capacity(HEADER_LEN + 32 + plaintext.len() + crypto::OVERHEAD);
    let mut head = header(kind);
    head[4] = version;
    out.extend_from_slice(&head);
    out.extend_from_slice(&ephemeral);
    let aad = out.clone();
    crypto::Cipher::new(&key).seal_into(&aad, plaintext, &mut out);
    out
}

/// Decrypts a sealed object of `kind`.
pub fn open_object(
    kind: FileKind,
    secret: &RepoSecretKey,
    bytes: &[u8],
    object: &str,
) -> Result<Vec<u8>> {
    open_object_versioned(kind, FORMAT_VERSION, secret, bytes, object).map(|(_, plain)| plain)
}

/// Decrypts a sealed object of `kind` whose version may go up to `newest`;
/// returns its version with the plaintext.
pub fn open_object_versioned(
    kind: FileKind,
    newest: u8,
    secret: &RepoSecretKey,
    bytes: &[u8],
    object: &str,
) -> Result<(u8, Vec<u8>)> {
    let (version, body) = check_versioned(bytes, kind, object, newest)?;
    if body.len() < 32 + crypto::OVERHEAD {
        return Err(Error::corrupt(object, "too short"));
    }
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&body[..32]);
    // After a master key rotation the object may be sealed to an earlier
    // repository key: each is tried, current first.
    let keys = crypto::open_sealed_keys(secret, &ephemeral)
        .map_err(|_| Error::corrupt(object, "invalid ephemeral key"))?;
    let aad = &bytes[..HEADER_LEN + 32];
    for key in &keys {
        if let Ok(plain) = crypto::open(key, aad, &body[32..]) {
            return Ok((version, plain));
        }
    }
    Err(Error::corrupt(
        object,
        "authentication failed (altered, or another repository's)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_objects_round_trip_and_reject_the_wrong_kind() {
        let secret = RepoSecretKey::from_bytes([1u8; 32]);
        let sealed = seal_object(FileKind::Snapshot, &secret.public(), b"hello");
        assert_eq!(
            open_object(FileKind::Snapshot, &secret, &sealed, "s").unwrap(),
            b"hello"
        );
        assert!(open_object(FileKind::Index, &secret, &sealed, "s").is_err());
        let mut newer = sealed.clone();
        newer[4] = 9;
        assert!(matches!(
            open_object(FileKind::Snapshot, &secret, &newer, "s"),
            Err(Error::Unsupported { .. })
        ));
        for n in 0..sealed.len() {
            assert!(open_object(FileKind::Snapshot, &secret, &sealed[..n], "s").is_err());
        }
    }
}
