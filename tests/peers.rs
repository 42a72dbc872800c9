//! Repositories on peers (`peers://`) across real `kith node run`
//! processes on 127.0.0.1: an owner backs up to five friends (3-of-5,
//! F = 2), holders die, lie, restart mid-upload, and a brand-new machine
//! with only the master key and one surviving holder's address restores.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kith_e2e::node::{free_port, wait_for, TestNode};
use kith_e2e::{assert_same_tree, files_under, Env, Rng};
use kith_node::control::client::DaemonTransport;
use kith_node::transport::ShardTransport;

const PASSWORD: &str = "correct horse";

/// An owner node and its friends, the holders.
struct Cluster {
    tmp: tempfile::TempDir,
    owner: TestNode,
    holders: Vec<TestNode>,
}

impl Cluster {
    /// `holders` holders, each a friend of the owner, all running; holder
    /// `faulty` (if any) serves corrupted shards.
    fn start(holders: usize, faulty: Option<usize>) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("kith-peers-")
            .tempdir()
            .unwrap();
        let mut owner = TestNode::local(&tmp.path().join("owner"), "1G");
        owner.start();
        let mut list = Vec::new();
        for i in 0..holders {
            let mut h = TestNode::local(&tmp.path().join(format!("holder{i}")), "1G");
            if faulty == Some(i) {
                h.env
                    .push(("KITH_NODE_FAULT".into(), "corrupt-shards".into()));
            }
            h.start();
            owner.befriend(&h);
            list.push(h);
        }
        Cluster {
            tmp,
            owner,
            holders: list,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `kith` on the owner's node with the repository on peers and the password.
    fn kith(&self) -> Command {
        repo_cmd(&self.owner, &self.path("owner-cache"))
    }

    fn run(&self, args: &[&str]) -> Output {
        self.kith().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates the repository and returns its master key.
    fn init(&self) -> String {
        let out = self.ok(&[
            "init",
            "--kdf-memory",
            "64",
            "--kdf-iterations",
            "1",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["master_key"].as_str().unwrap().to_owned()
    }

    /// The address of holder `i`, ending in its peer id.
    fn address(&self, i: usize) -> String {
        let info = self.holders[i].info();
        let addr = info["addresses"][0].as_str().unwrap();
        let id = info["peer_id"].as_str().unwrap();
        if addr.contains("/p2p/") {
            addr.to_owned()
        } else {
            format!("{addr}/p2p/{id}")
        }
    }
}

/// `kith` on `node` with the repository `peers://`, `cache` and the password.
fn repo_cmd(node: &TestNode, cache: &Path) -> Command {
    let mut c = node.cmd();
    c.env("KITH_REPOSITORY", "peers://")
        .env("KITH_CACHE_DIR", cache)
        .env("KITH_PASSWORD", PASSWORD);
    c
}

fn assert_success(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "kith {args:?} exited with {:?}: {}",
        out.status.code(),
        tail(&String::from_utf8_lossy(&out.stderr))
    );
}

/// The end of a long text, for assertion messages.
fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(3000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// `files` files of `size` pseudo-random bytes each (seeded) under `dir`.
fn random_tree(dir: &Path, seed: u64, files: usize, size: usize) {
    let mut rng = Rng::new(seed);
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i:03}.bin")), rng.bytes(size)).unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_fresh_node_with_only_the_master_key_restores_200_mib_after_two_holders_are_killed() {
    let mut c = Cluster::start(5, None);
    let master = c.init();
    let source = c.path("source");
    // 200 MiB: 50 files of 4 MiB.
    random_tree(&source, 0x5eed_0001, 50, 4 << 20);
    c.ok(&["backup", source.to_str().unwrap()]);

    // Every holder got shards: 3-of-5 puts one shard of each pack on each.
    for h in &c.holders {
        assert!(!files_under(&h.dir.join("hold")).is_empty());
    }
    c.holders[0].kill();
    c.holders[1].kill();

    // A new machine: a node that knows one surviving holder, the master key.
    let fresh_dir = c.path("fresh");
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let bootstrap = c.address(3);
    let mut fresh = TestNode::init(
        &fresh_dir,
        &["--listen", &listen, "--bootstrap", &bootstrap],
    );
    fresh.start();
    let target = c.path("target");
    let out = repo_cmd(&fresh, &c.path("fresh-cache"))
        .env_remove("KITH_PASSWORD")
        .env("KITH_MASTER_KEY", &master)
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&["restore"], &out);
    assert_same_tree(&source, &Env::restored(&target, &source));

    // The owner, with only its password, still sees a sound repository.
    c.ok(&["check", "--read-data"]);
    fresh.kill();
}

#[test]
fn a_holder_serving_corrupted_shards_never_corrupts_a_restore_and_is_named() {
    let mut c = Cluster::start(5, None);
    c.init();
    let source = c.path("source");
    random_tree(&source, 0x5eed_0002, 6, 3 << 20);
    c.ok(&["backup", source.to_str().unwrap()]);

    // Switch the fault on at the holder of shard 0 (read first).
    let holds_first = |h: &TestNode| {
        files_under(&h.dir.join("hold"))
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "0"))
            .count()
    };
    let liar = (0..c.holders.len())
        .max_by_key(|&i| holds_first(&c.holders[i]))
        .unwrap();
    assert!(holds_first(&c.holders[liar]) > 0);
    let liar_id = c.holders[liar].peer_id();
    c.holders[liar].stop();
    c.holders[liar]
        .env
        .push(("KITH_NODE_FAULT".into(), "corrupt-shards".into()));
    c.holders[liar].start();
    let owner = c.owner.peer_id();
    wait_for("the owner to reconnect to the restarted holder", || {
        c.owner
            .peer(&liar_id)
            .is_some_and(|p| p["state"] == "connected")
            && c.holders[liar]
                .peer(&owner)
                .is_some_and(|p| p["state"] == "connected")
    });
    // Connected is not yet usable: the owner's node must also have its
    // quota answer, or a read asks the restarted holder last and never
    // meets its lies.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let owner_transport = rt
        .block_on(DaemonTransport::connect(&c.owner.dir, [1; 32]))
        .unwrap();
    wait_for("the owner to count the restarted holder usable", || {
        rt.block_on(owner_transport.usable_peers())
            .is_ok_and(|u| u.iter().any(|p| p.peer.to_string() == liar_id))
    });

    let target = c.path("target");
    let out = c.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_success(&["restore"], &out);
    assert_same_tree(&source, &Env::restored(&target, &source));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&liar_id),
        "the restore does not name the holder of bad shards: {}",
        tail(&stderr)
    );
    let out = c.run(&["check", "--read-data"]);
    assert_success(&["check", "--read-data"], &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&liar_id));
}

#[test]
fn a_holder_restarted_mid_upload_leaves_a_repository_that_checks() {
    let mut c = Cluster::start(5, None);
    c.init();
    let source = c.path("source");
    random_tree(&source, 0x5eed_0003, 16, 4 << 20);
    let mut backup = c
        .kith()
        .args(["backup", source.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hold = c.holders[2].dir.join("hold");
    wait_for("shards to reach the holder", || {
        !files_under(&hold).is_empty()
    });
    c.holders[2].kill();
    c.holders[2].start();
    let status = backup.wait().unwrap();
    // Completed, or failed with a plain error (not a crash or a signal).
    match status.code() {
        Some(0) => {}
        Some(code) => {
            assert!(code == 1 || code == 3, "backup exited with {code}");
            c.ok(&["backup", source.to_str().unwrap()]);
        }
        None => panic!("backup died from a signal"),
    }
    c.ok(&["check", "--read-data"]);
    let target = c.path("target");
    c.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&source, &Env::restored(&target, &source));
}

#[test]
fn holders_never_see_plaintext_or_file_names() {
    let c = Cluster::start(5, None);
    c.init();
    let source = c.path("source");
    let secret_dir = source.join("marker-folder-zanzibar");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let marker = b"MARKER-CONTENT-9f2c41 the holders must never see this line\n";
    // Small (replicated) and large (erasure-coded) files, both compressible.
    std::fs::write(secret_dir.join("marker-name-quokka.txt"), marker.repeat(20)).unwrap();
    std::fs::write(
        secret_dir.join("marker-big-name-okapi.txt"),
        marker.repeat(40_000),
    )
    .unwrap();
    let mut rng = Rng::new(0x5eed_0004);
    let random = rng.bytes(2 << 20);
    std::fs::write(secret_dir.join("random.bin"), &random).unwrap();
    c.ok(&["backup", source.to_str().unwrap()]);

    let needles: [&[u8]; 6] = [
        &marker[..24],
        b"marker-folder-zanzibar",
        b"marker-name-quokka",
        b"marker-big-name-okapi",
        b"random.bin",
        &random[4096..4128],
    ];
    let mut scanned = 0usize;
    for h in &c.holders {
        let files = files_under(&h.dir);
        assert!(files.iter().any(|f| f.starts_with(h.dir.join("hold"))));
        for f in files {
            // The control socket is not a file one can read.
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            scanned += bytes.len();
            for n in needles {
                assert!(
                    !contains(&bytes, n),
                    "{} holds plaintext or a name",
                    f.display()
                );
            }
        }
    }
    assert!(scanned > 2 << 20);
}

#[test]
fn peers_without_a_running_node_or_with_too_few_friends_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    // No node in the folder: exit 17.
    let missing = tmp.path().join("missing");
    let out = Command::new(kith_e2e::kith_bin())
        .env_clear()
        .env("HOME", tmp.path())
        .env("KITH_NODE_DIR", &missing)
        .env("KITH_PASSWORD", PASSWORD)
        .args(["-r", "peers://", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(17));

    // A node that does not run: exit 16.
    let mut node = TestNode::local(&tmp.path().join("owner"), "1G");
    let out = repo_cmd(&node, &tmp.path().join("cache"))
        .args(["init", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16));

    // Running with one friend, fewer than F + 1 = 3: a clear error and
    // nothing stored, nothing saved.
    node.start();
    let mut friend = TestNode::local(&tmp.path().join("friend"), "1G");
    friend.start();
    node.befriend(&friend);
    let out = repo_cmd(&node, &tmp.path().join("cache"))
        .args(["init", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not enough usable peers"),
        "{}",
        tail(&stderr)
    );
    assert!(files_under(&friend.dir.join("hold")).is_empty());
    assert!(files_under(&node.dir.join("owners"))
        .iter()
        .all(|f| f.extension().is_none_or(|x| x != "key")));
    // Later commands find no repository (exit 10).
    let out = repo_cmd(&node, &tmp.path().join("cache"))
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    friend.kill();
}

#[test]
fn snapshots_copy_from_peers_to_a_local_folder_and_back() {
    let c = Cluster::start(3, None);
    c.init();
    let source = c.path("source");
    random_tree(&source, 0x5eed_0006, 4, 1 << 20);
    c.ok(&["backup", source.to_str().unwrap()]);

    // From the friends to a folder (a machine keeping a local copy).
    let local = c.path("local-repo");
    let local_cmd = || {
        let mut cmd = c.owner.cmd();
        cmd.env("KITH_REPOSITORY", &local)
            .env("KITH_CACHE_DIR", c.path("local-cache"))
            .env("KITH_PASSWORD", "another password");
        cmd
    };
    let on_local = |args: &[&str]| {
        let out = local_cmd().args(args).output().unwrap();
        assert_success(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    on_local(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    let out = local_cmd()
        .env("KITH_FROM_REPOSITORY", "peers://")
        .env("KITH_FROM_PASSWORD", PASSWORD)
        .args(["copy", "--json"])
        .output()
        .unwrap();
    assert_success(&["copy", "--from-repo", "peers://"], &out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report}");
    let target = c.path("from-local");
    on_local(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&source, &Env::restored(&target, &source));
    on_local(&["check", "--read-data"]);

    // And back: a second snapshot made locally goes to the friends.
    std::fs::write(source.join("added"), b"made on the local copy").unwrap();
    on_local(&["backup", source.to_str().unwrap()]);
    let out = c
        .kith()
        .env("KITH_FROM_REPOSITORY", &local)
        .env("KITH_FROM_PASSWORD", "another password")
        .args(["copy", "--json"])
        .output()
        .unwrap();
    assert_success(&["copy", "--from-repo", "LOCAL"], &out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report}");
    let target = c.path("from-peers");
    c.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&source, &Env::restored(&target, &source));
    c.ok(&["check", "--read-data"]);
}

#[test]
fn friends_stay_connected_through_idle_timeouts_and_a_later_backup_uses_them_all() {
    let tmp = tempfile::tempdir().unwrap();
    // Idle connections close after 1 s and nothing is redialled within the
    // test: only keeping friends' connections open lets the backup below
    // find its peers.
    let quiet = |dir: PathBuf| {
        let node = TestNode::local(&dir, "1G");
        let cfg = dir.join("node.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains("idle_secs = 60"), "{text}");
        let text = text
            .replace("idle_secs = 60", "idle_secs = 1")
            .replace("redial_secs = 1", "redial_secs = 3600");
        std::fs::write(&cfg, text).unwrap();
        node
    };
    let mut owner = quiet(tmp.path().join("owner"));
    owner.start();
    let mut holders = Vec::new();
    for i in 0..3 {
        let mut h = quiet(tmp.path().join(format!("holder{i}")));
        h.start();
        owner.befriend(&h);
        holders.push(h);
    }
    // Several idle timeouts with nothing to do.
    std::thread::sleep(std::time::Duration::from_secs(4));
    for h in &holders {
        let entry = owner.peer(&h.peer_id()).unwrap();
        assert_eq!(entry["state"], "connected", "{entry}");
    }
    assert!(
        !owner.log().contains("disconnected"),
        "{}",
        tail(&owner.log())
    );

    let cache = tmp.path().join("cache");
    let init = repo_cmd(&owner, &cache)
        .args(["init", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_success(&["init"], &init);
    let source = tmp.path().join("source");
    random_tree(&source, 0x5eed_0007, 4, 300_000);
    let out = repo_cmd(&owner, &cache)
        .args(["backup", source.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&["backup"], &out);
    for h in &holders {
        assert!(!files_under(&h.dir.join("hold")).is_empty());
    }
}

#[test]
fn a_holder_that_stops_answering_is_dropped_and_the_next_backup_goes_to_the_others() {
    let c = Cluster::start(4, None);
    c.init();
    let frozen = c.holders[0].peer_id();
    // Its sockets stay open: only the missing answers to pings show that
    // it is gone, as with a machine that lost power.
    c.holders[0].freeze();
    // Until pings fail it still counts as connected; `peer list` says it
    // does not answer instead of waiting for it.
    let asked = std::time::Instant::now();
    let listed = c.owner.peer(&frozen).expect("the frozen holder is listed");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(8),
        "peer list waited {:?} for the silent holder",
        asked.elapsed()
    );
    assert_eq!(listed["state"], "connected", "{listed}");
    assert!(
        listed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not answer")),
        "{listed}"
    );
    assert!(listed["bytes_held_by_it"].is_null(), "{listed}");
    // libp2p reports a failed ping after two in a row: with the defaults
    // (a ping every 15 s, 20 s to answer, 10 s to open a new ping stream)
    // that takes about a minute.
    let start = std::time::Instant::now();
    while c
        .owner
        .peer(&frozen)
        .is_some_and(|p| p["state"] == "connected")
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(150),
            "the owner still counts the silent holder as connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let source = c.path("source");
    random_tree(&source, 0x5eed_0008, 4, 300_000);
    c.ok(&["backup", source.to_str().unwrap()]);
    for h in &c.holders[1..] {
        assert!(!files_under(&h.dir.join("hold")).is_empty());
    }
    c.holders[0].thaw();
}
