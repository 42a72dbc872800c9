//! The command line, as clap definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// kith: encrypted, deduplicated backups to a folder, a server, a bucket or friends' machines.
#[derive(Debug, Parser)]
#[command(
    name = "kith",
    version,
    about,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Repository location: a folder path (default: the per-user data folder).
    #[arg(short = 'r', long = "repo", env = "KITH_REPOSITORY", global = true)]
    pub(crate) repo: Option<String>,
    /// Read the password from this file.
    #[arg(long, env = "KITH_PASSWORD_FILE", global = true)]
    pub(crate) password_file: Option<PathBuf>,
    /// Run this shell command (`sh -c`) and use the first line it prints as the password.
    #[arg(
        long,
        env = "KITH_PASSWORD_COMMAND",
        global = true,
        value_name = "COMMAND"
    )]
    pub(crate) password_command: Option<String>,
    /// Open the repository with the master key (paper key) in this file instead of a password.
    #[arg(long, global = true)]
    pub(crate) master_key_file: Option<PathBuf>,
    /// The config file with named profiles (default: `kith/config.toml` in the per-user config folder).
    #[arg(long, env = "KITH_CONFIG", global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Use this profile of the config file (default: the profile `default`, if there is one).
    #[arg(long, env = "KITH_PROFILE", global = true, value_name = "NAME")]
    pub(crate) profile: Option<String>,
    /// Folder for local caches (default: the per-user cache folder).
    #[arg(long, env = "KITH_CACHE_DIR", global = true)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Print more detail (repeat for debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// The local node folder (for `peer` commands and `peers://` repositories).
    #[arg(
        long = "node",
        env = "KITH_NODE_DIR",
        global = true,
        value_name = "DIR"
    )]
    pub(crate) node: Option<PathBuf>,
    /// After how long without a refresh another process's lock or backup session counts as abandoned, e.g. `30min` (the default) or `90s`.
    #[arg(long, env = "KITH_STALE_AFTER", global = true, value_name = "DURATION")]
    pub(crate) stale_after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and folders.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot into a folder.
    Restore(RestoreArgs),
    /// Verify the repository's structure and, optionally, its data.
    Check(CheckArgs),
    /// Manage the passwords (key files) of the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Rebuild damaged parts of the repository.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Remove stale locks and session markers.
    Unlock(UnlockArgs),
    /// Forget snapshots by a retention policy or by id (data stays until a prune).
    Forget(ForgetArgs),
    /// Print shell completions or the man page.
    #[command(subcommand)]
    Generate(GenerateCommand),
    /// Find files and folders by name in every snapshot (glob, or forgiving of typos, case and accents).
    Find(FindArgs),
    /// Show sizes: per snapshot, after deduplication and as stored.
    Stats,
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Add, remove or set the tags of snapshots.
    Tag(TagArgs),
    /// Print a repository object, decrypted, for debugging.
    #[command(subcommand)]
    Cat(CatCommand),
    /// Remove data no snapshot needs: condemn unused packs, delete them after a grace period, repack partly used ones.
    Prune(PruneArgs),
    /// Copy snapshots from another repository into this one (re-encrypted).
    Copy(CopyArgs),
    /// Browse snapshots as a read-only file system (FUSE) until unmounted.
    Mount(MountArgs),
    /// Create, run and inspect the local node that holds friends' shards and stores yours on them.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Make friends with other nodes and see them.
    #[command(subcommand)]
    Peer(PeerCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Create a node: a folder with an identity and a config (docs/NODE.md).
    Init(NodeInitArgs),
    /// Run the node in the foreground until SIGTERM or SIGINT.
    Run(NodeDirArgs),
    /// Print the node's peer id and addresses (`--json`: `peer_id`, `addresses`).
    Info(NodeDirArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NodeDirArgs {
    /// The node folder.
    #[arg(long, env = "KITH_NODE_DIR", value_name = "DIR")]
    pub(crate) dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct NodeInitArgs {
    /// The node folder to create.
    #[arg(long, env = "KITH_NODE_DIR", value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// Address to listen on, e.g. `/ip4/0.0.0.0/tcp/7412` (repeatable; default: TCP and QUIC on port 7412).
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) listen: Vec<String>,
    /// DHT bootstrap peer, ending in `/p2p/<peer id>` (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) bootstrap: Vec<String>,
    /// Space offered to friends' shards, e.g. `50G` (default 10 GiB).
    #[arg(long, value_name = "SIZE")]
    pub(crate) quota: Option<String>,
    /// Find peers on the local network with multicast DNS.
    #[arg(long)]
    pub(crate) mdns: bool,
    /// Tell peers this node is always on (a NAS, a desktop that stays up).
    #[arg(long)]
    pub(crate) always_on: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PeerCommand {
    /// Print a one-time invite code for another node (alone on stdout).
    Invite,
    /// Redeem another node's invite code: both become friends.
    Add(PeerAddArgs),
    /// List friends and discovered peers with their state and the bytes held each way.
    List,
}

#[derive(Debug, Args)]
pub(crate) struct PeerAddArgs {
    /// The invite code (`kith-invite-…`).
    pub(crate) code: String,
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// Snapshots of the source repository (ids, prefixes or `latest`); all of them when none is given.
    pub(crate) snapshots: Vec<String>,
    /// The repository to copy from.
    #[arg(
        long = "from-repo",
        env = "KITH_FROM_REPOSITORY",
        value_name = "LOCATION"
    )]
    pub(crate) from_repo: String,
    /// Read the source repository's password from this file.
    #[arg(long, env = "KITH_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) from_password_file: Option<PathBuf>,
    /// Run this shell command for the source repository's password.
    #[arg(long, env = "KITH_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    pub(crate) from_password_command: Option<String>,
    /// Open the source repository with the master key (paper key) in this file.
    #[arg(long, env = "KITH_FROM_MASTER_KEY_FILE", value_name = "FILE")]
    pub(crate) from_master_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct MountArgs {
    /// An empty folder to mount the snapshots on.
    pub(crate) mountpoint: PathBuf,
}

/// How a prune treats packs.
#[derive(Debug, Args)]
pub(crate) struct PruneOptionArgs {
    /// Repack a partly used pack when more than this share of its bytes is unused.
    #[arg(long, value_name = "PERCENT", default_value = "10%")]
    pub(crate) max_unused: String,
    /// Delete condemned packs only this long after they were condemned, e.g. `1d` (the default) or `12h`.
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    pub(crate) grace: String,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    pub(crate) options: PruneOptionArgs,
    /// Show what would be done without changing anything.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FindArgs {
    /// A name, part of a name, or a glob such as `*.jpg`.
    pub(crate) pattern: String,
    /// Show at most this many matches.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The older snapshot (id, prefix or `latest`).
    pub(crate) first: String,
    /// The newer snapshot (id, prefix or `latest`).
    pub(crate) second: String,
}

#[derive(Debug, Args)]
pub(crate) struct TagArgs {
    /// Snapshots (ids, prefixes or `latest`); all of them when none is given.
    pub(crate) snapshots: Vec<String>,
    /// Add this tag (repeatable).
    #[arg(long = "add", value_name = "TAG")]
    pub(crate) add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long = "remove", value_name = "TAG")]
    pub(crate) remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ''` clears them).
    #[arg(long = "set", value_name = "TAG")]
    pub(crate) set: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CatCommand {
    /// The config (JSON).
    Config,
    /// A snapshot (JSON); id, prefix or `latest`.
    Snapshot { id: String },
    /// An index delta (JSON); full id.
    Index { id: String },
    /// A pack's header (JSON); full id. Reads and verifies the whole pack.
    Pack { id: String },
    /// A tree (JSON); full blob id.
    Tree { id: String },
    /// A blob's plaintext, raw on stdout; full blob id.
    Blob { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// Shell completions on stdout, e.g. `kith generate completions bash > /etc/bash_completion.d/kith`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout, e.g. `kith generate man > kith.1`.
    Man,
}

#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// Forget exactly these snapshots (ids or prefixes) instead of applying a policy.
    pub(crate) snapshots: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N")]
    pub(crate) keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub(crate) keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days.
    #[arg(long, value_name = "N")]
    pub(crate) keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks.
    #[arg(long, value_name = "N")]
    pub(crate) keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N")]
    pub(crate) keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long, value_name = "N")]
    pub(crate) keep_yearly: Option<u32>,
    /// Keep every snapshot this close to the newest one, e.g. `1y2m3d4h`.
    #[arg(long, value_name = "DURATION")]
    pub(crate) keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub(crate) keep_tags: Vec<String>,
    /// Group snapshots by `host`, `paths`, both (`host,paths`, the default) or nothing (``).
    #[arg(long, default_value = "host,paths")]
    pub(crate) group_by: String,
    /// Show what would be forgotten without removing anything.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// Prune right after forgetting.
    #[arg(long)]
    pub(crate) prune: bool,
    #[command(flatten)]
    pub(crate) prune_options: PruneOptionArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UnlockArgs {
    /// Remove every lock and session marker, not only stale ones.
    #[arg(long)]
    pub(crate) remove_all: bool,
}

/// Argon2id cost of a new key file.
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct KdfArgs {
    /// Memory for the password hash, in KiB (default 65536).
    #[arg(long, value_name = "KIB")]
    pub(crate) kdf_memory: Option<u32>,
    /// Passes of the password hash (default 3).
    #[arg(long, value_name = "N")]
    pub(crate) kdf_iterations: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    pub(crate) kdf: KdfArgs,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub(crate) pack_size: u32,
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// Files and folders to back up (default: the profile's paths).
    #[arg(value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Leave out paths matching a glob (repeatable); without '/' it matches names.
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    pub(crate) excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub(crate) exclude_files: Vec<PathBuf>,
    /// Do not cross into other file systems.
    #[arg(short = 'x', long)]
    pub(crate) one_file_system: bool,
    /// Read every file even if the cache says it is unchanged.
    #[arg(long)]
    pub(crate) force: bool,
    /// Create the repository first if it does not exist.
    #[arg(long)]
    pub(crate) init: bool,
    #[command(flatten)]
    pub(crate) kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotsArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Only snapshots with this tag.
    #[arg(long = "tag")]
    pub(crate) tags: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Snapshot id, id prefix, or `latest`.
    pub(crate) snapshot: String,
    /// Only this path (and what is under it).
    pub(crate) path: Option<String>,
    /// Show mode, size and time.
    #[arg(short, long)]
    pub(crate) long: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// Snapshot id, id prefix, or `latest`.
    pub(crate) snapshot: String,
    /// Folder to restore into; it must be empty or absent.
    #[arg(short, long)]
    pub(crate) target: PathBuf,
    /// Restore only paths matching a glob, and what is under them (repeatable).
    #[arg(short, long = "include", value_name = "PATTERN")]
    pub(crate) includes: Vec<String>,
    /// Leave out paths matching a glob (repeatable).
    #[arg(short, long = "exclude", value_name = "PATTERN")]
    pub(crate) excludes: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Read and verify every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub(crate) read_data: bool,
    /// Read and verify a random share of packs, e.g. `10%`.
    #[arg(long, value_name = "N%")]
    pub(crate) read_data_subset: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Add a password.
    Add {
        /// The new key can add backups but not read, restore or remove anything.
        #[arg(long)]
        write_only: bool,
        /// Read the new password from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// List key files.
    List,
    /// Remove a key file.
    Remove {
        /// Key id or prefix.
        id: String,
    },
    /// Change the password of the key in use.
    Passwd {
        /// Read the new password from this file.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Print the master key (paper key) alone on stdout.
    ExportMaster,
    /// Replace the master secret with a new one; old data stays readable, other keys are removed.
    RotateMaster {
        /// The new key's password from this file (default: the password in use, or KITH_NEW_PASSWORD).
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RepairCommand {
    /// Rebuild the index from the pack headers.
    Index,
    /// Rewrite snapshots whose files or folders cannot be read, leaving out what is lost (copies tagged `repaired`).
    Snapshots {
        /// Remove the damaged originals (and unreadable snapshot records) once their copies are stored.
        #[arg(long)]
        forget: bool,
        /// Show what would be lost without writing anything.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
}
