//! The verbs and habits restic and borg users expect: profiles, password
//! commands, copies between repositories, the name index of find, and
//! bad input to each verb (a clear message and a documented exit code).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::Output;

use kith_e2e::{assert_same_tree, Env, Rng};

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn some_files(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("a.txt"), rng.text(10_000)).unwrap();
    fs::write(root.join("sub/b.bin"), rng.bytes(300_000)).unwrap();
    fs::write(root.join("sub/deeper/c.bin"), rng.bytes(2_500_000)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
}

/// A second repository in the same scratch folder.
fn other_repo(env: &Env, name: &str) -> std::path::PathBuf {
    let repo = env.path(name);
    let out = env
        .cmd()
        .env("KITH_REPOSITORY", &repo)
        .args(["init", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    repo
}

#[test]
fn a_profile_supplies_repository_password_command_paths_and_retention() {
    let env = Env::init();
    let src = env.path("src");
    some_files(&src, 1);
    fs::write(src.join("skip.tmp"), b"left out").unwrap();
    let config = env.path("config.toml");
    fs::write(
        &config,
        format!(
            "[profiles.home]\nrepository = {:?}\npassword_command = \"echo '{}'\"\npaths = [{:?}]\nexcludes = [\"*.tmp\"]\n\
             [profiles.home.retention]\nkeep_last = 1\n",
            env.repo.display().to_string(),
            env.password,
            src.display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        env.cmd()
            .env_remove("KITH_REPOSITORY")
            .env_remove("KITH_PASSWORD")
            .env("KITH_CONFIG", &config)
            .args(args)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let out = run(&["--profile", "home", "backup", "-q"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    }
    let out = run(&["--profile", "home", "ls", "latest", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("deeper/c.bin"));
    assert!(
        !listing.contains("skip.tmp"),
        "the profile's excludes apply"
    );
    // forget with the profile's retention keeps the newest one.
    let out = run(&["--profile", "home", "forget", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    // An explicit flag wins over the profile: another repository.
    let other = env.path("nowhere");
    let out = run(&[
        "--profile",
        "home",
        "-r",
        other.to_str().unwrap(),
        "snapshots",
    ]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr_of(&out));
    // The profile can also come from KITH_PROFILE.
    let out = env
        .cmd()
        .env_remove("KITH_REPOSITORY")
        .env_remove("KITH_PASSWORD")
        .env("KITH_CONFIG", &config)
        .env("KITH_PROFILE", "home")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn a_wrong_profile_name_or_a_bad_config_file_exits_2_and_names_the_profiles() {
    let env = Env::init();
    let config = env.path("config.toml");
    fs::write(&config, "[profiles.home]\nrepository = \"/r\"\n").unwrap();
    let out = env
        .cmd()
        .env("KITH_CONFIG", &config)
        .args(["--profile", "hmoe", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("no profile \"hmoe\"") && err.contains("home"),
        "{err}"
    );
    fs::write(&config, "[profiles.home]\nrepo = \"/r\"\n").unwrap();
    let out = env
        .cmd()
        .env("KITH_CONFIG", &config)
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("not valid"), "{}", stderr_of(&out));
    let out = env
        .cmd()
        .args(["--config", "/no/such/kith.toml", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("does not exist"));
    // backup with neither paths nor a profile.
    let out = env.run(&["backup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("nothing to back up"));
}

#[test]
fn a_password_command_unlocks_and_a_failing_one_is_a_clear_error() {
    let env = Env::init();
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .args([
            "--password-command",
            &format!("printf '%s\\n' '{}'", env.password),
            "snapshots",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .env("KITH_PASSWORD_COMMAND", "exit 3")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("password command failed"),
        "{}",
        stderr_of(&out)
    );
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .env("KITH_PASSWORD_COMMAND", "echo wrong")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
}

#[test]
fn copy_re_encrypts_for_the_target_records_the_original_and_never_duplicates() {
    let env = Env::init();
    let src = env.path("src");
    some_files(&src, 2);
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    fs::write(src.join("a.txt"), b"changed").unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    let source = env.json(&["snapshots"]);
    let first = source[0]["id"].as_str().unwrap().to_owned();
    let target = other_repo(&env, "target");
    let copy = |args: &[&str]| {
        env.cmd()
            .env("KITH_REPOSITORY", &target)
            .env("KITH_FROM_REPOSITORY", &env.repo)
            .env("KITH_FROM_PASSWORD", &env.password)
            .args(["copy", "--json"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = copy(&[&first[..8]]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    assert_eq!(report["copied"][0]["original"], first.as_str());
    // Again, and all of them: the first is skipped, the second copied.
    let out = copy(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1, "{report}");
    let out = copy(&[]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 0, "{report}");
    let in_target = |args: &[&str]| {
        env.cmd()
            .env("KITH_REPOSITORY", &target)
            .args(args)
            .output()
            .unwrap()
    };
    let out = in_target(&["snapshots", "--json"]);
    let copies: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(copies.as_array().unwrap().len(), 2);
    assert_eq!(copies[0]["original"], first.as_str());
    // The newest copy restores bit-exact, and the target checks clean with its data read.
    let dest = env.path("restored");
    let out = in_target(&["restore", "latest", "--target", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_same_tree(&src, &Env::restored(&dest, &src));
    let out = in_target(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // The source's key does not open the target's data: the copy is re-encrypted.
    let target_packs: Vec<_> = walk_names(&target.join("packs"));
    let source_packs: Vec<_> = walk_names(&env.repo.join("packs"));
    assert!(target_packs.iter().all(|p| !source_packs.contains(p)));
    // An unknown snapshot of the source: exit 13.
    let out = copy(&["deadbeef"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr_of(&out));
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_names(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn a_second_find_reads_names_from_the_cache_not_from_the_packs() {
    let env = Env::init();
    let src = env.path("src");
    some_files(&src, 3);
    fs::write(src.join("sub/Quarterly Réport.ods"), b"q").unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    let first = env.json(&["find", "quartrly"]);
    assert!(first[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("sub/Quarterly Réport.ods"));
    // Without any pack the trees cannot be read: only the name index answers.
    fs::rename(env.repo.join("packs"), env.path("packs-away")).unwrap();
    let second = env.json(&["find", "quartrly"]);
    assert_eq!(first, second);
    let globbed = env.json(&["find", "*.BIN"]);
    assert_eq!(globbed.as_array().unwrap().len(), 2);
    // Without the cache, find reads the trees again (and fails without packs).
    fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(&["find", "quartrly"]);
    assert_ne!(out.status.code(), Some(0));
    fs::rename(env.path("packs-away"), env.repo.join("packs")).unwrap();
    assert_eq!(env.json(&["find", "quartrly"]), first);
}

#[test]
fn every_verb_answers_an_unknown_or_ambiguous_snapshot_with_exit_13() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        fs::write(src.join("f"), format!("{i}")).unwrap();
        env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    }
    let ids = env.snapshot_ids();
    let shared = "0123456789abcdef"
        .chars()
        .find(|c| ids.iter().filter(|id| id.starts_with(*c)).count() > 1)
        .unwrap()
        .to_string();
    let target = env.path("t");
    for bad in ["deadbeefdead", shared.as_str()] {
        for args in [
            vec!["ls", bad],
            vec!["restore", bad, "--target", target.to_str().unwrap()],
            vec!["diff", bad, "latest"],
            vec!["diff", "latest", bad],
            vec!["tag", bad, "--add", "x"],
            vec!["cat", "snapshot", bad],
            vec!["forget", bad],
        ] {
            let out = env.run(&args);
            assert_eq!(out.status.code(), Some(13), "{args:?}: {}", stderr_of(&out));
            let err = stderr_of(&out);
            assert!(
                err.contains("no snapshot matches") || err.contains("matches"),
                "{args:?}: {err}"
            );
        }
    }
    // A pattern that matches nothing: 13; a broken glob: 1.
    let out = env.run(&["find", "qqqqzzzzxxxx"]);
    assert_eq!(out.status.code(), Some(13));
    let out = env.run(&["find", "a["]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("pattern"), "{}", stderr_of(&out));
}

#[test]
fn after_a_master_key_rotation_old_and_new_snapshots_restore_and_check_passes() {
    let env = Env::init();
    let src = env.path("src");
    some_files(&src, 4);
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    let old_master = env.ok(&["key", "export-master"]).trim().to_owned();
    let before = env.path("before");
    fs::create_dir_all(&before).unwrap();
    env.ok(&["restore", "latest", "--target", before.to_str().unwrap()]);
    let other_pw = env.path("other-pw");
    fs::write(&other_pw, "second password\n").unwrap();
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        other_pw.to_str().unwrap(),
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    let rotated = env.json(&[
        "key",
        "rotate-master",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    let new_master = rotated["master_key"].as_str().unwrap().to_owned();
    assert_ne!(new_master, old_master);
    // New data after the rotation.
    fs::write(src.join("after.txt"), b"written after the rotation").unwrap();
    fs::write(src.join("sub/b.bin"), Rng::new(9).bytes(200_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    let snaps = env.json(&["snapshots"]);
    let first = snaps[0]["id"].as_str().unwrap().to_owned();
    let old = env.path("old");
    env.ok(&["restore", &first, "--target", old.to_str().unwrap()]);
    assert_same_tree(&before, &old);
    let new = env.path("new");
    env.ok(&["restore", "latest", "--target", new.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&new, &src));
    env.ok(&["check", "--read-data"]);
    // The other key is gone, the old paper key is refused, the new one opens.
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .env("KITH_MASTER_KEY", &old_master)
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .env("KITH_MASTER_KEY", &new_master)
        .args(["check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // Rotating again keeps both earlier generations readable.
    env.json(&[
        "key",
        "rotate-master",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    let again = env.path("again");
    env.ok(&["restore", &first, "--target", again.to_str().unwrap()]);
    assert_same_tree(&before, &again);
    env.ok(&["check", "--read-data"]);
}
