//! `kith mount`, for real: FUSE through /dev/fuse, as root. Mounts,
//! reads files bit-exact through every layout, lists folders, refuses
//! unusable mount points, and unmounts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kith_e2e::{assert_same_tree, Env, Rng};

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `kith mount`, unmounted (and waited for) on drop.
struct Mounted {
    child: Option<Child>,
    at: PathBuf,
}

impl Mounted {
    fn start(env: &Env, at: &Path) -> Self {
        let child = env
            .cmd()
            .args(["mount", at.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            at: at.to_owned(),
        };
        // Wait for the mount to answer (not a timing assertion: a bound on
        // how long a broken mount may hang the test).
        let start = Instant::now();
        while !at.join("ids").exists() {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let out = m.child.take().unwrap().wait_with_output().unwrap();
                panic!("kith mount exited with {status}: {}", stderr_of(&out));
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the mount never appeared"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// Unmounts with fusermount3 and returns kith's output.
    fn unmount(mut self) -> Output {
        let status = Command::new("fusermount3")
            .args(["-u", self.at.to_str().unwrap()])
            .status()
            .expect("fusermount3 (from Debian's fuse3 package; scripts/test installs it)");
        assert!(status.success(), "fusermount3 -u failed");
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z", self.at.to_str().unwrap()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn files(root: &Path) {
    let mut rng = Rng::new(77);
    fs::create_dir_all(root.join("docs/deep")).unwrap();
    fs::write(root.join("docs/notes.txt"), rng.text(50_000)).unwrap();
    // Several chunks, so reads cross blob boundaries.
    fs::write(root.join("docs/deep/big.bin"), rng.bytes(5_000_000)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("docs/notes.txt", root.join("link")).unwrap();
}

#[test]
fn snapshots_mount_read_only_by_id_host_and_date_and_read_bit_exact() {
    let env = Env::init();
    let src = env.path("src");
    files(&src);
    env.ok(&["backup", src.to_str().unwrap(), "--host", "laptop", "-q"]);
    let snaps = env.json(&["snapshots"]);
    let short = snaps[0]["short_id"].as_str().unwrap().to_owned();
    let mp = env.path("mnt");
    fs::create_dir(&mp).unwrap();
    let m = Mounted::start(&env, &mp);

    let inside = |root: PathBuf| root.join(src.strip_prefix("/").unwrap());
    // By id: the whole tree is the same, bit for bit.
    assert_same_tree(&src, &inside(mp.join("ids").join(&short)));
    // By host and date, and latest.
    let hosts: Vec<_> = fs::read_dir(mp.join("hosts"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(hosts, vec![std::ffi::OsString::from("laptop")]);
    let dates: Vec<_> = fs::read_dir(mp.join("hosts/laptop"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dates.len(), 1);
    assert_eq!(
        fs::read(inside(dates[0].clone()).join("docs/deep/big.bin")).unwrap(),
        fs::read(src.join("docs/deep/big.bin")).unwrap()
    );
    assert_eq!(fs::read_dir(mp.join("dates")).unwrap().count(), 1);
    assert_eq!(
        fs::read(inside(mp.join("latest")).join("docs/notes.txt")).unwrap(),
        fs::read(src.join("docs/notes.txt")).unwrap()
    );
    // Read-only.
    assert!(fs::write(inside(mp.join("latest")).join("new"), b"x").is_err());

    // The same mount point again: in use, exit 15.
    let out = env.run(&["mount", mp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(15), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("in use"), "{}", stderr_of(&out));

    let out = m.unmount();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(!mp.join("ids").exists(), "unmounted");
}

#[test]
fn a_mount_point_that_is_missing_a_file_or_not_empty_exits_15() {
    let env = Env::init();
    let file = env.path("file");
    fs::write(&file, b"x").unwrap();
    let full = env.path("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("inside"), b"x").unwrap();
    for (at, says) in [
        (env.path("missing"), "cannot be used"),
        (file, "not a folder"),
        (full, "not empty"),
    ] {
        let out = env.run(&["mount", at.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(15), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains(says), "{}", stderr_of(&out));
    }
}

#[test]
fn sigterm_unmounts_and_exits_0() {
    let env = Env::init();
    let src = env.path("src");
    files(&src);
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    let mp = env.path("mnt");
    fs::create_dir(&mp).unwrap();
    let mut m = Mounted::start(&env, &mp);
    let child = m.child.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(!mp.join("ids").exists(), "unmounted");
}
