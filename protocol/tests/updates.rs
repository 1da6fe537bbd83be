//! Signed updates: authorization rules, refusals with their reasons, and the
//! authenticity property (a refused update never changes the state).

use std::collections::BTreeSet;

use proptest::prelude::*;
use weft_crdt::{BundleContent, PolicyDoc};
use weft_protocol::boundary::VerifiedUpdate;
use weft_protocol::identity::{PublicKey, SecretKey};
use weft_protocol::state::{Ingested, SignedState};
use weft_protocol::trust::{Operator, QuarantineLimits, Role, TrustRoot};
use weft_protocol::update::{SignedUpdate, UpdateError, actor_for};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn op(name: &str, k: &SecretKey, roles: &[Role]) -> Operator {
    Operator {
        name: name.into(),
        key: k.public(),
        roles: roles.iter().copied().collect(),
    }
}

/// alice: policy+revoke, bob: policy, carol: revoke, dave: admit.
/// Policy needs 2 signers, revocation 1.
fn root_v(version: u64, accepted: Vec<[u8; 32]>, with_bob: bool) -> TrustRoot {
    let mut operators = vec![
        op("alice", &key(1), &[Role::Policy, Role::Revoke]),
        op("carol", &key(3), &[Role::Revoke]),
        op("dave", &key(4), &[Role::Admit]),
        op("erin", &key(5), &[Role::Policy]),
    ];
    if with_bob {
        operators.push(op("bob", &key(2), &[Role::Policy]));
    }
    operators.sort_by(|a, b| a.name.cmp(&b.name));
    TrustRoot {
        version,
        expires: u64::MAX,
        root_keys: vec![key(100).public()],
        root_threshold: 1,
        operators,
        policy_threshold: 2,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: accepted,
    }
}

fn root() -> TrustRoot {
    root_v(1, vec![], true)
}

fn nonce(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn bundle_update(
    state: &SignedState,
    author: &SecretKey,
    signers: &[&SecretKey],
    n: u64,
) -> Vec<u8> {
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let mut content = BundleContent::default();
    content.policies.insert(
        "p".into(),
        format!(r#"permit(principal == User::"u{n}", action, resource);"#),
    );
    let change = doc
        .build_bundle(actor_for(&author.public(), nonce(n)), "main", &content, 0)
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&change, state.root().version);
    for s in signers {
        u.sign(s).unwrap();
    }
    u.to_bytes()
}

fn revoke_update(
    state: &SignedState,
    author: &SecretKey,
    signers: &[&SecretKey],
    subject: &str,
    n: u64,
) -> Vec<u8> {
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let change = doc
        .build_revoke(actor_for(&author.public(), nonce(n)), subject, "test", 0)
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&change, state.root().version);
    for s in signers {
        u.sign(s).unwrap();
    }
    u.to_bytes()
}

fn refused(state: &mut SignedState, bytes: &[u8]) -> UpdateError {
    let before = state.doc().save();
    let err = state.ingest(bytes).expect_err("update should be refused");
    assert_eq!(
        state.doc().save(),
        before,
        "a refused update changed the state"
    );
    err
}

#[test]
fn threshold_met_applies_and_duplicate_is_noop() {
    let mut s = SignedState::new(root());
    let u = bundle_update(&s, &key(1), &[&key(1), &key(2)], 1);
    assert!(matches!(s.ingest(&u).unwrap(), Ingested::Applied { .. }));
    assert!(matches!(s.ingest(&u).unwrap(), Ingested::Duplicate(_)));
    assert_eq!(s.update_count(), 1);
}

#[test]
fn too_few_signers_and_same_signer_counted_once() {
    let mut s = SignedState::new(root());
    let one = bundle_update(&s, &key(1), &[&key(1)], 1);
    let e = refused(&mut s, &one);
    assert!(
        matches!(
            e,
            UpdateError::TooFewSigners {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("needs 2"), "{e}");
    // The same key signing twice still counts once (sign() is idempotent, so
    // forge a duplicate entry by hand).
    let mut u = SignedUpdate::from_bytes(&one).unwrap();
    u.signatures.push(u.signatures[0].clone());
    let e = refused(&mut s, &u.to_bytes());
    assert!(
        matches!(e, UpdateError::TooFewSigners { have: 1, .. }),
        "{e}"
    );
}

#[test]
fn wrong_role_unknown_signer_and_unbound_actor() {
    let mut s = SignedState::new(root());
    // carol has only revoke: she cannot co-sign policy.
    let u = bundle_update(&s, &key(1), &[&key(1), &key(3)], 1);
    let e = refused(&mut s, &u);
    assert!(
        matches!(&e, UpdateError::WrongRole { name, role: Role::Policy, .. } if name == "carol"),
        "{e}"
    );
    // A stranger's signature.
    let u = bundle_update(&s, &key(1), &[&key(1), &key(2), &key(77)], 2);
    let e = refused(&mut s, &u);
    assert!(matches!(e, UpdateError::UnknownSigner { .. }), "{e}");
    // The author (actor) is bob but only alice and erin signed.
    let u = bundle_update(&s, &key(2), &[&key(1), &key(5)], 3);
    let e = refused(&mut s, &u);
    assert!(matches!(e, UpdateError::ActorNotSigner { .. }), "{e}");
    // A bundle touching revocations needs the revoke role: carol alone can revoke.
    let u = revoke_update(&s, &key(3), &[&key(3)], r#"User::"x""#, 4);
    assert!(matches!(s.ingest(&u).unwrap(), Ingested::Applied { .. }));
    // ... but bob (policy only) cannot: alone, he could authorize no
    // change at all (policy needs two), so the trust boundary refuses the
    // update before its change is read.
    let u = revoke_update(&s, &key(2), &[&key(2)], r#"User::"y""#, 5);
    let e = refused(&mut s, &u);
    assert!(
        matches!(
            e,
            UpdateError::NotEnoughSigners {
                policy: 1,
                need_policy: 2,
                revoke: 0,
                need_revoke: 1,
            }
        ),
        "{e}"
    );
    // With erin's policy signature the change is read, and its path needs
    // the revoke role that neither has.
    let u = revoke_update(&s, &key(2), &[&key(2), &key(5)], r#"User::"y""#, 6);
    let e = refused(&mut s, &u);
    assert!(
        matches!(
            e,
            UpdateError::WrongRole {
                role: Role::Revoke,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn tampered_and_forged_updates_are_refused() {
    let mut s = SignedState::new(root());
    let good = bundle_update(&s, &key(1), &[&key(1), &key(2)], 1);
    let u = SignedUpdate::from_bytes(&good).unwrap();
    // A signature over a different change.
    let other = bundle_update(&s, &key(1), &[&key(1), &key(2)], 2);
    let mut mixed = SignedUpdate::from_bytes(&other).unwrap();
    mixed.change = u.change.clone();
    let e = refused(&mut s, &mixed.to_bytes());
    assert!(matches!(e, UpdateError::BadSignature { .. }), "{e}");
    // Claiming a root version this node does not hold is refused before
    // any signature is checked (and would break the signatures too).
    let mut v = u.clone();
    v.root_version = 2;
    assert!(matches!(
        refused(&mut s, &v.to_bytes()),
        UpdateError::RootVersion { named: 2, .. }
    ));
    assert!(matches!(
        weft_protocol::boundary::decode_verified(&v.to_bytes()),
        Err(UpdateError::BadSignature { .. })
    ));
    // Garbage, truncation, oversize.
    assert!(matches!(
        refused(&mut s, b"hello"),
        UpdateError::Malformed(_)
    ));
    assert!(matches!(
        refused(&mut s, &good[..good.len() / 2]),
        UpdateError::Malformed(_)
    ));
    let big = vec![0u8; weft_protocol::update::MAX_UPDATE_BYTES + 1];
    let e = refused(&mut s, &big);
    assert!(e.to_string().contains("limit"), "{e}");
    // Still fine afterwards.
    assert!(matches!(s.ingest(&good).unwrap(), Ingested::Applied { .. }));
}

/// A bundle update, and a revocation of `User::"x"` that depends on it.
fn update_and_dependent() -> (Vec<u8>, Vec<u8>) {
    let mut author = SignedState::new(root());
    let u1 = bundle_update(&author, &key(1), &[&key(1), &key(2)], 1);
    author.ingest(&u1).unwrap();
    let u2 = revoke_update(&author, &key(3), &[&key(3)], r#"User::"x""#, 2);
    (u1, u2)
}

#[test]
fn an_equivocation_is_refused_without_blaming_the_relay_and_not_fetched_again() {
    let mut state = SignedState::new(root());
    let alice = key(1);
    // Two different revocations signed by alice in one lane, at number 1.
    let first = revoke_update(&state, &alice, &[&alice], r#"User::"x""#, 9);
    let second = revoke_update(&state, &alice, &[&alice], r#"User::"y""#, 9);
    assert!(matches!(
        state.ingest(&first).unwrap(),
        Ingested::Applied { .. }
    ));
    let err = refused(&mut state, &second);
    assert_eq!(err.label(), "equivocation");
    assert!(!err.is_misbehaviour(), "the relaying peer is not at fault");
    assert!(err.to_string().contains("equivocation"), "{err}");
    // Sync does not fetch it again, and it never applies.
    let hash = weft_protocol::boundary::decode_verified(&second)
        .unwrap()
        .hash;
    assert!(state.knows(&hash));
    assert!(!state.doc().contains(&hash));
    assert_eq!(refused(&mut state, &second).label(), "equivocation");
    // The lane goes on with the next number.
    let next = revoke_update(&state, &alice, &[&alice], r#"User::"z""#, 9);
    assert!(matches!(
        state.ingest(&next).unwrap(),
        Ingested::Applied { .. }
    ));
}

#[test]
fn missing_deps_are_held_then_released() {
    let (u1, u2) = update_and_dependent();
    let mut s = SignedState::new(root());
    assert!(matches!(s.ingest(&u2).unwrap(), Ingested::Held { .. }));
    assert_eq!(s.update_count(), 0);
    assert_eq!(s.wanted().len(), 1);
    match s.ingest(&u1).unwrap() {
        Ingested::Applied { released, .. } => assert_eq!(released.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.update_count(), 2);
    assert!(s.view().revocation(r#"User::"x""#).is_some());
}

/// A held update that arrives again in the same batch as its dependency is
/// applied once, reported once, and no longer held.
#[test]
fn held_update_arriving_with_its_dependency_is_applied_once() {
    let (u1, u2) = update_and_dependent();
    let mut s = SignedState::new(root());
    assert!(matches!(s.ingest(&u2).unwrap(), Ingested::Held { .. }));
    let results = s.ingest_batch(vec![u1.clone().into(), u2.clone().into()]);
    let mut applied = 0;
    for r in &results {
        match r.as_ref().unwrap() {
            Ingested::Applied { released, .. } => {
                applied += 1;
                assert!(released.is_empty(), "released again: {released:?}");
            }
            other => panic!("expected applied, got {other:?}"),
        }
    }
    assert_eq!(applied, 2);
    assert_eq!(s.held_count(), 0);
    assert_eq!(s.update_count(), 2);
    assert!(s.view().revocation(r#"User::"x""#).is_some());
}

#[test]
fn removed_operator_is_kept_only_where_the_rotation_vouched() {
    // Under root 1, bob co-signs two updates. Root 2 removes bob and records
    // the heads as of the first update only.
    let mut s1 = SignedState::new(root());
    let before = bundle_update(&s1, &key(1), &[&key(1), &key(2)], 1);
    s1.ingest(&before).unwrap();
    let vouched: Vec<[u8; 32]> = s1.heads().iter().map(|h| h.0).collect();
    let after = bundle_update(&s1, &key(2), &[&key(2), &key(5)], 2);

    let root2 = root_v(2, vouched, false);
    // Order A: learn the rotation first, then the updates.
    let mut a = SignedState::new(root());
    a.adopt_root(root2.clone());
    a.ingest(&before).unwrap();
    let e = a.ingest(&after).unwrap_err();
    assert!(
        matches!(
            e,
            UpdateError::RootVersion {
                named: 1,
                current: 2
            }
        ),
        "{e}"
    );
    // Order B: both updates first, then the rotation.
    let mut b = SignedState::new(root());
    b.ingest(&before).unwrap();
    b.ingest(&after).unwrap();
    let dropped = b.adopt_root(root2);
    assert_eq!(dropped.len(), 1);
    assert_eq!(a.heads(), b.heads());
    assert_eq!(a.view().summary(), b.view().summary());
}

fn setup_for_fuzz() -> (SignedState, Vec<Vec<u8>>) {
    let mut s = SignedState::new(root());
    let base = bundle_update(&s, &key(1), &[&key(1), &key(2)], 1);
    s.ingest(&base).unwrap();
    let candidates = vec![
        bundle_update(&s, &key(1), &[&key(1), &key(5)], 2),
        revoke_update(&s, &key(3), &[&key(3)], r#"User::"alice""#, 3),
        revoke_update(&s, &key(1), &[&key(1)], r#"Group::"g""#, 4),
    ];
    (s, candidates)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any single-byte change to a valid update is refused and leaves the
    /// state exactly as it was.
    #[test]
    fn tampering_never_changes_state(which in 0usize..3, pos in any::<usize>(), flip in 1u8..=255) {
        let (mut s, candidates) = setup_for_fuzz();
        let mut bytes = candidates[which].clone();
        let i = pos % bytes.len();
        bytes[i] ^= flip;
        let before = s.doc().save();
        let count = s.update_count();
        prop_assert!(s.ingest(&bytes).is_err());
        prop_assert_eq!(s.doc().save(), before);
        prop_assert_eq!(s.update_count(), count);
        // And the untouched update still applies.
        prop_assert!(s.ingest(&candidates[which]).is_ok());
    }

    /// Updates signed by random subsets of keys apply exactly when the rules
    /// say so; refused ones leave no trace.
    #[test]
    fn unauthorized_never_changes_state(signer_mask in 0u8..64, author in 0usize..6, kind in 0usize..2) {
        let keys: Vec<SecretKey> = [1u8, 2, 3, 4, 5, 77].iter().map(|&n| key(n)).collect();
        let mut s = SignedState::new(root());
        let signers: Vec<&SecretKey> = keys.iter().enumerate()
            .filter(|(i, _)| signer_mask & (1 << i) != 0).map(|(_, k)| k).collect();
        let bytes = if kind == 0 {
            bundle_update(&s, &keys[author], &signers, 9)
        } else {
            revoke_update(&s, &keys[author], &signers, r#"User::"z""#, 9)
        };
        let set: BTreeSet<PublicKey> = signers.iter().map(|k| k.public()).collect();
        let names = |ns: &[u8]| ns.iter().filter(|n| set.contains(&key(**n).public())).count();
        let stranger = set.contains(&key(77).public());
        let author_signed = set.contains(&keys[author].public());
        let expected = !stranger && author_signed && if kind == 0 {
            names(&[1, 2, 5]) >= 2
        } else {
            names(&[1, 3]) >= 1
        };
        let before = s.doc().save();
        let result = s.ingest(&bytes);
        prop_assert_eq!(result.is_ok(), expected, "{:?}", result);
        if !expected {
            prop_assert_eq!(s.doc().save(), before);
        }
    }
}

#[test]
fn verifying_many_on_several_threads_gives_each_its_own_verdict_in_order() {
    each_gets_its_own_verdict(weft_protocol::boundary::decode_verified_all);
}

#[test]
fn verifying_a_store_in_batches_gives_each_its_own_verdict_in_order() {
    // As a node's start checks its snapshot's records (`SignedState::restore`).
    each_gets_its_own_verdict(|items| {
        use weft_protocol::boundary::{VERIFY_BATCH, decode_batch_verified};
        items
            .chunks(VERIFY_BATCH)
            .flat_map(decode_batch_verified)
            .collect()
    });
}

/// A verdict for each of many stored updates, in order.
type VerifyAll = fn(&[Vec<u8>]) -> Vec<Result<VerifiedUpdate, UpdateError>>;

fn each_gets_its_own_verdict(verify_all: VerifyAll) {
    use weft_protocol::boundary::decode_verified;
    let op = key(1);
    let mut doc = PolicyDoc::new();
    let mut items: Vec<Vec<u8>> = (0..700u64)
        .map(|i| {
            let change = doc
                .build_revoke(
                    actor_for(&op.public(), nonce(0)),
                    &format!(r#"User::"u{i}""#),
                    "test",
                    0,
                )
                .unwrap()
                .unwrap();
            let mut u = SignedUpdate::new(&change, 1);
            u.sign(&op).unwrap();
            u.to_bytes()
        })
        .collect();
    // A forged signature, garbage and a truncated update, spread over the
    // chunks the threads take.
    let last = items[3].len() - 1;
    items[3][last] ^= 1;
    items[350] = b"not an update".to_vec();
    let half = items[699].len() / 2;
    items[699].truncate(half);
    // A valid signature, but another update's.
    let sig_at = items[500].len() - 64;
    let other = items[501][sig_at..].to_vec();
    items[500][sig_at..].copy_from_slice(&other);
    let all = verify_all(&items);
    assert_eq!(all.len(), items.len());
    for (i, (got, bytes)) in all.iter().zip(&items).enumerate() {
        let alone = decode_verified(bytes);
        match (got, &alone) {
            (Ok(a), Ok(b)) => assert_eq!(a.hash, b.hash, "item {i}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "item {i}"),
            _ => panic!(
                "item {i}: {:?} alone, {:?} in the batch",
                alone.is_ok(),
                got.is_ok()
            ),
        }
        assert_eq!(got.is_err(), [3, 350, 500, 699].contains(&i), "item {i}");
    }
}

/// Updates with the same signers share one set of keys, and each set is
/// still exactly its update's distinct signers, in whatever order and
/// however often they signed.
#[test]
fn equal_signer_sets_are_shared_and_exact() {
    use std::sync::Arc;
    use weft_protocol::update::shared_signers;
    let (a, b, c) = (key(1).public(), key(2).public(), key(3).public());
    let ab = shared_signers([a, b]);
    let ba = shared_signers([b, a, b]);
    assert!(Arc::ptr_eq(&ab, &ba));
    assert_eq!(*ab, BTreeSet::from([a, b]));
    let abc = shared_signers([c, a, b]);
    assert!(!Arc::ptr_eq(&ab, &abc));
    assert_eq!(*abc, BTreeSet::from([a, b, c]));
    assert!(shared_signers([]).is_empty());
    // Past the table's bound it starts again; sets stay exact.
    for n in 0..200u8 {
        let k = key(n.wrapping_add(10)).public();
        assert_eq!(*shared_signers([k, a]), BTreeSet::from([k, a]));
    }
    assert_eq!(*shared_signers([b, a]), BTreeSet::from([a, b]));
}

/// Signed updates under their hashes, as a node's store keeps them.
type Records = Vec<(weft_crdt::ChangeHash, std::sync::Arc<[u8]>)>;

/// A state of `n` revocations by carol and two bundle updates by alice and
/// bob, ingested one at a time, and the signed bytes of each, as a node's
/// store keeps them.
fn many_updates(n: u64) -> (SignedState, Records) {
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let mut state = SignedState::new(root());
    for n in 0..2 {
        let b = bundle_update(&state, &alice, &[&alice, &bob], n);
        state.ingest(&b).unwrap();
    }
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    for i in 0..n {
        let change = doc
            .build_revoke(
                actor_for(&carol.public(), nonce(7)),
                &format!(r#"User::"u{i}""#),
                "test",
                0,
            )
            .unwrap()
            .unwrap();
        let mut u = SignedUpdate::new(&change, 1);
        u.sign(&carol).unwrap();
        state.ingest(&u.to_bytes()).unwrap();
    }
    let covered = state
        .update_hashes()
        .map(|h| (*h, state.update_bytes(h).unwrap()))
        .collect();
    (state, covered)
}

/// Restores `covered` with the document of `state`. `late`: on four
/// threads, the document handed over only after a while, so that signatures
/// are checked before it is in and their updates judged at the end;
/// otherwise on one thread, which loads the document first and judges each
/// update right after its signatures.
fn restore(
    state: &SignedState,
    root: TrustRoot,
    covered: &[(weft_crdt::ChangeHash, std::sync::Arc<[u8]>)],
    late: bool,
) -> Result<SignedState, weft_protocol::state::RestoreError> {
    let saved = state.doc().save();
    SignedState::restore_on(
        if late { 4 } else { 1 },
        root,
        || {
            if late {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            PolicyDoc::load(&saved).map_err(|e| e.to_string())
        },
        covered,
    )
}

#[test]
fn a_snapshot_restores_from_its_records_whenever_its_document_comes() {
    use weft_protocol::state::RestoreError;
    // Several groups of signatures, checked in batches.
    let (state, covered) = many_updates(140);
    assert_eq!(covered.len(), 142);
    for late in [false, true] {
        let restored = restore(&state, root(), &covered, late).unwrap();
        assert_eq!(
            restored.view().summary(),
            state.view().summary(),
            "late: {late}"
        );
        assert_eq!(restored.update_count(), state.update_count());
        for (h, bytes) in &covered {
            assert_eq!(restored.update_bytes(h).as_deref(), Some(&bytes[..]));
        }

        // Under a root where bundles need three signers, the bundle
        // updates (two signers each) no longer pass.
        let mut stricter = root();
        stricter.policy_threshold = 3;
        let err = restore(&state, stricter, &covered, late).err().unwrap();
        assert!(
            matches!(
                err,
                RestoreError::Refused(UpdateError::TooFewSigners { .. })
            ),
            "{err}"
        );

        // A record under another update's hash is damaged.
        let mut swapped = covered.clone();
        let other = swapped[130].1.clone();
        swapped[100].1 = other;
        let err = restore(&state, root(), &swapped, late).err().unwrap();
        assert!(
            matches!(err, RestoreError::Damaged { hash, .. } if hash == covered[100].0),
            "{err}"
        );

        // A record whose signature was altered does not verify.
        let mut forged = covered.clone();
        let mut bytes = forged[135].1.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        forged[135].1 = bytes.into();
        let err = restore(&state, root(), &forged, late).err().unwrap();
        assert!(
            matches!(err, RestoreError::Unverified { hash, .. } if hash == covered[135].0),
            "{err}"
        );

        // One update fewer than the document holds, or one it lacks.
        let err = restore(&state, root(), &covered[1..], late).err().unwrap();
        assert!(
            matches!(err, RestoreError::Refused(UpdateError::Malformed(_))),
            "{err}"
        );
        let extra = revoke_update(&state, &key(3), &[&key(3)], r#"User::"elsewhere""#, 999);
        let hash = weft_protocol::boundary::decode_verified(&extra)
            .unwrap()
            .hash;
        let mut more = covered.clone();
        more.push((hash, extra.into()));
        let err = restore(&state, root(), &more, late).err().unwrap();
        assert!(
            matches!(err, RestoreError::Refused(UpdateError::Malformed(_))),
            "{err}"
        );
    }

    // A document that does not load refuses the snapshot.
    let err = SignedState::restore(root(), || Err("broken".into()), &covered)
        .err()
        .unwrap();
    assert!(
        matches!(err, RestoreError::Load(ref e) if e == "broken"),
        "{err}"
    );
}
