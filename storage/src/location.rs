//! Repository locations: local folders and `sftp://` / `s3://` URLs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{
    Backend, Error, LocalBackend, Result, Retry, RetryPolicy, S3Backend, S3Config, SftpBackend,
    SftpConfig,
};

/// Where a repository lives, as parsed from what the user gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local folder: a plain path or `local:PATH`.
    Local(PathBuf),
    /// `sftp://user@host[:port]/path`.
    Sftp {
        /// The login name.
        user: String,
        /// The host name or address (without brackets for IPv6).
        host: String,
        /// The port, 22 unless given.
        port: u16,
        /// The folder on the server: absolute, or relative to the login
        /// folder when the URL's path starts with `/~/`.
        path: String,
    },
    /// `s3://bucket/prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, without leading or trailing `/`.
        prefix: String,
    },
}

impl Location {
    /// Parses a location. A string without `://` is a local path.
    pub fn parse(location: &str) -> Result<Location> {
        let invalid = |reason: &str| Error::InvalidLocation {
            location: location.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((scheme, rest)) = location.split_once("://") else {
            let path = location.strip_prefix("local:").unwrap_or(location);
            if path.is_empty() {
                return Err(invalid("the location is empty"));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        };
        match scheme {
            "sftp" => {
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let (user, hostport) = match authority.rsplit_once('@') {
                    Some((user, hostport)) => (user.to_owned(), hostport),
                    None => (
                        std::env::var("USER")
                            .ok()
                            .filter(|u| !u.is_empty())
                            .ok_or_else(|| invalid("give a user: sftp://user@host/path"))?,
                        authority,
                    ),
                };
                let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
                    let (host, after) = v6
                        .split_once(']')
                        .ok_or_else(|| invalid("unclosed '[' in the host"))?;
                    (host, after.strip_prefix(':'))
                } else {
                    match hostport.split_once(':') {
                        Some((host, port)) => (host, Some(port)),
                        None => (hostport, None),
                    }
                };
                let port = match port {
                    Some(p) => p
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?,
                    None => 22,
                };
                if host.is_empty() || user.is_empty() {
                    return Err(invalid("the form is sftp://user@host[:port]/path"));
                }
                let path = match path.strip_prefix("/~/") {
                    Some(rel) => rel.to_owned(),
                    None if path == "/~" => String::new(),
                    None => path.to_owned(),
                };
                let path = path.trim_end_matches('/').to_owned();
                if path.is_empty() || path == "/" {
                    return Err(invalid(
                        "give the repository folder: sftp://user@host[:port]/path",
                    ));
                }
                Ok(Location::Sftp {
                    user,
                    host: host.to_owned(),
                    port,
                    path,
                })
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let valid_bucket = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    });
                if !valid_bucket {
                    return Err(invalid(
                        "the form is s3://bucket/prefix, with a bucket name of 3 to 63 lowercase letters, digits, '-' and '.'",
                    ));
                }
                Ok(Location::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            other => Err(invalid(&format!(
                "unknown scheme {other}://; use a folder path, sftp://user@host[:port]/path or s3://bucket/prefix"
            ))),
        }
    }

    /// The backend for this location, configured from the environment.
    /// Remote backends are wrapped in [`Retry`] with the default policy,
    /// or the one `KITH_RETRY_ATTEMPTS` and `KITH_RETRY_TIMEOUT` set.
    pub fn open(&self) -> Result<Arc<dyn Backend>> {
        Ok(match self {
            Location::Local(path) => Arc::new(LocalBackend::new(path.clone())),
            Location::Sftp {
                user,
                host,
                port,
                path,
            } => Arc::new(Retry::with_policy(
                SftpBackend::new(SftpConfig::from_env(user, host, *port, path)),
                RetryPolicy::from_env()?,
            )),
            Location::S3 { bucket, prefix } => Arc::new(Retry::with_policy(
                S3Backend::new(S3Config::from_env(bucket, prefix))?,
                RetryPolicy::from_env()?,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed() {
        assert_eq!(
            Location::parse("sftp://bob@example.org:2222/srv/repo/").unwrap(),
            Location::Sftp {
                user: "bob".into(),
                host: "example.org".into(),
                port: 2222,
                path: "/srv/repo".into()
            }
        );
        assert_eq!(
            Location::parse("sftp://bob@[::1]/~/repo").unwrap(),
            Location::Sftp {
                user: "bob".into(),
                host: "::1".into(),
                port: 22,
                path: "repo".into()
            }
        );
        assert_eq!(
            Location::parse("s3://my-bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("s3://my-bucket").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("local:/x").unwrap(),
            Location::Local("/x".into())
        );
        assert_eq!(
            Location::parse("rel/x").unwrap(),
            Location::Local("rel/x".into())
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for bad in [
            "ftp://x/y",
            "sftp://bob@host:0/x",
            "sftp://bob@host:99999/x",
            "sftp://bob@host",
            "sftp://bob@/x",
            "s3://A/x",
            "s3://",
            "",
        ] {
            let e = Location::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidLocation { .. }), "{bad}: {e}");
        }
    }
}
