//! The control socket server: one task per connection, requests answered
//! one at a time (docs/PROTOCOL.md, "Control socket").

use std::sync::Arc;

use kith_net::{FetchBody, OwnerKeypair, PeerId, ShardKey, MAX_SHARD_LEN};
use tokio::{
    io::AsyncReadExt,
    net::{UnixListener, UnixStream},
};

use super::Shared;
use crate::{
    control::protocol::{
        addrs_from, addrs_to, peer_from, read_frame, write_frame, LocalRequest, LocalResponse,
        PeerStatus, WireUsablePeer, CONTROL_SOCKET_VERSION, MAX_LOCAL_REQUEST,
    },
    invite::InviteCode,
    net_transport::NetTransport,
    peers::with_peer,
    transport::{ShardTransport, TransportError},
    NodeError,
};

pub(super) async fn serve(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = session(&shared, stream).await {
                        tracing::debug!(%e, "control connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(%e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

fn failed(message: impl Into<String>) -> LocalResponse {
    LocalResponse::Failed {
        message: message.into(),
    }
}

fn from_transport(e: TransportError) -> LocalResponse {
    match e {
        TransportError::Unreachable { peer, reason } => LocalResponse::Unreachable {
            peer: peer.to_bytes(),
            reason,
        },
        TransportError::Refused { peer, reply } => LocalResponse::Refused {
            peer: peer.to_bytes(),
            reply,
        },
        TransportError::NotFound { peer } => LocalResponse::NotFound {
            peer: peer.to_bytes(),
        },
        TransportError::Stopped => failed("the node's network has stopped"),
    }
}

async fn session(shared: &Shared, mut stream: UnixStream) -> Result<(), NodeError> {
    match read_frame::<_, LocalRequest>(&mut stream, MAX_LOCAL_REQUEST).await? {
        Some(LocalRequest::Hello { version }) if version == CONTROL_SOCKET_VERSION => {
            let hello = LocalResponse::Hello {
                version: CONTROL_SOCKET_VERSION,
                peer: shared.net.local_peer_id().to_bytes(),
            };
            write_frame(&mut stream, &hello).await?;
        }
        Some(LocalRequest::Hello { version }) => {
            let msg = format!(
                "control socket version {version} is not supported (this node speaks {CONTROL_SOCKET_VERSION}); use the same kith version for the CLI and the node"
            );
            return write_frame(&mut stream, &failed(msg)).await;
        }
        Some(_) => return write_frame(&mut stream, &failed("send Hello first")).await,
        None => return Ok(()),
    }
    let mut owner: Option<NetTransport> = None;
    while let Some(request) = read_frame::<_, LocalRequest>(&mut stream, MAX_LOCAL_REQUEST).await? {
        dispatch(shared, &mut owner, &mut stream, request).await?;
    }
    Ok(())
}

/// Answers one request, writing the response (and any shard bytes).
async fn dispatch(
    shared: &Shared,
    owner: &mut Option<NetTransport>,
    stream: &mut UnixStream,
    request: LocalRequest,
) -> Result<(), NodeError> {
    let response = match request {
        LocalRequest::Hello { .. } => failed("Hello was already sent"),
        LocalRequest::Info => LocalResponse::Info {
            peer: shared.net.local_peer_id().to_bytes(),
            addrs: addrs_to(&shared.net.listen_addrs().await?),
        },
        LocalRequest::Invite => match super::make_invite(shared).await {
            Ok(code) => LocalResponse::Invite { code },
            Err(e) => failed(e.to_string()),
        },
        LocalRequest::AddPeer { code } => match add_peer(shared, &code).await {
            Ok(peer) => LocalResponse::PeerAdded {
                peer: peer.to_bytes(),
            },
            Err(message) => failed(message),
        },
        LocalRequest::ListPeers => LocalResponse::Peers(list_peers(shared).await),
        LocalRequest::SetOwner { seed } => match OwnerKeypair::from_seed(seed) {
            Ok(key) => {
                *owner = Some(NetTransport::new(
                    shared.net.clone(),
                    key,
                    Arc::clone(&shared.book),
                ));
                LocalResponse::Done
            }
            Err(e) => failed(e.to_string()),
        },
        LocalRequest::Store {
            peer,
            tag,
            index,
            len,
        } => store(owner.as_ref(), stream, &peer, tag, index, len).await?,
        other => {
            let Some(t) = owner.as_ref() else {
                return write_frame(stream, &failed("no owner key set: send SetOwner first")).await;
            };
            // A request that does not decode (a bad peer id) is answered,
            // not a reason to drop the connection: no bytes follow it.
            match owner_request(t, other)
                .await
                .unwrap_or_else(|e| Answer::Message(failed(e.to_string())))
            {
                Answer::Message(m) => m,
                Answer::Fetching(mut body) => {
                    let sending = LocalResponse::Sending { len: body.len() };
                    write_frame(stream, &sending).await?;
                    return relay_fetch(&mut body, stream).await;
                }
            }
        }
    };
    write_frame(stream, &response).await
}

enum Answer {
    Message(LocalResponse),
    /// Shard bytes arriving from a holder, passed on as they come.
    Fetching(FetchBody),
}

/// Bytes relayed per read from a holder to the local client.
const RELAY_CHUNK: usize = 256 * 1024;

/// Passes a fetch's bytes on to the client as they arrive, so the node
/// never holds a whole shard. The length was announced already: a holder
/// that stops early fails the request, and the caller closes the
/// connection, which the client sees as a shard cut short.
async fn relay_fetch(body: &mut FetchBody, stream: &mut UnixStream) -> Result<(), NodeError> {
    use tokio::io::AsyncWriteExt as _;
    let mut buf = vec![0u8; RELAY_CHUNK.min(usize::try_from(body.len()).unwrap_or(RELAY_CHUNK))];
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(|e| NodeError::Control(format!("shard from the holder: {e}")))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        stream
            .write_all(chunk)
            .await
            .map_err(|e| NodeError::Control(format!("write: {e}")))?;
    }
}

/// The `ShardTransport` requests other than `Store`.
async fn owner_request(t: &NetTransport, request: LocalRequest) -> Result<Answer, NodeError> {
    let msg = |r: Result<LocalResponse, TransportError>| {
        Answer::Message(r.unwrap_or_else(from_transport))
    };
    Ok(match request {
        LocalRequest::UsablePeers => msg(t.usable_peers().await.map(|v| {
            LocalResponse::UsablePeers(
                v.into_iter()
                    .map(|u| WireUsablePeer {
                        peer: u.peer.to_bytes(),
                        addrs: addrs_to(&u.addrs),
                        free: u.free,
                        uptime: u.profile.uptime,
                        failure_domain: u.profile.failure_domain,
                        always_on: u.profile.always_on,
                    })
                    .collect(),
            )
        })),
        LocalRequest::KnownPeers => msg(t
            .known_peers()
            .await
            .map(|v| LocalResponse::KnownPeers(v.into_iter().map(|p| p.to_bytes()).collect()))),
        LocalRequest::LearnPeers { peers } => {
            let peers = peers
                .iter()
                .map(|(p, a)| Ok((peer_from(p)?, addrs_from(a))))
                .collect::<Result<Vec<_>, NodeError>>()?;
            msg(t.learn_peers(peers).await.map(|()| LocalResponse::Done))
        }
        LocalRequest::Fetch {
            peer,
            tag,
            index,
            offset,
            len,
            max_len,
        } => {
            let peer = peer_from(&peer)?;
            let key = ShardKey {
                owner: t.owner(),
                tag,
                index,
            };
            match t.open_fetch(peer, key, offset, len, max_len).await {
                Ok(body) => Answer::Fetching(body),
                Err(e) => Answer::Message(from_transport(e)),
            }
        }
        LocalRequest::Holdings { peer } => {
            let peer = peer_from(&peer)?;
            msg(t.holdings(peer).await.map(LocalResponse::Holdings))
        }
        LocalRequest::Delete { peer, shards } => {
            let peer = peer_from(&peer)?;
            msg(t
                .delete(peer, shards)
                .await
                .map(|count| LocalResponse::Deleted { count }))
        }
        _ => Answer::Message(failed("unexpected request")),
    })
}

/// Redeems an invite code: dial the inviter, present the secret, record it.
async fn add_peer(shared: &Shared, code: &str) -> Result<PeerId, String> {
    let code = InviteCode::decode(code).map_err(|e| e.to_string())?;
    if code.peer == shared.net.local_peer_id() {
        return Err("this invite code is this node's own".to_owned());
    }
    let mut errors = Vec::new();
    let mut connected = false;
    for addr in &code.addrs {
        match shared.net.connect(&with_peer(addr, code.peer)).await {
            Ok(_) => {
                connected = true;
                break;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !connected {
        return Err(format!(
            "cannot reach the inviting node {}: {}",
            code.peer,
            if errors.is_empty() {
                "the code lists no address".to_owned()
            } else {
                errors.join("; ")
            }
        ));
    }
    let req = kith_net::ControlRequest::RedeemInvite {
        secret: code.secret,
    };
    match shared.net.request(code.peer, req).await {
        Ok(kith_net::ControlResponse::InviteAccepted) => {}
        Ok(other) => return Err(format!("unexpected answer {other:?}")),
        Err(kith_net::NetError::Refused { reply, .. })
            if reply.code == kith_net::ErrorCode::InvalidInvite =>
        {
            return Err(
                "the inviting node refused the code: it was used already, has expired, or was made by another node"
                    .to_owned(),
            )
        }
        Err(e) => return Err(e.to_string()),
    }
    shared
        .book
        .add_friend(code.peer, &code.addrs)
        .map_err(|e| e.to_string())?;
    tracing::info!(peer = %code.peer, "invite accepted: a new friend");
    Ok(code.peer)
}

/// How long `peer list` waits for a connected friend to say what it holds
/// for us. A friend whose machine froze keeps its connection until pings
/// fail (about a minute); the list must not wait on it meanwhile.
const LIST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Friends and discovered strangers, with their state.
async fn list_peers(shared: &Shared) -> Vec<PeerStatus> {
    let connected = shared.net.connected_peers().await.unwrap_or_default();
    let friends = shared.book.friend_list();
    let asks = friends.iter().map(|(peer, addrs)| {
        let peer = *peer;
        let is_connected = connected.contains(&peer);
        async move {
            let (held_by_it, reason) = if is_connected {
                let ask = shared.net.request(peer, kith_net::ControlRequest::Quota);
                match tokio::time::timeout(LIST_ANSWER_WAIT, ask).await {
                    Ok(Ok(kith_net::ControlResponse::Quota(q))) => (Some(q.used), None),
                    Ok(Ok(other)) => (None, Some(format!("it answered {other:?}"))),
                    Ok(Err(e)) => (None, Some(format!("it did not answer: {e}"))),
                    Err(_) => (
                        None,
                        Some(format!(
                            "it did not answer within {} s",
                            LIST_ANSWER_WAIT.as_secs()
                        )),
                    ),
                }
            } else {
                let reason = shared
                    .book
                    .error(&peer)
                    .unwrap_or_else(|| "not connected yet".to_owned());
                (None, Some(reason))
            };
            PeerStatus {
                peer: peer.to_bytes(),
                friend: true,
                connected: is_connected,
                reason,
                addrs: addrs_to(addrs),
                held_for_it: shared.hold.held_for(&peer),
                held_by_it,
                discovered: None,
            }
        }
    });
    let mut out: Vec<PeerStatus> = futures::future::join_all(asks).await;
    for (peer, addrs, source) in shared.book.discovered() {
        if shared.book.is_friend(&peer) {
            continue;
        }
        let is_connected = connected.contains(&peer);
        out.push(PeerStatus {
            peer: peer.to_bytes(),
            friend: false,
            connected: is_connected,
            reason: None,
            addrs: addrs_to(&addrs),
            held_for_it: shared.hold.held_for(&peer),
            held_by_it: None,
            discovered: Some(
                match source {
                    kith_net::DiscoverySource::Mdns => "mdns",
                    _ => "dht",
                }
                .to_owned(),
            ),
        });
    }
    out
}

async fn store(
    owner: Option<&NetTransport>,
    stream: &mut UnixStream,
    peer: &[u8],
    tag: kith_net::ObjectTag,
    index: u16,
    len: u64,
) -> Result<LocalResponse, NodeError> {
    if len > MAX_SHARD_LEN {
        return Err(NodeError::Control(format!(
            "a shard of {len} bytes exceeds the limit of {MAX_SHARD_LEN}"
        )));
    }
    // The bytes follow the header whatever the answer will be. They go
    // straight from the socket to the holder; whatever a failed store left
    // unread is drained before answering, so the next request on this
    // connection starts where it should.
    let mut bytes = (&mut *stream).take(len);
    let outcome = match owner {
        None => failed("no owner key set"),
        Some(t) => match peer_from(peer) {
            Err(e) => failed(e.to_string()),
            Ok(peer) => {
                let key = ShardKey {
                    owner: t.owner(),
                    tag,
                    index,
                };
                let reader = tokio_util::compat::TokioAsyncReadCompatExt::compat(&mut bytes);
                match t.store_from(peer, key, len, reader).await {
                    Ok(()) => LocalResponse::Done,
                    Err(e) => from_transport(e),
                }
            }
        },
    };
    tokio::io::copy(&mut bytes, &mut tokio::io::sink())
        .await
        .map_err(|e| NodeError::Control(format!("read: {e}")))?;
    if bytes.limit() > 0 {
        return Err(NodeError::Control("the shard bytes ended early".to_owned()));
    }
    Ok(outcome)
}
