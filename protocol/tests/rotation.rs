//! Trust-root rotations and the history before them: the updates a rotation
//! vouched for (the causal past of its `accepted_heads`) stay valid on the
//! node that adopts it and on every node that learns them afterwards, in
//! whatever order they come; what an operator the rotation removed wrote
//! outside that past is refused. Real automerge, real signatures.

use std::sync::Arc;

use proptest::prelude::*;
use weft_crdt::{BundleContent, ChangeHash, PolicyDoc};
use weft_protocol::identity::SecretKey;
use weft_protocol::state::{Ingested, RootAdoption, SignedState};
use weft_protocol::trust::{Operator, QuarantineLimits, Role, SignedRoot, TrustRoot};
use weft_protocol::update::{SignedUpdate, UpdateError, actor_for};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn admin() -> SecretKey {
    key(1)
}

fn writer() -> SecretKey {
    key(2)
}

fn root_key() -> SecretKey {
    key(100)
}

/// Version 1: admin (policy, revoke) and writer (policy).
fn v1() -> TrustRoot {
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![root_key().public()],
        root_threshold: 1,
        operators: vec![
            Operator {
                name: "admin".into(),
                key: admin().public(),
                roles: [Role::Policy, Role::Revoke].into_iter().collect(),
            },
            Operator {
                name: "writer".into(),
                key: writer().public(),
                roles: [Role::Policy].into_iter().collect(),
            },
        ],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    }
}

/// Version 2: the writer removed, vouching for `state`'s heads.
fn v2(state: &SignedState) -> TrustRoot {
    let mut r = v1();
    r.version = 2;
    r.operators.retain(|o| o.name != "writer");
    r.accepted_heads = state.heads().iter().map(|h| h.0).collect();
    r
}

fn signed_root(r: &TrustRoot) -> Vec<u8> {
    SignedRoot::sign(r, &[&root_key()]).to_bytes()
}

/// One update on top of `state`: a revocation by admin, or a bundle by the
/// writer, under `version`.
fn update(state: &SignedState, n: u64, by_writer: bool, version: u64) -> Vec<u8> {
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let k = if by_writer { writer() } else { admin() };
    let actor = actor_for(&k.public(), n.to_be_bytes());
    let change = if by_writer {
        let mut content = BundleContent::default();
        content.policies.insert(
            "p".into(),
            format!("permit(principal == User::\"w{n}\", action, resource);"),
        );
        doc.build_bundle(actor, &format!("b{n}"), &content, 0)
    } else {
        doc.build_revoke(actor, &format!("User::\"u{n}\""), "test", 0)
    }
    .unwrap()
    .unwrap();
    let mut u = SignedUpdate::new(&change, version);
    u.sign(&k).unwrap();
    u.to_bytes()
}

/// A state under version 1 holding `n` updates, one on top of the other,
/// every third by the writer; and their bytes, in causal order.
fn history(n: u64) -> (SignedState, Vec<Vec<u8>>) {
    let mut state = SignedState::new(v1());
    let mut bytes = Vec::new();
    for i in 0..n {
        let u = update(&state, i, i % 3 == 1, 1);
        assert!(matches!(
            state.ingest(&u).unwrap(),
            Ingested::Applied { .. }
        ));
        bytes.push(u);
    }
    (state, bytes)
}

/// A new node that starts from version 2 (and knows version 1 from the chain).
fn new_node(v2: &TrustRoot) -> SignedState {
    SignedState::new(v2.clone()).with_chain(vec![(v1(), Arc::from(signed_root(&v1())))])
}

/// Finding: re-judging the history at a rotation walked the vouched heads
/// only through applied changes, so every update but the heads waited for
/// the heads, and the heads for them: adopting a rotation dropped the whole
/// history, and a node could never learn it again.
#[test]
fn a_rotation_keeps_the_history_it_vouched_for() {
    let (mut state, bytes) = history(12);
    let heads = state.heads();
    let root = v2(&state);
    let adopted = state.adopt_signed_root(&signed_root(&root), 0).unwrap();
    let RootAdoption::Adopted { dropped, .. } = adopted else {
        panic!("not adopted: {adopted:?}");
    };
    assert!(dropped.is_empty(), "the rotation dropped {dropped:?}");
    assert_eq!(state.update_count(), 12);
    assert_eq!(state.heads(), heads);
    assert_eq!(state.held_count(), 0);
    assert!(state.view().revocation(r#"User::"u0""#).is_some());

    // A new node learns the history in causal order, one at a time (as
    // sync and a store bring it), in one batch, and in reverse.
    let mut one_by_one = new_node(&root);
    for u in &bytes {
        one_by_one.ingest(u).unwrap();
    }
    let mut batch = new_node(&root);
    batch.ingest_batch(bytes.iter().map(|b| Arc::from(&b[..])).collect());
    let mut reverse = new_node(&root);
    for u in bytes.iter().rev() {
        reverse.ingest(u).unwrap();
    }
    for (what, s) in [
        ("one by one", &one_by_one),
        ("in one batch", &batch),
        ("in reverse", &reverse),
    ] {
        assert_eq!(s.heads(), heads, "{what}");
        assert_eq!(s.update_count(), 12, "{what}");
        assert_eq!(s.held_count(), 0, "{what}");
    }
}

/// The hashes a batch's results report applied, each update once: an
/// applied result's own and those it (or a held one) released.
fn reported_applied(results: &[Result<Ingested, UpdateError>]) -> Vec<ChangeHash> {
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(Ingested::Applied { hash, released, .. }) => {
                out.push(*hash);
                out.extend(released.iter().map(|(h, _)| *h));
            }
            Ok(Ingested::Held { released, .. }) => {
                out.extend(released.iter().map(|(h, _)| *h));
            }
            _ => {}
        }
    }
    out
}

/// A new node given the history before a rotation in one batch holds every
/// update for the walk of the vouched past, then applies them all once the
/// last came: each is reported applied, once, so that the node persists and
/// announces it (found by the `ingest` fuzz target).
#[test]
fn a_batch_of_the_vouched_history_is_reported_applied() {
    let (state, bytes) = history(6);
    let root = v2(&state);
    let mut node = new_node(&root);
    let results = node.ingest_batch(bytes.iter().map(|b| Arc::from(&b[..])).collect());
    assert_eq!(node.update_count(), 6);
    for r in &results {
        assert!(matches!(r, Ok(Ingested::Applied { .. })), "{r:?}");
    }
    let mut reported = reported_applied(&results);
    reported.sort();
    let mut applied: Vec<ChangeHash> = node.update_hashes().copied().collect();
    applied.sort();
    assert_eq!(reported, applied);
}

/// `fuzz/` target `ingest`: a batch holding an update of the vouched past
/// twice applied the first copy and then reported the second applied too,
/// so the node would persist and announce it twice. Each update of the
/// batch is reported applied once; a second copy is a duplicate.
#[test]
fn a_second_copy_of_a_vouched_update_in_a_batch_is_a_duplicate() {
    // `beside`, on the second update of the history, is vouched for with
    // the history's head.
    let (state, bytes) = history(3);
    let (second, _) = history(2);
    let beside = update(&second, 40, false, 1);
    let mut with_beside = state.clone();
    with_beside.ingest(&beside).unwrap();
    let root = v2(&with_beside);
    let mut node = new_node(&root);
    for r in node.ingest_batch(bytes.iter().map(|b| Arc::from(&b[..])).collect()) {
        assert!(matches!(r, Ok(Ingested::Applied { .. })), "{r:?}");
    }
    let results = node.ingest_batch(vec![Arc::from(&beside[..]), Arc::from(&beside[..])]);
    assert!(
        matches!(results[0], Ok(Ingested::Applied { .. })),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Ok(Ingested::Duplicate(_))),
        "{results:?}"
    );
    assert_eq!(node.update_count(), 4);
}

/// An update that completes the walk of the vouched past but still waits
/// for a dependency of its own reports the history its arrival released.
#[test]
fn a_held_update_reports_the_vouched_history_it_released() {
    let (state, bytes) = history(4);
    // `hidden`, beside the last update of the history, never reaches the
    // new node; `head`, on top of both, is the head the rotation vouches for.
    let (before_last, _) = history(3);
    let hidden = update(&before_last, 40, false, 1);
    let mut with_hidden = state.clone();
    with_hidden.ingest(&hidden).unwrap();
    let head = update(&with_hidden, 41, false, 1);
    let mut with_head = with_hidden.clone();
    with_head.ingest(&head).unwrap();
    let root = v2(&with_head);
    let mut node = new_node(&root);
    let first = node.ingest_batch(bytes.iter().map(|b| Arc::from(&b[..])).collect());
    assert!(reported_applied(&first).is_empty(), "{first:?}");
    assert_eq!(node.update_count(), 0);

    let Ingested::Held { released, .. } = node.ingest(&head).unwrap() else {
        panic!("the head is applied without its dependency");
    };
    assert_eq!(node.update_count(), 4);
    let mut released: Vec<ChangeHash> = released.into_iter().map(|(h, _)| h).collect();
    released.sort();
    let mut applied: Vec<ChangeHash> = node.update_hashes().copied().collect();
    applied.sort();
    assert_eq!(released, applied);
}

/// What the removed writer wrote outside the vouched past is refused, under
/// either root, on the node that adopted the rotation and on a new one;
/// anything built on it is never applied.
#[test]
fn what_a_removed_operator_writes_after_the_vouched_heads_is_refused() {
    let (before, bytes) = history(6);
    let root = v2(&before);
    // Written under version 1 on the vouched heads, but not vouched for.
    let late = update(&before, 50, true, 1);
    let mut with_late = before.clone();
    with_late.ingest(&late).unwrap();
    let on_late = update(&with_late, 51, false, 1);

    let mut adopter = before.clone();
    adopter.adopt_signed_root(&signed_root(&root), 0).unwrap();
    let mut fresh = new_node(&root);
    for u in &bytes {
        fresh.ingest(u).unwrap();
    }
    for (n, s) in [("adopter", &mut adopter), ("new node", &mut fresh)] {
        let heads = s.heads();
        let err = s.ingest(&late).unwrap_err();
        assert!(matches!(err, UpdateError::RootVersion { .. }), "{n}: {err}");
        let err = s.ingest(&update(&before, 52, true, 2)).unwrap_err();
        assert!(
            matches!(err, UpdateError::UnknownSigner { .. }),
            "{n}: {err}"
        );
        // Built on the refused update: it waits, and never applies.
        assert!(matches!(s.ingest(&on_late).unwrap(), Ingested::Held { .. }));
        assert_eq!(s.heads(), heads, "{n}");
        assert_eq!(s.update_count(), 6, "{n}");
    }

    // A node that applied the late update before it heard of the rotation
    // drops it, and what was built on it, when it adopts the rotation.
    let mut behind = with_late.clone();
    behind.ingest(&on_late).unwrap();
    let adopted = behind.adopt_signed_root(&signed_root(&root), 0).unwrap();
    let RootAdoption::Adopted { dropped, .. } = adopted else {
        panic!("not adopted: {adopted:?}");
    };
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert_eq!(behind.heads(), before.heads());
    assert_eq!(behind.update_count(), 6);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]
    /// The history before a rotation, delivered to a new node in any order
    /// and in batches of any size, always ends whole, nothing held.
    #[test]
    fn a_new_node_learns_the_vouched_history_in_any_order(
        n in 2u64..8,
        order in prop::collection::vec(any::<u32>(), 10),
        cuts in prop::collection::vec(1usize..4, 10),
    ) {
        let (state, bytes) = history(n);
        let root = v2(&state);
        let mut items: Vec<(u32, Vec<u8>)> = order.iter().copied().zip(bytes).collect();
        items.sort_by_key(|(k, _)| *k);
        let mut node = new_node(&root);
        let mut rest: &[(u32, Vec<u8>)] = &items;
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let take = (*cut.next().unwrap()).min(rest.len());
            let (now, later) = rest.split_at(take);
            node.ingest_batch(now.iter().map(|(_, b)| Arc::from(&b[..])).collect());
            rest = later;
        }
        prop_assert_eq!(node.heads(), state.heads());
        prop_assert_eq!(node.update_count(), n as usize);
        prop_assert_eq!(node.held_count(), 0);
    }
}
