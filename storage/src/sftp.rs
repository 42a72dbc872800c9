//! A repository on an SFTP server, over a native SSH client.
//!
//! Layout: exactly the local backend's ([`Handle::relative_path`]) below the
//! URL's path. Writes go to a hidden temporary name in the target folder and
//! are renamed over the final name with the `posix-rename@openssh.com`
//! extension (or a plain rename when the server lacks it), so a reader never
//! sees a partial object under its final name. Reads and writes are split
//! into chunks that are pipelined: many requests are in flight at once on the
//! one SFTP channel, and concurrent calls share it, so latency does not
//! serialise transfers.
//!
//! The connection is opened on first use. When it breaks, the backend drops
//! it and reports a transient [`Error::Connection`]; the next call (a retry
//! of [`crate::Retry`]) opens a new one.
//!
//! Authentication: the key file in `KITH_SSH_KEY`, else the keys of the
//! ssh-agent at `SSH_AUTH_SOCK`, else `~/.ssh/id_ed25519`, `id_ecdsa`,
//! `id_rsa`. The server's host key must be in `KITH_SSH_KNOWN_HOSTS` (or
//! `~/.ssh/known_hosts`); an unknown or changed key is refused.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::sync::Mutex;

use crate::{Backend, Error, Handle, Kind, ObjectInfo, Result};

/// The size of one read or write request; OpenSSH serves up to 256 KiB.
const CHUNK: u64 = 64 * 1024;
/// Requests in flight per transfer.
const IN_FLIGHT: usize = 32;
/// Files and folders open at once on one connection; further calls wait
/// for a turn. This must stay below 128: OpenSSH's handles are 4-byte
/// big-endian numbers, and russh-sftp 3.0 decodes handles as UTF-8 text,
/// lossily, so handle number 128 and above is mangled and the server
/// answers "Failure" (seen with 1100 concurrent puts).
const OPEN_FILES: usize = 100;
/// SSH connections per backend, used in turn. Each connection's encryption
/// runs in one task on each side (and OpenSSH serves one SFTP session in
/// one process), so two connections let both ends use two cores.
const CONNECTIONS: usize = 2;

/// Where an SFTP repository lives and how to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpConfig {
    /// The user to log in as.
    pub user: String,
    /// The server's host name or address.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// The repository folder on the server (absolute, or relative to the
    /// login folder).
    pub path: String,
    /// A private key file (`KITH_SSH_KEY`).
    pub key_file: Option<PathBuf>,
    /// The known_hosts file (`KITH_SSH_KNOWN_HOSTS`, default
    /// `~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
    /// The ssh-agent socket (`SSH_AUTH_SOCK`).
    pub agent: Option<PathBuf>,
    /// The user's home folder, for default key files.
    pub home: Option<PathBuf>,
}

impl SftpConfig {
    /// The configuration of `sftp://user@host:port/path` from the
    /// environment.
    pub fn from_env(user: &str, host: &str, port: u16, path: &str) -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let known_hosts = var("KITH_SSH_KNOWN_HOSTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                home.clone()
                    .unwrap_or_else(|| PathBuf::from("/"))
                    .join(".ssh/known_hosts")
            });
        SftpConfig {
            user: user.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            key_file: var("KITH_SSH_KEY").map(PathBuf::from),
            known_hosts,
            agent: var("SSH_AUTH_SOCK").map(PathBuf::from),
            home,
        }
    }

    fn host_port(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// Checks the server's host key against known_hosts.
struct Client {
    config: Arc<SftpConfig>,
    refusal: Arc<std::sync::Mutex<Option<String>>>,
    /// Dropped with the handler when the connection's task ends, which
    /// wakes every call waiting on [`Conn::closed`].
    _alive: tokio::sync::watch::Sender<()>,
}

impl Client {
    fn refuse(&self, message: String) -> std::result::Result<bool, russh::Error> {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(message);
        }
        Ok(false)
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return self.refuse("host certificates are not supported".into())
            }
        };
        let file = self.config.known_hosts.display().to_string();
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let algorithm = key.algorithm();
        match russh::keys::check_known_hosts_path(
            &self.config.host,
            self.config.port,
            key,
            &self.config.known_hosts,
        ) {
            Ok(true) => Ok(true),
            Ok(false) => self.refuse(format!(
                "the host key is unknown ({algorithm} {fingerprint}) and not in {file}; \
                 if it is right, add it with `ssh-keyscan -p {} {} >> {file}` \
                 (or point KITH_SSH_KNOWN_HOSTS at a file that has it)",
                self.config.port, self.config.host
            )),
            Err(russh::keys::Error::KeyChanged { line }) => self.refuse(format!(
                "the host key CHANGED: the server now shows {algorithm} {fingerprint}, \
                 which differs from line {line} of {file}; someone may be intercepting \
                 the connection. If the change is expected, remove that line and add the new key"
            )),
            Err(e) => self.refuse(format!("cannot check {file}: {e}")),
        }
    }
}

/// One open SSH connection with its SFTP channel.
struct Conn {
    ssh: client::Handle<Client>,
    sftp: RawSftpSession,
    /// Whether the server has `posix-rename@openssh.com`.
    posix_rename: bool,
    /// The repository folder, canonical.
    root: String,
    /// Ends (with an error) when the connection is gone.
    closed: tokio::sync::watch::Receiver<()>,
}

/// Closes a server-side handle if the call that opened it is dropped
/// before closing it (a timeout of the retry layer cancels calls), so
/// cancelled calls do not pile up open handles on the server.
struct CloseOnDrop {
    conn: Arc<Conn>,
    handle: Option<String>,
}

impl CloseOnDrop {
    fn new(conn: &Arc<Conn>, handle: &str) -> Self {
        CloseOnDrop {
            conn: conn.clone(),
            handle: Some(handle.to_owned()),
        }
    }

    /// The caller closes the handle itself.
    fn disarm(&mut self) {
        self.handle = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let conn = self.conn.clone();
                runtime.spawn(async move {
                    let _ = conn.sftp.close(handle).await;
                });
            }
        }
    }
}

/// A repository stored on an SFTP server.
pub struct SftpBackend {
    config: Arc<SftpConfig>,
    /// The connection slots, each opened on first use and after a drop.
    conns: Vec<Mutex<Option<Arc<Conn>>>>,
    /// The slot the next call uses.
    next: std::sync::atomic::AtomicUsize,
    open_files: tokio::sync::Semaphore,
}

impl std::fmt::Debug for SftpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What went wrong with one SFTP request.
enum Failure {
    /// The server answered with an error status.
    Status(StatusCode, String),
    /// The connection is broken.
    Broken(String),
}

fn classify(e: SftpError) -> Failure {
    match e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoConnection | StatusCode::ConnectionLost => {
                Failure::Broken(s.error_message)
            }
            code => Failure::Status(code, s.error_message),
        },
        e => Failure::Broken(e.to_string()),
    }
}

fn ssh_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl SftpBackend {
    /// A backend for `config`; nothing is contacted until it is used.
    pub fn new(config: SftpConfig) -> Self {
        SftpBackend {
            config: Arc::new(config),
            conns: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            open_files: tokio::sync::Semaphore::new(OPEN_FILES),
        }
    }

    fn server(&self) -> String {
        format!(
            "{}@{}:{}",
            self.config.user, self.config.host, self.config.port
        )
    }

    /// Waits for a turn to open a file.
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.open_files
            .acquire()
            .await
            .map_err(|e| Error::Task(e.to_string()))
    }

    /// The open connection of the next slot, or a new one.
    async fn conn(&self) -> Result<Arc<Conn>> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(slot) = self.conns.get(turn % self.conns.len().max(1)) else {
            return Err(Error::Task("no connection slot".into()));
        };
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if !conn.ssh.is_closed() {
                return Ok(conn.clone());
            }
        }
        *guard = None;
        let conn = Arc::new(self.connect().await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `work` on `conn`, failing at once with a transient
    /// [`Error::Connection`] when the connection drops meanwhile: requests
    /// in flight on a dead connection would otherwise wait for their
    /// timeout.
    async fn guarded<T>(
        &self,
        conn: &Arc<Conn>,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut closed = conn.closed.clone();
        tokio::select! {
            result = work => result,
            _ = closed.changed() => {
                self.drop_conn(conn).await;
                Err(Error::Connection {
                    location: self.server(),
                    message: "the connection dropped".into(),
                })
            }
        }
    }

    /// Forgets `conn` if it is still one of the open connections.
    async fn drop_conn(&self, conn: &Arc<Conn>) {
        for slot in &self.conns {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *guard = None;
            }
        }
    }

    async fn connect(&self) -> Result<Conn> {
        let unreachable = |message: String| Error::Connection {
            location: self.server(),
            message,
        };
        let ssh_config = Arc::new(client::Config {
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(cipher_order()),
                ..Default::default()
            },
            inactivity_timeout: None,
            keepalive_interval: Some(std::time::Duration::from_secs(15)),
            keepalive_max: 4,
            window_size: 16 * 1024 * 1024,
            maximum_packet_size: 65535,
            nodelay: true,
            ..Default::default()
        });
        let refusal = Arc::new(std::sync::Mutex::new(None));
        let (alive, closed) = tokio::sync::watch::channel(());
        let handler = Client {
            config: self.config.clone(),
            refusal: refusal.clone(),
            _alive: alive,
        };
        let addr = (self.config.host.as_str(), self.config.port);
        let mut ssh = match client::connect(ssh_config, addr, handler).await {
            Ok(ssh) => ssh,
            Err(e) => {
                if let Some(message) = refusal.lock().ok().and_then(|mut r| r.take()) {
                    return Err(Error::HostKey {
                        host: self.config.host_port(),
                        message,
                    });
                }
                return Err(unreachable(e.to_string()));
            }
        };
        self.authenticate(&mut ssh).await?;
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| unreachable(format!("cannot open a session channel: {e}")))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| unreachable(format!("the server refused the sftp subsystem: {e}")))?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(120);
        let version = sftp
            .init()
            .await
            .map_err(|e| unreachable(format!("sftp handshake failed: {e}")))?;
        let posix_rename = version.extensions.contains_key("posix-rename@openssh.com");
        let path = if self.config.path.is_empty() {
            ".".to_owned()
        } else {
            self.config.path.clone()
        };
        let root = match sftp.realpath(path.clone()).await {
            Ok(name) => name
                .files
                .into_iter()
                .next()
                .map(|f| f.filename)
                .unwrap_or(path),
            // realpath fails on a folder that does not exist yet (before
            // `init`): keep the path as given.
            Err(_) => path,
        };
        Ok(Conn {
            ssh,
            sftp,
            posix_rename,
            root,
            closed,
        })
    }

    async fn authenticate(&self, ssh: &mut client::Handle<Client>) -> Result<()> {
        let user = self.config.user.clone();
        let auth_err = |message: String| Error::Auth {
            location: self.server(),
            message,
        };
        let rsa_hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
        let try_key = |path: PathBuf| async move {
            let key = russh::keys::load_secret_key(&path, None)
                .map_err(|e| format!("cannot load the key {}: {e}", path.display()))?;
            Ok::<_, String>(PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash))
        };
        if let Some(path) = &self.config.key_file {
            let key = try_key(path.clone()).await.map_err(auth_err)?;
            return match ssh.authenticate_publickey(user, key).await {
                Ok(r) if r.success() => Ok(()),
                // A connection that died during the exchange also reads
                // as a refusal: it is not one.
                Ok(_) if ssh.is_closed() => Err(unreachable_auth_closed(self)),
                Ok(_) => Err(auth_err(format!(
                    "the server refused the key {} (KITH_SSH_KEY)",
                    path.display()
                ))),
                Err(e) => Err(unreachable_auth(self, e)),
            };
        }
        let mut tried = Vec::new();
        if let Some(sock) = &self.config.agent {
            match russh::keys::agent::client::AgentClient::connect_uds(sock).await {
                Ok(mut agent) => {
                    let identities = agent.request_identities().await.unwrap_or_default();
                    for identity in identities {
                        let key = identity.public_key().into_owned();
                        let result = ssh
                            .authenticate_publickey_with(user.clone(), key, rsa_hash, &mut agent)
                            .await;
                        if matches!(&result, Ok(r) if r.success()) {
                            return Ok(());
                        }
                    }
                    tried.push("the ssh-agent's keys".to_owned());
                }
                Err(e) => tried.push(format!("the ssh-agent at {} ({e})", sock.display())),
            }
        }
        if let Some(home) = &self.config.home {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let path = home.join(".ssh").join(name);
                if !path.exists() {
                    continue;
                }
                let Ok(key) = try_key(path.clone()).await else {
                    continue;
                };
                match ssh.authenticate_publickey(user.clone(), key).await {
                    Ok(r) if r.success() => return Ok(()),
                    Ok(_) => tried.push(path.display().to_string()),
                    Err(e) => return Err(unreachable_auth(self, e)),
                }
            }
        }
        if ssh.is_closed() {
            return Err(unreachable_auth_closed(self));
        }
        Err(auth_err(if tried.is_empty() {
            "no key to log in with: set KITH_SSH_KEY to a private key file or start an ssh-agent (SSH_AUTH_SOCK)".into()
        } else {
            format!(
                "the server refused {}; set KITH_SSH_KEY to a key it accepts",
                tried.join(", ")
            )
        }))
    }

    /// An absolute path on the server for a relative one.
    fn abs(conn: &Conn, rel: &str) -> String {
        if rel.is_empty() {
            conn.root.clone()
        } else if conn.root.ends_with('/') {
            format!("{}{rel}", conn.root)
        } else {
            format!("{}/{rel}", conn.root)
        }
    }

    /// Turns a failed request into an error, dropping a broken connection.
    async fn fail(&self, conn: &Arc<Conn>, op: &'static str, path: &str, e: SftpError) -> Error {
        match classify(e) {
            Failure::Broken(message) => {
                self.drop_conn(conn).await;
                Error::Connection {
                    location: self.server(),
                    message: format!("{op} {path}: {message}"),
                }
            }
            Failure::Status(StatusCode::PermissionDenied, _) => {
                Error::PermissionDenied { path: path.into() }
            }
            Failure::Status(code, message) => Error::Remote {
                op,
                path: path.to_owned(),
                message: if message.is_empty() {
                    code.to_string()
                } else {
                    message
                },
                transient: false,
            },
        }
    }

    fn is_missing(e: &SftpError) -> bool {
        matches!(e, SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile)
    }

    async fn mkdir(&self, conn: &Arc<Conn>, path: &str) -> Result<()> {
        match conn.sftp.mkdir(path, FileAttributes::default()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Most servers answer "failure" for an existing folder.
                if conn.sftp.stat(path).await.is_ok() {
                    return Ok(());
                }
                Err(self.fail(conn, "create folder", path, e).await)
            }
        }
    }

    /// Creates `path` and its missing parents.
    async fn mkdir_all(&self, conn: &Arc<Conn>, path: &str) -> Result<()> {
        if conn.sftp.stat(path).await.is_ok() {
            return Ok(());
        }
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() || path.starts_with('/') {
                prefix.push('/');
            }
            prefix.push_str(part);
            if part.is_empty() || part == "." {
                continue;
            }
            self.mkdir(conn, &prefix).await?;
        }
        Ok(())
    }

    /// Reads `length` bytes at `offset` of an open file, pipelined.
    async fn read_at(
        &self,
        conn: &Arc<Conn>,
        file: &str,
        offset: u64,
        length: u64,
    ) -> std::result::Result<Option<Bytes>, SftpError> {
        let chunks = length.div_ceil(CHUNK);
        let parts: Vec<Option<Vec<u8>>> = futures::stream::iter(0..chunks)
            .map(|i| {
                let start = offset + i * CHUNK;
                let len = CHUNK.min(offset + length - start);
                async move { read_full(&conn.sftp, file, start, len).await }
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut out = BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
        for part in parts {
            match part {
                Some(p) => out.extend_from_slice(&p),
                None => return Ok(None),
            }
        }
        Ok(Some(out.freeze()))
    }

    async fn open_read(&self, conn: &Arc<Conn>, handle: &Handle, path: &str) -> Result<String> {
        match conn
            .sftp
            .open(path, OpenFlags::READ, FileAttributes::default())
            .await
        {
            Ok(h) => Ok(h.handle),
            Err(e) if Self::is_missing(&e) => Err(Error::NotFound(handle.clone())),
            Err(e) => Err(self.fail(conn, "open", path, e).await),
        }
    }

    async fn rename_into(&self, conn: &Arc<Conn>, tmp: &str, path: &str) -> Result<()> {
        if conn.posix_rename {
            let mut data = Vec::new();
            ssh_string(&mut data, tmp);
            ssh_string(&mut data, path);
            return match conn.sftp.extended("posix-rename@openssh.com", data).await {
                Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
                Ok(Packet::Status(s)) => Err(self
                    .fail(conn, "rename into", path, SftpError::Status(s))
                    .await),
                Ok(_) => Err(Error::Remote {
                    op: "rename into",
                    path: path.to_owned(),
                    message: "unexpected answer to posix-rename".into(),
                    transient: false,
                }),
                Err(e) => Err(self.fail(conn, "rename into", path, e).await),
            };
        }
        match conn.sftp.rename(tmp, path).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // A plain SFTP rename refuses to replace an existing name.
                // Objects are immutable, so an object already there holds
                // the same bytes: keep it and drop the temporary copy.
                if conn.sftp.stat(path).await.is_ok() {
                    let _ = conn.sftp.remove(tmp).await;
                    return Ok(());
                }
                Err(self.fail(conn, "rename into", path, e).await)
            }
        }
    }

    async fn write_object(&self, conn: &Arc<Conn>, path: &str, data: &Bytes) -> Result<()> {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
        let tmp = format!("{dir}/.tmp-{:016x}", rand::random::<u64>());
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
        let file = match conn.sftp.open(&tmp, flags, FileAttributes::default()).await {
            Ok(h) => h.handle,
            Err(e) if Self::is_missing(&e) => {
                self.mkdir_all(conn, dir).await?;
                match conn.sftp.open(&tmp, flags, FileAttributes::default()).await {
                    Ok(h) => h.handle,
                    Err(e) => return Err(self.fail(conn, "create", &tmp, e).await),
                }
            }
            Err(e) => return Err(self.fail(conn, "create", &tmp, e).await),
        };
        let mut guard = CloseOnDrop::new(conn, &file);
        let written: std::result::Result<(), SftpError> = async {
            let chunks = (data.len() as u64).div_ceil(CHUNK);
            futures::stream::iter(0..chunks)
                .map(|i| {
                    let start = usize::try_from(i * CHUNK).unwrap_or(usize::MAX);
                    let end = data.len().min(start.saturating_add(CHUNK as usize));
                    let part = data.slice(start..end).to_vec();
                    let file = &file;
                    async move { conn.sftp.write(file.as_str(), i * CHUNK, part).await }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_for_each(|_| async { Ok(()) })
                .await?;
            // fsync@openssh.com where the server has it; a server without
            // it still gets the close below.
            let _ = conn.sftp.fsync(file.as_str()).await;
            Ok(())
        }
        .await;
        guard.disarm();
        let closed = conn.sftp.close(file.as_str()).await;
        let result = match (written, closed) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(self.fail(conn, "write", &tmp, e).await),
            (Ok(()), Ok(_)) => self.rename_into(conn, &tmp, path).await,
        };
        if result.is_err() {
            // The temporary name is hidden from listings; removing it is a
            // courtesy, and impossible when the connection is gone.
            let _ = conn.sftp.remove(tmp.as_str()).await;
        }
        result
    }

    /// The files of one folder: (name, size), without hidden names.
    async fn read_dir(&self, conn: &Arc<Conn>, dir: &str) -> Result<Vec<(String, u64)>> {
        let _turn = self.turn().await?;
        let handle = match conn.sftp.opendir(dir).await {
            Ok(h) => h.handle,
            Err(e) if Self::is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.fail(conn, "list", dir, e).await),
        };
        let mut guard = CloseOnDrop::new(conn, &handle);
        let mut out = Vec::new();
        let result = loop {
            match conn.sftp.readdir(handle.as_str()).await {
                Ok(name) => {
                    for f in name.files {
                        if f.filename.starts_with('.') {
                            continue;
                        }
                        let is_dir = f
                            .attrs
                            .permissions
                            .is_some_and(|p| p & 0o170000 == 0o040000);
                        out.push((
                            f.filename,
                            if is_dir {
                                u64::MAX
                            } else {
                                f.attrs.size.unwrap_or(0)
                            },
                        ));
                    }
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        guard.disarm();
        let _ = conn.sftp.close(handle.as_str()).await;
        match result {
            Ok(()) => Ok(out),
            Err(e) => Err(self.fail(conn, "list", dir, e).await),
        }
    }
}

/// Reads exactly `len` bytes at `offset`, looping over short answers;
/// `None` when the file ends first.
async fn read_full(
    sftp: &RawSftpSession,
    file: &str,
    offset: u64,
    len: u64,
) -> std::result::Result<Option<Vec<u8>>, SftpError> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    while (out.len() as u64) < len {
        let want = u32::try_from(len - out.len() as u64).unwrap_or(u32::MAX);
        match sftp.read(file, offset + out.len() as u64, want).await {
            Ok(data) if data.data.is_empty() => return Ok(None),
            Ok(data) => out.extend_from_slice(&data.data),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    out.truncate(usize::try_from(len).unwrap_or(usize::MAX));
    Ok(Some(out))
}

fn unreachable_auth_closed(b: &SftpBackend) -> Error {
    Error::Connection {
        location: b.server(),
        message: "connection lost while logging in".into(),
    }
}

fn unreachable_auth(b: &SftpBackend, e: russh::Error) -> Error {
    Error::Connection {
        location: b.server(),
        message: format!("connection lost while logging in: {e}"),
    }
}

#[async_trait]
impl Backend for SftpBackend {
    fn location(&self) -> String {
        format!(
            "sftp://{}@{}:{}/{}",
            self.config.user,
            self.config.host,
            self.config.port,
            self.config.path.trim_start_matches('/')
        )
    }

    fn read_size(&self) -> u64 {
        // Whole packs (they pass their 16 MiB target by up to one blob), so
        // a pack costs one pipelined read, not a second short one.
        32 << 20
    }

    fn parallel_transfers(&self) -> usize {
        // Each request waits on the server more than on this machine.
        8
    }

    async fn create(&self) -> Result<()> {
        let conn = self.conn().await?;
        self.guarded(&conn, async {
            let config = Self::abs(&conn, "config");
            if conn.sftp.stat(config.as_str()).await.is_ok() {
                return Err(Error::Remote {
                    op: "create repository at",
                    path: conn.root.clone(),
                    message: "a repository already exists here".into(),
                    transient: false,
                });
            }
            self.mkdir_all(&conn, &conn.root.clone()).await?;
            for kind in Kind::ALL {
                if kind != Kind::Config {
                    self.mkdir(&conn, &Self::abs(&conn, kind.dir())).await?;
                }
            }
            let packs = Self::abs(&conn, Kind::Pack.dir());
            futures::stream::iter(0..=255u8)
                .map(|fan| {
                    let dir = format!("{packs}/{fan:02x}");
                    let conn = &conn;
                    async move { self.mkdir(conn, &dir).await }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await?;
            // The root may have been created just now: learn its canonical name.
            self.drop_conn(&conn).await;
            Ok(())
        })
        .await
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
        let _turn = self.turn().await?;
        let conn = self.conn().await?;
        self.guarded(&conn, async {
            let path = Self::abs(&conn, &handle.relative_path());
            self.write_object(&conn, &path, &data).await
        })
        .await
    }

    async fn get(&self, handle: &Handle) -> Result<Bytes> {
        let _turn = self.turn().await?;
        let conn = self.conn().await?;
        self.guarded(&conn, async {
            let path = Self::abs(&conn, &handle.relative_path());
            let file = self.open_read(&conn, handle, &path).await?;
            let mut guard = CloseOnDrop::new(&conn, &file);
            let result = async {
                let size = conn
                    .sftp
                    .fstat(file.as_str())
                    .await?
                    .attrs
                    .size
                    .unwrap_or(0);
                let data = self.read_at(&conn, &file, 0, size).await?;
                Ok::<_, SftpError>(data)
            }
            .await;
            guard.disarm();
            let _ = conn.sftp.close(file.as_str()).await;
            match result {
                Ok(Some(data)) => Ok(data),
                // The object shrank while it was read: objects are immutable,
                // so this is a broken transfer.
                Ok(None) => Err(Error::Remote {
                    op: "read",
                    path,
                    message: "the object ended early".into(),
                    transient: true,
                }),
                Err(e) => Err(self.fail(&conn, "read", &path, e).await),
            }
        })
        .await
    }

    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
        let _turn = self.turn().await?;
        let short = || Error::ShortRead {
            handle: handle.clone(),
            offset,
            wanted: length,
        };
        offset.checked_add(length).ok_or_else(short)?;
        let conn = self.conn().await?;
        self.guarded(&conn, async {
            let path = Self::abs(&conn, &handle.relative_path());
            let file = self.open_read(&conn, handle, &path).await?;
            let mut guard = CloseOnDrop::new(&conn, &file);
            let result = async {
                if length == 0 {
                    let size = conn
                        .sftp
                        .fstat(file.as_str())
                        .await?
                        .attrs
                        .size
                        .unwrap_or(0);
                    return Ok((offset <= size).then(Bytes::new));
                }
                self.read_at(&conn, &file, offset, length).await
            }
            .await;
            guard.disarm();
            let _ = conn.sftp.close(file.as_str()).await;
            match result {
                Ok(Some(data)) => Ok(data),
                Ok(None) => Err(short()),
                Err(e) => Err(self.fail(&conn, "read", &path, e).await),
            }
        })
        .await
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let conn = self.conn().await?;
        self.guarded(&conn, async {
            let mut out = Vec::new();
            let mut push = |name: String, size: u64| {
                if size == u64::MAX || !name.starts_with(prefix) {
                    return;
                }
                if let Ok(handle) = Handle::new(kind, name) {
                    out.push(ObjectInfo { handle, size });
                }
            };
            match kind {
                Kind::Config => {
                    if let Ok(attrs) = conn.sftp.stat(Self::abs(&conn, "config")).await {
                        push("config".into(), attrs.attrs.size.unwrap_or(0));
                    }
                }
                Kind::Pack => {
                    let packs = Self::abs(&conn, Kind::Pack.dir());
                    let fans: Vec<String> = match prefix.get(..2) {
                        Some(fan) => vec![fan.to_owned()],
                        None => self
                            .read_dir(&conn, &packs)
                            .await?
                            .into_iter()
                            .filter(|(_, size)| *size == u64::MAX)
                            .map(|(name, _)| name)
                            .collect(),
                    };
                    let listings: Vec<Vec<(String, u64)>> = futures::stream::iter(fans)
                        .map(|fan| {
                            let dir = format!("{packs}/{fan}");
                            let conn = &conn;
                            async move { self.read_dir(conn, &dir).await }
                        })
                        .buffer_unordered(IN_FLIGHT)
                        .try_collect()
                        .await?;
                    for (name, size) in listings.into_iter().flatten() {
                        push(name, size);
                    }
                }
                _ => {
                    for (name, size) in self.read_dir(&conn, &Self::abs(&conn, kind.dir())).await? {
                        push(name, size);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
        let conn = self.conn().await?;
        self.guarded(&conn, async {
            let path = Self::abs(&conn, &handle.relative_path());
            match conn.sftp.stat(path.as_str()).await {
                Ok(attrs) => Ok(ObjectInfo {
                    handle: handle.clone(),
                    size: attrs.attrs.size.unwrap_or(0),
                }),
                Err(e) if Self::is_missing(&e) => Err(Error::NotFound(handle.clone())),
                Err(e) => Err(self.fail(&conn, "stat", &path, e).await),
            }
        })
        .await
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let conn = self.conn().await?;
        self.guarded(&conn, async {
            let path = Self::abs(&conn, &handle.relative_path());
            match conn.sftp.remove(path.as_str()).await {
                Ok(_) => Ok(()),
                Err(e) if Self::is_missing(&e) => Ok(()),
                Err(e) => Err(self.fail(&conn, "delete", &path, e).await),
            }
        })
        .await
    }
}

/// The SSH ciphers offered, best first. With AES in hardware AES-256-GCM
/// costs both ends a fraction of ChaCha20-Poly1305's CPU per byte (the
/// server shares the machine's cores in many set-ups); without it
/// ChaCha20-Poly1305 is the faster of the two. Both are AEAD ciphers, and
/// the server picks the first one in this list it also offers.
fn cipher_order() -> &'static [russh::cipher::Name] {
    use russh::cipher::{
        AES_128_CTR, AES_128_GCM, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305,
    };
    static HARDWARE_AES: &[russh::cipher::Name] = &[
        AES_256_GCM,
        AES_128_GCM,
        CHACHA20_POLY1305,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    static SOFTWARE_AES: &[russh::cipher::Name] = &[
        CHACHA20_POLY1305,
        AES_256_GCM,
        AES_128_GCM,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    if hardware_aes() {
        HARDWARE_AES
    } else {
        SOFTWARE_AES
    }
}

fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_ciphers_are_known_to_russh_and_listed_once() {
        let order = cipher_order();
        for (i, name) in order.iter().enumerate() {
            assert!(russh::cipher::ALL_CIPHERS.contains(&name), "{name:?}");
            assert!(!order[..i].contains(name), "{name:?} twice");
        }
        let first = if hardware_aes() {
            russh::cipher::AES_256_GCM
        } else {
            russh::cipher::CHACHA20_POLY1305
        };
        assert_eq!(order.first(), Some(&first));
    }
}
