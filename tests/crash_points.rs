//! Crash points: kith killed right after each write of an operation.
//!
//! Every operation that changes the repository is run again and again with
//! `KITH_TEST_CRASH_AFTER_WRITES=n` for n = 1, 2, ... until it completes
//! without reaching its n-th write. After each crash the repository must pass
//! `check` (or pass it after `repair index`), and every snapshot committed
//! before the crash must still restore bit-exact.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use kith_e2e::{assert_same_tree, copy_tree, files_under, Env, Rng};

const CRASH_ENV: &str = "KITH_TEST_CRASH_AFTER_WRITES";
/// No operation here makes more writes than this; a loop that gets there
/// means the crash hook is not working.
const MAX_WRITES: u64 = 200;

/// Committed snapshots (by id) and a copy of the tree each one holds.
struct Ledger {
    trees: BTreeMap<String, PathBuf>,
}

fn write_tree(dir: &Path, rng: &mut Rng, files: usize, max_len: usize) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..files {
        let len = (rng.next_u64() as usize) % max_len + 1;
        let data = rng.bytes(len);
        let name = if i % 3 == 0 {
            format!("sub/f{i}")
        } else {
            format!("f{i}")
        };
        fs::write(dir.join(name), data).unwrap();
    }
}

fn killed(out: &Output) -> bool {
    out.status.signal() == Some(libc::SIGABRT)
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// After a crash: `check` passes, or `repair index` makes it pass; then
/// every snapshot in the ledger is still listed and restores bit-exact.
fn assert_repository_whole(env: &Env, ledger: &Ledger, source: &Path, what: &str) {
    let check = env.run(&["check"]);
    if check.status.code() != Some(0) {
        let repair = env.run(&["repair", "index"]);
        assert_eq!(
            repair.status.code(),
            Some(0),
            "{what}: repair index failed after check failed ({})\n{}",
            describe(&check),
            describe(&repair)
        );
        let again = env.run(&["check"]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "{what}: check still fails after repair index\n{}",
            describe(&again)
        );
    }
    let listed = env.snapshot_ids();
    for (id, tree) in &ledger.trees {
        assert!(
            listed.contains(id),
            "{what}: committed snapshot {id} is gone"
        );
        let target = env.path("restore-check");
        if target.exists() {
            fs::remove_dir_all(&target).unwrap();
        }
        env.ok(&["restore", &id[..12], "--target", target.to_str().unwrap()]);
        assert_same_tree(tree, &Env::restored(&target, source));
        fs::remove_dir_all(&target).unwrap();
    }
}

/// Runs `args` from the same starting state with a crash after its first
/// write, then its second, and so on; after each crash `after_crash`
/// inspects the repository, then repository and cache are put back as they
/// were. Returns the number of crash points and the output of the run that
/// completed (whose effects are kept).
fn crash_everywhere(
    env: &Env,
    args: &[&str],
    extra_env: &[(&str, &str)],
    after_crash: &mut dyn FnMut(&Env, u64),
) -> (u64, Output) {
    let saved = env.path("saved-state");
    if saved.exists() {
        fs::remove_dir_all(&saved).unwrap();
    }
    copy_tree(&env.repo, &saved.join("repo"));
    if env.cache.exists() {
        copy_tree(&env.cache, &saved.join("cache"));
    }
    let restore_state = || {
        fs::remove_dir_all(&env.repo).unwrap();
        copy_tree(&saved.join("repo"), &env.repo);
        if env.cache.exists() {
            fs::remove_dir_all(&env.cache).unwrap();
        }
        if saved.join("cache").exists() {
            copy_tree(&saved.join("cache"), &env.cache);
        }
    };
    for n in 1..=MAX_WRITES {
        let mut cmd = env.cmd();
        cmd.env(CRASH_ENV, n.to_string()).args(args);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        if killed(&out) {
            after_crash(env, n);
            restore_state();
            continue;
        }
        fs::remove_dir_all(&saved).unwrap();
        return (n - 1, out);
    }
    panic!("kith {args:?} still crashing after {MAX_WRITES} writes");
}

fn new_env() -> Env {
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
    env
}

#[test]
fn backups_killed_after_any_write_leave_a_whole_repository_and_lose_no_snapshot() {
    let env = new_env();
    let mut rng = Rng::new(0xC4A5_0001);
    let source = env.path("src");
    write_tree(&source, &mut rng, 9, 900_000);
    let mut ledger = Ledger {
        trees: BTreeMap::new(),
    };
    let src = source.to_str().unwrap().to_owned();

    for round in 0..2 {
        let before = env.snapshot_ids();
        let (crashes, out) = crash_everywhere(&env, &["backup", &src], &[], &mut |env, n| {
            assert_repository_whole(env, &ledger, &source, &format!("backup {round}, crash {n}"));
        });
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(crashes >= 5, "round {round}: only {crashes} write points");
        eprintln!("backup round {round}: {crashes} crash points");
        let after = env.snapshot_ids();
        let new: Vec<_> = after.iter().filter(|id| !before.contains(id)).collect();
        assert_eq!(new.len(), 1, "round {round}: {new:?} committed");
        let copy = env.path(&format!("copy-{round}"));
        copy_tree(&source, &copy);
        for id in new {
            ledger.trees.insert(id.clone(), copy.clone());
        }
        assert_repository_whole(&env, &ledger, &source, &format!("after round {round}"));
        // Change the tree for the next round: new, changed and removed files.
        fs::remove_file(source.join(["f1", "f4"][round])).unwrap();
        fs::write(source.join("f2"), rng.bytes(700_000)).unwrap();
        write_tree(&source.join("more"), &mut rng, 3, 600_000);
    }
}

#[test]
fn forget_and_tag_killed_after_any_write_keep_the_snapshots_they_keep() {
    let env = new_env();
    let mut rng = Rng::new(0xC4A5_0002);
    let source = env.path("src");
    let mut ledger = Ledger {
        trees: BTreeMap::new(),
    };
    for i in 0..3 {
        write_tree(&source, &mut rng, 3, 200_000);
        env.ok(&["backup", source.to_str().unwrap()]);
        let copy = env.path(&format!("copy-{i}"));
        copy_tree(&source, &copy);
        let ids = env.snapshot_ids();
        let id = ids
            .iter()
            .find(|id| !ledger.trees.contains_key(*id))
            .unwrap();
        ledger.trees.insert(id.clone(), copy);
    }
    // The newest snapshot is the one `forget --keep-last 1` keeps; only it
    // must survive every crash (the others may or may not be gone yet).
    let newest = {
        let list = env.json(&["snapshots"]);
        let mut all: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["time"].as_str().unwrap().to_owned(),
                    s["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        all.sort();
        all.last().unwrap().1.clone()
    };
    let kept = Ledger {
        trees: ledger
            .trees
            .iter()
            .filter(|(id, _)| **id == newest)
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect(),
    };
    let (crashes, out) =
        crash_everywhere(&env, &["forget", "--keep-last", "1"], &[], &mut |env, n| {
            assert_repository_whole(env, &kept, &source, &format!("forget, crash {n}"));
        });
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(crashes >= 2, "forget made only {crashes} writes");
    eprintln!("forget: {crashes} crash points");
    assert_eq!(env.snapshot_ids(), vec![newest.clone()]);

    // Tagging rewrites the snapshot under a new id: after any crash there
    // is the old or the new one (or both), never neither.
    let tree = kept.trees[&newest].clone();
    let (_, out) = crash_everywhere(
        &env,
        &["tag", "--add", "precious", &newest[..12]],
        &[],
        &mut |env, n| {
            let ids = env.snapshot_ids();
            assert!(!ids.is_empty(), "tag, crash {n}: no snapshot left");
            for id in ids {
                let target = env.path("tag-restore");
                if target.exists() {
                    fs::remove_dir_all(&target).unwrap();
                }
                env.ok(&["restore", &id[..12], "--target", target.to_str().unwrap()]);
                assert_same_tree(&tree, &Env::restored(&target, &source));
                fs::remove_dir_all(&target).unwrap();
            }
            env.ok(&["check"]);
        },
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn key_changes_killed_after_any_write_leave_a_working_password() {
    let env = new_env();
    let source = env.path("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), b"precious").unwrap();
    env.ok(&["backup", source.to_str().unwrap()]);

    // passwd: after any crash, the old or the new password opens it.
    let (_, out) = crash_everywhere(
        &env,
        &[
            "key",
            "passwd",
            "--kdf-memory",
            "64",
            "--kdf-iterations",
            "1",
        ],
        &[("KITH_NEW_PASSWORD", "second")],
        &mut |env, n| {
            let old = env.run(&["snapshots"]);
            let new = env
                .cmd()
                .env("KITH_PASSWORD", "second")
                .arg("snapshots")
                .output()
                .unwrap();
            assert!(
                old.status.code() == Some(0) || new.status.code() == Some(0),
                "passwd, crash {n}: neither password opens the repository\n{}\n{}",
                describe(&old),
                describe(&new)
            );
        },
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let with_second = |args: &[&str]| {
        env.cmd()
            .env("KITH_PASSWORD", "second")
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(with_second(&["check"]).status.code(), Some(0));

    // add: after any crash, the existing password still works.
    let (_, out) = crash_everywhere(
        &env,
        &["key", "add", "--kdf-memory", "64", "--kdf-iterations", "1"],
        &[("KITH_PASSWORD", "second"), ("KITH_NEW_PASSWORD", "third")],
        &mut |_, n| {
            let o = with_second(&["snapshots"]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "key add, crash {n}: {}",
                describe(&o)
            );
        },
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn prunes_killed_after_any_write_lose_no_kept_snapshot() {
    let env = new_env();
    let mut rng = Rng::new(0xC4A5_0004);
    let source = env.path("src");
    // Three backups of a changing tree: the last one shares some files with
    // the earlier ones, so prune has packs to delete and packs to repack.
    for round in 0..3 {
        write_tree(&source.join(format!("r{round}")), &mut rng, 4, 300_000);
        if round > 0 {
            fs::remove_dir_all(source.join(format!("r{}", round - 1))).unwrap();
        }
        fs::write(source.join("shared"), rng.bytes(200_000)).unwrap();
        env.ok(&["backup", source.to_str().unwrap(), "-q"]);
    }
    env.ok(&["forget", "--keep-last", "1"]);
    let kept_id = env.snapshot_ids().remove(0);
    let copy = env.path("copy");
    copy_tree(&source, &copy);
    let kept = Ledger {
        trees: BTreeMap::from([(kept_id, copy)]),
    };
    let prune = [
        "prune",
        "--stale-after",
        "300ms",
        "--grace",
        "600ms",
        "--max-unused",
        "5%",
    ];
    // The first prune condemns and repacks; the one after the grace period
    // deletes. Every write of both is a crash point.
    for step in ["condemn", "delete"] {
        let (crashes, out) = crash_everywhere(&env, &prune, &[], &mut |env, n| {
            assert_repository_whole(env, &kept, &source, &format!("prune {step}, crash {n}"));
        });
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(crashes >= 2, "prune {step} made only {crashes} writes");
        eprintln!("prune {step}: {crashes} crash points");
        assert_repository_whole(&env, &kept, &source, &format!("after prune {step}"));
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    assert!(
        files_under(&env.repo.join("condemned")).is_empty(),
        "the second prune deleted what the first condemned"
    );
}

#[test]
fn a_master_key_rotation_killed_after_any_write_loses_no_snapshot_and_the_password_still_opens() {
    let env = new_env();
    let mut rng = Rng::new(0xC4A5_0005);
    let source = env.path("src");
    write_tree(&source, &mut rng, 5, 400_000);
    env.ok(&["backup", source.to_str().unwrap(), "-q"]);
    let copy = env.path("copy-before");
    copy_tree(&source, &copy);
    let mut ledger = Ledger {
        trees: env
            .snapshot_ids()
            .into_iter()
            .map(|id| (id, copy.clone()))
            .collect(),
    };

    // After a crash at any write the repository is either not yet rotated
    // or rotated: the password opens it, check passes and every snapshot
    // restores.
    let (crashes, out) = crash_everywhere(&env, &["key", "rotate-master"], &[], &mut |env, n| {
        assert_repository_whole(env, &ledger, &source, &format!("rotate-master, crash {n}"));
    });
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(crashes >= 1, "rotate-master made no write");
    eprintln!("rotate-master: {crashes} crash points");

    // After the rotation: old snapshots restore, new backups deduplicate
    // against them and restore too.
    write_tree(&source.join("after"), &mut rng, 2, 300_000);
    let before = env.snapshot_ids();
    env.ok(&["backup", source.to_str().unwrap(), "-q"]);
    let copy = env.path("copy-after");
    copy_tree(&source, &copy);
    for id in env.snapshot_ids() {
        if !before.contains(&id) {
            ledger.trees.insert(id, copy.clone());
        }
    }
    assert_repository_whole(&env, &ledger, &source, "after rotate-master");
}
