//! Metadata: owners, modes and times, applied after all content is written
//! (writing would change times), folders last and deepest first.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;

use crate::tree::Node;

use super::options::RestoreOutcome;
use super::plan::Plan;

fn time(ns: i64) -> FileTime {
    FileTime::from_unix_time(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

fn apply(path: &Path, node: &Node, is_link: bool, outcome: &mut RestoreOutcome) {
    // Owners can only be given away by root; elsewhere the restoring user owns the files.
    let _ = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid));
    if !is_link {
        if let Err(e) =
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))
        {
            outcome
                .errors
                .push((path.display().to_string(), format!("cannot set mode: {e}")));
        }
    }
    // By path and without following links: opening a pipe to set its times would block.
    if let Err(e) = filetime::set_symlink_file_times(path, time(node.mtime), time(node.mtime)) {
        outcome
            .errors
            .push((path.display().to_string(), format!("cannot set times: {e}")));
    }
}

pub(crate) fn apply_metadata(plan: &Plan, outcome: &mut RestoreOutcome) {
    for f in &plan.files {
        apply(&f.target, &f.node, false, outcome);
    }
    for (path, node) in &plan.others {
        let is_link = matches!(node.kind, crate::tree::NodeKind::Symlink { .. });
        apply(path, node, is_link, outcome);
    }
    let mut dirs: Vec<&(std::path::PathBuf, Node)> = plan.dirs.iter().collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, node) in dirs {
        apply(path, node, false, outcome);
    }
}
