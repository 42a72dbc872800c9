//! The node daemon through the CLI: init, info, invites, friends, peer
//! list, clean shutdown, and the errors of a node that is not running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kith_e2e::node::{wait_for, TestNode};

#[test]
fn node_init_creates_a_private_identity_and_info_works_stopped_and_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let mut a = TestNode::local(&dir, "1M");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stopped = a.info();
    assert_eq!(stopped["running"], false);
    let peer = stopped["peer_id"].as_str().unwrap().to_owned();
    assert!(peer.starts_with("12D3Koo"), "{peer}");

    // A second init on the same folder is refused.
    let again = a.run(&["node", "init", "--dir", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a node"));

    a.start();
    let running = a.info();
    assert_eq!(running["peer_id"], peer.as_str());
    let addrs = running["addresses"].as_array().unwrap();
    assert!(
        addrs
            .iter()
            .any(|x| x.as_str().unwrap().starts_with("/ip4/127.0.0.1/tcp/")),
        "{addrs:?}"
    );
    let socket = dir.join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // SIGTERM stops it cleanly: exit 0, socket gone.
    let status = a.stop();
    assert_eq!(status.code(), Some(0), "{}", a.log());
    assert!(!socket.exists());
}

#[test]
fn invite_and_add_make_two_nodes_friends_and_list_shows_their_state() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = TestNode::local(&tmp.path().join("a"), "1M");
    let mut b = TestNode::local(&tmp.path().join("b"), "1M");
    a.start();
    b.start();
    assert!(a.peers().is_empty());

    let code = a.ok(&["peer", "invite"]);
    assert_eq!(code.lines().count(), 1, "the code alone on stdout");
    assert!(code.starts_with("kith-invite-"));
    let added = b.json(&["peer", "add", code.trim()]);
    assert_eq!(added["peer_id"], a.peer_id().as_str());

    let (pa, pb) = (a.peer_id(), b.peer_id());
    wait_for("a to see b connected", || {
        a.peer(&pb).is_some_and(|p| p["state"] == "connected")
    });
    let seen = b.peer(&pa).unwrap();
    assert_eq!(seen["friend"], true);
    assert_eq!(seen["state"], "connected");
    assert_eq!(seen["connection"], "direct");
    assert_eq!(seen["bytes_held_for_it"], 0);
    assert_eq!(seen["bytes_held_by_it"], 0);

    // The code is single-use.
    let mut c = TestNode::local(&tmp.path().join("c"), "1M");
    c.start();
    let reused = c.run(&["peer", "add", code.trim()]);
    assert_eq!(reused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("used already"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );
    // c met a while dialling (the DHT lists it) but is not its friend.
    assert!(c.peer(&pa).is_none_or(|p| p["friend"] == false));

    // Friends survive a restart of both sides; a stopped friend shows as
    // unreachable with the reason.
    a.stop();
    wait_for("b to see a unreachable", || {
        b.peer(&pa).is_some_and(|p| {
            p["state"] == "unreachable" && p["reason"].as_str().is_some_and(|r| !r.is_empty())
        })
    });
    a.start();
    wait_for("a and b to reconnect", || {
        a.peer(&pb).is_some_and(|p| p["state"] == "connected")
            && b.peer(&pa).is_some_and(|p| p["state"] == "connected")
    });
}

#[test]
fn peer_commands_on_a_stopped_node_say_so_with_their_own_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let a = TestNode::local(&tmp.path().join("a"), "1M");
    for args in [
        &["peer", "list"][..],
        &["peer", "invite"],
        &["peer", "add", "kith-invite-x"],
    ] {
        let out = a.run(args);
        assert_eq!(out.status.code(), Some(16), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is not running") && err.contains("kith node run"),
            "{err}"
        );
    }
    let missing = tmp.path().join("nothing");
    let out = a
        .cmd()
        .env("KITH_NODE_DIR", &missing)
        .args(["peer", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(17));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kith node init"));
    let out = a
        .cmd()
        .env_remove("KITH_NODE_DIR")
        .args(["peer", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node"));
}

#[test]
fn a_damaged_invite_code_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = TestNode::local(&tmp.path().join("a"), "1M");
    a.start();
    let out = a.run(&["peer", "add", "kith-invite-AAAA"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid invite code"));
}
