//! Object names as holders must never see them: tags and sealed names.
//!
//! An object is named by a storage [`Handle`] (kind and name). Holders see
//! only its tag, a keyed hash of the kind, the name and (for content that
//! never changes under one name) nothing else, or (for lock and session
//! records, which are rewritten in place) the write time too. The name
//! itself travels inside each shard header, sealed with AES-256-GCM-SIV
//! under the name key, padded to one fixed length so that its length leaks
//! nothing either. Sealing is deterministic (the nonce is taken from the
//! tag, which is unique per sealed name): storing the same object twice
//! produces the same shard bytes, so puts are idempotent.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use kith_net::{ObjectTag, OwnerId};
use kith_storage::{Handle, Kind};

use super::keys::OwnerKeys;

/// Longest object name (the storage crate's limit).
pub(crate) const MAX_NAME_LEN: usize = 128;
/// Plaintext of a sealed name: kind (1), name length (1), name padded with
/// zeros to [`MAX_NAME_LEN`], write time in Unix ns (8, little-endian).
const PLAIN_LEN: usize = 1 + 1 + MAX_NAME_LEN + 8;
/// Length of a sealed name in a shard header: the plaintext and a 16-byte
/// authentication tag.
pub(crate) const SEALED_NAME_LEN: usize = PLAIN_LEN + 16;

/// The code of each kind in tags and sealed names (part of the shard format).
pub(crate) fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Config => 0,
        Kind::Key => 1,
        Kind::Pack => 2,
        Kind::Index => 3,
        Kind::Snapshot => 4,
        Kind::Lock => 5,
        Kind::Session => 6,
        Kind::Condemned => 7,
    }
}

fn kind_of(code: u8) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_code(*k) == code)
}

/// Whether objects of this kind are rewritten under the same name with
/// other bytes (lock and session records are refreshed in place). Their
/// tags include the write time, and a newer write replaces an older one.
pub(crate) fn rewritten_in_place(kind: Kind) -> bool {
    matches!(kind, Kind::Lock | Kind::Session)
}

/// A name with what makes its tag unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SealedIdentity {
    pub(crate) handle: Handle,
    /// Write time in Unix ns for kinds rewritten in place, else 0.
    pub(crate) written: u64,
}

/// Key-derivation context of [`content_digest`].
const CONTENT_CONTEXT: &str = "kith object content digest v1";

/// The content hash a tag commits to: the object's length, `k`, and the
/// block hashes of its data shards, which between them cover every byte of
/// the object (and the zero padding of the last shard). It is built from
/// hashes the shard headers need anyway, so putting an object hashes each
/// of its bytes once. The same bytes cut with another `k` get another
/// digest; such a put stores the object anew, which costs an upload but
/// is never wrong.
pub(crate) fn content_digest<'a>(
    object_len: u64,
    k: u16,
    data_blocks: impl IntoIterator<Item = &'a Vec<[u8; 32]>>,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CONTENT_CONTEXT);
    h.update(&object_len.to_le_bytes());
    h.update(&k.to_le_bytes());
    for blocks in data_blocks {
        for b in blocks {
            h.update(b);
        }
    }
    *h.finalize().as_bytes()
}

/// The tag of an object: keyed hash of kind, name, write time and content
/// hash. Including the content hash means a rewrite with other bytes never
/// reuses the shard keys of the version it replaces.
pub(crate) fn object_tag(keys: &OwnerKeys, id: &SealedIdentity, content: &[u8; 32]) -> ObjectTag {
    let name = id.handle.name().as_bytes();
    let mut input = Vec::with_capacity(2 + name.len() + 8 + 32);
    input.push(kind_code(id.handle.kind));
    input.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    input.extend_from_slice(name);
    input.extend_from_slice(&id.written.to_le_bytes());
    input.extend_from_slice(content);
    keys.tag_of(&input)
}

fn aad(owner: &OwnerId, tag: &ObjectTag) -> [u8; 64] {
    let mut aad = [0u8; 64];
    aad[..32].copy_from_slice(&owner.0);
    aad[32..].copy_from_slice(&tag.0);
    aad
}

/// Seals the name for a header of `tag`. `None` only if the name is longer
/// than a [`Handle`] allows.
pub(crate) fn seal(
    keys: &OwnerKeys,
    tag: &ObjectTag,
    id: &SealedIdentity,
) -> Option<[u8; SEALED_NAME_LEN]> {
    let name = id.handle.name().as_bytes();
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    let mut plain = [0u8; PLAIN_LEN];
    plain[0] = kind_code(id.handle.kind);
    plain[1] = u8::try_from(name.len()).ok()?;
    // Both ranges are inside `plain`: the name is at most MAX_NAME_LEN long.
    plain.get_mut(2..2 + name.len())?.copy_from_slice(name);
    plain
        .get_mut(2 + MAX_NAME_LEN..)?
        .copy_from_slice(&id.written.to_le_bytes());
    let cipher = Aes256GcmSiv::new(keys.name_key().into());
    let nonce = &Nonce::try_from(tag.0.get(..12)?).ok()?;
    let aad = aad(&keys.owner_id(), tag);
    let sealed = cipher
        .encrypt(
            nonce,
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .ok()?;
    sealed.try_into().ok()
}

/// Opens a sealed name; `None` if it does not authenticate under this
/// owner's key for this tag, or does not hold a valid name.
pub(crate) fn open(
    keys: &OwnerKeys,
    tag: &ObjectTag,
    sealed: &[u8; SEALED_NAME_LEN],
) -> Option<SealedIdentity> {
    let cipher = Aes256GcmSiv::new(keys.name_key().into());
    let nonce = &Nonce::try_from(tag.0.get(..12)?).ok()?;
    let aad = aad(&keys.owner_id(), tag);
    let plain = cipher
        .decrypt(
            nonce,
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .ok()?;
    let kind = kind_of(*plain.first()?)?;
    let len = usize::from(*plain.get(1)?);
    let name = std::str::from_utf8(plain.get(2..2 + len)?).ok()?;
    let written = u64::from_le_bytes(plain.get(2 + MAX_NAME_LEN..PLAIN_LEN)?.try_into().ok()?);
    let handle = Handle::new(kind, name).ok()?;
    Some(SealedIdentity { handle, written })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_engine::MasterSecret;

    fn keys(seed: u8) -> OwnerKeys {
        OwnerKeys::derive(&MasterSecret::from_bytes([seed; 32])).unwrap()
    }

    #[test]
    fn the_content_digest_is_fixed_and_commits_to_length_k_and_blocks() {
        let blocks = vec![vec![[1u8; 32], [2; 32]], vec![[3; 32]]];
        let d = content_digest(1000, 2, &blocks);
        assert_eq!(
            hex::encode(d),
            "4e95b5f3b8bee1cdac85c33f72c82bb1f3ec46de0ae13d5c58d3793bd21dc4c2",
            "the content digest is part of the shard format: changing it re-uploads every object"
        );
        assert_ne!(content_digest(1001, 2, &blocks), d);
        assert_ne!(content_digest(1000, 3, &blocks), d);
        let mut other = blocks.clone();
        other[1][0][31] ^= 1;
        assert_ne!(content_digest(1000, 2, &other), d);
    }

    #[test]
    fn sealed_names_open_only_with_their_owner_and_tag() {
        let k = keys(1);
        let id = SealedIdentity {
            handle: Handle::new(Kind::Pack, "abcdef0123").unwrap(),
            written: 0,
        };
        let tag = object_tag(&k, &id, &[9; 32]);
        let sealed = seal(&k, &tag, &id).unwrap();
        assert_eq!(open(&k, &tag, &sealed), Some(id.clone()));
        assert_eq!(open(&keys(2), &tag, &sealed), None);
        let other = object_tag(&k, &id, &[8; 32]);
        assert_ne!(other, tag);
        assert_eq!(open(&k, &other, &sealed), None);
        let mut flipped = sealed;
        flipped[5] ^= 1;
        assert_eq!(open(&k, &tag, &flipped), None);
    }

    #[test]
    fn sealing_is_deterministic_and_hides_the_name_length() {
        let k = keys(1);
        let short = SealedIdentity {
            handle: Handle::config(),
            written: 0,
        };
        let long = SealedIdentity {
            handle: Handle::new(Kind::Snapshot, "f".repeat(128)).unwrap(),
            written: 7,
        };
        let t1 = object_tag(&k, &short, &[0; 32]);
        let t2 = object_tag(&k, &long, &[0; 32]);
        let a = seal(&k, &t1, &short).unwrap();
        assert_eq!(a, seal(&k, &t1, &short).unwrap());
        let b = seal(&k, &t2, &long).unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(open(&k, &t2, &b), Some(long));
    }
}
