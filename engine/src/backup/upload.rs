//! The uploader: stores finished packs a few at a time and records them in
//! index deltas. Blobs enter the index cache only with the delta that
//! lists them, after that delta is stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kith_storage::{Handle, Kind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::index::IndexPack;
use crate::lock::Stopwatch;
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
    let mut in_flight: JoinSet<Result<(IndexPack, Stopwatch)>> = JoinSet::new();
    let mut pending: Vec<(IndexPack, Stopwatch)> = Vec::new();
    let result: Result<()> = async {
        loop {
            tokio::select! {
                biased;
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let (p, since) = done.map_err(|e| Error::Task(e.to_string()))??;
                    stored(&shared, &p);
                    pending.push((p, since));
                    if pending.len() >= PACKS_PER_DELTA {
                        write_delta(repo, &shared, std::mem::take(&mut pending)).await?;
                    }
                }
                next = packs.recv(), if in_flight.len() < concurrency => {
                    let Some(pack) = next else { break };
                    let backend = repo.backend().clone();
                    in_flight.spawn(async move {
                        // A prune can see the pack from the moment its
                        // upload begins.
                        let since = Stopwatch::start();
                        let handle = Handle::new(Kind::Pack, pack.id.to_hex())?;
                        let size = pack.bytes.len() as u64;
                        backend.put(&handle, pack.bytes).await?;
                        Ok((IndexPack { id: pack.id, ephemeral: pack.ephemeral, size, blobs: pack.entries }, since))
                    });
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            let (p, since) = done.map_err(|e| Error::Task(e.to_string()))??;
            stored(&shared, &p);
            pending.push((p, since));
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

/// Lists `pending` packs in an index delta (see [`super::delta`]) and adds
/// it to the index cache.
async fn write_delta(
    repo: &Repository,
    shared: &Arc<Shared>,
    pending: Vec<(IndexPack, Stopwatch)>,
) -> Result<()> {
    // The pack whose upload began first bounds how old the delta is.
    let Some(since) = pending
        .iter()
        .map(|(_, s)| *s)
        .max_by_key(Stopwatch::elapsed)
    else {
        return Ok(());
    };
    let packs = pending.into_iter().map(|(p, _)| p).collect();
    super::delta::write_and_cache(repo, &shared.index, packs, since, false).await
}
