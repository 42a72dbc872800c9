//! Answers what other peers ask of this node: control requests (quota,
//! challenges, holdings, deletes, invites) and shard streams (stores into
//! the hold, fetches out of it), and keeps the peer book up to date.

use std::sync::Arc;

use kith_net::{
    ControlRequest, ControlResponse, ErrorCode, ErrorReply, InboundFetch, InboundShard,
    InboundStore, NetEvent, PeerId, MAX_HOLDINGS_PAGE,
};
use tokio::sync::mpsc;

use super::Shared;
use crate::hold::direct::{self, AlignedBuf, ShardReader, ShardWriter};

/// Control requests answered at once. Answers wait for the disk on the
/// blocking pool; without a bound, a peer flooding requests would have
/// tokio start a thread for each (up to its limit of 512). The rest wait
/// their turn as tasks, which cost a few hundred bytes each.
const ANSWERS_AT_ONCE: usize = 8;

pub(super) async fn run(shared: Arc<Shared>, mut events: mpsc::Receiver<NetEvent>) {
    let answering = Arc::new(tokio::sync::Semaphore::new(ANSWERS_AT_ONCE));
    while let Some(event) = events.recv().await {
        match event {
            NetEvent::InboundRequest {
                peer,
                request,
                responder,
            } => {
                let shared = Arc::clone(&shared);
                let answering = Arc::clone(&answering);
                tokio::spawn(async move {
                    // Never closed, so a permit always comes.
                    let Ok(_turn) = answering.acquire_owned().await else {
                        return;
                    };
                    // Answers read and commit the node's database, which
                    // waits for the disk: on the blocking pool, so that the
                    // network thread keeps moving meanwhile.
                    let answer =
                        tokio::task::spawn_blocking(move || answer(&shared, peer, request))
                            .await
                            .unwrap_or_else(|e| {
                                tracing::error!(%e, "a control request's answer failed");
                                refused(ErrorCode::Internal, "the holder failed internally")
                            });
                    if let Err(e) = responder.respond(answer).await {
                        tracing::debug!(%peer, %e, "cannot answer a control request");
                    }
                });
            }
            NetEvent::InboundShard(InboundShard::Store(store)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { receive(&shared, store).await });
            }
            NetEvent::InboundShard(InboundShard::Fetch(fetch)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { serve(&shared, fetch).await });
            }
            NetEvent::PeerConnected { peer, addr } => {
                tracing::info!(%peer, %addr, friend = shared.book.is_friend(&peer), "connected");
            }
            NetEvent::PeerDisconnected { peer } => {
                tracing::info!(%peer, "disconnected");
                shared.auth.forget_peer(&peer);
            }
            NetEvent::PeerDiscovered {
                peer,
                addrs,
                source,
            } => {
                tracing::debug!(%peer, ?source, "discovered");
                shared.book.on_discovered(peer, addrs, source);
                if shared.book.is_friend(&peer) {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let _ = shared.book.connect(&shared.net, peer).await;
                    });
                }
            }
            NetEvent::PeerIdentified { peer, listen_addrs } => {
                shared.book.on_identified(peer, listen_addrs);
            }
            NetEvent::Listening { addr } => tracing::info!(%addr, "listening"),
            other => tracing::debug!(?other, "ignoring a network event"),
        }
    }
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ControlResponse {
    ControlResponse::Error(ErrorReply::new(code, message))
}

fn internal(e: &crate::NodeError) -> ControlResponse {
    tracing::error!(%e, "failed to answer a request");
    refused(ErrorCode::Internal, "the holder failed internally")
}

fn answer(shared: &Shared, peer: PeerId, request: ControlRequest) -> ControlResponse {
    let hold = &shared.hold;
    let local = shared.net.local_peer_id();
    match request {
        ControlRequest::Quota => ControlResponse::Quota(hold.quota_report(
            &peer,
            shared.book.is_friend(&peer),
            shared.config.always_on,
        )),
        ControlRequest::Challenge { owner } => match hold.knows_owner(&owner) {
            Ok(true) => ControlResponse::Challenge {
                nonce: shared.auth.issue(peer, owner),
            },
            Ok(false) => refused(ErrorCode::NotFound, "no shards are held for this owner"),
            Err(e) => internal(&e),
        },
        ControlRequest::ListHoldings {
            proof,
            after,
            limit,
        } => {
            if let Err(reply) = shared.auth.check(peer, &proof, &local) {
                return ControlResponse::Error(reply);
            }
            let limit = limit.min(MAX_HOLDINGS_PAGE) as usize;
            match hold.list(&proof.owner, after, limit) {
                Ok((shards, more)) => ControlResponse::Holdings { shards, more },
                Err(e) => internal(&e),
            }
        }
        ControlRequest::Delete { proof, shards } => {
            if let Err(reply) = shared.auth.check(peer, &proof, &local) {
                return ControlResponse::Error(reply);
            }
            match hold.delete(&proof.owner, &shards) {
                Ok(count) => ControlResponse::Deleted { count },
                Err(e) => internal(&e),
            }
        }
        ControlRequest::ShardStatus { key } => {
            if !shared.book.is_friend(&peer) && !shared.auth.is_proven(peer, key.owner) {
                return refused(ErrorCode::Unauthorized, "only friends may ask");
            }
            match hold.status(&key) {
                Ok(status) => ControlResponse::ShardStatus(status),
                Err(e) => internal(&e),
            }
        }
        ControlRequest::RedeemInvite { secret } => match shared.book.friends().redeem(&secret) {
            Ok(true) => match shared.book.add_friend(peer, &[]) {
                Ok(()) => {
                    tracing::info!(%peer, "invite redeemed: a new friend");
                    ControlResponse::InviteAccepted
                }
                Err(e) => internal(&e),
            },
            Ok(false) => refused(
                ErrorCode::InvalidInvite,
                "unknown, used or expired invite; ask for a new one",
            ),
            Err(e) => internal(&e),
        },
        _ => refused(ErrorCode::Unsupported, "unknown request"),
    }
}

/// The most of a shard file read or written at once.
const FILE_IO: usize = crate::hold::direct::POOLED_SIZE;

/// A buffer for `len` bytes of file I/O: up to [`FILE_IO`], never empty.
fn io_buffer(len: u64) -> usize {
    usize::try_from(len).unwrap_or(FILE_IO).clamp(1, FILE_IO)
}

/// Why a shard body did not reach its file.
enum BodyError {
    Network(kith_net::NetError),
    Disk(std::io::Error),
}

/// Writes a shard body to `file` from `offset` a buffer at a time on the
/// blocking pool, reading the next buffer from the network meanwhile.
/// Bytes go from the stream straight into the aligned buffer the file is
/// written from, which the disk takes directly ([`direct`]). On a network
/// error the write already started is waited for.
async fn write_body(
    body: &mut kith_net::StoreBody,
    file: &Arc<ShardWriter>,
    mut offset: u64,
    cap: usize,
) -> Result<(), BodyError> {
    type Writing = tokio::task::JoinHandle<std::io::Result<AlignedBuf>>;
    async fn wait(writing: Option<Writing>) -> Result<Option<AlignedBuf>, BodyError> {
        match writing {
            None => Ok(None),
            Some(w) => match w.await {
                Ok(Ok(buf)) => Ok(Some(buf)),
                Ok(Err(e)) => Err(BodyError::Disk(e)),
                Err(e) => Err(BodyError::Disk(std::io::Error::other(e))),
            },
        }
    }
    let mut fill = AlignedBuf::take(cap);
    let mut filled = 0;
    let mut want = direct::first_fill(offset, fill.capacity());
    let mut writing: Option<Writing> = None;
    let result = loop {
        let read = match fill.as_mut_slice().get_mut(filled..want) {
            Some(rest) if !rest.is_empty() => body.read(rest).await,
            _ => Ok(0),
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => break Err(BodyError::Network(e)),
        };
        filled += n;
        let done = n == 0;
        if filled == want || (done && filled > 0) {
            let back = match wait(writing.take()).await {
                Ok(back) => back.unwrap_or_else(|| AlignedBuf::take(cap)),
                Err(e) => break Err(e),
            };
            let data = std::mem::replace(&mut fill, back);
            want = fill.capacity();
            let (f, at, len) = (Arc::clone(file), offset, filled);
            offset += filled as u64;
            filled = 0;
            writing = Some(tokio::task::spawn_blocking(move || {
                f.write_at(data.as_slice().get(..len).unwrap_or_default(), at)?;
                Ok(data)
            }));
        }
        if done {
            break Ok(());
        }
    };
    fill.give_back();
    let last = match wait(writing).await {
        Ok(buf) => {
            if let Some(buf) = buf {
                buf.give_back();
            }
            Ok(())
        }
        Err(e) => Err(e),
    };
    if let (Err(BodyError::Network(_)), Err(BodyError::Disk(e))) = (&result, &last) {
        tracing::warn!(%e, "a shard write failed as its upload broke off");
    }
    result.and(last)
}

/// Receives a shard into the hold.
async fn receive(shared: &Shared, store: InboundStore) {
    let peer = store.peer;
    let key = store.key;
    let store_len = store.len;
    if !shared.book.is_friend(&peer) {
        let reply = ErrorReply::new(
            ErrorCode::Unauthorized,
            "only friends may store here; exchange an invite first",
        );
        let _ = store.refuse(reply).await;
        return;
    }
    // Reserving and recording a shard commit the hold's index, which waits
    // for the disk: on the blocking pool, so that the node's network keeps
    // moving meanwhile.
    let hold = Arc::clone(&shared.hold);
    let (total_len, offset) = (store.total_len, store.offset);
    let begun = tokio::task::spawn_blocking(move || hold.begin_store(peer, key, total_len, offset))
        .await
        .unwrap_or_else(|_| {
            Err(ErrorReply::new(
                ErrorCode::Internal,
                "the holder cannot record",
            ))
        });
    let ticket = match begun {
        Ok(t) => t,
        Err(reply) => {
            tracing::info!(%peer, %reply, "store refused");
            let _ = store.refuse(reply).await;
            return;
        }
    };
    let end = store.offset + store.len;
    let (path, keep) = (ticket.path.clone(), ticket.offset);
    let file = tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        ShardWriter::open(&path, keep)
    });
    let file = match file.await.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            tracing::error!(path = %ticket.path.display(), %e, "cannot open a shard file");
            let _ = store
                .refuse(ErrorReply::new(
                    ErrorCode::Internal,
                    "the holder cannot write",
                ))
                .await;
            return;
        }
    };
    let mut body = match store.accept().await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(%peer, %e, "store stream failed");
            return;
        }
    };
    let written = match write_body(&mut body, &file, ticket.offset, io_buffer(store_len)).await {
        Ok(()) => {
            let f = Arc::clone(&file);
            tokio::task::spawn_blocking(move || f.sync())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        }
        Err(BodyError::Network(e)) => {
            // The bytes written stay unconfirmed; the next start trims them.
            tracing::info!(%peer, %e, "upload interrupted");
            return;
        }
        Err(BodyError::Disk(e)) => Err(e),
    };
    if let Err(e) = written {
        tracing::error!(%e, "cannot write a shard file");
        let reply = ErrorReply::new(ErrorCode::Internal, "the holder cannot write");
        let _ = body.refuse(reply).await;
        return;
    }
    let hold = Arc::clone(&shared.hold);
    let finished = tokio::task::spawn_blocking(move || hold.finish_store(&ticket, end))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match finished {
        Ok(received) => {
            let _ = body.finish(received).await;
        }
        Err(e) => {
            tracing::error!(%e, "cannot record a stored shard");
            let reply = ErrorReply::new(ErrorCode::Internal, "the holder cannot record");
            let _ = body.refuse(reply).await;
        }
    }
}

/// Serves shard bytes to a peer that proved their owner.
async fn serve(shared: &Shared, fetch: InboundFetch) {
    let peer = fetch.peer;
    let key = fetch.key;
    if !shared.auth.is_proven(peer, key.owner) {
        let reply = ErrorReply::new(
            ErrorCode::Unauthorized,
            "prove the owner (challenge, then list holdings) before fetching",
        );
        let _ = fetch.refuse(reply).await;
        return;
    }
    let entry = match shared.hold.entry(&key) {
        Ok(Some(e)) if e.received == e.total_len => e,
        Ok(_) => {
            let _ = fetch
                .refuse(ErrorReply::new(ErrorCode::NotFound, "no such shard here"))
                .await;
            return;
        }
        Err(e) => {
            tracing::error!(%e, "cannot read the hold index");
            let _ = fetch
                .refuse(ErrorReply::new(ErrorCode::Internal, "the holder failed"))
                .await;
            return;
        }
    };
    if fetch.offset > entry.total_len {
        let _ = fetch
            .refuse(ErrorReply::new(
                ErrorCode::TooLarge,
                "offset past the shard's end",
            ))
            .await;
        return;
    }
    let available = entry.total_len - fetch.offset;
    let len = fetch.len.map_or(available, |l| l.min(available));
    let path = shared.hold.path(&key);
    let mut file = match ShardReader::open(&path, fetch.offset, len, io_buffer(len)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), %e, "cannot open a held shard");
            let _ = fetch
                .refuse(ErrorReply::new(
                    ErrorCode::Internal,
                    "the holder cannot read",
                ))
                .await;
            return;
        }
    };
    let sent = if shared.faults.corrupt_shards {
        let mut data = Vec::new();
        match futures::AsyncReadExt::read_to_end(&mut file, &mut data).await {
            Ok(_) => {
                corrupt(&mut data);
                fetch.send(&data).await
            }
            Err(e) => Err(e.into()),
        }
    } else {
        fetch.send_from(len, file).await
    };
    if let Err(e) = sent {
        tracing::debug!(%peer, %e, "sending a shard failed");
    }
}

/// The `corrupt-shards` fault: flips one byte in every 4 KiB.
fn corrupt(data: &mut [u8]) {
    for b in data.iter_mut().step_by(4096) {
        *b ^= 0x5a;
    }
}
