//! Rebuilding the placement map from what the holders say, on a fresh
//! machine that has only the master secret (or after the map was lost).
//!
//! The flow: read the newest root capsule from any known peer, learn the
//! holders it names, ask every known peer for the shards it holds for this
//! owner (the transport answers their signed challenges), fetch each
//! shard's header, check its MAC, open its sealed name, and group the
//! shards by object. Shards that do not verify are reported and left out.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use kith_net::{Holding, Multiaddr, PeerId, ShardKey};
use kith_storage::Handle;

use super::error::ObjectError;
use super::header::{ShardHeader, PROBE_LEN};
use super::map::{ObjectRecord, ShardRecord};
use super::name::{open, SealedIdentity};
use super::store::ObjectStore;
use crate::transport::ShardTransport;

/// Headers fetched at once during a rebuild.
const HEADER_FETCHES: usize = 16;

/// What a rebuild of the placement map found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuildReport {
    /// Peers asked for their holdings.
    pub peers_asked: usize,
    /// Peers that answered.
    pub peers_answered: usize,
    /// Generation of the newest root capsule found, if any.
    pub capsule_generation: Option<u64>,
    /// Objects found.
    pub objects: usize,
    /// Good shards found.
    pub shards: usize,
    /// Shards left out because they did not verify.
    pub discarded: usize,
}

struct Found {
    id: SealedIdentity,
    k: u16,
    n: u16,
    object_len: u64,
    header_len: u32,
    block_size: u32,
    shards: BTreeMap<u16, ([u8; 32], Vec<PeerId>)>,
    blocks: BTreeMap<u16, Vec<[u8; 32]>>,
}

impl<T: ShardTransport> ObjectStore<T> {
    /// Rebuilds the placement map from the holders' listings and headers.
    /// The map is marked complete only if every peer asked answered;
    /// otherwise it is rebuilt again the next time the store opens.
    pub async fn rebuild_map(&self) -> Result<RebuildReport, ObjectError> {
        let mut report = RebuildReport::default();
        let first = self.transport.known_peers().await?;
        let capsule = self.read_capsule(&first).await;
        let mut addrs: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
        if let Some(c) = &capsule {
            report.capsule_generation = Some(c.generation);
            self.transport.learn_peers(c.holders.clone()).await?;
            addrs.extend(c.holders.iter().cloned());
        }
        if let Ok(usable) = self.transport.usable_peers().await {
            for u in usable {
                addrs.insert(u.peer, u.addrs);
            }
        }
        let peers = self.transport.known_peers().await?;
        report.peers_asked = peers.len();
        let listings = futures::future::join_all(
            peers
                .iter()
                .map(|p| async move { (*p, self.transport.holdings(*p).await) }),
        )
        .await;
        let capsule_tag = self.keys.capsule_tag();
        // Shards this owner already deleted, whose holder was away then.
        let pending: std::collections::BTreeSet<_> = self
            .in_map(|m| m.pending_deletes())
            .await?
            .into_iter()
            .collect();
        let mut shards: Vec<(PeerId, Holding)> = Vec::new();
        let mut silent = BTreeSet::new();
        for (peer, listing) in listings {
            match listing {
                Ok(list) => {
                    report.peers_answered += 1;
                    shards.extend(
                        list.into_iter()
                            .filter(|h| {
                                h.tag != capsule_tag && !pending.contains(&(peer, h.tag, h.index))
                            })
                            .map(|h| (peer, h)),
                    );
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "no holdings from peer");
                    silent.insert(peer);
                }
            }
        }
        let headers: Vec<_> = futures::stream::iter(shards)
            .map(|(peer, h)| async move { (peer, h, self.fetch_header(peer, &h).await) })
            .buffer_unordered(HEADER_FETCHES)
            .collect()
            .await;
        let mut found: BTreeMap<[u8; 32], Found> = BTreeMap::new();
        for (peer, holding, header) in headers {
            let header = match header {
                Ok(h) => h,
                Err(reason) => {
                    report.discarded += 1;
                    self.report(peer, holding.tag, holding.index, reason);
                    continue;
                }
            };
            let Some(id) = open(&self.keys, &header.tag, &header.sealed_name) else {
                report.discarded += 1;
                self.report(
                    peer,
                    holding.tag,
                    holding.index,
                    "sealed name does not open".into(),
                );
                continue;
            };
            let entry = found.entry(header.tag.0).or_insert_with(|| Found {
                id,
                k: header.k,
                n: header.n,
                object_len: header.object_len,
                header_len: u32::try_from(header.encoded_len()).unwrap_or(u32::MAX),
                block_size: header.block_size,
                shards: BTreeMap::new(),
                blocks: BTreeMap::new(),
            });
            if (entry.k, entry.n, entry.object_len) != (header.k, header.n, header.object_len) {
                report.discarded += 1;
                self.report(
                    peer,
                    holding.tag,
                    holding.index,
                    "header disagrees with the object's other shards".into(),
                );
                continue;
            }
            report.shards += 1;
            entry
                .shards
                .entry(header.index)
                .or_insert_with(|| (header.body_hash, Vec::new()))
                .1
                .push(peer);
            entry.blocks.entry(header.index).or_insert(header.blocks);
        }
        // One record per name: the newest write of names rewritten in
        // place; older ones are leftovers of an interrupted replacement.
        let mut records: BTreeMap<Handle, (ObjectRecord, u64)> = BTreeMap::new();
        let mut leftovers = Vec::new();
        for (tag, f) in found {
            let data_count = if f.k == 1 { 1 } else { f.k };
            let data_blocks = (0..data_count)
                .map(|i| {
                    if f.k == 1 {
                        f.blocks.values().next().cloned().unwrap_or_default()
                    } else {
                        f.blocks.get(&i).cloned().unwrap_or_default()
                    }
                })
                .collect();
            let record = ObjectRecord {
                tag,
                written: f.id.written,
                object_len: f.object_len,
                k: f.k,
                n: f.n,
                header_len: f.header_len,
                block_size: f.block_size,
                shards: f
                    .shards
                    .into_iter()
                    .map(|(index, (body_hash, peers))| ShardRecord {
                        index,
                        peers: peers.iter().map(|p| p.to_bytes()).collect(),
                        body_hash,
                    })
                    .collect(),
                data_blocks,
            };
            let written = f.id.written;
            match records.get(&f.id.handle) {
                Some((_, w)) if *w >= written => leftovers.push(record),
                _ => {
                    if let Some((old, _)) = records.insert(f.id.handle, (record, written)) {
                        leftovers.push(old);
                    }
                }
            }
        }
        if !silent.is_empty() {
            let (old, old_holders) = self.in_map(|m| Ok((m.records()?, m.holders()?))).await?;
            keep_silent_placements(&mut records, old, &silent);
            for (peer, a) in old_holders {
                addrs.entry(peer).or_insert(a);
            }
        }
        report.objects = records.len();
        let mut holders: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
        for (record, _) in records.values() {
            for (peer, _) in record.placements() {
                holders
                    .entry(peer)
                    .or_insert_with(|| addrs.get(&peer).cloned().unwrap_or_default());
            }
        }
        let objects: Vec<(Handle, ObjectRecord)> =
            records.into_iter().map(|(h, (r, _))| (h, r)).collect();
        let holders: Vec<(PeerId, Vec<Multiaddr>)> = holders.into_iter().collect();
        let complete = report.peers_answered == report.peers_asked;
        let generation = report.capsule_generation.unwrap_or(0);
        self.in_map(move |m| {
            m.replace_all(&objects, &holders, complete)?;
            if generation > m.capsule_generation()? {
                m.set_capsule_generation(generation)?;
            }
            Ok(())
        })
        .await?;
        for old in leftovers {
            self.delete_shards(old.tag(), old.placements()).await?;
        }
        tracing::info!(?report, "placement map rebuilt from holdings");
        Ok(report)
    }

    /// Fetches and checks the header of one held shard.
    async fn fetch_header(&self, peer: PeerId, holding: &Holding) -> Result<ShardHeader, String> {
        let key = ShardKey {
            owner: self.keys.owner_id(),
            tag: holding.tag,
            index: holding.index,
        };
        let probe = (PROBE_LEN as u64).min(holding.len);
        let mut bytes = self
            .transport
            .fetch(peer, key, 0, Some(probe), probe)
            .await
            .map_err(|e| e.to_string())?;
        let len = ShardHeader::announced_len(&bytes).map_err(|e| e.to_string())?;
        if len > bytes.len() {
            let want = len as u64;
            bytes = self
                .transport
                .fetch(peer, key, 0, Some(want), want)
                .await
                .map_err(|e| e.to_string())?;
        }
        let (header, hlen) =
            ShardHeader::decode(&bytes, self.keys.header_key()).map_err(|e| e.to_string())?;
        if header.owner != key.owner || header.tag != key.tag || header.index != key.index {
            return Err("shard header names another shard".into());
        }
        if (hlen as u64).checked_add(header.body_len) != Some(holding.len) {
            return Err("held length does not match the header".into());
        }
        Ok(header)
    }
}

/// Adds to freshly found records what the old map knew of shards on peers
/// that did not answer this time. A holder that was briefly unreachable
/// (its connection still coming up on a fresh machine) has not lost its
/// shards; forgetting them would leave reads short until the next rebuild.
/// A name found with another tag keeps what the holders said now.
fn keep_silent_placements(
    records: &mut BTreeMap<Handle, (ObjectRecord, u64)>,
    old: Vec<(Handle, ObjectRecord)>,
    silent: &BTreeSet<PeerId>,
) {
    let silent: BTreeSet<Vec<u8>> = silent.iter().map(|p| p.to_bytes()).collect();
    for (handle, mut old) in old {
        old.shards.retain_mut(|s| {
            s.peers.retain(|p| silent.contains(p));
            !s.peers.is_empty()
        });
        if old.shards.is_empty() {
            continue;
        }
        match records.get_mut(&handle) {
            Some((new, _)) if new.tag == old.tag => {
                for s in old.shards {
                    match new.shards.iter_mut().find(|n| n.index == s.index) {
                        Some(n) => {
                            for p in s.peers {
                                if !n.peers.contains(&p) {
                                    n.peers.push(p);
                                }
                            }
                        }
                        None => new.shards.push(s),
                    }
                }
                new.shards.sort_by_key(|s| s.index);
            }
            Some(_) => {}
            None => {
                let written = old.written;
                records.insert(handle, (old, written));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: u8, shards: &[(u16, &[PeerId])]) -> ObjectRecord {
        ObjectRecord {
            tag: [tag; 32],
            written: 0,
            object_len: 10,
            k: 2,
            n: 3,
            header_len: 0,
            block_size: 65536,
            shards: shards
                .iter()
                .map(|(index, peers)| ShardRecord {
                    index: *index,
                    peers: peers.iter().map(|p| p.to_bytes()).collect(),
                    body_hash: [0; 32],
                })
                .collect(),
            data_blocks: vec![],
        }
    }

    fn peers_of(r: &ObjectRecord, index: u16) -> Vec<PeerId> {
        r.placements()
            .into_iter()
            .filter(|(_, i)| *i == index)
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn a_rebuild_keeps_what_the_old_map_knew_of_silent_peers_only() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let pack = |n: &str| Handle::new(kith_storage::Kind::Pack, n).unwrap();
        let mut records = BTreeMap::new();
        // Found now: shard 0 on `a`; `c` did not answer, `b` answered.
        records.insert(pack("aa"), (record(1, &[(0, &[a])]), 0));
        records.insert(pack("bb"), (record(2, &[(0, &[a])]), 0));
        let old = vec![
            (pack("aa"), record(1, &[(0, &[a]), (1, &[b, c]), (2, &[c])])),
            // Rewritten since under another tag: the new one stands.
            (pack("bb"), record(9, &[(1, &[c])])),
            // Only on the silent peer, and on one that no longer has it.
            (pack("cc"), record(3, &[(0, &[b]), (2, &[c])])),
            (pack("dd"), record(4, &[(0, &[b])])),
        ];
        keep_silent_placements(&mut records, old, &BTreeSet::from([c]));
        let aa = &records[&pack("aa")].0;
        assert_eq!(peers_of(aa, 0), vec![a]);
        assert_eq!(peers_of(aa, 1), vec![c], "b answered without it");
        assert_eq!(peers_of(aa, 2), vec![c]);
        assert_eq!(records[&pack("bb")].0.tag, [2; 32]);
        assert_eq!(records[&pack("bb")].0.placements(), vec![(a, 0)]);
        assert_eq!(records[&pack("cc")].0.placements(), vec![(c, 2)]);
        assert!(!records.contains_key(&pack("dd")));
    }
}
