//! Entry points for fuzzing the decoders of bytes that arrive from peers:
//! control requests and responses, and the shard stream's opening and
//! reply headers (docs/PROTOCOL.md). Each takes any bytes and must return
//! without panicking; the cargo-fuzz target `net_messages` in `fuzz/` calls
//! it, and a unit test replays the committed corpus.

use crate::message::{ShardOpen, ShardReply};
use crate::{codec, wire};

/// Every message decoder a remote peer can reach.
pub fn messages(data: &[u8]) {
    let _ = codec::decode_request(data);
    let _ = codec::decode_response(data);
    let _ = wire::decode::<ShardOpen>("shard header", data);
    let _ = wire::decode::<ShardReply>("shard reply", data);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_message_decoder_survives_its_fuzz_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/net_messages");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            for n in 0..=data.len() {
                super::messages(&data[..n]);
            }
            for n in 0..data.len() {
                let mut flipped = data.clone();
                flipped[n] ^= 0x5a;
                super::messages(&flipped);
            }
            replayed += 1;
        }
        assert!(replayed >= 3, "only {replayed} corpus files replayed");
    }
}
