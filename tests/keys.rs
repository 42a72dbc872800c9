//! Passwords, write-only keys and the master key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;

use kith_e2e::{assert_same_tree, Env};

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"precious").unwrap();
    src
}

#[test]
fn several_passwords_open_the_repository_and_keys_can_be_removed() {
    let env = Env::init();
    let out = env
        .cmd()
        .env("KITH_NEW_PASSWORD", "second")
        .args(["key", "add", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let out = env
        .cmd()
        .env("KITH_PASSWORD", "second")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Remove the first key while opened with the second.
    let first = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = env
        .cmd()
        .env("KITH_PASSWORD", "second")
        .args(["key", "remove", &first[..8]])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.run(&["snapshots"]).status.code(),
        Some(12),
        "the removed password no longer opens it"
    );
    // The key in use cannot be removed.
    let out = env
        .cmd()
        .env("KITH_PASSWORD", "second")
        .args(["key", "list", "--json"])
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let current = keys[0]["id"].as_str().unwrap().to_owned();
    let out = env
        .cmd()
        .env("KITH_PASSWORD", "second")
        .args(["key", "remove", &current])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn passwd_replaces_the_password() {
    let env = Env::init();
    let pw_file = env.path("newpw");
    fs::write(&pw_file, "fresh\n").unwrap();
    env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        pw_file.to_str().unwrap(),
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
    ]);
    assert_eq!(env.run(&["snapshots"]).status.code(), Some(12));
    let out = env
        .cmd()
        .env("KITH_PASSWORD", "fresh")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .env("KITH_PASSWORD_FILE", &pw_file)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_write_only_key_backs_up_but_cannot_read_back() {
    let env = Env::init();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let out = env
        .cmd()
        .env("KITH_NEW_PASSWORD", "appender")
        .args([
            "key",
            "add",
            "--write-only",
            "--kdf-memory",
            "64",
            "--kdf-iterations",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let wo = |args: &[&str]| {
        env.cmd()
            .env("KITH_PASSWORD", "appender")
            .env("KITH_CACHE_DIR", env.path("wo-cache"))
            .args(args)
            .output()
            .unwrap()
    };
    fs::write(src.join("g"), b"added by the write-only machine").unwrap();
    let out = wo(&["backup", src.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        &["snapshots"][..],
        &["ls", "latest"],
        &["restore", "latest", "--target", "/tmp/never"],
        &["check"],
        &["key", "export-master"],
    ] {
        let out = wo(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} must be refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("can only add backups"),
            "{args:?}"
        );
    }
    // The full key reads what the write-only key wrote.
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&target, &src));
    env.ok(&["check", "--read-data"]);
}

#[test]
fn the_master_key_alone_restores_everything() {
    let env = Env::init();
    let src = source(&env);
    env.ok(&["backup", src.to_str().unwrap()]);
    let paper = env.ok(&["key", "export-master"]);
    let paper = paper.trim();
    assert!(paper.starts_with("kith1-"), "{paper}");
    let target = env.path("out");
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .env("KITH_MASTER_KEY", paper)
        .env("KITH_CACHE_DIR", env.path("fresh-cache"))
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &Env::restored(&target, &src));
    // A file works as well, and another repository's key is refused.
    let key_file = env.path("paper.txt");
    fs::write(&key_file, format!("{paper}\n")).unwrap();
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .args(["snapshots", "--master-key-file", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let other = Env::init();
    let other_paper = other.ok(&["key", "export-master"]);
    let out = env
        .cmd()
        .env_remove("KITH_PASSWORD")
        .env("KITH_MASTER_KEY", other_paper.trim())
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(12),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
