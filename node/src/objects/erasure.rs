//! Erasure coding: an object cut into `n` shard bodies, any `k` of which
//! rebuild it (Reed-Solomon over GF(2^16), the `reed-solomon-simd` crate;
//! docs/DECISIONS.md says why).
//!
//! Layout: the first `k` shards (data shards) are the object itself, cut
//! into `k` consecutive parts of [`shard_len`] bytes, the last one padded
//! with zeros; the other `n - k` are parity. Because data shards hold the
//! object's bytes in order, a ranged read needs only the data shards that
//! cover the range. With `k = 1` every shard is a whole copy.

use std::sync::Mutex;

use bytes::Bytes;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use super::error::ObjectError;
use super::header::shard_len;

fn erasure_err(e: reed_solomon_simd::Error) -> ObjectError {
    ObjectError::Erasure {
        reason: e.to_string(),
    }
}

fn usize_len(len: u64) -> Result<usize, ObjectError> {
    usize::try_from(len).map_err(|_| ObjectError::Erasure {
        reason: format!("object of {len} bytes does not fit in memory"),
    })
}

/// Coders kept between objects. A coder's work buffer is a few times the
/// size of the object; allocating and zeroing it afresh for every pack cost
/// more in page faults than the coding itself. Reads and writes run on many
/// blocking threads, so the coders are shared rather than kept per thread.
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

/// Idle coders kept per direction: as many as objects are read or written
/// at once by default.
const IDLE_CODERS: usize = 4;
/// Coders that worked on longer shards are dropped after use: a 3-of-5
/// decoder's work buffer is eight shards long. Pack-sized objects cut 2 or
/// more ways stay below this.
const MAX_POOLED_SHARD: usize = 8 << 20;
static ENCODERS: Pool<ReedSolomonEncoder> = Pool::new();
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
            let mut s = Vec::with_capacity(len);
            s.extend_from_slice(data.get(start..end).unwrap_or(&[]));
            s.resize(len, 0);
            Bytes::from(s)
        })
        .collect())
}

/// The `n` shard bodies of `data` for a `k`-of-`n` code. Data shards that
/// need no padding are slices of `data`, not copies; only the last data
/// shard (padded) and the parity shards are new memory.
pub(crate) fn encode(data: &Bytes, k: u16, n: u16) -> Result<Vec<Bytes>, ObjectError> {
    if k > n {
        return Err(ObjectError::Erasure {
            reason: format!("invalid code {k}-of-{n}"),
        });
    }
    if k == 1 {
        return Ok(vec![data.clone(); usize::from(n)]);
    }
    let mut shards = data_shards(data, k)?;
    let len = usize_len(shard_len(data.len() as u64, k))?;
    let parity = usize::from(n - k);
    if parity > 0 {
        let mut encoder = match ENCODERS.take() {
            Some(mut e) => {
                e.reset(usize::from(k), parity, len).map_err(erasure_err)?;
                e
            }
            None => ReedSolomonEncoder::new(usize::from(k), parity, len).map_err(erasure_err)?,
        };
        let recovery = (|| {
            for shard in &shards {
                encoder.add_original_shard(shard).map_err(erasure_err)?;
            }
            let result = encoder.encode().map_err(erasure_err)?;
            Ok::<_, ObjectError>(
                result
                    .recovery_iter()
                    .map(Bytes::copy_from_slice)
                    .collect::<Vec<_>>(),
            )
        })();
        ENCODERS.give_back(encoder, len);
        let recovery = recovery?;
        shards.extend(recovery);
    }
    Ok(shards)
}

/// Rebuilds an object of `object_len` bytes from at least `k` distinct
/// shard bodies `(index, body)` of a `k`-of-`n` code.
pub(crate) fn decode(
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
        append_data(&mut out, total, &data, |i| result.restored_original(i))
    })();
    DECODERS.give_back(decoder, len);
    rebuilt?;
    Ok(out)
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
            let shards = encode(&Bytes::from(data.clone()), k, n).unwrap();
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
            let back = decode(data.len() as u64, k, n, &chosen).unwrap();
            prop_assert_eq!(back, data);
        }
    }

    #[test]
    fn too_few_shards_is_an_error_not_a_panic() {
        let data = Bytes::from(vec![5u8; 1000]);
        let shards = encode(&data, 3, 5).unwrap();
        let two: Vec<(u16, &[u8])> = vec![(0, &shards[0]), (4, &shards[4])];
        assert!(decode(1000, 3, 5, &two).is_err());
        let wrong_len: Vec<(u16, &[u8])> = vec![(0, &shards[0][..10])];
        assert!(decode(1000, 3, 5, &wrong_len).is_err());
        // A decoder goes back to the pool after a failed decode and works.
        let three: Vec<(u16, &[u8])> = vec![(0, &shards[0]), (3, &shards[3]), (4, &shards[4])];
        assert_eq!(decode(1000, 3, 5, &three).unwrap(), data);
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
