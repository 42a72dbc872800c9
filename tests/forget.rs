//! `kith forget` through the binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;

use kith_e2e::{assert_same_tree, Env};

fn five_snapshots(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join("f"), format!("version {i}")).unwrap();
        env.ok(&["backup", src.to_str().unwrap(), "-q"]);
    }
    src
}

#[test]
fn keep_last_forgets_older_snapshots_and_the_rest_still_restore() {
    let env = Env::init();
    let src = five_snapshots(&env);
    let dry = env.json(&["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(dry["removed"].as_array().unwrap().len(), 0);
    assert_eq!(
        dry["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["keep"] == false)
            .count(),
        3
    );
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        5,
        "a dry run removes nothing"
    );

    let done = env.json(&["forget", "--keep-last", "2"]);
    assert_eq!(done["removed"].as_array().unwrap().len(), 3);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    env.ok(&["check", "--read-data"]);
    let target = env.path("out");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &Env::restored(&target, &src));
}

#[test]
fn forget_by_id_and_refusals() {
    let env = Env::init();
    five_snapshots(&env);
    let first = env.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.ok(&["forget", &first[..10]]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 4);
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(1), "no policy forgets nothing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy"));
    assert_eq!(
        env.run(&["forget", "--keep-within", "3x"]).status.code(),
        Some(1)
    );
    assert_eq!(env.run(&["forget", "deadbeef"]).status.code(), Some(13));
    let tagged = env.path("tagged");
    fs::create_dir_all(&tagged).unwrap();
    env.ok(&[
        "backup",
        tagged.to_str().unwrap(),
        "--tag",
        "precious",
        "-q",
    ]);
    env.ok(&["forget", "--keep-tag", "precious", "--group-by", ""]);
    let left = env.json(&["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["tags"][0], "precious");
}
