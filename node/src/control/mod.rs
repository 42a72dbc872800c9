//! The control socket (`DIR/control.sock`): how the `kith` CLI talks to a
//! running node. [`protocol`] holds the messages and framing (docs/PROTOCOL.md,
//! "Control socket"); [`client`] the CLI side, including
//! [`client::DaemonTransport`], a [`crate::transport::ShardTransport`] whose
//! shards travel through the daemon.

pub mod client;
pub mod protocol;
