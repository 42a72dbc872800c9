//! Find: files and folders by name across every snapshot, by glob or by a
//! forgiving match, ranked.
//!
//! Names and patterns are compared folded: lowercase, with accents removed
//! (Unicode NFD without combining marks), so `resume` finds `Résumé.pdf`. A
//! pattern with `*`, `?` or `[` is a glob over the folded name; any other
//! pattern ranks names that contain it first, then names within a small
//! edit distance, so a misspelt or partial name still finds the file.

use serde::Serialize;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};
use crate::{Error, Result};

/// One match.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// The snapshot holding it.
    pub snapshot: SnapshotId,
    /// When that snapshot was taken, Unix ns.
    pub snapshot_time: i64,
    /// Its path inside the snapshot.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Size (files).
    pub size: u64,
    /// Modification time, Unix ns.
    pub mtime: i64,
    /// How well it matched, 0..=1.
    pub score: f64,
}

/// Lowercase without accents.
pub fn fold(text: &str) -> String {
    text.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

enum Matcher {
    Glob(globset::GlobMatcher),
    Fuzzy(String),
}

impl Matcher {
    fn new(pattern: &str) -> Result<Self> {
        let folded = fold(pattern);
        if folded.trim().is_empty() {
            return Err(Error::InvalidInput("the pattern is empty".into()));
        }
        if folded.contains(['*', '?', '[']) {
            let glob = globset::GlobBuilder::new(&folded)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("pattern {pattern:?}: {e}")))?;
            Ok(Matcher::Glob(glob.compile_matcher()))
        } else {
            Ok(Matcher::Fuzzy(folded))
        }
    }

    /// A score in 0..=1, or `None` for no match.
    fn score(&self, name: &str) -> Option<f64> {
        let name = fold(name);
        match self {
            Matcher::Glob(g) => g.is_match(&name).then_some(1.0),
            Matcher::Fuzzy(p) => {
                if name == *p {
                    return Some(1.0);
                }
                if name.contains(p.as_str()) {
                    // Closer to the whole name ranks higher.
                    return Some(
                        0.8 + 0.15 * p.chars().count() as f64 / name.chars().count().max(1) as f64,
                    );
                }
                // Compare with the name, its stem and each of its words, so
                // `reprot` finds `annual report.pdf`.
                let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(&name);
                let best = [name.as_str(), stem]
                    .into_iter()
                    .chain(
                        stem.split(|c: char| !c.is_alphanumeric())
                            .filter(|w| !w.is_empty()),
                    )
                    .map(|candidate| strsim::normalized_damerau_levenshtein(p, candidate))
                    .fold(0.0, f64::max);
                (best >= 0.7).then_some(0.75 * best)
            }
        }
    }
}

fn kind(node: &Node) -> &'static str {
    match node.kind {
        NodeKind::File { .. } => "file",
        NodeKind::Dir { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
        _ => "other",
    }
}

/// Every entry of every snapshot whose name matches `pattern`, best first
/// (then newest snapshot first), at most `limit`.
pub async fn find(repo: &Repository, pattern: &str, limit: usize) -> Result<Vec<Hit>> {
    let matcher = Matcher::new(pattern)?;
    let (snapshots, _) = repo.snapshots().await?;
    let mut hits = Vec::new();
    for (id, snapshot) in &snapshots {
        let mut stack: Vec<(BlobId, String)> = vec![(snapshot.tree, String::new())];
        while let Some((tree_id, path)) = stack.pop() {
            let tree = repo.read_tree(&tree_id).await?;
            for node in &tree.nodes {
                let name = node.name_lossy();
                let child = format!("{path}/{name}");
                if let Some(score) = matcher.score(&name) {
                    hits.push(Hit {
                        snapshot: *id,
                        snapshot_time: snapshot.time,
                        path: child.clone(),
                        kind: kind(node),
                        size: node.size,
                        mtime: node.mtime,
                        score,
                    });
                }
                if let NodeKind::Dir { subtree } = node.kind {
                    stack.push((subtree, child));
                }
            }
        }
    }
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.snapshot_time.cmp(&a.snapshot_time))
            .then(a.path.cmp(&b.path))
    });
    hits.truncate(limit);
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accents_and_case_do_not_matter() {
        assert_eq!(fold("Résumé.PDF"), "resume.pdf");
        let m = Matcher::new("resume").unwrap();
        assert!(m.score("Résumé.pdf").is_some());
    }

    #[test]
    fn misspelt_and_partial_names_still_match_and_rank_below_exact_ones() {
        let m = Matcher::new("reprot").unwrap();
        assert!(m.score("report.pdf").is_some());
        assert!(m.score("annual report 2025.pdf").is_some());
        assert!(m.score("unrelated.txt").is_none());
        let m = Matcher::new("report").unwrap();
        let exact = m.score("report").unwrap();
        let inside = m.score("annual-report-2025.pdf").unwrap();
        let typo = Matcher::new("reprot").unwrap().score("report").unwrap();
        assert!(exact > inside && inside > typo, "{exact} {inside} {typo}");
    }

    #[test]
    fn globs_match_folded_names() {
        let m = Matcher::new("*.JPG").unwrap();
        assert!(m.score("Été 2024.jpg").is_some());
        assert!(m.score("notes.txt").is_none());
        assert!(Matcher::new("  ").is_err());
        assert!(Matcher::new("a[").is_err());
    }
}
