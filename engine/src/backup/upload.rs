//! The uploader: stores finished packs a few at a time and records them in
//! index deltas. Blobs enter the index cache only with the delta that
//! lists them, after that delta is stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kith_storage::{Handle, Kind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::index::{IndexFile, IndexPack};
use crate::pack::FinishedPack;
use crate::repo::Repository;
use crate::{Error, Result};

use super::pipeline::Shared;

/// Packs per index delta; a killed backup loses at most this many packs'
/// index entries (the packs themselves remain and `repair index` finds them).
const PACKS_PER_DELTA: usize = 32;

pub(crate) async fn run(
    repo: &Repository,
    shared: Arc<Shared>,
    mut packs: mpsc::Receiver<FinishedPack>,
    concurrency: usize,
) -> Result<()> {
    let mut in_flight: JoinSet<Result<IndexPack>> = JoinSet::new();
    let mut pending: Vec<(IndexPack, crate::lock::Stopwatch)> = Vec::new();
    let result: Result<()> = async {
        loop {
            tokio::select! {
                biased;
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let p = done.map_err(|e| Error::Task(e.to_string()))??;
                    stored(&shared, &p);
                    pending.push((p, crate::lock::Stopwatch::start()));
                    if pending.len() >= PACKS_PER_DELTA {
                        write_delta(repo, &shared, std::mem::take(&mut pending)).await?;
                    }
                }
                next = packs.recv(), if in_flight.len() < concurrency => {
                    let Some(pack) = next else { break };
                    let backend = repo.backend().clone();
                    in_flight.spawn(async move {
                        let handle = Handle::new(Kind::Pack, pack.id.to_hex())?;
                        let size = pack.bytes.len() as u64;
                        backend.put(&handle, pack.bytes).await?;
                        Ok(IndexPack { id: pack.id, ephemeral: pack.ephemeral, size, blobs: pack.entries })
                    });
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            let p = done.map_err(|e| Error::Task(e.to_string()))??;
            stored(&shared, &p);
            pending.push((p, crate::lock::Stopwatch::start()));
        }
        if !pending.is_empty() {
            write_delta(repo, &shared, std::mem::take(&mut pending)).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        shared.fail_message(e.to_string());
        // Unblock workers waiting to hand over packs.
        packs.close();
    }
    result
}

/// A pack is stored: count it, and place its blobs there.
fn stored(shared: &Shared, p: &IndexPack) {
    shared
        .stats
        .data_added_packed
        .fetch_add(p.size, Ordering::Relaxed);
    if let Ok(mut placed) = shared.placed.lock() {
        for b in &p.blobs {
            placed.insert(b.id, p.id);
        }
    }
}

async fn write_delta(
    repo: &Repository,
    shared: &Arc<Shared>,
    pending: Vec<(IndexPack, crate::lock::Stopwatch)>,
) -> Result<()> {
    let stale = repo.stale_after();
    let mut packs: Vec<IndexPack> = Vec::with_capacity(pending.len());
    let oldest = pending
        .iter()
        .map(|(_, s)| s.elapsed())
        .max()
        .unwrap_or_default();
    if oldest > stale / 2 {
        // This process may have been suspended long enough for a prune to
        // condemn or delete packs it stored: list only those still alive
        // (the commit stores the others' blobs again).
        let present: std::collections::HashSet<crate::id::PackId> = repo
            .backend()
            .list(Kind::Pack, "")
            .await?
            .into_iter()
            .filter_map(|o| crate::id::PackId::from_hex(o.handle.name()).ok())
            .collect();
        let condemned = crate::condemned::condemned_packs(repo).await?;
        packs.extend(
            pending
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| present.contains(&p.id) && !condemned.contains_key(&p.id)),
        );
        if packs.is_empty() {
            return Ok(());
        }
    } else {
        packs.extend(pending.into_iter().map(|(p, _)| p));
    }
    let file = IndexFile {
        packs,
        supersedes: Vec::new(),
    };
    let id = repo.write_index_file(&file).await?;
    let index = shared.index.clone();
    tokio::task::spawn_blocking(move || index.add_index_files(&[(id, file)], false))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
