//! The root capsule: a small record, encrypted and authenticated under the
//! capsule key, naming the peers that hold the owner's shards and their
//! last known addresses. Every holder keeps a copy, so one reachable holder
//! leads a fresh machine to all the others.
//!
//! ```text
//! magic "KITHCAPS" (8) ‖ version 1 (1) ‖ nonce (12) ‖ AES-256-GCM-SIV(
//!     postcard { generation: u64, written_ns: i64, holders: [(peer id bytes, [multiaddr text])] }
//! ) ‖ tag (16)          associated data: magic ‖ version ‖ owner id
//! ```
//!
//! It is stored like a shard under the owner's capsule tag with index
//! `generation mod 65536`, so a new generation never overwrites the one it
//! replaces before it is safely stored; older generations are deleted
//! afterwards. A reader takes the highest generation that opens.
#![deny(clippy::indexing_slicing)]

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use kith_net::{Multiaddr, OwnerId, PeerId};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::keys::OwnerKeys;

/// First bytes of a capsule.
pub const CAPSULE_MAGIC: [u8; 8] = *b"KITHCAPS";
/// Capsule format version.
pub const CAPSULE_VERSION: u8 = 1;
/// Largest capsule accepted.
pub const MAX_CAPSULE_LEN: usize = 1 << 20;

/// What a root capsule says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootCapsule {
    /// Increases with every change of the holder set.
    pub generation: u64,
    /// When it was written (Unix ns).
    pub written_ns: i64,
    /// Every peer holding the owner's shards, with its last known addresses.
    pub holders: Vec<(PeerId, Vec<Multiaddr>)>,
}

#[derive(Serialize, Deserialize)]
struct Body {
    generation: u64,
    written_ns: i64,
    holders: Vec<(Vec<u8>, Vec<String>)>,
}

fn aad(owner: &OwnerId) -> Vec<u8> {
    let mut aad = CAPSULE_MAGIC.to_vec();
    aad.push(CAPSULE_VERSION);
    aad.extend_from_slice(&owner.0);
    aad
}

impl RootCapsule {
    /// The shard index a capsule of this generation is stored under.
    pub fn index(&self) -> u16 {
        (self.generation % 65536) as u16
    }

    /// Encrypts the capsule under the owner's capsule key.
    pub fn seal(&self, keys: &OwnerKeys) -> Option<Vec<u8>> {
        let body = Body {
            generation: self.generation,
            written_ns: self.written_ns,
            holders: self
                .holders
                .iter()
                .map(|(p, a)| (p.to_bytes(), a.iter().map(ToString::to_string).collect()))
                .collect(),
        };
        let plain = postcard::to_stdvec(&body).ok()?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let cipher = Aes256GcmSiv::new(keys.capsule_key().into());
        let aad = aad(&keys.owner_id());
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut out = CAPSULE_MAGIC.to_vec();
        out.push(CAPSULE_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Opens a capsule; `None` if it is not this owner's, altered, or
    /// malformed.
    pub fn open(keys: &OwnerKeys, bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_CAPSULE_LEN || bytes.get(..8)? != CAPSULE_MAGIC {
            return None;
        }
        if *bytes.get(8)? != CAPSULE_VERSION {
            return None;
        }
        let nonce = bytes.get(9..21)?;
        let sealed = bytes.get(21..)?;
        let cipher = Aes256GcmSiv::new(keys.capsule_key().into());
        let aad = aad(&keys.owner_id());
        let nonce = Nonce::try_from(nonce).ok()?;
        let plain = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()?;
        let body: Body = postcard::from_bytes(&plain).ok()?;
        let holders = body
            .holders
            .into_iter()
            .filter_map(|(p, a)| {
                let peer = PeerId::from_bytes(&p).ok()?;
                Some((peer, a.iter().filter_map(|a| a.parse().ok()).collect()))
            })
            .collect();
        Some(Self {
            generation: body.generation,
            written_ns: body.written_ns,
            holders,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use kith_engine::MasterSecret;

    #[test]
    fn capsule_round_trips_and_refuses_other_owners_and_changes() {
        let keys = OwnerKeys::derive(&MasterSecret::from_bytes([1; 32])).unwrap();
        let capsule = RootCapsule {
            generation: 70_000,
            written_ns: 5,
            holders: vec![(
                PeerId::random(),
                vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            )],
        };
        assert_eq!(capsule.index(), (70_000 % 65536) as u16);
        let sealed = capsule.seal(&keys).unwrap();
        assert_eq!(RootCapsule::open(&keys, &sealed), Some(capsule));
        let other = OwnerKeys::derive(&MasterSecret::from_bytes([2; 32])).unwrap();
        assert_eq!(RootCapsule::open(&other, &sealed), None);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert_eq!(RootCapsule::open(&keys, &bad), None, "byte {i}");
        }
        assert_eq!(RootCapsule::open(&keys, &sealed[..20]), None);
    }
}
