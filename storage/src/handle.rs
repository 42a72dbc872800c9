//! Object names: a kind and a validated name.

use std::fmt;

use crate::{Error, Result};

/// The kinds of objects a repository holds; each kind is its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The single repository configuration object, named `config`.
    Config,
    /// Key files: the master secret wrapped by a password.
    Key,
    /// Packs of encrypted blobs.
    Pack,
    /// Index deltas.
    Index,
    /// Snapshot records.
    Snapshot,
    /// Lock records.
    Lock,
    /// Session markers of running backups.
    Session,
    /// Records of packs a prune condemned, to delete after a grace period.
    Condemned,
}

impl Kind {
    /// All kinds, in layout order.
    pub const ALL: [Kind; 8] = [
        Kind::Config,
        Kind::Key,
        Kind::Pack,
        Kind::Index,
        Kind::Snapshot,
        Kind::Lock,
        Kind::Session,
        Kind::Condemned,
    ];

    /// The folder (or key prefix) that holds objects of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Key => "keys",
            Kind::Pack => "packs",
            Kind::Index => "index",
            Kind::Snapshot => "snapshots",
            Kind::Lock => "locks",
            Kind::Session => "sessions",
            Kind::Condemned => "condemned",
        }
    }

    /// A short human name for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Key => "key",
            Kind::Pack => "pack",
            Kind::Index => "index",
            Kind::Snapshot => "snapshot",
            Kind::Lock => "lock",
            Kind::Session => "session",
            Kind::Condemned => "condemnation record",
        }
    }
}

/// The address of one object: its kind and its name within that kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    /// The object's kind.
    pub kind: Kind,
    name: String,
}

impl Handle {
    /// Makes a handle, refusing names that could escape the kind's namespace.
    ///
    /// Names are 1..=128 characters of `[0-9a-z_-]`; the config object is
    /// always named `config`.
    pub fn new(kind: Kind, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-' || b == b'_');
        if !valid || (kind == Kind::Config && name != "config") {
            return Err(Error::InvalidName { name });
        }
        Ok(Handle { kind, name })
    }

    /// The handle of the repository's config object.
    pub fn config() -> Self {
        Handle {
            kind: Kind::Config,
            name: "config".to_owned(),
        }
    }

    /// The object's name within its kind.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path of this object relative to the repository root, with `/`
    /// separators; packs fan out into 256 folders by the first two characters.
    pub fn relative_path(&self) -> String {
        match self.kind {
            Kind::Config => self.name.clone(),
            Kind::Pack => {
                let fan = self.name.get(..2).unwrap_or("00");
                format!("{}/{}/{}", self.kind.dir(), fan, self.name)
            }
            kind => format!("{}/{}", kind.dir(), self.name),
        }
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.noun(), self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_namespace_are_refused() {
        for bad in ["", "../x", "a/b", "A", "x y", ".hidden", &"a".repeat(129)] {
            assert!(Handle::new(Kind::Pack, bad).is_err(), "{bad:?} accepted");
        }
        assert!(Handle::new(Kind::Config, "other").is_err());
    }

    #[test]
    fn packs_fan_out_by_their_first_two_characters() {
        let h = Handle::new(Kind::Pack, "abcdef").unwrap();
        assert_eq!(h.relative_path(), "packs/ab/abcdef");
        let h = Handle::new(Kind::Index, "abcdef").unwrap();
        assert_eq!(h.relative_path(), "index/abcdef");
        assert_eq!(Handle::config().relative_path(), "config");
    }
}
