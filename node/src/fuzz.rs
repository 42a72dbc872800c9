//! Entry points for fuzzing the node's decoders of untrusted bytes: the
//! shard header (shard formats 1 and 2), the root capsule, invite codes (pasted
//! by people) and control socket messages.
//!
//! Each function feeds arbitrary bytes to one decoder and must return
//! without panicking. The cargo-fuzz targets in `fuzz/` call these, and a
//! test replays the committed corpus through them.

use kith_engine::MasterSecret;

use crate::objects::{OwnerKeys, RootCapsule, ShardHeader};

/// A fuzz entry point: takes any bytes, never panics.
pub type Target = fn(&[u8]);

/// The corpus folders under `fuzz/corpus/` and the function each feeds.
pub const TARGETS: &[(&str, Target)] = &[
    ("shard_header", shard_header),
    ("root_capsule", root_capsule),
    ("invite", invite),
    ("control", control),
];

/// The owner keys the fuzz targets verify with (master secret of 7s).
pub fn keys() -> Option<OwnerKeys> {
    OwnerKeys::derive(&MasterSecret::from_bytes([7; 32])).ok()
}

/// A shard header (and whatever follows it).
pub fn shard_header(data: &[u8]) {
    let _ = ShardHeader::announced_len(data);
    if let Ok((header, len)) = ShardHeader::decode_unverified(data) {
        // What decodes re-encodes to the same bytes, MAC aside.
        let again = header.encode(&[0; 32]);
        let same = again.len() == len
            && again.get(..len.saturating_sub(32)) == data.get(..len.saturating_sub(32));
        assert!(same, "a decoded shard header re-encodes to other bytes");
        // Whatever follows the header is checked as its body.
        let _ = header.body_matches(data.get(len..).unwrap_or(&[]));
    }
    if let Some(keys) = keys() {
        let _ = ShardHeader::decode(data, crate::objects::header_key_for_fuzzing(&keys));
    }
}

/// A sealed root capsule.
pub fn root_capsule(data: &[u8]) {
    if let Some(keys) = keys() {
        let _ = RootCapsule::open(&keys, data);
    }
}

/// An invite code, as text (lossily, as a terminal would paste it).
pub fn invite(data: &[u8]) {
    let _ = crate::invite::InviteCode::decode(&String::from_utf8_lossy(data));
}

/// A control socket frame's payload, both ways.
pub fn control(data: &[u8]) {
    let _ = postcard::from_bytes::<crate::control::protocol::LocalRequest>(data);
    let _ = postcard::from_bytes::<crate::control::protocol::LocalResponse>(data);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn every_node_decoder_survives_its_fuzz_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
            for entry in entries {
                let data = std::fs::read(entry.unwrap().path()).unwrap();
                target(&data);
                for n in (0..data.len()).step_by((data.len() / 64).max(1)) {
                    target(&data[..n]);
                    let mut flipped = data.clone();
                    flipped[n] ^= 0x5a;
                    target(&flipped);
                }
                replayed += 1;
            }
        }
        assert!(replayed >= 4, "only {replayed} corpus files replayed");
    }
}
