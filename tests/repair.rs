//! `kith check` names every kind of inconsistency (exit 4), and
//! `kith repair snapshots` rewrites snapshots around what is lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use kith_e2e::{files_under, Env, Rng};
use kith_engine::blob::BlobKind;
use kith_engine::{Credentials, IndexId, Repository};

/// The kinds of the errors and warnings `check` reports; asserts that it
/// exits 4 exactly when there are errors.
fn check_kinds(env: &Env, args: &[&str]) -> BTreeSet<String> {
    let mut a = vec!["check", "--json"];
    a.extend_from_slice(args);
    let out = env.run(&a);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds_of = |field: &str| -> BTreeSet<String> {
        report[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let errors = kinds_of("errors");
    let expected = if errors.is_empty() { 0 } else { 4 };
    assert_eq!(out.status.code(), Some(expected), "{report}");
    errors.union(&kinds_of("warnings")).cloned().collect()
}

fn repo(env: &Env, rt: &tokio::runtime::Runtime) -> Repository {
    rt.block_on(Repository::open(
        Arc::new(kith_storage::LocalBackend::new(&env.repo)),
        &Credentials::Password(env.password.clone()),
        None,
    ))
    .unwrap()
}

fn listing(dir: &std::path::Path) -> BTreeSet<PathBuf> {
    files_under(dir).into_iter().collect()
}

#[test]
fn check_names_every_kind_of_inconsistency_and_exits_4() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let mut rng = Rng::new(21);
    fs::write(src.join("a"), rng.bytes(100_000)).unwrap();
    fs::write(src.join("sub/b"), rng.bytes(100_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    assert!(check_kinds(&env, &["--read-data"]).is_empty());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = repo(&env, &rt);
    let deltas: Vec<IndexId> = files_under(&env.repo.join("index"))
        .iter()
        .map(|p| IndexId::from_hex(p.file_name().unwrap().to_str().unwrap()).unwrap())
        .collect();
    let files: Vec<_> = deltas
        .iter()
        .map(|id| (*id, rt.block_on(r.read_index_file(id)).unwrap()))
        .collect();
    let pack_path = |id: &kith_engine::PackId| {
        let hex = id.to_hex();
        env.repo.join("packs").join(&hex[..2]).join(hex)
    };
    let (tree_pack, tree_entry) = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter())
        .find_map(|p| {
            p.blobs
                .iter()
                .find(|b| b.kind == BlobKind::Tree)
                .map(|b| (p.id, *b))
        })
        .unwrap();
    let data_pack = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter())
        .find(|p| p.blobs.iter().all(|b| b.kind == BlobKind::Data))
        .unwrap()
        .id;

    // An unreadable tree.
    let path = pack_path(&tree_pack);
    let original = fs::read(&path).unwrap();
    let mut bad = original.clone();
    bad[tree_entry.offset as usize + tree_entry.length as usize / 2] ^= 0x40;
    fs::write(&path, &bad).unwrap();
    let kinds = check_kinds(&env, &[]);
    assert!(kinds.contains("unreadable_tree"), "{kinds:?}");
    assert!(check_kinds(&env, &["--read-data"]).contains("damaged_pack"));
    fs::write(&path, &original).unwrap();

    // A missing pack, and the blobs snapshots need from it.
    let path = pack_path(&data_pack);
    let original = fs::read(&path).unwrap();
    fs::remove_file(&path).unwrap();
    let kinds = check_kinds(&env, &[]);
    assert!(
        kinds.contains("missing_pack") && kinds.contains("missing_blob"),
        "{kinds:?}"
    );
    // A pack of another size than the index says.
    fs::write(&path, &original[..original.len() - 1]).unwrap();
    assert!(check_kinds(&env, &[]).contains("size_mismatch"));
    fs::write(&path, &original).unwrap();
    assert!(check_kinds(&env, &["--read-data"]).is_empty());

    // An index that disagrees with a pack's header.
    let (id, mut file) = files
        .iter()
        .find(|(_, f)| f.packs.iter().any(|p| p.id == data_pack))
        .cloned()
        .unwrap();
    for p in &mut file.packs {
        if p.id == data_pack {
            p.blobs.pop();
        }
    }
    rt.block_on(r.write_index_file(&file)).unwrap();
    fs::remove_file(env.repo.join("index").join(id.to_hex())).unwrap();
    assert!(check_kinds(&env, &["--read-data"]).contains("index_mismatch"));
    env.ok(&["repair", "index"]);
    assert!(check_kinds(&env, &["--read-data"]).is_empty());

    // Unreferenced packs: a second backup whose index deltas and snapshot vanish.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("c"), rng.bytes(50_000)).unwrap();
    let index_before = listing(&env.repo.join("index"));
    let snaps_before = listing(&env.repo.join("snapshots"));
    env.ok(&["backup", other.to_str().unwrap(), "-q"]);
    for f in listing(&env.repo.join("index")).difference(&index_before) {
        fs::remove_file(f).unwrap();
    }
    for f in listing(&env.repo.join("snapshots")).difference(&snaps_before) {
        fs::remove_file(f).unwrap();
    }
    assert!(check_kinds(&env, &[]).contains("unreferenced_pack"));
    env.ok(&["repair", "index"]);
    assert!(check_kinds(&env, &[]).is_empty());

    // An unreadable snapshot record.
    let snap = files_under(&env.repo.join("snapshots")).remove(0);
    fs::write(&snap, b"garbage").unwrap();
    assert!(check_kinds(&env, &[]).contains("unreadable_snapshot"));
}

#[test]
fn repair_snapshots_leaves_out_lost_files_reports_them_and_keeps_originals_unless_told() {
    let env = Env::init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(22);
    fs::write(src.join("a"), rng.bytes(200_000)).unwrap();
    let packs_before = listing(&env.repo.join("packs"));
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    fs::write(src.join("b"), rng.bytes(200_000)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    // Lose every pack of the first backup: `a`'s data and the first trees.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = repo(&env, &rt);
    let a_blob = r.blob_id(&fs::read(src.join("a")).unwrap());
    let index = rt.block_on(r.index()).unwrap();
    let a_pack = index.lookup(&a_blob).unwrap().unwrap().pack;
    let hex = a_pack.to_hex();
    let a_path = env.repo.join("packs").join(&hex[..2]).join(hex);
    assert!(!packs_before.contains(&a_path));
    drop(index);
    drop(r);
    fs::remove_file(&a_path).unwrap();
    assert!(!check_kinds(&env, &[]).is_empty());

    let dry = env.run(&["repair", "snapshots", "--dry-run", "--json"]);
    assert_eq!(dry.status.code(), Some(0));
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["repaired"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);

    let done = env.json(&["repair", "snapshots"]);
    let repaired = done["repaired"].as_array().unwrap();
    assert_eq!(repaired.len(), 2);
    for r in repaired {
        let lost = r["lost"].as_array().unwrap();
        assert_eq!(lost.len(), 1, "{r}");
        assert!(lost[0][0].as_str().unwrap().ends_with("/src/a"), "{r}");
    }
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        4,
        "originals stay"
    );
    assert!(
        !check_kinds(&env, &[]).is_empty(),
        "the originals are still damaged"
    );

    let forgot = env.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(forgot["forgotten"].as_array().unwrap().len(), 2);
    assert!(
        check_kinds(&env, &[]).contains("missing_pack"),
        "the index still lists it"
    );
    env.ok(&["repair", "index"]);
    assert!(check_kinds(&env, &["--read-data"]).is_empty());
    let snaps = env.json(&["snapshots"]);
    assert!(snaps.as_array().unwrap().iter().all(|s| s["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "repaired")));
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = Env::restored(&target, &src);
    assert!(!restored.join("a").exists());
    assert_eq!(
        fs::read(restored.join("b")).unwrap(),
        fs::read(src.join("b")).unwrap()
    );
}
