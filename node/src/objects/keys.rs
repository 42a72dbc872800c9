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

#[derive(Zeroize, ZeroizeOnDrop)]
struct Secrets {
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
                tag: blake3::derive_key(TAG_CONTEXT, m),
                name: blake3::derive_key(NAME_CONTEXT, m),
                header: blake3::derive_key(HEADER_CONTEXT, m),
                capsule: blake3::derive_key(CAPSULE_CONTEXT, m),
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
