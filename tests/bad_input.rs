//! Bad input gets a clear message and a documented exit code, and never
//! leaves the repository in a state that `check` rejects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use kith_e2e::{is_root, kith_bin, Env, Rng};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_wrong_password_exits_12_with_a_clear_message() {
    let env = Env::init();
    let out = env
        .cmd()
        .env("KITH_PASSWORD", "wrong")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(
        stderr_of(&out).contains("wrong password"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_missing_repository_exits_10_and_names_init() {
    let env = Env::new();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(stderr_of(&out).contains("kith init"), "{}", stderr_of(&out));
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::init();
    let out = env.run(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("already exists"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn backup_init_creates_the_repository_on_first_use() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let out = env.run(&[
        "backup",
        "--init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        src.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("kith1-"),
        "the paper key is shown once"
    );
    env.ok(&["check"]);
}

#[test]
fn unknown_and_ambiguous_snapshots_exit_13() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let out = env.run(&["ls", "latest"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr_of(&out));
    for i in 0..20 {
        fs::write(src.join("f"), format!("{i}")).unwrap();
        env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    }
    let out = env.run(&["ls", "deadbeefdeadbeef"]);
    assert_eq!(out.status.code(), Some(13));
    assert!(stderr_of(&out).contains("no snapshot matches"));
    // With 20 snapshots, some one-digit prefix is shared by two of them.
    let ids = env.snapshot_ids();
    let shared = "0123456789abcdef"
        .chars()
        .find(|c| ids.iter().filter(|id| id.starts_with(*c)).count() > 1)
        .unwrap();
    let out = env.run(&["ls", &shared.to_string()]);
    assert_eq!(out.status.code(), Some(13));
    assert!(stderr_of(&out).contains("matches"), "{}", stderr_of(&out));
    let out = env.run(&["ls", "latest", "/no/such/path"]);
    assert_eq!(out.status.code(), Some(13));
}

#[test]
fn restore_refuses_a_target_that_is_not_empty() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("busy");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("keep"), b"mine").unwrap();
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(14));
    assert!(stderr_of(&out).contains("not empty"));
    assert_eq!(fs::read(target.join("keep")).unwrap(), b"mine");
}

#[test]
fn an_unreadable_file_is_skipped_and_the_backup_exits_3() {
    assert!(
        is_root(),
        "this test drops privileges with setpriv and needs root"
    );
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("readable"), b"fine").unwrap();
    fs::write(src.join("secret"), b"no").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let run_as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(kith_bin())
            .args(args);
        c.env("KITH_REPOSITORY", &env.repo)
            .env("KITH_CACHE_DIR", &env.cache)
            .env("KITH_PASSWORD", &env.password)
            .env("HOME", env.dir.path());
        c.output().expect("setpriv (util-linux) runs")
    };
    let out = run_as_nobody(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = run_as_nobody(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("secret"),
        "the unreadable file is named: {}",
        stderr_of(&out)
    );
    let out = run_as_nobody(&["ls", "latest"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("readable") && !listing.contains("secret"),
        "{listing}"
    );
    let out = run_as_nobody(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn a_backup_into_a_full_disk_fails_cleanly_and_the_next_one_completes() {
    assert!(is_root(), "this test mounts a small tmpfs and needs root");
    let env = Env::new();
    let mnt = env.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=20m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    // Something else fills most of the disk, leaving about 8 MiB.
    let ballast = mnt.join("ballast");
    fs::write(&ballast, vec![0xA5u8; 12 * 1024 * 1024]).unwrap();
    let repo = mnt.join("repo");
    let env_small = |args: &[&str]| {
        env.cmd()
            .env("KITH_REPOSITORY", &repo)
            .args(args)
            .output()
            .unwrap()
    };
    let out = env_small(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), Rng::new(7).bytes(12 * 1024 * 1024)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    let out = env_small(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no space left"),
        "{}",
        stderr_of(&out)
    );
    let out = env_small(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check passes after the failed backup: {}",
        stderr_of(&out)
    );
    // Space is freed: the same backup now completes and restores bit-exact.
    fs::remove_file(&ballast).unwrap();
    let out = env_small(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = env_small(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let target = env.path("out");
    let out = env_small(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let restored = Env::restored(&target, &src);
    assert!(fs::read(restored.join("big")).unwrap() == fs::read(src.join("big")).unwrap());
    assert_eq!(fs::read(restored.join("small")).unwrap(), b"small");
}

#[test]
fn a_file_that_vanishes_before_it_is_read_is_reported_not_fatal() {
    // A FIFO stands in for entries that are not regular files; a broken
    // symlink for a target that vanished. Neither stops the backup.
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("kept"), b"k").unwrap();
    std::os::unix::fs::symlink(src.join("gone"), src.join("link-to-gone")).unwrap();
    let status = Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let restored = Env::restored(&target, &src);
    assert!(restored.join("kept").exists());
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(restored.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo(),
        "pipes are restored"
    );
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    assert_eq!(env.run(&["restore", "latest"]).status.code(), Some(2));
    assert_eq!(env.run(&["no-such-command"]).status.code(), Some(2));
    let env = Env::init();
    let out = env.run(&["check", "--read-data-subset", "abc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("percentage"));
}
