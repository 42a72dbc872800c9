//! Key files: the key material wrapped under a password with Argon2id.
//!
//! Layout: header (`KITH`, version, kind 2) ‖ u32 LE length ‖ postcard
//! [`KeyFileInfo`] ‖ `nonce ‖ ciphertext ‖ tag` of the postcard
//! [`KeyMaterial`], with everything before the nonce as associated data.

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use rayon::iter::ParallelExtend;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::crypto::{self, SymmetricKey};
use crate::envelope::{self, FileKind, HEADER_LEN};
use crate::keys::KeyMaterial;
use crate::{Error, Result};

/// Upper bounds on Argon2 parameters read from a file, so that a hostile
/// key file cannot make kith allocate without limit.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_LANES: u32 = 16;

/// Argon2id parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// RFC 9106's second recommended setting (64 MiB, 3 passes, 4 lanes). The
/// lanes are computed on as many threads, so a machine with several cores
/// opens a key in a fraction of the single-lane time with the same memory.
impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Everything.
    Full,
    /// Only add backups.
    WriteOnly,
}

/// The readable part of a key file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFileInfo {
    /// Creation time, Unix nanoseconds.
    pub created: i64,
    /// Host that created the key.
    pub host: String,
    /// User that created the key.
    pub user: String,
    /// What the key may do.
    pub access: Access,
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; 16],
}

/// A key file in memory.
#[derive(Clone, Debug)]
pub struct KeyFile {
    /// Its readable fields.
    pub info: KeyFileInfo,
    bytes: Vec<u8>,
    /// Where the sealed material starts; everything before is its AAD.
    sealed_at: usize,
}

fn derive_password_key(password: &[u8], salt: &[u8; 16], kdf: &KdfParams) -> Result<SymmetricKey> {
    if kdf.memory_kib > MAX_MEMORY_KIB
        || kdf.iterations > MAX_ITERATIONS
        || kdf.parallelism > MAX_LANES
    {
        return Err(Error::InvalidInput(format!(
            "key derivation parameters {kdf:?} exceed kith's limits"
        )));
    }
    let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| Error::InvalidInput(format!("key derivation parameters {kdf:?}: {e}")))?;
    let mut out = [0u8; 32];
    // The crate's own allocation zeroes the whole memory (64 MiB for new
    // keys) on one thread before the lanes start, since the standard
    // allocator cannot take zeroed memory of this alignment from calloc:
    // 40 ms of a 150 ms unlock. Zeroing it on rayon's threads halves that.
    let blocks = params.block_count();
    let mut memory: Vec<argon2::Block> = Vec::new();
    memory
        .try_reserve_exact(blocks)
        .map_err(|_| Error::InvalidInput(format!("key derivation needs {blocks} KiB of memory")))?;
    memory.par_extend(rayon::iter::repeat_n(argon2::Block::new(), blocks));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory)
        .map_err(|e| Error::InvalidInput(format!("key derivation failed: {e}")))?;
    let key = SymmetricKey(out);
    out.zeroize();
    Ok(key)
}

impl KeyFile {
    /// Wraps `material` under `password`.
    pub fn create(
        material: &KeyMaterial,
        password: &[u8],
        kdf: KdfParams,
        host: &str,
        user: &str,
        created: i64,
    ) -> Result<Self> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let info = KeyFileInfo {
            created,
            host: host.to_owned(),
            user: user.to_owned(),
            access: match material {
                KeyMaterial::Full(_) => Access::Full,
                KeyMaterial::WriteOnly(_) => Access::WriteOnly,
            },
            kdf,
            salt,
        };
        let key = derive_password_key(password, &salt, &kdf)?;
        let info_bytes = envelope::encode(&info);
        let mut bytes = envelope::header(FileKind::Key).to_vec();
        let len = u32::try_from(info_bytes.len())
            .map_err(|_| Error::InvalidInput("key file header too large".into()))?;
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&info_bytes);
        let aad = bytes.clone();
        let sealed_at = bytes.len();
        let mut plain = envelope::encode(material);
        crypto::Cipher::new(&key).seal_into(&aad, &plain, &mut bytes);
        plain.zeroize();
        Ok(KeyFile {
            info,
            bytes,
            sealed_at,
        })
    }

    /// Parses a key file without opening it.
    pub fn parse(bytes: &[u8], object: &str) -> Result<Self> {
        let body = envelope::check(bytes, FileKind::Key, object)?;
        let (len, rest) = body
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::corrupt(object, "too short"))?;
        let past_end = || Error::corrupt(object, "header length past the end");
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| past_end())?;
        let (info_bytes, sealed) = rest.split_at_checked(len).ok_or_else(past_end)?;
        let info: KeyFileInfo = envelope::decode(info_bytes, object)?;
        if sealed.len() < crypto::OVERHEAD {
            return Err(Error::corrupt(object, "no sealed key material"));
        }
        Ok(KeyFile {
            info,
            bytes: bytes.to_vec(),
            sealed_at: HEADER_LEN + 4 + len,
        })
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Opens the key with `password`; `Ok(None)` if the password is wrong.
    pub fn open(&self, password: &[u8], object: &str) -> Result<Option<KeyMaterial>> {
        let key = derive_password_key(password, &self.info.salt, &self.info.kdf)?;
        let (aad, sealed) = self.bytes.split_at(self.sealed_at.min(self.bytes.len()));
        match crypto::open(&key, aad, sealed) {
            Ok(mut plain) => {
                let material = envelope::decode(&plain, object);
                plain.zeroize();
                material.map(Some)
            }
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterSecretBytes;

    fn fast() -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// The password key is standard Argon2id (version 0x13), whatever the
    /// crate computing it and however many threads run its lanes: the
    /// expected bytes come from the reference implementation (libargon2).
    #[test]
    fn password_keys_match_the_argon2id_reference_implementation() {
        let salt: [u8; 16] = std::array::from_fn(|i| i as u8);
        for (lanes, expected) in [
            (
                1,
                "c11a4774080bb0957f9a6612fe2e3ad2fcf34fb26d939a4b822698b4cb427478",
            ),
            (
                4,
                "561fa692be9487c38899b5e0d9cc1efdded2ab15a5776d9590fa7aab2cfc885f",
            ),
        ] {
            let kdf = KdfParams {
                memory_kib: 256,
                iterations: 2,
                parallelism: lanes,
            };
            let key = derive_password_key(b"correct horse", &salt, &kdf).unwrap();
            let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, expected, "{lanes} lane(s)");
        }
    }

    #[test]
    fn a_key_file_opens_with_its_password_only() {
        let m = KeyMaterial::Full(MasterSecretBytes([8u8; 32]));
        let kf = KeyFile::create(&m, b"pw", fast(), "h", "u", 1).unwrap();
        let parsed = KeyFile::parse(kf.bytes(), "k").unwrap();
        let opened = parsed.open(b"pw", "k").unwrap().unwrap();
        assert_eq!(opened.master().unwrap().0, [8u8; 32]);
        assert!(parsed.open(b"wrong", "k").unwrap().is_none());
    }

    #[test]
    fn damaged_key_files_fail_without_panicking() {
        let m = KeyMaterial::Full(MasterSecretBytes([8u8; 32]));
        let kf = KeyFile::create(&m, b"pw", fast(), "h", "u", 1).unwrap();
        let bytes = kf.bytes().to_vec();
        for n in 0..bytes.len() {
            let _ = KeyFile::parse(&bytes[..n], "k").and_then(|k| k.open(b"pw", "k"));
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            if let Ok(k) = KeyFile::parse(&b, "k") {
                assert!(
                    !matches!(k.open(b"pw", "k"), Ok(Some(_))),
                    "flip at {i} accepted"
                );
            }
        }
    }
}
