//! The engine over a misbehaving backend: 10% of every kind of transient
//! fault (errors, failed and truncated reads, dropped writes, lost
//! acknowledgements) injected by `Fault`, hidden by `Retry`, through a full
//! backup, re-backup, restore and check.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use kith_e2e::{assert_same_tree, Env, Rng};
use kith_engine::backup::{backup, BackupOptions};
use kith_engine::check::{check, ReadData};
use kith_engine::restore::{restore, RestoreOptions};
use kith_engine::{Credentials, InitOptions, KdfParams, Repository};
use kith_storage::{Backend, Fault, FaultConfig, LocalBackend, Retry, RetryPolicy};

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 20,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

#[test]
fn backup_and_restore_survive_ten_percent_transient_faults() {
    let env = Env::new();
    let src = env.path("src");
    let mut rng = Rng::new(17);
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("d/f{i}")), rng.bytes(40_000 + i * 3_000)).unwrap();
    }
    fs::write(src.join("text"), rng.text(300_000)).unwrap();
    let local = LocalBackend::new(env.repo.clone());
    let faulty = Arc::new(Retry::with_policy(
        Fault::new(local, FaultConfig::transient(2026, 0.10)),
        policy(),
    ));
    let backend: Arc<dyn Backend> = faulty.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options = InitOptions::default();
        options.kdf = KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let (repo, _master) = Repository::init(backend.clone(), &env.password, &options, None)
            .await
            .unwrap();
        drop(repo);
        let credentials = Credentials::Password(env.password.clone());
        let repo = Repository::open(backend.clone(), &credentials, Some(env.cache.clone()))
            .await
            .unwrap();
        let mut options = BackupOptions::default();
        options.uploads = Some(4);
        let first = backup(
            &repo,
            std::slice::from_ref(&src),
            &options,
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        assert!(first.failed.is_empty(), "{:?}", first.failed);
        fs::write(src.join("d/f3"), rng.bytes(10_000)).unwrap();
        backup(
            &repo,
            std::slice::from_ref(&src),
            &options,
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        let snapshot = repo.find_snapshot("latest").await.unwrap();
        let target = env.path("target");
        restore(
            &repo,
            &snapshot,
            &target,
            &RestoreOptions::default(),
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        assert_same_tree(&src, &Env::restored(&target, &src));
        let report = check(&repo, ReadData::All, Arc::new(|_| {})).await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    });
    // Object names hold random ids, so which operations fail differs from
    // run to run; that some did is all but certain (hundreds of operations,
    // 10% each).
    let stats = faulty.inner().stats();
    let injected = stats.errors
        + stats.failed_reads
        + stats.truncated_reads
        + stats.dropped_writes
        + stats.lost_acks;
    assert!(injected >= 3, "faults were injected: {stats:?}");
    // The repository on disk is whole, seen without the fault layer, and no
    // temporary file is left behind by a dropped write.
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
