//! The owner's keys, all derived from the repository's master secret.
//!
//! A fresh machine that knows only the master secret derives the same keys,
//! so it can prove ownership of shards an old machine placed, recompute the
//! tags of every object name, open the sealed names in shard headers and
//! read the root capsule. Each key is `BLAKE3-derive_key(context, seed)`
//! with its own context string, so no key reveals another.

use kith_engine::MasterSecret;
use kith_net::{ObjectTag, OwnerId, OwnerKeypair};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::ObjectError;

const TAG_CONTEXT: &str = "kith 2026-11 v1 peer object tag key";
const NAME_CONTEXT: &str = "kith 2026-11 v1 peer object name sealing key";
const HEADER_CONTEXT: &str = "kith 2026-11 v1 peer shard header key";
const CAPSULE_CONTEXT: &str = "kith 2026-11 v1 peer root capsule key";
/// Input of the capsule's object tag, under the tag key: no object name
/// hashes to it because object tags hash a kind byte first.
const CAPSULE_TAG_INPUT: &[u8] = b"\xffroot capsule";
/// First line of saved owner keys.
const SAVED_HEADER: &str = "kith owner keys v1";
/// Saved key bytes: the signing seed and four keys.
const SAVED_LEN: usize = 5 * 32;

#[derive(Zeroize, ZeroizeOnDrop)]
struct Secrets {
    /// The owner key pair's ed25519 seed.
    seed: [u8; 32],
    tag: [u8; 32],
    name: [u8; 32],
    header: [u8; 32],
    capsule: [u8; 32],
}

/// The keys an owner uses on the peer network.
///
/// - the owner key pair (ed25519) signs holders' challenges; its public
///   key is the [`OwnerId`] (the same key the engine derives as
///   `MasterSecret::owner_signing_key`);
/// - the tag key names objects: an object's tag is a keyed hash of its
///   name (and content), so holders never see names;
/// - the name key seals the object name carried in each shard header;
/// - the header key authenticates shard headers;
/// - the capsule key encrypts and authenticates the root capsule.
pub struct OwnerKeys {
    keypair: OwnerKeypair,
    secrets: Secrets,
}

impl std::fmt::Debug for OwnerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerKeys")
            .field("owner", &self.keypair.owner_id())
            .finish_non_exhaustive()
    }
}

impl OwnerKeys {
    /// Derives every owner key from the repository's master secret.
    pub fn derive(master: &MasterSecret) -> Result<Self, ObjectError> {
        let seed = master.owner_signing_key().to_bytes();
        let keypair = OwnerKeypair::from_seed(seed).map_err(|e| ObjectError::Keys {
            reason: e.to_string(),
        })?;
        let m = master.as_bytes();
        Ok(Self {
            keypair,
            secrets: Secrets {
                seed,
                tag: blake3::derive_key(TAG_CONTEXT, m),
                name: blake3::derive_key(NAME_CONTEXT, m),
                header: blake3::derive_key(HEADER_CONTEXT, m),
                capsule: blake3::derive_key(CAPSULE_CONTEXT, m),
            },
        })
    }

    /// The owner key pair's ed25519 seed, for a transport that signs
    /// holders' challenges in another process (the node daemon).
    pub fn signing_seed(&self) -> [u8; 32] {
        self.secrets.seed
    }

    /// The keys as saved in a node folder: the line `kith owner keys v1`,
    /// then the hex of the signing seed and the tag, name, header and
    /// capsule keys (160 bytes). All are one-way derivations of the master
    /// secret: the text reveals neither the master secret nor the
    /// repository's data keys.
    pub fn to_saved(&self) -> zeroize::Zeroizing<String> {
        let s = &self.secrets;
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(SAVED_LEN));
        for part in [&s.seed, &s.tag, &s.name, &s.header, &s.capsule] {
            bytes.extend_from_slice(part);
        }
        zeroize::Zeroizing::new(format!("{SAVED_HEADER}\n{}\n", hex::encode(&*bytes)))
    }

    /// Reads keys written by [`OwnerKeys::to_saved`].
    pub fn from_saved(text: &str) -> Result<Self, ObjectError> {
        let bad = |reason: &str| ObjectError::Keys {
            reason: format!("saved owner keys: {reason}"),
        };
        let mut lines = text.lines();
        if lines.next() != Some(SAVED_HEADER) {
            return Err(bad(&format!("the first line is not {SAVED_HEADER:?}")));
        }
        let body = lines.next().unwrap_or("").trim();
        let bytes = zeroize::Zeroizing::new(hex::decode(body).map_err(|_| bad("not hex"))?);
        if bytes.len() != SAVED_LEN {
            return Err(bad(&format!("{} bytes, {SAVED_LEN} expected", bytes.len())));
        }
        let part = |i: usize| -> [u8; 32] {
            let mut out = [0u8; 32];
            if let Some(src) = bytes.get(i * 32..(i + 1) * 32) {
                out.copy_from_slice(src);
            }
            out
        };
        let seed = part(0);
        let keypair = OwnerKeypair::from_seed(seed).map_err(|e| ObjectError::Keys {
            reason: e.to_string(),
        })?;
        Ok(Self {
            keypair,
            secrets: Secrets {
                seed,
                tag: part(1),
                name: part(2),
                header: part(3),
                capsule: part(4),
            },
        })
    }

    /// The owner id: the public half of the owner key pair.
    pub fn owner_id(&self) -> OwnerId {
        self.keypair.owner_id()
    }

    /// The owner key pair, for a transport that answers holders' challenges.
    pub fn keypair(&self) -> &OwnerKeypair {
        &self.keypair
    }

    /// Keyed hash under the tag key.
    pub(crate) fn tag_of(&self, input: &[u8]) -> ObjectTag {
        ObjectTag(*blake3::keyed_hash(&self.secrets.tag, input).as_bytes())
    }

    /// The fixed tag under which the root capsule is stored.
    pub fn capsule_tag(&self) -> ObjectTag {
        self.tag_of(CAPSULE_TAG_INPUT)
    }

    pub(crate) fn name_key(&self) -> &[u8; 32] {
        &self.secrets.name
    }

    pub(crate) fn header_key(&self) -> &[u8; 32] {
        &self.secrets.header
    }

    pub(crate) fn capsule_key(&self) -> &[u8; 32] {
        &self.secrets.capsule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_master_secret_gives_same_owner_and_keys_on_any_machine() {
        let master = MasterSecret::from_bytes([3; 32]);
        let a = OwnerKeys::derive(&master).unwrap();
        let b = OwnerKeys::derive(&MasterSecret::from_bytes([3; 32])).unwrap();
        assert_eq!(a.owner_id(), b.owner_id());
        assert_eq!(a.capsule_tag(), b.capsule_tag());
        assert_eq!(a.header_key(), b.header_key());
        let other = OwnerKeys::derive(&MasterSecret::from_bytes([4; 32])).unwrap();
        assert_ne!(a.owner_id(), other.owner_id());
    }

    #[test]
    fn owner_id_is_the_engine_owner_signing_key() {
        let master = MasterSecret::from_bytes([5; 32]);
        let keys = OwnerKeys::derive(&master).unwrap();
        assert_eq!(
            keys.owner_id().0,
            master.owner_signing_key().verifying_key().to_bytes()
        );
    }

    #[test]
    fn saved_keys_read_back_as_the_same_keys_and_hold_no_master_secret() {
        let master = MasterSecret::from_bytes([8; 32]);
        let keys = OwnerKeys::derive(&master).unwrap();
        let text = keys.to_saved();
        assert!(!text.contains(&hex::encode(master.as_bytes())));
        let back = OwnerKeys::from_saved(&text).unwrap();
        assert_eq!(back.owner_id(), keys.owner_id());
        assert_eq!(back.capsule_tag(), keys.capsule_tag());
        assert_eq!(back.name_key(), keys.name_key());
        assert_eq!(back.header_key(), keys.header_key());
        assert_eq!(back.capsule_key(), keys.capsule_key());
        assert_eq!(back.signing_seed(), keys.signing_seed());
    }

    #[test]
    fn damaged_saved_keys_are_an_error_not_a_panic() {
        for text in [
            "",
            "kith owner keys v1",
            "kith owner keys v1\nzz",
            "kith owner keys v1\n00ff",
            "other\n00",
        ] {
            assert!(OwnerKeys::from_saved(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn derived_keys_are_distinct() {
        let keys = OwnerKeys::derive(&MasterSecret::from_bytes([6; 32])).unwrap();
        let all = [
            keys.secrets.tag,
            keys.secrets.name,
            keys.secrets.header,
            keys.secrets.capsule,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in all.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
    }
}
