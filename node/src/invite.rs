//! One-time invite codes: `kith-invite-` followed by base64url (no
//! padding) of a postcard record `version (u8 = 1) ‖ peer id bytes ‖
//! addresses (list of multiaddr bytes) ‖ secret (32)`. docs/NODE.md
//! describes it.

use data_encoding::BASE64URL_NOPAD;
use kith_net::{Multiaddr, PeerId};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::NodeError;

/// The text every invite code starts with.
pub const INVITE_PREFIX: &str = "kith-invite-";

const VERSION: u8 = 1;
/// Longest code accepted, in characters; a code lists a few addresses.
const MAX_CODE: usize = 4096;
/// Most addresses a code may list.
const MAX_ADDRS: usize = 32;

/// What an invite code carries: whom to dial, where, and the secret that
/// proves the invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteCode {
    /// The inviting node.
    pub peer: PeerId,
    /// Where it listens.
    pub addrs: Vec<Multiaddr>,
    /// The one-time secret.
    pub secret: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Wire {
    version: u8,
    peer: Vec<u8>,
    addrs: Vec<Vec<u8>>,
    secret: [u8; 32],
}

impl InviteCode {
    /// A new code with a fresh random secret.
    pub fn new(peer: PeerId, addrs: Vec<Multiaddr>) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            peer,
            addrs,
            secret,
        }
    }

    /// The code as text.
    pub fn encode(&self) -> String {
        let wire = Wire {
            version: VERSION,
            peer: self.peer.to_bytes(),
            addrs: self
                .addrs
                .iter()
                .take(MAX_ADDRS)
                .map(|a| a.to_vec())
                .collect(),
            secret: self.secret,
        };
        // Encoding plain owned data into a Vec cannot fail.
        let bytes = postcard::to_stdvec(&wire).unwrap_or_default();
        format!("{INVITE_PREFIX}{}", BASE64URL_NOPAD.encode(&bytes))
    }

    /// Reads a code, ignoring surrounding whitespace.
    pub fn decode(text: &str) -> Result<Self, NodeError> {
        let bad = |m: &str| NodeError::InviteCode(m.to_owned());
        let text = text.trim();
        if text.len() > MAX_CODE {
            return Err(bad("too long"));
        }
        let body = text
            .strip_prefix(INVITE_PREFIX)
            .ok_or_else(|| bad("it does not start with `kith-invite-`"))?;
        let bytes = BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| bad("not base64url; was it copied whole?"))?;
        let wire: Wire = postcard::from_bytes(&bytes).map_err(|_| bad("damaged"))?;
        if wire.version != VERSION {
            return Err(bad("made by another kith version"));
        }
        if wire.addrs.len() > MAX_ADDRS {
            return Err(bad("too many addresses"));
        }
        let peer = PeerId::from_bytes(&wire.peer).map_err(|_| bad("bad peer id"))?;
        let addrs = wire
            .addrs
            .into_iter()
            .map(|a| Multiaddr::try_from(a).map_err(|_| bad("bad address")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            peer,
            addrs,
            secret: wire.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer() -> PeerId {
        kith_net::Keypair::generate_ed25519().public().to_peer_id()
    }

    #[test]
    fn invite_code_round_trips() {
        let code = InviteCode::new(peer(), vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()]);
        let text = code.encode();
        assert!(text.starts_with(INVITE_PREFIX));
        assert_eq!(InviteCode::decode(&format!(" {text}\n")).unwrap(), code);
    }

    #[test]
    fn truncated_or_foreign_codes_are_refused() {
        let text = InviteCode::new(peer(), vec![]).encode();
        assert!(InviteCode::decode(&text[..text.len() - 5]).is_err());
        assert!(InviteCode::decode("hello").is_err());
        assert!(InviteCode::decode(&"kith-invite-A".repeat(1000)).is_err());
    }

    proptest! {
        #[test]
        fn any_text_decodes_or_errs_without_panic(s in ".{0,300}") {
            let _ = InviteCode::decode(&s);
            let _ = InviteCode::decode(&format!("{INVITE_PREFIX}{s}"));
        }
    }
}
