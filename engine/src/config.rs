//! The repository config: public parameters, signed by a key derived from
//! the master secret.
//!
//! Layout: header (`KITH`, version, kind 1) ‖ u32 LE body length ‖ postcard
//! [`Config`] ‖ 64-byte Ed25519 signature over everything before it.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::envelope::{self, FileKind};
use crate::{Error, Result};

/// Chunker bounds, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk (except a file's last).
    pub min_size: u32,
    /// Target average chunk.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
    /// FastCDC normalization level, 0..=3.
    pub normalization: u8,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            // 4 MiB rather than 8: each reading thread holds twice this much.
            max_size: 4 * 1024 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkerParams {
    /// Refuses bounds the chunker cannot work with (they come from a file).
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "chunker parameters {self:?} are out of range"
            )))
        }
    }
}

/// Version 1 of the config: [`Config`] without `earlier`.
#[derive(Serialize, Deserialize)]
struct ConfigV1 {
    id: [u8; 32],
    created: i64,
    chunker: ChunkerParams,
    pack_size: u32,
    compression_level: i32,
    repo_public: [u8; 32],
    verifying_key: [u8; 32],
}

/// The newest config version this kith reads. Version 2 appends `earlier`
/// (master key rotation); a config without earlier secrets is written as
/// version 1.
pub const CONFIG_VERSION: u8 = 2;

/// The repository config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Random repository id.
    pub id: [u8; 32],
    /// Creation time, Unix nanoseconds.
    pub created: i64,
    /// Chunker bounds.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// zstd level for new blobs.
    pub compression_level: i32,
    /// The repository x25519 public key.
    pub repo_public: [u8; 32],
    /// The key that verifies this config's signature.
    pub verifying_key: [u8; 32],
    /// After a master key rotation: every earlier master secret, oldest
    /// first, sealed under the current one (empty before any rotation).
    pub earlier: Vec<u8>,
}

/// Largest allowed target pack size (packs above it would not fit the
/// 32-bit offsets of pack headers comfortably, nor in memory).
pub const MAX_PACK_SIZE: u32 = 512 * 1024 * 1024;

impl Config {
    /// The repository id as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// Serializes and signs.
    pub fn to_bytes(&self, signer: &SigningKey) -> Vec<u8> {
        let (version, body) = if self.earlier.is_empty() {
            (
                1,
                envelope::encode(&ConfigV1 {
                    id: self.id,
                    created: self.created,
                    chunker: self.chunker,
                    pack_size: self.pack_size,
                    compression_level: self.compression_level,
                    repo_public: self.repo_public,
                    verifying_key: self.verifying_key,
                }),
            )
        } else {
            (2, envelope::encode(self))
        };
        let mut out = envelope::header(FileKind::Config).to_vec();
        out[4] = version;
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&body);
        let signature = signer.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        out
    }

    /// Parses without checking the signature (to learn the repository id).
    pub fn parse_unverified(bytes: &[u8]) -> Result<(Self, &[u8], Signature)> {
        let (version, rest) =
            envelope::check_versioned(bytes, FileKind::Config, "config", CONFIG_VERSION)?;
        if rest.len() < 4 + 64 {
            return Err(Error::corrupt("config", "too short"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let body = rest
            .get(4..4 + len)
            .ok_or_else(|| Error::corrupt("config", "length past the end"))?;
        let sig_bytes: [u8; 64] = rest
            .get(4 + len..)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::corrupt("config", "signature missing or extra bytes"))?;
        let config: Config = if version >= 2 {
            envelope::decode(body, "config")?
        } else {
            let v1: ConfigV1 = envelope::decode(body, "config")?;
            Config {
                id: v1.id,
                created: v1.created,
                chunker: v1.chunker,
                pack_size: v1.pack_size,
                compression_level: v1.compression_level,
                repo_public: v1.repo_public,
                verifying_key: v1.verifying_key,
                earlier: Vec::new(),
            }
        };
        config
            .chunker
            .validate()
            .map_err(|e| Error::corrupt("config", e.to_string()))?;
        if config.pack_size == 0 || config.pack_size > MAX_PACK_SIZE {
            return Err(Error::corrupt("config", "pack size out of range"));
        }
        let signed = &bytes[..bytes.len() - 64];
        Ok((config, signed, Signature::from_bytes(&sig_bytes)))
    }

    /// Parses and verifies the signature with a trusted key.
    pub fn parse(bytes: &[u8], trusted: &VerifyingKey) -> Result<Self> {
        let (config, signed, signature) = Self::parse_unverified(bytes)?;
        trusted
            .verify(signed, &signature)
            .map_err(|_| Error::corrupt("config", "signature does not verify with this key"))?;
        if config.verifying_key != trusted.to_bytes() {
            return Err(Error::corrupt("config", "names a different signing key"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(signer: &SigningKey) -> Config {
        Config {
            id: [1u8; 32],
            created: 5,
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            compression_level: 3,
            repo_public: [2u8; 32],
            verifying_key: signer.verifying_key().to_bytes(),
            earlier: Vec::new(),
        }
    }

    #[test]
    fn a_signed_config_verifies_and_any_flip_is_refused() {
        let signer = SigningKey::from_bytes(&[7u8; 32]);
        let config = sample(&signer);
        let bytes = config.to_bytes(&signer);
        assert_eq!(
            Config::parse(&bytes, &signer.verifying_key()).unwrap(),
            config
        );
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(
                Config::parse(&b, &signer.verifying_key()).is_err(),
                "flip at {i}"
            );
        }
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(Config::parse(&bytes, &other.verifying_key()).is_err());
    }

    #[test]
    fn a_config_with_earlier_secrets_is_version_2_and_one_without_is_version_1() {
        let signer = SigningKey::from_bytes(&[7u8; 32]);
        let plain = sample(&signer);
        assert_eq!(plain.to_bytes(&signer)[4], 1);
        let rotated = Config {
            earlier: vec![5u8; 60],
            ..plain
        };
        let bytes = rotated.to_bytes(&signer);
        assert_eq!(bytes[4], 2);
        assert_eq!(
            Config::parse(&bytes, &signer.verifying_key()).unwrap(),
            rotated
        );
        let mut newer = bytes.clone();
        newer[4] = 3;
        assert!(matches!(
            Config::parse_unverified(&newer),
            Err(Error::Unsupported { .. })
        ));
    }
}
