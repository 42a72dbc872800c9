//! Erasure coding: an object cut into `n` shard bodies, any `k` of which
//! rebuild it. New objects use Reed-Solomon over GF(2^8) (the
//! `reed-solomon-erasure` crate, shard format 3); objects written in shard
//! formats 1 and 2 used GF(2^16) (`reed-solomon-simd`) and are still
//! decoded with it. docs/DECISIONS.md says why the code changed.
//!
//! Layout: the first `k` shards (data shards) are the object itself, cut
//! into `k` consecutive parts of [`shard_len`] bytes, the last one padded
//! with zeros; the other `n - k` are parity. Because data shards hold the
//! object's bytes in order, a ranged read needs only the data shards that
//! cover the range. With `k = 1` every shard is a whole copy.

use std::sync::Mutex;

use bytes::Bytes;
use reed_solomon_erasure::galois_8;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use super::error::ObjectError;
use super::header::shard_len;

/// The code that computed an object's parity shards. Data shards are the
/// object's bytes under either code; only parity differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// Reed-Solomon over GF(2^16) by `reed-solomon-simd`: shard formats 1
    /// and 2.
    Gf16,
    /// Reed-Solomon over GF(2^8) by `reed-solomon-erasure`: shard format 3.
    Gf8,
}

impl Code {
    /// The code of shards in format `version`.
    pub(crate) fn of_version(version: u8) -> Code {
        if version >= 3 {
            Code::Gf8
        } else {
            Code::Gf16
        }
    }
}

/// Most shards a GF(2^8) code can have.
pub(crate) const MAX_SHARDS: u16 = 256;

fn erasure_err(e: reed_solomon_simd::Error) -> ObjectError {
    ObjectError::Erasure {
        reason: e.to_string(),
    }
}

fn gf8_err(e: reed_solomon_erasure::Error) -> ObjectError {
    ObjectError::Erasure {
        reason: e.to_string(),
    }
}

/// The GF(2^8) code with `k` data and `parity` parity shards.
fn gf8(
    k: u16,
    parity: u16,
) -> Result<reed_solomon_erasure::ReedSolomon<galois_8::Field>, ObjectError> {
    reed_solomon_erasure::ReedSolomon::new(usize::from(k), usize::from(parity)).map_err(gf8_err)
}

fn usize_len(len: u64) -> Result<usize, ObjectError> {
    usize::try_from(len).map_err(|_| ObjectError::Erasure {
        reason: format!("object of {len} bytes does not fit in memory"),
    })
}

/// GF(2^16) decoders kept between objects (rebuilds of shards in formats 1
/// and 2). A decoder's work buffer is a few times the size of the object;
/// allocating and zeroing it afresh for every pack cost more in page faults
/// than the decoding itself. Reads run on many blocking threads, so the
/// decoders are shared rather than kept per thread.
struct Pool<T> {
    idle: Mutex<Vec<T>>,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<T> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Keeps `coder`, last used for shards of `shard_len` bytes, for the
    /// next object, unless enough are idle already or its work buffer (which
    /// never shrinks) is larger than an idle coder should hold on to.
    fn give_back(&self, coder: T, shard_len: usize) {
        if shard_len > MAX_POOLED_SHARD {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CODERS {
            idle.push(coder);
        }
    }
}

/// Idle decoders kept: as many as objects are read at once by default.
const IDLE_CODERS: usize = 4;
/// Coders that worked on longer shards are dropped after use: a 3-of-5
/// decoder's work buffer is eight shards long. Pack-sized objects cut 2 or
/// more ways stay below this.
const MAX_POOLED_SHARD: usize = 8 << 20;
static DECODERS: Pool<ReedSolomonDecoder> = Pool::new();

/// The `k` data shard bodies of `data`: the object cut in `k` parts of
/// [`shard_len`] bytes, slices of `data` except the last part when it needs
/// padding; with `k = 1`, `data` itself.
pub(crate) fn data_shards(data: &Bytes, k: u16) -> Result<Vec<Bytes>, ObjectError> {
    if k == 0 {
        return Err(ObjectError::Erasure {
            reason: "invalid code with k = 0".into(),
        });
    }
    if k == 1 {
        return Ok(vec![data.clone()]);
    }
    let len = usize_len(shard_len(data.len() as u64, k))?;
    Ok((0..usize::from(k))
        .map(|i| {
            let start = (i * len).min(data.len());
            let end = ((i + 1) * len).min(data.len());
            if end - start == len {
                return data.slice(start..end);
            }
            let pool = &kith_engine::buffers::POOL;
            let mut s = pool.take(len);
            s.extend_from_slice(data.get(start..end).unwrap_or(&[]));
            s.resize(len, 0);
            pool.into_bytes(s)
        })
        .collect())
}

/// The `n` shard bodies of `data` for a `k`-of-`n` code, parity computed
/// with the code new shards are written with ([`Code::Gf8`]).
pub(crate) fn encode(data: &Bytes, k: u16, n: u16) -> Result<Vec<Bytes>, ObjectError> {
    encode_with(Code::Gf8, data, k, n)
}

/// The `n` shard bodies of `data` for a `k`-of-`n` `code`. Data shards that
/// need no padding are slices of `data`, not copies; only the last data
/// shard (padded) and the parity shards are new memory.
pub(crate) fn encode_with(
    code: Code,
    data: &Bytes,
    k: u16,
    n: u16,
) -> Result<Vec<Bytes>, ObjectError> {
    if k > n || (code == Code::Gf8 && n > MAX_SHARDS) {
        return Err(ObjectError::Erasure {
            reason: format!("invalid code {k}-of-{n}"),
        });
    }
    if k == 1 {
        return Ok(vec![data.clone(); usize::from(n)]);
    }
    let mut shards = data_shards(data, k)?;
    let len = usize_len(shard_len(data.len() as u64, k))?;
    let parity = n - k;
    if parity == 0 {
        return Ok(shards);
    }
    if len == 0 {
        shards.extend((0..parity).map(|_| Bytes::new()));
        return Ok(shards);
    }
    let recovery = match code {
        Code::Gf8 => {
            // Parity comes from the engine's buffer pool, like the pack
            // it is computed from: both are made and dropped per pack.
            let pool = &kith_engine::buffers::POOL;
            let mut out: Vec<Vec<u8>> = (0..parity).map(|_| pool.zeroed(len)).collect();
            gf8(k, parity)?
                .encode_sep(&shards, &mut out)
                .map_err(gf8_err)?;
            out.into_iter().map(|b| pool.into_bytes(b)).collect()
        }
        Code::Gf16 => encode_gf16(&shards, k, parity, len)?,
    };
    shards.extend(recovery);
    Ok(shards)
}

/// GF(2^16) parity, which only shards of formats 1 and 2 carry: new
/// shards never need it, so its encoder is not pooled.
fn encode_gf16(
    shards: &[Bytes],
    k: u16,
    parity: u16,
    len: usize,
) -> Result<Vec<Bytes>, ObjectError> {
    let mut encoder =
        ReedSolomonEncoder::new(usize::from(k), usize::from(parity), len).map_err(erasure_err)?;
    for shard in shards {
        encoder.add_original_shard(shard).map_err(erasure_err)?;
    }
    let result = encoder.encode().map_err(erasure_err)?;
    Ok(result.recovery_iter().map(Bytes::copy_from_slice).collect())
}

/// Rebuilds an object of `object_len` bytes from at least `k` distinct
/// shard bodies `(index, body)` of a `k`-of-`n` `code`.
pub(crate) fn decode(
    code: Code,
    object_len: u64,
    k: u16,
    n: u16,
    shards: &[(u16, &[u8])],
) -> Result<Vec<u8>, ObjectError> {
    let total = usize_len(object_len)?;
    let len = usize_len(shard_len(object_len, k))?;
    if let Some(body) = shards.iter().find(|(_, b)| b.len() != len) {
        return Err(ObjectError::Erasure {
            reason: format!(
                "shard {} has {} bytes, {len} expected",
                body.0,
                body.1.len()
            ),
        });
    }
    if k == 1 {
        return shards
            .first()
            .map(|(_, b)| b.to_vec())
            .ok_or(ObjectError::Erasure {
                reason: "no shard to rebuild from".into(),
            });
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut data: Vec<Option<&[u8]>> = vec![None; usize::from(k)];
    for (i, b) in shards {
        if let Some(slot) = data.get_mut(usize::from(*i)) {
            *slot = Some(*b);
        }
    }
    let mut out = Vec::with_capacity(total);
    if data.iter().all(Option::is_some) {
        append_data(&mut out, total, &data, |_| None)?;
        return Ok(out);
    }
    match code {
        Code::Gf8 => decode_gf8(total, len, k, n, &data, shards),
        Code::Gf16 => {
            decode_gf16(&mut out, total, len, k, n, &data, shards)?;
            Ok(out)
        }
    }
}

/// Rebuilds the missing data shards in place: the present data shards are
/// copied to their places in the output and the missing ones computed
/// there from the parity shards given.
fn decode_gf8(
    total: usize,
    len: usize,
    k: u16,
    n: u16,
    data: &[Option<&[u8]>],
    shards: &[(u16, &[u8])],
) -> Result<Vec<u8>, ObjectError> {
    if n > MAX_SHARDS || k > n {
        return Err(ObjectError::Erasure {
            reason: format!("invalid code {k}-of-{n}"),
        });
    }
    let kk = usize::from(k);
    let width = kk.checked_mul(len).ok_or(ObjectError::Erasure {
        reason: "object too large".into(),
    })?;
    let mut out = vec![0u8; width];
    for (slot, given) in out.chunks_mut(len).zip(data) {
        if let Some(b) = given {
            slot.copy_from_slice(b);
        }
    }
    let mut parity: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false); usize::from(n - k)];
    for (i, b) in shards {
        if let Some(slot) = usize::from(*i)
            .checked_sub(kk)
            .and_then(|j| parity.get_mut(j))
        {
            *slot = (b.to_vec(), true);
        }
    }
    let mut slots: Vec<(&mut [u8], bool)> = out
        .chunks_mut(len)
        .zip(data)
        .map(|(slot, given)| (slot, given.is_some()))
        .collect();
    slots.extend(
        parity
            .iter_mut()
            .map(|(b, present)| (b.as_mut_slice(), *present)),
    );
    gf8(k, n - k)?
        .reconstruct_data(&mut slots)
        .map_err(gf8_err)?;
    drop(slots);
    out.truncate(total);
    Ok(out)
}

fn decode_gf16(
    out: &mut Vec<u8>,
    total: usize,
    len: usize,
    k: u16,
    n: u16,
    data: &[Option<&[u8]>],
    shards: &[(u16, &[u8])],
) -> Result<(), ObjectError> {
    let parity = usize::from(n - k);
    let mut decoder = match DECODERS.take() {
        Some(mut d) => {
            d.reset(usize::from(k), parity, len).map_err(erasure_err)?;
            d
        }
        None => ReedSolomonDecoder::new(usize::from(k), parity, len).map_err(erasure_err)?,
    };
    let rebuilt = (|| {
        for (i, b) in shards {
            if *i < k {
                decoder
                    .add_original_shard(usize::from(*i), b)
                    .map_err(erasure_err)?;
            } else if *i < n {
                decoder
                    .add_recovery_shard(usize::from(*i - k), b)
                    .map_err(erasure_err)?;
            }
        }
        let result = decoder.decode().map_err(erasure_err)?;
        append_data(out, total, data, |i| result.restored_original(i))
    })();
    DECODERS.give_back(decoder, len);
    rebuilt
}

/// Appends the data shards to `out` in order, up to `total` bytes: those
/// given in `data`, the others from `restored`.
fn append_data<'a>(
    out: &mut Vec<u8>,
    total: usize,
    data: &[Option<&'a [u8]>],
    restored: impl Fn(usize) -> Option<&'a [u8]>,
) -> Result<(), ObjectError> {
    for (i, slot) in data.iter().enumerate() {
        let part: &[u8] = match slot {
            Some(b) => b,
            None => restored(i).ok_or(ObjectError::Erasure {
                reason: format!("data shard {i} was not restored"),
            })?,
        };
        let want = (total - out.len()).min(part.len());
        out.extend_from_slice(part.get(..want).unwrap_or(part));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_k_shards_rebuild_the_object(
            data in proptest::collection::vec(any::<u8>(), 1..20_000),
            k in 1u16..6,
            parity in 0u16..4,
            pick_seed: u64,
        ) {
            let n = k + parity;
            let code = if pick_seed % 2 == 0 { Code::Gf8 } else { Code::Gf16 };
            let shards = encode_with(code, &Bytes::from(data.clone()), k, n).unwrap();
            prop_assert_eq!(shards.len(), usize::from(n));
            // Choose k distinct shards from a seed.
            let mut order: Vec<u16> = (0..n).collect();
            let mut s = pick_seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let chosen: Vec<(u16, &[u8])> = order[..usize::from(k)]
                .iter()
                .map(|&i| (i, &shards[usize::from(i)][..]))
                .collect();
            let back = decode(code, data.len() as u64, k, n, &chosen).unwrap();
            prop_assert_eq!(back, data);
        }
    }

    #[test]
    fn too_few_shards_is_an_error_not_a_panic() {
        let data = Bytes::from(vec![5u8; 1000]);
        for code in [Code::Gf8, Code::Gf16] {
            let shards = encode_with(code, &data, 3, 5).unwrap();
            let two: Vec<(u16, &[u8])> = vec![(0, &shards[0]), (4, &shards[4])];
            assert!(decode(code, 1000, 3, 5, &two).is_err());
            let wrong_len: Vec<(u16, &[u8])> = vec![(0, &shards[0][..10])];
            assert!(decode(code, 1000, 3, 5, &wrong_len).is_err());
            // A decoder goes back to the pool after a failed decode and works.
            let three: Vec<(u16, &[u8])> = vec![(0, &shards[0]), (3, &shards[3]), (4, &shards[4])];
            assert_eq!(decode(code, 1000, 3, 5, &three).unwrap(), data);
        }
    }

    #[test]
    fn the_two_codes_share_data_shards_and_differ_in_parity() {
        let data = Bytes::from((0..30_000u32).map(|i| (i * 31) as u8).collect::<Vec<_>>());
        let a = encode_with(Code::Gf8, &data, 3, 5).unwrap();
        let b = encode_with(Code::Gf16, &data, 3, 5).unwrap();
        assert_eq!(a[..3], b[..3]);
        assert_ne!(a[3], b[3]);
        // Parity of one code does not rebuild the other's object.
        let mixed: Vec<(u16, &[u8])> = vec![(0, &a[0]), (3, &a[3]), (4, &a[4])];
        assert_ne!(
            decode(Code::Gf16, 30_000, 3, 5, &mixed).ok(),
            Some(data.to_vec())
        );
        assert_eq!(decode(Code::Gf8, 30_000, 3, 5, &mixed).unwrap(), data);
    }

    #[test]
    fn new_shards_use_the_gf8_code() {
        assert_eq!(Code::of_version(super::super::header::VERSION), Code::Gf8);
        assert_eq!(Code::of_version(2), Code::Gf16);
        assert_eq!(Code::of_version(1), Code::Gf16);
    }

    #[test]
    fn an_empty_object_cut_several_ways_round_trips() {
        let shards = encode(&Bytes::new(), 3, 5).unwrap();
        assert_eq!(shards.len(), 5);
        let some: Vec<(u16, &[u8])> = vec![(2, &shards[2]), (3, &shards[3]), (4, &shards[4])];
        assert!(decode(Code::Gf8, 0, 3, 5, &some).unwrap().is_empty());
    }

    #[test]
    fn data_shards_without_padding_share_the_objects_memory() {
        let data = Bytes::from(vec![7u8; 3000]);
        let shards = encode(&data, 3, 5).unwrap();
        assert_eq!(shards[0].as_ptr(), data.as_ptr());
        assert_eq!(shards[1].as_ptr(), data[1000..].as_ptr());
    }

    #[test]
    fn data_shards_hold_the_object_in_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3001).collect();
        let shards = encode(&Bytes::from(data.clone()), 3, 5).unwrap();
        let len = shard_len(3001, 3) as usize;
        assert_eq!(len, 1002);
        assert_eq!(&shards[1][..len], &data[len..2 * len]);
    }
}
