//! The command line itself: completions, man page, help.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kith_e2e::Env;

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.ok(&["generate", "completions", shell]);
        assert!(
            out.contains("backup") && out.contains("restore"),
            "{shell}: {out}"
        );
    }
    assert_eq!(
        env.run(&["generate", "completions", "tcsh"]).status.code(),
        Some(2)
    );
}

#[test]
fn the_man_page_names_every_command() {
    let env = Env::new();
    let man = env.ok(&["generate", "man"]);
    assert!(man.contains(".TH kith 1"), "{man}");
    for command in [
        "init",
        "backup",
        "snapshots",
        "restore",
        "check",
        "forget",
        "unlock",
    ] {
        assert!(man.contains(command), "{command} missing from the man page");
    }
}

#[test]
fn cat_prints_objects_decrypted_and_walks_from_snapshot_to_blob() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello, cat").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let config = env.json(&["cat", "config"]);
    assert_eq!(config["chunker"]["avg_size"], 1024 * 1024);
    let snap = env.json(&["cat", "snapshot", "latest"]);
    let mut tree = snap["snapshot"]["tree"].as_str().unwrap().to_owned();
    // Walk down the absolute path to the source folder, then to the file.
    for part in src.components().skip(1) {
        let t = env.json(&["cat", "tree", &tree]);
        let name = part.as_os_str().to_str().unwrap();
        let node = t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == serde_json::json!(name.as_bytes()))
            .unwrap();
        tree = node["kind"]["Dir"]["subtree"].as_str().unwrap().to_owned();
    }
    let t = env.json(&["cat", "tree", &tree]);
    let blob = t["nodes"][0]["kind"]["File"]["content"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(env.ok(&["cat", "blob", &blob]), "hello, cat");
    assert_eq!(
        env.run(&["cat", "blob", "00"]).status.code(),
        Some(1),
        "ids must be full hex"
    );
}

#[test]
fn tags_are_added_removed_and_set() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "a"]);
    let changed = env.json(&["tag", "latest", "--add", "b", "--remove", "a"]);
    assert_eq!(changed.as_array().unwrap().len(), 1);
    let list = env.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "the old record is gone");
    assert_eq!(list[0]["tags"], serde_json::json!(["b"]));
    env.ok(&["tag", "--set", "x", "--set", "y"]);
    assert_eq!(
        env.json(&["snapshots"])[0]["tags"],
        serde_json::json!(["x", "y"])
    );
    env.ok(&["tag", "--set", ""]);
    assert_eq!(env.json(&["snapshots"])[0]["tags"], serde_json::json!([]));
    assert_eq!(
        env.run(&["tag", "latest"]).status.code(),
        Some(1),
        "nothing to change"
    );
    env.ok(&["check"]);
}

#[test]
fn diff_lists_added_removed_modified_and_metadata_changes() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("same"), b"same").unwrap();
    std::fs::write(src.join("edit"), b"before").unwrap();
    std::fs::write(src.join("gone"), b"gone").unwrap();
    std::fs::write(src.join("chmod"), b"c").unwrap();
    std::fs::write(src.join("dir/inner"), b"i").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("edit"), b"after, longer").unwrap();
    std::fs::remove_file(src.join("gone")).unwrap();
    std::fs::write(src.join("new"), b"new").unwrap();
    std::fs::set_permissions(src.join("chmod"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("dir"), b"now a file").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let list = env.json(&["snapshots"]);
    let first = list[0]["id"].as_str().unwrap().to_owned();
    let d = env.json(&["diff", &first, "latest"]);
    let base = src.to_str().unwrap();
    let change = |name: &str| {
        d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == format!("{base}/{name}"))
            .map(|c| c["change"].as_str().unwrap().to_owned())
    };
    assert_eq!(change("edit").as_deref(), Some("modified"));
    assert_eq!(change("gone").as_deref(), Some("removed"));
    assert_eq!(change("new").as_deref(), Some("added"));
    assert_eq!(change("chmod").as_deref(), Some("metadata"));
    assert_eq!(change("dir").as_deref(), Some("type"));
    assert_eq!(change("dir/inner").as_deref(), Some("removed"));
    assert_eq!(change("same"), None);
    let text = env.ok(&["diff", &first, "latest"]);
    assert!(
        text.contains(&format!("M  {base}/edit  (6 B -> 13 B)")),
        "{text}"
    );
}

#[test]
fn stats_count_duplicates_once_and_compression_shows() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let text: Vec<u8> = b"all work and no play makes a dull backup\n"
        .iter()
        .copied()
        .cycle()
        .take(200_000)
        .collect();
    std::fs::write(src.join("a"), &text).unwrap();
    std::fs::write(src.join("b"), &text).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["backup", src.to_str().unwrap()]);
    let s = env.json(&["stats"]);
    assert_eq!(s["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(s["total_restore_size"], 4 * 200_000);
    let raw = s["raw_size"].as_u64().unwrap();
    assert!(
        (200_000..220_000).contains(&raw),
        "one copy of the content plus trees: {s}"
    );
    assert!(s["compression_ratio"].as_f64().unwrap() > 10.0, "{s}");
    assert!(s["space_saving_ratio"].as_f64().unwrap() > 40.0, "{s}");
    let total_stored = s["stored_size"].as_u64().unwrap();
    let mut shared = Vec::new();
    let mut unique_sum = 0;
    for snap in s["snapshots"].as_array().unwrap() {
        let field = |name: &str| {
            snap[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name} missing: {snap}"))
        };
        let (raw, stored, unique) = (
            field("raw_size"),
            field("stored_size"),
            field("unique_stored_size"),
        );
        assert!(
            unique <= stored && stored <= total_stored,
            "unique <= stored <= total stored: {s}"
        );
        assert!(
            (200_000..220_000).contains(&raw),
            "one copy of the content plus trees: {snap}"
        );
        let ratio = snap["compression_ratio"].as_f64().unwrap();
        assert!(
            (ratio - raw as f64 / stored as f64).abs() < 1e-6,
            "ratio is raw / stored: {snap}"
        );
        // The content is the same in both: only trees (the folders above
        // the source, whose times may change between backups) can be a
        // snapshot's own.
        assert!(unique < 10_000, "content is shared: {snap}");
        shared.push(stored - unique);
        unique_sum += unique;
    }
    // Two snapshots: what each uses but does not own is what they share,
    // and own plus shared is everything stored.
    assert_eq!(shared[0], shared[1], "{s}");
    assert_eq!(unique_sum + shared[0], total_stored, "{s}");
    let text = env.ok(&["stats"]);
    for column in ["raw", "stored", "ratio", "unique"] {
        assert!(text.contains(column), "{column} missing from:\n{text}");
    }
}

#[test]
fn find_matches_globs_typos_case_and_accents_and_exits_13_on_nothing() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("docs/Résumé.pdf"), b"cv").unwrap();
    std::fs::write(src.join("docs/annual report.pdf"), b"r").unwrap();
    std::fs::write(src.join("photo.JPG"), b"p").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let found = |pattern: &str| -> Vec<String> {
        env.json(&["find", pattern])
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(found("resume")[0].ends_with("/docs/Résumé.pdf"));
    assert!(found("reprot")
        .iter()
        .any(|p| p.ends_with("annual report.pdf")));
    assert!(found("*.jpg")[0].ends_with("/photo.JPG"));
    let out = env.run(&["find", "zzzzqqqq"]);
    assert_eq!(out.status.code(), Some(13), "nothing found");
}

/// Runs `kith ARGS` in `env` on a pseudo-terminal (util-linux `script`);
/// returns what the terminal showed.
fn on_a_terminal(env: &Env, args: &str, no_color: Option<&str>) -> String {
    let kith = env.cmd();
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "-qec",
        &format!("{} {args}", kith_e2e::kith_bin().display()),
        "/dev/null",
    ]);
    for (k, v) in kith.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    match no_color {
        Some(v) => cmd.env("NO_COLOR", v),
        None => cmd.env_remove("NO_COLOR"),
    };
    let out = cmd.output().expect("script (util-linux) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn log_colours_show_only_on_a_terminal_and_never_with_no_color() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"some content").unwrap();
    // A damaged condemnation record makes every backup log a warning.
    let condemned = env.repo.join("condemned");
    std::fs::create_dir_all(&condemned).unwrap();
    std::fs::write(condemned.join("00ff"), b"not a record").unwrap();
    // --json: no progress bar, whose cursor moves are not colours.
    let args = format!("backup {} --json", src.display());

    let coloured = on_a_terminal(&env, &args, None);
    assert!(coloured.contains("condemnation record"), "{coloured}");
    assert!(coloured.contains("\u{1b}["), "a terminal gets colours");

    let plain = on_a_terminal(&env, &args, Some("1"));
    assert!(plain.contains("condemnation record"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR=1: {plain:?}");

    let piped = env.cmd().args(args.split(' ')).output().unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.contains("condemnation record"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "not a terminal: {stderr:?}");
}
