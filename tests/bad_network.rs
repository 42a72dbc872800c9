//! The `kith` binary against real SFTP and S3 servers over a bad network:
//! a lossy, rate-limited link between two network namespaces; a proxy that
//! adds latency, partitions the network and cuts connections; servers
//! killed mid-backup and restarted; an S3 server that answers 503 and
//! drops connections. Every backup either completes (and restores
//! bit-exact) or fails with a clear error after which `check` passes and
//! the next backup reuses what was already stored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use kith_e2e::netns::{LinkConfig, NetPair};
use kith_e2e::proxy::Proxy;
use kith_e2e::servers::{Moto, RemoteEnv, Sshd};
use kith_e2e::{assert_same_tree, block_on, files_under, Env, Rng};
use kith_storage::{Backend, Kind};

/// `init` with a cheap password hash and 1 MiB packs, so that a few MiB of
/// data make several packs.
const INIT: &[&str] = &[
    "init",
    "--kdf-memory",
    "64",
    "--kdf-iterations",
    "1",
    "--pack-size",
    "1",
];

/// `files` random files of `size` bytes and one text file under `src`.
fn make_data(src: &Path, seed: u64, files: usize, size: usize) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..files {
        fs::write(src.join(format!("sub/f{i}")), rng.bytes(size)).unwrap();
    }
    fs::write(src.join("notes.txt"), rng.text(200_000)).unwrap();
}

/// Where a test repository lives, and how to count its packs without
/// going through the misbehaving network.
enum Server<'a> {
    Sftp {
        repo: PathBuf,
    },
    S3 {
        moto: &'a Moto,
        bucket: &'static str,
    },
}

impl Server<'_> {
    fn packs(&self) -> usize {
        match self {
            Server::Sftp { repo } => files_under(&repo.join("packs"))
                .iter()
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .count(),
            Server::S3 { moto, bucket } => {
                block_on(moto.backend(bucket, "repo").list(Kind::Pack, ""))
                    .map(|l| l.len())
                    .unwrap_or(0)
            }
        }
    }
}

/// Runs `kith ARGS` in the background.
fn spawn(r: &RemoteEnv, args: &[&str]) -> Child {
    r.cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kith")
}

/// Polls `cond` every 20 ms until it holds, `child` exits or `limit` passes;
/// true when `cond` held.
fn wait_until(child: &mut Child, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits for `child` with a time limit (killing it past the limit).
fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kith ran longer than {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Restores the latest snapshot and compares it with `src`, then runs
/// `check --read-data`.
fn restore_and_check(r: &RemoteEnv, src: &Path, netns: Option<&str>, name: &str) {
    let target = r.env.path(name);
    let run = |args: &[&str]| {
        let out = r.cmd_in(netns).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "kith {args:?} on {}: {}",
            r.url,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(src, &Env::restored(&target, src));
    run(&["check", "--read-data"]);
    fs::remove_dir_all(&target).unwrap();
}

// ---------------------------------------------------------------------------
// Packet loss and a bandwidth limit, between two network namespaces.

#[test]
fn backup_and_restore_cross_a_lossy_rate_limited_link() {
    let net = NetPair::create(
        1,
        LinkConfig {
            loss_percent: 10,
            rate_kbit: 20_000,
        },
    );
    let sshd = Sshd::start_at(&net.server_addr, Some(&net.server));
    let moto = Moto::start_with(&net.server_addr, Some(&net.server), false);
    let data = Env::new();
    let src = data.path("src");
    make_data(&src, 11, 2, 500_000);
    let sftp_env = Env::new();
    let sftp = RemoteEnv {
        url: sshd.url(&sftp_env.path("remote/repo")),
        vars: sshd.vars(),
        env: sftp_env,
    };
    let s3 = RemoteEnv {
        url: "s3://lossy/repo".into(),
        vars: moto.vars(),
        env: Env::new(),
    };
    for r in [&sftp, &s3] {
        let client = Some(net.client.as_str());
        let run = |args: &[&str]| {
            let out = r.cmd_in(client).args(args).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "kith {args:?} on {}: {}",
                r.url,
                String::from_utf8_lossy(&out.stderr)
            );
            out
        };
        run(INIT);
        let first = json(&run(&["backup", src.to_str().unwrap(), "--json"]));
        assert_eq!(first["files_new"], 3, "{first}");
        restore_and_check(r, &src, client, "target");
    }
    // The link did lose packets: the loss rules dropped some.
    let dropped = net.dropped_packets();
    assert!(dropped > 50, "only {dropped} packets were dropped");
}

// ---------------------------------------------------------------------------
// Latency, partitions and cut connections, through an in-process proxy.

/// An SFTP and an S3 repository behind one proxy each.
struct Proxied {
    sshd: Sshd,
    moto: Moto,
    sftp_proxy: Proxy,
    s3_proxy: Proxy,
}

impl Proxied {
    fn start() -> Proxied {
        let sshd = Sshd::start();
        let moto = Moto::start();
        let sftp_proxy = Proxy::start(sshd.port);
        sshd.trust_via("127.0.0.1", sftp_proxy.port);
        let s3_proxy = Proxy::start(moto.port);
        Proxied {
            sshd,
            moto,
            sftp_proxy,
            s3_proxy,
        }
    }

    /// The SFTP repository, reached through the proxy, its proxy, and a
    /// way to count its packs.
    fn sftp(&self, extra: &[(&str, &str)]) -> (RemoteEnv, &Proxy, Server<'_>) {
        let env = Env::new();
        let repo = env.path("remote/repo");
        let mut vars = self.sshd.vars();
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v))),
        );
        let r = RemoteEnv {
            url: self.sshd.url_via("127.0.0.1", self.sftp_proxy.port, &repo),
            vars,
            env,
        };
        (r, &self.sftp_proxy, Server::Sftp { repo })
    }

    /// The S3 repository `s3://BUCKET/repo`, reached through the proxy.
    fn s3(&self, bucket: &'static str, extra: &[(&str, &str)]) -> (RemoteEnv, &Proxy, Server<'_>) {
        let mut vars = self.moto.vars();
        vars.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
        vars.push((
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{}", self.s3_proxy.port).into(),
        ));
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v))),
        );
        let r = RemoteEnv {
            url: format!("s3://{bucket}/repo"),
            vars,
            env: Env::new(),
        };
        (
            r,
            &self.s3_proxy,
            Server::S3 {
                moto: &self.moto,
                bucket,
            },
        )
    }
}

#[test]
fn backups_through_latency_cuts_and_a_short_partition_complete() {
    let p = Proxied::start();
    let data = Env::new();
    let src = data.path("src");
    make_data(&src, 21, 6, 700_000);
    for (r, proxy, server) in [p.sftp(&[]), p.s3("latency", &[])] {
        proxy.set_latency(Duration::from_millis(0));
        r.ok(INIT);
        proxy.set_latency(Duration::from_millis(15));
        let mut child = spawn(&r, &["backup", src.to_str().unwrap(), "--json"]);
        // Once the first pack is stored, cut every connection; after the
        // second, stall the network for 2 s, then cut again.
        let mut events = 0;
        if wait_until(&mut child, Duration::from_secs(60), || server.packs() >= 1) {
            proxy.cut();
            events += 1;
        }
        if wait_until(&mut child, Duration::from_secs(60), || server.packs() >= 2) {
            proxy.set_partitioned(true);
            std::thread::sleep(Duration::from_secs(2));
            proxy.set_partitioned(false);
            proxy.cut();
            events += 1;
        }
        let out = finish(child, Duration::from_secs(120));
        assert_eq!(
            out.status.code(),
            Some(0),
            "backup on {}: {}",
            r.url,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(events, 2, "the backup ran through both disruptions");
        let summary = json(&out);
        assert_eq!(summary["files_new"], 7, "{summary}");
        proxy.set_latency(Duration::ZERO);
        restore_and_check(&r, &src, None, "target");
    }
}

#[test]
fn a_partition_longer_than_the_retry_budget_fails_clearly_and_the_next_backup_reuses_packs() {
    let p = Proxied::start();
    let data = Env::new();
    let src = data.path("src");
    make_data(&src, 31, 8, 600_000);
    // A small retry budget: 2 attempts of at most 2 s plus 4 s per MiB.
    let budget = [("KITH_RETRY_ATTEMPTS", "2"), ("KITH_RETRY_TIMEOUT", "2")];
    for (r, proxy, server) in [p.sftp(&budget), p.s3("partition", &budget)] {
        r.ok(INIT);
        let mut child = spawn(&r, &["backup", src.to_str().unwrap(), "--json"]);
        assert!(
            wait_until(&mut child, Duration::from_secs(60), || server.packs() >= 2),
            "two packs were stored before the partition"
        );
        proxy.set_partitioned(true);
        let out = finish(child, Duration::from_secs(120));
        proxy.set_partitioned(false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", r.url);
        assert!(
            stderr.contains("gave up after 2 attempts") && stderr.contains("timed out"),
            "the error says what happened: {stderr}"
        );
        let stored = server.packs();
        assert!(stored >= 2, "{stored}");
        // The repository is sound: nothing half-written is visible.
        r.ok(&["check"]);
        // The next backup records the packs the failed one stored and
        // does not upload their contents again.
        let out = r.run(&["backup", src.to_str().unwrap(), "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let second = json(&out);
        let adopted = second["adopted_packs"].as_u64().unwrap();
        assert!(adopted >= 2, "{second}");
        let total = second["total_bytes"].as_u64().unwrap();
        let added = second["data_added"].as_u64().unwrap();
        assert!(
            added + 2 * 900_000 <= total,
            "at least two packs' worth of data was not uploaded again: {second}"
        );
        restore_and_check(&r, &src, None, "target");
    }
}

// ---------------------------------------------------------------------------
// The server itself killed mid-backup and restarted on the same port.

/// What a backup interrupted by a server restart must leave: either it
/// finished, or it failed with a clear error; either way `check` passes,
/// and the next backup stores little or nothing new.
fn after_a_restart(r: &RemoteEnv, src: &Path, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("retry 1 of"),
        "the backup saw the server go away: {stderr}"
    );
    let finished = match out.status.code() {
        Some(0) => true,
        Some(1) => {
            assert!(
                stderr.contains("gave up after"),
                "a clear error on {}: {stderr}",
                r.url
            );
            false
        }
        other => panic!("backup on {} exited with {other:?}: {stderr}", r.url),
    };
    r.ok(&["check"]);
    let next = r.json(&["backup", src.to_str().unwrap()]);
    let total = next["total_bytes"].as_u64().unwrap();
    let added = next["data_added"].as_u64().unwrap();
    if finished {
        // Only the trees of folders whose metadata changed are new.
        assert!(
            added < 10_000,
            "nothing new after a finished backup: {next}"
        );
    } else {
        assert!(next["adopted_packs"].as_u64().unwrap() >= 1, "{next}");
        assert!(added < total, "{next}");
    }
    restore_and_check(r, src, None, "target");
}

#[test]
fn sshd_killed_mid_backup_and_restarted() {
    let mut sshd = Sshd::start();
    let env = Env::new();
    let repo = env.path("remote/repo");
    let r = RemoteEnv {
        url: sshd.url(&repo),
        vars: sshd.vars(),
        env,
    };
    let src = r.env.path("src");
    make_data(&src, 41, 14, 600_000);
    r.ok(INIT);
    let server = Server::Sftp { repo };
    let mut child = spawn(&r, &["backup", src.to_str().unwrap(), "--json"]);
    assert!(
        wait_until(&mut child, Duration::from_secs(60), || server.packs() >= 1),
        "a pack was stored before the kill"
    );
    sshd.kill();
    assert!(child.try_wait().unwrap().is_none(), "killed mid-backup");
    std::thread::sleep(Duration::from_secs(1));
    sshd.restart();
    let out = finish(child, Duration::from_secs(180));
    after_a_restart(&r, &src, &out);
}

#[test]
fn s3_server_killed_mid_backup_and_restarted() {
    // moto keeps buckets in memory; with its request recorder on, the
    // restarted server replays every request the old one had received
    // whole, so what was stored survives the restart as on a real server.
    // The replay runs after the server listens, so the client reaches it
    // through a proxy that turns connections away until the replay is done
    // (a real server is not reachable before its data is).
    let mut moto = Moto::start_with("127.0.0.1", None, true);
    let proxy = Proxy::start(moto.port);
    let mut vars = moto.vars();
    vars.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    vars.push((
        "AWS_ENDPOINT_URL".into(),
        format!("http://127.0.0.1:{}", proxy.port).into(),
    ));
    let r = RemoteEnv {
        url: "s3://restart/repo".into(),
        vars,
        env: Env::new(),
    };
    let src = r.env.path("src");
    make_data(&src, 51, 14, 600_000);
    r.ok(INIT);
    let mut child = spawn(&r, &["backup", src.to_str().unwrap(), "--json"]);
    {
        let server = Server::S3 {
            moto: &moto,
            bucket: "restart",
        };
        assert!(
            wait_until(&mut child, Duration::from_secs(60), || server.packs() >= 1),
            "a pack was stored before the kill"
        );
    }
    proxy.set_down(true);
    moto.kill();
    assert!(child.try_wait().unwrap().is_none(), "killed mid-backup");
    std::thread::sleep(Duration::from_secs(1));
    moto.restart();
    proxy.set_down(false);
    let out = finish(child, Duration::from_secs(180));
    after_a_restart(&r, &src, &out);
}

// ---------------------------------------------------------------------------
// S3 faults: 503 answers, slow responses, connections cut mid-transfer.

#[test]
fn an_s3_backup_completes_through_503s_slow_answers_and_cut_connections() {
    let p = Proxied::start();
    let data = Env::new();
    let src = data.path("src");
    make_data(&src, 61, 6, 700_000);
    // Here one attempt fails about 40% of the time (a 503 on a quarter of
    // new connections, and a cut every 400 ms that also kills requests on
    // fresh connections). The default 8 attempts then give up on roughly
    // one request in 1,500, which a backup of a few hundred requests meets
    // in a few percent of runs; 12 attempts make that one in 60,000.
    let (r, proxy, _server) = p.s3("faults", &[("KITH_RETRY_ATTEMPTS", "12")]);
    r.ok(INIT);
    proxy.set_latency(Duration::from_millis(30));
    proxy.set_busy(250);
    let mut child = spawn(&r, &["backup", src.to_str().unwrap(), "--json"]);
    let mut cuts = 0;
    while !wait_until(&mut child, Duration::from_millis(400), || false) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        proxy.cut();
        cuts += 1;
    }
    let out = finish(child, Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cuts >= 1, "connections were cut during the backup");
    assert!(proxy.busy_answers() >= 1, "the server answered 503");
    proxy.set_busy(0);
    proxy.set_latency(Duration::ZERO);
    restore_and_check(&r, &src, None, "target");
}

#[test]
fn an_unusable_retry_setting_is_refused_with_its_range() {
    let env = Env::new();
    for (name, value) in [
        ("KITH_RETRY_ATTEMPTS", "0"),
        ("KITH_RETRY_ATTEMPTS", "many"),
        ("KITH_RETRY_TIMEOUT", "-1"),
    ] {
        let out = env
            .cmd()
            .env("KITH_REPOSITORY", "sftp://me@127.0.0.1:1/repo")
            .env(name, value)
            .arg("snapshots")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains(&format!("invalid {name}={value:?}")) && stderr.contains("from 1 to"),
            "{stderr}"
        );
    }
}
