//! The scope index's memory and its upkeep when a bundle of 1,000 policies
//! changes in a view of 100,000 policies (100 bundles of 1,000 RBAC grants).
//!
//! Memory is counted by an instrumented global allocator (`stats_alloc`); it prints
//! the bytes the index adds (entries, one-policy sets, maps) and, beside it,
//! the bytes of the merged Cedar `PolicySet` of the same policies.
//!
//! The timed steps, each on its own: parsing the new bundle, building its
//! index entries, swapping them into the index (remove the old, insert the
//! new), and the whole change end to end through `PolicyDoc::build_bundle`
//! (automerge change, parse, index, view).
//!
//! Run: `cargo bench -p weft-crdt --bench index` (under `cargo test` it runs
//! once on 2 bundles of 100).

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::PolicySet;
use criterion::{Criterion, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use weft_crdt::{ActorId, BundleContent, IndexedPolicy, PolicyDoc, ScopeIndex};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Net bytes still allocated from what `f` allocated.
fn net_bytes<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let region = Region::new(GLOBAL);
    let out = f();
    let stats = region.change();
    let net =
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated;
    (out, net)
}

/// Bundle `b` of `per` grants; `version` changes every policy's folder.
fn bundle(b: usize, per: usize, version: usize) -> BundleContent {
    let mut c = BundleContent::default();
    for j in 0..per {
        let i = b * per + j;
        c.policies.insert(
            format!("g{i}"),
            format!(
                r#"permit (principal in Group::"g{i}", action == Action::"read", resource in Folder::"f{i}v{version}");"#
            ),
        );
    }
    c
}

fn actor(n: u64) -> ActorId {
    let mut a = vec![7u8; 40];
    a[..8].copy_from_slice(&n.to_be_bytes());
    ActorId::from(a)
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let (bundles, per) = if full { (100, 1_000) } else { (2, 100) };
    let total = bundles * per;

    let mut doc = PolicyDoc::new();
    for b in 0..bundles {
        doc.build_bundle(actor(b as u64), &format!("b{b}"), &bundle(b, per, 0), 0)
            .expect("bundle builds");
    }
    let parsed: Vec<_> = (0..bundles)
        .map(|b| Arc::new(bundle(b, per, 0).parse(&format!("b{b}")).expect("parses")))
        .collect();

    // Memory: the index built from scratch, and the merged set beside it.
    let (index, index_bytes) = net_bytes(|| {
        let mut index = ScopeIndex::new();
        for p in &parsed {
            index.insert_all(IndexedPolicy::all_of(p).iter());
        }
        index
    });
    let (_merged, merged_bytes) = net_bytes(|| {
        let mut merged = PolicySet::new();
        for p in &parsed {
            merged.merge(&p.policies, false).expect("no id collides");
        }
        merged
    });
    assert_eq!(index.len(), total);
    println!(
        "index memory at {total} policies: {:.1} MiB ({:.0} B per policy); merged Cedar PolicySet: {:.1} MiB ({:.0} B per policy)",
        index_bytes as f64 / 1048576.0,
        index_bytes as f64 / total as f64,
        merged_bytes as f64 / 1048576.0,
        merged_bytes as f64 / total as f64,
    );

    let mut group = c.benchmark_group(format!("index_update_{per}_of_{total}"));
    group.sample_size(10);
    let next = bundle(0, per, 1);
    group.bench_function("parse", |b| {
        b.iter(|| black_box(next.parse("b0").expect("parses")))
    });
    let next_parsed = Arc::new(next.parse("b0").expect("parses"));
    group.bench_function("entries", |b| {
        b.iter(|| black_box(IndexedPolicy::all_of(&next_parsed)))
    });
    let old_entries = IndexedPolicy::all_of(&parsed[0]);
    let new_entries = IndexedPolicy::all_of(&next_parsed);
    group.bench_function("swap", |b| {
        b.iter_batched(
            || index.clone(),
            |mut ix| {
                ix.remove_all(old_entries.iter());
                ix.insert_all(new_entries.iter());
                ix
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let mut version = 1;
    group.bench_function("build_bundle_end_to_end", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let content = bundle(0, per, version);
                version += 1;
                let t = Instant::now();
                doc.build_bundle(actor(1_000 + version as u64), "b0", &content, 0)
                    .expect("bundle builds");
                spent += t.elapsed();
            }
            spent
        })
    });
    assert_eq!(doc.view().index().len(), total);
    group.finish();
}

#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(harness::benches);
