//! Glob patterns over absolute paths, for excludes and includes.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

/// Compiled patterns: those without `/` match a file's name, the others its
/// absolute path (`*` stays within one folder, `**` crosses).
#[derive(Clone, Debug)]
pub(crate) struct Patterns {
    names: GlobSet,
    paths: GlobSet,
    empty: bool,
}

impl Patterns {
    pub(crate) fn new(patterns: &[String], files: &[std::path::PathBuf]) -> Result<Self> {
        let mut all: Vec<String> = patterns.to_vec();
        for f in files {
            let text =
                std::fs::read_to_string(f).map_err(|e| Error::io("read pattern file", f, e))?;
            for line in text.lines() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    all.push(line.to_owned());
                }
            }
        }
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in &all {
            let p = p.trim_end_matches('/');
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("pattern {p:?}: {e}")))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("patterns: {e}")))
        };
        Ok(Patterns {
            names: build(names)?,
            paths: build(paths)?,
            empty: all.is_empty(),
        })
    }

    pub(crate) fn matches(&self, path: &Path) -> bool {
        if self.empty {
            return false;
        }
        if let Some(name) = path.file_name() {
            if self.names.is_match(Path::new(name)) {
                return true;
            }
        }
        self.paths.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_matched_by_their_own_patterns() {
        let e = Patterns::new(
            &["*.tmp".into(), "/home/*/cache".into(), "/x/**/deep".into()],
            &[],
        )
        .unwrap();
        assert!(e.matches(Path::new("/a/b/c.tmp")));
        assert!(!e.matches(Path::new("/a/b/c.tmpx")));
        assert!(e.matches(Path::new("/home/u/cache")));
        assert!(!e.matches(Path::new("/home/u/v/cache")));
        assert!(e.matches(Path::new("/x/1/2/deep")));
        assert!(Patterns::new(&["a[".into()], &[]).is_err());
    }
}
