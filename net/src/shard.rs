//! The shard stream protocol `/kith/shard/1`: shard bytes too large for a
//! control message travel on a stream of their own.
//!
//! Store: the opener writes a [`ShardOpen::Store`] frame and waits; the
//! holder answers [`ShardReply::Ready`] (or `Refused`), the opener writes
//! exactly `len` raw bytes, the holder answers [`ShardReply::Stored`] (or
//! `Refused`). Fetch: the opener writes [`ShardOpen::Fetch`]; the holder
//! answers [`ShardReply::Sending`] followed by exactly `len` raw bytes, or
//! `Refused`. Bytes move in chunks of [`CHUNK`], so neither side buffers a
//! whole shard unless it wants to.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};

use crate::{
    ids::ShardKey,
    message::{ErrorCode, ErrorReply, ShardOpen, ShardReply, MAX_SHARD_HEADER, MAX_SHARD_LEN},
    wire, NetError,
};

/// Protocol id of the shard stream protocol, version 1.
pub const SHARD_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/shard/1");

/// Size of the chunks shard bytes are read and written in: four whole yamux
/// frames of 60 KiB (see `muxer`), so no write leaves a short frame behind.
pub const CHUNK: usize = 240 * 1024;

/// How long either side waits for a header or for the next chunk.
pub(crate) const STREAM_IDLE: Duration = Duration::from_secs(30);

async fn idle<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::time::timeout(STREAM_IDLE, fut)
        .await
        .map_err(|_| NetError::Timeout(what))?
}

/// Reads the next bytes of a body of announced length into `dest`, at most
/// the `remaining` ones, and counts them off; `Ok(0)` once none remain (or
/// `dest` is empty). A `peer` (the holder or the sender) that stops early
/// is an error, not a short body.
async fn read_announced(
    stream: &mut Stream,
    remaining: &mut u64,
    dest: &mut [u8],
    peer: &str,
) -> Result<usize, NetError> {
    let want = usize::try_from(*remaining)
        .unwrap_or(usize::MAX)
        .min(dest.len());
    if want == 0 {
        return Ok(0);
    }
    let (dest, _) = dest.split_at_mut(want);
    let n = idle("shard bytes", async {
        stream.read(dest).await.map_err(NetError::from)
    })
    .await?;
    if n == 0 {
        return Err(NetError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the {peer} stopped before the announced end of the shard"),
        )));
    }
    *remaining -= n as u64;
    Ok(n)
}

async fn read_reply(stream: &mut Stream) -> Result<ShardReply, NetError> {
    idle(
        "shard reply",
        wire::read_msg(stream, "shard reply", MAX_SHARD_HEADER),
    )
    .await
}

async fn write_reply(stream: &mut Stream, reply: &ShardReply) -> Result<(), NetError> {
    idle(
        "shard reply write",
        wire::write_msg(stream, "shard reply", reply, MAX_SHARD_HEADER),
    )
    .await
}

fn unexpected(peer: PeerId, reply: &ShardReply) -> NetError {
    NetError::Protocol {
        peer,
        reason: format!("unexpected shard reply {reply:?}"),
    }
}

/// Opener side of a store, on an open stream: sends exactly `len` bytes
/// read from `reader`. Returns the bytes the holder now has contiguously
/// from offset 0.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn store<R: AsyncRead + Unpin>(
    mut stream: Stream,
    peer: PeerId,
    key: ShardKey,
    total_len: u64,
    offset: u64,
    len: u64,
    mut reader: R,
) -> Result<u64, NetError> {
    if total_len > MAX_SHARD_LEN {
        return Err(NetError::TooLarge {
            what: "shard",
            len: total_len,
            limit: MAX_SHARD_LEN,
        });
    }
    let open = ShardOpen::Store {
        key,
        total_len,
        offset,
        len,
    };
    idle(
        "shard header write",
        wire::write_msg(&mut stream, "shard header", &open, MAX_SHARD_HEADER),
    )
    .await?;
    match read_reply(&mut stream).await? {
        ShardReply::Ready => {}
        ShardReply::Refused(reply) => return Err(NetError::Refused { peer, reply }),
        other => return Err(unexpected(peer, &other)),
    }
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(len).unwrap_or(CHUNK))];
    let mut remaining = len;
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
        // `want` never grows, so this only shortens the buffer.
        buf.resize(want, 0);
        // A local read error aborts the upload; dropping the stream resets it.
        reader.read_exact(&mut buf).await?;
        let chunk = &buf;
        let s = &mut stream;
        idle("shard bytes write", async {
            s.write_all(chunk).await.map_err(NetError::from)
        })
        .await?;
        remaining -= want as u64;
    }
    idle("shard flush", async {
        stream.flush().await.map_err(NetError::from)
    })
    .await?;
    let result = match read_reply(&mut stream).await? {
        ShardReply::Stored { received } => Ok(received),
        ShardReply::Refused(reply) => Err(NetError::Refused { peer, reply }),
        other => Err(unexpected(peer, &other)),
    };
    let _ = stream.close().await;
    result
}

/// Asks for bytes of shard `key` and reads the holder's answer header:
/// the body that follows is announced, at most `max_len` bytes, and read
/// through the returned [`FetchBody`].
pub(crate) async fn open_fetch(
    mut stream: Stream,
    peer: PeerId,
    key: ShardKey,
    offset: u64,
    len: Option<u64>,
    max_len: u64,
) -> Result<FetchBody, NetError> {
    let open = ShardOpen::Fetch { key, offset, len };
    idle(
        "shard header write",
        wire::write_msg(&mut stream, "shard header", &open, MAX_SHARD_HEADER),
    )
    .await?;
    let announced = match read_reply(&mut stream).await? {
        ShardReply::Sending { len } => len,
        ShardReply::Refused(reply) => return Err(NetError::Refused { peer, reply }),
        other => return Err(unexpected(peer, &other)),
    };
    let limit = max_len.min(MAX_SHARD_LEN);
    if announced > limit || len.is_some_and(|want| announced > want) {
        // Dropping the stream resets it; the holder stops sending.
        return Err(NetError::TooLarge {
            what: "fetched shard",
            len: announced,
            limit: len.unwrap_or(limit).min(limit),
        });
    }
    Ok(FetchBody {
        stream,
        len: announced,
        remaining: announced,
    })
}

/// The bytes of a fetched shard as they arrive: exactly the announced
/// length. Dropping it before the end resets the stream.
#[derive(Debug)]
pub struct FetchBody {
    stream: Stream,
    len: u64,
    remaining: u64,
}

impl FetchBody {
    /// The length the holder announced.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the holder announced no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the next bytes into `buf`, at most what remains; `Ok(0)` once
    /// every announced byte has been read. A holder that stops early is an
    /// error, not a short answer.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if self.remaining == 0 {
            let _ = self.stream.close().await;
            return Ok(0);
        }
        read_announced(&mut self.stream, &mut self.remaining, buf, "holder").await
    }
}

/// Fetches bytes of shard `key` into `out` chunk by chunk; returns how many
/// were written. An answer longer than `max_len` is refused before anything
/// is written.
pub(crate) async fn fetch<W: AsyncWrite + Unpin>(
    stream: Stream,
    peer: PeerId,
    key: ShardKey,
    offset: u64,
    len: Option<u64>,
    max_len: u64,
    out: &mut W,
) -> Result<u64, NetError> {
    let mut body = open_fetch(stream, peer, key, offset, len, max_len).await?;
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(body.len()).unwrap_or(CHUNK))];
    loop {
        let n = body.read(&mut buf).await?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        out.write_all(chunk).await?;
    }
    out.flush().await?;
    Ok(body.len())
}

/// An inbound shard stream whose header has been read, handed to the node
/// in [`crate::NetEvent::InboundShard`].
#[derive(Debug)]
#[non_exhaustive]
pub enum InboundShard {
    /// A peer wants to store shard bytes here.
    Store(InboundStore),
    /// A peer wants shard bytes from here.
    Fetch(InboundFetch),
}

/// A peer's request to store bytes of a shard. Answer it with
/// [`InboundStore::accept`] or [`InboundStore::refuse`]; dropping it resets
/// the stream.
#[derive(Debug)]
pub struct InboundStore {
    /// The (noise-authenticated) peer sending.
    pub peer: PeerId,
    /// The shard.
    pub key: ShardKey,
    /// The shard's complete length.
    pub total_len: u64,
    /// Offset of the first byte that follows.
    pub offset: u64,
    /// Number of bytes that follow.
    pub len: u64,
    stream: Stream,
}

impl InboundStore {
    /// Accepts: tells the peer to send, and returns the body to read.
    pub async fn accept(mut self) -> Result<StoreBody, NetError> {
        write_reply(&mut self.stream, &ShardReply::Ready).await?;
        Ok(StoreBody {
            peer: self.peer,
            remaining: self.len,
            stream: self.stream,
        })
    }

    /// Refuses before any bytes are sent.
    pub async fn refuse(mut self, reply: ErrorReply) -> Result<(), NetError> {
        write_reply(&mut self.stream, &ShardReply::Refused(reply)).await?;
        let _ = self.stream.close().await;
        Ok(())
    }
}

/// The bytes of an accepted store. Read them with [`StoreBody::read`]
/// until it returns 0, then [`StoreBody::finish`].
#[derive(Debug)]
pub struct StoreBody {
    peer: PeerId,
    remaining: u64,
    stream: Stream,
}

impl StoreBody {
    /// Reads the next bytes straight into `dest`, at most what remains;
    /// `Ok(0)` once every announced byte was read (or when `dest` is
    /// empty). A sender that stops early is an error.
    pub async fn read(&mut self, dest: &mut [u8]) -> Result<usize, NetError> {
        read_announced(&mut self.stream, &mut self.remaining, dest, "sender").await
    }

    /// Bytes announced but not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The sending peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Confirms the store: the holder now has `received` bytes of the shard
    /// contiguously from offset 0.
    pub async fn finish(mut self, received: u64) -> Result<(), NetError> {
        write_reply(&mut self.stream, &ShardReply::Stored { received }).await?;
        let _ = self.stream.close().await;
        Ok(())
    }

    /// Refuses after (some of) the bytes, e.g. on a disk error.
    pub async fn refuse(mut self, reply: ErrorReply) -> Result<(), NetError> {
        write_reply(&mut self.stream, &ShardReply::Refused(reply)).await?;
        let _ = self.stream.close().await;
        Ok(())
    }
}

/// A peer's request for shard bytes. Answer with [`InboundFetch::send`],
/// [`InboundFetch::send_from`] or [`InboundFetch::refuse`].
#[derive(Debug)]
pub struct InboundFetch {
    /// The (noise-authenticated) peer asking.
    pub peer: PeerId,
    /// The shard.
    pub key: ShardKey,
    /// First byte wanted.
    pub offset: u64,
    /// Bytes wanted; `None` for all from `offset` on.
    pub len: Option<u64>,
    stream: Stream,
}

impl InboundFetch {
    /// Sends `data` (the requested range, already cut by the caller).
    pub async fn send(self, data: &[u8]) -> Result<(), NetError> {
        self.send_from(data.len() as u64, data).await
    }

    /// Sends exactly `len` bytes read from `reader`, chunk by chunk.
    pub async fn send_from<R: AsyncRead + Unpin>(
        mut self,
        len: u64,
        mut reader: R,
    ) -> Result<(), NetError> {
        if len > MAX_SHARD_LEN {
            return self
                .refuse(ErrorReply::new(
                    ErrorCode::TooLarge,
                    "shard over the protocol limit",
                ))
                .await;
        }
        write_reply(&mut self.stream, &ShardReply::Sending { len }).await?;
        let mut buf = vec![0u8; CHUNK];
        let mut remaining = len;
        while remaining > 0 {
            let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
            // `want` never grows, so this only shortens the buffer.
            buf.resize(want, 0);
            reader.read_exact(&mut buf).await?;
            let chunk = &buf;
            let stream = &mut self.stream;
            idle("shard bytes write", async {
                stream.write_all(chunk).await.map_err(NetError::from)
            })
            .await?;
            remaining -= want as u64;
        }
        idle("shard flush", async {
            self.stream.close().await.map_err(NetError::from)
        })
        .await
    }

    /// Refuses the fetch.
    pub async fn refuse(mut self, reply: ErrorReply) -> Result<(), NetError> {
        write_reply(&mut self.stream, &ShardReply::Refused(reply)).await?;
        let _ = self.stream.close().await;
        Ok(())
    }
}

/// Reads an inbound stream's header. A header that does not decode gets a
/// `Refused` reply here and never reaches the node.
pub(crate) async fn read_inbound(
    peer: PeerId,
    mut stream: Stream,
) -> Result<Option<InboundShard>, NetError> {
    let bytes = idle(
        "shard header",
        wire::read_frame(&mut stream, "shard header", MAX_SHARD_HEADER),
    )
    .await?;
    let open = match wire::decode::<ShardOpen>("shard header", &bytes) {
        Ok(open) => open,
        Err(e) => {
            let reply = ErrorReply::new(ErrorCode::Malformed, e.to_string());
            write_reply(&mut stream, &ShardReply::Refused(reply)).await?;
            let _ = stream.close().await;
            return Ok(None);
        }
    };
    Ok(Some(match open {
        ShardOpen::Store {
            key,
            total_len,
            offset,
            len,
        } => {
            let end = offset.checked_add(len);
            if total_len > MAX_SHARD_LEN || end.is_none_or(|end| end > total_len) {
                let reply = ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!(
                        "offset {offset} + len {len} vs total {total_len}, limit {MAX_SHARD_LEN}"
                    ),
                );
                write_reply(&mut stream, &ShardReply::Refused(reply)).await?;
                let _ = stream.close().await;
                return Ok(None);
            }
            InboundShard::Store(InboundStore {
                peer,
                key,
                total_len,
                offset,
                len,
                stream,
            })
        }
        ShardOpen::Fetch { key, offset, len } => InboundShard::Fetch(InboundFetch {
            peer,
            key,
            offset,
            len,
            stream,
        }),
    }))
}
