//! Find: files and folders by name across every snapshot, by glob or by a
//! forgiving match, ranked.
//!
//! Names and patterns are compared folded: lowercase, with accents removed
//! (Unicode NFD without combining marks), so `resume` finds `Résumé.pdf`. A
//! pattern with `*`, `?` or `[` is a glob over the folded name; any other
//! pattern ranks names that contain it first, then names within a small
//! edit distance, so a misspelt or partial name still finds the file.
//!
//! Names come from a name index in the local redb cache (tree id → its
//! entries), filled from the repository on first use: a second `find` reads
//! no tree from the repository. Each distinct tree is matched once, however
//! many snapshots share it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rapidfuzz::distance::osa;
use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::tree::{Node, NodeKind, Tree};
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
pub fn fold(text: &str) -> Cow<'_, str> {
    // Most names are ASCII and many are already lowercase: no copy, no
    // decomposition.
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Cow::Owned(text.to_ascii_lowercase());
        }
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.nfd()
            .filter(|c| !is_combining_mark(*c))
            .flat_map(char::to_lowercase)
            .collect(),
    )
}

/// How close a misspelt name must be: at least this similarity, that is
/// 1 − (edit distance / length of the longer string).
const FUZZY_CUTOFF: f64 = 0.7;

enum Matcher {
    Glob(globset::GlobMatcher),
    Fuzzy(Fuzzy),
}

/// A folded pattern, prepared once for a million comparisons.
struct Fuzzy {
    pattern: String,
    chars: usize,
    /// Optimal string alignment (edits and adjacent transpositions), with
    /// the pattern's bit masks computed once.
    osa: osa::BatchComparator<char>,
}

impl Fuzzy {
    fn new(pattern: String) -> Self {
        Fuzzy {
            chars: pattern.chars().count(),
            osa: osa::BatchComparator::new(pattern.chars()),
            pattern,
        }
    }

    /// The similarity of one candidate, if it reaches the cutoff.
    fn similarity(&self, candidate: &str) -> Option<f64> {
        let chars = if candidate.is_ascii() {
            candidate.len()
        } else {
            candidate.chars().count()
        };
        // The distance is at least the difference in length, so most
        // candidates are ruled out without being compared.
        let longer = chars.max(self.chars).max(1) as f64;
        if chars.abs_diff(self.chars) as f64 > (1.0 - FUZZY_CUTOFF) * longer {
            return None;
        }
        self.osa.normalized_similarity_with_args(
            candidate.chars(),
            &osa::Args::default().score_cutoff(FUZZY_CUTOFF),
        )
    }

    fn score(&self, name: &str) -> Option<f64> {
        let p = self.pattern.as_str();
        if name == p {
            return Some(1.0);
        }
        if name.contains(p) {
            // Closer to the whole name ranks higher.
            return Some(0.8 + 0.15 * self.chars as f64 / name.chars().count().max(1) as f64);
        }
        // Compare with the name, its stem and each of its words, so
        // `reprot` finds `annual report.pdf`.
        let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
        let words = stem
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty());
        [name, stem]
            .into_iter()
            .chain(words)
            .filter_map(|candidate| self.similarity(candidate))
            .reduce(f64::max)
            .map(|best| 0.75 * best)
    }
}

impl Matcher {
    fn new(pattern: &str) -> Result<Self> {
        let folded = fold(pattern).into_owned();
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
            Ok(Matcher::Fuzzy(Fuzzy::new(folded)))
        }
    }

    /// A score in 0..=1, or `None` for no match.
    fn score(&self, name: &str) -> Option<f64> {
        let name = fold(name);
        match self {
            Matcher::Glob(g) => g.is_match(name.as_ref()).then_some(1.0),
            Matcher::Fuzzy(f) => f.score(&name),
        }
    }
}

/// One entry of a tree as the name index keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NameEntry {
    name: String,
    kind: u8,
    size: u64,
    mtime: i64,
    subtree: Option<BlobId>,
}

/// Version byte in front of every listing in the name index; another
/// version is read as missing and indexed again.
const LISTING_VERSION: u8 = 1;

const KINDS: [&str; 4] = ["file", "dir", "symlink", "other"];

fn kind(node: &Node) -> u8 {
    match node.kind {
        NodeKind::File { .. } => 0,
        NodeKind::Dir { .. } => 1,
        NodeKind::Symlink { .. } => 2,
        _ => 3,
    }
}

fn listing(tree: &Tree) -> Vec<NameEntry> {
    tree.nodes
        .iter()
        .map(|n| NameEntry {
            name: n.name_lossy(),
            kind: kind(n),
            size: n.size,
            mtime: n.mtime,
            subtree: match n.kind {
                NodeKind::Dir { subtree } => Some(subtree),
                _ => None,
            },
        })
        .collect()
}

fn decode_listing(bytes: &[u8]) -> Option<Vec<NameEntry>> {
    let (version, body) = bytes.split_first()?;
    if *version != LISTING_VERSION {
        return None;
    }
    postcard::from_bytes(body).ok()
}

fn encode_listing(entries: &[NameEntry]) -> Vec<u8> {
    let mut out = vec![LISTING_VERSION];
    out.extend_from_slice(&crate::envelope::encode(&entries));
    out
}

/// The listings of every tree under `roots`: from the name index in the
/// cache, and from the repository (then added to the index) for trees it
/// does not hold yet. Walks level by level so each level is one cache read
/// and one cache write.
async fn listings(
    repo: &Repository,
    roots: Vec<BlobId>,
) -> Result<HashMap<BlobId, Arc<Vec<NameEntry>>>> {
    let index = repo.index().await?;
    let mut all: HashMap<BlobId, Arc<Vec<NameEntry>>> = HashMap::new();
    let mut level: Vec<BlobId> = roots;
    level.sort();
    level.dedup();
    while !level.is_empty() {
        let cached = {
            let (index, ids) = (index.clone(), level.clone());
            tokio::task::spawn_blocking(move || index.tree_names(&ids))
                .await
                .map_err(|e| Error::Task(e.to_string()))??
        };
        let mut missing = Vec::new();
        for (id, bytes) in level.iter().zip(cached) {
            match bytes.as_deref().and_then(decode_listing) {
                Some(l) => {
                    all.insert(*id, Arc::new(l));
                }
                None => missing.push(*id),
            }
        }
        let mut fresh = Vec::new();
        for id in missing {
            let l = listing(&repo.read_tree(&id).await?);
            fresh.push((id, encode_listing(&l)));
            all.insert(id, Arc::new(l));
        }
        if !fresh.is_empty() {
            let index = index.clone();
            tokio::task::spawn_blocking(move || index.put_tree_names(&fresh))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
        }
        let mut next: Vec<BlobId> = level
            .iter()
            .filter_map(|id| all.get(id))
            .flat_map(|l| l.iter().filter_map(|e| e.subtree))
            .filter(|s| !all.contains_key(s))
            .collect();
        next.sort();
        next.dedup();
        level = next;
    }
    Ok(all)
}

/// A match inside one tree, with its path relative to that tree.
#[derive(Clone)]
struct TreeHit {
    path: String,
    kind: u8,
    size: u64,
    mtime: i64,
    score: f64,
}

/// The entries of one tree whose own names match: (position, score).
type OwnMatches = Vec<(usize, f64)>;

/// Scores every entry of every listing, on every core: this is the whole
/// cost of a warm `find`, and each distinct name is scored exactly once
/// per tree that holds it.
fn own_matches(
    matcher: &Matcher,
    listings: &HashMap<BlobId, Arc<Vec<NameEntry>>>,
) -> HashMap<BlobId, OwnMatches> {
    let trees: Vec<(&BlobId, &Arc<Vec<NameEntry>>)> = listings.iter().collect();
    let score_all = |part: &[(&BlobId, &Arc<Vec<NameEntry>>)]| -> Vec<(BlobId, OwnMatches)> {
        part.iter()
            .map(|(id, entries)| {
                let own = entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| matcher.score(&e.name).map(|s| (i, s)))
                    .collect();
                (**id, own)
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let per_thread = trees.len().div_ceil(threads).max(64);
    if trees.len() <= per_thread {
        return score_all(&trees).into_iter().collect();
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = trees
            .chunks(per_thread)
            .map(|part| scope.spawn(move || score_all(part)))
            .collect();
        let mut out = HashMap::with_capacity(trees.len());
        for worker in workers {
            match worker.join() {
                Ok(part) => out.extend(part),
                // Scoring does not panic on any name; should it, the
                // panic is the caller's, not silently fewer matches.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// Matches under trees, each distinct tree assembled once however many
/// snapshots share it.
struct Search<'a> {
    listings: &'a HashMap<BlobId, Arc<Vec<NameEntry>>>,
    own: HashMap<BlobId, OwnMatches>,
    by_tree: HashMap<BlobId, Arc<Vec<TreeHit>>>,
}

impl Search<'_> {
    fn hits(&mut self, tree: &BlobId, depth: usize) -> Arc<Vec<TreeHit>> {
        if let Some(h) = self.by_tree.get(tree) {
            return h.clone();
        }
        let mut out = Vec::new();
        // A tree missing from the listings could not be read; deeper than
        // MAX_DEPTH is a hostile cycle-like nesting.
        if let (Some(entries), true) = (self.listings.get(tree), depth < MAX_DEPTH) {
            let own = self.own.get(tree).cloned().unwrap_or_default();
            let mut own = own.into_iter().peekable();
            for (i, e) in entries.iter().enumerate() {
                if let Some((_, score)) = own.next_if(|(at, _)| *at == i) {
                    out.push(TreeHit {
                        path: format!("/{}", e.name),
                        kind: e.kind,
                        size: e.size,
                        mtime: e.mtime,
                        score,
                    });
                }
                if let Some(sub) = e.subtree {
                    for h in self.hits(&sub, depth + 1).iter() {
                        out.push(TreeHit {
                            path: format!("/{}{}", e.name, h.path),
                            ..h.clone()
                        });
                    }
                }
            }
        }
        let out = Arc::new(out);
        self.by_tree.insert(*tree, out.clone());
        out
    }
}

/// Deeper folders than this are not searched.
const MAX_DEPTH: usize = 4096;

/// Every entry of every snapshot whose name matches `pattern`, best first
/// (then newest snapshot first), at most `limit`. Tree listings come from
/// the name index in the cache; trees it lacks are read and added.
pub async fn find(repo: &Repository, pattern: &str, limit: usize) -> Result<Vec<Hit>> {
    let matcher = Matcher::new(pattern)?;
    let (snapshots, _) = repo.snapshots().await?;
    let listings = listings(repo, snapshots.iter().map(|(_, s)| s.tree).collect()).await?;
    let listings = Arc::new(listings);
    let own = {
        let listings = listings.clone();
        tokio::task::spawn_blocking(move || own_matches(&matcher, &listings))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    };
    let mut search = Search {
        listings: &listings,
        own,
        by_tree: HashMap::new(),
    };
    let order = |a: &Hit, b: &Hit| {
        b.score
            .total_cmp(&a.score)
            .then(b.snapshot_time.cmp(&a.snapshot_time))
            .then(a.path.cmp(&b.path))
    };
    let mut hits: Vec<Hit> = Vec::new();
    for (id, snapshot) in &snapshots {
        for h in search.hits(&snapshot.tree, 0).iter() {
            hits.push(Hit {
                snapshot: *id,
                snapshot_time: snapshot.time,
                path: h.path.clone(),
                kind: KINDS.get(usize::from(h.kind)).unwrap_or(&"other"),
                size: h.size,
                mtime: h.mtime,
                score: h.score,
            });
        }
        // Keep memory bounded by the limit, not by the repository.
        if hits.len() > limit.saturating_mul(2).max(4096) {
            hits.sort_by(order);
            hits.truncate(limit);
        }
    }
    hits.sort_by(order);
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
    fn a_typo_finds_one_word_of_a_long_name_and_length_alone_rules_out_others() {
        let m = Matcher::new("holliday").unwrap();
        let score = m.score("Holiday Budget 0042-007.jpg").unwrap();
        assert!((0.6..0.8).contains(&score), "{score}");
        assert!(m.score("hol").is_none());
        assert!(m.score("holidays-and-more-holidays").is_some());
        assert!(m.score("budget 0042-007.jpg").is_none());
    }

    #[test]
    fn scoring_on_several_threads_matches_scoring_on_one() {
        let words = ["report", "holiday", "résumé", "notes", "hollyday", "plan"];
        let listings: HashMap<BlobId, Arc<Vec<NameEntry>>> = (0..300u32)
            .map(|t| {
                let entries = (0..50u32)
                    .map(|i| NameEntry {
                        name: format!("{} {t}-{i}.txt", words[((t + i) % 6) as usize]),
                        kind: 0,
                        size: 1,
                        mtime: 0,
                        subtree: None,
                    })
                    .collect();
                (
                    BlobId(*blake3::hash(&t.to_le_bytes()).as_bytes()),
                    Arc::new(entries),
                )
            })
            .collect();
        let m = Matcher::new("holliday").unwrap();
        let together = own_matches(&m, &listings);
        assert_eq!(together.len(), listings.len());
        for (id, entries) in &listings {
            let alone: OwnMatches = entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| m.score(&e.name).map(|s| (i, s)))
                .collect();
            assert_eq!(together[id], alone);
            assert!(!alone.is_empty());
        }
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
