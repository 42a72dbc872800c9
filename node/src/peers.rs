//! What the node knows about other peers right now: its friends (cached
//! from the database), who is connected, why a friend is unreachable,
//! whom mDNS or the DHT found, and peers an owner told us about.
//!
//! Dialling happens here, under one rule: a peer is dialled only at
//! addresses recorded for it (friends), given for it (an invite code, an
//! owner's `learn_peers`), or found for it on the LAN (mDNS), or, for a
//! peer given without working addresses, found in the DHT. Addresses a
//! peer announces about itself (identify) are recorded only when a
//! friend has none yet.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use kith_net::{DiscoverySource, Multiaddr, NetHandle, PeerId, Protocol};

use crate::{friends::Friends, NodeError};

#[derive(Debug, Default)]
struct Inner {
    friends: HashMap<PeerId, Vec<Multiaddr>>,
    errors: HashMap<PeerId, String>,
    discovered: HashMap<PeerId, (Vec<Multiaddr>, DiscoverySource)>,
    identified: HashMap<PeerId, Vec<Multiaddr>>,
    learned: HashMap<PeerId, Vec<Multiaddr>>,
}

/// The node's view of other peers.
#[derive(Debug)]
pub(crate) struct PeerBook {
    friends: Friends,
    inner: Mutex<Inner>,
}

/// `addr` with a `/p2p/<peer>` suffix.
pub(crate) fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr.clone(),
        _ => addr.clone().with(Protocol::P2p(peer)),
    }
}

/// Whether an address can be dialled from elsewhere (not `0.0.0.0`).
pub(crate) fn dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

impl PeerBook {
    pub(crate) fn new(friends: Friends) -> Result<Self, NodeError> {
        let list = friends.list()?;
        let inner = Inner {
            friends: list
                .into_iter()
                .map(|(p, rec)| (p, rec.multiaddrs()))
                .collect(),
            ..Inner::default()
        };
        Ok(Self {
            friends,
            inner: Mutex::new(inner),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a single map operation, so a poisoned lock still
        // guards consistent maps.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn friends(&self) -> &Friends {
        &self.friends
    }

    pub(crate) fn is_friend(&self, peer: &PeerId) -> bool {
        self.inner().friends.contains_key(peer)
    }

    /// Friends and their recorded addresses.
    pub(crate) fn friend_list(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut v: Vec<_> = self
            .inner()
            .friends
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        v.sort_by_key(|(p, _)| p.to_bytes());
        v
    }

    /// Records a friend; empty `addrs` keeps what is recorded, or takes
    /// what the peer announced if nothing is.
    pub(crate) fn add_friend(&self, peer: PeerId, addrs: &[Multiaddr]) -> Result<(), NodeError> {
        let mut addrs: Vec<Multiaddr> = addrs.iter().filter(|a| dialable(a)).cloned().collect();
        if addrs.is_empty() {
            addrs = self
                .inner()
                .identified
                .get(&peer)
                .cloned()
                .unwrap_or_default();
        }
        let rec = self.friends.add(peer, &addrs)?;
        self.inner().friends.insert(peer, rec.multiaddrs());
        Ok(())
    }

    pub(crate) fn on_identified(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let addrs: Vec<Multiaddr> = addrs.into_iter().filter(dialable).collect();
        let record = {
            let mut inner = self.inner();
            inner.identified.insert(peer, addrs.clone());
            inner.friends.get(&peer).is_some_and(Vec::is_empty) && !addrs.is_empty()
        };
        if record {
            if let Err(e) = self.add_friend(peer, &addrs) {
                tracing::warn!(%peer, %e, "cannot record a friend's addresses");
            }
        }
    }

    pub(crate) fn on_discovered(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        source: DiscoverySource,
    ) {
        // A LAN discovery is kept when the DHT later reports the same
        // peer: it says more (the peer is near) and its addresses may be
        // dialled.
        let mut inner = self.inner();
        match inner.discovered.get_mut(&peer) {
            Some((known, DiscoverySource::Mdns)) if source != DiscoverySource::Mdns => {
                for a in addrs {
                    if !known.contains(&a) {
                        known.push(a);
                    }
                }
            }
            _ => {
                inner.discovered.insert(peer, (addrs, source));
            }
        }
    }

    pub(crate) fn discovered(&self) -> Vec<(PeerId, Vec<Multiaddr>, DiscoverySource)> {
        self.inner()
            .discovered
            .iter()
            .map(|(p, (a, s))| (*p, a.clone(), *s))
            .collect()
    }

    pub(crate) fn learn(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let mut inner = self.inner();
        let entry = inner.learned.entry(peer).or_default();
        for a in addrs {
            if !entry.contains(&a) {
                entry.push(a);
            }
        }
    }

    /// Friends, learned and discovered peers.
    pub(crate) fn known(&self) -> HashSet<PeerId> {
        let inner = self.inner();
        inner
            .friends
            .keys()
            .chain(inner.learned.keys())
            .chain(inner.discovered.keys())
            .copied()
            .collect()
    }

    pub(crate) fn error(&self, peer: &PeerId) -> Option<String> {
        self.inner().errors.get(peer).cloned()
    }

    fn set_error(&self, peer: PeerId, error: Option<String>) {
        let mut inner = self.inner();
        match error {
            Some(e) => inner.errors.insert(peer, e),
            None => inner.errors.remove(&peer),
        };
    }

    /// Makes sure `peer` is connected, dialling the addresses it may be
    /// dialled at (see the module docs). Returns why not, if it cannot be.
    pub(crate) async fn connect(&self, net: &NetHandle, peer: PeerId) -> Result<(), String> {
        let connected = net.connected_peers().await.map_err(|e| e.to_string())?;
        if connected.contains(&peer) {
            return Ok(());
        }
        let (mut addrs, friend) = {
            let inner = self.inner();
            let mut addrs = inner.friends.get(&peer).cloned().unwrap_or_default();
            addrs.extend(inner.learned.get(&peer).cloned().unwrap_or_default());
            if let Some((found, DiscoverySource::Mdns)) = inner.discovered.get(&peer) {
                addrs.extend(found.iter().cloned());
            }
            (addrs, inner.friends.contains_key(&peer))
        };
        addrs.dedup();
        let mut errors = Vec::new();
        for addr in &addrs {
            match net.connect(&with_peer(addr, peer)).await {
                Ok(_) => {
                    self.set_error(peer, None);
                    return Ok(());
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !friend {
            // A peer an owner named (a holder of its shards) may have
            // moved: ask the DHT where it is now.
            match net.find_peer(peer).await {
                Ok(found) => {
                    for addr in &found {
                        if net.connect(&with_peer(addr, peer)).await.is_ok() {
                            self.set_error(peer, None);
                            return Ok(());
                        }
                    }
                    errors.push("the DHT's addresses did not answer".to_owned());
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let reason = if errors.is_empty() {
            "no address recorded".to_owned()
        } else {
            errors.join("; ")
        };
        self.set_error(peer, Some(reason.clone()));
        Err(reason)
    }
}
