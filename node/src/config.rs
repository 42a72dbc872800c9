//! The node's TOML config (`DIR/node.toml`), every key documented in
//! docs/NODE.md.

use std::path::Path;

use kith_net::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::{size::parse_size, NodeError};

/// Default TCP and QUIC port. A fixed port keeps the addresses friends
/// record valid across restarts.
pub const DEFAULT_PORT: u16 = 7412;

/// Default quota offered to friends: 10 GiB.
pub const DEFAULT_QUOTA: u64 = 10 << 30;

/// The node's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Addresses to listen on.
    #[serde(with = "addrs")]
    pub listen: Vec<Multiaddr>,
    /// DHT bootstrap peers, each ending in `/p2p/<peer id>`.
    #[serde(with = "addrs", default)]
    pub bootstrap: Vec<Multiaddr>,
    /// Bytes of others' shards this node holds at most, all friends together.
    #[serde(with = "quota")]
    pub quota: u64,
    /// Find peers on the local network with multicast DNS.
    #[serde(default)]
    pub mdns: bool,
    /// Tell peers this node is meant to be always on (a NAS, a desktop).
    #[serde(default)]
    pub always_on: bool,
    /// Seconds between attempts to reconnect to unreachable friends.
    #[serde(default = "default_redial")]
    pub redial_secs: u64,
    /// Seconds a connection to a peer that is not a friend stays up with
    /// nothing to do; connections to friends stay up while both run.
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
    /// Hours an invite code stays valid.
    #[serde(default = "default_invite_hours")]
    pub invite_hours: u64,
    /// Threads that run the node's network (`kith node run`); disk work
    /// has a pool of its own. One relays shards at about 900 MiB/s with
    /// TLS, more than a home link carries, and spares the cores the
    /// hand-offs between threads (docs/DECISIONS.md).
    #[serde(default = "default_threads")]
    pub threads: usize,
}

fn default_threads() -> usize {
    1
}

/// Most network threads a node may ask for.
pub const MAX_THREADS: usize = 256;

fn default_redial() -> u64 {
    30
}

fn default_idle() -> u64 {
    60
}

fn default_invite_hours() -> u64 {
    24
}

impl Default for NodeConfig {
    fn default() -> Self {
        let parse = |s: &str| s.parse::<Multiaddr>().ok();
        Self {
            listen: [
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"),
            ]
            .iter()
            .filter_map(|s| parse(s))
            .collect(),
            bootstrap: Vec::new(),
            quota: DEFAULT_QUOTA,
            mdns: false,
            always_on: false,
            redial_secs: default_redial(),
            idle_secs: default_idle(),
            invite_hours: default_invite_hours(),
            threads: default_threads(),
        }
    }
}

impl NodeConfig {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
        let config: Self = toml::from_str(&text).map_err(|e| NodeError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        config.check().map_err(|reason| NodeError::Config {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    /// Checks what serde cannot: bootstrap addresses name their peer, a
    /// node listens somewhere, intervals are not zero.
    pub fn check(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Err("`listen` is empty: the node needs at least one address".into());
        }
        for addr in &self.bootstrap {
            if !matches!(addr.iter().last(), Some(kith_net::Protocol::P2p(_))) {
                return Err(format!(
                    "bootstrap address {addr} has no /p2p/<peer id> suffix"
                ));
            }
        }
        if self.redial_secs == 0 {
            return Err("`redial_secs` must be at least 1".into());
        }
        if self.idle_secs == 0 {
            return Err("`idle_secs` must be at least 1".into());
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(format!("`threads` must be between 1 and {MAX_THREADS}"));
        }
        Ok(())
    }

    /// The config as TOML text, with a header pointing at the docs.
    pub fn to_toml(&self) -> Result<String, NodeError> {
        let body = toml::to_string(self).map_err(|e| NodeError::Config {
            path: "node.toml".into(),
            reason: e.to_string(),
        })?;
        Ok(format!(
            "# kith node configuration; every key is described in docs/NODE.md.\n{body}"
        ))
    }
}

mod addrs {
    use kith_net::Multiaddr;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                s.parse::<Multiaddr>()
                    .map_err(|e| D::Error::custom(format!("address {s:?}: {e}")))
            })
            .collect()
    }
}

mod quota {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Bytes(u64),
        Text(String),
    }

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Value::deserialize(d)? {
            Value::Bytes(n) => Ok(n),
            Value::Text(t) => super::parse_size(&t).map_err(|e| D::Error::custom(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_toml() {
        let c = NodeConfig {
            mdns: true,
            quota: 123,
            ..NodeConfig::default()
        };
        let text = c.to_toml().unwrap();
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn quota_may_be_written_with_a_unit() {
        let c: NodeConfig =
            toml::from_str("listen = [\"/ip4/127.0.0.1/tcp/0\"]\nquota = \"2MiB\"\n").unwrap();
        assert_eq!(c.quota, 2 << 20);
        assert!(!c.mdns);
    }

    #[test]
    fn a_config_without_threads_runs_the_network_on_one_and_zero_is_refused() {
        let mut c: NodeConfig =
            toml::from_str("listen = [\"/ip4/127.0.0.1/tcp/0\"]\nquota = 1\n").unwrap();
        assert_eq!(c.threads, 1);
        assert!(c.check().is_ok());
        c.threads = 0;
        assert!(c.check().is_err());
        c.threads = 4;
        assert!(c.check().is_ok());
    }

    #[test]
    fn a_config_without_idle_secs_closes_idle_strangers_after_a_minute_and_zero_is_refused() {
        let mut c: NodeConfig =
            toml::from_str("listen = [\"/ip4/127.0.0.1/tcp/0\"]\nquota = 1\n").unwrap();
        assert_eq!(c.idle_secs, 60);
        c.idle_secs = 0;
        assert!(c.check().is_err());
    }

    #[test]
    fn unknown_keys_and_unnamed_bootstrap_peers_are_refused() {
        assert!(toml::from_str::<NodeConfig>("listen = []\nquota = 1\nfoo = 1\n").is_err());
        let c: NodeConfig = toml::from_str(
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nquota = 1\nbootstrap = [\"/ip4/127.0.0.1/tcp/5\"]\n",
        )
        .unwrap();
        assert!(c.check().is_err());
    }
}
