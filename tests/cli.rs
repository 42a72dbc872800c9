//! The command line itself: completions, man page, help.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kith_e2e::Env;

/// The top-level subcommands, as `kith --help` lists them: derived from
/// the clap definition, so a new command is checked without editing a list.
fn subcommands(env: &Env) -> Vec<String> {
    let help = env.ok(&["--help"]);
    let list: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        // Names sit two spaces in; wrapped descriptions further in.
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        ["init", "backup", "stats", "peer", "help"]
            .iter()
            .all(|c| list.iter().any(|l| l == c)),
        "the command list was not read from:\n{help}"
    );
    list
}

#[test]
fn completions_for_bash_zsh_and_fish_offer_every_subcommand() {
    let env = Env::new();
    let commands = subcommands(&env);
    for shell in ["bash", "zsh", "fish"] {
        let out = env.ok(&["generate", "completions", shell]);
        for c in &commands {
            // Each shell's own form of a subcommand, so that `ls` or `cat`
            // inside some other word does not count.
            let offered = match shell {
                "bash" => out.contains(&format!("kith,{c})")),
                "zsh" => out.contains(&format!("\n'{c}:")),
                _ => out.contains(&format!("__fish_kith_needs_command\" -f -a \"{c}\"")),
            };
            assert!(offered, "{shell} completions do not offer `{c}`");
        }
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
    let listed = man
        .split_once(".SH SUBCOMMANDS")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no SUBCOMMANDS section:\n{man}"));
    for command in subcommands(&env) {
        assert!(
            listed.contains(&format!("kith\\-{command}(1)")),
            "{command} missing from the man page's SUBCOMMANDS"
        );
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

#[test]
fn a_progress_bar_shows_only_on_a_terminal_and_never_with_quiet_or_json() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Enough data that the restore outlives the bar's first tick.
    std::fs::write(src.join("big"), kith_e2e::Rng::new(69).bytes(16 << 20)).unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--quiet"]);
    let restore = |target: &str, extra: &str| {
        format!(
            "restore latest --target {} {extra}",
            env.path(target).display()
        )
    };

    let shown = on_a_terminal(&env, &restore("t1", ""), Some("1"));
    assert!(
        shown.contains("ETA"),
        "a terminal shows progress: {shown:?}"
    );
    let quiet = on_a_terminal(&env, &restore("t2", "--quiet"), Some("1"));
    assert!(!quiet.contains("ETA"), "--quiet: {quiet:?}");
    let json = on_a_terminal(&env, &restore("t3", "--json"), Some("1"));
    assert!(!json.contains("ETA"), "--json: {json:?}");
    let piped = env.run(&[
        "restore",
        "latest",
        "--target",
        env.path("t4").to_str().unwrap(),
    ]);
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("ETA"), "not a terminal: {stderr:?}");
}

#[test]
fn quiet_silences_the_backup_summary_json_still_prints_and_verbose_adds_log_lines() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"quiet please").unwrap();
    let src = src.to_str().unwrap();

    let normal = env.ok(&["backup", src]);
    assert!(normal.contains("saved"), "a summary by default: {normal}");

    let quiet = env.run(&["backup", src, "--quiet"]);
    assert!(quiet.status.success());
    assert_eq!(
        String::from_utf8_lossy(&quiet.stdout),
        "",
        "--quiet: no summary"
    );
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "",
        "--quiet: no logs"
    );

    let json = env.json(&["backup", src, "--quiet"]);
    assert_eq!(json["snapshot_id"].as_str().unwrap().len(), 64, "{json}");
    assert_eq!(env.snapshot_ids().len(), 3);

    // An info message a backup logs: the shared cache is held by another
    // process (here this test), so kith uses a private one.
    let cache = kith_e2e::files_under(&env.cache)
        .into_iter()
        .find(|p| p.ends_with("index.redb"))
        .expect("the first backups made the cache");
    let held = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&cache)
        .unwrap();
    held.try_lock().unwrap();
    let plain = env.run(&["backup", src]);
    assert!(plain.status.success());
    let plain_err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain_err.contains("cache in use"),
        "info is not shown by default: {plain_err}"
    );
    let verbose = env.run(&["backup", src, "--verbose"]);
    assert!(verbose.status.success());
    let verbose_err = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        verbose_err.contains("cache in use"),
        "--verbose shows info: {verbose_err}"
    );
    assert!(
        String::from_utf8_lossy(&verbose.stdout).contains("saved"),
        "the summary stays on stdout"
    );
    held.unlock().unwrap();
}

/// Runs `kith ARGS --json` with the time zone set to UTC, so times can be
/// compared as text.
fn json_in_utc(env: &Env, args: &[&str]) -> serde_json::Value {
    let out = env
        .cmd()
        .args(args)
        .arg("--json")
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn find_json_gives_snapshot_time_path_type_size_mtime_and_score_of_each_hit() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("needle")).unwrap();
    let file = src.join("needle.bin");
    std::fs::write(&file, vec![7u8; 12_345]).unwrap();
    // 2021-01-02T03:04:05Z
    filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(1_609_556_645, 0)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let snapshots = json_in_utc(&env, &["snapshots"]);
    let (id, time) = (&snapshots[0]["id"], &snapshots[0]["time"]);

    let hits = json_in_utc(&env, &["find", "needle"]);
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 2, "the folder and the file: {hits:?}");
    for hit in hits {
        assert_eq!(&hit["snapshot"], id, "{hit}");
        assert_eq!(&hit["snapshot_time"], time, "{hit}");
        let score = hit["score"].as_f64().unwrap();
        assert!(score > 0.0 && score <= 1.0, "{hit}");
    }
    let base = src.to_str().unwrap();
    let folder = &hits[0];
    assert_eq!(folder["path"], format!("{base}/needle"), "exact name first");
    assert_eq!(folder["type"], "dir");
    assert_eq!(folder["score"], 1.0);
    let hit = &hits[1];
    assert_eq!(hit["path"], format!("{base}/needle.bin"));
    assert_eq!(hit["type"], "file");
    assert_eq!(hit["size"], 12_345);
    assert_eq!(hit["mtime"], "2021-01-02T03:04:05+00:00");
    assert!(
        hit["score"].as_f64().unwrap() < 1.0,
        "part of the name: {hit}"
    );
}

/// Whether `needle` occurs in `haystack`.
fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn cat_index_and_cat_pack_print_their_content_decrypted() {
    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let content = b"plaintext that only kith cat should show";
    std::fs::write(src.join("secret.txt"), content).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);

    // Every pack an index delta lists, with what the delta says it holds.
    let mut listed = Vec::new();
    for delta in kith_e2e::files_under(&env.repo.join("index")) {
        let name = delta.file_name().unwrap().to_str().unwrap().to_owned();
        let index = env.json(&["cat", "index", &name]);
        for pack in index["packs"].as_array().unwrap() {
            let blobs = pack["blobs"].as_array().unwrap();
            for b in blobs {
                let id = hex_bytes(b["id"].as_str().unwrap());
                assert!(
                    !holds(&std::fs::read(&delta).unwrap(), &id),
                    "blob ids are encrypted in the stored delta"
                );
            }
            listed.push(pack.clone());
        }
    }
    assert!(!listed.is_empty(), "a backup indexes its packs");

    let data_pack = listed
        .iter()
        .find(|p| {
            p["blobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["kind"] == "Data" && b["raw_length"] == content.len())
        })
        .expect("the file's content is indexed");
    let pack_id = data_pack["id"].as_str().unwrap();
    let on_disk = env.repo.join("packs").join(&pack_id[..2]).join(pack_id);
    let stored = std::fs::read(&on_disk).unwrap();
    assert!(!holds(&stored, content), "the pack is encrypted");

    let pack = env.json(&["cat", "pack", pack_id]);
    assert_eq!(pack["size"], stored.len(), "{pack}");
    assert_eq!(data_pack["size"], stored.len(), "{data_pack}");
    let entries = |v: &serde_json::Value| {
        let mut e: Vec<_> = v["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["id"].to_string(),
                    b["offset"].clone(),
                    b["length"].clone(),
                )
            })
            .collect();
        e.sort_by(|a, b| a.0.cmp(&b.0));
        e
    };
    assert_eq!(
        entries(&pack),
        entries(data_pack),
        "the pack's own header agrees with the index"
    );
    let blob = pack["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "Data")
        .unwrap();
    assert_eq!(
        env.ok(&["cat", "blob", blob["id"].as_str().unwrap()])
            .as_bytes(),
        content
    );
    assert_eq!(
        env.run(&["cat", "pack", "00"]).status.code(),
        Some(1),
        "ids must be full hex"
    );
}

/// The bytes of a hex string.
fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn ctrl_c_stops_a_backup_with_exit_130_and_leaves_the_repository_whole() {
    use std::time::{Duration, Instant};

    let env = Env::init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data"), kith_e2e::Rng::new(130).bytes(2 << 20)).unwrap();
    // The backup stops itself right before its index delta, so the
    // interrupt lands in the middle of the work, never after it.
    let child = env
        .cmd()
        .args(["backup", src.to_str().unwrap()])
        .env("KITH_TEST_STOP_BEFORE_PUT", "index")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backup never stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for signal in ["-INT", "-CONT"] {
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.to_lowercase().contains("interrupt"), "{stderr}");
    assert!(
        env.snapshot_ids().is_empty(),
        "an interrupted backup committed"
    );
    env.ok(&["check"]);
    env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(env.snapshot_ids().len(), 1);
}
