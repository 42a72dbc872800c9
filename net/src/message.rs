//! The messages of `/kith/control/1` and the header messages of
//! `/kith/shard/1`, with their size limits. docs/PROTOCOL.md describes each
//! field and the encoding; keep the two in step.
//!
//! Evolution within a protocol id: variants are only ever appended to these
//! enums (postcard encodes a variant as its index). A peer that receives a
//! variant it does not know answers with [`ErrorCode::Unsupported`]; a field
//! change to an existing variant needs a new variant or a new protocol id.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    challenge::{Nonce, OwnerProof},
    ids::{ObjectTag, OwnerId, ShardKey},
};

/// Largest encoded control request accepted, in bytes.
pub const MAX_CONTROL_REQUEST: u32 = 64 * 1024;
/// Largest encoded control response accepted, in bytes.
pub const MAX_CONTROL_RESPONSE: u32 = 1024 * 1024;
/// Largest number of holdings returned in one [`ControlResponse::Holdings`] page.
pub const MAX_HOLDINGS_PAGE: u32 = 8192;
/// Largest number of shards named in one [`ControlRequest::Delete`].
pub const MAX_DELETE_BATCH: usize = 1024;
/// Largest error message carried in an [`ErrorReply`], in bytes.
pub const MAX_ERROR_MESSAGE: usize = 256;
/// Largest encoded shard-stream header ([`ShardOpen`], [`ShardReply`]), in bytes.
pub const MAX_SHARD_HEADER: u32 = 4096;
/// Largest shard accepted on `/kith/shard/1`, in bytes (1 GiB).
pub const MAX_SHARD_LEN: u64 = 1 << 30;

/// A control request (`/kith/control/1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlRequest {
    /// What does the holder offer me? Answered by [`ControlResponse::Quota`].
    Quota,
    /// Give me a fresh nonce to prove that I am `owner`. Answered by
    /// [`ControlResponse::Challenge`].
    Challenge {
        /// The owner about to prove itself.
        owner: OwnerId,
    },
    /// List the shards held for `proof.owner`, in key order, after `after`.
    /// Answered by [`ControlResponse::Holdings`].
    ListHoldings {
        /// The owner's signature over a challenge this holder issued.
        proof: OwnerProof,
        /// Resume after this (tag, index); `None` starts at the beginning.
        after: Option<(ObjectTag, u16)>,
        /// Page size wanted; the holder caps it at [`MAX_HOLDINGS_PAGE`].
        limit: u32,
    },
    /// Delete these shards of `proof.owner`. Answered by [`ControlResponse::Deleted`].
    Delete {
        /// The owner's signature over a challenge this holder issued.
        proof: OwnerProof,
        /// The shards to delete, at most [`MAX_DELETE_BATCH`].
        shards: Vec<(ObjectTag, u16)>,
    },
    /// How much of this shard do you hold? Answered by
    /// [`ControlResponse::ShardStatus`]; used to resume uploads.
    ShardStatus {
        /// The shard asked about.
        key: ShardKey,
    },
    /// Redeem a one-time invite secret to become friends. Answered by
    /// [`ControlResponse::InviteAccepted`] or an error.
    RedeemInvite {
        /// The secret from the invite code.
        secret: [u8; 32],
    },
}

/// A control response (`/kith/control/1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlResponse {
    /// Answer to [`ControlRequest::Quota`].
    Quota(QuotaReport),
    /// Answer to [`ControlRequest::Challenge`]: sign this nonce.
    Challenge {
        /// Fresh random nonce, single-use.
        nonce: Nonce,
    },
    /// Answer to [`ControlRequest::ListHoldings`].
    Holdings {
        /// One page of holdings in (tag, index) order.
        shards: Vec<Holding>,
        /// Whether more follow after the last entry.
        more: bool,
    },
    /// Answer to [`ControlRequest::Delete`].
    Deleted {
        /// How many of the named shards existed and are now gone.
        count: u32,
    },
    /// Answer to [`ControlRequest::ShardStatus`].
    ShardStatus(ShardStatus),
    /// Answer to [`ControlRequest::RedeemInvite`]: we are friends now.
    InviteAccepted,
    /// The request was refused.
    Error(ErrorReply),
}

/// What a holder offers and what it holds for the asking peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    /// Bytes the holder offers to the asking peer in total.
    pub offered: u64,
    /// Bytes it currently holds for the asking peer.
    pub used: u64,
    /// Bytes of free space the holder has for anyone.
    pub free: u64,
    /// Whether the holder is an always-on node.
    pub always_on: bool,
}

/// One shard in a holdings listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The object.
    pub tag: ObjectTag,
    /// The shard index.
    pub index: u16,
    /// The shard's complete length in bytes.
    pub len: u64,
}

/// How much of a shard a holder has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardStatus {
    /// Nothing of it.
    Absent,
    /// An interrupted upload: the first `received` of `total_len` bytes.
    Partial {
        /// Bytes held, from offset 0.
        received: u64,
        /// The shard's announced total length.
        total_len: u64,
    },
    /// All of it.
    Complete {
        /// Its length.
        len: u64,
    },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request could not be decoded.
    Malformed,
    /// The request is a message kind or version this peer does not know.
    Unsupported,
    /// The owner proof is missing, stale or does not verify.
    Unauthorized,
    /// The shard or owner is unknown here.
    NotFound,
    /// Accepting would exceed the quota offered to the asking peer.
    OverQuota,
    /// The holder is overloaded; retry later with backoff.
    Busy,
    /// A size limit was exceeded.
    TooLarge,
    /// The invite secret is unknown, used or expired.
    InvalidInvite,
    /// The holder failed internally (disk error); retry later or elsewhere.
    Internal,
}

/// An error answer: a code to branch on and a short human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub code: ErrorCode,
    /// Detail for logs, at most [`MAX_ERROR_MESSAGE`] bytes.
    pub message: String,
}

impl ErrorReply {
    /// Builds a reply, truncating `message` to [`MAX_ERROR_MESSAGE`] bytes
    /// at a character boundary.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut end = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// The header an opener writes first on a `/kith/shard/1` stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ShardOpen {
    /// Store `len` bytes of the shard at `offset`; the bytes follow once the
    /// holder answers [`ShardReply::Ready`].
    Store {
        /// The shard.
        key: ShardKey,
        /// The shard's complete length.
        total_len: u64,
        /// Where these bytes start (non-zero to resume an upload).
        offset: u64,
        /// How many bytes follow.
        len: u64,
    },
    /// Send me the shard's bytes from `offset`, `len` of them (`None`: to the end).
    Fetch {
        /// The shard.
        key: ShardKey,
        /// First byte wanted.
        offset: u64,
        /// How many bytes; `None` for all from `offset` on.
        len: Option<u64>,
    },
}

/// The holder's header answers on a `/kith/shard/1` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ShardReply {
    /// Store accepted: send the bytes.
    Ready,
    /// Store complete: the holder now has the first `received` bytes of the shard.
    Stored {
        /// Contiguous bytes held from offset 0.
        received: u64,
    },
    /// Fetch accepted: exactly `len` bytes follow.
    Sending {
        /// Bytes that follow.
        len: u64,
    },
    /// Refused, before or after the bytes.
    Refused(ErrorReply),
}

/// Checks limits a decoded request must respect beyond its size.
pub(crate) fn validate_request(req: &ControlRequest) -> Result<(), ErrorReply> {
    match req {
        ControlRequest::Delete { shards, .. } if shards.len() > MAX_DELETE_BATCH => {
            Err(ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "{} shards in one delete, at most {MAX_DELETE_BATCH}",
                    shards.len()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Checks limits a decoded response must respect beyond its size.
pub(crate) fn validate_response(resp: &ControlResponse) -> Result<(), String> {
    match resp {
        ControlResponse::Holdings { shards, .. } if shards.len() > MAX_HOLDINGS_PAGE as usize => {
            Err(format!("{} holdings in one page", shards.len()))
        }
        ControlResponse::Error(e) if e.message.len() > MAX_ERROR_MESSAGE => {
            Err("error message too long".to_owned())
        }
        _ => Ok(()),
    }
}
