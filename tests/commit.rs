//! A backup whose process is suspended past the staleness limit while a
//! prune condemns and deletes the packs it relies on: at commit it stores
//! those blobs again from the source files, and the snapshot is whole.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kith_e2e::{assert_same_tree, files_under, Env, Rng};

const STALE: &str = "200ms";
const GRACE: &str = "400ms";

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// `kith backup src --json` with the test's staleness limit, output piped.
fn backup(env: &Env, src: &Path) -> std::process::Command {
    let mut cmd = env.cmd();
    cmd.args([
        "backup",
        src.to_str().unwrap(),
        "--json",
        "--stale-after",
        STALE,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Resumes the suspended backup, which must commit; then `check
/// --read-data` passes and the latest snapshot restores `src` bit-exact.
fn resume_and_verify(env: &Env, child: Child, src: &Path) {
    signal(&child, "-CONT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["check", "--read-data"]);
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(src, &Env::restored(&target, src));
}

/// Starts `kith backup src --json` and stops it once its session marker is
/// written (it has loaded the index and is uploading).
fn start_and_suspend(env: &Env, src: &Path) -> Child {
    let mut child = backup(env, src).spawn().unwrap();
    let sessions = env.repo.join("sessions");
    let started = Instant::now();
    while files_under(&sessions).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no session appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended too soon"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let the walker pass the unchanged files (they come before `zbig`).
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-STOP");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended before it could be suspended"
    );
    child
}

/// Forgets every snapshot, then prunes twice a grace period apart, so the
/// packs holding the old data are condemned and then deleted while the
/// suspended backup still relies on them.
fn forget_and_prune_everything(env: &Env) -> u64 {
    // The suspended backup's session must look abandoned first.
    std::thread::sleep(Duration::from_millis(300));
    env.ok(&[
        "forget",
        "--keep-tag",
        "none",
        "--group-by",
        "",
        "--stale-after",
        STALE,
    ]);
    let first = env.json(&["prune", "--stale-after", STALE, "--grace", GRACE]);
    assert!(
        !first["condemned"].as_array().unwrap().is_empty(),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = env.json(&["prune", "--stale-after", STALE, "--grace", GRACE]);
    let deleted = second["deleted"].as_array().unwrap().len() as u64;
    assert!(deleted >= 1, "{second}");
    deleted
}

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let mut rng = Rng::new(7);
    fs::write(src.join("kept"), rng.bytes(300_000)).unwrap();
    fs::write(src.join("sub/also"), rng.text(200_000)).unwrap();
    src
}

#[test]
fn a_backup_suspended_while_its_packs_are_deleted_stores_them_again_at_commit() {
    let env = Env::init();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    // New data makes the second backup take a while; the old files it
    // deduplicates against the first backup's packs.
    fs::write(src.join("zbig"), Rng::new(8).bytes(12 << 20)).unwrap();
    let child = start_and_suspend(&env, &src);
    forget_and_prune_everything(&env);
    resume_and_verify(&env, child, &src);
}

#[test]
fn a_source_that_changed_meanwhile_is_reported_and_left_out_never_dangling() {
    let env = Env::init();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    fs::write(src.join("zbig"), Rng::new(9).bytes(12 << 20)).unwrap();
    let child = start_and_suspend(&env, &src);
    forget_and_prune_everything(&env);
    // The file the suspended backup deduplicated changes before it wakes.
    fs::write(src.join("kept"), b"different now").unwrap();
    signal(&child, "-CONT");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let failed = report["failed"].as_array().unwrap();
    assert!(
        failed
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with("/src/kept")),
        "{report}"
    );
    env.ok(&["check", "--read-data"]);
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = Env::restored(&target, &src);
    assert!(!restored.join("kept").exists(), "left out, not dangling");
    assert_eq!(
        fs::read(restored.join("sub/also")).unwrap(),
        fs::read(src.join("sub/also")).unwrap()
    );
    assert_eq!(
        fs::read(restored.join("zbig")).unwrap(),
        fs::read(src.join("zbig")).unwrap()
    );
}

/// Whether the process is stopped (state `T` in /proc).
fn is_stopped(child: &Child) -> bool {
    let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
}

#[test]
fn a_backup_suspended_between_its_packs_and_its_index_delta_lists_no_deleted_pack() {
    let env = Env::init();
    let src = source(&env);
    fs::write(src.join("zbig"), Rng::new(10).bytes(3 << 20)).unwrap();
    // The backup stops itself once its packs are stored, right before it
    // lists them in its index delta.
    let mut child = backup(&env, &src)
        .env("KITH_TEST_STOP_BEFORE_PUT", "index")
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !is_stopped(&child) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended without stopping before its index delta"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Its session looks abandoned: one prune condemns the packs nothing
    // uses yet, the next deletes them a grace period later.
    std::thread::sleep(Duration::from_millis(300));
    let first = env.json(&["prune", "--stale-after", STALE, "--grace", GRACE]);
    assert!(
        !first["condemned"].as_array().unwrap().is_empty(),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = env.json(&["prune", "--stale-after", STALE, "--grace", GRACE]);
    assert!(
        !second["deleted"].as_array().unwrap().is_empty(),
        "{second}"
    );
    // No index delta names a deleted pack, and the snapshot is whole.
    resume_and_verify(&env, child, &src);
}
