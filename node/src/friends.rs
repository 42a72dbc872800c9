//! Friends and pending invites, persisted in the node database.
//!
//! A friend is a peer that redeemed one of our invites, or whose invite we
//! redeemed. Friends may store shards here (within the quota); the node
//! keeps connections to them, dialling only the addresses recorded here.

use std::sync::Arc;

use kith_net::{Multiaddr, PeerId};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::{
    state::{now_secs, State, FRIENDS, INVITES},
    NodeError,
};

/// What is recorded about a friend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendRecord {
    /// Addresses to dial it at (multiaddr bytes).
    pub addrs: Vec<Vec<u8>>,
    /// When it became a friend, seconds since the Unix epoch.
    pub since: u64,
}

impl FriendRecord {
    /// The recorded addresses that parse.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect()
    }
}

/// The friends table and the invites table.
#[derive(Clone, Debug)]
pub(crate) struct Friends {
    state: Arc<State>,
}

impl Friends {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// Every friend.
    pub(crate) fn list(&self) -> Result<Vec<(PeerId, FriendRecord)>, NodeError> {
        let s = &self.state;
        let tx = s.db.begin_read().map_err(|e| s.err(e))?;
        let table = tx.open_table(FRIENDS).map_err(|e| s.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| s.err(e))? {
            let (k, v) = row.map_err(|e| s.err(e))?;
            let Ok(peer) = PeerId::from_bytes(k.value()) else {
                tracing::warn!("skipping a friend record with an unreadable peer id");
                continue;
            };
            match postcard::from_bytes::<FriendRecord>(v.value()) {
                Ok(rec) => out.push((peer, rec)),
                Err(e) => tracing::warn!(%peer, %e, "skipping an unreadable friend record"),
            }
        }
        Ok(out)
    }

    /// Records `peer` as a friend at `addrs`, keeping known addresses when
    /// `addrs` is empty.
    pub(crate) fn add(&self, peer: PeerId, addrs: &[Multiaddr]) -> Result<FriendRecord, NodeError> {
        let s = &self.state;
        let tx = s.db.begin_write().map_err(|e| s.err(e))?;
        let rec = {
            let mut table = tx.open_table(FRIENDS).map_err(|e| s.err(e))?;
            let key = peer.to_bytes();
            let old = table
                .get(key.as_slice())
                .map_err(|e| s.err(e))?
                .and_then(|v| postcard::from_bytes::<FriendRecord>(v.value()).ok());
            let mut rec = old.unwrap_or(FriendRecord {
                addrs: Vec::new(),
                since: now_secs(),
            });
            if !addrs.is_empty() {
                rec.addrs = addrs.iter().map(|a| a.to_vec()).collect();
            }
            let bytes = postcard::to_stdvec(&rec).map_err(|e| NodeError::Control(e.to_string()))?;
            table
                .insert(key.as_slice(), bytes.as_slice())
                .map_err(|e| s.err(e))?;
            rec
        };
        tx.commit().map_err(|e| s.err(e))?;
        Ok(rec)
    }

    /// Records a new invite secret valid for `hours`.
    pub(crate) fn create_invite(&self, secret: &[u8; 32], hours: u64) -> Result<(), NodeError> {
        let s = &self.state;
        let now = now_secs();
        let tx = s.db.begin_write().map_err(|e| s.err(e))?;
        {
            let mut table = tx.open_table(INVITES).map_err(|e| s.err(e))?;
            // Expired invites are dropped whenever a new one is made.
            table
                .retain(|_, expiry| expiry > now)
                .map_err(|e| s.err(e))?;
            table
                .insert(secret.as_slice(), now + hours.saturating_mul(3600))
                .map_err(|e| s.err(e))?;
        }
        tx.commit().map_err(|e| s.err(e))?;
        Ok(())
    }

    /// Consumes an invite secret: true when it existed and had not expired.
    pub(crate) fn redeem(&self, secret: &[u8; 32]) -> Result<bool, NodeError> {
        let s = &self.state;
        let tx = s.db.begin_write().map_err(|e| s.err(e))?;
        let valid = {
            let mut table = tx.open_table(INVITES).map_err(|e| s.err(e))?;
            let expiry = table
                .remove(secret.as_slice())
                .map_err(|e| s.err(e))?
                .map(|v| v.value());
            expiry.is_some_and(|t| t > now_secs())
        };
        tx.commit().map_err(|e| s.err(e))?;
        Ok(valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_is_redeemed_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = Friends::new(Arc::new(State::open(&dir.path().join("db")).unwrap()));
        f.create_invite(&[1; 32], 1).unwrap();
        assert!(!f.redeem(&[2; 32]).unwrap());
        assert!(f.redeem(&[1; 32]).unwrap());
        assert!(!f.redeem(&[1; 32]).unwrap());
        f.create_invite(&[3; 32], 0).unwrap();
        assert!(!f.redeem(&[3; 32]).unwrap(), "expired");
    }

    #[test]
    fn friends_persist_with_their_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let peer = kith_net::Keypair::generate_ed25519().public().to_peer_id();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
        {
            let f = Friends::new(Arc::new(State::open(&path).unwrap()));
            f.add(peer, std::slice::from_ref(&addr)).unwrap();
            f.add(peer, &[]).unwrap();
        }
        let f = Friends::new(Arc::new(State::open(&path).unwrap()));
        let list = f.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0, peer);
        assert_eq!(list[0].1.multiaddrs(), vec![addr]);
    }
}
