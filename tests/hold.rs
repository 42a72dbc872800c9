//! The hold through real daemons: an owner stores, lists and fetches
//! shards on a friend through its own node's control socket
//! (`DaemonTransport`); quotas, strangers and unknown owners are refused;
//! holdings survive a restart; the corrupt-shards fault is visible.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use kith_e2e::node::{wait_for, TestNode};
use kith_net::{ErrorCode, ObjectTag, OwnerKeypair, PeerId, ShardKey};
use kith_node::control::client::{Connection, DaemonTransport};
use kith_node::control::protocol::{LocalRequest, LocalResponse};
use kith_node::transport::{ShardTransport, TransportError};

const SEED: [u8; 32] = [7; 32];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn data(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn key(owner: &OwnerKeypair, tag: u8, index: u16) -> ShardKey {
    ShardKey {
        owner: owner.owner_id(),
        tag: ObjectTag([tag; 32]),
        index,
    }
}

fn refused_with(r: Result<(), TransportError>, code: ErrorCode) {
    match r {
        Err(TransportError::Refused { reply, .. }) => assert_eq!(reply.code, code, "{reply}"),
        other => panic!("expected a refusal with {code:?}, got {other:?}"),
    }
}

#[test]
fn an_owner_stores_lists_and_fetches_on_a_friend_within_its_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = TestNode::local(&tmp.path().join("holder"), "1M");
    let mut owner_node = TestNode::local(&tmp.path().join("owner"), "1M");
    let mut stranger = TestNode::local(&tmp.path().join("stranger"), "1M");
    holder.start();
    owner_node.start();
    stranger.start();
    holder.befriend(&owner_node);
    let holder_id: PeerId = holder.peer_id().parse().unwrap();
    let owner = OwnerKeypair::from_seed(SEED).unwrap();
    let rt = runtime();
    let t = rt
        .block_on(DaemonTransport::connect(&owner_node.dir, SEED))
        .unwrap();
    assert_eq!(t.owner(), owner.owner_id());

    let usable = rt.block_on(t.usable_peers()).unwrap();
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].peer, holder_id);
    assert_eq!(usable[0].free, 1 << 20);

    // 600 KiB fits, another 600 KiB does not; a larger shard streams in chunks.
    let a = data(600 << 10, 1);
    rt.block_on(t.store(holder_id, key(&owner, 1, 0), a.clone().into()))
        .unwrap();
    refused_with(
        rt.block_on(t.store(holder_id, key(&owner, 2, 0), data(600 << 10, 2).into())),
        ErrorCode::OverQuota,
    );
    // Storing the same shard again is fine (idempotent).
    rt.block_on(t.store(holder_id, key(&owner, 1, 0), a.clone().into()))
        .unwrap();
    let small = data(1000, 3);
    rt.block_on(t.store(holder_id, key(&owner, 3, 5), small.clone().into()))
        .unwrap();

    let held = rt.block_on(t.holdings(holder_id)).unwrap();
    let mut seen: Vec<_> = held.iter().map(|h| (h.tag.0[0], h.index, h.len)).collect();
    seen.sort();
    assert_eq!(seen, vec![(1, 0, 600 << 10), (3, 5, 1000)]);
    let got = rt
        .block_on(t.fetch(holder_id, key(&owner, 1, 0), 0, None, 1 << 20))
        .unwrap();
    assert!(got == a, "fetched bytes differ");
    let part = rt
        .block_on(t.fetch(holder_id, key(&owner, 3, 5), 10, Some(20), 1 << 20))
        .unwrap();
    assert_eq!(&part[..], &small[10..30]);
    assert!(matches!(
        rt.block_on(t.fetch(holder_id, key(&owner, 1, 0), 0, None, 1000)),
        Err(TransportError::Unreachable { .. })
    ));

    // The holder's list shows what it holds for the owner's node, and the
    // owner's node what the holder holds for it.
    let owner_id = owner_node.peer_id();
    wait_for("the ledger in peer list", || {
        holder
            .peer(&owner_id)
            .is_some_and(|p| p["bytes_held_for_it"] == (600 << 10) + 1000)
            && owner_node
                .peer(&holder_id.to_string())
                .is_some_and(|p| p["bytes_held_by_it"] == (600 << 10) + 1000)
    });

    // An owner the holder has nothing for sees nothing and fetches nothing.
    let other = rt
        .block_on(DaemonTransport::connect(&owner_node.dir, [9; 32]))
        .unwrap();
    assert!(rt.block_on(other.holdings(holder_id)).unwrap().is_empty());
    let other_owner = OwnerKeypair::from_seed([9; 32]).unwrap();
    assert!(matches!(
        rt.block_on(other.fetch(holder_id, key(&other_owner, 1, 0), 0, None, 1 << 20)),
        Err(TransportError::NotFound { .. })
    ));

    // A node that is not a friend may not store.
    let s = rt
        .block_on(DaemonTransport::connect(&stranger.dir, SEED))
        .unwrap();
    let holder_addr = holder.info()["addresses"][0].as_str().unwrap().to_owned();
    rt.block_on(s.learn_peers(vec![(holder_id, vec![holder_addr.parse().unwrap()])]))
        .unwrap();
    assert!(rt.block_on(s.usable_peers()).unwrap().is_empty());
    refused_with(
        rt.block_on(s.store(holder_id, key(&owner, 4, 0), data(10, 4).into())),
        ErrorCode::Unauthorized,
    );
    // ...but the owner key proves the owner from any machine.
    assert_eq!(rt.block_on(s.holdings(holder_id)).unwrap().len(), 2);

    // Deletes free the quota.
    assert_eq!(
        rt.block_on(t.delete(
            holder_id,
            vec![(ObjectTag([1; 32]), 0), (ObjectTag([8; 32]), 0)]
        ))
        .unwrap(),
        1
    );
    rt.block_on(t.store(holder_id, key(&owner, 2, 0), data(600 << 10, 2).into()))
        .unwrap();
}

#[test]
fn a_restarted_holder_keeps_its_holdings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = TestNode::local(&tmp.path().join("holder"), "10M");
    let mut owner_node = TestNode::local(&tmp.path().join("owner"), "10M");
    holder.start();
    owner_node.start();
    holder.befriend(&owner_node);
    let holder_id: PeerId = holder.peer_id().parse().unwrap();
    let owner = OwnerKeypair::from_seed(SEED).unwrap();
    let rt = runtime();
    let t = rt
        .block_on(DaemonTransport::connect(&owner_node.dir, SEED))
        .unwrap();
    let shards: Vec<Bytes> = (0..5).map(|i| data(100_000 + i * 777, i as u8)).collect();
    for (i, d) in shards.iter().enumerate() {
        rt.block_on(t.store(holder_id, key(&owner, 1, i as u16), d.clone().into()))
            .unwrap();
    }

    holder.kill();
    holder.start();
    let owner_id = owner_node.peer_id();
    wait_for("the owner's node to reconnect", || {
        holder
            .peer(&owner_id)
            .is_some_and(|p| p["state"] == "connected")
    });
    assert_eq!(rt.block_on(t.holdings(holder_id)).unwrap().len(), 5);
    for (i, d) in shards.iter().enumerate() {
        let got = rt
            .block_on(t.fetch(holder_id, key(&owner, 1, i as u16), 0, None, 1 << 20))
            .unwrap();
        assert!(got == d, "shard {i} differs after the restart");
    }
    assert_eq!(
        holder.peer(&owner_id).unwrap()["bytes_held_for_it"],
        shards.iter().map(|d| d.len() as u64).sum::<u64>()
    );
}

#[test]
fn a_holder_in_corrupt_shards_mode_serves_flipped_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = TestNode::local(&tmp.path().join("holder"), "10M");
    let mut owner_node = TestNode::local(&tmp.path().join("owner"), "10M");
    holder.env = vec![("KITH_NODE_FAULT".into(), "corrupt-shards".into())];
    holder.start();
    owner_node.start();
    holder.befriend(&owner_node);
    let holder_id: PeerId = holder.peer_id().parse().unwrap();
    let owner = OwnerKeypair::from_seed(SEED).unwrap();
    let rt = runtime();
    let t = rt
        .block_on(DaemonTransport::connect(&owner_node.dir, SEED))
        .unwrap();
    let d = data(50_000, 5);
    rt.block_on(t.store(holder_id, key(&owner, 1, 0), d.clone().into()))
        .unwrap();
    let got = rt
        .block_on(t.fetch(holder_id, key(&owner, 1, 0), 0, None, 1 << 20))
        .unwrap();
    assert_eq!(got.len(), d.len());
    assert!(got != d, "the fault mode changed nothing");
    // What it holds on disk is intact: only what it serves is flipped.
    let held = std::fs::read(
        holder
            .dir
            .join("hold")
            .join(hex(&owner.owner_id().0))
            .join(format!("{}.0", hex(&[1; 32]))),
    )
    .unwrap();
    assert!(held == d.to_vec());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_request_naming_a_bad_peer_id_is_answered_and_the_connection_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut owner_node = TestNode::local(&tmp.path().join("owner"), "1M");
    owner_node.start();
    runtime().block_on(async {
        let mut c = owner_connection(&owner_node.dir).await;
        let bad = LocalRequest::Fetch {
            peer: vec![1, 2, 3],
            tag: ObjectTag([1; 32]),
            index: 0,
            offset: 0,
            len: None,
            max_len: 10,
        };
        let answer = c.request(&bad).await;
        assert!(
            matches!(answer, Ok(LocalResponse::Failed { .. })),
            "{answer:?}"
        );
        let next = c.request(&LocalRequest::UsablePeers).await;
        assert!(
            matches!(next, Ok(LocalResponse::UsablePeers(_))),
            "{next:?}"
        );
    });
}

/// A raw control connection to the node in `dir`, acting as the owner of
/// [`SEED`].
async fn owner_connection(dir: &std::path::Path) -> Connection {
    let mut c = Connection::open(dir).await.unwrap();
    let set = c.request(&LocalRequest::SetOwner { seed: SEED }).await;
    assert!(matches!(set, Ok(LocalResponse::Done)), "{set:?}");
    c
}

/// The answer to a store is a failure, and the connection still reads the
/// next request as one: the store's bytes were drained.
async fn assert_store_failed_and_connection_usable(c: &mut Connection) {
    let answer = c.answer().await;
    assert!(
        matches!(
            answer,
            Ok(LocalResponse::Failed { .. } | LocalResponse::Unreachable { .. })
        ),
        "a store answered {answer:?}"
    );
    let next = c.request(&LocalRequest::UsablePeers).await;
    assert!(
        matches!(next, Ok(LocalResponse::UsablePeers(_))),
        "{next:?}"
    );
}

/// Sends `Store` for `len` bytes to `peer` through a raw control
/// connection, but only the first `sent` of them.
async fn begin_raw_store(c: &mut Connection, peer: Vec<u8>, tag: u8, len: usize, sent: &[u8]) {
    let store = LocalRequest::Store {
        peer,
        tag: ObjectTag([tag; 32]),
        index: 0,
        len: len as u64,
    };
    c.send(&store).await.unwrap();
    c.send_raw(sent).await.unwrap();
}

#[test]
fn a_store_naming_a_bad_or_unknown_peer_is_answered_after_its_bytes_and_the_connection_stays_usable(
) {
    let tmp = tempfile::tempdir().unwrap();
    let mut owner_node = TestNode::local(&tmp.path().join("owner"), "1M");
    owner_node.start();
    let body = data(300_000, 6);
    runtime().block_on(async {
        let mut c = owner_connection(&owner_node.dir).await;
        let unknown = PeerId::random().to_bytes();
        for peer in [vec![1, 2, 3], unknown] {
            begin_raw_store(&mut c, peer, 1, body.len(), &body).await;
            assert_store_failed_and_connection_usable(&mut c).await;
        }
    });
}

#[test]
fn a_shard_cut_off_mid_stream_is_never_listed_and_can_be_stored_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = TestNode::local(&tmp.path().join("holder"), "64M");
    let mut owner_node = TestNode::local(&tmp.path().join("owner"), "64M");
    holder.start();
    owner_node.start();
    holder.befriend(&owner_node);
    let holder_id: PeerId = holder.peer_id().parse().unwrap();
    let owner = OwnerKeypair::from_seed(SEED).unwrap();
    let full = data(8 << 20, 7);
    let rt = runtime();
    let owner_hold = holder.dir.join("hold").join(hex(&owner.owner_id().0));
    let on_disk = |tag: u8| {
        let path = owner_hold.join(format!("{}.0", hex(&[tag; 32])));
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    };

    // The owner's client goes away after 2.5 MiB of 8: the node's stream
    // to the holder is cut short.
    let sent = 5 << 19;
    rt.block_on(async {
        let mut c = owner_connection(&owner_node.dir).await;
        begin_raw_store(&mut c, holder_id.to_bytes(), 1, full.len(), &full[..sent]).await;
        wait_for("the first MiB on the holder", || on_disk(1) >= 1 << 20);
    });
    // The holder is killed while the owner's node streams a shard to it.
    rt.block_on(async {
        let mut c = owner_connection(&owner_node.dir).await;
        begin_raw_store(
            &mut c,
            holder_id.to_bytes(),
            2,
            full.len(),
            &full[..3 << 20],
        )
        .await;
        wait_for("the first MiB on the holder", || on_disk(2) >= 1 << 20);
        holder.kill();
        c.send_raw(&full[3 << 20..]).await.unwrap();
        assert_store_failed_and_connection_usable(&mut c).await;
    });

    // Both shards reached the holder in part: the cut came mid-stream.
    for tag in [1u8, 2] {
        let got = on_disk(tag);
        assert!(
            got > 0 && got < full.len() as u64,
            "shard {tag}: {got} bytes on the holder's disk"
        );
    }
    holder.start();
    let owner_peer = owner_node.peer_id();
    wait_for("the holder and owner to reconnect", || {
        holder
            .peer(&owner_peer)
            .is_some_and(|p| p["state"] == "connected")
            && owner_node
                .peer(&holder_id.to_string())
                .is_some_and(|p| p["state"] == "connected")
    });
    let t = rt
        .block_on(DaemonTransport::connect(&owner_node.dir, SEED))
        .unwrap();
    let held = rt.block_on(t.holdings(holder_id)).unwrap();
    assert!(
        held.is_empty(),
        "shards cut off mid-stream are listed: {:?}",
        held.iter().map(|h| (h.tag.0[0], h.len)).collect::<Vec<_>>()
    );
    for tag in [1, 2] {
        rt.block_on(t.store(holder_id, key(&owner, tag, 0), full.clone().into()))
            .unwrap();
        let got = rt
            .block_on(t.fetch(holder_id, key(&owner, tag, 0), 0, None, 16 << 20))
            .unwrap();
        assert!(got == full, "shard {tag} differs after being stored again");
    }
    assert_eq!(rt.block_on(t.holdings(holder_id)).unwrap().len(), 2);
}
