//! Shard files written and read around the page cache.
//!
//! What a holder keeps is other owners' cold data: it is read again only
//! when that owner restores or audits. Through the page cache, every byte
//! would be copied once more into pages the kernel must first find and
//! clear, and a night's backups from friends would push the household's
//! own files out of memory. On a virtual machine whose host takes back the
//! guest's free memory, a fresh page costs far more than the copy
//! (docs/BENCHMARKS.md). So shard bodies go to and from the disk directly
//! (`O_DIRECT`), in whole aligned blocks from aligned buffers, where the
//! file system takes that; what is not aligned (the start of a resumed
//! upload up to the next block boundary, a shard's last partial block) and
//! file systems without direct I/O go through the page cache as before.

use std::{
    fs::{File, OpenOptions},
    io,
    path::Path,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use super::writeback;

/// The alignment of direct I/O: offsets, lengths and buffer addresses.
/// 4 KiB covers every common logical block size.
pub(crate) const ALIGN: usize = 4096;

/// The size of the buffers kept for reuse: whole-MiB file I/O, what every
/// shard but a small one uses. Smaller buffers come from the allocator's
/// own reused memory.
pub(crate) const POOLED_SIZE: usize = 1 << 20;

/// Buffers kept for reuse. A holder uses two per shard upload and up to
/// three per shard served.
const POOLED: usize = 32;

static POOL: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

/// A buffer whose usable part starts at an [`ALIGN`]ed address.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    cap: usize,
}

impl AlignedBuf {
    /// A buffer of `cap` bytes (rounded up to [`ALIGN`]), from the pool
    /// when it is of the pooled size.
    pub(crate) fn take(cap: usize) -> Self {
        let cap = cap.max(1).div_ceil(ALIGN) * ALIGN;
        let pooled = if cap == POOLED_SIZE {
            POOL.lock().unwrap_or_else(|e| e.into_inner()).pop()
        } else {
            None
        };
        pooled.unwrap_or_else(|| {
            let raw = vec![0u8; cap + ALIGN];
            // For a byte pointer the offset is always computable; were it
            // not, the buffer starts unaligned and direct I/O falls back.
            let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
            Self { raw, start, cap }
        })
    }

    /// Returns the buffer to the pool, if it is of the pooled size.
    pub(crate) fn give_back(self) {
        if self.cap == POOLED_SIZE {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOLED {
                pool.push(self);
            }
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        self.raw
            .get(self.start..self.start + self.cap)
            .unwrap_or_default()
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.raw
            .get_mut(self.start..self.start + self.cap)
            .unwrap_or_default()
    }
}

/// How much of a buffer of `capacity` bytes the first write of an upload
/// from `offset` should fill: up to the next block boundary when `offset`
/// is inside a block (a resumed upload), so that every later write starts
/// on a boundary and goes to the disk directly.
pub(crate) fn first_fill(offset: u64, capacity: usize) -> usize {
    let skew = usize::try_from(offset % ALIGN as u64).unwrap_or(0);
    if skew > 0 && capacity > skew {
        capacity - skew
    } else {
        capacity
    }
}

fn aligned(data: &[u8], offset: u64) -> bool {
    offset.is_multiple_of(ALIGN as u64) && data.as_ptr().align_offset(ALIGN) == 0
}

/// Opens `path` with `O_DIRECT` (Linux), or `None` where the file system
/// refuses it.
#[cfg(target_os = "linux")]
fn open_direct(options: &mut OpenOptions, path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    options.custom_flags(libc::O_DIRECT).open(path).ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_options: &mut OpenOptions, _path: &Path) -> Option<File> {
    None
}

/// The direct handle of the file `buffered` has open at `path`, or `None`.
/// The two come from two opens, so a file replaced in between (a delete and
/// a new store of the same shard) would give two different files: the
/// direct handle is kept only if it is the same file.
fn direct_twin(buffered: &File, options: &mut OpenOptions, path: &Path) -> Option<File> {
    use std::os::unix::fs::MetadataExt as _;
    let direct = open_direct(options, path)?;
    let (a, b) = (buffered.metadata().ok()?, direct.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
}

/// A direct write or read the file system refused as unaligned: the call
/// is repeated through the page cache.
fn refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
}

/// A shard file being written.
#[derive(Debug)]
pub(crate) struct ShardWriter {
    buffered: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

impl ShardWriter {
    /// Opens (creating) the file at `path`, keeping its first `keep`
    /// bytes and dropping the rest.
    pub(crate) fn open(path: &Path, keep: u64) -> io::Result<Self> {
        Self::open_as(path, keep, true)
    }

    /// [`ShardWriter::open`], through the page cache alone unless `direct`.
    fn open_as(path: &Path, keep: u64, direct: bool) -> io::Result<Self> {
        let buffered = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        buffered.set_len(keep)?;
        let direct = direct
            .then(|| direct_twin(&buffered, OpenOptions::new().write(true), path))
            .flatten();
        Ok(Self {
            direct_ok: AtomicBool::new(direct.is_some()),
            buffered,
            direct,
        })
    }

    /// Writes `data` at `offset`: its whole blocks directly when both are
    /// aligned, the rest through the page cache (whose disk write starts
    /// at once, [`writeback`]).
    pub(crate) fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let mut done = 0;
        if let Some(direct) = self.direct.as_ref() {
            let whole = data.len() / ALIGN * ALIGN;
            if whole > 0 && aligned(data, offset) && self.direct_ok.load(Ordering::Relaxed) {
                match direct.write_all_at(data.get(..whole).unwrap_or_default(), offset) {
                    Ok(()) => done = whole,
                    Err(e) if refused(&e) => self.direct_ok.store(false, Ordering::Relaxed),
                    Err(e) => return Err(e),
                }
            }
        }
        let rest = data.get(done..).unwrap_or_default();
        if !rest.is_empty() {
            let at = offset + done as u64;
            self.buffered.write_all_at(rest, at)?;
            writeback::start(&self.buffered, at, rest.len());
        }
        Ok(())
    }

    /// Makes everything written durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }
}

/// A shard file being read.
#[derive(Debug)]
struct ShardFile {
    buffered: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

impl ShardFile {
    /// Reads into `buf` from `offset` until it is full or the file ends,
    /// directly when both are aligned; returns the bytes read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if let Some(direct) = self.direct.as_ref() {
            if aligned(buf, offset) && self.direct_ok.load(Ordering::Relaxed) {
                // A direct read that comes back short has met the end of
                // the file; reading on from there would be unaligned.
                match read_full(direct, buf, offset, true) {
                    Err(e) if refused(&e) => self.direct_ok.store(false, Ordering::Relaxed),
                    other => return other,
                }
            }
        }
        read_full(&self.buffered, buf, offset, false)
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends, or after
/// the first short read if `short_is_end`.
fn read_full(file: &File, buf: &mut [u8], offset: u64, short_is_end: bool) -> io::Result<usize> {
    use std::os::unix::fs::FileExt as _;
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        let want = rest.len();
        match file.read_at(rest, offset + filled as u64) {
            Ok(0) => break,
            Ok(n) if n < want && short_is_end => {
                filled += n;
                break;
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A piece of a shard read ahead: `buf[at..end]` is still to be handed out.
struct Piece {
    buf: AlignedBuf,
    at: usize,
    end: usize,
}

/// Reads `len` bytes of a shard file from `offset`, a buffer of `cap` bytes
/// ahead of the caller on the blocking pool, so the disk and the network
/// work at once.
pub(crate) struct ShardReader {
    pieces: tokio::sync::mpsc::Receiver<io::Result<Piece>>,
    current: Option<Piece>,
}

impl ShardReader {
    /// Opens the file at `path` for reading bytes `offset..offset + len`.
    pub(crate) async fn open(path: &Path, offset: u64, len: u64, cap: usize) -> io::Result<Self> {
        Self::open_as(path, offset, len, cap, true).await
    }

    /// [`ShardReader::open`], through the page cache alone unless `direct`.
    async fn open_as(
        path: &Path,
        offset: u64,
        len: u64,
        cap: usize,
        direct: bool,
    ) -> io::Result<Self> {
        let path = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || {
            let buffered = File::open(&path)?;
            let direct = direct
                .then(|| direct_twin(&buffered, OpenOptions::new().read(true), &path))
                .flatten();
            Ok::<_, io::Error>(ShardFile {
                direct_ok: AtomicBool::new(direct.is_some()),
                buffered,
                direct,
            })
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))?;
        let file = Arc::new(file);
        // A small range that starts inside a block fits in one read.
        let skip = usize::try_from(offset % ALIGN as u64).unwrap_or(0);
        let cap = if cap < POOLED_SIZE {
            (cap + skip).min(POOLED_SIZE)
        } else {
            cap
        };
        let (tx, pieces) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let end = offset.saturating_add(len);
            // Reads start on a block boundary; the bytes before `offset`
            // are skipped.
            let mut at = offset - offset % ALIGN as u64;
            while at < end && offset < end {
                let f = Arc::clone(&file);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = AlignedBuf::take(cap);
                    let n = f.read_at(buf.as_mut_slice(), at)?;
                    Ok::<_, io::Error>((buf, n))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                let piece = read.and_then(|(buf, n)| {
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the shard file is shorter than recorded",
                        ));
                    }
                    let skip = offset.saturating_sub(at);
                    let keep = (end - at).min(n as u64);
                    at += n as u64;
                    Ok(Piece {
                        buf,
                        at: usize::try_from(skip).unwrap_or(usize::MAX),
                        end: usize::try_from(keep).unwrap_or(0),
                    })
                });
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Self {
            pieces,
            current: None,
        })
    }
}

impl futures::AsyncRead for ShardReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(piece) = self.current.as_mut() {
                if piece.at < piece.end {
                    let from = piece
                        .buf
                        .as_slice()
                        .get(piece.at..piece.end)
                        .unwrap_or_default();
                    let n = from.len().min(out.len());
                    if let (Some(o), Some(f)) = (out.get_mut(..n), from.get(..n)) {
                        o.copy_from_slice(f);
                    }
                    piece.at += n;
                    return Poll::Ready(Ok(n));
                }
                if let Some(done) = self.current.take() {
                    done.buf.give_back();
                }
            }
            match self.pieces.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(piece))) => self.current = Some(piece),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncReadExt as _;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn aligned_buffers_start_on_a_block_boundary() {
        for cap in [1, ALIGN - 1, ALIGN, 3 * ALIGN + 5] {
            let mut b = AlignedBuf::take(cap);
            assert_eq!(b.capacity() % ALIGN, 0);
            assert!(b.capacity() >= cap);
            assert_eq!(b.as_mut_slice().as_ptr().align_offset(ALIGN), 0);
            b.give_back();
        }
    }

    /// Direct I/O where the file system takes it (it does on the ext4 and
    /// tmpfs of CI), and the page cache alone, as on one that does not.
    const MODES: [bool; 2] = [true, false];

    #[test]
    fn whole_blocks_unaligned_tails_and_resumed_starts_all_land_in_place() {
        for direct in MODES {
            write_and_resume(direct);
        }
    }

    fn write_and_resume(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let data = pattern(5 * ALIGN + 123);
        let w = ShardWriter::open_as(&path, 0, direct).unwrap();
        assert_eq!(
            w.direct.is_some(),
            direct,
            "the temporary folder's file system refuses O_DIRECT: the direct path goes untested"
        );
        let mut buf = AlignedBuf::take(3 * ALIGN);
        buf.as_mut_slice()[..3 * ALIGN].copy_from_slice(&data[..3 * ALIGN]);
        w.write_at(&buf.as_slice()[..3 * ALIGN], 0).unwrap();
        // Pieces from an ordinary buffer or at an unaligned offset go
        // through the page cache.
        w.write_at(&data[3 * ALIGN..4 * ALIGN + 10], 3 * ALIGN as u64)
            .unwrap();
        w.write_at(&data[4 * ALIGN + 10..], 4 * ALIGN as u64 + 10)
            .unwrap();
        w.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);

        // Reopening keeps what is asked for and drops the rest.
        let w = ShardWriter::open_as(&path, 2 * ALIGN as u64 + 7, direct).unwrap();
        w.write_at(&data[2 * ALIGN + 7..], 2 * ALIGN as u64 + 7)
            .unwrap();
        w.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[tokio::test]
    async fn any_range_reads_back_exactly_through_small_and_large_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let data = pattern(9 * ALIGN + 321);
        std::fs::write(&path, &data).unwrap();
        let len = data.len() as u64;
        for (offset, want) in [
            (0, len),
            (1, 10),
            (ALIGN as u64 - 1, 2),
            (5000, len - 5000),
            (len, 0),
        ] {
            for (cap, direct) in [ALIGN, 2 * ALIGN, 1 << 20]
                .into_iter()
                .flat_map(|c| MODES.map(|d| (c, d)))
            {
                let mut r = ShardReader::open_as(&path, offset, want, cap, direct)
                    .await
                    .unwrap();
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                let (a, b) = (offset as usize, (offset + want) as usize);
                assert_eq!(
                    got,
                    data[a..b],
                    "offset {offset} len {want} cap {cap} direct {direct}"
                );
            }
        }
    }

    #[test]
    fn a_direct_handle_is_kept_only_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        std::fs::write(&path, b"old").unwrap();
        let buffered = File::open(&path).unwrap();
        assert!(direct_twin(&buffered, OpenOptions::new().read(true), &path).is_some());
        // Deleted and stored anew between the two opens.
        let other = dir.path().join("new");
        std::fs::write(&other, b"new").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(direct_twin(&buffered, OpenOptions::new().read(true), &path).is_none());
    }

    #[test]
    fn a_resumed_upload_fills_its_first_buffer_to_the_next_block_boundary() {
        let cap = 1 << 20;
        assert_eq!(first_fill(0, cap), cap);
        assert_eq!(first_fill(3 * ALIGN as u64, cap), cap);
        assert_eq!(first_fill(3 * ALIGN as u64 + 10, cap), cap - 10);
        for offset in [1u64, 4095, 4097, 123_457] {
            assert_eq!((offset + first_fill(offset, cap) as u64) % ALIGN as u64, 0);
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_asked_is_an_error_not_a_short_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        std::fs::write(&path, pattern(100)).unwrap();
        let mut r = ShardReader::open(&path, 0, 200, ALIGN).await.unwrap();
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
