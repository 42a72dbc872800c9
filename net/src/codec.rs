//! The request-response codec of `/kith/control/1`: one framed postcard
//! request, one framed postcard response per stream.
//!
//! An inbound request that is framed correctly but does not decode (an
//! unknown variant from a newer peer, or garbage) is passed up as
//! [`WireRequest::Undecodable`] so the network task can answer it with an
//! error reply instead of resetting the stream. A frame over the size limit
//! resets the stream: the remaining bytes are never read.

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;

use crate::{
    message::{
        validate_request, validate_response, ControlRequest, ControlResponse, ErrorCode,
        ErrorReply, MAX_CONTROL_REQUEST, MAX_CONTROL_RESPONSE,
    },
    wire, NetError,
};

/// Protocol id of the control protocol, version 1.
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/control/1");

/// A request as read off the wire.
#[derive(Debug)]
pub(crate) enum WireRequest {
    /// A valid request.
    Decoded(ControlRequest),
    /// A frame within the size limit that is not a valid request.
    Undecodable(ErrorReply),
}

#[derive(Clone, Copy, Default)]
pub(crate) struct ControlCodec;

fn to_io(e: NetError) -> io::Error {
    match e {
        NetError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// Decodes an inbound request frame's payload, never failing: a bad
/// payload becomes the error reply to send back.
pub(crate) fn decode_request(bytes: &[u8]) -> WireRequest {
    match wire::decode::<ControlRequest>("control request", bytes) {
        Ok(req) => match validate_request(&req) {
            Ok(()) => WireRequest::Decoded(req),
            Err(reply) => WireRequest::Undecodable(reply),
        },
        Err(e) => {
            // postcard reports an unknown enum variant as a bad variant index;
            // a newer peer's message kind is "unsupported", not "malformed".
            let code = match postcard::from_bytes::<u32>(bytes) {
                Ok(variant) if variant >= KNOWN_REQUEST_VARIANTS => ErrorCode::Unsupported,
                _ => ErrorCode::Malformed,
            };
            WireRequest::Undecodable(ErrorReply::new(code, e.to_string()))
        }
    }
}

/// Number of [`ControlRequest`] variants this version knows.
const KNOWN_REQUEST_VARIANTS: u32 = 6;

/// Decodes a response frame's payload.
pub(crate) fn decode_response(bytes: &[u8]) -> Result<ControlResponse, NetError> {
    let resp = wire::decode::<ControlResponse>("control response", bytes)?;
    validate_response(&resp).map_err(|reason| NetError::Malformed {
        what: "control response",
        reason,
    })?;
    Ok(resp)
}

#[async_trait::async_trait]
impl libp2p::request_response::Codec for ControlCodec {
    type Protocol = StreamProtocol;
    type Request = WireRequest;
    type Response = ControlResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = wire::read_frame(io, "control request", MAX_CONTROL_REQUEST)
            .await
            .map_err(to_io)?;
        Ok(decode_request(&bytes))
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ControlResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = wire::read_frame(io, "control response", MAX_CONTROL_RESPONSE)
            .await
            .map_err(to_io)?;
        decode_response(&bytes).map_err(to_io)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: WireRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            WireRequest::Decoded(req) => {
                wire::write_msg(io, "control request", &req, MAX_CONTROL_REQUEST)
                    .await
                    .map_err(to_io)
            }
            WireRequest::Undecodable(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an undecodable request is never sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: ControlResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        wire::write_msg(io, "control response", &resp, MAX_CONTROL_RESPONSE)
            .await
            .map_err(to_io)
    }
}
