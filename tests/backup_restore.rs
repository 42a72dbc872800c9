//! Backup and restore through the `kith` binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kith_e2e::{assert_same_tree, files_under, Env, Rng};
use proptest::prelude::*;

fn sample_tree(root: &Path, rng: &mut Rng) {
    fs::create_dir_all(root.join("docs/deep/er/still")).unwrap();
    fs::write(root.join("docs/readme.txt"), rng.text(10_000)).unwrap();
    fs::write(root.join("docs/deep/er/still/leaf"), b"leaf").unwrap();
    fs::write(root.join("random.bin"), rng.bytes(3_000_000)).unwrap();
    fs::write(root.join("text.log"), rng.text(2_500_000)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("ünïcødé 🦀.txt"), b"names are bytes").unwrap();
    std::os::unix::fs::symlink("docs/readme.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::set_permissions(
        root.join("docs/readme.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(root.join("docs/deep"), fs::Permissions::from_mode(0o750)).unwrap();
    // A sparse file: a hole, a little data, another hole.
    let f = fs::File::create(root.join("sparse")).unwrap();
    f.set_len(20 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"middle", 10 * 1024 * 1024).unwrap();
}

#[test]
fn a_backup_restores_bit_exact_with_metadata() {
    let env = Env::init();
    let src = env.path("src");
    sample_tree(&src, &mut Rng::new(1));
    fs::hard_link(src.join("text.log"), src.join("hardlink.log")).unwrap();
    let summary = env.json(&[
        "backup",
        src.to_str().unwrap(),
        "--tag",
        "first",
        "--host",
        "laptop",
    ]);
    assert!(summary["files_new"].as_u64().unwrap() >= 8, "{summary}");
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = Env::restored(&target, &src);
    assert_same_tree(&src, &restored);
    let a = fs::metadata(restored.join("text.log")).unwrap();
    let b = fs::metadata(restored.join("hardlink.log")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard links are restored as hard links");
    let sparse = fs::metadata(restored.join("sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 4 * 1024 * 1024,
        "sparse file restored sparse: {} blocks",
        sparse.blocks()
    );
}

#[test]
fn an_unchanged_rebackup_reads_nothing_and_adds_nothing() {
    let env = Env::init();
    let src = env.path("src");
    sample_tree(&src, &mut Rng::new(2));
    env.ok(&["backup", src.to_str().unwrap()]);
    let second = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(second["files_new"], 0, "{second}");
    assert_eq!(second["files_changed"], 0, "{second}");
    assert_eq!(second["bytes_read"], 0, "{second}");
    // Only trees of the folders above the source can change (other processes touch /tmp).
    assert!(second["data_added"].as_u64().unwrap() < 16_384, "{second}");
    assert!(
        second["parent"].is_string(),
        "the first snapshot is the parent: {second}"
    );
    // A changed file is read again; only its new chunks are added.
    let mut rng = Rng::new(3);
    fs::write(src.join("docs/readme.txt"), rng.text(10_000)).unwrap();
    let third = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(third["files_changed"], 1, "{third}");
    assert!(third["data_added"].as_u64().unwrap() < 100_000, "{third}");
}

#[test]
fn the_file_cache_can_be_lost_or_damaged_without_harm() {
    let env = Env::init();
    let src = env.path("src");
    sample_tree(&src, &mut Rng::new(4));
    env.ok(&["backup", src.to_str().unwrap()]);
    // Damage every cache file, then delete the cache: both are rebuilt from the repository.
    let cache_files = files_under(&env.cache);
    assert!(!cache_files.is_empty(), "the backup left a cache to damage");
    for entry in cache_files {
        fs::write(&entry, b"not a database").unwrap();
    }
    let again = env.json(&["backup", src.to_str().unwrap()]);
    assert!(
        again["data_added"].as_u64().unwrap() < 16_384,
        "no file content re-uploaded after the cache was damaged: {again}"
    );
    fs::remove_dir_all(&env.cache).unwrap();
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&target, &src));
}

#[test]
fn excludes_leave_files_out_and_includes_restore_a_subset() {
    let env = Env::init();
    let src = env.path("src");
    sample_tree(&src, &mut Rng::new(5));
    fs::write(src.join("skip.tmp"), b"x").unwrap();
    fs::create_dir(src.join("cache")).unwrap();
    fs::write(src.join("cache/big"), b"y").unwrap();
    let exclude_file = env.path("excludes");
    fs::write(&exclude_file, "# comment\ncache\n").unwrap();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--exclude-file",
        exclude_file.to_str().unwrap(),
    ]);
    let listing = env.ok(&["ls", "latest"]);
    assert!(!listing.contains("skip.tmp"), "{listing}");
    assert!(!listing.contains("/cache"), "{listing}");
    assert!(listing.contains("readme.txt"), "{listing}");

    let target = env.path("out");
    let include = format!("{}/docs", src.display());
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        &include,
    ]);
    let restored = Env::restored(&target, &src);
    assert!(restored.join("docs/deep/er/still/leaf").exists());
    assert!(!restored.join("random.bin").exists());
    assert_same_tree(&src.join("docs"), &restored.join("docs"));
}

#[test]
fn snapshots_json_lists_id_time_host_paths_and_tags() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--host",
        "desk",
        "--tag",
        "t1",
        "--tag",
        "t2",
    ]);
    let list = env.json(&["snapshots"]);
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    let s = &arr[0];
    assert_eq!(s["id"].as_str().unwrap().len(), 64);
    assert!(s["time"].as_str().unwrap().contains('T'));
    assert_eq!(s["host"], "desk");
    assert_eq!(s["paths"][0], src.to_str().unwrap());
    assert_eq!(s["tags"], serde_json::json!(["t1", "t2"]));
    let prefix = &s["id"].as_str().unwrap()[..6];
    let listing = env.json(&["ls", prefix]);
    assert!(listing
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "a" && e["size"] == 1));
}

#[test]
fn several_paths_and_a_single_file_are_backed_up_under_their_absolute_paths() {
    let env = Env::init();
    let a = env.path("one/a");
    let b = env.path("two");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("f"), b"1").unwrap();
    fs::write(b.join("single"), b"2").unwrap();
    env.ok(&[
        "backup",
        a.to_str().unwrap(),
        b.join("single").to_str().unwrap(),
    ]);
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        fs::read(Env::restored(&target, &a).join("f")).unwrap(),
        b"1"
    );
    assert_eq!(
        fs::read(Env::restored(&target, &b).join("single")).unwrap(),
        b"2"
    );
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9éü🦀 ._-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

#[derive(Debug, Clone)]
enum Item {
    File(String, Vec<u8>),
    Big(String, u64),
    Dir(String, Vec<Item>),
    Link(String, String),
}

fn item_strategy() -> impl Strategy<Value = Item> {
    let leaf = prop_oneof![
        (
            name_strategy(),
            proptest::collection::vec(any::<u8>(), 0..3000)
        )
            .prop_map(|(n, d)| Item::File(n, d)),
        (name_strategy(), 600_000u64..2_500_000).prop_map(|(n, s)| Item::Big(n, s)),
        (name_strategy(), name_strategy()).prop_map(|(n, t)| Item::Link(n, t)),
    ];
    leaf.prop_recursive(5, 40, 6, |inner| {
        (name_strategy(), proptest::collection::vec(inner, 0..6))
            .prop_map(|(n, items)| Item::Dir(n, items))
    })
}

fn materialize(dir: &Path, items: &[Item], seed: u64) {
    fs::create_dir_all(dir).unwrap();
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::File(n, d) => {
                let _ = fs::write(dir.join(n), d);
            }
            Item::Big(n, size) => {
                let mut rng = Rng::new(seed + i as u64);
                let half = (*size / 2) as usize;
                let mut data = rng.bytes(half);
                data.extend(rng.text(*size as usize - half));
                let _ = fs::write(dir.join(n), data);
            }
            Item::Link(n, t) => {
                let _ = std::os::unix::fs::symlink(t, dir.join(n));
            }
            Item::Dir(n, sub) => {
                let p = dir.join(n);
                if !p.exists() {
                    materialize(&p, sub, seed * 31 + i as u64);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_round_trip_through_backup_and_restore(items in proptest::collection::vec(item_strategy(), 1..8), seed in 1u64..1000) {
        let env = Env::init();
        let src = env.path("src");
        materialize(&src, &items, seed);
        env.ok(&["backup", src.to_str().unwrap()]);
        let target = env.path("out");
        env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_same_tree(&src, &Env::restored(&target, &src));
        env.ok(&["check", "--read-data"]);
    }
}
