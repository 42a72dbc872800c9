//! A pair of network namespaces joined by a veth link, made by a test and
//! removed when dropped: the servers run in one, the client in the other,
//! and the link between them loses packets at random (nftables `numgen
//! random`, since the kernel has no netem) and is rate-limited (`tbf`).
//!
//! The link's addresses (10.201.N.1 and 10.201.N.2, a /30) exist only inside
//! these two namespaces; nothing is added to the test's own namespace.
//! Creating namespaces needs root: without it the test fails with the
//! command that was refused, it is never skipped.

use std::fs;
use std::process::{Command, Output};

/// How the link between the two namespaces misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// Packets dropped at random, in percent, on each side's input.
    pub loss_percent: u32,
    /// Rate limit of each direction, in kbit/s (`tbf`); 0 for none.
    pub rate_kbit: u32,
}

/// Two namespaces (`server`, `client`) joined by a lossy veth link.
pub struct NetPair {
    /// The namespace the servers run in.
    pub server: String,
    /// The namespace the client runs in.
    pub client: String,
    /// The server side's address.
    pub server_addr: String,
    /// The client side's address.
    pub client_addr: String,
}

const PREFIX: &str = "kithnet";

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): install iproute2 (scripts/test does)"))
}

/// Runs `program args` and panics with its error output unless it succeeds.
fn must(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): scripts/test installs iproute2 and nftables")
        });
    assert!(
        out.status.success(),
        "`{program} {}` failed (network namespace tests need root and a kernel with \
         veth, nftables numgen and tbf): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `program args` inside namespace `ns`.
fn must_in(ns: &str, program: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    must("ip", &all);
}

/// Removes namespaces that earlier runs of these tests left behind when
/// they were killed before their guard ran: names carry the pid of the
/// process that made them, and only those of processes that are gone are
/// removed.
fn remove_leftovers() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

impl NetPair {
    /// Makes the namespaces and the link; panics (failing the test) when
    /// it cannot. `tag` tells apart the pairs of one test process (0–63).
    pub fn create(tag: u8, link: LinkConfig) -> NetPair {
        remove_leftovers();
        let pid = std::process::id();
        // The third octet only has to differ between pairs alive at once in
        // one namespace, and every pair has namespaces of its own: it is
        // varied anyway so that addresses in logs tell runs apart.
        let net = (pid % 4) * 64 + u32::from(tag % 64);
        let pair = NetPair {
            server: format!("{PREFIX}{pid}s{tag}"),
            client: format!("{PREFIX}{pid}c{tag}"),
            server_addr: format!("10.201.{net}.1"),
            client_addr: format!("10.201.{net}.2"),
        };
        // From here on, dropping `pair` removes whatever was made.
        must("ip", &["netns", "add", &pair.server]);
        must("ip", &["netns", "add", &pair.client]);
        let (sv, cv) = (format!("kv{pid}s{tag}"), format!("kv{pid}c{tag}"));
        // Interface names are at most 15 bytes.
        let (sv, cv) = (truncate(&sv), truncate(&cv));
        must(
            "ip",
            &[
                "link",
                "add",
                &sv,
                "netns",
                &pair.server,
                "type",
                "veth",
                "peer",
                "name",
                &cv,
                "netns",
                &pair.client,
            ],
        );
        for (ns, dev, addr) in [
            (&pair.server, &sv, &pair.server_addr),
            (&pair.client, &cv, &pair.client_addr),
        ] {
            must_in(ns, "ip", &["link", "set", "lo", "up"]);
            must_in(
                ns,
                "ip",
                &["addr", "add", &format!("{addr}/30"), "dev", dev],
            );
            must_in(ns, "ip", &["link", "set", dev, "up"]);
            if link.rate_kbit > 0 {
                let rate = format!("{}kbit", link.rate_kbit);
                must_in(
                    ns,
                    "tc",
                    &[
                        "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "32kb",
                        "latency", "100ms",
                    ],
                );
            }
            if link.loss_percent > 0 {
                must_in(ns, "nft", &["add", "table", "inet", "kithloss"]);
                must_in(
                    ns,
                    "nft",
                    &[
                        "add",
                        "chain",
                        "inet",
                        "kithloss",
                        "input",
                        "{ type filter hook input priority 0; policy accept; }",
                    ],
                );
                must_in(
                    ns,
                    "nft",
                    &[
                        "add",
                        "rule",
                        "inet",
                        "kithloss",
                        "input",
                        "iifname",
                        dev,
                        "numgen",
                        "random",
                        "mod",
                        "100",
                        "<",
                        &link.loss_percent.to_string(),
                        "counter",
                        "drop",
                    ],
                );
            }
        }
        pair
    }

    /// How many packets the loss rules dropped so far, both sides together.
    pub fn dropped_packets(&self) -> u64 {
        [&self.server, &self.client]
            .iter()
            .map(|ns| {
                let out = ip(&[
                    "netns", "exec", ns, "nft", "list", "table", "inet", "kithloss",
                ]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.split("packets ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

fn truncate(name: &str) -> String {
    name.chars().take(15).collect()
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it
        // the peer; processes still inside keep it alive until they exit,
        // and the servers' guards (dropped first) kill them.
        let _ = ip(&["netns", "del", &self.client]);
        let _ = ip(&["netns", "del", &self.server]);
    }
}
