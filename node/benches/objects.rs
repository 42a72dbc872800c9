//! Object store throughput: encode and decode of the erasure code, and
//! put and get of 16 MiB objects over the in-memory network with 5 peers
//! (3-of-5). Run with `cargo bench -p kith-node --bench objects`.

// A benchmark that cannot set up has nothing to measure: stop loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kith_engine::MasterSecret;
use kith_node::objects::coding;
use kith_node::objects::memory::{MemoryNetwork, MemoryTransport};
use kith_node::objects::{ObjectStore, OwnerKeys, StoreOptions};
use kith_storage::{Handle, Kind};

const LEN: usize = 16 << 20;

fn object(seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(LEN);
    while out.len() < LEN {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

fn coding_bench(c: &mut Criterion) {
    let data = bytes::Bytes::from(object(1));
    let mut group = c.benchmark_group("coding 3-of-5, 16 MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("encode", |b| {
        b.iter(|| coding::encode(&data, 3, 5).unwrap())
    });
    let shards = coding::encode(&data, 3, 5).unwrap();
    group.bench_function("decode, all data shards", |b| {
        let have: Vec<(u16, &[u8])> = (0..3).map(|i| (i, &shards[usize::from(i)][..])).collect();
        b.iter(|| coding::decode(LEN as u64, 3, 5, &have).unwrap())
    });
    group.bench_function("decode, 2 data shards lost", |b| {
        let have: Vec<(u16, &[u8])> = (2..5).map(|i| (i, &shards[usize::from(i)][..])).collect();
        b.iter(|| coding::decode(LEN as u64, 3, 5, &have).unwrap())
    });
    group.finish();
}

fn store_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = MemoryNetwork::new();
    let peers = net.add_holders(5);
    let dir = tempfile::tempdir().unwrap();
    let keys = OwnerKeys::derive(&MasterSecret::from_bytes([9; 32])).unwrap();
    let transport = MemoryTransport::knowing_all(net.clone(), keys.owner_id());
    let store = Arc::new(
        rt.block_on(ObjectStore::open(
            transport,
            keys,
            dir.path(),
            StoreOptions::default(),
        ))
        .unwrap(),
    );
    let data = Bytes::from(object(2));
    let mut group = c.benchmark_group("object store, 5 peers 3-of-5, 16 MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(LEN as u64));
    let mut i = 0u64;
    group.bench_function("put", |b| {
        b.iter(|| {
            i += 1;
            // A fresh name each time: the same name and bytes would be a no-op.
            let h = Handle::new(Kind::Pack, format!("{i:08x}")).unwrap();
            rt.block_on(store.put(&h, data.clone())).unwrap();
            rt.block_on(store.delete(&h)).unwrap();
        })
    });
    let h = Handle::new(Kind::Pack, "get").unwrap();
    rt.block_on(store.put(&h, data.clone())).unwrap();
    group.bench_function("get", |b| b.iter(|| rt.block_on(store.get(&h)).unwrap()));
    net.set_down(&peers[0], true);
    net.set_down(&peers[1], true);
    group.bench_function("get, 2 of 5 peers down", |b| {
        b.iter(|| rt.block_on(store.get(&h)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, coding_bench, store_bench);
criterion_main!(benches);
