//! The corruption matrix: every object kind (config, key files, packs,
//! index files, snapshots, the local cache) damaged every way (a flipped
//! byte at a random place, a truncation, a deletion), one object at a time,
//! from the same pristine repository.
//!
//! For each case kith must not panic, must detect and name the damage, and
//! everything not stored in the damaged object must still restore
//! bit-exact. The test prints the detection rate and requires 100%.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use kith_e2e::{assert_same_tree, copy_tree, files_under, Env, Rng};

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One byte XORed with a non-zero value, at a seeded position.
    Flip(u64),
    /// Cut to a seeded shorter length.
    Truncate(u64),
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Cache,
}

fn reset(env: &Env, pristine: &Path) {
    for dir in [&env.repo, &env.cache] {
        if dir.exists() {
            fs::remove_dir_all(dir).unwrap();
        }
    }
    copy_tree(&pristine.join("repo"), &env.repo);
    copy_tree(&pristine.join("cache"), &env.cache);
}

/// The files of one kind, sorted.
fn objects(env: &Env, object: Object) -> Vec<PathBuf> {
    match object {
        Object::Config => vec![env.repo.join("config")],
        Object::Key => files_under(&env.repo.join("keys")),
        Object::Pack => files_under(&env.repo.join("packs")),
        Object::Index => files_under(&env.repo.join("index")),
        Object::Snapshot => files_under(&env.repo.join("snapshots")),
        Object::Cache => files_under(&env.cache)
            .into_iter()
            .filter(|p| fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
            .collect(),
    }
}

fn apply(path: &Path, damage: Damage) -> String {
    match damage {
        Damage::Flip(seed) => {
            let mut bytes = fs::read(path).unwrap();
            let mut rng = Rng::new(seed);
            let at = (rng.next_u64() as usize) % bytes.len();
            let mask = (rng.next_u64() % 255 + 1) as u8;
            bytes[at] ^= mask;
            fs::write(path, &bytes).unwrap();
            format!("byte {at} of {} flipped", bytes.len())
        }
        Damage::Truncate(seed) => {
            let len = fs::metadata(path).unwrap().len();
            let keep = Rng::new(seed).next_u64() % len;
            let f = fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(keep).unwrap();
            format!("cut from {len} to {keep} bytes")
        }
        Damage::Delete => {
            fs::remove_file(path).unwrap();
            "deleted".to_owned()
        }
    }
}

fn hex_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Flips one byte inside the first place where one of `ids` is stored.
fn flip_inside(path: &Path, ids: &[[u8; 32]], seed: u64) -> String {
    let mut bytes = fs::read(path).unwrap();
    let mut rng = Rng::new(seed);
    let id = ids[(rng.next_u64() as usize) % ids.len()];
    let start = bytes
        .windows(32)
        .position(|w| w == id)
        .unwrap_or_else(|| panic!("{} holds no tree id", path.display()));
    let at = start + (rng.next_u64() as usize) % 32;
    bytes[at] ^= (rng.next_u64() % 255 + 1) as u8;
    fs::write(path, &bytes).unwrap();
    format!(
        "byte {at} (inside a stored tree id) of {} flipped",
        bytes.len()
    )
}

fn panicked(out: &Output) -> bool {
    out.status.code() == Some(101)
        || String::from_utf8_lossy(&out.stderr).contains("panicked")
        || out.status.code().is_none()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Restores `snapshot` and checks every file that came back: files the
/// restore did not name as damaged must be bit-exact.
fn restore_what_can_be(env: &Env, snapshot: &str, source: &Path, case: &str) -> Output {
    let target = env.path("restore-target");
    if target.exists() {
        fs::remove_dir_all(&target).unwrap();
    }
    let out = env.run(&["restore", snapshot, "--target", target.to_str().unwrap()]);
    assert!(!panicked(&out), "{case}: restore panicked\n{}", text(&out));
    if out.status.code() == Some(0) {
        assert_same_tree(source, &Env::restored(&target, source));
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let restored = Env::restored(&target, source);
        for file in files_under(&restored) {
            let rel = file.strip_prefix(&restored).unwrap();
            if stderr.contains(rel.to_str().unwrap()) {
                continue;
            }
            let original = source.join(rel);
            assert_eq!(
                fs::read(&original).unwrap(),
                fs::read(&file).unwrap(),
                "{case}: {} restored wrong without being reported\n{}",
                rel.display(),
                text(&out)
            );
        }
    }
    if target.exists() {
        fs::remove_dir_all(&target).unwrap();
    }
    out
}

/// What the damaged object does not hold must still be usable.
fn check_containment(
    env: &Env,
    object: Object,
    second_password: &str,
    ids: &[(String, PathBuf)],
    case: &str,
) {
    match object {
        Object::Config => {
            let out = env.run(&["snapshots"]);
            assert!(!panicked(&out), "{case}: snapshots panicked");
        }
        Object::Key => {
            // Some password still opens the repository.
            let first = env.run(&["snapshots"]);
            let second = env
                .cmd()
                .env("KITH_PASSWORD", second_password)
                .arg("snapshots")
                .output()
                .unwrap();
            assert!(
                first.status.code() == Some(0) || second.status.code() == Some(0),
                "{case}: no password opens the repository\n{}\n{}",
                text(&first),
                text(&second)
            );
        }
        Object::Pack | Object::Index | Object::Snapshot | Object::Cache => {
            let listed = env.run(&["snapshots", "--json"]);
            for (id, src) in ids {
                if !String::from_utf8_lossy(&listed.stdout).contains(id.as_str()) {
                    continue;
                }
                restore_what_can_be(env, &id[..12], src, case);
            }
        }
    }
}

#[test]
fn every_kind_of_damage_to_every_object_kind_is_detected_and_contained() {
    let env = Env::new();
    env.ok(&[
        "init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "1",
    ]);
    let second_password = "second password";
    let out = env
        .cmd()
        .env("KITH_NEW_PASSWORD", second_password)
        .args(["key", "add", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Two snapshots of two separate trees, several packs each.
    let mut rng = Rng::new(0xDA3A_6E00);
    let a = env.path("a");
    let b = env.path("b");
    for (dir, files) in [(&a, 6), (&b, 5)] {
        fs::create_dir_all(dir.join("sub")).unwrap();
        for i in 0..files {
            let len = (rng.next_u64() % 600_000) as usize + 1;
            let name = if i % 2 == 0 {
                format!("sub/file{i}")
            } else {
                format!("file{i}")
            };
            fs::write(dir.join(name), rng.bytes(len)).unwrap();
        }
    }
    env.ok(&["backup", a.to_str().unwrap()]);
    env.ok(&["backup", b.to_str().unwrap()]);
    env.ok(&["check", "--read-data"]);
    let snaps = env.json(&["snapshots"]);
    let ids: Vec<(String, PathBuf)> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let path = s["paths"][0].as_str().unwrap();
            let src = if path == a.to_str().unwrap() {
                a.clone()
            } else {
                b.clone()
            };
            (s["id"].as_str().unwrap().to_owned(), src)
        })
        .collect();
    assert_eq!(ids.len(), 2);
    let tree_ids: Vec<[u8; 32]> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| hex_bytes(s["tree"].as_str().unwrap()))
        .collect();

    let pristine = env.path("pristine");
    copy_tree(&env.repo, &pristine.join("repo"));
    copy_tree(&env.cache, &pristine.join("cache"));

    let damages = [
        Damage::Flip(1),
        Damage::Flip(2),
        Damage::Flip(3),
        Damage::Truncate(4),
        Damage::Truncate(5),
        Damage::Delete,
    ];
    let kinds = [
        Object::Config,
        Object::Key,
        Object::Pack,
        Object::Index,
        Object::Snapshot,
        Object::Cache,
    ];
    let mut cases = 0u32;
    let mut detected = 0u32;
    let mut misses = Vec::new();
    for object in kinds {
        let count = objects(&env, object).len();
        assert!(count > 0, "no {object:?} objects to damage");
        for (d, damage) in damages.iter().enumerate() {
            reset(&env, &pristine);
            // A different object of the kind for each damage.
            let victim = objects(&env, object)[d % count].clone();
            if matches!(damage, Damage::Delete) && matches!(object, Object::Key | Object::Snapshot)
            {
                // Deleting a key file or a snapshot is what `key remove`
                // and `forget` do: nothing records that it existed, so it
                // is not damage anyone can detect. What must hold is
                // containment, checked below; it is not counted.
                reset(&env, &pristine);
                apply(&victim, *damage);
                check_containment(&env, object, second_password, &ids, "deletion");
                continue;
            }
            let what = match (object, damage) {
                // Most of a small redb file is free pages that nothing
                // reads; a flip there changes nothing to detect. Flip a
                // byte of an entry the cache does hold instead.
                (Object::Cache, Damage::Flip(seed)) => flip_inside(&victim, &tree_ids, *seed),
                _ => apply(&victim, *damage),
            };
            let case = format!("{object:?} {} {what}", victim.display());
            cases += 1;

            let check = env.run(&["check", "--read-data"]);
            assert!(
                !panicked(&check),
                "{case}: check panicked\n{}",
                text(&check)
            );
            let named = {
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&check.stdout),
                    String::from_utf8_lossy(&check.stderr)
                );
                let name = victim.file_name().unwrap().to_str().unwrap();
                let short = &name[..name.len().min(8)];
                all.contains(short) || (object == Object::Config && all.contains("config"))
            };
            // A deleted object cannot be named by what is left, only by
            // its absence: a deleted index shows as packs in no index.
            let named = named || matches!(damage, Damage::Delete);
            let ok = match object {
                // The cache is only a cache: check names the damage, and
                // the repository itself passes.
                Object::Cache => check.status.code() == Some(0) && named,
                // A damaged key file is reported by check; the other
                // password keeps working.
                _ => check.status.code().is_some_and(|c| c != 0) && named,
            };
            if ok {
                detected += 1;
            } else {
                misses.push(format!("{case}\n{}", text(&check)));
            }

            check_containment(&env, object, second_password, &ids, &case);
        }
    }
    let rate = f64::from(detected) / f64::from(cases) * 100.0;
    eprintln!("corruption matrix: {detected} of {cases} damaged objects detected ({rate:.1}%)");
    assert!(
        misses.is_empty(),
        "{} undetected:\n{}",
        misses.len(),
        misses.join("\n---\n")
    );
}
