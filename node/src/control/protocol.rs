//! Messages of the local control socket, version [`CONTROL_SOCKET_VERSION`].
//!
//! Each message is a frame: a 4-byte big-endian length, then that many
//! bytes holding one postcard value. The client opens a connection, sends
//! [`LocalRequest::Hello`] and gets [`LocalResponse::Hello`]; then any
//! number of requests follow, one at a time, each answered before the next.
//! Shard bytes follow their header frame raw: `Store` is followed by
//! exactly `len` bytes from the client; `Sending { len }` by exactly `len`
//! bytes from the daemon. docs/PROTOCOL.md ("Control socket") has the tables.

use kith_net::{ErrorReply, Holding, Multiaddr, ObjectTag, PeerId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::NodeError;

/// Version of the control socket protocol spoken here.
pub const CONTROL_SOCKET_VERSION: u32 = 1;
/// Largest request frame accepted by the daemon.
pub const MAX_LOCAL_REQUEST: u32 = 1 << 20;
/// Largest response frame accepted by the client (holdings lists are long).
pub const MAX_LOCAL_RESPONSE: u32 = 64 << 20;

/// A peer id on the control socket: its multihash bytes.
pub type WirePeer = Vec<u8>;
/// A multiaddr on the control socket: its bytes.
pub type WireAddr = Vec<u8>;

/// A request from the CLI to the daemon. Variants are only appended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LocalRequest {
    /// First message of every connection.
    Hello {
        /// The client's protocol version.
        version: u32,
    },
    /// Peer id and listen addresses.
    Info,
    /// Make a one-time invite code.
    Invite,
    /// Redeem another node's invite code.
    AddPeer {
        /// The code.
        code: String,
    },
    /// Friends and discovered peers with their state.
    ListPeers,
    /// Act as this owner for the rest of the connection: the ed25519 seed
    /// of the owner key derived from the master secret.
    SetOwner {
        /// The seed.
        seed: [u8; 32],
    },
    /// `ShardTransport::usable_peers`.
    UsablePeers,
    /// `ShardTransport::known_peers`.
    KnownPeers,
    /// `ShardTransport::learn_peers`.
    LearnPeers {
        /// Peers and their last known addresses.
        peers: Vec<(WirePeer, Vec<WireAddr>)>,
    },
    /// `ShardTransport::store`; exactly `len` raw bytes follow.
    Store {
        /// The holder.
        peer: WirePeer,
        /// The object.
        tag: ObjectTag,
        /// The shard index.
        index: u16,
        /// Bytes that follow.
        len: u64,
    },
    /// `ShardTransport::fetch`.
    Fetch {
        /// The holder.
        peer: WirePeer,
        /// The object.
        tag: ObjectTag,
        /// The shard index.
        index: u16,
        /// First byte.
        offset: u64,
        /// Bytes wanted (`None`: to the end).
        len: Option<u64>,
        /// Most bytes accepted.
        max_len: u64,
    },
    /// `ShardTransport::holdings`.
    Holdings {
        /// The holder.
        peer: WirePeer,
    },
    /// `ShardTransport::delete`.
    Delete {
        /// The holder.
        peer: WirePeer,
        /// The shards.
        shards: Vec<(ObjectTag, u16)>,
    },
}

/// One peer in [`LocalResponse::Peers`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub peer: WirePeer,
    /// Whether it is a friend (else it was only discovered).
    pub friend: bool,
    /// Connected now (directly: kith has no relays yet).
    pub connected: bool,
    /// Why it is not connected, when it is not; why `held_by_it` is
    /// unknown, when it is connected but did not answer.
    pub reason: Option<String>,
    /// Recorded (friends) or discovered addresses.
    pub addrs: Vec<WireAddr>,
    /// Bytes this node holds for it.
    pub held_for_it: u64,
    /// Bytes it holds for this node, when it is connected and answered.
    pub held_by_it: Option<u64>,
    /// How a stranger was found (`mdns`, `dht`), if it was.
    pub discovered: Option<String>,
}

/// One peer in [`LocalResponse::UsablePeers`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireUsablePeer {
    /// The peer.
    pub peer: WirePeer,
    /// Its addresses.
    pub addrs: Vec<WireAddr>,
    /// Bytes it still accepts.
    pub free: u64,
    /// Uptime estimate for placement.
    pub uptime: f64,
    /// Failure domain for placement.
    pub failure_domain: u32,
    /// Whether it says it is always on.
    pub always_on: bool,
}

/// The daemon's answer. Variants are only appended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LocalResponse {
    /// Answer to `Hello`.
    Hello {
        /// The daemon's protocol version.
        version: u32,
        /// The node's peer id.
        peer: WirePeer,
    },
    /// Answer to `Info`.
    Info {
        /// The node's peer id.
        peer: WirePeer,
        /// Where it listens.
        addrs: Vec<WireAddr>,
    },
    /// Answer to `Invite`.
    Invite {
        /// The code.
        code: String,
    },
    /// Answer to `AddPeer`.
    PeerAdded {
        /// The new friend.
        peer: WirePeer,
    },
    /// Answer to `ListPeers`.
    Peers(Vec<PeerStatus>),
    /// Done (`SetOwner`, `LearnPeers`, `Store`).
    Done,
    /// Answer to `UsablePeers`.
    UsablePeers(Vec<WireUsablePeer>),
    /// Answer to `KnownPeers`.
    KnownPeers(Vec<WirePeer>),
    /// Answer to `Fetch`: exactly `len` raw bytes follow.
    Sending {
        /// Bytes that follow.
        len: u64,
    },
    /// Answer to `Holdings`.
    Holdings(Vec<Holding>),
    /// Answer to `Delete`.
    Deleted {
        /// Shards that existed.
        count: u32,
    },
    /// The peer could not be reached.
    Unreachable {
        /// The peer.
        peer: WirePeer,
        /// Why.
        reason: String,
    },
    /// The peer refused.
    Refused {
        /// The peer.
        peer: WirePeer,
        /// Its answer.
        reply: ErrorReply,
    },
    /// The peer does not hold the shard.
    NotFound {
        /// The peer.
        peer: WirePeer,
    },
    /// The request failed in the daemon (bad request, no owner set, ...).
    Failed {
        /// What happened, for the user.
        message: String,
    },
}

/// Writes one frame holding `msg`.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), NodeError> {
    let bytes = postcard::to_stdvec(msg).map_err(|e| NodeError::Control(e.to_string()))?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| NodeError::Control("message too large".to_owned()))?;
    let io = |e: std::io::Error| NodeError::Control(format!("write: {e}"));
    w.write_all(&len.to_be_bytes()).await.map_err(io)?;
    w.write_all(&bytes).await.map_err(io)?;
    w.flush().await.map_err(io)
}

/// Reads one frame of at most `limit` bytes; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    limit: u32,
) -> Result<Option<T>, NodeError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(NodeError::Control(format!("read: {e}"))),
    }
    let len = u32::from_be_bytes(len);
    if len > limit {
        return Err(NodeError::Control(format!(
            "a frame of {len} bytes exceeds the limit of {limit}"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| NodeError::Control(format!("read: {e}")))?;
    postcard::from_bytes(&buf)
        .map(Some)
        .map_err(|e| NodeError::Control(format!("undecodable message: {e}")))
}

/// Parses a peer id from the control socket.
pub fn peer_from(bytes: &[u8]) -> Result<PeerId, NodeError> {
    PeerId::from_bytes(bytes).map_err(|_| NodeError::Control("bad peer id".to_owned()))
}

/// Parses addresses from the control socket, skipping unreadable ones.
pub fn addrs_from(list: &[WireAddr]) -> Vec<Multiaddr> {
    list.iter()
        .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
        .collect()
}

/// Addresses for the control socket.
pub fn addrs_to(list: &[Multiaddr]) -> Vec<WireAddr> {
    list.iter().map(|a| a.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &LocalRequest::Hello { version: 1 })
            .await
            .unwrap();
        let back: LocalRequest = read_frame(&mut buf.as_slice(), 100).await.unwrap().unwrap();
        assert!(matches!(back, LocalRequest::Hello { version: 1 }));
        let big = [0xff, 0xff, 0xff, 0xff];
        assert!(read_frame::<_, LocalRequest>(&mut big.as_slice(), 100)
            .await
            .is_err());
        let none: Option<LocalRequest> = read_frame(&mut [].as_slice(), 100).await.unwrap();
        assert!(none.is_none());
    }
}
