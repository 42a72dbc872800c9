//! Owner authentication for holdings listings and deletes.
//!
//! Noise authenticates peers (machines); owners (repositories) authenticate
//! separately, because a new machine holding only the master secret must
//! be able to prove it owns shards an old machine placed. The holder sends
//! a fresh [`Nonce`]; the owner signs [`challenge_message`] with the ed25519
//! key derived from its master secret. The message binds the nonce, the
//! holder's peer id and the owner id under a domain-separation prefix, so a
//! signature cannot be replayed to another holder, for another owner, or
//! in another kind of kith signature.

use libp2p::{identity::ed25519, PeerId};
use rand::RngCore;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::{ids::OwnerId, NetError};

/// Domain-separation prefix of [`challenge_message`] (27 bytes, NUL included).
pub const CHALLENGE_DOMAIN: &[u8; 27] = b"kith/holdings-challenge/v1\0";

/// A holder's single-use challenge nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Nonce(pub [u8; 32]);

impl Nonce {
    /// A fresh nonce from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }
}

/// An ed25519 signature (64 bytes) by an owner key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerSignature(pub [u8; 64]);

impl Serialize for OwnerSignature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for OwnerSignature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = OwnerSignature;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                <[u8; 64]>::try_from(v)
                    .map(OwnerSignature)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// An owner's answer to a challenge: who, which nonce, and the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerProof {
    /// The owner claiming the holdings.
    pub owner: OwnerId,
    /// The nonce the holder issued.
    pub nonce: Nonce,
    /// Signature over [`challenge_message`]`(nonce, holder, owner)`.
    pub signature: OwnerSignature,
}

impl OwnerProof {
    /// Checks the signature for `holder` (the local peer id, when called by
    /// the holder). The caller must also check that it issued `nonce`, that
    /// the nonce is fresh and that it was not used before.
    pub fn verify(&self, holder: &PeerId) -> Result<(), NetError> {
        let key = ed25519::PublicKey::try_from_bytes(&self.owner.0)
            .map_err(|_| NetError::BadSignature)?;
        let msg = challenge_message(&self.nonce, holder, &self.owner);
        if key.verify(&msg, &self.signature.0) {
            Ok(())
        } else {
            Err(NetError::BadSignature)
        }
    }
}

/// The exact bytes an owner signs:
/// `CHALLENGE_DOMAIN ‖ nonce (32) ‖ len(holder) (1) ‖ holder peer id bytes ‖ owner id (32)`.
pub fn challenge_message(nonce: &Nonce, holder: &PeerId, owner: &OwnerId) -> Vec<u8> {
    let holder = holder.to_bytes();
    let mut msg = Vec::with_capacity(CHALLENGE_DOMAIN.len() + 32 + 1 + holder.len() + 32);
    msg.extend_from_slice(CHALLENGE_DOMAIN);
    msg.extend_from_slice(&nonce.0);
    // Peer ids are multihashes of at most 64 bytes; the length byte keeps
    // the encoding unambiguous.
    msg.push(u8::try_from(holder.len()).unwrap_or(u8::MAX));
    msg.extend_from_slice(&holder);
    msg.extend_from_slice(&owner.0);
    msg
}

/// An owner's signing key: ed25519, derived by node from the master secret.
#[derive(Clone)]
pub struct OwnerKeypair(ed25519::Keypair);

impl OwnerKeypair {
    /// Builds the key from a 32-byte ed25519 secret seed. The seed is
    /// zeroized by the underlying library once consumed.
    pub fn from_seed(mut seed: [u8; 32]) -> Result<Self, NetError> {
        let secret =
            ed25519::SecretKey::try_from_bytes(&mut seed).map_err(|e| NetError::Malformed {
                what: "owner secret key",
                reason: e.to_string(),
            })?;
        Ok(Self(ed25519::Keypair::from(secret)))
    }

    /// A random owner key (tests, simulations).
    pub fn generate() -> Self {
        Self(ed25519::Keypair::generate())
    }

    /// The owner id: the public key.
    pub fn owner_id(&self) -> OwnerId {
        OwnerId(self.0.public().to_bytes())
    }

    /// Signs the holder's challenge `nonce`, producing the proof to send.
    pub fn prove(&self, nonce: &Nonce, holder: &PeerId) -> OwnerProof {
        let owner = self.owner_id();
        let sig = self.0.sign(&challenge_message(nonce, holder, &owner));
        // ed25519 signatures are always 64 bytes; were one not, the zero
        // signature would fail verification at the holder.
        let signature: [u8; 64] = sig.try_into().unwrap_or([0u8; 64]);
        OwnerProof {
            owner,
            nonce: *nonce,
            signature: OwnerSignature(signature),
        }
    }
}

impl std::fmt::Debug for OwnerKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnerKeypair")
            .field(&self.owner_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    #[test]
    fn proof_verifies_only_for_its_holder_owner_and_nonce() {
        let owner = OwnerKeypair::from_seed([7; 32]).unwrap();
        let holder = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let nonce = Nonce::random();
        let proof = owner.prove(&nonce, &holder);
        proof.verify(&holder).unwrap();
        assert!(proof.verify(&other).is_err());
        let mut wrong_nonce = proof;
        wrong_nonce.nonce.0[0] ^= 1;
        assert!(wrong_nonce.verify(&holder).is_err());
        let mut wrong_owner = proof;
        wrong_owner.owner = OwnerKeypair::generate().owner_id();
        assert!(wrong_owner.verify(&holder).is_err());
        let mut wrong_sig = proof;
        wrong_sig.signature.0[10] ^= 1;
        assert!(wrong_sig.verify(&holder).is_err());
    }

    #[test]
    fn challenge_message_layout_is_fixed() {
        let holder = Keypair::generate_ed25519().public().to_peer_id();
        let msg = challenge_message(&Nonce([1; 32]), &holder, &OwnerId([2; 32]));
        let hb = holder.to_bytes();
        assert_eq!(&msg[..27], CHALLENGE_DOMAIN);
        assert_eq!(&msg[27..59], &[1; 32]);
        assert_eq!(usize::from(msg[59]), hb.len());
        assert_eq!(&msg[60..60 + hb.len()], &hb[..]);
        assert_eq!(&msg[60 + hb.len()..], &[2; 32]);
    }

    #[test]
    fn same_seed_gives_same_owner() {
        let a = OwnerKeypair::from_seed([9; 32]).unwrap();
        let b = OwnerKeypair::from_seed([9; 32]).unwrap();
        assert_eq!(a.owner_id(), b.owner_id());
    }
}
