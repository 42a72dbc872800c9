//! Authenticated encryption and the sealing of keys to the repository key.
//!
//! Every encrypted byte string in kith is `nonce (12) ‖ ciphertext ‖ tag (16)`
//! under AES-256-GCM-SIV, which stays safe if a random nonce ever repeats.
//! Objects that a write-only key must be able to create (packs, index deltas,
//! snapshots) are encrypted under a fresh key agreed between an ephemeral
//! x25519 key pair and the repository's public key, so that only a holder of
//! the repository's secret key can derive it again.

use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use rand::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the random nonce in front of every ciphertext.
pub const NONCE_LEN: usize = 12;
/// Length of the authentication tag after every ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes that encryption adds to a plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A 256-bit symmetric key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey(pub(crate) [u8; 32]);

impl SymmetricKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SymmetricKey(bytes)
    }
}

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymmetricKey(..)")
    }
}

/// Decryption failed: wrong key, or the bytes were altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

/// A ready cipher for one key; building it expands the AES key once.
pub struct Cipher(Aes256GcmSiv);

impl Cipher {
    /// A cipher for `key`.
    pub fn new(key: &SymmetricKey) -> Self {
        Cipher(Aes256GcmSiv::new(&key.0.into()))
    }

    /// Appends `nonce ‖ E(plaintext) ‖ tag` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        // Encryption of an in-memory buffer under 64 GiB cannot fail.
        #[allow(clippy::indexing_slicing)] // `start` was `out.len()` before the append.
        let tag = self
            .0
            .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut out[start..]).into())
            .unwrap_or_default();
        out.extend_from_slice(&tag);
    }

    /// `nonce ‖ E(plaintext) ‖ tag` as a new vector.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Decrypts and authenticates `nonce ‖ ciphertext ‖ tag`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        if sealed.len() < OVERHEAD {
            return Err(AuthError);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| AuthError)?;
        let tag = Tag::try_from(tag).map_err(|_| AuthError)?;
        let mut buf = ct.to_vec();
        self.0
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
            .map_err(|_| AuthError)?;
        Ok(buf)
    }
}

/// Encrypts with a one-off cipher.
pub fn seal(key: &SymmetricKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    Cipher::new(key).seal(aad, plaintext)
}

/// Decrypts with a one-off cipher.
pub fn open(key: &SymmetricKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    Cipher::new(key).open(aad, sealed)
}

/// The repository's public x25519 key, to which object keys are sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepoPublicKey(pub [u8; 32]);

/// The repository's secret x25519 key; only full keys hold it. After a
/// master key rotation it also holds the earlier repository secrets, newest
/// first, so objects sealed to an earlier key still open.
#[derive(Clone)]
pub struct RepoSecretKey {
    current: StaticSecret,
    earlier: Vec<StaticSecret>,
}

impl RepoSecretKey {
    /// Wraps raw secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RepoSecretKey {
            current: StaticSecret::from(bytes),
            earlier: Vec::new(),
        }
    }

    /// This key, also able to open what was sealed to `earlier` (newest first).
    pub fn with_earlier(mut self, earlier: impl IntoIterator<Item = RepoSecretKey>) -> Self {
        self.earlier.extend(earlier.into_iter().map(|k| k.current));
        self
    }

    /// Whether earlier secrets are held.
    pub fn has_earlier(&self) -> bool {
        !self.earlier.is_empty()
    }

    /// The matching public key (of the current secret).
    pub fn public(&self) -> RepoPublicKey {
        RepoPublicKey(PublicKey::from(&self.current).to_bytes())
    }
}

const SEAL_CONTEXT: &str = "kith 2026-11 v1 sealed object key";

fn object_key(shared: &[u8; 32], ephemeral: &[u8; 32], public: &[u8; 32]) -> SymmetricKey {
    let mut input = [0u8; 96];
    input[..32].copy_from_slice(shared);
    input[32..64].copy_from_slice(ephemeral);
    input[64..].copy_from_slice(public);
    let key = blake3::derive_key(SEAL_CONTEXT, &input);
    input.zeroize();
    SymmetricKey(key)
}

/// A fresh object key sealed to `public`: returns the ephemeral public key to
/// store beside the object, and the symmetric key to encrypt it with.
pub fn new_sealed_key(public: &RepoPublicKey) -> ([u8; 32], SymmetricKey) {
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let ephemeral = StaticSecret::from(seed);
    seed.zeroize();
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(public.0));
    let key = object_key(shared.as_bytes(), &ephemeral_public, &public.0);
    (ephemeral_public, key)
}

fn sealed_key_for(
    secret: &StaticSecret,
    ephemeral_public: &[u8; 32],
) -> Result<SymmetricKey, AuthError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*ephemeral_public));
    if !shared.was_contributory() {
        return Err(AuthError);
    }
    Ok(object_key(
        shared.as_bytes(),
        ephemeral_public,
        PublicKey::from(secret).as_bytes(),
    ))
}

/// Derives again the key of an object sealed with `ephemeral_public` to the
/// current repository key. Fails on low-order points, which an honest
/// writer never produces.
pub fn open_sealed_key(
    secret: &RepoSecretKey,
    ephemeral_public: &[u8; 32],
) -> Result<SymmetricKey, AuthError> {
    sealed_key_for(&secret.current, ephemeral_public)
}

/// The keys an object sealed with `ephemeral_public` may have, one per
/// repository secret held (current first): only authentication tells which
/// one it was sealed to.
pub fn open_sealed_keys(
    secret: &RepoSecretKey,
    ephemeral_public: &[u8; 32],
) -> Result<Vec<SymmetricKey>, AuthError> {
    let first = sealed_key_for(&secret.current, ephemeral_public)?;
    let mut keys = vec![first];
    for s in &secret.earlier {
        keys.push(sealed_key_for(s, ephemeral_public)?);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aes_256_gcm_siv_matches_rfc_8452_and_the_bytes_of_earlier_releases() {
        // RFC 8452, appendix C.2: key 01 00.., nonce 03 00.., no AAD,
        // plaintext 01 00.. 02 00.. (32 bytes).
        let mut key = [0u8; 32];
        key[0] = 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[0] = 3;
        let mut plain = [0u8; 32];
        plain[0] = 1;
        plain[16] = 2;
        let mut sealed = nonce.to_vec();
        let cipher = Cipher::new(&SymmetricKey(key));
        let mut body = plain.to_vec();
        let tag = cipher
            .0
            .encrypt_inout_detached(&Nonce::from(nonce), b"", body.as_mut_slice().into())
            .unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&body) + &hex(&tag),
            "4a6a9db4c8c6549201b9edb53006cba821ec9cf850948a7c86c68ac7539d027f\
             e819e63abcd020b006a976397632eb5d"
        );
        sealed.extend_from_slice(&body);
        sealed.extend_from_slice(&tag);
        assert_eq!(cipher.open(b"", &sealed).unwrap(), plain);

        // 4099 bytes under an AAD, sealed by the release kith used before
        // (aes-gcm-siv 0.11): long enough for the parallel POLYVAL path and
        // a partial last block; the expected value is BLAKE3 of
        // `ciphertext ‖ tag`.
        let cipher = Cipher::new(&SymmetricKey([0x42; 32]));
        let plain: Vec<u8> = (0..4099u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut body = plain.clone();
        let tag = cipher
            .0
            .encrypt_inout_detached(
                &Nonce::from([9u8; 12]),
                b"kith aad",
                body.as_mut_slice().into(),
            )
            .unwrap();
        body.extend_from_slice(&tag);
        assert_eq!(
            blake3::hash(&body).to_hex().as_str(),
            "23f83d1a2db649628e7ef04a731dedf1f75fa5d3d75c1ec6afdb2f8e3ce5023a"
        );
        let mut sealed = vec![9u8; NONCE_LEN];
        sealed.extend_from_slice(&body);
        assert_eq!(cipher.open(b"kith aad", &sealed).unwrap(), plain);
    }

    proptest! {
        #[test]
        fn sealed_bytes_open_with_the_same_key_and_aad(data in proptest::collection::vec(any::<u8>(), 0..2048), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let key = SymmetricKey([3u8; 32]);
            let sealed = seal(&key, &aad, &data);
            prop_assert_eq!(sealed.len(), data.len() + OVERHEAD);
            prop_assert_eq!(open(&key, &aad, &sealed).unwrap(), data);
        }

        #[test]
        fn a_wrong_key_aad_or_flipped_bit_fails(data in proptest::collection::vec(any::<u8>(), 0..512), bit in 0usize..4096) {
            let key = SymmetricKey([3u8; 32]);
            let sealed = seal(&key, b"ctx", &data);
            prop_assert!(open(&SymmetricKey([4u8; 32]), b"ctx", &sealed).is_err());
            prop_assert!(open(&key, b"other", &sealed).is_err());
            let mut flipped = sealed.clone();
            let i = bit % (flipped.len() * 8);
            flipped[i / 8] ^= 1 << (i % 8);
            prop_assert!(open(&key, b"ctx", &flipped).is_err());
        }
    }

    #[test]
    fn sealed_keys_are_recovered_only_with_the_repository_secret() {
        let secret = RepoSecretKey::from_bytes([9u8; 32]);
        let (ephemeral, key) = new_sealed_key(&secret.public());
        let again = open_sealed_key(&secret, &ephemeral).unwrap();
        assert_eq!(key.0, again.0);
        let other = RepoSecretKey::from_bytes([10u8; 32]);
        assert_ne!(open_sealed_key(&other, &ephemeral).unwrap().0, key.0);
        assert!(open_sealed_key(&secret, &[0u8; 32]).is_err());
    }

    #[test]
    fn an_earlier_secret_still_opens_what_was_sealed_to_it() {
        let old = RepoSecretKey::from_bytes([9u8; 32]);
        let (ephemeral, key) = new_sealed_key(&old.public());
        let rotated = RepoSecretKey::from_bytes([11u8; 32]).with_earlier([old.clone()]);
        assert_ne!(rotated.public(), old.public());
        let keys = open_sealed_keys(&rotated, &ephemeral).unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0].0, key.0);
        assert_eq!(keys[1].0, key.0);
    }

    #[test]
    fn too_short_ciphertexts_fail_cleanly() {
        let key = SymmetricKey([1u8; 32]);
        for n in 0..OVERHEAD {
            assert!(open(&key, b"", &vec![0u8; n]).is_err());
        }
    }
}
