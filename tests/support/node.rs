//! Real `kith node run` processes for tests: a node folder, the daemon
//! child, and the CLI pointed at it. Nodes listen on 127.0.0.1 (or inside a
//! test's network namespace) on ports picked free by the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::kith_bin;

/// How long a test waits for a node to reach a state before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Polls `cond` every 200 ms until it holds, failing the test with `what`
/// after [`PATIENCE`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A node folder and, while it runs, its daemon.
pub struct TestNode {
    /// The node folder.
    pub dir: PathBuf,
    /// The namespace it runs in, if any.
    pub netns: Option<String>,
    /// Extra environment for the daemon (e.g. `KITH_NODE_FAULT`).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl TestNode {
    /// `kith node init --dir DIR` with `args` (listen, quota, ...) and a
    /// one-second redial interval.
    pub fn init(dir: &Path, args: &[&str]) -> TestNode {
        let node = TestNode {
            dir: dir.to_path_buf(),
            netns: None,
            env: Vec::new(),
            child: None,
            log: dir.with_extension("log"),
        };
        let mut a = vec!["node", "init", "--dir", dir.to_str().expect("utf-8 path")];
        a.extend_from_slice(args);
        node.ok(&a);
        let cfg = dir.join("node.toml");
        let mut text = std::fs::read_to_string(&cfg).expect("read node.toml");
        text = text.replace("redial_secs = 30", "redial_secs = 1");
        std::fs::write(&cfg, text).expect("write node.toml");
        node
    }

    /// A node listening on 127.0.0.1 at a free port, with `quota`.
    pub fn local(dir: &Path, quota: &str) -> TestNode {
        let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
        Self::init(dir, &["--listen", &listen, "--quota", quota])
    }

    /// The CLI, with `KITH_NODE_DIR` set to this node.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(kith_bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.parent().unwrap_or(&self.dir))
            .env("KITH_NODE_DIR", &self.dir)
            .stdin(Stdio::null());
        c
    }

    /// Runs `kith ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run kith")
    }

    /// Runs `kith ARGS`, asserting exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kith {args:?} exited with {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kith ARGS --json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("JSON on stdout")
    }

    /// Starts `kith node run` and waits until its control socket answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = std::fs::File::create(&self.log).expect("create node log");
        let mut c = match &self.netns {
            None => Command::new(kith_bin()),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kith_bin());
                c
            }
        };
        c.args(["node", "run", "--dir"])
            .arg(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KITH_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(c.spawn().expect("spawn kith node run"));
        let dir = self.dir.display().to_string();
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {dir} exited with {status}; see {}",
                    self.log.display()
                );
            }
            if self.info()["running"] == serde_json::Value::Bool(true) {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "node {dir} did not answer");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kith node info --json`.
    pub fn info(&self) -> serde_json::Value {
        let dir = self.dir.to_str().expect("utf-8 path");
        self.json(&["node", "info", "--dir", dir])
    }

    /// The peer id.
    pub fn peer_id(&self) -> String {
        self.info()["peer_id"].as_str().expect("peer_id").to_owned()
    }

    /// `kith peer list --json`.
    pub fn peers(&self) -> Vec<serde_json::Value> {
        self.json(&["peer", "list"])
            .as_array()
            .expect("a JSON array")
            .clone()
    }

    /// The entry of `peer` in `kith peer list --json`.
    pub fn peer(&self, peer: &str) -> Option<serde_json::Value> {
        self.peers().into_iter().find(|p| p["peer_id"] == peer)
    }

    /// Makes this node and `other` friends (invite here, add there) and
    /// waits until each sees the other connected.
    pub fn befriend(&self, other: &TestNode) {
        let code = self.ok(&["peer", "invite"]);
        other.ok(&["peer", "add", code.trim()]);
        let (a, b) = (self.peer_id(), other.peer_id());
        wait_for("friends to connect", || {
            let here = self.peer(&b).is_some_and(|p| p["state"] == "connected");
            let there = other.peer(&a).is_some_and(|p| p["state"] == "connected");
            here && there
        });
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        signal(&child, libc_sigterm());
        child.wait().expect("wait for node")
    }

    /// Kills the daemon with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the daemon (SIGSTOP): its sockets stay open but it answers
    /// nothing, like a machine that lost power or its link.
    pub fn freeze(&self) {
        signal(self.child.as_ref().expect("node running"), SIGSTOP);
    }

    /// Lets a frozen daemon run again (SIGCONT).
    pub fn thaw(&self) {
        signal(self.child.as_ref().expect("node running"), SIGCONT);
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

const fn libc_sigterm() -> i32 {
    15
}

/// Signal numbers on Linux (x86-64 and aarch64).
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

fn signal(child: &Child, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}
