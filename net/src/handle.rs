//! [`NetHandle`], the cloneable front of the network task.
//!
//! Swarm operations go to the task as [`Command`]s over a bounded channel
//! and come back on a oneshot. Shard streams are opened directly through
//! libp2p-stream's control, so multi-MiB transfers never pass through the
//! task's loop.

use futures::{AsyncRead, AsyncWrite};
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::{
    ids::ShardKey,
    message::{ControlRequest, ControlResponse},
    shard::{self, SHARD_PROTOCOL},
    NetError,
};

/// A request to the network task. Closed: every operation is listed here.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        peer: Option<PeerId>,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    Request {
        peer: PeerId,
        request: ControlRequest,
        reply: oneshot::Sender<Result<ControlResponse, NetError>>,
    },
    FindPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, NetError>>,
    },
    Bootstrap {
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Shutdown,
}

/// Which bytes of a shard to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardRange {
    /// The whole shard.
    All,
    /// `len` bytes from `offset`.
    Range {
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
}

/// The cloneable handle to a running network task. The task stops when
/// [`NetHandle::shutdown`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct NetHandle {
    pub(crate) peer_id: PeerId,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) streams: libp2p_stream::Control,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Splits a trailing `/p2p/<peer id>` off an address.
pub(crate) fn split_peer(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => (addr, Some(peer)),
        Some(other) => {
            addr.push(other);
            (addr, None)
        }
        None => (addr, None),
    }
}

/// Most bytes [`NetHandle::fetch_shard`] reserves before any arrive.
const PREALLOC_LIMIT: u64 = 64 << 20;

impl NetHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the swarm listens on now.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetError> {
        self.call(|reply| Command::ConnectedPeers { reply }).await
    }

    /// Connects to `addr` and returns the authenticated peer id. If the
    /// address ends in `/p2p/<peer id>`, a different peer is refused.
    /// Returns at once if that peer is already connected.
    pub async fn connect(&self, addr: &Multiaddr) -> Result<PeerId, NetError> {
        let (addr, peer) = split_peer(addr);
        self.call(|reply| Command::Dial { peer, addr, reply })
            .await?
    }

    /// Remembers an address of `peer` (for the swarm and the DHT); later
    /// requests to `peer` dial it as needed.
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetError> {
        self.commands
            .send(Command::AddAddress { peer, addr })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Sends a control request and waits for the answer. An error reply
    /// becomes [`NetError::Refused`].
    pub async fn request(
        &self,
        peer: PeerId,
        request: ControlRequest,
    ) -> Result<ControlResponse, NetError> {
        self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Looks `peer` up in the DHT and returns its addresses.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NetError> {
        self.call(|reply| Command::FindPeer { peer, reply }).await?
    }

    /// Runs a DHT bootstrap (a lookup of our own id through known peers).
    pub async fn bootstrap(&self) -> Result<(), NetError> {
        self.call(|reply| Command::Bootstrap { reply }).await?
    }

    /// Stops the network task; pending operations fail with [`NetError::Stopped`].
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    async fn open_shard_stream(&self, peer: PeerId) -> Result<libp2p::Stream, NetError> {
        self.streams
            .clone()
            .open_stream(peer, SHARD_PROTOCOL)
            .await
            .map_err(|e| match e {
                libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => NetError::Unsupported {
                    peer,
                    protocol: "/kith/shard/1",
                },
                libp2p_stream::OpenStreamError::Io(e) => NetError::Io(e),
                other => NetError::Request {
                    peer,
                    reason: other.to_string(),
                },
            })
    }

    /// Stores `data` as the bytes of shard `key` starting at `offset`
    /// (0 unless resuming; see [`ControlRequest::ShardStatus`]), of a shard
    /// `total_len` bytes long. Returns how many bytes of the shard the
    /// holder now has contiguously from offset 0.
    pub async fn store_shard(
        &self,
        peer: PeerId,
        key: ShardKey,
        total_len: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, NetError> {
        let stream = self.open_shard_stream(peer).await?;
        shard::store(
            stream,
            peer,
            key,
            total_len,
            offset,
            data.len() as u64,
            data,
        )
        .await
    }

    /// Like [`NetHandle::store_shard`], but streams exactly `len` bytes
    /// from `reader` (e.g. a file through `tokio_util::compat`), so a large
    /// shard is never held in memory.
    pub async fn store_shard_from<R: AsyncRead + Unpin>(
        &self,
        peer: PeerId,
        key: ShardKey,
        total_len: u64,
        offset: u64,
        len: u64,
        reader: R,
    ) -> Result<u64, NetError> {
        let stream = self.open_shard_stream(peer).await?;
        shard::store(stream, peer, key, total_len, offset, len, reader).await
    }

    /// Fetches bytes of shard `key`, refusing an answer longer than `max_len`.
    pub async fn fetch_shard(
        &self,
        peer: PeerId,
        key: ShardKey,
        range: ShardRange,
        max_len: u64,
    ) -> Result<Vec<u8>, NetError> {
        // The asker states the length it expects (a whole shard's, from its
        // records): reserving it up front saves growing the buffer by
        // copies while the bytes arrive. A lying `max_len` costs at most
        // `PREALLOC_LIMIT`.
        let expected = usize::try_from(max_len.min(PREALLOC_LIMIT)).unwrap_or(0);
        let mut out = Vec::with_capacity(expected);
        self.fetch_shard_into(peer, key, range, max_len, &mut out)
            .await?;
        Ok(out)
    }

    /// Opens a fetch of shard `key`: the holder's announced length, and its
    /// bytes to read as they arrive (so a relay can pass them on without
    /// holding the whole shard). Refuses an answer longer than `max_len`.
    pub async fn open_fetch(
        &self,
        peer: PeerId,
        key: ShardKey,
        range: ShardRange,
        max_len: u64,
    ) -> Result<shard::FetchBody, NetError> {
        let stream = self.open_shard_stream(peer).await?;
        let (offset, len) = match range {
            ShardRange::All => (0, None),
            ShardRange::Range { offset, len } => (offset, Some(len)),
        };
        shard::open_fetch(stream, peer, key, offset, len, max_len).await
    }

    /// Fetches bytes of shard `key` into `out` chunk by chunk and returns
    /// how many were written; refuses an answer longer than `max_len`
    /// before writing anything. On error `out` may hold a prefix.
    pub async fn fetch_shard_into<W: AsyncWrite + Unpin>(
        &self,
        peer: PeerId,
        key: ShardKey,
        range: ShardRange,
        max_len: u64,
        out: &mut W,
    ) -> Result<u64, NetError> {
        let stream = self.open_shard_stream(peer).await?;
        let (offset, len) = match range {
            ShardRange::All => (0, None),
            ShardRange::Range { offset, len } => (offset, Some(len)),
        };
        shard::fetch(stream, peer, key, offset, len, max_len, out).await
    }
}
