//! Owner authentication on the holder side: challenge nonces issued and
//! not yet used, and which peers proved which owner on their current
//! connection (those may fetch the owner's shards).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kith_net::{ErrorCode, ErrorReply, Nonce, OwnerId, OwnerProof, PeerId};

/// How long a nonce may be used (docs/PROTOCOL.md: 5 minutes).
const NONCE_TTL: Duration = Duration::from_secs(300);
/// Nonces outstanding at most; the oldest expire first when full.
const MAX_NONCES: usize = 4096;
/// How long a proof lets a peer fetch, unless its connection closes first.
const PROOF_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
struct Inner {
    nonces: HashMap<Nonce, (PeerId, OwnerId, Instant)>,
    proven: HashMap<(PeerId, OwnerId), Instant>,
}

/// Nonces and proofs.
#[derive(Debug, Default)]
pub(crate) struct Auth {
    inner: Mutex<Inner>,
}

fn unauthorized(message: &str) -> ErrorReply {
    ErrorReply::new(ErrorCode::Unauthorized, message)
}

impl Auth {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh nonce for `peer` to prove `owner` with.
    pub(crate) fn issue(&self, peer: PeerId, owner: OwnerId) -> Nonce {
        let nonce = Nonce::random();
        let now = Instant::now();
        let mut inner = self.inner();
        inner
            .nonces
            .retain(|_, (_, _, t)| now.duration_since(*t) < NONCE_TTL);
        if inner.nonces.len() >= MAX_NONCES {
            if let Some(oldest) = inner
                .nonces
                .iter()
                .min_by_key(|(_, (_, _, t))| *t)
                .map(|(n, _)| *n)
            {
                inner.nonces.remove(&oldest);
            }
        }
        inner.nonces.insert(nonce, (peer, owner, now));
        nonce
    }

    /// Checks a proof sent by `peer` to this holder (`local`), consuming
    /// its nonce; on success `peer` counts as having proved the owner.
    pub(crate) fn check(
        &self,
        peer: PeerId,
        proof: &OwnerProof,
        local: &PeerId,
    ) -> Result<(), ErrorReply> {
        let issued = self.inner().nonces.remove(&proof.nonce);
        match issued {
            Some((p, o, t)) if p == peer && o == proof.owner && t.elapsed() < NONCE_TTL => {}
            _ => return Err(unauthorized("unknown, used or expired challenge nonce")),
        }
        proof
            .verify(local)
            .map_err(|_| unauthorized("the owner signature does not verify"))?;
        self.inner()
            .proven
            .insert((peer, proof.owner), Instant::now());
        Ok(())
    }

    /// Whether `peer` proved `owner` recently on its current connection.
    pub(crate) fn is_proven(&self, peer: PeerId, owner: OwnerId) -> bool {
        self.inner()
            .proven
            .get(&(peer, owner))
            .is_some_and(|t| t.elapsed() < PROOF_TTL)
    }

    /// Forgets the proofs of a peer whose connection closed.
    pub(crate) fn forget_peer(&self, peer: &PeerId) {
        self.inner().proven.retain(|(p, _), _| p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_net::{Keypair, OwnerKeypair};

    #[test]
    fn a_nonce_proves_once_for_its_peer_and_owner() {
        let auth = Auth::default();
        let local = Keypair::generate_ed25519().public().to_peer_id();
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let owner = OwnerKeypair::generate();
        let nonce = auth.issue(peer, owner.owner_id());
        let proof = owner.prove(&nonce, &local);
        assert!(auth.check(other, &proof, &local).is_err(), "another peer");
        let nonce = auth.issue(peer, owner.owner_id());
        let proof = owner.prove(&nonce, &local);
        assert!(!auth.is_proven(peer, owner.owner_id()));
        auth.check(peer, &proof, &local).unwrap();
        assert!(auth.is_proven(peer, owner.owner_id()));
        assert!(auth.check(peer, &proof, &local).is_err(), "replayed");
        auth.forget_peer(&peer);
        assert!(!auth.is_proven(peer, owner.owner_id()));
    }

    #[test]
    fn a_proof_by_another_key_is_refused() {
        let auth = Auth::default();
        let local = Keypair::generate_ed25519().public().to_peer_id();
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let owner = OwnerKeypair::generate();
        let thief = OwnerKeypair::generate();
        let nonce = auth.issue(peer, owner.owner_id());
        let mut proof = thief.prove(&nonce, &local);
        proof.owner = owner.owner_id();
        assert_eq!(
            auth.check(peer, &proof, &local).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }
}
