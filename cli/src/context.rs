//! Where the repository is and how to unlock it: from flags, environment,
//! files or a prompt.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use kith_engine::{keys::parse_paper_key, Credentials, KdfParams, Repository};
use kith_storage::{Backend, LocalBackend};

use crate::args::{Global, KdfArgs};
use crate::error::CliError;

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The default repository: `$XDG_DATA_HOME/kith/repository`, or
/// `~/.local/share/kith/repository`.
pub(crate) fn default_repository() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("kith/repository")
}

fn default_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".cache")))
        .map(|d| d.join("kith"))
}

pub(crate) struct Context {
    pub(crate) global: Global,
}

impl Context {
    /// The repository location as the user gave it (or the default).
    pub(crate) fn location(&self) -> String {
        self.global
            .repo
            .clone()
            .unwrap_or_else(|| default_repository().display().to_string())
    }

    /// The storage behind a location.
    pub(crate) fn backend_for(location: &str) -> Result<Arc<dyn Backend>, CliError> {
        if location.contains("://") {
            // sftp:// and s3:// URLs: remote backends, wrapped in the retry
            // layer, configured from the environment.
            return kith_storage::Location::parse(location)
                .and_then(|l| l.open())
                .map_err(|e| CliError::Usage(e.to_string()));
        }
        let path = location.strip_prefix("local:").unwrap_or(location);
        if path.is_empty() {
            return Err(CliError::Usage("the repository location is empty".into()));
        }
        Ok(Arc::new(LocalBackend::new(PathBuf::from(path))))
    }

    pub(crate) fn backend(&self) -> Result<Arc<dyn Backend>, CliError> {
        let backend = Self::backend_for(&self.location())?;
        Ok(with_crash_point(backend))
    }

    pub(crate) fn cache_dir(&self) -> Option<PathBuf> {
        self.global.cache_dir.clone().or_else(default_cache)
    }

    /// The password from `KITH_PASSWORD`, the password file, or a prompt.
    pub(crate) fn password(&self, prompt: &str) -> Result<String, CliError> {
        if let Some(file) = &self.global.password_file {
            return read_secret_file(file, "password");
        }
        if let Ok(p) = std::env::var("KITH_PASSWORD") {
            return Ok(p);
        }
        prompt_password(prompt)
    }

    /// A new password: from `KITH_NEW_PASSWORD`, a file, or asked twice.
    pub(crate) fn new_password(&self, file: Option<&PathBuf>) -> Result<String, CliError> {
        if let Some(file) = file {
            return read_secret_file(file, "new password");
        }
        if let Ok(p) = std::env::var("KITH_NEW_PASSWORD") {
            return Ok(p);
        }
        let a = prompt_password("new password: ")?;
        let b = prompt_password("repeat the new password: ")?;
        if a != b {
            return Err(CliError::Usage("the passwords do not match".into()));
        }
        Ok(a)
    }

    /// The password for a new repository.
    pub(crate) fn init_password(&self) -> Result<String, CliError> {
        if std::env::var("KITH_PASSWORD").is_ok() || self.global.password_file.is_some() {
            return self.password("");
        }
        let p = self.new_password(None)?;
        if p.is_empty() {
            return Err(CliError::Usage("an empty password is not allowed".into()));
        }
        Ok(p)
    }

    /// The master key from `--master-key-file` or `KITH_MASTER_KEY`, if any.
    pub(crate) fn master_key(&self) -> Result<Option<kith_engine::MasterSecret>, CliError> {
        let text = if let Some(file) = &self.global.master_key_file {
            read_secret_file(file, "master key")?
        } else if let Ok(text) = std::env::var("KITH_MASTER_KEY") {
            text
        } else {
            return Ok(None);
        };
        Ok(Some(parse_paper_key(&text)?))
    }

    pub(crate) fn credentials(&self) -> Result<Credentials, CliError> {
        match self.master_key()? {
            Some(m) => Ok(Credentials::Master(m)),
            None => Ok(Credentials::Password(
                self.password("repository password: ")?,
            )),
        }
    }

    /// Opens the repository.
    pub(crate) async fn open(&self) -> Result<Repository, CliError> {
        let backend = self.backend()?;
        let credentials = self.credentials()?;
        let mut repo = Repository::open(backend, &credentials, self.cache_dir()).await?;
        if let Some(text) = &self.global.stale_after {
            let stale = kith_engine::forget::parse_duration(text)
                .map_err(|e| CliError::Usage(format!("--stale-after: {e}")))?;
            repo.set_stale_after(stale);
        }
        Ok(repo)
    }
}

fn read_secret_file(file: &PathBuf, what: &str) -> Result<String, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the {what} file {}: {e}",
            file.display()
        ))
    })?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

fn prompt_password(prompt: &str) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no password given: set KITH_PASSWORD or KITH_PASSWORD_FILE, or run in a terminal"
                .into(),
        ));
    }
    rpassword::prompt_password(prompt)
        .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))
}

/// Argon2id parameters from flags.
pub(crate) fn kdf(args: &KdfArgs) -> KdfParams {
    let mut k = KdfParams::default();
    if let Some(m) = args.kdf_memory {
        k.memory_kib = m;
    }
    if let Some(t) = args.kdf_iterations {
        k.iterations = t;
    }
    k
}

/// Wraps `backend` so that the process dies right after its n-th write when
/// `KITH_TEST_CRASH_AFTER_WRITES=n` is set: the crash-point tests use it to
/// stop kith at every write of an operation (docs/RELIABILITY.md).
fn with_crash_point(backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
    match std::env::var(kith_storage::CRASH_AFTER_WRITES_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(n) if n > 0 => Arc::new(kith_storage::CrashAfter::new(backend, n)),
        _ => backend,
    }
}
