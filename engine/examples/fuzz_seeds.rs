//! Writes one valid example of every object kind into `fuzz/corpus/<target>/`,
//! as seeds for the fuzzers. Run: `cargo run -p kith-engine --example fuzz_seeds`.

use std::path::Path;

use kith_engine::blob::{blob_id, BlobKind, Encoder};
use kith_engine::config::{ChunkerParams, Config};
use kith_engine::crypto::Cipher;
use kith_engine::envelope;
use kith_engine::fuzz::secret;
use kith_engine::id::{BlobId, PackId};
use kith_engine::index::{IndexFile, IndexPack};
use kith_engine::keys::{
    format_paper_key, KdfParams, KeyFile, KeyMaterial, MasterSecret, MasterSecretBytes,
};
use kith_engine::pack::PackWriter;
use kith_engine::snapshot::{BackupSummary, Snapshot};
use kith_engine::tree::{Node, NodeKind, Tree};

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = secret();
    let public = secret.public();
    let key = [1u8; 32];
    let mut enc = Encoder::new(3)?;
    let mut w = PackWriter::new(&public, 4096);
    for (i, data) in [&b"hello world"[..], &[0u8; 2000][..], &b"tree bytes"[..]]
        .iter()
        .enumerate()
    {
        let kind = if i == 2 {
            BlobKind::Tree
        } else {
            BlobKind::Data
        };
        w.add(&mut enc, kind, blob_id(&key, data), data)?;
    }
    let pack = w.finish();
    write("pack", "three-blobs", &pack.bytes)?;
    write(
        "pack_entries",
        "three-entries",
        &envelope::encode(&pack.entries),
    )?;

    let node = |name: &str, kind: NodeKind| Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        size: 11,
        mtime: 1_700_000_000_000_000_000,
        ctime: 1_700_000_000_000_000_000,
        inode: 42,
        device: 2049,
        links: 1,
    };
    let tree = Tree {
        nodes: vec![
            node(
                "a.txt",
                NodeKind::File {
                    content: vec![BlobId([3; 32])],
                },
            ),
            node(
                "dir",
                NodeKind::Dir {
                    subtree: BlobId([4; 32]),
                },
            ),
            node(
                "link",
                NodeKind::Symlink {
                    target: b"a.txt".to_vec(),
                },
            ),
            node("pipe", NodeKind::Fifo),
        ],
    };
    write("tree", "four-entries", &tree.to_bytes())?;

    let snapshot = Snapshot {
        time: 1_700_000_000_000_000_000,
        host: "laptop".into(),
        user: "me".into(),
        paths: vec!["/home/me".into()],
        tags: vec!["daily".into()],
        tree: BlobId([5; 32]),
        parent: None,
        summary: BackupSummary::default(),
        program: "kith 0.1.0".into(),
        original: None,
    };
    write("snapshot", "sealed", &snapshot.to_bytes(&public))?;
    write("snapshot", "plain", &envelope::encode(&snapshot))?;

    let index = IndexFile {
        packs: vec![IndexPack {
            id: pack.id,
            ephemeral: pack.ephemeral,
            size: pack.bytes.len() as u64,
            blobs: pack.entries.clone(),
        }],
        supersedes: vec![],
    };
    write("index", "sealed", &index.to_bytes(&public))?;
    write("index", "plain", &envelope::encode(&index))?;

    let master = MasterSecret::from_bytes([6u8; 32]);
    let material = KeyMaterial::Full(MasterSecretBytes(*master.as_bytes()));
    let kdf = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let kf = KeyFile::create(&material, b"password", kdf, "host", "user", 1)?;
    write("key_file", "full", kf.bytes())?;
    let wo = KeyMaterial::WriteOnly(master.write_keys());
    write(
        "key_file",
        "write-only",
        KeyFile::create(&wo, b"password", kdf, "host", "user", 1)?.bytes(),
    )?;

    let signer = master.config_signing_key();
    let config = Config {
        id: [8; 32],
        created: 1,
        chunker: ChunkerParams::default(),
        pack_size: 16 << 20,
        compression_level: 3,
        repo_public: public.0,
        verifying_key: signer.verifying_key().to_bytes(),
        earlier: Vec::new(),
    };
    write("config", "signed", &config.to_bytes(&signer))?;
    write("paper_key", "valid", format_paper_key(&master).as_bytes())?;

    let cipher = Cipher::new(&kith_engine::crypto::SymmetricKey::from_bytes([9u8; 32]));
    let mut sealed = Vec::new();
    let data = vec![b'x'; 5000];
    enc.seal_into(
        &cipher,
        BlobKind::Data,
        &BlobId([0; 32]),
        &data,
        &mut sealed,
    );
    write("blob", "compressed", &sealed)?;
    let coordination = kith_engine::crypto::SymmetricKey::from_bytes([5u8; 32]);
    let record = kith_engine::lock::Record {
        exclusive: true,
        purpose: "prune".into(),
        host: "host".into(),
        user: "user".into(),
        pid: 42,
        created: 1,
        refreshed: 2,
    };
    write(
        "coordination",
        "lock",
        &kith_engine::lock::encode_record(&coordination, kith_storage::Kind::Lock, &record),
    )?;
    let condemned = kith_engine::condemned::Condemnation {
        created: 3,
        host: "host".into(),
        packs: vec![kith_engine::condemned::CondemnedPack {
            id: PackId([7; 32]),
            size: 1000,
            condemned: 3,
        }],
    };
    write(
        "coordination",
        "condemnation",
        &condemned.to_bytes(&coordination),
    )?;
    write(
        "coordination",
        "condemnation-plain",
        &envelope::encode(&condemned),
    )?;
    Ok(())
}
