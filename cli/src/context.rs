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

    /// The storage behind a location; `secrets` unlock a repository on
    /// peers, whose objects cannot be found without the owner keys.
    pub(crate) async fn backend_for(
        &self,
        location: &str,
        secrets: &Secrets,
    ) -> Result<Arc<dyn Backend>, CliError> {
        if crate::peers::is_peers(location)? {
            return crate::peers::open(self.global.node.as_ref(), secrets).await;
        }
        Self::plain_backend_for(location)
    }

    /// The storage behind a location that is not on peers.
    pub(crate) fn plain_backend_for(location: &str) -> Result<Arc<dyn Backend>, CliError> {
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

    pub(crate) async fn backend(&self) -> Result<Arc<dyn Backend>, CliError> {
        let backend = self.backend_for(&self.location(), &self.secrets()).await?;
        Ok(with_stop_point(with_crash_point(backend)))
    }

    /// Whether the repository is on peers (`peers://`).
    pub(crate) fn on_peers(&self) -> Result<bool, CliError> {
        crate::peers::is_peers(&self.location())
    }

    pub(crate) fn cache_dir(&self) -> Option<PathBuf> {
        self.global.cache_dir.clone().or_else(default_cache)
    }

    /// Where this repository's secrets come from.
    pub(crate) fn secrets(&self) -> Secrets {
        Secrets {
            password_file: self.global.password_file.clone(),
            password_command: self.global.password_command.clone(),
            password_env: "KITH_PASSWORD",
            master_key_file: self.global.master_key_file.clone(),
            master_key_env: "KITH_MASTER_KEY",
            what: "repository",
        }
    }

    /// The password from the password file, the password command,
    /// `KITH_PASSWORD`, or a prompt.
    pub(crate) fn password(&self, prompt: &str) -> Result<String, CliError> {
        self.secrets().password(prompt)
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
        if std::env::var("KITH_PASSWORD").is_ok()
            || self.global.password_file.is_some()
            || self.global.password_command.is_some()
        {
            return self.password("");
        }
        let p = self.new_password(None)?;
        if p.is_empty() {
            return Err(CliError::Usage("an empty password is not allowed".into()));
        }
        Ok(p)
    }

    pub(crate) fn credentials(&self) -> Result<Credentials, CliError> {
        self.secrets().credentials()
    }

    /// Opens the repository.
    pub(crate) async fn open(&self) -> Result<Repository, CliError> {
        Ok(self.open_with_credentials().await?.0)
    }

    /// Opens the repository; also returns the credentials that opened it.
    pub(crate) async fn open_with_credentials(
        &self,
    ) -> Result<(Repository, Credentials), CliError> {
        let backend = self.backend().await?;
        let credentials = self.credentials()?;
        let mut repo = Repository::open(backend, &credentials, self.cache_dir()).await?;
        if let Some(text) = &self.global.stale_after {
            let stale = kith_engine::forget::parse_duration(text)
                .map_err(|e| CliError::Usage(format!("--stale-after: {e}")))?;
            repo.set_stale_after(stale);
        }
        Ok((repo, credentials))
    }
}

/// Where one repository's password or master key comes from, in order of
/// precedence: master key file, master key variable, password file,
/// password command, password variable, prompt.
pub(crate) struct Secrets {
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) password_command: Option<String>,
    pub(crate) password_env: &'static str,
    pub(crate) master_key_file: Option<PathBuf>,
    pub(crate) master_key_env: &'static str,
    /// Which repository, for prompts.
    pub(crate) what: &'static str,
}

impl Secrets {
    /// The password: file, command, variable, or a prompt.
    pub(crate) fn password(&self, prompt: &str) -> Result<String, CliError> {
        if let Some(file) = &self.password_file {
            return read_secret_file(file, "password");
        }
        if let Some(command) = &self.password_command {
            return run_password_command(command);
        }
        if let Ok(p) = std::env::var(self.password_env) {
            return Ok(p);
        }
        prompt_password(prompt)
    }

    /// The master key from its file or variable, if any.
    pub(crate) fn master_key(&self) -> Result<Option<kith_engine::MasterSecret>, CliError> {
        let text = if let Some(file) = &self.master_key_file {
            read_secret_file(file, "master key")?
        } else if let Ok(text) = std::env::var(self.master_key_env) {
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
                self.password(&format!("{} password: ", self.what))?,
            )),
        }
    }
}

/// Runs `command` with `sh -c` and takes the first line of its output.
/// Its stderr passes through (it may ask for a touch or a PIN).
pub(crate) fn run_password_command(command: &str) -> Result<String, CliError> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| CliError::Usage(format!("cannot run the password command: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Usage(format!(
            "the password command failed ({}); check the command given by --password-command, \
             KITH_PASSWORD_COMMAND or the profile",
            out.status
        )));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| {
        CliError::Usage("the password command printed something that is not UTF-8".into())
    })?;
    let line = text.lines().next().unwrap_or("").to_owned();
    if line.is_empty() {
        return Err(CliError::Usage(
            "the password command printed nothing (an empty password is not allowed)".into(),
        ));
    }
    Ok(line)
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

/// Wraps `backend` so that the process stops itself (SIGSTOP) before its
/// first write of a kind when `KITH_TEST_STOP_BEFORE_PUT=KIND` is set: tests
/// of a process suspended at that exact point use it (docs/RELIABILITY.md).
fn with_stop_point(backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
    match std::env::var(kith_storage::STOP_BEFORE_PUT_ENV)
        .ok()
        .and_then(|v| kith_storage::StopBeforePut::kind_named(&v))
    {
        Some(kind) => Arc::new(kith_storage::StopBeforePut::new(backend, kind)),
        None => backend,
    }
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
