//! Length-prefixed postcard frames, the unit of every kith message on a stream.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! postcard. Readers check the declared length against a per-message cap
//! before allocating, and decoders refuse trailing bytes.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{de::DeserializeOwned, Serialize};

use crate::NetError;

/// Encodes `msg` as postcard, refusing results larger than `limit`.
pub(crate) fn encode<T: Serialize>(
    what: &'static str,
    msg: &T,
    limit: u32,
) -> Result<Vec<u8>, NetError> {
    let bytes = postcard::to_stdvec(msg).map_err(|e| NetError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if bytes.len() > limit as usize {
        return Err(NetError::TooLarge {
            what,
            len: bytes.len() as u64,
            limit: u64::from(limit),
        });
    }
    Ok(bytes)
}

/// Decodes exactly one postcard value from `bytes`; trailing bytes are an error.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, NetError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| NetError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(NetError::Malformed {
            what,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

/// Writes one frame: length then payload.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    payload: &[u8],
) -> Result<(), NetError> {
    let len = u32::try_from(payload.len()).map_err(|_| NetError::TooLarge {
        what: "frame",
        len: payload.len() as u64,
        limit: u64::from(u32::MAX),
    })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(payload).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes. The length is checked before
/// anything is allocated, so a hostile length costs nothing.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    what: &'static str,
    limit: u32,
) -> Result<Vec<u8>, NetError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > limit {
        return Err(NetError::TooLarge {
            what,
            len: u64::from(len),
            limit: u64::from(limit),
        });
    }
    let mut buf = vec![0u8; len as usize];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Encodes and writes one message as a frame.
pub(crate) async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    io: &mut W,
    what: &'static str,
    msg: &T,
    limit: u32,
) -> Result<(), NetError> {
    let bytes = encode(what, msg, limit)?;
    write_frame(io, &bytes).await
}

/// Reads and decodes one framed message.
pub(crate) async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    io: &mut R,
    what: &'static str,
    limit: u32,
) -> Result<T, NetError> {
    let bytes = read_frame(io, what, limit).await?;
    decode(what, &bytes)
}
