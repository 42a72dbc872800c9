//! Shard format v3: the self-describing, authenticated header in front of
//! every shard body (docs/PROTOCOL.md, "Shard format").
//!
//! ```text
//! offset  size  field
//!      0     8  magic "KITHSHRD"
//!      8     1  version (3; 1 and 2 are still read)
//!      9     1  flags (0)
//!     10     4  header length in bytes, MAC included (u32 LE)
//!     14    32  owner id
//!     46    32  object tag
//!     78     2  shard index (u16 LE)
//!     80     2  k: shards needed (u16 LE)
//!     82     2  n: shards stored (u16 LE)
//!     84     8  object length (u64 LE)
//!     92     8  shard body length (u64 LE)
//!    100    32  body digest (v2, v3: over the block hashes; v1: BLAKE3 of the body)
//!    132     4  block size (u32 LE)
//!    136     4  block count (u32 LE)
//!    140   154  sealed object name
//!    294  32×c  BLAKE3 of each block of the body
//!      …    32  keyed BLAKE3 (header key) of every byte before it
//! ```
//!
//! The body digest of version 2 is derived from the block hashes
//! ([`body_digest`]) rather than hashed over the body a second time: the
//! block hashes already cover every byte, and the writer then hashes each
//! byte once. Version 1 digested the body itself.
//!
//! Version 3 has the layout of version 2; only the parity shards differ:
//! they are computed over GF(2^8) instead of GF(2^16) (see `erasure.rs`),
//! so the version tells a reader which code rebuilds the object.
//!
//! A holder's list of shards and these headers are enough to rebuild the
//! owner's placement map; the block hashes let a ranged read verify just
//! the blocks it fetched. Every field is checked before it is used and the
//! decoder never indexes out of bounds: hostile bytes give an error.
#![deny(clippy::indexing_slicing)]

use kith_net::{ObjectTag, OwnerId};

use super::name::SEALED_NAME_LEN;

/// The first bytes of every shard.
pub const MAGIC: [u8; 8] = *b"KITHSHRD";
/// The shard format version this code writes.
pub const VERSION: u8 = 3;
/// The oldest shard format version this code still reads.
pub const OLDEST_VERSION: u8 = 1;
/// Key-derivation context of the version 2 body digest.
const BODY_DIGEST_CONTEXT: &str = "kith shard body digest v2";
/// Bytes before the block hashes.
pub const FIXED_LEN: usize = 140 + SEALED_NAME_LEN;
/// Length of the trailing MAC.
pub const MAC_LEN: usize = 32;
/// Most block hashes a header may carry; the block size grows instead.
pub const MAX_BLOCKS: u32 = 1024;
/// Smallest block size.
pub const MIN_BLOCK: u32 = 64 * 1024;
/// Largest header a decoder accepts.
pub const MAX_HEADER_LEN: usize = FIXED_LEN + 32 * MAX_BLOCKS as usize + MAC_LEN;
/// What a reader fetches first to learn a header's length.
pub const PROBE_LEN: usize = FIXED_LEN + 32 * 64 + MAC_LEN;

/// A decoded shard header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    /// The shard format version ([`VERSION`] for new shards).
    pub version: u8,
    /// Whose shard this is.
    pub owner: OwnerId,
    /// The object it belongs to.
    pub tag: ObjectTag,
    /// The object's name, sealed under the owner's name key.
    pub sealed_name: [u8; SEALED_NAME_LEN],
    /// Index among the object's `n` shards.
    pub index: u16,
    /// Shards needed to rebuild the object.
    pub k: u16,
    /// Shards stored.
    pub n: u16,
    /// Length of the whole object.
    pub object_len: u64,
    /// Length of the body that follows this header.
    pub body_len: u64,
    /// The body digest: [`body_digest`] of the block hashes (versions 2 and 3),
    /// or BLAKE3 of the body (version 1).
    pub body_hash: [u8; 32],
    /// Bytes per block of the body (the last block may be shorter).
    pub block_size: u32,
    /// BLAKE3 of each block of the body.
    pub blocks: Vec<[u8; 32]>,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than the header needs.
    #[error("shard header truncated: {have} bytes, {need} needed")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// Not a kith shard.
    #[error("not a kith shard (bad magic)")]
    BadMagic,
    /// A shard format this version of kith does not know: written by a newer
    /// kith, not damaged.
    #[error("shard format version {0} is not supported by this kith; upgrade kith")]
    Unsupported(u8),
    /// Fields that contradict each other.
    #[error("shard header is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// The MAC does not verify: altered, or not this owner's.
    #[error("shard header does not authenticate (altered, or another owner's)")]
    BadMac,
}

/// Length of each of the `k` data shards of an object of `object_len`
/// bytes: whole copies when `k == 1`, else the object split in `k` parts,
/// rounded up to an even length (the erasure code works on pairs of bytes).
pub fn shard_len(object_len: u64, k: u16) -> u64 {
    if k <= 1 {
        return object_len;
    }
    let per = object_len.div_ceil(u64::from(k));
    per + (per & 1)
}

/// The block size for a body of `body_len` bytes: the smallest power of
/// two from [`MIN_BLOCK`] up that needs at most [`MAX_BLOCKS`] blocks.
pub fn block_size_for(body_len: u64) -> u32 {
    let mut size = u64::from(MIN_BLOCK);
    while body_len.div_ceil(size) > u64::from(MAX_BLOCKS) {
        size *= 2;
    }
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// Number of blocks of a body.
pub fn block_count(body_len: u64, block_size: u32) -> u64 {
    if block_size == 0 {
        return 0;
    }
    body_len.div_ceil(u64::from(block_size))
}

/// BLAKE3 of each `block_size` block of `body`.
pub fn block_hashes(body: &[u8], block_size: u32) -> Vec<[u8; 32]> {
    let size = usize::try_from(block_size).unwrap_or(usize::MAX).max(1);
    body.chunks(size)
        .map(|b| *blake3::hash(b).as_bytes())
        .collect()
}

/// The version 2 body digest: BLAKE3 in key-derivation mode over the
/// body's block hashes in order.
pub fn body_digest(blocks: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(BODY_DIGEST_CONTEXT);
    for b in blocks {
        h.update(b);
    }
    *h.finalize().as_bytes()
}

/// Header length for a body of `body_len` bytes.
pub fn header_len(body_len: u64) -> usize {
    let blocks = block_count(body_len, block_size_for(body_len));
    FIXED_LEN + 32 * usize::try_from(blocks).unwrap_or(usize::MAX / 64) + MAC_LEN
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self.pos.checked_add(n).ok_or(HeaderError::Truncated {
            need: usize::MAX,
            have: self.bytes.len(),
        })?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(HeaderError::Truncated {
                need: end,
                have: self.bytes.len(),
            })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let s = self.take(N)?;
        s.try_into().map_err(|_| HeaderError::Truncated {
            need: N,
            have: s.len(),
        })
    }

    fn u16(&mut self) -> Result<u16, HeaderError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

impl ShardHeader {
    /// Whether `body` is the body this header describes: every block hash
    /// matches and so does the body digest.
    pub fn body_matches(&self, body: &[u8]) -> bool {
        if body.len() as u64 != self.body_len {
            return false;
        }
        if self.version == 1 {
            return *blake3::hash(body).as_bytes() == self.body_hash;
        }
        block_hashes(body, self.block_size) == self.blocks
            && body_digest(&self.blocks) == self.body_hash
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + 32 * self.blocks.len() + MAC_LEN
    }

    /// Encodes the header and appends the MAC under `key`.
    pub fn encode(&self, key: &[u8; 32]) -> Vec<u8> {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(0);
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&self.owner.0);
        out.extend_from_slice(&self.tag.0);
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&self.n.to_le_bytes());
        out.extend_from_slice(&self.object_len.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.body_hash);
        out.extend_from_slice(&self.block_size.to_le_bytes());
        let count = u32::try_from(self.blocks.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.sealed_name);
        for b in &self.blocks {
            out.extend_from_slice(b);
        }
        let mac = blake3::keyed_hash(key, &out);
        out.extend_from_slice(mac.as_bytes());
        out
    }

    /// The header length announced by the first bytes of a shard, checked
    /// against the limits, so a reader knows how much to fetch.
    pub fn announced_len(bytes: &[u8]) -> Result<usize, HeaderError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.array::<8>()? != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = r.array::<1>()?[0];
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(HeaderError::Unsupported(version));
        }
        r.take(1)?;
        let len = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if !(FIXED_LEN + MAC_LEN..=MAX_HEADER_LEN).contains(&len) {
            return Err(HeaderError::Inconsistent("header length out of range"));
        }
        Ok(len)
    }

    /// Decodes a header from the start of `bytes` (which may continue with
    /// the body) without checking its MAC; returns it with its length.
    /// Use [`ShardHeader::decode`] for anything that is trusted afterwards.
    pub fn decode_unverified(bytes: &[u8]) -> Result<(Self, usize), HeaderError> {
        let announced = Self::announced_len(bytes)?;
        let mut r = Reader { bytes, pos: 0 };
        r.take(8)?;
        let version = r.array::<1>()?[0];
        let flags = r.array::<1>()?[0];
        if flags != 0 {
            return Err(HeaderError::Inconsistent("unknown flags"));
        }
        r.take(4)?;
        let owner = OwnerId(r.array()?);
        let tag = ObjectTag(r.array()?);
        let index = r.u16()?;
        let k = r.u16()?;
        let n = r.u16()?;
        let object_len = r.u64()?;
        let body_len = r.u64()?;
        let body_hash = r.array()?;
        let block_size = r.u32()?;
        let count = r.u32()?;
        let sealed_name = r.array()?;
        if k == 0 || n == 0 || k > n {
            return Err(HeaderError::Inconsistent(
                "k and n must satisfy 1 <= k <= n",
            ));
        }
        if index >= n {
            return Err(HeaderError::Inconsistent("shard index not below n"));
        }
        if body_len != shard_len(object_len, k) {
            return Err(HeaderError::Inconsistent(
                "body length does not match object length and k",
            ));
        }
        if k > 1 && object_len == 0 {
            return Err(HeaderError::Inconsistent("an empty object is never split"));
        }
        if block_size != block_size_for(body_len) {
            return Err(HeaderError::Inconsistent("unexpected block size"));
        }
        if u64::from(count) != block_count(body_len, block_size) {
            return Err(HeaderError::Inconsistent(
                "block count does not match body length",
            ));
        }
        let expected = FIXED_LEN
            .checked_add(32 * usize::try_from(count).unwrap_or(usize::MAX / 64))
            .and_then(|l| l.checked_add(MAC_LEN))
            .ok_or(HeaderError::Inconsistent("header length overflows"))?;
        if expected != announced {
            return Err(HeaderError::Inconsistent(
                "header length does not match block count",
            ));
        }
        let mut blocks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for _ in 0..count {
            blocks.push(r.array()?);
        }
        r.take(MAC_LEN)?;
        Ok((
            Self {
                version,
                owner,
                tag,
                sealed_name,
                index,
                k,
                n,
                object_len,
                body_len,
                body_hash,
                block_size,
                blocks,
            },
            announced,
        ))
    }

    /// Decodes a header from the start of `bytes` and checks its MAC under
    /// `key`; returns it with its length.
    pub fn decode(bytes: &[u8], key: &[u8; 32]) -> Result<(Self, usize), HeaderError> {
        let (header, len) = Self::decode_unverified(bytes)?;
        let body = len.checked_sub(MAC_LEN).ok_or(HeaderError::Truncated {
            need: MAC_LEN,
            have: len,
        })?;
        let signed = bytes.get(..body).ok_or(HeaderError::Truncated {
            need: body,
            have: bytes.len(),
        })?;
        let mac = bytes.get(body..len).ok_or(HeaderError::Truncated {
            need: len,
            have: bytes.len(),
        })?;
        let expected = blake3::keyed_hash(key, signed);
        // blake3::Hash compares in constant time.
        let given: [u8; 32] = mac.try_into().map_err(|_| HeaderError::BadMac)?;
        if expected != blake3::Hash::from(given) {
            return Err(HeaderError::BadMac);
        }
        Ok((header, len))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(object_len: u64, k: u16, n: u16, index: u16) -> ShardHeader {
        let body_len = shard_len(object_len, k);
        let block_size = block_size_for(body_len);
        let count = block_count(body_len, block_size);
        ShardHeader {
            version: VERSION,
            owner: OwnerId([1; 32]),
            tag: ObjectTag([2; 32]),
            sealed_name: [3; SEALED_NAME_LEN],
            index,
            k,
            n,
            object_len,
            body_len,
            body_hash: [4; 32],
            block_size,
            blocks: (0..count).map(|i| [i as u8; 32]).collect(),
        }
    }

    const KEY: [u8; 32] = [7; 32];

    /// A header for `body` of the given version, digest filled in.
    fn describing(body: &[u8], version: u8) -> ShardHeader {
        let mut h = header(body.len() as u64, 1, 3, 0);
        h.version = version;
        h.blocks = block_hashes(body, h.block_size);
        h.body_hash = if version == 1 {
            *blake3::hash(body).as_bytes()
        } else {
            body_digest(&h.blocks)
        };
        h
    }

    #[test]
    fn a_body_matches_its_header_in_every_version_and_a_flipped_byte_does_not() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        for version in [1, 2, 3] {
            let h = describing(&body, version);
            let (back, _) = ShardHeader::decode(&h.encode(&KEY), &KEY).unwrap();
            assert_eq!(back, h);
            assert!(back.body_matches(&body), "version {version}");
            let mut bad = body.clone();
            bad[200_000] ^= 1;
            assert!(!back.body_matches(&bad), "version {version}");
            assert!(!back.body_matches(&body[1..]), "version {version}");
        }
    }

    #[test]
    fn the_body_digest_is_fixed() {
        assert_eq!(
            hex::encode(body_digest(&[[1; 32], [2; 32]])),
            "a0d4f825ecc6cf6a7535a5a164763ac7d0ed868c3da76b53592d8be2486f6f66",
            "the body digest is part of shard format 2"
        );
        assert_ne!(
            body_digest(&[[2; 32], [1; 32]]),
            body_digest(&[[1; 32], [2; 32]])
        );
    }

    #[test]
    fn a_version_2_digest_is_not_the_plain_hash_of_the_body() {
        let body = vec![9u8; 100_000];
        let h = describing(&body, 2);
        assert_ne!(h.body_hash, *blake3::hash(&body).as_bytes());
        let mut swapped = h.clone();
        swapped.body_hash = *blake3::hash(&body).as_bytes();
        assert!(!swapped.body_matches(&body));
    }

    #[test]
    fn version_0_is_refused_as_unsupported() {
        let mut bytes = header(1000, 1, 3, 0).encode(&KEY);
        bytes[8] = 0;
        assert_eq!(
            ShardHeader::decode_unverified(&bytes).unwrap_err(),
            HeaderError::Unsupported(0)
        );
    }

    #[test]
    fn header_layout_starts_with_magic_version_and_length() {
        let h = header(1 << 20, 3, 5, 4);
        let bytes = h.encode(&KEY);
        assert_eq!(&bytes[..8], b"KITHSHRD");
        assert_eq!(bytes[8], VERSION);
        assert_eq!(bytes.len(), header_len(h.body_len));
        assert_eq!(ShardHeader::announced_len(&bytes).unwrap(), bytes.len());
        assert_eq!(FIXED_LEN, 294);
    }

    #[test]
    fn newer_version_is_unsupported_not_corrupt() {
        let mut bytes = header(10, 1, 3, 0).encode(&KEY);
        bytes[8] = VERSION + 1;
        assert_eq!(
            ShardHeader::decode(&bytes, &KEY).unwrap_err(),
            HeaderError::Unsupported(VERSION + 1)
        );
    }

    #[test]
    fn wrong_key_fails() {
        let bytes = header(10, 1, 3, 0).encode(&KEY);
        assert_eq!(
            ShardHeader::decode(&bytes, &[8; 32]).unwrap_err(),
            HeaderError::BadMac
        );
    }

    #[test]
    fn huge_bodies_keep_at_most_max_blocks() {
        for len in [0u64, 1, 64 << 10, (64 << 10) + 1, 1 << 30, 1 << 40] {
            let size = block_size_for(len);
            assert!(block_count(len, size) <= u64::from(MAX_BLOCKS), "{len}");
        }
    }

    proptest! {
        #[test]
        fn header_round_trips(object_len in 0u64..(200 << 20), k in 1u16..9, extra in 0u16..4, index_seed: u16) {
            let k = if object_len == 0 { 1 } else { k };
            let n = k + extra;
            let h = header(object_len, k, n, index_seed % n);
            let mut bytes = h.encode(&KEY);
            let len = bytes.len();
            bytes.extend_from_slice(b"body follows");
            let (back, got_len) = ShardHeader::decode(&bytes, &KEY).unwrap();
            prop_assert_eq!(back, h);
            prop_assert_eq!(got_len, len);
        }

        #[test]
        fn any_flipped_or_truncated_header_is_refused(object_len in 1u64..(4 << 20), pos_seed: usize, bit in 0u8..8, cut_seed: usize) {
            let h = header(object_len, 3, 5, 1);
            let bytes = h.encode(&KEY);
            let mut flipped = bytes.clone();
            let pos = pos_seed % flipped.len();
            flipped[pos] ^= 1 << bit;
            prop_assert!(ShardHeader::decode(&flipped, &KEY).is_err());
            let cut = cut_seed % bytes.len();
            prop_assert!(ShardHeader::decode(&bytes[..cut], &KEY).is_err());
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = ShardHeader::decode_unverified(&bytes);
            let mut prefixed = MAGIC.to_vec();
            prefixed.push(VERSION);
            prefixed.extend_from_slice(&bytes);
            let _ = ShardHeader::decode(&prefixed, &KEY);
        }
    }
}
