//! Content-defined chunking with FastCDC (2020), over a reader, without
//! copying each chunk out of the read buffer.
//!
//! The gear table is seeded per repository so that chunk boundaries, and so
//! the sizes a storage holder sees, differ between repositories.

use std::io::{ErrorKind, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, logarithm2, MASKS};

use crate::config::ChunkerParams;

/// Splits a byte stream into content-defined chunks.
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Chunker {
    /// A chunker for validated parameters and a seed.
    pub fn new(params: &ChunkerParams, seed: u64) -> Self {
        let bits = logarithm2(params.avg_size);
        let norm = u32::from(params.normalization);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        let mask = |i: u32| MASKS.get(i as usize).copied().unwrap_or(0);
        Chunker {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s: mask(bits + norm),
            mask_l: mask(bits.saturating_sub(norm)),
            gear,
            gear_ls,
        }
    }

    /// The largest chunk this chunker produces.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the next chunk at the start of `data`, which holds either
    /// at least `max` bytes or the rest of the stream.
    pub fn cut(&self, data: &[u8]) -> usize {
        let (_, n) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n.max(1).min(data.len())
    }

    /// Reads `reader` to its end and calls `f` with each chunk in order.
    /// `buf` is reused between calls to avoid allocation.
    // The loop keeps `start <= end <= capacity <= buf.len()`, and `cut`
    // returns at most the length it is given, so no range is out of bounds.
    #[allow(clippy::indexing_slicing)]
    pub fn for_each_chunk<R: Read, E: From<std::io::Error>>(
        &self,
        mut reader: R,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let capacity = 2 * self.max;
        if buf.len() < capacity {
            buf.resize(capacity, 0);
        }
        let mut start = 0usize;
        let mut end = 0usize;
        let mut eof = false;
        let mut total = 0u64;
        loop {
            if !eof && end - start < self.max {
                if start > 0 {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                while end < capacity {
                    match reader.read(&mut buf[end..capacity]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            let n = self.cut(&buf[start..end]);
            f(&buf[start..start + n])?;
            total += n as u64;
            start += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
            normalization: 1,
        }
    }

    fn chunks(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
        let c = Chunker::new(&small(), seed);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        c.for_each_chunk::<_, std::io::Error>(data, &mut buf, |chunk| {
            out.push(chunk.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_the_input_and_respect_bounds(data in proptest::collection::vec(any::<u8>(), 0..40_000), seed in any::<u64>()) {
            let cs = chunks(&data, seed);
            prop_assert_eq!(cs.concat(), data.clone());
            for (i, c) in cs.iter().enumerate() {
                prop_assert!(c.len() <= 4096);
                if i + 1 < cs.len() {
                    prop_assert!(c.len() >= 256);
                }
            }
        }
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let mut rng = 12345u64;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) as u8
            })
            .collect();
        let mut edited = data.clone();
        edited.splice(100_000..100_000, [1u8, 2, 3]);
        let a = chunks(&data, 1);
        let b = chunks(&edited, 1);
        let same = a.iter().filter(|c| b.contains(c)).count();
        assert!(same + 3 >= a.len(), "{same} of {} chunks survived", a.len());
    }

    #[test]
    fn the_seed_changes_boundaries() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        assert_ne!(chunks(&data, 1), chunks(&data, 2));
    }
}
