//! Replays the committed fuzz corpus through every decoder: none may panic.

use std::path::Path;

#[test]
fn every_decoder_survives_its_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in kith_engine::fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            target(&data);
            // Truncations and single flips of each seed, as a fuzzer's first steps would be.
            for n in (0..data.len()).step_by((data.len() / 64).max(1)) {
                target(&data[..n]);
                let mut flipped = data.clone();
                flipped[n] ^= 0x5a;
                target(&flipped);
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 9, "only {replayed} corpus files replayed");
}
