//! Tests of the wire decoders (round trips, garbage) and of real swarms
//! talking over TCP and QUIC on 127.0.0.1.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use proptest::prelude::*;
use tokio::sync::mpsc;

use crate::{
    codec::{decode_request, decode_response, WireRequest},
    message::*,
    wire, ControlRequest, ControlResponse, InboundShard, NetBuilder, NetError, NetEvent, NetHandle,
    Nonce, ObjectTag, OwnerId, OwnerKeypair, OwnerProof, OwnerSignature, ShardKey, ShardRange,
    CONTROL_PROTOCOL, SHARD_PROTOCOL,
};

// ---------------------------------------------------------------- decoders

fn arb_key() -> impl Strategy<Value = ShardKey> {
    (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u16>()).prop_map(|(o, t, index)| ShardKey {
        owner: OwnerId(o),
        tag: ObjectTag(t),
        index,
    })
}

fn arb_proof() -> impl Strategy<Value = OwnerProof> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|(o, n, s)| {
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&s);
            OwnerProof {
                owner: OwnerId(o),
                nonce: Nonce(n),
                signature: OwnerSignature(sig),
            }
        })
}

fn arb_error() -> impl Strategy<Value = ErrorReply> {
    (0usize..9, ".{0,40}").prop_map(|(c, m)| {
        let code = [
            ErrorCode::Malformed,
            ErrorCode::Unsupported,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::OverQuota,
            ErrorCode::Busy,
            ErrorCode::TooLarge,
            ErrorCode::InvalidInvite,
            ErrorCode::Internal,
        ][c];
        ErrorReply::new(code, m)
    })
}

fn arb_request() -> impl Strategy<Value = ControlRequest> {
    prop_oneof![
        Just(ControlRequest::Quota),
        any::<[u8; 32]>().prop_map(|o| ControlRequest::Challenge { owner: OwnerId(o) }),
        (
            arb_proof(),
            proptest::option::of((any::<[u8; 32]>(), any::<u16>())),
            any::<u32>()
        )
            .prop_map(|(proof, after, limit)| ControlRequest::ListHoldings {
                proof,
                after: after.map(|(t, i)| (ObjectTag(t), i)),
                limit,
            }),
        (
            arb_proof(),
            prop::collection::vec((any::<[u8; 32]>(), any::<u16>()), 0..20)
        )
            .prop_map(|(proof, s)| ControlRequest::Delete {
                proof,
                shards: s.into_iter().map(|(t, i)| (ObjectTag(t), i)).collect(),
            }),
        arb_key().prop_map(|key| ControlRequest::ShardStatus { key }),
        any::<[u8; 32]>().prop_map(|secret| ControlRequest::RedeemInvite { secret }),
    ]
}

fn arb_response() -> impl Strategy<Value = ControlResponse> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(o, u, f, a)| {
            ControlResponse::Quota(QuotaReport {
                offered: o,
                used: u,
                free: f,
                always_on: a,
            })
        }),
        any::<[u8; 32]>().prop_map(|n| ControlResponse::Challenge { nonce: Nonce(n) }),
        (
            prop::collection::vec((any::<[u8; 32]>(), any::<u16>(), any::<u64>()), 0..20),
            any::<bool>()
        )
            .prop_map(|(s, more)| ControlResponse::Holdings {
                shards: s
                    .into_iter()
                    .map(|(t, index, len)| Holding {
                        tag: ObjectTag(t),
                        index,
                        len,
                    })
                    .collect(),
                more,
            }),
        any::<u32>().prop_map(|count| ControlResponse::Deleted { count }),
        prop_oneof![
            Just(ShardStatus::Absent),
            (any::<u64>(), any::<u64>()).prop_map(|(received, total_len)| ShardStatus::Partial {
                received,
                total_len
            }),
            any::<u64>().prop_map(|len| ShardStatus::Complete { len }),
        ]
        .prop_map(ControlResponse::ShardStatus),
        Just(ControlResponse::InviteAccepted),
        arb_error().prop_map(ControlResponse::Error),
    ]
}

fn arb_open() -> impl Strategy<Value = ShardOpen> {
    prop_oneof![
        (arb_key(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(key, total_len, offset, len)| ShardOpen::Store {
                key,
                total_len,
                offset,
                len
            }
        ),
        (arb_key(), any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(key, offset, len)| ShardOpen::Fetch { key, offset, len }),
    ]
}

fn arb_reply() -> impl Strategy<Value = ShardReply> {
    prop_oneof![
        Just(ShardReply::Ready),
        any::<u64>().prop_map(|received| ShardReply::Stored { received }),
        any::<u64>().prop_map(|len| ShardReply::Sending { len }),
        arb_error().prop_map(ShardReply::Refused),
    ]
}

proptest! {
    #[test]
    fn control_request_round_trips(req in arb_request()) {
        let bytes = wire::encode("req", &req, MAX_CONTROL_REQUEST).unwrap();
        match decode_request(&bytes) {
            WireRequest::Decoded(back) => prop_assert_eq!(back, req),
            WireRequest::Undecodable(e) => prop_assert!(false, "{}", e),
        }
    }

    #[test]
    fn control_response_round_trips(resp in arb_response()) {
        let bytes = wire::encode("resp", &resp, MAX_CONTROL_RESPONSE).unwrap();
        prop_assert_eq!(decode_response(&bytes).unwrap(), resp);
    }

    #[test]
    fn shard_headers_round_trip(open in arb_open(), reply in arb_reply()) {
        let bytes = wire::encode("open", &open, MAX_SHARD_HEADER).unwrap();
        prop_assert_eq!(wire::decode::<ShardOpen>("open", &bytes).unwrap(), open);
        let bytes = wire::encode("reply", &reply, MAX_SHARD_HEADER).unwrap();
        prop_assert_eq!(wire::decode::<ShardReply>("reply", &bytes).unwrap(), reply);
    }

    #[test]
    fn garbage_never_panics_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        let _ = wire::decode::<ShardOpen>("open", &bytes);
        let _ = wire::decode::<ShardReply>("reply", &bytes);
        let framed = futures::executor::block_on(async {
            let mut cursor = futures::io::Cursor::new(&bytes);
            wire::read_frame(&mut cursor, "frame", MAX_CONTROL_REQUEST).await
        });
        if let Ok(payload) = framed {
            prop_assert!(payload.len() <= MAX_CONTROL_REQUEST as usize);
        }
    }

    #[test]
    fn truncated_messages_are_errors(req in arb_request(), cut in 0usize..100) {
        let bytes = wire::encode("req", &req, MAX_CONTROL_REQUEST).unwrap();
        let cut = cut.min(bytes.len().saturating_sub(1));
        prop_assert!(matches!(decode_request(&bytes[..cut]), WireRequest::Undecodable(_)));
    }
}

#[test]
fn huge_declared_frame_length_is_refused_before_allocating() {
    let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    let err = futures::executor::block_on(async {
        wire::read_frame(&mut futures::io::Cursor::new(&bytes[..]), "frame", 1024).await
    })
    .unwrap_err();
    assert!(matches!(
        err,
        NetError::TooLarge {
            len: 0xffff_ffff,
            limit: 1024,
            ..
        }
    ));
}

#[test]
fn unknown_request_variant_is_unsupported_not_malformed() {
    // Variant index 6 is the first a future version may add.
    match decode_request(&[6]) {
        WireRequest::Undecodable(e) => assert_eq!(e.code, ErrorCode::Unsupported),
        WireRequest::Decoded(r) => panic!("decoded {r:?}"),
    }
    match decode_request(&[1, 0]) {
        WireRequest::Undecodable(e) => assert_eq!(e.code, ErrorCode::Malformed),
        WireRequest::Decoded(r) => panic!("decoded {r:?}"),
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = wire::encode("req", &ControlRequest::Quota, 100).unwrap();
    bytes.push(0);
    assert!(
        matches!(decode_request(&bytes), WireRequest::Undecodable(e) if e.code == ErrorCode::Malformed)
    );
}

#[test]
fn oversize_delete_batch_is_refused() {
    let req = ControlRequest::Delete {
        proof: OwnerKeypair::generate().prove(&Nonce([0; 32]), &PeerId::random()),
        shards: vec![(ObjectTag([0; 32]), 0); MAX_DELETE_BATCH + 1],
    };
    let bytes = wire::encode("req", &req, MAX_CONTROL_REQUEST).unwrap();
    assert!(
        matches!(decode_request(&bytes), WireRequest::Undecodable(e) if e.code == ErrorCode::TooLarge)
    );
}

#[test]
fn error_messages_are_truncated_at_a_char_boundary() {
    let e = ErrorReply::new(ErrorCode::Internal, "é".repeat(200));
    assert!(e.message.len() <= MAX_ERROR_MESSAGE);
    assert!(e.message.chars().all(|c| c == 'é'));
}

// ---------------------------------------------------------------- swarms

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

fn is_quic(a: &Multiaddr) -> bool {
    a.iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1))
}

async fn node(listen: &[Multiaddr]) -> (NetHandle, mpsc::Receiver<NetEvent>) {
    let mut b = NetBuilder::new(Keypair::generate_ed25519());
    for a in listen {
        b = b.listen_on(a.clone());
    }
    b.spawn().await.unwrap()
}

/// Spawns a node that serves as a holder: answers control requests and keeps
/// shards in memory. Shard index 999 is refused for quota.
async fn holder(listen: &[Multiaddr]) -> NetHandle {
    let (handle, events) = node(listen).await;
    tokio::spawn(serve(handle.local_peer_id(), events));
    handle
}

async fn serve(me: PeerId, mut events: mpsc::Receiver<NetEvent>) {
    let mut shards: HashMap<ShardKey, Vec<u8>> = HashMap::new();
    let mut nonces: HashSet<Nonce> = HashSet::new();
    while let Some(event) = events.recv().await {
        match event {
            NetEvent::InboundRequest {
                request, responder, ..
            } => {
                let resp = match request {
                    ControlRequest::Quota => ControlResponse::Quota(QuotaReport {
                        offered: 1 << 30,
                        used: shards.values().map(|s| s.len() as u64).sum(),
                        free: 2 << 30,
                        always_on: false,
                    }),
                    ControlRequest::Challenge { .. } => {
                        let nonce = Nonce::random();
                        nonces.insert(nonce);
                        ControlResponse::Challenge { nonce }
                    }
                    ControlRequest::ListHoldings { proof, .. } => {
                        if nonces.remove(&proof.nonce) && proof.verify(&me).is_ok() {
                            let mut list: Vec<Holding> = shards
                                .iter()
                                .filter(|(k, _)| k.owner == proof.owner)
                                .map(|(k, v)| Holding {
                                    tag: k.tag,
                                    index: k.index,
                                    len: v.len() as u64,
                                })
                                .collect();
                            list.sort_by_key(|h| (h.tag, h.index));
                            ControlResponse::Holdings {
                                shards: list,
                                more: false,
                            }
                        } else {
                            ControlResponse::Error(ErrorReply::new(
                                ErrorCode::Unauthorized,
                                "bad proof",
                            ))
                        }
                    }
                    _ => ControlResponse::Error(ErrorReply::new(ErrorCode::Unsupported, "test")),
                };
                responder.respond(resp).await.unwrap();
            }
            NetEvent::InboundShard(InboundShard::Store(store)) => {
                let key = store.key;
                if key.index == 999 {
                    store
                        .refuse(ErrorReply::new(ErrorCode::OverQuota, "full"))
                        .await
                        .unwrap();
                    continue;
                }
                let Ok(mut body) = store.accept().await else {
                    continue;
                };
                let mut data = Vec::new();
                let mut buf = vec![0u8; crate::CHUNK];
                // A sender that vanishes mid-shard leaves nothing stored.
                let complete = loop {
                    match body.read(&mut buf).await {
                        Ok(0) => break true,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                        Err(_) => break false,
                    }
                };
                if complete {
                    let len = data.len() as u64;
                    shards.insert(key, data);
                    let _ = body.finish(len).await;
                }
            }
            NetEvent::InboundShard(InboundShard::Fetch(fetch)) => match shards.get(&fetch.key) {
                Some(data) => {
                    let start = usize::try_from(fetch.offset).unwrap().min(data.len());
                    let end = match fetch.len {
                        Some(l) => (start + usize::try_from(l).unwrap()).min(data.len()),
                        None => data.len(),
                    };
                    let _ = fetch.send(&data[start..end]).await;
                }
                None => fetch
                    .refuse(ErrorReply::new(ErrorCode::NotFound, "no such shard"))
                    .await
                    .unwrap(),
            },
            _ => {}
        }
    }
}

async fn addr_of(h: &NetHandle, quic: bool) -> Multiaddr {
    h.listen_addrs()
        .await
        .unwrap()
        .into_iter()
        .find(|a| is_quic(a) == quic)
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

fn key(owner: &OwnerKeypair, tag: u8, index: u16) -> ShardKey {
    ShardKey {
        owner: owner.owner_id(),
        tag: ObjectTag([tag; 32]),
        index,
    }
}

async fn control_and_shards_over(quic_transport: bool) {
    let a = holder(&[tcp(), quic()]).await;
    let b = holder(&[tcp(), quic()]).await;
    let b_addr = addr_of(&b, quic_transport).await;
    let peer_b = a.connect(&b_addr).await.unwrap();
    assert_eq!(peer_b, b.local_peer_id());

    let resp = a.request(peer_b, ControlRequest::Quota).await.unwrap();
    assert!(matches!(resp, ControlResponse::Quota(q) if q.offered == 1 << 30));

    // Multi-MiB shards both ways, bit-exact.
    let owner = OwnerKeypair::generate();
    let big_a = pattern(5 * 1024 * 1024 + 123, 1);
    let big_b = pattern(3 * 1024 * 1024 + 7, 2);
    let ka = key(&owner, 1, 0);
    let kb = key(&owner, 2, 1);
    let n = big_a.len() as u64;
    assert_eq!(a.store_shard(peer_b, ka, n, 0, &big_a).await.unwrap(), n);
    let peer_a = a.local_peer_id();
    let m = big_b.len() as u64;
    assert_eq!(b.store_shard(peer_a, kb, m, 0, &big_b).await.unwrap(), m);
    let back = a
        .fetch_shard(peer_b, ka, ShardRange::All, 64 << 20)
        .await
        .unwrap();
    assert!(back == big_a, "shard A→B→A differs");
    let back = b
        .fetch_shard(peer_a, kb, ShardRange::All, 64 << 20)
        .await
        .unwrap();
    assert!(back == big_b, "shard B→A→B differs");

    // Ranged fetch.
    let range = ShardRange::Range {
        offset: 1_000_000,
        len: 70_000,
    };
    let part = a.fetch_shard(peer_b, ka, range, 1 << 20).await.unwrap();
    assert_eq!(&part[..], &big_a[1_000_000..1_070_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_multi_mib_shards_work_over_tcp() {
    tokio::time::timeout(TEST_TIMEOUT, control_and_shards_over(false))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_multi_mib_shards_work_over_quic() {
    tokio::time::timeout(TEST_TIMEOUT, control_and_shards_over(true))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_limits_are_clean_errors() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let a = holder(&[tcp()]).await;
        let b = holder(&[tcp()]).await;
        let peer_b = a.connect(&addr_of(&b, false).await).await.unwrap();
        let owner = OwnerKeypair::generate();

        // The holder refuses before the bytes are sent.
        let err = a
            .store_shard(peer_b, key(&owner, 1, 999), 10, 0, &[0; 10])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetError::Refused { reply, .. } if reply.code == ErrorCode::OverQuota),
            "{err}"
        );

        // Unknown shard.
        let err = a
            .fetch_shard(peer_b, key(&owner, 9, 0), ShardRange::All, 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetError::Refused { reply, .. } if reply.code == ErrorCode::NotFound)
        );

        // An answer larger than the caller accepts is refused without reading it.
        let data = pattern(200_000, 3);
        a.store_shard(peer_b, key(&owner, 3, 0), 200_000, 0, &data)
            .await
            .unwrap();
        let err = a
            .fetch_shard(peer_b, key(&owner, 3, 0), ShardRange::All, 100_000)
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::TooLarge { len: 200_000, .. }),
            "{err}"
        );

        // A store whose offset and length overrun the total is refused by the holder.
        let err = a
            .store_shard(peer_b, key(&owner, 4, 0), 5, 3, &[0; 5])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetError::Refused { reply, .. } if reply.code == ErrorCode::TooLarge),
            "{err}"
        );

        // Requests the holder does not handle come back as error replies.
        let err = a
            .request(peer_b, ControlRequest::RedeemInvite { secret: [0; 32] })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetError::Refused { reply, .. } if reply.code == ErrorCode::Unsupported)
        );

        // Still usable afterwards.
        a.request(peer_b, ControlRequest::Quota).await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_raw_messages_get_error_replies_or_resets() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let a = holder(&[tcp()]).await;
        let b = holder(&[tcp()]).await;
        let peer_b = a.connect(&addr_of(&b, false).await).await.unwrap();
        let mut streams = a.streams.clone();

        // A well-framed control request with an unknown variant: error reply.
        let mut s = streams.open_stream(peer_b, CONTROL_PROTOCOL).await.unwrap();
        wire::write_frame(&mut s, &[42, 1, 2, 3]).await.unwrap();
        s.close().await.unwrap();
        let resp: ControlResponse = wire::read_msg(&mut s, "resp", MAX_CONTROL_RESPONSE)
            .await
            .unwrap();
        assert!(matches!(resp, ControlResponse::Error(e) if e.code == ErrorCode::Unsupported));

        // Garbage inside a frame: Malformed.
        let mut s = streams.open_stream(peer_b, CONTROL_PROTOCOL).await.unwrap();
        wire::write_frame(&mut s, &[2, 0xff]).await.unwrap();
        s.close().await.unwrap();
        let resp: ControlResponse = wire::read_msg(&mut s, "resp", MAX_CONTROL_RESPONSE)
            .await
            .unwrap();
        assert!(matches!(resp, ControlResponse::Error(e) if e.code == ErrorCode::Malformed));

        // A frame declaring 4 GiB: the holder resets the stream, no hang.
        let mut s = streams.open_stream(peer_b, CONTROL_PROTOCOL).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let _ = s.write_all(&[0; 1000]).await;
        let _ = s.close().await;
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest).await;
        assert!(
            read.is_err() || rest.is_empty(),
            "got a reply to an oversize frame"
        );

        // A garbage shard header: Refused(Malformed).
        let mut s = streams.open_stream(peer_b, SHARD_PROTOCOL).await.unwrap();
        wire::write_frame(&mut s, &[7, 7, 7]).await.unwrap();
        let reply: ShardReply = wire::read_msg(&mut s, "reply", MAX_SHARD_HEADER)
            .await
            .unwrap();
        assert!(matches!(reply, ShardReply::Refused(e) if e.code == ErrorCode::Malformed));

        // An oversize shard header: reset.
        let mut s = streams.open_stream(peer_b, SHARD_PROTOCOL).await.unwrap();
        s.write_all(&(MAX_SHARD_HEADER + 1).to_be_bytes())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest).await;
        assert!(read.is_err() || rest.is_empty());

        // The holder is still fine.
        a.request(peer_b, ControlRequest::Quota).await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_lists_holdings_after_signed_challenge() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let a = holder(&[tcp()]).await;
        let b = holder(&[tcp()]).await;
        let peer_b = a.connect(&addr_of(&b, false).await).await.unwrap();
        let owner = OwnerKeypair::from_seed([5; 32]).unwrap();
        for i in 0..3u16 {
            a.store_shard(peer_b, key(&owner, 1, i), 4, 0, &[1, 2, 3, 4])
                .await
                .unwrap();
        }
        a.store_shard(peer_b, key(&OwnerKeypair::generate(), 1, 0), 1, 0, &[9])
            .await
            .unwrap();

        let challenge = ControlRequest::Challenge {
            owner: owner.owner_id(),
        };
        let ControlResponse::Challenge { nonce } =
            a.request(peer_b, challenge.clone()).await.unwrap()
        else {
            panic!("no nonce")
        };
        let proof = owner.prove(&nonce, &peer_b);
        let list = ControlRequest::ListHoldings {
            proof,
            after: None,
            limit: 100,
        };
        let ControlResponse::Holdings { shards, more } =
            a.request(peer_b, list.clone()).await.unwrap()
        else {
            panic!("no holdings")
        };
        assert!(!more);
        assert_eq!(shards.len(), 3);
        assert!(shards.iter().all(|h| h.len == 4));

        // The nonce is single-use.
        let err = a.request(peer_b, list).await.unwrap_err();
        assert!(
            matches!(&err, NetError::Refused { reply, .. } if reply.code == ErrorCode::Unauthorized)
        );

        // A proof made for another holder does not verify.
        let ControlResponse::Challenge { nonce } = a.request(peer_b, challenge).await.unwrap()
        else {
            panic!("no nonce")
        };
        let wrong = owner.prove(&nonce, &a.local_peer_id());
        let err = a
            .request(
                peer_b,
                ControlRequest::ListHoldings {
                    proof: wrong,
                    after: None,
                    limit: 100,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetError::Refused { reply, .. } if reply.code == ErrorCode::Unauthorized)
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_finds_a_peer_through_a_common_bootstrap_node() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let b = holder(&[tcp()]).await;
        let b_addr = addr_of(&b, false)
            .await
            .with(libp2p::multiaddr::Protocol::P2p(b.local_peer_id()));
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let (h, events) = NetBuilder::new(Keypair::generate_ed25519())
                .listen_on(tcp())
                .bootstrap_peer(b_addr.clone())
                .spawn()
                .await
                .unwrap();
            tokio::spawn(serve(h.local_peer_id(), events));
            h.bootstrap().await.unwrap();
            nodes.push(h);
        }
        let (a, c) = (&nodes[0], &nodes[1]);
        let c_addr = addr_of(c, false).await;
        // B learns C's listen address through identify shortly after C's
        // connection; retry the lookup until it has.
        let mut found = None;
        for _ in 0..50 {
            match a.find_peer(c.local_peer_id()).await {
                Ok(addrs) => {
                    found = Some(addrs);
                    break;
                }
                Err(NetError::PeerNotFound(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        let found = found.expect("C not found through B");
        assert!(found.contains(&c_addr), "{found:?} lacks {c_addr}");
        // And A can use what it found.
        let resp = a
            .request(c.local_peer_id(), ControlRequest::Quota)
            .await
            .unwrap();
        assert!(matches!(resp, ControlResponse::Quota(_)));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_different_peer_than_named() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let a = holder(&[tcp()]).await;
        let b = holder(&[tcp()]).await;
        let wrong = addr_of(&b, false)
            .await
            .with(libp2p::multiaddr::Protocol::P2p(PeerId::random()));
        assert!(a.connect(&wrong).await.is_err());
        let bootstrap_without_id = NetBuilder::new(Keypair::generate_ed25519())
            .bootstrap_peer(addr_of(&b, false).await)
            .spawn()
            .await;
        assert!(matches!(
            bootstrap_without_id,
            Err(NetError::AddressWithoutPeerId(_))
        ));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_stream_from_readers_and_into_writers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let a = holder(&[tcp()]).await;
        let b = holder(&[quic()]).await;
        let peer_b = a.connect(&addr_of(&b, true).await).await.unwrap();
        let owner = OwnerKeypair::generate();
        let data = pattern(2 * 1024 * 1024 + 1, 4);
        let n = data.len() as u64;
        let k = key(&owner, 1, 0);
        let reader = futures::io::Cursor::new(data.clone());
        assert_eq!(
            a.store_shard_from(peer_b, k, n, 0, n, reader)
                .await
                .unwrap(),
            n
        );
        let mut out = futures::io::Cursor::new(Vec::new());
        let got = a
            .fetch_shard_into(peer_b, k, ShardRange::All, n, &mut out)
            .await
            .unwrap();
        assert_eq!(got, n);
        assert!(out.into_inner() == data);

        // A reader that ends early aborts the upload locally; the holder
        // sees a reset and keeps serving.
        let short = futures::io::Cursor::new(vec![0u8; 100]);
        let err = a
            .store_shard_from(peer_b, key(&owner, 2, 0), 1000, 0, 1000, short)
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Io(_)), "{err}");
        a.request(peer_b, ControlRequest::Quota).await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_events_reach_the_node_and_shutdown_stops_the_handle() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (a, _a_events) = node(&[tcp()]).await;
        let (b, mut b_events) = node(&[tcp()]).await;
        let b_addr = addr_of(&b, false).await;
        a.connect(&b_addr).await.unwrap();
        assert_eq!(a.connected_peers().await.unwrap(), vec![b.local_peer_id()]);
        loop {
            match b_events.recv().await.unwrap() {
                NetEvent::PeerConnected { peer, .. } => {
                    assert_eq!(peer, a.local_peer_id());
                    break;
                }
                NetEvent::Listening { .. }
                | NetEvent::PeerDiscovered { .. }
                | NetEvent::PeerIdentified { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        a.shutdown().await;
        loop {
            match b_events.recv().await.unwrap() {
                NetEvent::PeerDisconnected { peer } => {
                    assert_eq!(peer, a.local_peer_id());
                    break;
                }
                NetEvent::Listening { .. }
                | NetEvent::PeerDiscovered { .. }
                | NetEvent::PeerIdentified { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(a.connected_peers().await, Err(NetError::Stopped)));
        assert!(matches!(
            a.request(b.local_peer_id(), ControlRequest::Quota).await,
            Err(NetError::Stopped)
        ));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_fail_with_a_timeout_not_a_hang() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (a, _a_events) = NetBuilder::new(Keypair::generate_ed25519())
            .request_timeout(Duration::from_millis(500))
            .spawn()
            .await
            .unwrap();
        // B never reads its events: requests queue until the timeout.
        let (b, _b_events) = node(&[tcp()]).await;
        let peer_b = a.connect(&addr_of(&b, false).await).await.unwrap();
        let err = a.request(peer_b, ControlRequest::Quota).await.unwrap_err();
        assert!(matches!(err, NetError::Request { .. }), "{err}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_queue_answers_busy() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (a, _a_events) = node(&[]).await;
        let (b, _b_events) = NetBuilder::new(Keypair::generate_ed25519())
            .listen_on(tcp())
            .event_capacity(1)
            .spawn()
            .await
            .unwrap();
        let peer_b = a.connect(&addr_of(&b, false).await).await.unwrap();
        // The queue of one holds Listening or PeerConnected; requests beyond
        // it are answered Busy by the network task.
        let mut busy = 0;
        for _ in 0..3 {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                a.request(peer_b, ControlRequest::Quota),
            )
            .await;
            if let Ok(Err(NetError::Refused { reply, .. })) = r {
                assert_eq!(reply.code, ErrorCode::Busy);
                busy += 1;
            }
        }
        assert!(busy >= 2, "{busy} busy replies");
    })
    .await
    .unwrap();
}

/// Pins the v1 encoding to the tables in docs/PROTOCOL.md: if one of these
/// changes, the protocol changed and needs a new variant or protocol id.
#[test]
fn v1_wire_bytes_match_protocol_md() {
    fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
        wire::encode("t", v, u32::MAX).unwrap()
    }
    let key = ShardKey {
        owner: OwnerId([1; 32]),
        tag: ObjectTag([2; 32]),
        index: 300,
    };
    let key_bytes = [vec![1u8; 32], vec![2u8; 32], vec![0xac, 0x02]].concat();

    assert_eq!(enc(&ControlRequest::Quota), [0]);
    assert_eq!(
        enc(&ControlRequest::Challenge {
            owner: OwnerId([0xab; 32])
        }),
        [vec![1u8], vec![0xab; 32]].concat()
    );
    let proof = OwnerProof {
        owner: OwnerId([3; 32]),
        nonce: Nonce([4; 32]),
        signature: OwnerSignature([5; 64]),
    };
    assert_eq!(
        enc(&ControlRequest::ListHoldings {
            proof,
            after: None,
            limit: 10
        }),
        [
            vec![2u8],
            vec![3; 32],
            vec![4; 32],
            vec![64],
            vec![5; 64],
            vec![0, 10]
        ]
        .concat()
    );
    assert_eq!(
        enc(&ControlRequest::ShardStatus { key }),
        [vec![4u8], key_bytes.clone()].concat()
    );
    assert_eq!(
        enc(&ControlRequest::RedeemInvite { secret: [9; 32] }),
        [vec![5u8], vec![9; 32]].concat()
    );
    assert_eq!(
        enc(&ControlResponse::Error(ErrorReply::new(
            ErrorCode::Busy,
            "x"
        ))),
        [6, 5, 1, b'x']
    );
    assert_eq!(
        enc(&ControlResponse::ShardStatus(ShardStatus::Partial {
            received: 1,
            total_len: 2
        })),
        [4, 1, 1, 2]
    );
    assert_eq!(
        enc(&ShardOpen::Fetch {
            key,
            offset: 1,
            len: None
        }),
        [vec![1u8], key_bytes.clone(), vec![1, 0]].concat()
    );
    assert_eq!(
        enc(&ShardOpen::Store {
            key,
            total_len: 3,
            offset: 0,
            len: 3
        }),
        [vec![0u8], key_bytes, vec![3, 0, 3]].concat()
    );
    assert_eq!(enc(&ShardReply::Sending { len: 128 }), [2, 0x80, 0x01]);

    let mut framed = Vec::new();
    futures::executor::block_on(wire::write_frame(&mut framed, &[7])).unwrap();
    assert_eq!(framed, [0, 0, 0, 1, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_flag_builds_or_fails_cleanly_and_bootstrap_needs_peers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // mDNS needs a multicast-capable interface, which a test sandbox may
        // lack; either it runs or setup says why. Its discovery is tested on
        // a LAN namespace, not here.
        match NetBuilder::new(Keypair::generate_ed25519())
            .mdns(true)
            .spawn()
            .await
        {
            Ok((h, _events)) => h.shutdown().await,
            Err(NetError::Setup { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        let (lonely, _events) = node(&[]).await;
        assert!(matches!(
            lonely.bootstrap().await,
            Err(NetError::NoKnownPeers)
        ));
    })
    .await
    .unwrap();
}

/// A node on a runtime of its own with a single thread, which a test can
/// block while the node's sockets stay open, as a machine that stops
/// answering would. Stopped and joined on drop.
struct OwnThread {
    peer: PeerId,
    addr: Multiaddr,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OwnThread {
    /// Runs the node `start` makes (and keeps its event receiver, if any).
    fn spawn<F, Fut>(start: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (NetHandle, Option<mpsc::Receiver<NetEvent>>)>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runtime = rt.handle().clone();
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async {
                let (h, _events) = start().await;
                found_tx
                    .send((h.local_peer_id(), addr_of(&h, false).await))
                    .unwrap();
                let _ = stop_rx.await;
            });
        });
        let (peer, addr) = found_rx.recv().unwrap();
        OwnThread {
            peer,
            addr,
            runtime,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the node and waits for its thread, failing if it panicked.
    fn stop(mut self) {
        self.halt().unwrap();
    }

    fn halt(&mut self) -> std::thread::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().map_or(Ok(()), |t| t.join())
    }

    /// Blocks the node's only thread for `pause`.
    fn stall(&self, pause: Duration) {
        self.runtime.spawn(async move { std::thread::sleep(pause) });
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Streams opened while a holder's runtime is stalled arrive together once
/// it runs again; every one of them must reach the holder and be answered
/// (here: refused, as the shards do not exist), none dropped on the way.
#[test]
fn a_holder_that_falls_behind_answers_every_stream_opened_meanwhile() {
    let held = OwnThread::spawn(|| async { (holder(&[tcp()]).await, None) });
    let (holder_peer, holder_addr) = (held.peer, held.addr.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let owner = OwnerKeypair::generate();
        let mut owners = Vec::new();
        for _ in 0..4 {
            let (o, _events) = node(&[tcp()]).await;
            assert_eq!(o.connect(&holder_addr).await.unwrap(), holder_peer);
            owners.push((o, _events));
        }
        // Block the holder's only thread while the owners open streams.
        held.stall(Duration::from_millis(700));
        let mut fetches = Vec::new();
        for (i, (o, _)) in owners.iter().enumerate() {
            for j in 0..4u16 {
                let o = o.clone();
                let k = key(&owner, i as u8, j);
                fetches.push(tokio::spawn(async move {
                    o.fetch_shard(holder_peer, k, ShardRange::All, 1 << 20)
                        .await
                }));
            }
        }
        for f in fetches {
            let result = tokio::time::timeout(TEST_TIMEOUT, f)
                .await
                .unwrap()
                .unwrap();
            match result {
                Err(NetError::Refused { reply, .. }) => assert_eq!(reply.code, ErrorCode::NotFound),
                other => panic!("a stream was not answered: {other:?}"),
            }
        }
    });
    held.stop();
}

/// A node on 127.0.0.1 whose idle connections close after `idle`, except
/// to the peers `keep` answers true for.
async fn idle_node(
    idle: Duration,
    keep: impl Fn(&PeerId) -> bool + Send + Sync + 'static,
) -> (NetHandle, mpsc::Receiver<NetEvent>) {
    NetBuilder::new(Keypair::generate_ed25519())
        .listen_on(tcp())
        .idle_connection_timeout(idle)
        .keep_connected(keep)
        .spawn()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_peers_stay_connected_while_idle_and_others_are_closed() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let idle = Duration::from_millis(300);
        let (friend_a, _ea) = idle_node(idle, |_| true).await;
        let (friend_b, _eb) = idle_node(idle, |_| true).await;
        let (stranger_a, _ec) = idle_node(idle, |_| false).await;
        let (stranger_b, _ed) = idle_node(idle, |_| false).await;
        let kept = friend_a
            .connect(&addr_of(&friend_b, false).await)
            .await
            .unwrap();
        let dropped = stranger_a
            .connect(&addr_of(&stranger_b, false).await)
            .await
            .unwrap();
        // Several idle timeouts with no stream open on either connection.
        tokio::time::sleep(idle * 6).await;
        assert!(friend_a.connected_peers().await.unwrap().contains(&kept));
        assert!(!stranger_a
            .connected_peers()
            .await
            .unwrap()
            .contains(&dropped));
    })
    .await
    .unwrap();
}

/// A kept connection ends when its peer stops answering pings: here the
/// peer's only thread is blocked, as a machine that lost power or its link
/// would stop answering without closing anything.
#[test]
fn a_kept_connection_to_a_peer_that_stops_answering_pings_is_closed() {
    let ping = (Duration::from_millis(200), Duration::from_millis(300));
    let silent_peer = OwnThread::spawn(move || async move {
        let (h, events) = NetBuilder::new(Keypair::generate_ed25519())
            .listen_on(tcp())
            .keep_connected(|_| true)
            .ping(ping.0, ping.1)
            .spawn()
            .await
            .unwrap();
        (h, Some(events))
    });
    let (peer, addr) = (silent_peer.peer, silent_peer.addr.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (me, _events) = NetBuilder::new(Keypair::generate_ed25519())
            .idle_connection_timeout(Duration::from_millis(300))
            .keep_connected(|_| true)
            .ping(ping.0, ping.1)
            .spawn()
            .await
            .unwrap();
        assert_eq!(me.connect(&addr).await.unwrap(), peer);
        // Answered pings keep it up past several idle timeouts.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(me.connected_peers().await.unwrap().contains(&peer));
        // libp2p reports a failure after two in a row: the ping on the open
        // stream times out, then the next ping's new stream fails its
        // negotiation after libp2p's upgrade timeout (10 s). So the peer
        // stays silent for longer than that, and the connection must be
        // gone before it wakes.
        let silent = Duration::from_secs(13);
        silent_peer.stall(silent);
        let stalled = std::time::Instant::now();
        while me.connected_peers().await.unwrap().contains(&peer) {
            assert!(
                stalled.elapsed() < silent - Duration::from_secs(1),
                "the connection outlived the silence"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    silent_peer.stop();
}
