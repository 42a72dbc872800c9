//! Damage in the repository is detected, named, and contained.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::PathBuf;

use kith_e2e::{assert_same_tree, files_under, Env, Rng};

fn packs(env: &Env) -> Vec<PathBuf> {
    files_under(&env.repo.join("packs"))
}

#[test]
fn check_read_data_catches_every_flipped_byte_of_a_pack() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small"), b"a small file").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    // The data pack holds the one data blob; the tree pack holds the trees.
    let all = packs(&env);
    assert_eq!(all.len(), 2, "{all:?}");
    let pack = all
        .iter()
        .min_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let original = fs::read(&pack).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_owned();
    for i in 0..original.len() {
        let mut damaged = original.clone();
        damaged[i] ^= 0x20;
        fs::write(&pack, &damaged).unwrap();
        let out = env.run(&["check", "--read-data"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(4),
            "flip at byte {i} of {} went unnoticed: {stderr}",
            original.len()
        );
        assert!(
            stderr.contains(&name),
            "the damaged pack is named: {stderr}"
        );
    }
    fs::write(&pack, &original).unwrap();
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_damaged_pack_spoils_only_the_files_stored_in_it() {
    let env = Env::init();
    let a = env.path("a");
    let b = env.path("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let mut rng = Rng::new(11);
    fs::write(a.join("one"), rng.bytes(200_000)).unwrap();
    env.ok(&["backup", a.to_str().unwrap()]);
    let before: Vec<PathBuf> = packs(&env);
    fs::write(b.join("two"), rng.bytes(200_000)).unwrap();
    env.ok(&["backup", b.to_str().unwrap()]);
    // Damage the data pack of the first backup.
    let first_data = before
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(first_data).unwrap();
    bytes[100] ^= 0xff;
    fs::write(first_data, &bytes).unwrap();

    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(first_data.file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );

    // The second snapshot does not need that pack and restores completely.
    let target = env.path("out-b");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&b, &Env::restored(&target, &b));
    // The first restores what it can and reports the damage.
    let list = env.json(&["snapshots"]);
    let first = list[0]["id"].as_str().unwrap().to_owned();
    let target = env.path("out-a");
    let out = env.run(&["restore", &first, "--target", target.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("damaged"), "{stderr}");
}

#[test]
fn a_truncated_index_is_named_and_repair_index_rebuilds_it_from_packs() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), Rng::new(12).text(100_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let index = files_under(&env.repo.join("index"));
    assert_eq!(index.len(), 1);
    let bytes = fs::read(&index[0]).unwrap();
    fs::write(&index[0], &bytes[..bytes.len() / 2]).unwrap();
    fs::remove_dir_all(&env.cache).unwrap();

    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(index[0].file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );

    env.ok(&["repair", "index"]);
    env.ok(&["check", "--read-data"]);
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&target, &src));
}

#[test]
fn deleted_index_files_are_rebuilt_and_the_next_backup_reuses_the_packs() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), Rng::new(13).bytes(1_000_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    for f in files_under(&env.repo.join("index")) {
        fs::remove_file(f).unwrap();
    }
    let out = env.run(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "missing index entries are errors"
    );
    let report = env.json(&["repair", "index"]);
    assert_eq!(report["packs"], 2, "{report}");
    let again = env.json(&["backup", src.to_str().unwrap(), "--force"]);
    assert!(
        again["data_added"].as_u64().unwrap() < 16_384,
        "the packs are reused: {again}"
    );
    env.ok(&["check", "--read-data"]);
}

#[test]
fn damaged_snapshots_and_configs_are_reported_without_panicking() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = files_under(&env.repo.join("snapshots"));
    let mut bytes = fs::read(&snaps[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&snaps[0], &bytes).unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("damaged"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(src.to_str().unwrap()))
            .count(),
        1
    );
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(4));

    let config = env.repo.join("config");
    let mut bytes = fs::read(&config).unwrap();
    bytes[20] ^= 1;
    fs::write(&config, &bytes).unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("config"));
    fs::write(&config, &bytes[..10]).unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(4));
}
