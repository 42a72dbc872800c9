#![allow(clippy::unwrap_used)]

use super::*;

fn peer() -> PeerId {
    kith_net::Keypair::generate_ed25519().public().to_peer_id()
}

fn key(owner: u8, tag: u8, index: u16) -> ShardKey {
    ShardKey {
        owner: OwnerId([owner; 32]),
        tag: ObjectTag([tag; 32]),
        index,
    }
}

fn open(dir: &std::path::Path, quota: u64) -> Arc<Hold> {
    let state = Arc::new(State::open(&dir.join("node.redb")).unwrap());
    Arc::new(Hold::open(state, dir.join("hold"), quota).unwrap())
}

/// Stores `data` as the whole shard `key` from `from`, as the daemon does.
fn store(hold: &Arc<Hold>, from: PeerId, key: ShardKey, data: &[u8]) -> Result<u64, ErrorReply> {
    let ticket = hold.begin_store(from, key, data.len() as u64, 0)?;
    std::fs::create_dir_all(ticket.path.parent().unwrap()).unwrap();
    std::fs::write(&ticket.path, data).unwrap();
    Ok(hold.finish_store(&ticket, data.len() as u64).unwrap())
}

#[test]
fn stored_shards_are_listed_charged_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let hold = open(dir.path(), 1000);
    let p = peer();
    assert_eq!(store(&hold, p, key(1, 2, 0), &[7; 100]).unwrap(), 100);
    assert_eq!(store(&hold, p, key(1, 1, 3), &[8; 50]).unwrap(), 50);
    store(&hold, p, key(9, 1, 0), &[9; 10]).unwrap();
    assert_eq!(hold.held_for(&p), 160);
    let (list, more) = hold.list(&OwnerId([1; 32]), None, 10).unwrap();
    assert!(!more);
    assert_eq!(
        list.iter()
            .map(|h| (h.tag.0[0], h.index, h.len))
            .collect::<Vec<_>>(),
        vec![(1, 3, 50), (2, 0, 100)]
    );
    let (page, more) = hold.list(&OwnerId([1; 32]), None, 1).unwrap();
    assert!(more);
    let (rest, more) = hold
        .list(&OwnerId([1; 32]), Some((page[0].tag, page[0].index)), 1)
        .unwrap();
    assert!(!more);
    assert_eq!(rest[0].tag.0[0], 2);
    assert_eq!(
        hold.delete(
            &OwnerId([1; 32]),
            &[(ObjectTag([2; 32]), 0), (ObjectTag([5; 32]), 0)]
        )
        .unwrap(),
        1
    );
    assert_eq!(hold.held_for(&p), 60);
    assert!(!hold.path(&key(1, 2, 0)).exists());
}

#[test]
fn a_store_over_quota_is_refused_before_any_byte() {
    let dir = tempfile::tempdir().unwrap();
    let hold = open(dir.path(), 100);
    let p = peer();
    store(&hold, p, key(1, 1, 0), &[1; 80]).unwrap();
    let e = hold.begin_store(p, key(1, 2, 0), 30, 0).unwrap_err();
    assert_eq!(e.code, ErrorCode::OverQuota);
    // Storing the same shard again does not count twice.
    store(&hold, p, key(1, 1, 0), &[1; 80]).unwrap();
    assert_eq!(hold.total(), 80);
}

#[test]
fn one_shard_is_stored_by_one_upload_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let hold = open(dir.path(), 100);
    let t = hold.begin_store(peer(), key(1, 1, 0), 10, 0).unwrap();
    let e = hold.begin_store(peer(), key(1, 1, 0), 10, 0).unwrap_err();
    assert_eq!(e.code, ErrorCode::Busy);
    drop(t);
    hold.begin_store(peer(), key(1, 1, 0), 10, 0).unwrap();
}

#[test]
fn restart_reconciles_files_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let p = peer();
    {
        let hold = open(dir.path(), 1000);
        store(&hold, p, key(1, 1, 0), &[1; 40]).unwrap();
        store(&hold, p, key(1, 2, 0), &[2; 40]).unwrap();
        store(&hold, p, key(1, 3, 0), &[3; 40]).unwrap();
        // Bytes written but never confirmed, a file removed behind the
        // node's back, and a file the index never heard of.
        let t = hold.begin_store(p, key(1, 4, 0), 40, 0).unwrap();
        std::fs::write(&t.path, [4; 25]).unwrap();
        drop(t);
        std::fs::remove_file(hold.path(&key(1, 2, 0))).unwrap();
        std::fs::write(hold.path(&key(1, 5, 0)), [5; 10]).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(hold.path(&key(1, 3, 0)))
            .unwrap();
        std::io::Write::write_all(&mut f, &[0; 7]).unwrap();
    }
    let hold = open(dir.path(), 1000);
    let (list, _) = hold.list(&OwnerId([1; 32]), None, 10).unwrap();
    assert_eq!(
        list.iter().map(|h| h.tag.0[0]).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(
        std::fs::metadata(hold.path(&key(1, 3, 0))).unwrap().len(),
        40
    );
    assert_eq!(
        std::fs::metadata(hold.path(&key(1, 4, 0))).unwrap().len(),
        0
    );
    assert!(!hold.path(&key(1, 5, 0)).exists());
    assert_eq!(
        hold.status(&key(1, 4, 0)).unwrap(),
        ShardStatus::Partial {
            received: 0,
            total_len: 40
        }
    );
    assert_eq!(hold.held_for(&p), 120);
    // The partial upload resumes from what is held.
    let t = hold.begin_store(p, key(1, 4, 0), 40, 0).unwrap();
    std::fs::write(&t.path, [4; 40]).unwrap();
    assert_eq!(hold.finish_store(&t, 40).unwrap(), 40);
}
