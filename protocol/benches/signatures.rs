//! Signature throughput: signing, strict verification, and batch
//! verification of 64 signatures, over a 256-byte message (about the size of
//! a signed update's header). Throughput is reported per signature.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use weft_protocol::identity::{Domain, PublicKey, SecretKey, Signature, verify_batch};

const MSG_LEN: usize = 256;
const BATCH: usize = 64;

fn keys(n: usize) -> Vec<SecretKey> {
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            seed[31] = 0x5a;
            SecretKey::from_seed(seed)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let msg = vec![0x42u8; MSG_LEN];
    let key = &keys(1)[0];
    let public = key.public();
    let sig = key.sign(Domain::Update, &msg);

    let mut group = c.benchmark_group("signatures");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| key.sign(black_box(Domain::Update), black_box(&msg)))
    });
    group.bench_function("verify_strict", |b| {
        b.iter(|| {
            public
                .verify(black_box(Domain::Update), black_box(&msg), black_box(&sig))
                .unwrap()
        })
    });

    let batch_keys = keys(BATCH);
    let publics: Vec<PublicKey> = batch_keys.iter().map(SecretKey::public).collect();
    let msgs: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            let mut m = msg.clone();
            m[0] = i as u8;
            m
        })
        .collect();
    let sigs: Vec<Signature> = batch_keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| k.sign(Domain::Update, m))
        .collect();
    let items: Vec<(&PublicKey, &[u8], &Signature)> = publics
        .iter()
        .zip(&msgs)
        .zip(&sigs)
        .map(|((k, m), s)| (k, m.as_slice(), s))
        .collect();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("verify_batch_64", |b| {
        b.iter(|| verify_batch(black_box(Domain::Update), black_box(&items)).unwrap())
    });
    group.bench_function("verify_strict_64_one_by_one", |b| {
        b.iter(|| {
            for (k, m, s) in &items {
                k.verify(Domain::Update, m, s).unwrap();
            }
        })
    });
    group.finish();
}

#[allow(missing_docs)] // criterion_group! makes an undocumented pub fn.
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
