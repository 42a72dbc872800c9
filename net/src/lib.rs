//! The peer network of kith: libp2p transports, discovery and the
//! shard-exchange protocol.
//!
//! This crate moves opaque shard bytes tagged with peer and owner ids; it
//! knows nothing of packs, snapshots or the repository format. Its contents
//! arrive with the peer-exchange work (see ARCHITECTURE.md); until then it
//! holds no code.
