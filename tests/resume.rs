//! A backup killed with SIGKILL in the middle of its uploads: the next run
//! finds the packs it stored and does not upload their blobs again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kith_e2e::{assert_same_tree, files_under, Env, Rng};

#[test]
fn packs_of_a_killed_backup_are_reused_by_the_next_run_not_uploaded_again() {
    let env = Env::new();
    env.ok(&[
        "init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "1",
    ]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(11);
    const FILES: usize = 32;
    const SIZE: usize = 1 << 20;
    for i in 0..FILES {
        fs::write(src.join(format!("f{i:02}")), rng.bytes(SIZE)).unwrap();
    }
    let total = (FILES * SIZE) as u64;

    let mut child = env
        .cmd()
        .args(["backup", src.to_str().unwrap(), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let packs = env.repo.join("packs");
    let started = Instant::now();
    while files_under(&packs).len() < 10 {
        assert!(started.elapsed() < Duration::from_secs(120), "no uploads");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = files_under(&packs).len();
    assert!(
        files_under(&env.repo.join("snapshots")).is_empty(),
        "no snapshot was committed"
    );
    assert!(
        files_under(&env.repo.join("index")).is_empty(),
        "the killed run listed none of its packs in an index delta"
    );

    let second = env.json(&["backup", src.to_str().unwrap()]);
    let added = second["data_added"].as_u64().unwrap();
    let new_packs = files_under(&packs).len() - left;
    eprintln!(
        "killed after {left} packs; the next run added {added} of {total} bytes in {new_packs} packs"
    );
    // Every pack the killed run stored holds about 1 MiB of file data that
    // the next run must not upload again.
    let reused = (left as u64).saturating_sub(1) * (SIZE as u64) * 9 / 10;
    assert!(
        added <= total - reused,
        "added {added} of {total}, though {left} packs were already stored"
    );
    assert!(new_packs <= FILES + 2 - left + 1, "{new_packs} new packs");
    env.ok(&["check", "--read-data"]);
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&target, &src));
}
