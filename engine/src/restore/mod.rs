//! Restore, pack-centric: plan every blob that every selected file needs,
//! then read each pack once with coalesced ranged reads and write each blob
//! to every offset that needs it, several packs at a time.
//!
//! Phases: [`plan`] walks the trees and creates folders, links and empty
//! files of the right length; [`data`] fills the files; [`finish`] applies
//! metadata, folders last and deepest first so that their times stick.

mod data;
pub(crate) use data::pack_reads;
mod finish;
mod options;
mod plan;

pub use options::{RestoreEvent, RestoreObserver, RestoreOptions, RestoreOutcome};

use std::path::Path;

use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::{Error, Result};

/// Restores `snapshot` into `target`, which must be empty or absent.
pub async fn restore(
    repo: &Repository,
    snapshot: &(SnapshotId, Snapshot),
    target: &Path,
    options: &RestoreOptions,
    observer: RestoreObserver,
) -> Result<RestoreOutcome> {
    repo.secret("restoring")?;
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty(target.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target)
                .map_err(|e| Error::io("create target folder", target, e))?;
        }
        Err(e) => return Err(Error::io("open target folder", target, e)),
    }
    let mut outcome = RestoreOutcome::default();
    let plan = plan::build(
        repo,
        &snapshot.1.tree,
        target,
        options,
        &observer,
        &mut outcome,
    )
    .await?;
    observer(&RestoreEvent::Planned {
        files: plan.files.len() as u64,
        bytes: plan.total_bytes,
    });
    data::fill(repo, &plan, options, &observer, &mut outcome).await?;
    finish::apply_metadata(&plan, &mut outcome);
    Ok(outcome)
}
