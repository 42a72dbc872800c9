//! mDNS: two nodes in two network namespaces joined by a veth link find
//! each other with no address given (mDNS ignores loopback, so this cannot
//! run on 127.0.0.1). Needs root, as CI has; without it the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kith_e2e::netns::{LinkConfig, NetPair};
use kith_e2e::node::{TestNode, PATIENCE};

#[test]
fn two_nodes_on_one_lan_find_each_other_with_mdns_and_become_friends() {
    let pair = NetPair::create(
        7,
        LinkConfig {
            loss_percent: 0,
            rate_kbit: 0,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--mdns",
        "--listen",
        "/ip4/0.0.0.0/tcp/7412",
        "--quota",
        "1M",
    ];
    let mut a = TestNode::init(&tmp.path().join("a"), &args);
    let mut b = TestNode::init(&tmp.path().join("b"), &args);
    a.netns = Some(pair.server.clone());
    b.netns = Some(pair.client.clone());
    // Every mDNS packet in the logs, for the failure message below.
    for n in [&mut a, &mut b] {
        n.env
            .push(("KITH_LOG".into(), "info,libp2p_mdns=trace".into()));
    }
    a.start();
    b.start();
    let (pa, pb) = (a.peer_id(), b.peer_id());

    let found = |n: &TestNode, p: &str| {
        n.peer(p)
            .is_some_and(|e| e["discovered_by"] == "mdns" && e["friend"] == false)
    };
    let start = std::time::Instant::now();
    while !(found(&a, &pb) && found(&b, &pa)) {
        assert!(
            start.elapsed() < PATIENCE,
            "gave up waiting for each node to discover the other by mDNS\n\
             a's peers: {:?}\nb's peers: {:?}\n--- a's log ---\n{}\n--- b's log ---\n{}",
            a.peers(),
            b.peers(),
            a.log(),
            b.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let seen = a.peer(&pb).unwrap();
    let addrs: Vec<&str> = seen["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(
        addrs.iter().any(|x| x.contains(&pair.client_addr)),
        "{addrs:?}"
    );

    // Discovery is not trust: becoming friends still takes an invite.
    a.befriend(&b);
    let friend = b.peer(&pa).unwrap();
    assert_eq!(friend["friend"], true);
    assert_eq!(friend["state"], "connected");
    drop(a);
    drop(b);
    drop(pair);
}
