//! Ingest throughput, saved size and load time of the signed state.
//!
//! - `ingest/revocation`: one signed revocation from decode through signature
//!   check, path summary, authorization, automerge apply and the view update,
//!   into a state that already holds `BASE` revocations.
//! - `load/verify_all`: rebuilding a state of `BASE` revocations from the stored
//!   signed updates, verifying every one.
//! - `load/load_and_verify_snapshot`: a node's start from its snapshot of
//!   `BASE` revocations: the saved document loaded while every signature is
//!   checked, then every update matched to it and authorized again.
//! - The saved document's bytes per revocation are printed once.
//!
//! Run: `cargo bench -p weft-protocol --bench ingest`
//! (`WEFT_BENCH_BASE=10000` for a quicker run; `WEFT_BENCH_LANES=N` writes
//! the updates in N author lanes, one actor each, instead of one actor per
//! update; `WEFT_BENCH_BATCHES=1,100` picks the batch sizes; `WEFT_BENCH_WARM=N`
//! how many of the stored updates go in after the bulk build, default 5,000;
//! `WEFT_BENCH_PASSES=N` runs passes over the fresh updates instead, see
//! `steady_passes`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_main};

/// The allocator the `weft` binary runs with (node/src/main.rs), so that the
/// figures are the node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use weft_crdt::PolicyDoc;
use weft_protocol::identity::SecretKey;
use weft_protocol::state::SignedState;
use weft_protocol::trust::{Operator, QuarantineLimits, Role, TrustRoot};
use weft_protocol::update::{SignedUpdate, actor_for};

fn root(op: &SecretKey) -> TrustRoot {
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![SecretKey::from_seed([9; 32]).public()],
        root_threshold: 1,
        operators: vec![Operator {
            name: "ops".into(),
            key: op.public(),
            roles: [Role::Policy, Role::Revoke].into_iter().collect(),
        }],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    }
}

/// `n` signed revocations, each built on the one before (one operator's stream).
fn revocations(
    doc: &mut PolicyDoc,
    op: &SecretKey,
    start: u64,
    n: u64,
    lanes: u64,
) -> Vec<Vec<u8>> {
    (start..start + n)
        .map(|i| {
            let change = doc
                .build_revoke(
                    actor_for(&op.public(), (i % lanes).to_be_bytes()),
                    &format!(r#"User::"u{i}""#),
                    "offboarded",
                    i as i64,
                )
                .unwrap()
                .unwrap();
            let mut u = SignedUpdate::new(&change, 1);
            u.sign(op).unwrap();
            u.to_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // Under `cargo test --all-targets` (no `--bench` argument) the bench runs
    // once on a small state, so it cannot rot without anyone noticing.
    let full = std::env::args().any(|a| a == "--bench");
    let base: u64 = std::env::var("WEFT_BENCH_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 200 });
    // Fresh updates per run from the base state: few enough that the state
    // stays near `base` (the cost per update grows with the state).
    let extra: u64 = std::env::var("WEFT_BENCH_EXTRA")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000 } else { 2_000 });
    let op = SecretKey::from_seed([1; 32]);
    let mut author = PolicyDoc::new();
    let t = Instant::now();
    // One actor per update unless told otherwise (what the CLI wrote before
    // author lanes, and what a state with many short-lived lanes looks like).
    let lanes: u64 = std::env::var("WEFT_BENCH_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let label = if lanes == u64::MAX {
        "actor_per_update".to_string()
    } else {
        format!("{lanes}_lanes")
    };
    let stored = revocations(&mut author, &op, 0, base, lanes);
    let fresh = revocations(&mut author, &op, base, extra, lanes);
    eprintln!(
        "generated {} signed revocations in {:?}",
        base + extra,
        t.elapsed()
    );

    // A state of the `base` stored revocations, verified and applied in one batch.
    let base_state = || {
        let mut s = SignedState::new(root(&op));
        for r in s.ingest_batch(stored.iter().map(|u| u.as_slice().into()).collect()) {
            r.unwrap();
        }
        s
    };
    // The same state as a node that has been running for a while holds it:
    // the stored updates in one batch but the last `warm`, then those in
    // batches of 100. After a large batch (a cold start), automerge's value
    // columns are single slabs that the next inserts split up: the first
    // update costs about 250 ms and the next few thousand cost more than the
    // steady state (see BENCHMARKS.md). That is start-up cost, not ingest.
    let warm: usize = std::env::var("WEFT_BENCH_WARM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 5_000 } else { 10 })
        .min(stored.len().saturating_sub(1));
    let running_state = || {
        let mut s = SignedState::new(root(&op));
        let (rest, last) = stored.split_at(stored.len() - warm);
        for r in s.ingest_batch(rest.iter().map(|u| u.as_slice().into()).collect()) {
            r.unwrap();
        }
        for part in last.chunks(100) {
            for r in s.ingest_batch(part.iter().map(|u| u.as_slice().into()).collect()) {
                r.unwrap();
            }
        }
        s
    };
    let t = Instant::now();
    let warmed = running_state();
    let running_state = || warmed.clone();
    let mut state = running_state();
    eprintln!(
        "verified and applied {base} stored updates (one batch, then the last {warm} in batches of 100) in {:?}",
        t.elapsed()
    );
    let saved = state.doc().save();
    eprintln!(
        "saved document: {} bytes for {base} revocations = {:.1} bytes/revocation; signed updates: {:.1} bytes each",
        saved.len(),
        saved.len() as f64 / base as f64,
        stored.iter().map(Vec::len).sum::<usize>() as f64 / base as f64
    );

    let fresh: Vec<std::sync::Arc<[u8]>> = fresh.into_iter().map(Into::into).collect();
    if let Some(passes) = std::env::var("WEFT_BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        drop(state);
        steady_passes(&warmed, &fresh, passes);
        return;
    }
    let mut group = c.benchmark_group("ingest");
    // Few samples: each iteration grows the state, and automerge's memory
    // grows fast with the number of actors (see BENCHMARKS.md).
    group.sample_size(10);
    let batches: Vec<usize> = std::env::var("WEFT_BENCH_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 1000]);
    for batch in batches {
        group.throughput(Throughput::Elements(batch as u64));
        let mut next = 0usize;
        group.bench_function(
            format!("revocations_into_{base}_{label}/batch_{batch}"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if next + batch > fresh.len() {
                            // Start again from a state of `base` revocations.
                            state = running_state();
                            next = 0;
                        }
                        let items = fresh[next..next + batch].to_vec();
                        let t = Instant::now();
                        for r in black_box(state.ingest_batch(items)) {
                            r.unwrap();
                        }
                        total += t.elapsed();
                        next += batch;
                    }
                    total
                })
            },
        );
        // The same path split in two, to show where the time goes: the
        // signature checks alone, and everything after them.
        group.bench_function(format!("verify_only/batch_{batch}"), |b| {
            let mut next = 0usize;
            b.iter(|| {
                if next + batch > fresh.len() {
                    next = 0;
                }
                for u in &fresh[next..next + batch] {
                    black_box(weft_protocol::boundary::decode_verified(u).unwrap());
                }
                next += batch;
            })
        });
        let mut next = fresh.len();
        group.bench_function(
            format!("apply_verified_into_{base}_{label}/batch_{batch}"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if next + batch > fresh.len() {
                            state = running_state();
                            next = 0;
                        }
                        let items: Vec<_> = fresh[next..next + batch]
                            .iter()
                            .map(|u| {
                                (
                                    weft_protocol::boundary::decode_verified(u).unwrap(),
                                    u.clone(),
                                )
                            })
                            .collect();
                        let t = Instant::now();
                        for r in black_box(state.ingest_verified_batch(items)) {
                            r.unwrap();
                        }
                        total += t.elapsed();
                        next += batch;
                    }
                    total
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.throughput(Throughput::Elements(base));
    // Each load returns what it built, which criterion drops outside the
    // timing: a node's start keeps its state, so freeing one (a few hundred
    // ms at 100,000 updates) is no part of it.
    group.bench_function(format!("verify_all_{base}_{label}"), |b| {
        b.iter_with_large_drop(base_state)
    });
    group.bench_function(format!("load_saved_doc_{base}_{label}"), |b| {
        b.iter_with_large_drop(|| PolicyDoc::load(&saved).unwrap())
    });
    // A node's start from its snapshot (node/src/store.rs): the saved
    // document loads on one thread while every update's signatures are
    // checked in batches on the others; once it is in, each update is
    // matched to the document's changes and authorized again under the trust
    // root right after its signatures (`SignedState::restore`).
    let covered: Vec<(weft_crdt::ChangeHash, std::sync::Arc<[u8]>)> = stored
        .iter()
        .map(|u| {
            let hash = weft_protocol::boundary::decode_verified(u).unwrap().hash;
            (hash, u.as_slice().into())
        })
        .collect();
    group.bench_function(format!("load_and_verify_snapshot_{base}_{label}"), |b| {
        b.iter_with_large_drop(|| {
            SignedState::restore(
                root(&op),
                || PolicyDoc::load(&saved).map_err(|e| e.to_string()),
                &covered,
            )
            .unwrap()
        })
    });
    group.finish();
}

/// `WEFT_BENCH_PASSES=N`: instead of the criterion groups, `N` passes over
/// the fresh updates in batches of 100, each pass from a clone of the warmed
/// state, alternately through the whole path (`ingest_batch`) and through
/// `ingest_verified_batch` with the signatures checked beforehand, untimed.
/// One line per pass gives the mean per update. A process runs for a while,
/// so the median pass says more on a shared machine than one criterion
/// sample; run two builds alternately to compare them.
fn steady_passes(warmed: &SignedState, fresh: &[std::sync::Arc<[u8]>], passes: usize) {
    let checked: Vec<_> = fresh
        .iter()
        .map(|u| {
            (
                weft_protocol::boundary::decode_verified(u).unwrap(),
                u.clone(),
            )
        })
        .collect();
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for pass in 0..2 * passes {
        let whole = pass % 2 == 0;
        let mut state = warmed.clone();
        let mut total = Duration::ZERO;
        for (bytes, verified) in fresh.chunks(100).zip(checked.chunks(100)) {
            let t = Instant::now();
            let results = if whole {
                state.ingest_batch(bytes.to_vec())
            } else {
                state.ingest_verified_batch(verified.to_vec())
            };
            total += t.elapsed();
            for r in black_box(results) {
                r.unwrap();
            }
        }
        let per = total.as_secs_f64() * 1e6 / fresh.len() as f64;
        times[usize::from(!whole)].push(per);
        eprintln!(
            "pass {}: {} {per:.1} µs per update",
            pass / 2 + 1,
            if whole {
                "verify and apply"
            } else {
                "apply only"
            }
        );
        drop(state);
    }
    for (name, mut t) in ["verify and apply", "apply only"].into_iter().zip(times) {
        t.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: median {:.1} µs per update ({:.0}/s), min {:.1}, max {:.1}, {} passes of {}",
            t[t.len() / 2],
            1e6 / t[t.len() / 2],
            t[0],
            t[t.len() - 1],
            t.len(),
            fresh.len()
        );
    }
}

#[allow(missing_docs)]
mod harness {
    criterion::criterion_group! {
        name = benches;
        config = criterion::Criterion::default().measurement_time(std::time::Duration::from_secs(5));
        targets = super::bench
    }
}
criterion_main!(harness::benches);
