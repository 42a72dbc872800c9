//! The same end-to-end flow against a local folder, a real sshd (SFTP) and a
//! real S3 server (moto), all on 127.0.0.1, through the `kith` binary; plus
//! the refusals a remote repository must make clearly: a changed or unknown
//! host key, and S3 credentials the server rejects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kith_e2e::servers::{keygen, Moto, RemoteEnv, Sshd};
use kith_e2e::{assert_same_tree, block_on, files_under, Env, Rng};
use kith_storage::{Backend, Handle, Kind, Retry, RetryPolicy, SftpBackend, SftpConfig};

const INIT: &[&str] = &["init", "--kdf-memory", "64", "--kdf-iterations", "1"];

/// A small tree: a few hundred KiB of random and text data in a few folders.
fn sample(src: &Path, rng: &mut Rng) {
    fs::create_dir_all(src.join("docs/deep")).unwrap();
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("docs/readme.txt"), rng.text(20_000)).unwrap();
    fs::write(src.join("docs/deep/notes.txt"), rng.text(3_000)).unwrap();
    fs::write(src.join("bin/blob"), rng.bytes(600_000)).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("docs/readme.txt", src.join("link")).unwrap();
}

/// init, backup, re-backup, restore bit-exact, check --read-data, key add,
/// then `corrupt` damages one pack and check --read-data must say so.
fn flow(r: &RemoteEnv, corrupt: impl FnOnce()) {
    r.ok(INIT);
    let src = r.env.path("src");
    let mut rng = Rng::new(5);
    sample(&src, &mut rng);
    let first = r.json(&["backup", src.to_str().unwrap()]);
    assert!(first["files_new"].as_u64().unwrap() >= 4, "{first}");
    // A changed and a new file; the unchanged ones are not read again.
    fs::write(src.join("docs/deep/notes.txt"), rng.text(4_000)).unwrap();
    fs::write(src.join("new"), rng.bytes(50_000)).unwrap();
    let second = r.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(second["files_new"], 1, "{second}");
    assert_eq!(second["files_changed"], 1, "{second}");
    let snapshots = r.json(&["snapshots"]);
    assert_eq!(snapshots.as_array().unwrap().len(), 2, "{snapshots}");
    let target = r.env.path("target");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&target, &src));
    r.ok(&["check", "--read-data"]);
    let out = r
        .cmd()
        .env("KITH_NEW_PASSWORD", "second")
        .args(["key", "add", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "key add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = r
        .cmd()
        .env("KITH_PASSWORD", "second")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "the second password opens it");
    corrupt();
    let out = r.run(&["check", "--read-data"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a flipped byte went unnoticed on {}: {}",
        r.url,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Flips one byte in the middle of the largest pack under `repo`.
fn flip_largest_pack(repo: &Path) {
    let pack = files_under(&repo.join("packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a pack");
    let mut data = fs::read(&pack).unwrap();
    let i = data.len() / 2;
    data[i] ^= 0x01;
    fs::write(&pack, data).unwrap();
}

#[test]
fn the_flow_works_on_a_local_folder() {
    let r = RemoteEnv::local();
    let repo = r.env.repo.clone();
    flow(&r, || flip_largest_pack(&repo));
}

#[test]
fn the_flow_works_over_sftp() {
    let sshd = Sshd::start();
    let env = Env::new();
    let repo = env.path("remote/repo");
    let r = RemoteEnv {
        url: sshd.url(&repo),
        vars: sshd.vars(),
        env,
    };
    flow(&r, || flip_largest_pack(&repo));
    // Same layout as a local repository: config, keys, the pack fan-out,
    // and no temporary files left behind.
    assert!(repo.join("config").is_file());
    assert_eq!(fs::read_dir(repo.join("keys")).unwrap().count(), 2);
    assert!(repo.join("packs/00").is_dir() && repo.join("packs/ff").is_dir());
    let leftovers: Vec<_> = files_under(&repo)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_flow_works_over_s3() {
    let moto = Moto::start();
    let r = RemoteEnv {
        url: "s3://kith-test/some/prefix".into(),
        vars: moto.vars(),
        env: Env::new(),
    };
    let s3 = moto.backend("kith-test", "some/prefix");
    flow(&r, || {
        block_on(async {
            let packs = s3.list(Kind::Pack, "").await.unwrap();
            let pack = packs.iter().max_by_key(|o| o.size).expect("a pack");
            let mut data = s3.get(&pack.handle).await.unwrap().to_vec();
            let i = data.len() / 2;
            data[i] ^= 0x01;
            s3.put(&pack.handle, data.into()).await.unwrap();
        })
    });
    // Same layout as a local repository, below the prefix.
    let other = moto.backend("kith-test", "");
    let names = |kind: Kind| block_on(other.list(kind, "")).unwrap().len();
    // Seen from the bucket's root, the repository's objects are not there…
    assert_eq!(names(Kind::Config), 0);
    assert_eq!(names(Kind::Pack), 0);
    // …but below the prefix, each kind is in its folder and packs fan out.
    block_on(async {
        for kind in [Kind::Key, Kind::Index, Kind::Snapshot, Kind::Pack] {
            let list = s3.list(kind, "").await.unwrap();
            assert!(!list.is_empty(), "{kind:?}");
            for o in list {
                let got = s3.stat(&o.handle).await.unwrap();
                assert_eq!(got.size, o.size);
            }
        }
        assert_eq!(s3.list(Kind::Key, "").await.unwrap().len(), 2);
        assert_eq!(
            s3.stat(&Handle::config()).await.unwrap().handle,
            Handle::config()
        );
    });
}

#[test]
fn a_changed_host_key_is_refused() {
    let sshd = Sshd::start();
    let env = Env::new();
    let repo = env.path("remote/repo");
    // Record another key for the server's address.
    let other = sshd.dir.path().join("other_key");
    keygen(&other);
    let pubkey = fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = pubkey.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        sshd.port,
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    let known = env.path("known_hosts");
    fs::write(&known, line).unwrap();
    let mut vars = sshd.vars();
    vars.retain(|(k, _)| k != "KITH_SSH_KNOWN_HOSTS");
    vars.push(("KITH_SSH_KNOWN_HOSTS".into(), known.clone().into()));
    let r = RemoteEnv {
        url: sshd.url(&repo),
        vars,
        env,
    };
    let out = r.run(INIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("host key") && stderr.contains("CHANGED"),
        "{stderr}"
    );
    assert!(!repo.exists(), "nothing was written");
    // An unknown host is refused too, and the message says how to add it.
    fs::write(&known, "").unwrap();
    let out = r.run(INIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown") && stderr.contains("ssh-keyscan"),
        "{stderr}"
    );
    assert!(!repo.exists(), "nothing was written");
}

#[test]
fn a_key_the_server_refuses_is_a_clear_error() {
    let sshd = Sshd::start();
    let env = Env::new();
    let wrong = env.path("wrong_key");
    keygen(&wrong);
    let mut vars = sshd.vars();
    vars.retain(|(k, _)| k != "KITH_SSH_KEY");
    vars.push(("KITH_SSH_KEY".into(), wrong.into()));
    let r = RemoteEnv {
        url: sshd.url(&env.path("remote/repo")),
        vars,
        env,
    };
    let start = Instant::now();
    let out = r.run(INIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains("retry"), "not retried: {stderr}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_s3_auth_failure_is_a_clear_error_without_retries() {
    let moto = Moto::start();
    moto.enforce_auth();
    let r = RemoteEnv {
        url: "s3://kith-test/repo".into(),
        vars: moto.vars(),
        env: Env::new(),
    };
    let start = Instant::now();
    let out = r.run(INIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        stderr.contains("AWS_ACCESS_KEY_ID"),
        "says what to check: {stderr}"
    );
    assert!(!stderr.contains("retry"), "not retried: {stderr}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // The same for a command on an existing repository.
    let out = r.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
}

#[test]
fn bad_repository_urls_are_refused_with_the_forms_to_use() {
    let env = Env::new();
    for url in ["ftp://host/x", "sftp://root@127.0.0.1:0/x", "s3://"] {
        let out = env
            .cmd()
            .env("KITH_REPOSITORY", url)
            .arg("snapshots")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {stderr}");
        assert!(
            stderr.contains("invalid repository location"),
            "{url}: {stderr}"
        );
    }
    // S3 without credentials says which variables to set.
    let out = env
        .cmd()
        .env("KITH_REPOSITORY", "s3://bucket/x")
        .arg("snapshots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AWS_SECRET_ACCESS_KEY"), "{stderr}");
}

#[test]
fn sftp_reconnects_after_the_connection_drops() {
    let sshd = Sshd::start();
    let env = Env::new();
    let repo = env.path("remote/repo");
    let config = SftpConfig {
        user: sshd.user.clone(),
        host: "127.0.0.1".into(),
        port: sshd.port,
        path: repo.display().to_string(),
        key_file: Some(sshd.client_key.clone()),
        known_hosts: sshd.known_hosts.clone(),
        agent: None,
        home: None,
    };
    let policy = RetryPolicy {
        attempts: 5,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    let b = Retry::with_policy(SftpBackend::new(config), policy);
    block_on(async {
        b.create().await.unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let h = Handle::new(Kind::Pack, "ab01").unwrap();
        b.put(&h, data.clone().into()).await.unwrap();
        assert!(sshd.drop_connections() >= 1, "a connection was open");
        // The next calls find the connection dead, reconnect and succeed.
        assert_eq!(&b.get(&h).await.unwrap()[..], &data[..]);
        assert_eq!(
            &b.get_range(&h, 999_000, 1_000).await.unwrap()[..],
            &data[999_000..]
        );
        assert!(sshd.drop_connections() >= 1, "a connection was open");
        let h2 = Handle::new(Kind::Pack, "ab02").unwrap();
        b.put(&h2, data.clone().into()).await.unwrap();
        let listed = b.list(Kind::Pack, "ab").await.unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        // Past the end is a short read, not a retried failure.
        let e = b.get_range(&h, 999_999, 2).await.unwrap_err();
        assert!(matches!(e, kith_storage::Error::ShortRead { .. }), "{e}");
        assert!(b
            .get(&Handle::new(Kind::Pack, "cd").unwrap())
            .await
            .unwrap_err()
            .is_not_found());
    });
    assert_eq!(
        fs::read(repo.join("packs/ab/ab02")).unwrap().len(),
        1_000_000
    );
}

/// The backend contract on a remote backend: a listing that spans several
/// pages (the S3 test sets 100 keys a page, OpenSSH answers readdir about
/// 100 names at a time), many transfers in flight at once (more than the
/// server has file handles for), prefixes, ranges, deletes.
async fn exercise(b: std::sync::Arc<dyn Backend>, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let b = b.clone();
        tasks.spawn(async move {
            let h = Handle::new(Kind::Snapshot, format!("s{i:04}")).unwrap();
            b.put(&h, vec![(i % 256) as u8; i % 300].into())
                .await
                .unwrap();
        });
    }
    for i in 0..40u32 {
        let b = b.clone();
        tasks.spawn(async move {
            let name = format!("{:02x}{i:04}", (i * 37) % 256);
            let data: Vec<u8> = (0..200_000u32).map(|x| (x ^ i) as u8).collect();
            let h = Handle::new(Kind::Pack, name).unwrap();
            b.put(&h, data.into()).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let all = b.list(Kind::Snapshot, "").await.unwrap();
    assert_eq!(all.len(), n);
    for o in &all {
        let i: usize = o.handle.name()[1..].parse().unwrap();
        assert_eq!(o.size, (i % 300) as u64, "{}", o.handle);
    }
    assert_eq!(b.list(Kind::Snapshot, "s01").await.unwrap().len(), 100);
    assert_eq!(b.list(Kind::Snapshot, "s020").await.unwrap().len(), 10);
    let packs = b.list(Kind::Pack, "").await.unwrap();
    assert_eq!(packs.len(), 40);
    let first = packs[0].handle.name()[..2].to_owned();
    let same_fan = packs
        .iter()
        .filter(|p| p.handle.name().starts_with(&first))
        .count();
    assert_eq!(b.list(Kind::Pack, &first).await.unwrap().len(), same_fan);
    assert!(b.list(Kind::Index, "").await.unwrap().is_empty());
    // Ranged reads of every pack at once.
    let mut reads = tokio::task::JoinSet::new();
    for p in packs {
        let b = b.clone();
        reads.spawn(async move {
            let i: u32 = p.handle.name()[2..].parse().unwrap();
            let got = b.get_range(&p.handle, 150_000, 40_000).await.unwrap();
            let want: Vec<u8> = (150_000..190_000u32).map(|x| (x ^ i) as u8).collect();
            assert_eq!(&got[..], &want[..], "{}", p.handle);
            let e = b.get_range(&p.handle, 199_999, 2).await.unwrap_err();
            assert!(matches!(e, kith_storage::Error::ShortRead { .. }), "{e}");
        });
    }
    while let Some(r) = reads.join_next().await {
        r.unwrap();
    }
    let h = Handle::new(Kind::Snapshot, "s0007").unwrap();
    assert_eq!(b.stat(&h).await.unwrap().size, 7);
    b.delete(&h).await.unwrap();
    b.delete(&h).await.unwrap();
    assert!(b.stat(&h).await.unwrap_err().is_not_found());
    assert!(b.get(&h).await.unwrap_err().is_not_found());
    assert_eq!(b.list(Kind::Snapshot, "").await.unwrap().len(), n - 1);
}

fn block_on_multi<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn the_sftp_backend_keeps_the_contract_under_concurrency() {
    let sshd = Sshd::start();
    let env = Env::new();
    let config = SftpConfig {
        user: sshd.user.clone(),
        host: "127.0.0.1".into(),
        port: sshd.port,
        path: env.path("remote/repo").display().to_string(),
        key_file: Some(sshd.client_key.clone()),
        known_hosts: sshd.known_hosts.clone(),
        agent: None,
        home: None,
    };
    let b: std::sync::Arc<dyn Backend> = std::sync::Arc::new(Retry::new(SftpBackend::new(config)));
    block_on_multi(async {
        b.create().await.unwrap();
        exercise(b, 1100).await;
    });
}

#[test]
fn the_s3_backend_keeps_the_contract_under_concurrency() {
    let moto = Moto::start();
    let s3 = moto.backend("contract", "p").with_page_size(100);
    let b: std::sync::Arc<dyn Backend> = std::sync::Arc::new(Retry::new(s3));
    block_on_multi(async {
        b.create().await.unwrap();
        exercise(b, 250).await;
    });
}

#[test]
fn sftp_logs_in_with_the_ssh_agent() {
    let sshd = Sshd::start();
    let env = Env::new();
    let sock = env.path("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start ssh-agent (openssh-client)");
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ssh-agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&sshd.client_key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let r = RemoteEnv {
        url: sshd.url(&env.path("remote/repo")),
        vars: vec![
            ("SSH_AUTH_SOCK".into(), sock.clone().into()),
            (
                "KITH_SSH_KNOWN_HOSTS".into(),
                sshd.known_hosts.clone().into(),
            ),
        ],
        env,
    };
    r.ok(INIT);
    r.ok(&["snapshots"]);
    let _ = agent.kill();
    let _ = agent.wait();
    // Without the agent and without a key, the message says what to set.
    let out = r.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("KITH_SSH_KEY"), "{stderr}");
}

#[test]
fn a_backup_over_sftp_survives_dropped_connections() {
    let sshd = Sshd::start();
    let env = Env::new();
    let repo = env.path("remote/repo");
    let r = RemoteEnv {
        url: sshd.url(&repo),
        vars: sshd.vars(),
        env,
    };
    r.ok(INIT);
    let src = r.env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(99);
    for i in 0..8 {
        fs::write(src.join(format!("f{i}")), rng.bytes(2_500_000)).unwrap();
    }
    // Kill every SSH connection three times, 400 ms apart, while the
    // backup runs: each kill breaks the transfers in flight, which are
    // retried on a new connection.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let kills = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let mut kills = 0;
            for _ in 0..3 {
                for _ in 0..40 {
                    std::thread::sleep(Duration::from_millis(10));
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return kills;
                    }
                }
                kills += sshd.drop_connections();
            }
            kills
        });
        let out = r.run(&["backup", src.to_str().unwrap()]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let kills = killer.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        kills
    });
    // A dropped connection is noticed at once, not after a timeout.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(
        kills >= 1,
        "the backup outlived at least one dropped connection"
    );
    let target = r.env.path("target");
    r.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&target, &src));
}
