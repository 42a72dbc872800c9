//! Large buffers used again instead of freed.
//!
//! A backup fills a pack buffer (16 MiB by default) and, on a peer
//! repository, two or more parity buffers of a third of that for every
//! pack, and drops them once the pack is stored. The allocator hands such
//! sizes back to the kernel on free, so every new one arrives as untouched
//! pages: one page fault and one page cleared per 4 KiB, about 15% of a
//! backup client's CPU time. Buffers taken here go back to a small pool
//! when their last user drops them, already mapped.
//!
//! The pool only holds buffers that were freed, at most [`KEEP`] of them,
//! so it never holds more than the backup had in use at once.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers smaller than this are left to the allocator: below it, a fresh
/// buffer costs little and pooling it would only pin memory.
pub const MIN_POOLED: usize = 1 << 20;

/// Most buffers the pool keeps.
pub const KEEP: usize = 16;

/// A pool of large buffers; the process uses one, [`POOL`].
pub struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// The process's pool.
pub static POOL: Pool = Pool::new();

impl Pool {
    /// An empty pool.
    pub const fn new() -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while the lock was held left a plain list of buffers.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for at least `capacity` bytes: a pooled
    /// one when one is large enough, otherwise a new one.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        if capacity >= MIN_POOLED {
            let mut free = self.free();
            // The smallest buffer that fits, so that large ones stay for
            // large requests.
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= capacity)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut buf = free.swap_remove(i);
                buf.clear();
                return buf;
            }
        }
        Vec::with_capacity(capacity)
    }

    /// A buffer of `len` zero bytes (see [`Pool::take`]).
    pub fn zeroed(&self, len: usize) -> Vec<u8> {
        let mut buf = self.take(len);
        buf.resize(len, 0);
        buf
    }

    /// Gives `buf` back to the pool (or to the allocator when it is small
    /// or the pool is full).
    pub fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() < MIN_POOLED {
            return;
        }
        let mut free = self.free();
        if free.len() < KEEP {
            free.push(buf);
        }
    }

    /// `buf` as [`Bytes`] that go back to this pool when the last clone or
    /// slice of them is dropped.
    pub fn into_bytes(&'static self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < MIN_POOLED {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled { buf, pool: self })
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

/// The owner behind [`Pool::into_bytes`]: returns its buffer on drop.
struct Pooled {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    #[test]
    fn bytes_made_from_a_buffer_return_it_when_the_last_slice_drops() {
        let pool = pool();
        let size = MIN_POOLED * 3;
        let mut buf = pool.take(size);
        buf.extend(std::iter::repeat_n(7u8, size));
        let address = buf.as_ptr() as usize;
        let bytes = pool.into_bytes(buf);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.free().len(), 0, "a slice still uses the buffer");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        let again = pool.take(size);
        assert!(again.is_empty(), "a pooled buffer comes back empty");
        assert!(again.capacity() >= size);
        assert_eq!(
            again.as_ptr() as usize,
            address,
            "the same memory is used again"
        );
    }

    #[test]
    fn a_zeroed_buffer_is_all_zero_even_when_its_memory_held_other_bytes() {
        let pool = pool();
        let size = MIN_POOLED * 2;
        let mut buf = pool.take(size);
        buf.extend(std::iter::repeat_n(0xa5u8, size));
        pool.give_back(buf);
        let zeroed = pool.zeroed(size - 100);
        assert_eq!(pool.free().len(), 0, "the pooled buffer was used");
        assert_eq!(zeroed.len(), size - 100);
        assert!(zeroed.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_request_takes_the_smallest_buffer_that_fits() {
        let pool = pool();
        for mib in [8, 2, 4] {
            pool.give_back(Vec::with_capacity(mib * MIN_POOLED));
        }
        assert_eq!(pool.take(3 * MIN_POOLED).capacity(), 4 * MIN_POOLED);
        assert_eq!(
            pool.take(9 * MIN_POOLED).capacity(),
            9 * MIN_POOLED,
            "none fits: a new one"
        );
        assert_eq!(pool.free().len(), 2);
    }

    #[test]
    fn the_pool_keeps_few_large_buffers_and_no_small_ones() {
        let pool = pool();
        pool.give_back(vec![0u8; 100]);
        assert_eq!(pool.free().len(), 0);
        assert_eq!(&pool.into_bytes(vec![1u8; 100])[..], &[1u8; 100]);
        assert_eq!(pool.free().len(), 0);
        for _ in 0..KEEP + 3 {
            pool.give_back(Vec::with_capacity(MIN_POOLED));
        }
        assert_eq!(pool.free().len(), KEEP);
    }
}
