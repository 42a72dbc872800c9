//! Helpers for end-to-end tests: a scratch repository, the `kith` binary
//! with its environment, data generators and tree comparison.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod netns;
pub mod node;
pub mod proxy;
pub mod servers;

/// The `kith` binary: `$KITH_BIN`, or the one built beside this test.
pub fn kith_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KITH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/kith
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("kith");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p kith-cli` (the test script does)",
        bin.display()
    );
    bin
}

/// A scratch folder with a repository location, a cache and a password.
pub struct Env {
    /// The scratch folder; everything lives below it.
    pub dir: tempfile::TempDir,
    /// The repository folder.
    pub repo: PathBuf,
    /// The cache folder.
    pub cache: PathBuf,
    /// The password.
    pub password: String,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A scratch folder without a repository yet.
    pub fn new() -> Self {
        // KITH_TEST_KEEP=1 keeps the folder for a look after a failure.
        let keep = std::env::var_os("KITH_TEST_KEEP").is_some_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix("kith-e2e-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env {
            dir,
            repo,
            cache,
            password: "correct horse".into(),
        }
    }

    /// A scratch folder with an initialised repository.
    pub fn init() -> Self {
        let env = Self::new();
        env.ok(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
        env
    }

    /// A path inside the scratch folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `kith` with this repository, cache and password in its environment.
    pub fn cmd(&self) -> Command {
        self.cmd_in(None)
    }

    /// [`Env::cmd`] run inside network namespace `netns` when given.
    pub fn cmd_in(&self, netns: Option<&str>) -> Command {
        let mut c = match netns {
            None => Command::new(kith_bin()),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kith_bin());
                c
            }
        };
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("KITH_REPOSITORY", &self.repo)
            .env("KITH_CACHE_DIR", &self.cache)
            .env("KITH_PASSWORD", &self.password)
            .stdin(std::process::Stdio::null());
        c
    }

    /// Runs `kith ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run kith")
    }

    /// Runs `kith ARGS`, asserting exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect_code(args, 0)
    }

    /// Runs `kith ARGS`, asserting the exit code; returns stdout.
    pub fn expect_code(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "kith {args:?} exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kith ARGS --json` successfully and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kith {a:?} printed invalid JSON ({e}):\n{out}"))
    }

    /// The full ids of the repository's snapshots, as `kith snapshots` lists them.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Where a restore of `source` into `target` puts it.
    pub fn restored(target: &Path, source: &Path) -> PathBuf {
        target.join(source.strip_prefix("/").unwrap())
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// `n` compressible bytes.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "alpha ", "beta ", "gamma ", "delta\n", "kith ", "backup ", "pack ", "tree ",
        ];
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(WORDS[(self.next_u64() % 8) as usize].as_bytes());
        }
        v.truncate(n);
        v
    }
}

/// What a tree comparison looks at for one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// A folder with its mode.
    Dir { mode: u32 },
    /// A file with mode, mtime and content.
    File {
        mode: u32,
        mtime: i64,
        content: Vec<u8>,
    },
    /// A symbolic link.
    Link { target: PathBuf },
}

/// Every entry under `root`, by relative path.
pub fn snapshot_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let entry = if m.file_type().is_symlink() {
                Entry::Link {
                    target: fs::read_link(&p).unwrap(),
                }
            } else if m.is_dir() {
                stack.push(p.clone());
                Entry::Dir {
                    mode: m.permissions().mode() & 0o7777,
                }
            } else {
                Entry::File {
                    mode: m.permissions().mode() & 0o7777,
                    mtime: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    content: fs::read(&p).unwrap(),
                }
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// Asserts two trees hold the same entries, contents, modes, mtimes and links.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let left = snapshot_tree(a);
    let right = snapshot_tree(b);
    let lk: Vec<_> = left.keys().collect();
    let rk: Vec<_> = right.keys().collect();
    assert_eq!(
        lk,
        rk,
        "different entries under {} and {}",
        a.display(),
        b.display()
    );
    for (k, l) in &left {
        let r = &right[k];
        match (l, r) {
            (Entry::File { content: lc, .. }, Entry::File { content: rc, .. }) if lc != rc => {
                panic!(
                    "{} differs in content ({} vs {} bytes)",
                    k.display(),
                    lc.len(),
                    rc.len()
                )
            }
            (
                Entry::File {
                    mode: lm,
                    mtime: lt,
                    ..
                },
                Entry::File {
                    mode: rm,
                    mtime: rt,
                    ..
                },
            ) => assert!(
                (lm, lt) == (rm, rt),
                "{} differs: mode {lm:o} vs {rm:o}, mtime {lt} vs {rt}",
                k.display()
            ),
            _ => assert_eq!(l, r, "{} differs", k.display()),
        }
    }
}

/// Copies the tree `from` into `to` (created), keeping file modes and
/// modification times, so the copy compares equal with [`assert_same_tree`].
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
            let mtime = filetime::FileTime::from_last_modification_time(&entry.metadata().unwrap());
            filetime::set_file_mtime(&dest, mtime).unwrap();
        }
    }
}

/// Every file below `dir`, sorted; none when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Whether this process runs as root (some tests drop privileges with setpriv).
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs `f` to completion on a runtime of its own, for tests that call the
/// storage crate's async API directly.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}
