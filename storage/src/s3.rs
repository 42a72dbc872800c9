//! A repository in an S3 bucket (or any S3-compatible object store).
//!
//! Layout: the same relative paths as the local backend
//! ([`Handle::relative_path`]) below an optional key prefix, so
//! `s3://bucket/prefix` keeps its config at `prefix/config` and a pack at
//! `prefix/packs/ab/ab…`. A PUT is atomic per object, so no temporary names
//! are needed. Listings page through `ListObjectsV2` with continuation
//! tokens. The HTTP client keeps a pool of connections, so concurrent calls
//! run as concurrent requests.
//!
//! This backend does not retry by itself (the client's own retries are
//! turned off): wrap it in [`crate::Retry`], which knows which answers are
//! worth retrying.

use async_trait::async_trait;
use bytes::Bytes;
use s3::command::Command;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::request::tokio_backend::ReqwestRequest;
use s3::request::Request as _;
use s3::{Bucket, BucketConfiguration, Region};

use crate::{Backend, Error, Handle, Kind, ObjectInfo, Result};

/// Where an S3 repository lives and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket name.
    pub bucket: String,
    /// The key prefix of the repository, without leading or trailing `/`;
    /// empty for the bucket's root.
    pub prefix: String,
    /// A custom endpoint (`AWS_ENDPOINT_URL`), addressed path-style; `None`
    /// for AWS itself.
    pub endpoint: Option<String>,
    /// The region (`AWS_REGION`, default `us-east-1`).
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: Option<String>,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl S3Config {
    /// The configuration of `s3://bucket/prefix` from the standard AWS
    /// environment variables.
    pub fn from_env(bucket: &str, prefix: &str) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            access_key: var("AWS_ACCESS_KEY_ID"),
            secret_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
        }
    }
}

/// A repository stored in an S3 bucket.
#[derive(Debug)]
pub struct S3Backend {
    config: S3Config,
    bucket: Box<Bucket>,
    page_size: usize,
}

impl S3Backend {
    /// A backend for `config`; nothing is contacted until it is used.
    pub fn new(config: S3Config) -> Result<Self> {
        let location = format!("s3://{}/{}", config.bucket, config.prefix);
        let invalid = |reason: String| Error::InvalidLocation {
            location: location.clone(),
            reason,
        };
        if config.access_key.is_none() || config.secret_key.is_none() {
            return Err(invalid(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3 repositories".into(),
            ));
        }
        let credentials = Credentials::new(
            config.access_key.as_deref(),
            config.secret_key.as_deref(),
            None,
            config.session_token.as_deref(),
            None,
        )
        .map_err(|e| invalid(format!("bad credentials: {e}")))?;
        let region = match &config.endpoint {
            Some(endpoint) => Region::Custom {
                region: config.region.clone(),
                endpoint: endpoint.trim_end_matches('/').to_owned(),
            },
            None => config
                .region
                .parse()
                .map_err(|e| invalid(format!("bad AWS_REGION {:?}: {e}", config.region)))?,
        };
        let mut bucket =
            Bucket::new(&config.bucket, region, credentials).map_err(|e| invalid(e.to_string()))?;
        if config.endpoint.is_some() {
            bucket = bucket.with_path_style();
        }
        // Retrying is the job of the Retry wrapper, which knows which
        // answers are permanent: the client's own retries would multiply.
        s3::set_retries(0);
        Ok(S3Backend {
            config,
            bucket,
            page_size: 1000,
        })
    }

    /// Keys asked for per listing page (1000, the most S3 gives, unless
    /// set); smaller pages make tests cross page boundaries cheaply.
    pub fn with_page_size(mut self, keys: usize) -> Self {
        self.page_size = keys.clamp(1, 1000);
        self
    }

    fn key(&self, rel: &str) -> String {
        if self.config.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.config.prefix)
        }
    }

    fn kind_prefix(&self, kind: Kind) -> String {
        match kind {
            Kind::Config => self.key(""),
            kind => self.key(&format!("{}/", kind.dir())),
        }
    }

    /// Lists every key below `prefix`, page by page, with sizes.
    async fn list_keys(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let command = Command::ListObjectsV2 {
                prefix: prefix.to_owned(),
                delimiter: None,
                continuation_token: token.clone(),
                start_after: None,
                max_keys: Some(self.page_size),
            };
            let request = ReqwestRequest::new(&self.bucket, "/", command)
                .await
                .map_err(|e| self.client_error("list", prefix, e))?;
            let response = request
                .response_data(false)
                .await
                .map_err(|e| self.client_error("list", prefix, e))?;
            let status = response.status_code();
            if !(200..300).contains(&status) {
                return Err(self.status_error("list", prefix, status, response.as_slice()));
            }
            let page: s3::serde_types::ListBucketResult = quick_xml_from(response.as_slice())
                .map_err(|message| Error::Remote {
                    op: "list",
                    path: prefix.to_owned(),
                    message: format!("unreadable listing: {message}"),
                    transient: true,
                })?;
            out.extend(page.contents.into_iter().map(|o| (o.key, o.size)));
            match page.next_continuation_token {
                Some(next) if page.is_truncated => token = Some(next),
                _ => return Ok(out),
            }
        }
    }

    fn client_error(&self, op: &'static str, key: &str, e: S3Error) -> Error {
        match e {
            S3Error::Credentials(e) => Error::Auth {
                location: self.location(),
                message: e.to_string(),
            },
            S3Error::Reqwest(e) if e.is_connect() => Error::Connection {
                location: self.location(),
                message: error_chain(&e),
            },
            S3Error::Reqwest(e) => Error::Remote {
                op,
                path: key.to_owned(),
                message: error_chain(&e),
                transient: true,
            },
            S3Error::Io(e) => Error::Remote {
                op,
                path: key.to_owned(),
                message: e.to_string(),
                transient: true,
            },
            S3Error::HttpFailWithBody(status, body) => {
                self.status_error(op, key, status, body.as_bytes())
            }
            e => Error::Remote {
                op,
                path: key.to_owned(),
                message: e.to_string(),
                transient: false,
            },
        }
    }

    /// Classifies an HTTP error answer.
    fn status_error(&self, op: &'static str, key: &str, status: u16, body: &[u8]) -> Error {
        let body = String::from_utf8_lossy(body);
        let code = xml_field(&body, "Code").unwrap_or_default();
        let text = xml_field(&body, "Message").unwrap_or_default();
        let detail = match (code.is_empty(), text.is_empty()) {
            (true, true) => format!("HTTP {status}"),
            (false, true) => format!("HTTP {status} {code}"),
            (true, false) => format!("HTTP {status}: {text}"),
            (false, false) => format!("HTTP {status} {code}: {text}"),
        };
        match status {
            401 | 403 => Error::Auth {
                location: self.location(),
                message: format!(
                    "{detail} (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION)"
                ),
            },
            507 => Error::NoSpace { path: key.into() },
            408 | 429 | 500..=599 => Error::Remote {
                op,
                path: key.to_owned(),
                message: detail,
                transient: true,
            },
            404 if code == "NoSuchBucket" => Error::Remote {
                op,
                path: key.to_owned(),
                message: format!("bucket {:?} does not exist ({detail})", self.config.bucket),
                transient: false,
            },
            _ => Error::Remote {
                op,
                path: key.to_owned(),
                message: detail,
                transient: false,
            },
        }
    }

    /// Checks an answer: 404 becomes `NotFound(handle)`, other failures
    /// are classified.
    fn check(
        &self,
        op: &'static str,
        handle: &Handle,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<()> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        if status == 404 && !String::from_utf8_lossy(body).contains("NoSuchBucket") {
            return Err(Error::NotFound(handle.clone()));
        }
        Err(self.status_error(op, key, status, body))
    }
}

fn quick_xml_from(data: &[u8]) -> std::result::Result<s3::serde_types::ListBucketResult, String> {
    quick_xml::de::from_reader(data).map_err(|e| e.to_string())
}

/// The text of the first `<name>…</name>` in an XML body.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    Some(body[start..end].to_owned())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        match &self.config.endpoint {
            Some(endpoint) => format!(
                "s3://{}/{} at {endpoint}",
                self.config.bucket, self.config.prefix
            ),
            None => format!("s3://{}/{}", self.config.bucket, self.config.prefix),
        }
    }

    fn read_size(&self) -> u64 {
        // One GET per pack that is mostly needed: S3 bills and throttles
        // per request, and some servers read the whole object for every
        // ranged GET. A pack closes once it passes its target size (16 MiB
        // by default) with one more blob (at most 8 MiB), so a 16 MiB limit
        // would split nearly every pack into two GETs.
        32 << 20
    }

    fn parallel_transfers(&self) -> usize {
        // Each request waits on the server more than on this machine.
        8
    }

    async fn create(&self) -> Result<()> {
        match self.probe_bucket().await {
            Ok(()) => {}
            Err(Error::Remote { message, .. }) if message.contains("does not exist") => {
                // Like `restic init`, create a missing bucket.
                self.create_bucket().await?;
            }
            Err(e) => return Err(e),
        }
        match self.stat(&Handle::config()).await {
            Ok(_) => Err(Error::Remote {
                op: "create repository at",
                path: self.location(),
                message: "a repository already exists here".into(),
                transient: false,
            }),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn put(&self, handle: &Handle, data: Bytes) -> Result<()> {
        let key = self.key(&handle.relative_path());
        let response = self
            .bucket
            .put_object(&key, &data)
            .await
            .map_err(|e| self.client_error("write", &key, e))?;
        let status = response.status_code();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(self.status_error("write", &key, status, response.as_slice()))
        }
    }

    async fn get(&self, handle: &Handle) -> Result<Bytes> {
        let key = self.key(&handle.relative_path());
        let response = self
            .bucket
            .get_object(&key)
            .await
            .map_err(|e| self.client_error("read", &key, e))?;
        self.check(
            "read",
            handle,
            &key,
            response.status_code(),
            response.as_slice(),
        )?;
        Ok(response.into_bytes())
    }

    async fn get_range(&self, handle: &Handle, offset: u64, length: u64) -> Result<Bytes> {
        let short = || Error::ShortRead {
            handle: handle.clone(),
            offset,
            wanted: length,
        };
        let end = offset.checked_add(length).ok_or_else(short)?;
        if length == 0 {
            let size = self.stat(handle).await?.size;
            return if offset <= size {
                Ok(Bytes::new())
            } else {
                Err(short())
            };
        }
        let key = self.key(&handle.relative_path());
        let response = self
            .bucket
            .get_object_range(&key, offset, Some(end - 1))
            .await
            .map_err(|e| self.client_error("read", &key, e))?;
        let status = response.status_code();
        if status == 416 {
            return Err(short());
        }
        self.check("read", handle, &key, status, response.as_slice())?;
        let data = response.into_bytes();
        if status == 200 {
            // A server that ignored the range sent the whole object.
            let start = usize::try_from(offset).map_err(|_| short())?;
            let stop = usize::try_from(end).map_err(|_| short())?;
            return data
                .get(start..stop)
                .map(|_| data.slice(start..stop))
                .ok_or_else(short);
        }
        if (data.len() as u64) < length {
            return Err(short());
        }
        Ok(data)
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = self.kind_prefix(kind);
        let search = match kind {
            Kind::Config => self.key("config"),
            Kind::Pack if prefix.len() >= 2 => format!("{base}{}/{prefix}", &prefix[..2]),
            Kind::Pack => base.clone(),
            _ => format!("{base}{prefix}"),
        };
        let mut out = Vec::new();
        for (key, size) in self.list_keys(&search).await? {
            let Some(rel) = key.strip_prefix(&base) else {
                continue;
            };
            let name = match kind {
                Kind::Config => rel,
                Kind::Pack => match rel.split_once('/') {
                    Some((_fan, name)) => name,
                    None => continue,
                },
                _ => rel,
            };
            if !name.starts_with(prefix) || name.contains('/') {
                continue;
            }
            if let Ok(handle) = Handle::new(kind, name) {
                out.push(ObjectInfo { handle, size });
            }
        }
        Ok(out)
    }

    async fn stat(&self, handle: &Handle) -> Result<ObjectInfo> {
        let key = self.key(&handle.relative_path());
        let (head, status) = self
            .bucket
            .head_object(&key)
            .await
            .map_err(|e| self.client_error("stat", &key, e))?;
        if status == 404 {
            // A HEAD answer has no body to tell a missing bucket from a
            // missing object; `create` and the reads tell them apart.
            return Err(Error::NotFound(handle.clone()));
        }
        self.check("stat", handle, &key, status, &[])?;
        let size = head
            .content_length
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| Error::Remote {
                op: "stat",
                path: key.clone(),
                message: "the server gave no object size".into(),
                transient: false,
            })?;
        Ok(ObjectInfo {
            handle: handle.clone(),
            size,
        })
    }

    async fn delete(&self, handle: &Handle) -> Result<()> {
        let key = self.key(&handle.relative_path());
        let response = self
            .bucket
            .delete_object(&key)
            .await
            .map_err(|e| self.client_error("delete", &key, e))?;
        let status = response.status_code();
        if (200..300).contains(&status) || status == 404 {
            Ok(())
        } else {
            Err(self.status_error("delete", &key, status, response.as_slice()))
        }
    }
}

impl S3Backend {
    async fn create_bucket(&self) -> Result<()> {
        let name = &self.config.bucket;
        let mut config = BucketConfiguration::default();
        // us-east-1 takes no location constraint (and refuses one).
        if self.config.region != "us-east-1" {
            config.set_region(self.bucket.region());
        }
        let command = Command::CreateBucket { config };
        let request = ReqwestRequest::new(&self.bucket, "", command)
            .await
            .map_err(|e| self.client_error("create bucket", name, e))?;
        let response = request
            .response_data(false)
            .await
            .map_err(|e| self.client_error("create bucket", name, e))?;
        let status = response.status_code();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(self.status_error("create bucket", name, status, response.as_slice()))
        }
    }

    /// Fails if the bucket is missing or unreachable.
    async fn probe_bucket(&self) -> Result<()> {
        let command = Command::ListObjectsV2 {
            prefix: self.key("config"),
            delimiter: None,
            continuation_token: None,
            start_after: None,
            max_keys: Some(1),
        };
        let request = ReqwestRequest::new(&self.bucket, "/", command)
            .await
            .map_err(|e| self.client_error("list", "", e))?;
        let response = request
            .response_data(false)
            .await
            .map_err(|e| self.client_error("list", "", e))?;
        let status = response.status_code();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(self.status_error("list", "", status, response.as_slice()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_are_read_from_s3_error_bodies() {
        let body = "<Error><Code>InvalidAccessKeyId</Code><Message>nope</Message></Error>";
        assert_eq!(
            xml_field(body, "Code").as_deref(),
            Some("InvalidAccessKeyId")
        );
        assert_eq!(xml_field(body, "Message").as_deref(), Some("nope"));
        assert_eq!(xml_field(body, "Other"), None);
    }
}
