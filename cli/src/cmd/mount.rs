//! `kith mount`: snapshots as a read-only file system until unmounted
//! (`fusermount3 -u MOUNTPOINT`, `umount`, Ctrl-C or SIGTERM).

use crate::args::MountArgs;
use crate::context::Context;
use crate::error::CliError;

#[cfg(not(feature = "mount"))]
pub(crate) async fn run(_ctx: &Context, args: &MountArgs) -> Result<u8, CliError> {
    check_mountpoint(&args.mountpoint)?;
    Err(CliError::Usage(
        "this kith was built without FUSE support (cargo feature `mount`)".into(),
    ))
}

/// Refuses a mount point that is missing, not a folder, not empty, or
/// already a mount point.
fn check_mountpoint(path: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    let unusable = |why: String| CliError::Mountpoint(format!("{}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTCONN) => unusable(
            "a file system that is no longer served is mounted here; \
             unmount it with `fusermount3 -u`"
                .into(),
        ),
        _ => unusable(format!("cannot be used as a mount point: {e}")),
    })?;
    if !meta.is_dir() {
        return Err(unusable("is not a folder".into()));
    }
    let parent = path.join("..");
    if let Ok(p) = std::fs::metadata(&parent) {
        if p.dev() != meta.dev() {
            return Err(unusable(
                "is in use: something is already mounted here".into(),
            ));
        }
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| unusable(format!("{e}")))?;
    if entries.next().is_some() {
        return Err(unusable("is not empty".into()));
    }
    Ok(())
}

#[cfg(feature = "mount")]
pub(crate) async fn run(ctx: &Context, args: &MountArgs) -> Result<u8, CliError> {
    use std::sync::Arc;

    use crate::mountfs::SnapshotFs;

    check_mountpoint(&args.mountpoint)?;
    let repo = ctx.open().await?;
    let (snapshots, errors) = repo.snapshots().await?;
    for e in &errors {
        eprintln!("warning: {e}");
    }
    // The index is loaded before mounting, so the first read does not stall.
    repo.index().await?;
    let repo = Arc::new(repo);
    let fs = SnapshotFs::new(repo, tokio::runtime::Handle::current(), &snapshots);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("kith".into()),
        fuser::MountOption::Subtype("kith".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    let mut session = fuser::Session::new(fs, &args.mountpoint, &config).map_err(|e| {
        CliError::Mountpoint(format!(
            "cannot mount on {}: {e}",
            args.mountpoint.display()
        ))
    })?;
    let mut unmounter = session.unmount_callable();
    if !ctx.global.quiet && !ctx.global.json {
        eprintln!(
            "{} snapshots mounted on {}; unmount with `fusermount3 -u {}` or Ctrl-C",
            snapshots.len(),
            args.mountpoint.display(),
            args.mountpoint.display()
        );
    }
    // A plain thread, outside the runtime: the file system blocks on the
    // runtime (through its handle) for every engine call.
    let (done_tx, mut serving) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kith-fuse".into())
        .spawn(move || {
            let _ = done_tx.send(session.run());
        })
        .map_err(CliError::Output)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(CliError::Output)?;
    let stopped_by_signal = tokio::select! {
        r = &mut serving => {
            if let Ok(Err(e)) = r {
                return Err(CliError::Usage(format!("the mount stopped: {e}")));
            }
            false
        }
        _ = tokio::signal::ctrl_c() => true,
        _ = term.recv() => true,
    };
    if stopped_by_signal {
        unmounter
            .unmount()
            .map_err(|e| CliError::Usage(format!("cannot unmount: {e}")))?;
        let _ = serving.await;
    }
    Ok(crate::exit::OK)
}
