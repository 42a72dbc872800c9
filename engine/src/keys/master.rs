//! The master secret and the keys derived from it.
//!
//! Every key is `BLAKE3-derive_key(context, master)` with its own context
//! string, so no derived key reveals another or the master.

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{RepoPublicKey, RepoSecretKey, SymmetricKey};

const CHUNK_ID_CONTEXT: &str = "kith 2026-11 v1 chunk id key";
const CHUNKER_SEED_CONTEXT: &str = "kith 2026-11 v1 chunker seed";
const REPO_X25519_CONTEXT: &str = "kith 2026-11 v1 repository x25519 secret";
const CONFIG_SIGNING_CONTEXT: &str = "kith 2026-11 v1 config signing key";
const OWNER_SIGNING_CONTEXT: &str = "kith 2026-11 v1 owner signing key";
const COORDINATION_CONTEXT: &str = "kith 2026-11 v1 coordination key";
const EARLIER_CONTEXT: &str = "kith 2026-11 v1 earlier master secrets key";
/// Associated data of the sealed earlier master secrets in the config.
const EARLIER_AAD: &[u8] = b"kith earlier master secrets";

/// The 32 random bytes from which every key of a repository derives.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct MasterSecret(pub(crate) [u8; 32]);

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

impl MasterSecret {
    /// A new random master secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        MasterSecret(bytes)
    }

    /// The raw bytes (for the paper key).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterSecret(bytes)
    }

    fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.0)
    }

    /// The key under which blob ids are computed.
    pub fn chunk_id_key(&self) -> [u8; 32] {
        self.derive(CHUNK_ID_CONTEXT)
    }

    /// The repository's x25519 secret key.
    pub fn repo_secret(&self) -> RepoSecretKey {
        RepoSecretKey::from_bytes(self.derive(REPO_X25519_CONTEXT))
    }

    /// The key that signs the repository config.
    pub fn config_signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.derive(CONFIG_SIGNING_CONTEXT))
    }

    /// The owner identity on the peer network: proves ownership of shards.
    pub fn owner_signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.derive(OWNER_SIGNING_CONTEXT))
    }

    /// The symmetric key of lock and session records.
    pub fn coordination_key(&self) -> [u8; 32] {
        self.derive(COORDINATION_CONTEXT)
    }

    /// Seals `earlier` master secrets (oldest first) for the config, so that
    /// only a holder of this master can read them (master key rotation).
    pub fn seal_earlier(&self, earlier: &[MasterSecret]) -> Vec<u8> {
        let mut plain: Vec<u8> = Vec::with_capacity(earlier.len() * 32);
        for m in earlier {
            plain.extend_from_slice(&m.0);
        }
        let key = SymmetricKey::from_bytes(self.derive(EARLIER_CONTEXT));
        let sealed = crate::crypto::seal(&key, EARLIER_AAD, &plain);
        plain.zeroize();
        sealed
    }

    /// Opens what [`MasterSecret::seal_earlier`] sealed.
    pub fn open_earlier(&self, sealed: &[u8]) -> crate::Result<Vec<MasterSecret>> {
        let key = SymmetricKey::from_bytes(self.derive(EARLIER_CONTEXT));
        let mut plain = crate::crypto::open(&key, EARLIER_AAD, sealed).map_err(|_| {
            crate::Error::corrupt(
                "config",
                "its earlier master secrets do not open with this master key",
            )
        })?;
        if plain.len() % 32 != 0 {
            plain.zeroize();
            return Err(crate::Error::corrupt(
                "config",
                "its earlier master secrets have a broken length",
            ));
        }
        let out = plain
            .chunks_exact(32)
            .map(|c| {
                let mut b = [0u8; 32];
                b.copy_from_slice(c);
                MasterSecret(b)
            })
            .collect();
        plain.zeroize();
        Ok(out)
    }

    /// What a write-only key file carries.
    pub fn write_keys(&self) -> WriteKeys {
        WriteKeys {
            chunk_id_key: self.chunk_id_key(),
            repo_public: self.repo_secret().public().0,
            config_verifying_key: self.config_signing_key().verifying_key().to_bytes(),
            coordination_key: self.coordination_key(),
        }
    }
}

/// The keys that allow adding backups without reading anything back.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct WriteKeys {
    /// Key of blob ids.
    pub chunk_id_key: [u8; 32],
    /// The repository public key.
    pub repo_public: [u8; 32],
    /// Verifies the config signature.
    pub config_verifying_key: [u8; 32],
    /// Encrypts lock and session records.
    pub coordination_key: [u8; 32],
}

impl std::fmt::Debug for WriteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteKeys(..)")
    }
}

impl WriteKeys {
    /// The chunker's gear seed, derived from the chunk-id key so that chunk
    /// boundaries differ between repositories.
    pub fn chunker_seed(&self) -> u64 {
        let d = blake3::derive_key(CHUNKER_SEED_CONTEXT, &self.chunk_id_key);
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// The repository public key.
    pub fn repo_public(&self) -> RepoPublicKey {
        RepoPublicKey(self.repo_public)
    }

    /// The config verifying key, if its bytes are a valid point.
    pub fn config_verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.config_verifying_key).ok()
    }

    /// The lock and session key.
    pub fn coordination_key(&self) -> SymmetricKey {
        SymmetricKey(self.coordination_key)
    }
}

/// What a key file unlocks.
#[derive(Clone, Serialize, Deserialize)]
pub enum KeyMaterial {
    /// Everything: read, write, restore, maintain.
    Full(MasterSecretBytes),
    /// Only adding new backups.
    WriteOnly(WriteKeys),
}

/// Serializable master bytes, zeroized on drop.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct MasterSecretBytes(pub [u8; 32]);

impl KeyMaterial {
    /// The write keys, derived or stored.
    pub fn write_keys(&self) -> WriteKeys {
        match self {
            KeyMaterial::Full(m) => MasterSecret(m.0).write_keys(),
            KeyMaterial::WriteOnly(w) => w.clone(),
        }
    }

    /// The master secret, if this material has it.
    pub fn master(&self) -> Option<MasterSecret> {
        match self {
            KeyMaterial::Full(m) => Some(MasterSecret(m.0)),
            KeyMaterial::WriteOnly(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_distinct_and_deterministic() {
        let m = MasterSecret([5u8; 32]);
        let keys = [
            m.chunk_id_key(),
            m.coordination_key(),
            m.config_signing_key().to_bytes(),
            m.owner_signing_key().to_bytes(),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
            assert_ne!(a, &m.0);
        }
        assert_eq!(
            m.write_keys().chunk_id_key,
            MasterSecret([5u8; 32]).chunk_id_key()
        );
        assert_eq!(m.write_keys().repo_public, m.repo_secret().public().0);
    }

    #[test]
    fn earlier_secrets_open_only_with_the_master_that_sealed_them() {
        let new = MasterSecret([1u8; 32]);
        let old = [MasterSecret([2u8; 32]), MasterSecret([3u8; 32])];
        let sealed = new.seal_earlier(&old);
        assert_eq!(new.open_earlier(&sealed).unwrap(), old.to_vec());
        assert!(MasterSecret([4u8; 32]).open_earlier(&sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(new.open_earlier(&flipped).is_err());
    }
}
