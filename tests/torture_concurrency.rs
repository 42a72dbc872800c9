//! Concurrency torture: three "hosts" (separate processes, separate caches)
//! back up changing trees into one repository while `forget --prune` runs
//! in a loop; processes are suspended (SIGSTOP) for longer than the lock
//! staleness limit and killed (SIGKILL) at random. After every round,
//! `check` passes and every snapshot ever reported committed either
//! restores bit-exact or was forgotten by the retention policy.
//!
//! `KITH_TORTURE_ROUNDS` sets the number of rounds (default 30),
//! `KITH_TORTURE_SEED` the seed (printed at the start); `scripts/torture`
//! runs the long version.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kith_e2e::{Env, Rng};

const HOSTS: usize = 3;
const KEEP_LAST: usize = 2;
const STALE_MS: u64 = 200;
const STALE: &str = "200ms";
/// The grace period must outlast the longest suspension (up to 450 ms, and
/// a process may be stopped several times in a row): a commit stopped inside
/// its snapshot write for longer than staleness plus grace, then killed
/// before it heals, is the one case the design does not cover
/// (docs/DECISIONS.md, "Two-step deletion").
const GRACE: &str = "2s";

/// A file tree as relative path → content.
type Tree = BTreeMap<PathBuf, Vec<u8>>;

struct Host {
    name: String,
    src: PathBuf,
    cache: PathBuf,
}

impl Host {
    /// Changes a few files: adds, rewrites, deletes; some content is shared
    /// between hosts (`common`), so hosts deduplicate against each other.
    fn mutate(&self, rng: &mut Rng, round: usize) -> Tree {
        fs::create_dir_all(self.src.join("sub")).unwrap();
        let changes = 1 + rng.next_u64() % 4;
        for _ in 0..changes {
            let dir = if rng.next_u64().is_multiple_of(2) {
                ""
            } else {
                "sub/"
            };
            let name = format!("{dir}f{}", rng.next_u64() % 8);
            let path = self.src.join(&name);
            match rng.next_u64() % 5 {
                0 => {
                    let _ = fs::remove_file(&path);
                }
                1 => {
                    let mut shared = Rng::new(round as u64 / 3);
                    fs::write(self.src.join("common"), shared.bytes(40_000)).unwrap();
                }
                _ => {
                    let size = (rng.next_u64() % 60_000) as usize;
                    fs::write(&path, rng.bytes(size)).unwrap();
                }
            }
        }
        read_tree(&self.src)
    }

    fn cmd(&self, env: &Env, args: &[&str]) -> Command {
        let mut c = env.cmd();
        c.env("KITH_CACHE_DIR", &self.cache)
            .env("KITH_STALE_AFTER", STALE)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

fn read_tree(root: &Path) -> Tree {
    kith_e2e::files_under(root)
        .into_iter()
        .map(|p| {
            let content = fs::read(&p).unwrap();
            (p.strip_prefix(root).unwrap().to_owned(), content)
        })
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
}

enum Role {
    Backup { host: usize },
    Maintenance,
}

struct Running {
    child: Child,
    role: Role,
    killed: bool,
}

fn json_of(out: &std::process::Output) -> Option<serde_json::Value> {
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn concurrent_backups_forget_prune_suspends_and_kills_never_lose_a_committed_snapshot() {
    let rounds: usize = std::env::var("KITH_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("KITH_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b17_4a5e);
    eprintln!("torture: seed {seed}, {rounds} rounds (KITH_TORTURE_SEED, KITH_TORTURE_ROUNDS)");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let env = Env::init();
    let hosts: Vec<Host> = (0..HOSTS)
        .map(|i| Host {
            name: format!("host{i}"),
            src: env.path(&format!("h{i}/src")),
            cache: env.path(&format!("h{i}/cache")),
        })
        .collect();
    // Snapshots reported committed that the retention policy may not have
    // removed yet: id → (host, time order, expected tree).
    let mut committed: HashMap<String, (usize, u64, Tree)> = HashMap::new();
    // When each snapshot was made: 2 × round, or 2 × round + 1 for the quiet
    // backup that ends a round. Snapshots nobody reported (their backup was
    // killed after its commit) get the round their listing first shows them.
    let mut made: HashMap<String, u64> = HashMap::new();
    let (mut kills, mut stops, mut commits) = (0u64, 0u64, 0u64);
    let (mut condemned, mut deleted) = (0usize, 0usize);
    let mut verifying = Duration::ZERO;

    for round in 0..rounds {
        let ctx = |what: &str| format!("seed {seed}, round {round}: {what}");
        let trees: Vec<Tree> = hosts.iter().map(|h| h.mutate(&mut rng, round)).collect();
        let mut running: Vec<Running> = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let child = h
                .cmd(
                    &env,
                    &[
                        "backup",
                        h.src.to_str().unwrap(),
                        "--host",
                        &h.name,
                        "--json",
                    ],
                )
                .spawn()
                .unwrap();
            running.push(Running {
                child,
                role: Role::Backup { host: i },
                killed: false,
            });
        }
        let maintenance = |env: &Env| {
            hosts[0]
                .cmd(
                    env,
                    &[
                        "forget",
                        "--keep-last",
                        &KEEP_LAST.to_string(),
                        "--prune",
                        "--grace",
                        GRACE,
                        "--max-unused",
                        "20%",
                        "--json",
                    ],
                )
                .spawn()
                .unwrap()
        };
        let mut maintenance_runs = 1;
        running.push(Running {
            child: maintenance(&env),
            role: Role::Maintenance,
            killed: false,
        });
        let mut finished = Vec::new();
        let mut kills_this_round = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // Collect what ended; start the next maintenance run.
            let mut i = 0;
            while i < running.len() {
                if running[i].child.try_wait().unwrap().is_some() {
                    let r = running.remove(i);
                    let is_maintenance = matches!(r.role, Role::Maintenance);
                    finished.push(r);
                    if is_maintenance && maintenance_runs < 2 {
                        maintenance_runs += 1;
                        running.push(Running {
                            child: maintenance(&env),
                            role: Role::Maintenance,
                            killed: false,
                        });
                    }
                } else {
                    i += 1;
                }
            }
            if running.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{}", ctx("processes hang"));
            std::thread::sleep(Duration::from_millis(20 + rng.next_u64() % 80));
            let victim = (rng.next_u64() as usize) % running.len();
            let pid = running[victim].child.id();
            match rng.next_u64() % 100 {
                0..=9 if kills_this_round < 2 => {
                    signal(pid, "-KILL");
                    running[victim].killed = true;
                    kills_this_round += 1;
                    kills += 1;
                }
                10..=39 => {
                    // Longer than the staleness limit: others may treat the
                    // process's locks and session as abandoned.
                    signal(pid, "-STOP");
                    std::thread::sleep(Duration::from_millis(STALE_MS + 50 + rng.next_u64() % 200));
                    signal(pid, "-CONT");
                    stops += 1;
                }
                _ => {}
            }
        }

        for r in finished {
            let killed = r.killed;
            let out = r.child.wait_with_output().unwrap();
            let code = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if killed {
                continue;
            }
            match r.role {
                Role::Backup { host } => match code {
                    Some(0) => {
                        let v = json_of(&out).unwrap();
                        let id = v["snapshot_id"].as_str().unwrap().to_owned();
                        commits += 1;
                        made.insert(id.clone(), 2 * round as u64);
                        committed.insert(id, (host, 2 * round as u64, trees[host].clone()));
                    }
                    // Waited too long for a maintenance lock.
                    Some(11) => {}
                    other => panic!("{}", ctx(&format!("backup exited {other:?}: {stderr}"))),
                },
                Role::Maintenance => {
                    if let Some(v) = json_of(&out) {
                        let count = |f: &str| v["prune"][f].as_array().map_or(0, Vec::len);
                        condemned += count("condemned");
                        deleted += count("deleted");
                    }
                    assert!(
                        matches!(code, Some(0) | Some(11)),
                        "{}",
                        ctx(&format!("forget --prune exited {code:?}: {stderr}"))
                    );
                }
            }
        }

        let verify_started = Instant::now();
        // A quiet backup ends the round: it indexes what killed processes
        // stored and left unlisted, as the next backup after a crash does.
        let quiet = hosts[0]
            .cmd(
                &env,
                &[
                    "backup",
                    hosts[0].src.to_str().unwrap(),
                    "--host",
                    &hosts[0].name,
                    "--json",
                ],
            )
            .output()
            .unwrap();
        assert_eq!(
            quiet.status.code(),
            Some(0),
            "{}",
            ctx(&String::from_utf8_lossy(&quiet.stderr))
        );
        let id = json_of(&quiet).unwrap()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        commits += 1;
        made.insert(id.clone(), 2 * round as u64 + 1);
        committed.insert(id, (0, 2 * round as u64 + 1, trees[0].clone()));

        let check = hosts[1].cmd(&env, &["check", "--json"]).output().unwrap();
        assert_eq!(
            check.status.code(),
            Some(0),
            "{}",
            ctx(&format!(
                "check failed:\n{}",
                String::from_utf8_lossy(&check.stdout)
            ))
        );

        let listed: Vec<(String, String)> = env
            .json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_owned(),
                    s["host"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (id, _) in &listed {
            made.entry(id.clone()).or_insert(2 * round as u64);
        }
        let present: std::collections::HashSet<&String> = listed.iter().map(|(id, _)| id).collect();
        // A committed snapshot may be missing only if the policy could have
        // forgotten it: at least KEEP_LAST newer snapshots of its host are
        // listed (snapshots only ever get newer ones, and forget keeps the
        // newest).
        let mut gone = Vec::new();
        for (id, (host, when, _)) in &committed {
            if present.contains(id) {
                continue;
            }
            let newer = listed
                .iter()
                .filter(|(other, h)| *h == hosts[*host].name && made[other] > *when)
                .count();
            assert!(
                newer >= KEEP_LAST,
                "{}",
                ctx(&format!(
                    "committed snapshot {id} of host{host} is gone; listed: {listed:?}"
                ))
            );
            gone.push(id.clone());
        }
        for id in gone {
            committed.remove(&id);
        }
        // Restore every committed snapshot still listed, a few at a time.
        let all: Vec<(&String, &(usize, u64, Tree))> = committed.iter().collect();
        for batch in all.chunks(6) {
            let jobs: Vec<_> = batch
                .iter()
                .map(|(id, (host, _, tree))| {
                    let target = env.path(&format!("restore-{round}-{}", &id[..8]));
                    let child = env
                        .cmd()
                        .args(["restore", id, "--target", target.to_str().unwrap()])
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    (id, *host, tree, target, child)
                })
                .collect();
            for (id, host, tree, target, child) in jobs {
                let out = child.wait_with_output().unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{}",
                    ctx(&format!(
                        "restore of {id} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ))
                );
                let restored = read_tree(&Env::restored(&target, &hosts[host].src));
                assert!(
                    restored == *tree,
                    "{}",
                    ctx(&format!(
                        "snapshot {id} of host{host} does not restore bit-exact"
                    ))
                );
                fs::remove_dir_all(&target).unwrap();
            }
        }
        verifying += verify_started.elapsed();
    }
    eprintln!(
        "torture: {rounds} rounds, {commits} commits, {stops} suspensions, {kills} kills, {condemned} packs condemned and {deleted} deleted by prunes in {:.1}s ({:.1}s of it checking and restoring); check passed and every committed snapshot restored after every round",
        started.elapsed().as_secs_f64(),
        verifying.as_secs_f64()
    );
}
