//! Behaviour of the object store over the in-memory network: round trips,
//! ranged reads, lost and lying holders, too few peers, a fresh machine
//! with only the master secret, the root capsule, and what holders see.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kith_engine::MasterSecret;
use kith_net::PeerId;
use kith_storage::{Handle, Kind};
use proptest::prelude::*;

use super::memory::{MemoryNetwork, MemoryTransport};
use super::*;

fn master() -> MasterSecret {
    MasterSecret::from_bytes([7; 32])
}

async fn open_store(
    net: &Arc<MemoryNetwork>,
    known: Option<Vec<PeerId>>,
    cache: &Path,
) -> ObjectStore<MemoryTransport> {
    let keys = OwnerKeys::derive(&master()).unwrap();
    let transport = match known {
        Some(k) => MemoryTransport::new(net.clone(), keys.owner_id(), k),
        None => MemoryTransport::knowing_all(net.clone(), keys.owner_id()),
    };
    ObjectStore::open(transport, keys, cache, StoreOptions::default())
        .await
        .unwrap()
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Bytes {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn pack(name: &str) -> Handle {
    Handle::new(Kind::Pack, name).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn objects_of_any_size_round_trip(len in 0usize..1_500_000, seed: u64, peers in 3usize..9) {
        rt().block_on(async {
            let net = MemoryNetwork::new();
            net.add_holders(peers);
            let dir = tempfile::tempdir().unwrap();
            let store = open_store(&net, None, dir.path()).await;
            let bytes = data(len, seed);
            store.put(&pack("ab"), bytes.clone()).await.unwrap();
            assert_eq!(store.get(&pack("ab")).await.unwrap(), bytes);
            assert_eq!(store.stat(&pack("ab")).await.unwrap(), Some(len as u64));
        });
    }

    #[test]
    fn ranged_reads_return_exactly_the_range(len in 1usize..3_000_000, a_seed: u64, b_seed: u64) {
        rt().block_on(async {
            let net = MemoryNetwork::new();
            net.add_holders(5);
            let dir = tempfile::tempdir().unwrap();
            let store = open_store(&net, None, dir.path()).await;
            let bytes = data(len, a_seed);
            store.put(&pack("cd"), bytes.clone()).await.unwrap();
            let offset = (a_seed % len as u64) as usize;
            let rest = len - offset;
            let n = (b_seed % (rest as u64 + 1)) as usize;
            let got = store.get_range(&pack("cd"), offset as u64, n as u64).await.unwrap();
            assert_eq!(&got[..], &bytes[offset..offset + n]);
        });
    }
}

#[tokio::test]
async fn a_small_range_of_a_large_object_fetches_little() {
    let net = MemoryNetwork::new();
    net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let bytes = data(6 << 20, 1);
    store.put(&pack("ef"), bytes.clone()).await.unwrap();
    let before = net.fetch_stats();
    let got = store.get_range(&pack("ef"), 3_000_000, 1000).await.unwrap();
    assert_eq!(&got[..], &bytes[3_000_000..3_001_000]);
    let after = net.fetch_stats();
    assert_eq!(after.0 - before.0, 1, "one data shard covers the range");
    assert!(
        after.1 - before.1 <= 128 * 1024,
        "only the blocks around the range"
    );
    // A range across two data shards reads from both.
    let s = super::header::shard_len(6 << 20, 3);
    let got = store.get_range(&pack("ef"), s - 10, 20).await.unwrap();
    assert_eq!(&got[..], &bytes[s as usize - 10..s as usize + 10]);
    let past = store.get_range(&pack("ef"), (6 << 20) - 5, 6).await;
    assert!(matches!(past, Err(ObjectError::OutOfRange { .. })));
}

#[tokio::test]
async fn two_peers_down_still_reads() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let big = data(2 << 20, 2);
    let small = data(1000, 3);
    store.put(&pack("aa"), big.clone()).await.unwrap();
    store.put(&pack("bb"), small.clone()).await.unwrap();
    for down in [[0, 1], [1, 2], [3, 4], [0, 4]] {
        for p in &peers {
            net.set_down(p, false);
        }
        for i in down {
            net.set_down(&peers[i], true);
        }
        assert_eq!(store.get(&pack("aa")).await.unwrap(), big);
        assert_eq!(store.get(&pack("bb")).await.unwrap(), small);
        let got = store.get_range(&pack("aa"), 100, 1 << 20).await.unwrap();
        assert_eq!(&got[..], &big[100..100 + (1 << 20)]);
    }
    // A third loss is one too many for 3-of-5: a clear, typed error.
    net.set_down(&peers[2], true);
    let e = store.get(&pack("aa")).await.unwrap_err();
    assert!(
        matches!(
            e,
            ObjectError::Unavailable {
                good: 2,
                needed: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_holder_whose_connection_closes_under_a_read_is_asked_again() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let big = data(2 << 20, 21);
    store.put(&pack("aa"), big.clone()).await.unwrap();
    // Two holders are gone; of the three left, each is needed, and one
    // fails its first fetch though it is up.
    net.set_down(&peers[0], true);
    net.set_down(&peers[1], true);
    net.fail_next_fetches(&peers[2], 1);
    assert_eq!(store.get(&pack("aa")).await.unwrap(), big);
    // A holder that keeps failing still makes the read fail, clearly.
    net.fail_next_fetches(&peers[3], 10);
    assert!(matches!(
        store.get(&pack("aa")).await,
        Err(ObjectError::Unavailable {
            good: 2,
            needed: 3,
            ..
        })
    ));
}

#[tokio::test]
async fn holders_down_before_the_read_are_not_asked_when_the_others_suffice() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let big = data(2 << 20, 4);
    {
        let store = open_store(&net, None, dir.path()).await;
        store.put(&pack("aa"), big.clone()).await.unwrap();
    }
    // Two holders of data shards go down; a new session knows nothing of
    // it but what the node is connected to.
    net.set_down(&peers[0], true);
    net.set_down(&peers[1], true);
    let store = open_store(&net, None, dir.path()).await;
    let before = net.unreachable_requests();
    assert_eq!(store.get(&pack("aa")).await.unwrap(), big);
    let got = store.get_range(&pack("aa"), 100, 1 << 20).await.unwrap();
    assert_eq!(&got[..], &big[100..100 + (1 << 20)]);
    assert_eq!(
        net.unreachable_requests(),
        before,
        "a down holder was asked"
    );
}

#[tokio::test]
async fn corrupt_shard_is_detected_reported_and_another_used() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let big = data(3 << 20, 4);
    let small = data(5000, 5);
    store.put(&pack("aa"), big.clone()).await.unwrap();
    store.put(&pack("bb"), small.clone()).await.unwrap();
    for liar in &peers {
        net.set_corrupt(liar, true);
        assert_eq!(store.get(&pack("aa")).await.unwrap(), big);
        assert_eq!(store.get(&pack("bb")).await.unwrap(), small);
        let got = store
            .get_range(&pack("aa"), 1 << 20, 1 << 20)
            .await
            .unwrap();
        assert_eq!(&got[..], &big[1 << 20..2 << 20]);
        net.set_corrupt(liar, false);
    }
    let problems = store.take_problems();
    assert!(!problems.is_empty());
    assert!(problems.iter().all(|p| peers.contains(&p.peer)));
    assert!(problems
        .iter()
        .any(|p| p.reason.contains("hash") || p.reason.contains("authenticate")));
    // Three liars leave two good shards: refused, never wrong bytes.
    for liar in &peers[..3] {
        net.set_corrupt(liar, true);
    }
    assert!(store.get(&pack("aa")).await.is_err());
}

#[tokio::test]
async fn too_few_peers_is_a_typed_error_with_nothing_left_behind() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(2);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let e = store.put(&pack("aa"), data(1 << 20, 6)).await.unwrap_err();
    assert!(
        matches!(
            e,
            ObjectError::NotEnoughPeers {
                usable: 2,
                needed: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not enough usable peers"));
    assert!(net.held().is_empty());

    // Three peers, one of which refuses the shard over quota after the
    // others stored theirs: the stored shards are deleted again.
    let third = net.add_holders(1)[0];
    net.set_quota(&third, 600 * 1024);
    let dir2 = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir2.path()).await;
    let e = store.put(&pack("aa"), data(1 << 20, 6)).await.unwrap_err();
    assert!(matches!(e, ObjectError::Upload { .. }), "{e}");
    assert!(net
        .held()
        .iter()
        .all(|(_, k, _)| k.tag == store.keys().capsule_tag()));
    assert!(store.list(Kind::Pack, "").await.unwrap().is_empty());
    assert_eq!(net.shard_count(&peers[0]), net.shard_count(&peers[1]));
}

#[tokio::test]
async fn put_is_idempotent_and_a_rewrite_replaces_the_old_shards() {
    let net = MemoryNetwork::new();
    net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let bytes = data(1 << 20, 7);
    store.put(&pack("aa"), bytes.clone()).await.unwrap();
    let held = net.held();
    store.put(&pack("aa"), bytes.clone()).await.unwrap();
    assert_eq!(net.held(), held);
    // A fresh machine putting the same bytes writes the same shards.
    let other = tempfile::tempdir().unwrap();
    let fresh = open_store(&net, None, other.path()).await;
    fresh.put(&pack("aa"), bytes.clone()).await.unwrap();
    assert_eq!(net.held().len(), held.len());

    let lock = Handle::new(Kind::Lock, "0123").unwrap();
    store.put(&lock, data(100, 1)).await.unwrap();
    let count = net.held().len();
    store.put(&lock, data(100, 2)).await.unwrap();
    assert_eq!(store.get(&lock).await.unwrap(), data(100, 2));
    assert_eq!(net.held().len(), count, "old lock shards deleted");
}

#[tokio::test]
async fn re_putting_unchanged_bytes_needs_no_peers_and_ignores_a_new_peer_count() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let bytes = data(1 << 20, 11);
    store.put(&pack("aa"), bytes.clone()).await.unwrap();
    let held = net.held();
    // A sixth peer would make the code 4-of-6; the object stays as cut.
    net.add_holders(1);
    store.put(&pack("aa"), bytes.clone()).await.unwrap();
    assert_eq!(net.held(), held);
    // With too few peers for any new object, the same bytes still succeed.
    for p in &peers[..4] {
        net.set_down(p, true);
    }
    store.put(&pack("aa"), bytes.clone()).await.unwrap();
    assert!(matches!(
        store.put(&pack("aa"), data(1 << 20, 12)).await,
        Err(ObjectError::NotEnoughPeers { .. })
    ));
}

#[tokio::test]
async fn delete_removes_every_shard_even_of_a_peer_that_was_down() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    store.put(&pack("aa"), data(1 << 20, 8)).await.unwrap();
    net.set_down(&peers[0], true);
    store.delete(&pack("aa")).await.unwrap();
    store.delete(&pack("aa")).await.unwrap();
    assert!(matches!(
        store.get(&pack("aa")).await,
        Err(ObjectError::NotFound(_))
    ));
    net.set_down(&peers[0], false);
    store.retry_pending_deletes().await.unwrap();
    let capsule = store.keys().capsule_tag();
    assert!(net.held().iter().all(|(_, k, _)| k.tag == capsule));
}

#[tokio::test]
async fn fresh_machine_rebuilds_the_map_from_one_peer_and_the_master_secret() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(6);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let objects: Vec<(Handle, Bytes)> = vec![
        (Handle::config(), data(300, 1)),
        (Handle::new(Kind::Key, "k1").unwrap(), data(500, 2)),
        (pack("aa01"), data(3 << 20, 3)),
        (pack("aa02"), data(400_000, 4)),
        (pack("bb03"), data(1 << 20, 5)),
        (Handle::new(Kind::Snapshot, "s1").unwrap(), data(2000, 6)),
        (Handle::new(Kind::Lock, "l1").unwrap(), data(50, 7)),
    ];
    for (h, b) in &objects {
        store.put(h, b.clone()).await.unwrap();
    }
    store.put(&objects[6].0, data(60, 8)).await.unwrap();
    drop(store);

    // Two holders are gone; the new machine knows one surviving holder.
    net.set_down(&peers[4], true);
    net.set_down(&peers[5], true);
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open_store(&net, Some(vec![peers[0]]), fresh_dir.path()).await;
    let mut packs = fresh.list(Kind::Pack, "aa").await.unwrap();
    packs.sort();
    assert_eq!(
        packs,
        vec![(pack("aa01"), 3 << 20), (pack("aa02"), 400_000)]
    );
    for (h, b) in &objects[..6] {
        assert_eq!(&fresh.get(h).await.unwrap(), b, "{h}");
    }
    assert_eq!(fresh.get(&objects[6].0).await.unwrap(), data(60, 8));
    assert_eq!(fresh.list(Kind::Lock, "").await.unwrap().len(), 1);
    let report = fresh.rebuild_map().await.unwrap();
    assert_eq!(report.objects, 7);
    assert_eq!(report.peers_asked, 6);
    assert_eq!(report.peers_answered, 4);
    assert_eq!(report.discarded, 0);
}

#[tokio::test]
async fn a_fresh_machine_waits_for_a_holder_that_misses_the_first_rebuilds() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let bytes = data(1 << 20, 11);
    store.put(&pack("aa"), bytes.clone()).await.unwrap();
    drop(store);

    // Two holders are gone and a third, still up, misses the rebuild on
    // opening and the first one a failing read asks for (whose look for
    // the root capsule also asks it for its holdings).
    net.set_down(&peers[3], true);
    net.set_down(&peers[4], true);
    net.fail_next_listings(&peers[2], 3);
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open_store(&net, Some(vec![peers[0]]), fresh_dir.path()).await;
    assert_eq!(fresh.get(&pack("aa")).await.unwrap(), bytes);
}

#[tokio::test]
async fn a_rebuild_remembers_the_shards_of_a_holder_that_did_not_answer() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    store.put(&pack("aa"), data(1 << 20, 12)).await.unwrap();
    let before = store.record(&pack("aa")).await.unwrap().placements();
    // Once for the root capsule, once for the rebuild's listing.
    net.fail_next_listings(&peers[1], 2);
    let report = store.rebuild_map().await.unwrap();
    assert_eq!(report.peers_answered, 4);
    let after = store.record(&pack("aa")).await.unwrap().placements();
    assert_eq!(after, before);
}

#[tokio::test]
async fn root_capsule_names_every_holder_and_opens_on_a_fresh_machine() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    store.put(&pack("aa"), data(10, 1)).await.unwrap();
    store.put(&pack("bb"), data(1 << 20, 2)).await.unwrap();
    for p in &peers {
        let capsule = store.read_capsule(&[*p]).await.unwrap();
        let mut named: Vec<PeerId> = capsule.holders.iter().map(|(p, _)| *p).collect();
        named.sort();
        let mut all = peers.clone();
        all.sort();
        assert_eq!(named, all);
        assert!(capsule.holders.iter().all(|(_, a)| !a.is_empty()));
        assert_eq!(capsule.generation, 2);
    }
    // One capsule per holder: the first generation was replaced.
    let tag = store.keys().capsule_tag();
    assert_eq!(
        net.held().iter().filter(|(_, k, _)| k.tag == tag).count(),
        5
    );
    // Another owner's keys do not open it.
    let other = OwnerKeys::derive(&MasterSecret::from_bytes([8; 32])).unwrap();
    let (_, _, bytes) = net
        .held()
        .into_iter()
        .find(|(_, k, _)| k.tag == tag)
        .unwrap();
    assert!(RootCapsule::open(&other, &bytes).is_none());
}

#[tokio::test]
async fn holders_never_see_object_names() {
    let net = MemoryNetwork::new();
    net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    let names = ["deadbeefcafe0123", "snapshotnamezebra"];
    store.put(&pack(names[0]), data(1 << 20, 1)).await.unwrap();
    store
        .put(
            &Handle::new(Kind::Snapshot, names[1]).unwrap(),
            data(100, 2),
        )
        .await
        .unwrap();
    let held = net.held();
    assert!(!held.is_empty());
    for (_, _, bytes) in held {
        for name in names {
            assert!(!contains(&bytes, name.as_bytes()), "a holder sees {name}");
        }
    }
}

#[tokio::test]
async fn shards_are_placed_on_distinct_peers() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(7);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&net, None, dir.path()).await;
    store.put(&pack("aa"), data(4 << 20, 1)).await.unwrap();
    let capsule = store.keys().capsule_tag();
    for p in &peers {
        let shards = net
            .held()
            .into_iter()
            .filter(|(h, k, _)| h == p && k.tag != capsule)
            .count();
        assert_eq!(shards, 1);
    }
}

#[tokio::test]
async fn a_peer_refusing_over_quota_is_replaced_by_a_spare() {
    let net = MemoryNetwork::new();
    let peers = net.add_holders(6);
    let dir = tempfile::tempdir().unwrap();
    let keys = OwnerKeys::derive(&master()).unwrap();
    let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
    let goal = crate::policy::PolicyGoal {
        max_shards: 5,
        ..Default::default()
    };
    let store = ObjectStore::open(
        transport,
        keys,
        dir.path(),
        StoreOptions::default().goal(goal),
    )
    .await
    .unwrap();
    // The first peer in order is always chosen; it reports free space but
    // refuses the shard.
    let first = *peers.iter().min().unwrap();
    net.set_refuse_stores(&first, true);
    let bytes = data(2 << 20, 9);
    store.put(&pack("aa"), bytes.clone()).await.unwrap();
    assert_eq!(store.get(&pack("aa")).await.unwrap(), bytes);
    let capsule = store.keys().capsule_tag();
    let holding: Vec<PeerId> = net
        .held()
        .into_iter()
        .filter(|(_, k, _)| k.tag != capsule)
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(holding.len(), 5);
    assert!(!holding.contains(&first));
}

#[tokio::test]
async fn a_second_process_with_the_map_open_works_on_a_private_copy() {
    let net = MemoryNetwork::new();
    net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let first = open_store(&net, None, dir.path()).await;
    first.put(&pack("aa"), data(1 << 20, 1)).await.unwrap();
    let second = open_store(&net, None, dir.path()).await;
    assert_eq!(second.get(&pack("aa")).await.unwrap(), data(1 << 20, 1));
    second.put(&pack("bb"), data(100, 2)).await.unwrap();
    // The first process learns of it on its first miss.
    assert_eq!(first.get(&pack("bb")).await.unwrap(), data(100, 2));
}
