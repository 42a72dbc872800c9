//! Starting the disk write of shard bytes as they arrive.
//!
//! A holder syncs every shard before it confirms it. Left alone, the kernel
//! writes a shard's pages out only at that sync, so a 5 MiB shard costs a
//! burst of disk time in which the owner waits for the confirmation, and
//! the holders of an object tend to sync at once. Asking for the write
//! right after each buffer lands in the page cache spreads the disk work
//! over the transfer; the final sync then waits only for the last buffer.
//! This is a hint: the sync is what makes the shard durable.

use std::fs::File;

/// Starts writing `len` bytes of `file` from `offset` to disk without
/// waiting for them (Linux; elsewhere a no-op).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn start(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the file
    // descriptor is borrowed from a `File` that outlives the call.
    // Failure is harmless: the sync before the confirmation still writes
    // the bytes, so its result is ignored.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Starts writing `len` bytes of `file` from `offset` to disk without
/// waiting for them (Linux; elsewhere a no-op).
#[cfg(not(target_os = "linux"))]
pub(crate) fn start(_file: &File, _offset: u64, _len: usize) {}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn starting_the_write_of_a_range_leaves_the_file_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let mut f = File::create(&path).unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
        f.write_all(&bytes).unwrap();
        start(&f, 0, bytes.len());
        start(&f, 1 << 20, 5 << 20);
        start(&f, u64::MAX, usize::MAX);
        f.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
