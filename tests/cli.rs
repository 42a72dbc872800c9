//! The command line itself: completions, man page, help.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
