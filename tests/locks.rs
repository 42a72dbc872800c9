//! Locks and session markers between processes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::sync::Arc;

use kith_e2e::Env;
use kith_engine::lock::{self, DEFAULT_STALE_AFTER};
use kith_engine::{Credentials, Repository};

fn open(env: &Env, rt: &tokio::runtime::Runtime) -> Repository {
    rt.block_on(Repository::open(
        Arc::new(kith_storage::LocalBackend::new(&env.repo)),
        &Credentials::Password(env.password.clone()),
        None,
    ))
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_exclusive_lock_held_elsewhere_blocks_with_exit_11_until_removed() {
    let env = Env::init();
    let rt = runtime();
    let repo = open(&env, &rt);
    let held = rt
        .block_on(lock::lock(&repo, true, "prune", DEFAULT_STALE_AFTER))
        .unwrap();
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(11));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exclusive prune") && stderr.contains("kith unlock"),
        "{stderr}"
    );
    // The holder is alive and fresh: plain unlock leaves it.
    env.ok(&["unlock"]);
    assert_eq!(env.run(&["check"]).status.code(), Some(11));
    drop(held);
    env.ok(&["unlock", "--remove-all"]);
    env.ok(&["check"]);
    assert_eq!(
        fs::read_dir(env.repo.join("locks")).unwrap().count(),
        0,
        "check released its lock"
    );
}

#[test]
fn a_running_backup_session_keeps_maintenance_out_but_not_other_backups() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let rt = runtime();
    let repo = open(&env, &rt);
    let session = rt.block_on(lock::start_session(&repo, "backup")).unwrap();
    assert_eq!(
        env.run(&["repair", "index"]).status.code(),
        Some(11),
        "maintenance waits for backups"
    );
    env.ok(&["backup", src.to_str().unwrap()]);
    rt.block_on(session.release(&repo)).unwrap();
    env.ok(&["repair", "index"]);
    assert_eq!(fs::read_dir(env.repo.join("sessions")).unwrap().count(), 0);
}

#[test]
fn records_of_dead_processes_on_this_host_are_stale() {
    let env = Env::init();
    let rt = runtime();
    let repo = open(&env, &rt);
    // A lock whose process is gone: written by a child that exits at once.
    let status = env.cmd().args(["check"]).status().unwrap();
    assert!(status.success());
    let held = rt
        .block_on(lock::lock(&repo, true, "prune", DEFAULT_STALE_AFTER))
        .unwrap();
    let records = rt
        .block_on(lock::list(&repo, kith_storage::Kind::Lock))
        .unwrap();
    assert_eq!(records.len(), 1);
    let (_, mut record) = records.into_iter().next().unwrap();
    assert!(
        !record.is_stale(DEFAULT_STALE_AFTER),
        "this process is alive"
    );
    record.pid = u32::MAX - 1;
    assert!(
        record.is_stale(DEFAULT_STALE_AFTER),
        "no such process on this host"
    );
    record.pid = std::process::id();
    record.refreshed -= 2 * DEFAULT_STALE_AFTER.as_nanos() as i64;
    assert!(
        record.is_stale(DEFAULT_STALE_AFTER),
        "not refreshed for too long"
    );
    rt.block_on(held.release(&repo)).unwrap();
}
