//! The `kith` command-line tool: parses arguments, opens the repository,
//! calls the engine, renders results, and maps errors to exit codes
//! (docs/CLI.md). It is the only crate that prints.

mod args;
mod cmd;
mod context;
mod error;
mod exit;
#[cfg(feature = "mount")]
mod mountfs;
mod output;
mod peers;
mod profile;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::context::Context;
use crate::error::CliError;

/// kith allocates and frees pack-sized buffers (MiBs) all the time. glibc's
/// malloc raises its mmap threshold after each such free and from then on
/// keeps the memory in its arenas, which nearly doubled peak RSS in
/// benchmarks (docs/BENCHMARKS.md). A fixed threshold keeps pack-sized
/// buffers in their own mappings, returned to the system when freed. It sits
/// just above the largest chunk (4 MiB), so the many chunk-sized buffers of
/// a backup or restore are reused from the heap instead: a fresh mapping for
/// each of them cost more in page faults than the copying they hold.
/// Allocations from this size up get a mapping of their own. Pack and
/// parity buffers are the exception: the engine's buffer pool
/// (`kith_engine::buffers`) keeps a few of them mapped for the next pack.
const MMAP_THRESHOLD: i32 = 4 * 1024 * 1024 + 64 * 1024;

#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets a malloc parameter; it is called once, before
    // any other thread exists, with a documented parameter and value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

async fn dispatch(ctx: &Context, command: &Command) -> Result<u8, CliError> {
    match command {
        Command::Init(a) => cmd::init::run(ctx, a).await,
        Command::Backup(a) => cmd::backup::run(ctx, a).await,
        Command::Snapshots(a) => cmd::snapshots::run(ctx, a).await,
        Command::Ls(a) => cmd::ls::run(ctx, a).await,
        Command::Restore(a) => cmd::restore::run(ctx, a).await,
        Command::Check(a) => cmd::check::run(ctx, a).await,
        Command::Key(c) => cmd::key::run(ctx, c).await,
        Command::Repair(c) => cmd::repair::run(ctx, c).await,
        Command::Unlock(a) => cmd::unlock::run(ctx, a).await,
        Command::Forget(a) => cmd::forget::run(ctx, a).await,
        Command::Generate(c) => cmd::generate::run(c),
        Command::Cat(c) => cmd::cat::run(ctx, c).await,
        Command::Tag(a) => cmd::tag::run(ctx, a).await,
        Command::Diff(a) => cmd::diff::run(ctx, a).await,
        Command::Stats => cmd::stats::run(ctx).await,
        Command::Find(a) => cmd::find::run(ctx, a).await,
        Command::Prune(a) => cmd::prune::run(ctx, a).await,
        Command::Copy(a) => cmd::copy::run(ctx, a).await,
        Command::Mount(a) => cmd::mount::run(ctx, a).await,
        Command::Node(c) => cmd::node::run(ctx, c).await,
        Command::Peer(c) => cmd::peer::run(ctx, c).await,
    }
}

fn init_logging(verbose: u8, quiet: bool, daemon: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        // A daemon's log is its only output.
        (_, 0) if daemon => "info",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KITH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::colour_stderr())
        .with_target(false)
        .without_time()
        .try_init();
}

fn main() -> ExitCode {
    tune_allocator();
    let mut cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Node(args::NodeCommand::Run(_)));
    init_logging(cli.global.verbose, cli.global.quiet, daemon);
    if !matches!(cli.command, Command::Generate(_)) {
        match profile::load(&cli.global) {
            Ok(Some(p)) => profile::apply(&p, &mut cli.global, &mut cli.command),
            Ok(None) => {}
            Err(e) => {
                eprintln!("kith: error: {e}");
                return ExitCode::from(e.exit_code());
            }
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Node(args::NodeCommand::Run(a)) = &cli.command {
        // A config that cannot be read fails the daemon's start with its
        // own message; the runtime only needs a thread count meanwhile.
        let threads = kith_node::NodeDir::new(&a.dir)
            .load_config()
            .map_or(1, |c| c.threads);
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kith: cannot start: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let ctx = Context { global: cli.global };
    let result = runtime.block_on(async {
        if daemon || matches!(cli.command, Command::Mount(_)) {
            // The daemon handles SIGINT and SIGTERM itself and stops
            // cleanly; mount handles Ctrl-C itself: it must unmount first.
            return dispatch(&ctx, &cli.command).await;
        }
        tokio::select! {
            r = dispatch(&ctx, &cli.command) => r,
            _ = tokio::signal::ctrl_c() => Err(CliError::Engine(kith_engine::Error::Interrupted)),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        // A closed pipe (`kith ls | head`) is the reader's choice, not a failure.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("kith: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
