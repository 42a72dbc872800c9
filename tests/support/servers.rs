//! Real servers on 127.0.0.1 for the remote-backend tests: OpenSSH's sshd
//! (SFTP) and moto's S3 server, each started by the test that needs it and
//! stopped when dropped. A server that cannot start fails the test with a
//! message that says how to install it; nothing is skipped.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Env;

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free port on 127.0.0.1")
}

/// A command for `program` that the kernel kills when the test that started
/// it dies (`setpriv --pdeathsig KILL`, from util-linux, when present), so a
/// test killed by a timeout leaves no server behind.
fn server_command(program: &Path) -> Command {
    let setpriv = Path::new("/usr/bin/setpriv");
    if setpriv.exists() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// `name` found on `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `host:port` accepts connections, seen from network namespace
/// `netns` (the test's own when `None`).
pub fn reachable(netns: Option<&str>, host: &str, port: u16) -> bool {
    match netns {
        None => TcpStream::connect((host, port)).is_ok(),
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{host}/{port}"))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// `program` started inside network namespace `netns` when given.
fn command_in(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        None => server_command(program),
        Some(ns) => {
            // `ip netns exec` execs its command in place, so the server
            // keeps the test as its parent and setpriv's death signal holds.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            let setpriv = Path::new("/usr/bin/setpriv");
            if setpriv.exists() {
                c.arg(setpriv).args(["--pdeathsig", "KILL", "--"]);
            }
            c.arg(program);
            c
        }
    }
}

/// Waits until `host:port` accepts connections, or the child exits, or 15 s pass.
fn wait_for_port(
    child: &mut Child,
    (netns, host, port): (Option<&str>, &str, u16),
    what: &str,
    log: &Path,
) {
    let start = Instant::now();
    loop {
        if reachable(netns, host, port) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before listening on {host}:{port}:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!(
                "{what} did not listen on {host}:{port} within 15 s:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what}: {e} (scripts/test installs openssh-server)")
    });
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes an ed25519 key pair at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kith-test", "-f"])
            .arg(path),
        "ssh-keygen",
    );
}

/// An sshd on 127.0.0.1 (or an address of a test's network namespace)
/// with a fresh host key, accepting one fresh client key for the current
/// user; SFTP through `internal-sftp`.
pub struct Sshd {
    child: Child,
    config: PathBuf,
    log: PathBuf,
    /// The address it listens on.
    pub host: String,
    /// The network namespace it runs in (`None`: the test's own).
    pub netns: Option<String>,
    /// Its folder: keys, config, log.
    pub dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
    /// The client's private key (give it as `KITH_SSH_KEY`).
    pub client_key: PathBuf,
    /// A known_hosts file with the server's host key.
    pub known_hosts: PathBuf,
    /// The user to log in as.
    pub user: String,
}

impl Sshd {
    /// Starts the server on 127.0.0.1; panics with a clear message when it
    /// cannot.
    pub fn start() -> Sshd {
        Self::start_at("127.0.0.1", None)
    }

    /// Starts the server on `host`, inside network namespace `netns` when
    /// given.
    pub fn start_at(host: &str, netns: Option<&str>) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: install it with `apt-get install -y openssh-server` (scripts/test does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("kith-sshd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let host_key = d.join("host_key");
        let client_key = d.join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        // sshd refuses to start without its privilege separation folder.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let port = free_port();
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        let config = d.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress {host}\n\
                 HostKey {hk}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {ak}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AllowUsers {user}\n\
                 MaxSessions 64\n\
                 MaxStartups 64:30:128\n\
                 Subsystem sftp internal-sftp\n\
                 LogLevel ERROR\n",
                hk = host_key.display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .expect("write sshd_config");
        let host_pub = fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let mut fields = host_pub.split_whitespace();
        let (alg, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let known_hosts = d.join("known_hosts");
        fs::write(&known_hosts, format!("[{host}]:{port} {alg} {key}\n")).expect("known_hosts");
        let log = d.join("sshd.log");
        let child = Self::spawn(netns, host, port, &config, &log);
        Sshd {
            child,
            config,
            log,
            host: host.to_owned(),
            netns: netns.map(str::to_owned),
            dir,
            port,
            client_key,
            known_hosts,
            user,
        }
    }

    fn spawn(netns: Option<&str>, host: &str, port: u16, config: &Path, log: &Path) -> Child {
        let mut child = command_in(netns, Path::new("/usr/sbin/sshd"))
            .args(["-D", "-e", "-f"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("sshd log"),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start /usr/sbin/sshd: {e}"));
        wait_for_port(&mut child, (netns, host, port), "sshd", log);
        child
    }

    /// The URL of a repository at `path` (absolute) on this server.
    pub fn url(&self, path: &Path) -> String {
        self.url_via(&self.host, self.port, path)
    }

    /// The URL of a repository at `path` on this server, reached through
    /// `host:port` (a proxy in front of it).
    pub fn url_via(&self, host: &str, port: u16, path: &Path) -> String {
        format!("sftp://{}@{host}:{port}{}", self.user, path.display())
    }

    /// Records the server's host key for `host:port` as well (a proxy in
    /// front of it), in the known_hosts file of [`Sshd::vars`].
    pub fn trust_via(&self, host: &str, port: u16) {
        let line = fs::read_to_string(&self.known_hosts).expect("known_hosts");
        let key = line.split_once(' ').map(|(_, k)| k).unwrap_or("").trim();
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.known_hosts)
            .expect("known_hosts");
        writeln!(f, "[{host}]:{port} {key}").expect("known_hosts");
    }

    /// Kills the server and every connection it serves, as a crash would.
    pub fn kill(&mut self) {
        self.drop_connections();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again, on the same port with the same keys.
    pub fn restart(&mut self) {
        self.child = Self::spawn(
            self.netns.as_deref(),
            &self.host,
            self.port,
            &self.config,
            &self.log,
        );
    }

    /// The environment `kith` needs to log in.
    pub fn vars(&self) -> Vec<(String, OsString)> {
        vec![
            ("KITH_SSH_KEY".into(), self.client_key.clone().into()),
            (
                "KITH_SSH_KNOWN_HOSTS".into(),
                self.known_hosts.clone().into(),
            ),
        ]
    }
}

impl Sshd {
    /// Kills the server's per-connection processes, so every open SSH
    /// connection drops; the listening server stays up. Returns how many
    /// processes were killed.
    pub fn drop_connections(&self) -> usize {
        let master = self.child.id().to_string();
        let mut killed = 0;
        for entry in fs::read_dir("/proc").expect("read /proc") {
            let Ok(entry) = entry else { continue };
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
            let ppid = after.split_whitespace().nth(1).unwrap_or("");
            if ppid == master
                && Command::new("kill")
                    .args(["-9", &pid])
                    .status()
                    .is_ok_and(|s| s.success())
            {
                killed += 1;
            }
        }
        killed
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The moto S3 server on 127.0.0.1 (or an address of a test's network
/// namespace), in memory.
pub struct Moto {
    child: Child,
    dir: tempfile::TempDir,
    /// The address it listens on.
    pub host: String,
    /// The network namespace it runs in (`None`: the test's own).
    pub netns: Option<String>,
    /// The port it listens on.
    pub port: u16,
    recording: bool,
}

impl Moto {
    /// Starts the server on 127.0.0.1; panics with a clear message when it
    /// cannot.
    pub fn start() -> Moto {
        Self::start_with("127.0.0.1", None, false)
    }

    /// Starts the server on `host`, inside network namespace `netns` when
    /// given. With `recording`, moto appends every request it receives
    /// whole (body included) to a file, which [`Moto::restart`] replays:
    /// moto keeps buckets in memory only, and replaying what it was sent is
    /// how its contents survive a restart.
    pub fn start_with(host: &str, netns: Option<&str>, recording: bool) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("kith-moto-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let child = Self::spawn(dir.path(), netns, host, port, recording);
        Moto {
            child,
            dir,
            host: host.to_owned(),
            netns: netns.map(str::to_owned),
            port,
            recording,
        }
    }

    fn spawn(dir: &Path, netns: Option<&str>, host: &str, port: u16, recording: bool) -> Child {
        let (program, pre): (PathBuf, &[&str]) = match find_in_path("moto_server") {
            Some(p) => (p, &[]),
            None => (
                find_in_path("python3").unwrap_or_else(|| "python3".into()),
                &["-m", "moto.server"],
            ),
        };
        let append = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .expect("moto log")
        };
        let mut cmd = command_in(netns, &program);
        cmd.args(pre)
            .args(["-H", host, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(append("moto.log"))
            .stderr(append("moto.err"));
        if recording {
            cmd.env("MOTO_ENABLE_RECORDING", "True")
                .env("MOTO_RECORDER_FILEPATH", dir.join("recording.jsonl"));
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server: {e}; install it with \
                 `python3 -m pip install 'moto[server]'` (scripts/test does)"
            )
        });
        wait_for_port(
            &mut child,
            (netns, host, port),
            "moto_server",
            &dir.join("moto.err"),
        );
        child
    }

    /// Kills the server, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port. A recording server gets
    /// back what it held by replaying every request it had received.
    pub fn restart(&mut self) {
        self.child = Self::spawn(
            self.dir.path(),
            self.netns.as_deref(),
            &self.host,
            self.port,
            self.recording,
        );
        if self.recording {
            assert!(self.netns.is_none(), "replay goes through 127.0.0.1");
            // moto appends each request as a JSON line, in two writes
            // (object, then newline) that concurrent requests interleave,
            // so two objects can share a line; and a kill mid-append
            // leaves a partial last object. Rewrite it one whole object a
            // line: the partial one is dropped, like a write a crashed
            // server had not finished.
            let log = self.dir.path().join("recording.jsonl");
            let raw = fs::read(&log).unwrap_or_default();
            let mut clean = Vec::with_capacity(raw.len());
            for value in serde_json::Deserializer::from_slice(&raw).into_iter::<serde_json::Value>()
            {
                let Ok(value) = value else { break };
                serde_json::to_writer(&mut clean, &value).expect("encode");
                clean.push(b'\n');
            }
            fs::write(&log, clean).expect("rewrite the recording");
            let (status, body) = http(
                self.port,
                "POST",
                "/moto-api/recorder/replay-recording",
                b"",
            );
            assert_eq!(
                status,
                200,
                "replay: {}\n{}",
                String::from_utf8_lossy(&body),
                fs::read_to_string(self.dir.path().join("moto.err")).unwrap_or_default()
            );
        }
    }

    /// The endpoint URL (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The environment `kith` needs.
    pub fn vars(&self) -> Vec<(String, OsString)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint().into()),
            ("AWS_ACCESS_KEY_ID".into(), "kithtest".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "kithtestsecret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// A client of this server that goes to it directly, with the
    /// credentials `kith` gets from [`Moto::vars`].
    pub fn backend(&self, bucket: &str, prefix: &str) -> kith_storage::S3Backend {
        kith_storage::S3Backend::new(kith_storage::S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            access_key: Some("kithtest".into()),
            secret_key: Some("kithtestsecret".into()),
            session_token: None,
        })
        .expect("an S3 client for the test server")
    }

    /// Turns on credential checks: from now on every request with a key
    /// that moto's IAM does not know is refused with 403.
    pub fn enforce_auth(&self) {
        let (status, body) = http(self.port, "POST", "/moto-api/reset-auth", b"0");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; returns status and body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    (status, body)
}

/// A scratch [`Env`] whose `kith` runs against `url` with extra variables.
pub struct RemoteEnv {
    /// The scratch folder, cache and password.
    pub env: Env,
    /// The repository location given as `KITH_REPOSITORY`.
    pub url: String,
    /// Extra environment (credentials, endpoints).
    pub vars: Vec<(String, OsString)>,
}

impl RemoteEnv {
    /// A local repository, for the same flow as the remote ones.
    pub fn local() -> RemoteEnv {
        let env = Env::new();
        let url = env.repo.display().to_string();
        RemoteEnv {
            env,
            url,
            vars: Vec::new(),
        }
    }

    /// `kith` with the repository URL and the extra environment.
    pub fn cmd(&self) -> Command {
        self.cmd_in(None)
    }

    /// [`RemoteEnv::cmd`] run inside network namespace `netns` when given.
    pub fn cmd_in(&self, netns: Option<&str>) -> Command {
        let mut c = self.env.cmd_in(netns);
        c.env("KITH_REPOSITORY", &self.url);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs `kith ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run kith")
    }

    /// Runs `kith ARGS`, asserting the exit code; returns stdout.
    pub fn expect_code(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "kith {args:?} on {} exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            self.url,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kith ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect_code(args, 0)
    }

    /// Runs `kith ARGS --json` successfully and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("invalid JSON ({e}):\n{out}"))
    }
}
