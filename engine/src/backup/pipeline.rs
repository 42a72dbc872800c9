//! The backup pipeline's shared state, its workers, and the function that
//! runs them all.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::blob::{blob_id, BlobKind, Encoder};
use crate::chunker::Chunker;
use crate::crypto::RepoPublicKey;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::{FileCacheEntry, IndexCache};
use crate::lock;
use crate::pack::{FinishedPack, PackWriter};
use crate::repo::{host_name, now_ns, user_name, Repository};
use crate::snapshot::{BackupSummary, Snapshot};
use crate::tree::{Node, NodeKind};
use crate::{Error, Result};

use super::dir::DirBuilder;
use super::meta;
use super::options::{BackupEvent, BackupOptions, BackupOutcome, Observer};
use super::walk::{scan, PathTrie, Walker};
use crate::patterns::Patterns;

/// Files smaller than this are read in one go rather than streamed.
const SMALL_FILE: u64 = 512 * 1024;
/// File cache records are written in batches of this many.
const CACHE_BATCH: usize = 8192;

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) files_new: AtomicU64,
    pub(crate) files_changed: AtomicU64,
    pub(crate) files_unmodified: AtomicU64,
    pub(crate) dirs: AtomicU64,
    pub(crate) files_failed: AtomicU64,
    pub(crate) total_bytes: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) data_added: AtomicU64,
    pub(crate) data_added_packed: AtomicU64,
    pub(crate) blobs_added: AtomicU64,
}

/// A file to read.
pub(crate) struct FileJob {
    pub(crate) path: PathBuf,
    pub(crate) node: Node,
    pub(crate) meta: std::fs::Metadata,
    pub(crate) seen_before: bool,
    pub(crate) dir: Arc<DirBuilder>,
    pub(crate) index: usize,
}

/// Packs being filled by one thread.
struct Packer {
    writer: Option<PackWriter>,
    encoder: Encoder,
}

impl Packer {
    fn new(level: i32) -> Result<Self> {
        Ok(Packer {
            writer: None,
            encoder: Encoder::new(level)
                .map_err(|e| Error::InvalidInput(format!("zstd level {level}: {e}")))?,
        })
    }

    fn add(&mut self, shared: &Shared, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<()> {
        let writer = self.writer.get_or_insert_with(|| {
            PackWriter::new(&shared.public, shared.pack_size + shared.pack_size / 8)
        });
        writer.add(&mut self.encoder, kind, id, data)?;
        shared
            .stats
            .data_added
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        shared.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        if writer.len() >= shared.pack_size {
            self.flush(shared)?;
        }
        Ok(())
    }

    fn flush(&mut self, shared: &Shared) -> Result<()> {
        if let Some(w) = self.writer.take() {
            if !w.is_empty() {
                shared.send_pack(w.finish())?;
            }
        }
        Ok(())
    }
}

pub(crate) struct Shared {
    pub(crate) chunker: Chunker,
    chunk_id_key: [u8; 32],
    public: RepoPublicKey,
    pack_size: usize,
    level: i32,
    pub(crate) index: Arc<IndexCache>,
    session: Mutex<HashSet<BlobId>>,
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
    pub(crate) stats: Stats,
    observer: Observer,
    /// Taken away when the pipeline is done, so the uploader sees the end.
    uploads: Mutex<Option<tokio::sync::mpsc::Sender<FinishedPack>>>,
    trees: Mutex<Option<Packer>>,
    cache_updates: Mutex<Vec<(Vec<u8>, FileCacheEntry)>>,
    failed: Mutex<Vec<(PathBuf, String)>>,
    /// Where each blob this backup refers to is stored: in a pack it
    /// uploaded, or one it deduplicated against. Every one must still exist,
    /// and not be condemned, when the snapshot is written.
    pub(crate) placed: Mutex<HashMap<BlobId, PackId>>,
    /// Where each blob was read, so that a commit can store it again.
    pub(crate) sources: super::sources::Sources,
}

impl Shared {
    pub(crate) fn emit(&self, event: &BackupEvent) {
        (self.observer)(event);
    }

    pub(crate) fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Records a fatal error and stops the backup.
    pub(crate) fn fail(&self, e: Error) {
        self.abort.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
    }

    pub(crate) fn fail_message(&self, message: String) {
        self.fail(Error::Task(message));
    }

    /// A file or folder was skipped.
    pub(crate) fn file_failed(&self, path: &Path, message: String) {
        self.stats.files_failed.fetch_add(1, Ordering::Relaxed);
        self.emit(&BackupEvent::Warning {
            path: path.to_owned(),
            message: message.clone(),
        });
        if let Ok(mut f) = self.failed.lock() {
            f.push((path.to_owned(), message));
        }
    }

    pub(crate) fn file_unmodified(&self, size: u64) {
        self.stats.files_unmodified.fetch_add(1, Ordering::Relaxed);
        self.stats.total_bytes.fetch_add(size, Ordering::Relaxed);
        self.emit(&BackupEvent::Bytes(size));
        self.emit(&BackupEvent::FileDone);
    }

    pub(crate) fn blob_id(&self, data: &[u8]) -> BlobId {
        blob_id(&self.chunk_id_key, data)
    }

    pub(crate) fn cached_file(&self, path: &[u8]) -> Option<FileCacheEntry> {
        self.index.file(path).ok().flatten()
    }

    /// True when every blob of the file at `path` is in the index already.
    pub(crate) fn all_known(&self, path: &Path, ids: &[BlobId]) -> bool {
        let mut places = Vec::with_capacity(ids.len());
        for id in ids {
            match self.index.lookup(id) {
                Ok(Some(loc)) => places.push((*id, loc.pack, loc.raw_length)),
                _ => return false,
            }
        }
        let file = self.sources.file(path);
        let mut offset = 0u64;
        for (id, _, len) in &places {
            self.sources.data(*id, &file, offset, *len);
            offset += u64::from(*len);
        }
        if let Ok(mut placed) = self.placed.lock() {
            placed.extend(places.iter().map(|(id, pack, _)| (*id, *pack)));
        }
        true
    }

    /// True when `id` must be stored: neither the index nor this session
    /// has it. Claims it for this session.
    fn claim(&self, id: &BlobId) -> Result<bool> {
        {
            let session = self
                .session
                .lock()
                .map_err(|_| Error::Task("session set poisoned".into()))?;
            if session.contains(id) {
                return Ok(false);
            }
        }
        if let Some(loc) = self.index.lookup(id)? {
            if let Ok(mut placed) = self.placed.lock() {
                placed.insert(*id, loc.pack);
            }
            return Ok(false);
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| Error::Task("session set poisoned".into()))?;
        Ok(session.insert(*id))
    }

    fn send_pack(&self, pack: FinishedPack) -> Result<()> {
        let sender = self.uploads.lock().ok().and_then(|u| u.clone());
        sender
            .ok_or_else(|| Error::Task("the uploader stopped".into()))?
            .blocking_send(pack)
            .map_err(|_| Error::Task("the uploader stopped".into()))
    }

    pub(crate) fn store_tree(&self, id: BlobId, bytes: &[u8]) -> Result<()> {
        self.sources.tree(id, bytes)?;
        if !self.claim(&id)? {
            return Ok(());
        }
        let mut trees = self
            .trees
            .lock()
            .map_err(|_| Error::Task("tree packer poisoned".into()))?;
        if trees.is_none() {
            *trees = Some(Packer::new(self.level)?);
        }
        match trees.as_mut() {
            Some(p) => p.add(self, BlobKind::Tree, id, bytes),
            None => Ok(()),
        }
    }

    fn flush_trees(&self) -> Result<()> {
        let mut trees = self
            .trees
            .lock()
            .map_err(|_| Error::Task("tree packer poisoned".into()))?;
        match trees.as_mut() {
            Some(p) => p.flush(self),
            None => Ok(()),
        }
    }

    fn record_cache(&self, path: &Path, entry: FileCacheEntry) {
        let batch = match self.cache_updates.lock() {
            Ok(mut updates) => {
                updates.push((path.as_os_str().as_bytes().to_vec(), entry));
                if updates.len() >= CACHE_BATCH {
                    std::mem::take(&mut *updates)
                } else {
                    return;
                }
            }
            Err(_) => return,
        };
        // The file cache is an optimisation; failing to write it is not fatal.
        let _ = self.index.put_files(&batch, false);
    }
}

enum FileError {
    /// This file could not be read; the backup goes on.
    Skip(String),
    /// The backup cannot go on.
    Fatal(Error),
}

impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> Self {
        FileError::Skip(format!("read failed: {e}"))
    }
}

fn read_file(
    shared: &Shared,
    packer: &mut Packer,
    buf: &mut Vec<u8>,
    job: &FileJob,
) -> Result<Node, FileError> {
    let mut file =
        File::open(&job.path).map_err(|e| FileError::Skip(format!("cannot open: {e}")))?;
    let mut content = Vec::new();
    let source = shared.sources.file(&job.path);
    let mut offset = 0u64;
    let mut add_chunk = |chunk: &[u8]| -> Result<(), FileError> {
        let id = shared.blob_id(chunk);
        let len = u32::try_from(chunk.len())
            .map_err(|_| FileError::Fatal(Error::Task("a chunk over 4 GiB".into())))?;
        shared.sources.data(id, &source, offset, len);
        offset += u64::from(len);
        if shared.claim(&id).map_err(FileError::Fatal)? {
            packer
                .add(shared, BlobKind::Data, id, chunk)
                .map_err(FileError::Fatal)?;
        }
        content.push(id);
        shared
            .stats
            .bytes_read
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        shared.emit(&BackupEvent::Bytes(chunk.len() as u64));
        if shared.aborted() {
            return Err(FileError::Skip("backup stopped".into()));
        }
        Ok(())
    };
    let size = if job.meta.len() < SMALL_FILE {
        buf.clear();
        (&mut file).take(SMALL_FILE).read_to_end(buf)?;
        if buf.len() as u64 >= SMALL_FILE {
            // The file grew past the small-file limit while we looked.
            let head = std::mem::take(buf);
            let rest = std::io::Cursor::new(head).chain(&mut file);
            let mut stream_buf = Vec::new();
            let n = shared
                .chunker
                .for_each_chunk(rest, &mut stream_buf, &mut add_chunk)?;
            *buf = stream_buf;
            n
        } else {
            let data = std::mem::take(buf);
            if !data.is_empty() {
                add_chunk(&data)?;
            }
            let n = data.len() as u64;
            *buf = data;
            n
        }
    } else {
        shared
            .chunker
            .for_each_chunk(&mut file, buf, &mut add_chunk)?
    };
    let after = file
        .metadata()
        .map_err(|e| FileError::Skip(format!("cannot stat after reading: {e}")))?;
    if after.mtime() != job.meta.mtime()
        || after.mtime_nsec() != job.meta.mtime_nsec()
        || size != job.meta.len()
    {
        shared.emit(&BackupEvent::Warning {
            path: job.path.clone(),
            message: "file changed while it was read; the snapshot holds what was read".into(),
        });
    }
    let mut node = job.node.clone();
    node.size = size;
    if size == job.meta.len() {
        shared.record_cache(&job.path, meta::cache_entry(&job.meta, content.clone()));
    }
    node.kind = NodeKind::File { content };
    Ok(node)
}

fn worker(shared: Arc<Shared>, jobs: crossbeam_channel::Receiver<FileJob>) {
    let mut packer = match Packer::new(shared.level) {
        Ok(p) => p,
        Err(e) => {
            shared.fail(e);
            for job in jobs {
                job.dir.fill(&shared, job.index, None);
            }
            return;
        }
    };
    let mut buf = Vec::new();
    for job in jobs {
        if shared.aborted() {
            job.dir.fill(&shared, job.index, None);
            continue;
        }
        match read_file(&shared, &mut packer, &mut buf, &job) {
            Ok(node) => {
                let counter = if job.seen_before {
                    &shared.stats.files_changed
                } else {
                    &shared.stats.files_new
                };
                counter.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .total_bytes
                    .fetch_add(node.size, Ordering::Relaxed);
                shared.emit(&BackupEvent::FileDone);
                job.dir.fill(&shared, job.index, Some(node));
            }
            Err(FileError::Skip(message)) => {
                if !shared.aborted() {
                    shared.file_failed(&job.path, message);
                }
                job.dir.fill(&shared, job.index, None);
            }
            Err(FileError::Fatal(e)) => {
                shared.fail(e);
                job.dir.fill(&shared, job.index, None);
            }
        }
    }
    if let Err(e) = packer.flush(&shared) {
        shared.fail(e);
    }
}

fn absolute_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| Error::io("resolve path", p, e))?;
        // Resolve the folders above the path, but not the path itself, so a
        // symbolic link given on the command line is stored as a link.
        let resolved = match (abs.parent(), abs.file_name()) {
            (Some(parent), Some(name)) => parent
                .canonicalize()
                .map_err(|e| Error::io("resolve path", parent, e))?
                .join(name),
            _ => abs,
        };
        std::fs::symlink_metadata(&resolved).map_err(|e| Error::io("read", &resolved, e))?;
        out.push(resolved);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Backs up `paths` into `repo`.
pub async fn backup(
    repo: &Repository,
    paths: &[PathBuf],
    options: &BackupOptions,
    observer: Observer,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = now_ns();
    if paths.is_empty() {
        return Err(Error::InvalidInput(
            "give at least one path to back up".into(),
        ));
    }
    let paths = absolute_paths(paths)?;
    let host = options.host.clone().unwrap_or_else(host_name);
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let parent = if repo.master().is_some() {
        let (snaps, _) = repo.snapshots().await?;
        snaps
            .into_iter()
            .rev()
            .find(|(_, s)| s.host == host && s.paths == path_strings)
            .map(|(id, _)| id)
    } else {
        None
    };
    let index = repo.index().await?;
    // Phase 1 runs under a session marker only; no lock blocks other writers.
    let mut session = lock::start_session(repo, "backup").await?;
    // Packs a failed backup stored but did not record: record them now,
    // under the session marker that keeps prune away, so their blobs count
    // as present (see `resume`).
    let adopted = match super::resume::adopt_unindexed(repo, &index).await {
        Ok(n) => n as u64,
        Err(e) => {
            let _ = session.release(repo).await;
            return Err(e);
        }
    };
    let prepared = Prepared {
        paths,
        index,
        time,
        host,
        path_strings,
        parent,
        started,
    };
    let result = run(repo, prepared, options, observer, &mut session).await;
    let released = session.release(repo).await;
    let mut outcome = result?;
    released?;
    outcome.adopted_packs = adopted;
    Ok(outcome)
}

/// What `backup` settled before the pipeline starts.
struct Prepared {
    paths: Vec<PathBuf>,
    index: Arc<IndexCache>,
    time: i64,
    host: String,
    path_strings: Vec<String>,
    parent: Option<SnapshotId>,
    started: Instant,
}

async fn run(
    repo: &Repository,
    prepared: Prepared,
    options: &BackupOptions,
    observer: Observer,
    session: &mut lock::Held,
) -> Result<BackupOutcome> {
    let Prepared {
        paths,
        index,
        time,
        host,
        path_strings,
        parent,
        started,
    } = prepared;
    let excludes = Patterns::new(&options.excludes, &options.exclude_files)?;
    let config = repo.config().clone();
    let keys = repo.write_keys().clone();
    let workers = options.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let (upload_tx, upload_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
    let shared = Arc::new(Shared {
        chunker: Chunker::new(&config.chunker, keys.chunker_seed()),
        chunk_id_key: keys.chunk_id_key,
        public: keys.repo_public(),
        pack_size: config.pack_size as usize,
        level: config.compression_level,
        index,
        session: Mutex::new(HashSet::new()),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
        stats: Stats::default(),
        observer,
        uploads: Mutex::new(Some(upload_tx)),
        trees: Mutex::new(None),
        cache_updates: Mutex::new(Vec::new()),
        failed: Mutex::new(Vec::new()),
        placed: Mutex::new(HashMap::new()),
        sources: super::sources::Sources::new()?,
    });

    let uploader = super::upload::run(
        repo,
        shared.clone(),
        upload_rx,
        options
            .uploads
            .unwrap_or_else(|| repo.backend().parallel_transfers())
            .max(1),
    );
    let work_shared = shared.clone();
    let one_fs = options.one_file_system;
    let force = options.force;
    let work_paths = paths.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<Option<BlobId>> {
        let shared = work_shared;
        let (job_tx, job_rx) = crossbeam_channel::bounded::<FileJob>(workers * 4);
        let (root_tx, root_rx) = crossbeam_channel::bounded::<BlobId>(1);
        let trie = PathTrie::new(&work_paths);
        std::thread::scope(|scope| {
            let scan_shared = shared.clone();
            let scan_excludes = excludes.clone();
            let scan_paths = work_paths.clone();
            scope.spawn(move || scan(&scan_paths, &scan_excludes, one_fs, &scan_shared));
            let mut handles = Vec::new();
            for _ in 0..workers {
                let s = shared.clone();
                let rx = job_rx.clone();
                handles.push(scope.spawn(move || worker(s, rx)));
            }
            drop(job_rx);
            let walker = Walker {
                shared: &shared,
                jobs: &job_tx,
                excludes: &excludes,
                one_file_system: one_fs,
                force,
            };
            walker.walk(&trie, root_tx);
            drop(job_tx);
            for h in handles {
                if h.join().is_err() {
                    shared.fail_message("a backup worker panicked".into());
                }
            }
        });
        if let Err(e) = shared.flush_trees() {
            shared.fail(e);
        }
        // Dropping the last sender lets the uploader finish.
        if let Ok(mut u) = shared.uploads.lock() {
            u.take();
        }
        Ok(root_rx.try_recv().ok())
    });
    let pipeline = async {
        tokio::join!(uploader, async {
            work.await.map_err(|e| Error::Task(e.to_string()))
        })
    };
    let watch = lock::Watch::default();
    let (uploaded, root) = lock::refreshing(repo, session, &watch, pipeline).await;
    let root = root??;
    // The uploader's own error is the cause; the workers only saw it stop.
    uploaded?;
    if let Ok(mut slot) = shared.error.lock() {
        if let Some(e) = slot.take() {
            return Err(e);
        }
    }
    let root = root.ok_or_else(|| Error::Task("the root tree was not produced".into()))?;

    let updates = shared
        .cache_updates
        .lock()
        .map(|mut u| std::mem::take(&mut *u))
        .unwrap_or_default();
    let index = shared.index.clone();
    let _ = tokio::task::spawn_blocking(move || index.put_files(&updates, true)).await;

    let s = &shared.stats;
    let summary = BackupSummary {
        files_new: s.files_new.load(Ordering::Relaxed),
        files_changed: s.files_changed.load(Ordering::Relaxed),
        files_unmodified: s.files_unmodified.load(Ordering::Relaxed),
        dirs: s.dirs.load(Ordering::Relaxed),
        files_failed: s.files_failed.load(Ordering::Relaxed),
        total_bytes: s.total_bytes.load(Ordering::Relaxed),
        bytes_read: s.bytes_read.load(Ordering::Relaxed),
        data_added: s.data_added.load(Ordering::Relaxed),
        data_added_packed: s.data_added_packed.load(Ordering::Relaxed),
        blobs_added: s.blobs_added.load(Ordering::Relaxed),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let snapshot = Snapshot {
        time,
        host,
        user: user_name(),
        paths: path_strings,
        tags: options.tags.clone(),
        tree: root,
        parent,
        summary: summary.clone(),
        program: format!("kith {}", env!("CARGO_PKG_VERSION")),
        original: None,
    };
    // Phase 2: under a shared lock (no maintenance runs meanwhile), make
    // sure every blob is in a live pack, then commit.
    let (id, snapshot, lost) = super::commit::commit(repo, &shared, snapshot).await?;
    let summary = snapshot.summary.clone();
    let mut failed = shared.failed.lock().map(|f| f.clone()).unwrap_or_default();
    failed.extend(lost);
    Ok(BackupOutcome {
        id,
        snapshot,
        summary,
        failed,
        adopted_packs: 0,
    })
}
