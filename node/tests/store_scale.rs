//! Start-up time with many stored updates (ignored by default: it builds
//! 100,000 signed updates first). Run it in release mode:
//!
//! `WEFT_SCALE=100000 cargo test --release -p weft-node --test store_scale -- --ignored --nocapture`
//! (`WEFT_SCALE_KEEP=1` keeps the store and prints where).

use std::time::Instant;

/// The allocator the `weft` binary runs with (node/src/main.rs), so that the
/// figures are the node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weft_crdt::PolicyDoc;
use weft_node::store::{SnapshotCapture, Store};
use weft_protocol::identity::SecretKey;
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
            roles: Role::ALL.into_iter().collect(),
        }],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: Vec::new(),
    }
}

#[test]
#[ignore = "slow: builds and signs many updates; run in release with --ignored"]
fn start_up_with_many_updates() {
    let n: u64 = std::env::var("WEFT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let op = SecretKey::from_seed([3; 32]);
    if let Ok(path) = std::env::var(FRESH_STORE) {
        // The second role: a node's restart, in a process that has done
        // nothing else (see the end of this test).
        let store = Store::open(std::path::Path::new(&path)).unwrap();
        start_from_snapshot(&store, &op, n, "in a fresh process");
        return;
    }
    let own_actors = std::env::var("WEFT_SCALE_ACTORS").is_ok_and(|v| v == "1");
    let lane = |i: u64| if own_actors { i.to_be_bytes() } else { [0; 8] };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let t = Instant::now();
    let mut doc = PolicyDoc::new();
    for i in 0..n {
        let change = doc
            .build_revoke(
                // One author lane, as `weft revoke` writes (WEFT_SCALE_ACTORS=1
                // gives every update its own actor, as before lanes).
                actor_for(&op.public(), lane(i)),
                &format!("User::\"u{i}\""),
                "test",
                0,
            )
            .unwrap()
            .unwrap();
        let mut u = SignedUpdate::new(&change, 1);
        u.sign(&op).unwrap();
        store.put_update(&change.hash(), &u.to_bytes()).unwrap();
    }
    store.flush().unwrap();
    eprintln!("built and stored {n} updates in {:?}", t.elapsed());

    let t = Instant::now();
    let (state, report) = store.load_state(root(&op)).unwrap();
    eprintln!(
        "cold start (verify every update): {:?} {report:?}",
        t.elapsed()
    );
    assert_eq!(state.update_count() as u64, n);

    let t = Instant::now();
    store.save_snapshot(&state).unwrap();
    eprintln!("snapshot saved in {:?}", t.elapsed());
    // What a node does instead: copy on its own thread, encode and write
    // on the blocking pool.
    let t = Instant::now();
    let capture = SnapshotCapture::of(&state);
    let copied = t.elapsed();
    let t = Instant::now();
    store.save_capture(&capture).unwrap();
    eprintln!(
        "snapshot copied in {copied:?} (the node's thread), encoded and written in {:?} (the blocking pool)",
        t.elapsed()
    );
    drop(capture);
    drop(state);

    start_from_snapshot(
        &store,
        &op,
        n,
        "(every signature checked, every update authorized)",
    );
    drop(store);

    // This process has built, signed and verified everything above, and its
    // heap shows it; a node restarts in a new process. The same start again,
    // in this test binary run afresh on the same store.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "start_up_with_many_updates",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(FRESH_STORE, dir.path().join("store"))
        .env("WEFT_SCALE", n.to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("in a fresh process"))
        .unwrap_or_else(|| panic!("the fresh process did not start: {err}"));
    eprintln!("{line}");
    assert!(out.status.success(), "{err}");
    if std::env::var("WEFT_SCALE_KEEP").is_ok_and(|v| v == "1") {
        // For profiling the start: `WEFT_SCALE_FRESH_STORE=PATH` and this
        // test binary run it again.
        eprintln!("store kept at {}", dir.keep().join("store").display());
    }
}

/// Starts from `store`'s snapshot of `n` updates and prints how long it took.
fn start_from_snapshot(store: &Store, op: &SecretKey, n: u64, what: &str) {
    let t = Instant::now();
    let (state, report) = store.load_state(root(op)).unwrap();
    eprintln!(
        "start from the snapshot {what}: {:?} {report:?}",
        t.elapsed()
    );
    assert_eq!(state.update_count() as u64, n);
    assert_eq!(report.from_snapshot as u64, n);
}

/// Where the fresh process finds the store, when it is the one running.
const FRESH_STORE: &str = "WEFT_SCALE_FRESH_STORE";
