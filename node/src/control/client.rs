//! The client side of the control socket: [`NodeClient`] for the node's
//! own commands (info, invites, peers) and [`DaemonTransport`], a
//! [`ShardTransport`] that hands the owner key to the daemon for the
//! connection and lets it move the shards.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use async_trait::async_trait;
use bytes::Bytes;
use kith_net::{Holding, Multiaddr, ObjectTag, OwnerId, OwnerKeypair, PeerId, ShardKey};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

use super::protocol::{
    addrs_from, addrs_to, peer_from, read_frame, write_frame, LocalRequest, LocalResponse,
    PeerStatus, CONTROL_SOCKET_VERSION, MAX_LOCAL_RESPONSE,
};
use crate::{
    policy::PeerProfile,
    transport::{ShardBytes, ShardTransport, TransportError, UsablePeer},
    NodeDir, NodeError,
};

/// Idle connections a [`DaemonTransport`] keeps for reuse.
const POOL: usize = 16;

/// One open control connection, past the hello.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    peer: PeerId,
}

impl Connection {
    /// Connects to the node in `dir`; [`NodeError::NotRunning`] when no
    /// daemon answers there.
    pub async fn open(dir: &Path) -> Result<Self, NodeError> {
        let node = NodeDir::new(dir);
        if !node.config().exists() {
            return Err(NodeError::NoNode {
                dir: dir.to_path_buf(),
            });
        }
        let mut stream =
            UnixStream::connect(node.socket())
                .await
                .map_err(|_| NodeError::NotRunning {
                    dir: dir.to_path_buf(),
                })?;
        write_frame(
            &mut stream,
            &LocalRequest::Hello {
                version: CONTROL_SOCKET_VERSION,
            },
        )
        .await?;
        match read_frame(&mut stream, MAX_LOCAL_RESPONSE).await? {
            Some(LocalResponse::Hello { peer, .. }) => Ok(Self {
                stream,
                peer: peer_from(&peer)?,
            }),
            Some(LocalResponse::Failed { message }) => Err(NodeError::Daemon(message)),
            _ => Err(NodeError::Control("no hello from the node".to_owned())),
        }
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// Sends one request and reads its answer frame.
    pub async fn request(&mut self, request: &LocalRequest) -> Result<LocalResponse, NodeError> {
        self.send(request).await?;
        self.answer().await
    }

    /// Sends one request frame without waiting for its answer: a `Store`
    /// is answered only after its bytes, sent with [`Connection::send_raw`].
    pub async fn send(&mut self, request: &LocalRequest) -> Result<(), NodeError> {
        write_frame(&mut self.stream, request).await
    }

    /// Sends bytes that follow a request frame.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), NodeError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| NodeError::Control(format!("write: {e}")))
    }

    /// Reads the answer to the last request.
    pub async fn answer(&mut self) -> Result<LocalResponse, NodeError> {
        read_frame(&mut self.stream, MAX_LOCAL_RESPONSE)
            .await?
            .ok_or_else(|| NodeError::Control("the node closed the connection".to_owned()))
    }
}

fn unexpected(r: LocalResponse) -> NodeError {
    match r {
        LocalResponse::Failed { message } => NodeError::Daemon(message),
        other => NodeError::Control(format!("unexpected answer {other:?}")),
    }
}

/// The node's own commands over the control socket.
#[derive(Debug)]
pub struct NodeClient {
    conn: Connection,
}

impl NodeClient {
    /// Connects to the node running in `dir`.
    pub async fn connect(dir: &Path) -> Result<Self, NodeError> {
        Ok(Self {
            conn: Connection::open(dir).await?,
        })
    }

    /// Peer id and listen addresses.
    pub async fn info(&mut self) -> Result<(PeerId, Vec<Multiaddr>), NodeError> {
        match self.conn.request(&LocalRequest::Info).await? {
            LocalResponse::Info { peer, addrs } => Ok((peer_from(&peer)?, addrs_from(&addrs))),
            other => Err(unexpected(other)),
        }
    }

    /// A new one-time invite code.
    pub async fn invite(&mut self) -> Result<String, NodeError> {
        match self.conn.request(&LocalRequest::Invite).await? {
            LocalResponse::Invite { code } => Ok(code),
            other => Err(unexpected(other)),
        }
    }

    /// Redeems another node's invite code; returns the new friend.
    pub async fn add_peer(&mut self, code: &str) -> Result<PeerId, NodeError> {
        let req = LocalRequest::AddPeer {
            code: code.to_owned(),
        };
        match self.conn.request(&req).await? {
            LocalResponse::PeerAdded { peer } => peer_from(&peer),
            other => Err(unexpected(other)),
        }
    }

    /// Friends and discovered peers.
    pub async fn peers(&mut self) -> Result<Vec<PeerStatus>, NodeError> {
        match self.conn.request(&LocalRequest::ListPeers).await? {
            LocalResponse::Peers(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }
}

/// A [`ShardTransport`] through a running node: the daemon dials holders,
/// signs their challenges with the owner key handed to it for each
/// connection, and moves the bytes. Operations run on connections of their
/// own (kept for reuse), so they may run in parallel.
pub struct DaemonTransport {
    dir: PathBuf,
    seed: [u8; 32],
    owner: OwnerId,
    pool: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for DaemonTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonTransport")
            .field("dir", &self.dir)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl DaemonTransport {
    /// A transport through the node in `dir`, for the owner whose ed25519
    /// key has `seed` (derived from the master secret). Checks that the
    /// node runs.
    pub async fn connect(dir: &Path, seed: [u8; 32]) -> Result<Self, NodeError> {
        let owner = OwnerKeypair::from_seed(seed)?.owner_id();
        let t = Self {
            dir: dir.to_path_buf(),
            seed,
            owner,
            pool: Mutex::new(Vec::new()),
        };
        let conn = t.open().await?;
        t.put_back(conn);
        Ok(t)
    }

    async fn open(&self) -> Result<Connection, NodeError> {
        let mut conn = Connection::open(&self.dir).await?;
        match conn
            .request(&LocalRequest::SetOwner { seed: self.seed })
            .await?
        {
            LocalResponse::Done => Ok(conn),
            other => Err(unexpected(other)),
        }
    }

    async fn take(&self) -> Result<Connection, TransportError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.open().await.map_err(|e| {
                tracing::warn!(%e, "cannot reach the node");
                TransportError::Stopped
            }),
        }
    }

    fn put_back(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL {
            pool.push(conn);
        }
    }

    /// Sends `request` (and the parts of `body` after it) and returns the
    /// answer; the connection goes back to the pool when the exchange
    /// completed.
    async fn call(
        &self,
        request: LocalRequest,
        body: &[&[u8]],
    ) -> Result<(LocalResponse, Connection), TransportError> {
        let mut conn = self.take().await?;
        let lost = |e: NodeError| {
            tracing::warn!(%e, "control connection failed");
            TransportError::Stopped
        };
        conn.send(&request).await.map_err(lost)?;
        for part in body {
            conn.send_raw(part).await.map_err(lost)?;
        }
        let answer = conn.answer().await.map_err(lost)?;
        Ok((answer, conn))
    }

    /// Asks the node for shard bytes: the announced length (at most
    /// `max_len`) and the connection they follow on, to be read in full
    /// before it goes back to the pool.
    async fn open_fetch(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        len: Option<u64>,
        max_len: u64,
    ) -> Result<(u64, Connection), TransportError> {
        let req = LocalRequest::Fetch {
            peer: peer.to_bytes(),
            tag: key.tag,
            index: key.index,
            offset,
            len,
            max_len,
        };
        let (answer, conn) = self.call(req, &[]).await?;
        let n = match into_result(answer) {
            Ok(LocalResponse::Sending { len: n }) => n,
            Ok(other) => return Err(odd(&other)),
            Err(e) => {
                self.put_back(conn);
                return Err(e);
            }
        };
        if n > max_len {
            // The connection is dropped with the bytes unread.
            return Err(TransportError::Unreachable {
                peer,
                reason: format!("the node announced {n} bytes, more than the {max_len} asked"),
            });
        }
        Ok((n, conn))
    }

    async fn simple(
        &self,
        request: LocalRequest,
        body: &[&[u8]],
    ) -> Result<LocalResponse, TransportError> {
        let (answer, conn) = self.call(request, body).await?;
        self.put_back(conn);
        into_result(answer)
    }
}

fn into_result(r: LocalResponse) -> Result<LocalResponse, TransportError> {
    let peer = |b: &[u8]| peer_from(b).map_err(|_| TransportError::Stopped);
    match r {
        LocalResponse::Unreachable { peer: p, reason } => Err(TransportError::Unreachable {
            peer: peer(&p)?,
            reason,
        }),
        LocalResponse::Refused { peer: p, reply } => Err(TransportError::Refused {
            peer: peer(&p)?,
            reply,
        }),
        LocalResponse::NotFound { peer: p } => Err(TransportError::NotFound { peer: peer(&p)? }),
        LocalResponse::Failed { message } => {
            tracing::warn!(message, "the node failed a request");
            Err(TransportError::Stopped)
        }
        other => Ok(other),
    }
}

fn odd(r: &LocalResponse) -> TransportError {
    tracing::warn!(?r, "unexpected answer from the node");
    TransportError::Stopped
}

#[async_trait]
impl ShardTransport for DaemonTransport {
    fn owner(&self) -> OwnerId {
        self.owner
    }

    async fn usable_peers(&self) -> Result<Vec<UsablePeer>, TransportError> {
        match self.simple(LocalRequest::UsablePeers, &[]).await? {
            LocalResponse::UsablePeers(list) => Ok(list
                .into_iter()
                .filter_map(|u| {
                    Some(UsablePeer {
                        peer: peer_from(&u.peer).ok()?,
                        addrs: addrs_from(&u.addrs),
                        free: u.free,
                        profile: PeerProfile {
                            uptime: u.uptime,
                            failure_domain: u.failure_domain,
                            always_on: u.always_on,
                        },
                    })
                })
                .collect()),
            other => Err(odd(&other)),
        }
    }

    async fn known_peers(&self) -> Result<Vec<PeerId>, TransportError> {
        match self.simple(LocalRequest::KnownPeers, &[]).await? {
            LocalResponse::KnownPeers(list) => {
                Ok(list.iter().filter_map(|p| peer_from(p).ok()).collect())
            }
            other => Err(odd(&other)),
        }
    }

    async fn learn_peers(
        &self,
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<(), TransportError> {
        let peers = peers
            .iter()
            .map(|(p, a)| (p.to_bytes(), addrs_to(a)))
            .collect();
        match self.simple(LocalRequest::LearnPeers { peers }, &[]).await? {
            LocalResponse::Done => Ok(()),
            other => Err(odd(&other)),
        }
    }

    async fn store(
        &self,
        peer: PeerId,
        key: ShardKey,
        data: ShardBytes,
    ) -> Result<(), TransportError> {
        let req = LocalRequest::Store {
            peer: peer.to_bytes(),
            tag: key.tag,
            index: key.index,
            len: data.len(),
        };
        match self.simple(req, &data.parts()).await? {
            LocalResponse::Done => Ok(()),
            other => Err(odd(&other)),
        }
    }

    async fn fetch(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        len: Option<u64>,
        max_len: u64,
    ) -> Result<Bytes, TransportError> {
        let (n, mut conn) = self.open_fetch(peer, key, offset, len, max_len).await?;
        let mut data = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        (&mut conn.stream)
            .take(n)
            .read_to_end(&mut data)
            .await
            .map_err(|e| cut_short(peer, &e))?;
        if data.len() as u64 != n {
            return Err(crate::transport::short_answer(peer, data.len() as u64, n));
        }
        self.put_back(conn);
        Ok(Bytes::from(data))
    }

    async fn fetch_into(
        &self,
        peer: PeerId,
        key: ShardKey,
        offset: u64,
        dest: &mut [u8],
    ) -> Result<(), TransportError> {
        let want = dest.len() as u64;
        let (n, mut conn) = self.open_fetch(peer, key, offset, Some(want), want).await?;
        if n != want {
            // The connection is dropped with the bytes unread.
            return Err(crate::transport::short_answer(peer, n, want));
        }
        conn.stream
            .read_exact(dest)
            .await
            .map_err(|e| cut_short(peer, &e))?;
        self.put_back(conn);
        Ok(())
    }

    async fn holdings(&self, peer: PeerId) -> Result<Vec<Holding>, TransportError> {
        let req = LocalRequest::Holdings {
            peer: peer.to_bytes(),
        };
        match self.simple(req, &[]).await? {
            LocalResponse::Holdings(list) => Ok(list),
            other => Err(odd(&other)),
        }
    }

    async fn delete(
        &self,
        peer: PeerId,
        shards: Vec<(ObjectTag, u16)>,
    ) -> Result<u32, TransportError> {
        let req = LocalRequest::Delete {
            peer: peer.to_bytes(),
            shards,
        };
        match self.simple(req, &[]).await? {
            LocalResponse::Deleted { count } => Ok(count),
            other => Err(odd(&other)),
        }
    }
}

/// The error for shard bytes that stopped arriving from the node: it relays
/// them from the holder as they come, so a holder that fails mid-shard
/// closes the connection under the read.
fn cut_short(peer: PeerId, e: &std::io::Error) -> TransportError {
    TransportError::Unreachable {
        peer,
        reason: format!("the shard was cut short: {e}"),
    }
}
