//! Erasure-code candidates side by side: reed-solomon-simd (GF(2^16),
//! SIMD, used by kith) and reed-solomon-erasure (GF(2^8)), encoding a
//! 16 MiB pack 3-of-5 and rebuilding it with two data shards lost.

// A benchmark that cannot set up has nothing to measure: stop loudly.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use reed_solomon_erasure::galois_8::ReedSolomon;

const LEN: usize = 16 << 20;
const K: usize = 3;
const N: usize = 5;

fn object() -> Vec<u8> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..LEN)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn split(data: &[u8]) -> Vec<Vec<u8>> {
    let per = data.len().div_ceil(K).next_multiple_of(2);
    (0..K)
        .map(|i| {
            let mut s = data[(i * per).min(data.len())..((i + 1) * per).min(data.len())].to_vec();
            s.resize(per, 0);
            s
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = object();
    let mut group = c.benchmark_group("erasure 3-of-5, 16 MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(LEN as u64));

    group.bench_function(BenchmarkId::new("encode", "reed-solomon-simd"), |b| {
        b.iter(|| {
            let shards = split(&data);
            reed_solomon_simd::encode(K, N - K, &shards).unwrap()
        })
    });
    let rse = ReedSolomon::new(K, N - K).unwrap();
    group.bench_function(BenchmarkId::new("encode", "reed-solomon-erasure"), |b| {
        b.iter(|| {
            let mut shards = split(&data);
            let per = shards[0].len();
            shards.extend((0..N - K).map(|_| vec![0u8; per]));
            rse.encode(&mut shards).unwrap();
            shards
        })
    });

    let originals = split(&data);
    let recovery = reed_solomon_simd::encode(K, N - K, &originals).unwrap();
    group.bench_function(
        BenchmarkId::new("decode, 2 lost", "reed-solomon-simd"),
        |b| {
            b.iter(|| {
                reed_solomon_simd::decode(
                    K,
                    N - K,
                    [(2, &originals[2])],
                    recovery.iter().enumerate(),
                )
                .unwrap()
            })
        },
    );
    let mut full = split(&data);
    let per = full[0].len();
    full.extend((0..N - K).map(|_| vec![0u8; per]));
    rse.encode(&mut full).unwrap();
    group.bench_function(
        BenchmarkId::new("decode, 2 lost", "reed-solomon-erasure"),
        |b| {
            b.iter(|| {
                let mut shards: Vec<Option<Vec<u8>>> = full.iter().cloned().map(Some).collect();
                shards[0] = None;
                shards[1] = None;
                rse.reconstruct_data(&mut shards).unwrap();
                shards
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
