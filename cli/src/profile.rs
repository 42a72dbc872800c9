//! The config file: named profiles (TOML) that fill in what the command line
//! leaves out. Explicit flags and environment variables always win.
//!
//! ```toml
//! [profiles.home]
//! repository = "/mnt/backup/kith"
//! password_command = "pass show kith"
//! paths = ["/home/me/Documents", "/home/me/Pictures"]
//! excludes = ["*.tmp", "node_modules"]
//! [profiles.home.retention]
//! keep_daily = 7
//! keep_weekly = 5
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::args::{Command, Global};
use crate::error::CliError;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// One profile.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    pub(crate) repository: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) password_command: Option<String>,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) paths: Vec<PathBuf>,
    #[serde(default)]
    pub(crate) excludes: Vec<String>,
    #[serde(default)]
    pub(crate) exclude_files: Vec<PathBuf>,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
    #[serde(default)]
    pub(crate) retention: Retention,
}

/// The profile's retention policy (`kith forget`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retention {
    pub(crate) keep_last: Option<u32>,
    pub(crate) keep_hourly: Option<u32>,
    pub(crate) keep_daily: Option<u32>,
    pub(crate) keep_weekly: Option<u32>,
    pub(crate) keep_monthly: Option<u32>,
    pub(crate) keep_yearly: Option<u32>,
    pub(crate) keep_within: Option<String>,
    #[serde(default)]
    pub(crate) keep_tags: Vec<String>,
}

/// The profile used when none is named, if the file has it.
const DEFAULT_PROFILE: &str = "default";

/// `$XDG_CONFIG_HOME/kith/config.toml`, else `~/.config/kith/config.toml`.
pub(crate) fn default_config_file() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .map(|d| d.join("kith/config.toml"))
}

fn read(path: &Path) -> Result<Option<ConfigFile>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::Config(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        CliError::Config(format!(
            "the config file {} is not valid: {e}",
            path.display()
        ))
    })
}

/// The profile chosen by `--profile`/`KITH_PROFILE`, or the `default`
/// profile when none is named and the file has one.
pub(crate) fn load(global: &Global) -> Result<Option<Profile>, CliError> {
    let explicit_file = global.config.is_some();
    let Some(path) = global.config.clone().or_else(default_config_file) else {
        return match &global.profile {
            Some(name) => Err(CliError::Config(format!(
                "no profile {name:?}: there is no config file (give one with --config or KITH_CONFIG)"
            ))),
            None => Ok(None),
        };
    };
    let file = match read(&path)? {
        Some(f) => f,
        None if explicit_file => {
            return Err(CliError::Config(format!(
                "the config file {} does not exist",
                path.display()
            )))
        }
        None => {
            return match &global.profile {
                Some(name) => Err(CliError::Config(format!(
                    "no profile {name:?}: the config file {} does not exist",
                    path.display()
                ))),
                None => Ok(None),
            }
        }
    };
    match &global.profile {
        Some(name) => match file.profiles.get(name) {
            Some(p) => Ok(Some(p.clone())),
            None => {
                let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
                Err(CliError::Config(format!(
                    "no profile {name:?} in {}; {}",
                    path.display(),
                    if known.is_empty() {
                        "it defines none".to_owned()
                    } else {
                        format!("it defines: {}", known.join(", "))
                    }
                )))
            }
        },
        None => Ok(file.profiles.get(DEFAULT_PROFILE).cloned()),
    }
}

/// Fills in what the command line and environment left out.
pub(crate) fn apply(profile: &Profile, global: &mut Global, command: &mut Command) {
    if global.repo.is_none() {
        global.repo = profile.repository.clone();
    }
    if global.cache_dir.is_none() {
        global.cache_dir = profile.cache_dir.clone();
    }
    // Any secret given outside the profile wins over the profile's.
    let secret_given = global.password_file.is_some()
        || global.password_command.is_some()
        || global.master_key_file.is_some()
        || std::env::var_os("KITH_PASSWORD").is_some()
        || std::env::var_os("KITH_MASTER_KEY").is_some();
    if !secret_given {
        global.password_file = profile.password_file.clone();
        global.password_command = profile.password_command.clone();
    }
    match command {
        Command::Backup(b) => {
            if b.paths.is_empty() {
                b.paths = profile.paths.clone();
            }
            b.excludes.extend(profile.excludes.iter().cloned());
            b.exclude_files
                .extend(profile.exclude_files.iter().cloned());
            if b.tags.is_empty() {
                b.tags = profile.tags.clone();
            }
            if b.host.is_none() {
                b.host = profile.host.clone();
            }
        }
        Command::Forget(f) if f.snapshots.is_empty() => {
            let r = &profile.retention;
            f.keep_last = f.keep_last.or(r.keep_last);
            f.keep_hourly = f.keep_hourly.or(r.keep_hourly);
            f.keep_daily = f.keep_daily.or(r.keep_daily);
            f.keep_weekly = f.keep_weekly.or(r.keep_weekly);
            f.keep_monthly = f.keep_monthly.or(r.keep_monthly);
            f.keep_yearly = f.keep_yearly.or(r.keep_yearly);
            if f.keep_within.is_none() {
                f.keep_within = r.keep_within.clone();
            }
            if f.keep_tags.is_empty() {
                f.keep_tags = r.keep_tags.clone();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_unknown_keys_are_refused() {
        let f: ConfigFile = toml::from_str(
            r#"
            [profiles.home]
            repository = "/r"
            password_command = "echo pw"
            paths = ["/a", "/b"]
            excludes = ["*.tmp"]
            [profiles.home.retention]
            keep_daily = 7
            "#,
        )
        .unwrap();
        let p = &f.profiles["home"];
        assert_eq!(p.repository.as_deref(), Some("/r"));
        assert_eq!(p.paths.len(), 2);
        assert_eq!(p.retention.keep_daily, Some(7));
        assert!(toml::from_str::<ConfigFile>("[profiles.x]\nrepo = \"/r\"\n").is_err());
    }
}
