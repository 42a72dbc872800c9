//! `kith prune` and `kith forget --prune` through the binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kith_e2e::{assert_same_tree, files_under, Env, Rng};
use kith_engine::{lock, Credentials, Repository};

/// Short staleness and grace, so that tests wait milliseconds, not days.
/// Short enough for a test, long enough that a prune busy repacking on a
/// loaded machine keeps its lock fresh (a prune whose lock lapses stops
/// with exit 11 before condemning anything).
const FAST: [&str; 4] = ["--stale-after", "1s", "--grace", "1s"];

fn prune(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["prune"];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    env.json(&args)
}

fn count(v: &serde_json::Value, field: &str) -> usize {
    v[field].as_array().unwrap().len()
}

fn packs(env: &Env) -> Vec<std::path::PathBuf> {
    files_under(&env.repo.join("packs"))
}

fn restore_latest_matches(env: &Env, src: &Path, name: &str) {
    let target = env.path(name);
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(src, &Env::restored(&target, src));
}

#[test]
fn unused_packs_are_condemned_first_and_deleted_only_after_the_grace_period() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(1);
    fs::write(src.join("old"), rng.bytes(300_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    fs::remove_file(src.join("old")).unwrap();
    fs::write(src.join("new"), rng.bytes(300_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    env.ok(&["forget", "--keep-last", "1"]);
    let before = packs(&env);

    let dry = prune(&env, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(count(&dry, "condemned") >= 1, "{dry}");
    assert_eq!(packs(&env), before, "a dry run changes nothing");
    assert!(files_under(&env.repo.join("condemned")).is_empty());

    let first = prune(&env, &[]);
    assert_eq!(count(&first, "condemned"), count(&dry, "condemned"));
    assert_eq!(count(&first, "deleted"), 0, "nothing is deleted at once");
    assert_eq!(
        packs(&env),
        before,
        "condemned packs stay for the grace period"
    );
    assert_eq!(files_under(&env.repo.join("condemned")).len(), 1);
    env.ok(&["check", "--read-data"]);

    let soon = prune(&env, &[]);
    assert_eq!(
        count(&soon, "deleted"),
        0,
        "still within the grace period: {soon}"
    );
    assert_eq!(count(&soon, "waiting"), count(&first, "condemned"));

    std::thread::sleep(Duration::from_millis(1100));
    let later = prune(&env, &[]);
    assert_eq!(
        count(&later, "deleted"),
        count(&first, "condemned"),
        "{later}"
    );
    assert_eq!(packs(&env).len(), before.len() - count(&first, "condemned"));
    assert!(files_under(&env.repo.join("condemned")).is_empty());
    env.ok(&["check", "--read-data"]);
    restore_latest_matches(&env, &src, "out");
}

#[test]
fn partly_used_packs_above_the_threshold_are_repacked() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(2);
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), rng.bytes(100_000)).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    for i in 0..3 {
        fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    env.ok(&["forget", "--keep-last", "1"]);
    let kept = prune(&env, &["--max-unused", "100%"]);
    assert_eq!(
        count(&kept, "repacked"),
        0,
        "nothing is over a 100% threshold"
    );
    let report = prune(&env, &["--max-unused", "5%"]);
    assert!(count(&report, "repacked") >= 1, "{report}");
    assert!(report["packs_written"].as_u64().unwrap() >= 1);
    assert!(report["blobs_repacked"].as_u64().unwrap() >= 3);
    env.ok(&["check", "--read-data"]);
    restore_latest_matches(&env, &src, "out1");
    std::thread::sleep(Duration::from_millis(1100));
    let after = prune(&env, &[]);
    assert!(
        count(&after, "deleted") >= count(&report, "repacked"),
        "{after}"
    );
    env.ok(&["check", "--read-data"]);
    restore_latest_matches(&env, &src, "out2");
}

#[test]
fn condemned_data_is_not_deduplicated_against_and_a_new_backup_stores_it_again() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), Rng::new(3).bytes(200_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    let id = env.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.ok(&["forget", &id]);
    let condemned = prune(&env, &[]);
    assert!(count(&condemned, "condemned") >= 1);
    let again = env.json(&["backup", src.to_str().unwrap()]);
    assert!(
        again["data_added"].as_u64().unwrap() >= 200_000,
        "the blobs of condemned packs are stored again: {again}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let deleted = prune(&env, &[]);
    assert_eq!(count(&deleted, "deleted"), count(&condemned, "condemned"));
    env.ok(&["check", "--read-data"]);
    restore_latest_matches(&env, &src, "out");
}

#[test]
fn forget_with_prune_prunes_right_after() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join("f"), Rng::new(10 + i).bytes(50_000)).unwrap();
        env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    }
    let mut args = vec!["forget", "--keep-last", "1", "--prune"];
    args.extend_from_slice(&FAST);
    let out = env.json(&args);
    assert_eq!(out["removed"].as_array().unwrap().len(), 2);
    assert!(count(&out["prune"], "condemned") >= 1, "{out}");
    let text = env.ok(&["forget", "--keep-last", "1", "--prune", "--dry-run"]);
    assert!(text.contains("dry run"), "{text}");
    env.ok(&["check"]);
}

#[test]
fn prune_refuses_with_exit_11_while_a_fresh_backup_runs_and_expires_stale_sessions() {
    let env = Env::init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let repo = rt
        .block_on(Repository::open(
            Arc::new(kith_storage::LocalBackend::new(&env.repo)),
            &Credentials::Password(env.password.clone()),
            None,
        ))
        .unwrap();
    let _session = rt.block_on(lock::start_session(&repo, "backup")).unwrap();
    let out = env.run(&["prune", "--stale-after", "1h", "--grace", "1h"]);
    assert_eq!(out.status.code(), Some(11));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup") && stderr.contains("locked"),
        "{stderr}"
    );
    // The session is never refreshed: with a short staleness limit it is
    // abandoned, and the prune removes it.
    std::thread::sleep(Duration::from_millis(1100));
    let report = prune(&env, &[]);
    assert_eq!(report["stale_records_removed"], 1, "{report}");
    assert!(files_under(&env.repo.join("sessions")).is_empty());
}

#[test]
fn bad_prune_arguments_are_usage_errors() {
    let env = Env::init();
    for args in [
        vec!["prune", "--max-unused", "150%"],
        vec!["prune", "--grace", "soon"],
        vec!["prune", "--stale-after", "1h", "--grace", "1min"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
}
