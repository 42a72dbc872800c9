//! The `kith-sim` binary's contract: `availability` prints JSON with
//! `availability`, `ci_low`, `ci_high` and the closed form `expected`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kith-sim"))
        .args(args)
        .output()
        .expect("run kith-sim");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn availability_prints_json_with_interval() {
    let (ok, out) = run(&[
        "availability",
        "--k",
        "3",
        "--n",
        "5",
        "--uptime",
        "0.8",
        "--trials",
        "20000",
        "--seed",
        "7",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = v["availability"].as_f64().unwrap();
    let lo = v["ci_low"].as_f64().unwrap();
    let hi = v["ci_high"].as_f64().unwrap();
    let expected = v["expected"].as_f64().unwrap();
    assert!(lo <= a && a <= hi);
    assert!(lo <= expected && expected <= hi, "{out}");
    // P(Bin(5, 0.8) >= 3) = 0.94208
    assert!((expected - 0.94208).abs() < 1e-9);
    assert_eq!(v["k"], 3);
    assert_eq!(v["n"], 5);
    assert_eq!(v["trials"], 20000);
    assert_eq!(v["seed"], 7);
    // Same seed, same answer.
    let (_, again) = run(&[
        "availability",
        "--k",
        "3",
        "--n",
        "5",
        "--uptime",
        "0.8",
        "--trials",
        "20000",
        "--seed",
        "7",
    ]);
    assert_eq!(out, again);
}

#[test]
fn availability_rejects_bad_input() {
    let (ok, _) = run(&["availability", "--k", "6", "--n", "5", "--uptime", "0.5"]);
    assert!(!ok);
    let (ok, _) = run(&["availability", "--k", "1", "--n", "5", "--uptime", "1.5"]);
    assert!(!ok);
}

#[test]
fn run_prints_summary_json() {
    let (ok, out) = run(&[
        "run",
        "--scenario",
        "household",
        "--years",
        "1",
        "--runs",
        "4",
        "--json",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["annual_loss_markov"].as_f64().is_some());
    assert!(v["availability"].as_f64().unwrap() > 0.5);
    assert!(v["overhead"].as_f64().unwrap() >= 1.0);
}
