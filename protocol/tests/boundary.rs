//! The trust boundary under hostile input: what is refused before anything
//! is decoded, changes automerge cannot decode, changes whose operation
//! counters go backwards, and the bounds on held updates. Real automerge,
//! real signatures.

use std::sync::Arc;

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};
use weft_crdt::{Change, PolicyDoc};
use weft_protocol::boundary;
use weft_protocol::identity::SecretKey;
use weft_protocol::state::{HeldLimits, Ingested, SignedState, Source};
use weft_protocol::trust::{Operator, QuarantineLimits, Role, TrustRoot};
use weft_protocol::update::{SignedUpdate, UpdateError, actor_for};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// alice: policy and revoke; bob: policy. Policy needs 2, revocation 1.
fn root() -> TrustRoot {
    let op = |name: &str, k: u8, roles: &[Role]| Operator {
        name: name.into(),
        key: key(k).public(),
        roles: roles.iter().copied().collect(),
    };
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![key(100).public()],
        root_threshold: 1,
        operators: vec![
            op("alice", 1, &[Role::Policy, Role::Revoke]),
            op("bob", 2, &[Role::Policy]),
        ],
        policy_threshold: 2,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    }
}

/// A revocation of `subject` by `author`, built on `doc` (and applied to
/// it), signed by `signers`.
fn revocation(
    doc: &mut PolicyDoc,
    author: &SecretKey,
    nonce: u64,
    subject: &str,
    signers: &[&SecretKey],
) -> SignedUpdate {
    let change = doc
        .build_revoke(
            actor_for(&author.public(), nonce.to_be_bytes()),
            subject,
            "test",
            0,
        )
        .unwrap()
        .unwrap();
    signed(&change, signers)
}

fn signed(change: &Change, signers: &[&SecretKey]) -> SignedUpdate {
    let mut u = SignedUpdate::new(change, 1);
    for k in signers {
        u.sign(k).unwrap();
    }
    u
}

/// Change bytes with their checksum set to match their contents again.
fn fix_checksum(mut change: Vec<u8>) -> Vec<u8> {
    let hash = Sha256::digest(&change[8..]);
    change[4..8].copy_from_slice(&hash[..4]);
    change
}

/// Variants of `change` in which one literal run `7f 01` (one value, 1) of
/// an actor column names actor 5 instead, which the change's actor table
/// lacks, and that automerge still parses.
fn bad_actor_variants(change: &[u8]) -> Vec<Vec<u8>> {
    (9..change.len() - 1)
        .filter(|&i| change[i] == 0x7f && change[i + 1] == 0x01)
        .map(|i| {
            let mut c = change.to_vec();
            c[i + 1] = 0x05;
            fix_checksum(c)
        })
        .filter(|c| PolicyDoc::parse_change(c).is_ok())
        .collect()
}

/// Whether the state's document saves and loads back to the same heads.
fn saves_and_loads(state: &SignedState) -> bool {
    PolicyDoc::load(&state.doc().save()).is_ok_and(|d| d.heads() == state.heads())
}

/// Finding: an unsigned update whose change names an actor past its actor
/// table reached automerge's decoder, which panicked inside the node task.
/// Unsigned, it is refused before the change is parsed; signed by an
/// operator, the decoder's panic is contained and the change refused. The
/// state is unchanged and takes a revocation afterwards.
#[test]
fn a_change_naming_an_actor_past_its_table_is_refused_signed_or_not() {
    let mut state = SignedState::new(root());
    let alice = key(1);
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let good = revocation(&mut doc, &alice, 1, r#"User::"mallory""#, &[&alice]);
    let variants = bad_actor_variants(&good.change);
    assert!(
        !variants.is_empty(),
        "the revocation has an actor column to corrupt"
    );
    let heads = state.heads();
    for change in variants {
        let unsigned = SignedUpdate {
            change: change.clone(),
            root_version: 1,
            signatures: vec![],
        };
        let err = state.ingest(&unsigned.to_bytes()).unwrap_err();
        assert!(matches!(err, UpdateError::Unsigned), "{err}");

        let mut signed = unsigned.clone();
        signed.sign(&alice).unwrap();
        let err = state.ingest(&signed.to_bytes()).unwrap_err();
        assert!(
            matches!(err, UpdateError::State(weft_crdt::CrdtError::Malformed(_))),
            "{err}"
        );
        assert!(err.to_string().contains("could not decode"), "{err}");
        assert_eq!(state.heads(), heads, "a refused change changes nothing");
        assert_eq!(state.held_count(), 0);
    }
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let ok = revocation(&mut doc, &alice, 2, r#"User::"eve""#, &[&alice]);
    assert!(matches!(
        state.ingest(&ok.to_bytes()).unwrap(),
        Ingested::Applied { .. }
    ));
    assert!(state.view().revocation(r#"User::"eve""#).is_some());
}

/// What is checked before the change is parsed: signatures present, every
/// signer an operator of the named root, enough of them for some change,
/// the root version held, and the chunk's structure.
#[test]
fn the_envelope_and_the_signers_are_checked_before_the_change() {
    let roots = [(1, root())].into_iter().collect();
    let alice = key(1);
    let mut doc = PolicyDoc::new();
    let u = revocation(&mut doc, &alice, 1, r#"User::"x""#, &[&alice]);
    assert!(boundary::check(&u.to_bytes(), &roots).is_ok());

    // Garbage where the change goes: refused for the signers first, never
    // handed to automerge (whose parser panics on some such bytes).
    let mut garbage = u.clone();
    garbage.change = fix_checksum({
        let mut c = u.change.clone();
        for b in &mut c[20..] {
            *b = 0xfe;
        }
        c
    });
    let stripped = SignedUpdate {
        signatures: vec![],
        ..garbage.clone()
    };
    assert!(matches!(
        boundary::check(&stripped.to_bytes(), &roots),
        Err(UpdateError::Unsigned)
    ));
    let mut stranger = stripped.clone();
    stranger.sign(&key(9)).unwrap();
    assert!(matches!(
        boundary::check(&stranger.to_bytes(), &roots),
        Err(UpdateError::UnknownSigner { .. })
    ));
    // bob alone: policy needs two, and bob cannot revoke.
    let mut bob = stripped.clone();
    bob.sign(&key(2)).unwrap();
    let err = boundary::check(&bob.to_bytes(), &roots).unwrap_err();
    assert!(matches!(err, UpdateError::NotEnoughSigners { .. }), "{err}");
    // A signature that does not verify.
    let mut forged = u.clone();
    forged.signatures[0].sig = key(9).sign(weft_protocol::identity::Domain::Update, b"x");
    assert!(matches!(
        boundary::check(&forged.to_bytes(), &roots),
        Err(UpdateError::BadSignature { .. })
    ));
    // A root this node does not hold.
    let mut later = u.clone();
    later.root_version = 2;
    assert!(matches!(
        boundary::check(&later.to_bytes(), &roots),
        Err(UpdateError::RootVersion { named: 2, .. })
    ));
    // A length that is not canonical LEB128, or that lies.
    let mut padded = u.change.clone();
    let last = (9..).find(|&i| padded[i] & 0x80 == 0).unwrap();
    padded[last] |= 0x80;
    padded.insert(last + 1, 0x00);
    let err = weft_protocol::chunk::change_hash(&fix_checksum(padded)).unwrap_err();
    assert!(err.to_string().contains("canonically"), "{err}");
    let mut long = u.change.clone();
    long.push(0);
    let err = weft_protocol::chunk::change_hash(&fix_checksum(long)).unwrap_err();
    assert!(err.to_string().contains("follow"), "{err}");
    // The hash computed at the boundary is automerge's.
    assert_eq!(
        weft_protocol::chunk::change_hash(&u.change).unwrap(),
        PolicyDoc::parse_change(&u.change).unwrap().hash()
    );
}

/// `change` re-encoded with its first operation counter moved by `shift`.
fn with_start_op(change: &Change, start: u64, key: &SecretKey) -> SignedUpdate {
    let mut expanded = PolicyDoc::expand(change).unwrap();
    expanded.start_op = std::num::NonZeroU64::new(start).unwrap();
    expanded.hash = None;
    let moved = Change::from(expanded);
    signed(&moved, &[key])
}

/// Finding: a change whose operation counter went backwards applied, and
/// from then on the saved document no longer loaded (`max_op is lower than
/// start_op`). Counters that go backwards or skip are refused; the state
/// still saves and loads.
#[test]
fn a_change_whose_counters_go_backwards_or_skip_is_refused() {
    let mut state = SignedState::new(root());
    let alice = key(1);
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let first = revocation(&mut doc, &alice, 1, r#"User::"a""#, &[&alice]);
    state.ingest(&first.to_bytes()).unwrap();
    let next = doc
        .build_revoke(
            actor_for(&alice.public(), [0, 0, 0, 0, 0, 0, 0, 2]),
            r#"User::"b""#,
            "t",
            0,
        )
        .unwrap()
        .unwrap();
    let start = next.start_op().get();
    assert!(start > 1);
    for (bad, words) in [
        (1, "backwards"),
        (start - 1, "backwards"),
        (start + 3, "skip"),
    ] {
        let u = with_start_op(&next, bad, &alice);
        let heads = state.heads();
        let err = state.ingest(&u.to_bytes()).unwrap_err();
        assert!(err.to_string().contains(words), "start {bad}: {err}");
        assert_eq!(state.heads(), heads);
        assert!(saves_and_loads(&state));
    }
    let u = with_start_op(&next, start, &alice);
    state.ingest(&u.to_bytes()).unwrap();
    assert!(saves_and_loads(&state));
    assert!(state.view().revocation(r#"User::"b""#).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    /// Random valid changes and changes with their counters moved, from
    /// several authors building on stale copies of the state, in any order:
    /// after every accepted change the state saves and loads back to the
    /// same heads, and a refused one changes nothing.
    #[test]
    fn every_accepted_change_leaves_a_state_that_saves_and_loads(
        steps in prop::collection::vec((0..3usize, 0..6u64, -2i64..3, any::<bool>()), 1..14),
    ) {
        let alice = key(1);
        let mut state = SignedState::new(root());
        // Each author writes on its own copy, synced with the state now and then.
        let mut copies: Vec<PolicyDoc> = (0..3).map(|_| PolicyDoc::new()).collect();
        for (n, (who, subject, shift, sync)) in steps.into_iter().enumerate() {
            if sync {
                copies[who] = PolicyDoc::load(&state.doc().save()).unwrap();
            }
            let change = copies[who]
                .build_revoke(
                    actor_for(&alice.public(), (n as u64).to_be_bytes()),
                    &format!(r#"User::"u{subject}""#),
                    "t",
                    0,
                )
                .unwrap()
                .unwrap();
            let start = (change.start_op().get() as i64 + shift).max(1) as u64;
            let u = with_start_op(&change, start, &alice);
            let heads = state.heads();
            match state.ingest(&u.to_bytes()) {
                Ok(Ingested::Applied { .. }) => {
                    prop_assert_eq!(shift, 0, "a moved counter was accepted");
                    prop_assert!(saves_and_loads(&state));
                }
                Ok(other) => prop_assert!(false, "unexpected {:?}", other),
                Err(e) => {
                    prop_assert!(shift != 0, "a valid change was refused: {}", e);
                    prop_assert_eq!(state.heads(), heads);
                    // The author's copy holds the change as it built it.
                    copies[who] = PolicyDoc::load(&state.doc().save()).unwrap();
                }
            }
        }
        prop_assert!(saves_and_loads(&state));
    }
}

/// Finding: an update with no signature, depending on a change nobody has,
/// was held, stored and forwarded. It is refused before it can be held.
#[test]
fn an_unsigned_update_with_missing_dependencies_is_refused_not_held() {
    let mut state = SignedState::new(root());
    let alice = key(1);
    let mut doc = PolicyDoc::new();
    let _hidden = revocation(&mut doc, &alice, 1, r#"User::"a""#, &[&alice]);
    let mut later = revocation(&mut doc, &alice, 2, r#"User::"b""#, &[&alice]);
    // Signed, it waits for its dependency.
    assert!(matches!(
        state.clone().ingest(&later.to_bytes()).unwrap(),
        Ingested::Held { .. }
    ));
    later.signatures.clear();
    let err = state.ingest(&later.to_bytes()).unwrap_err();
    assert!(matches!(err, UpdateError::Unsigned), "{err}");
    assert!(err.is_misbehaviour(), "a peer that forwards it is at fault");
    assert_eq!(state.held_count(), 0);
    assert_eq!(state.held_bytes(), 0);
}

/// Held updates: `n` updates each waiting for a change the state lacks, of
/// about `pad` bytes each.
fn waiting_updates(n: u64, pad: usize) -> Vec<Arc<[u8]>> {
    let alice = key(1);
    (0..n)
        .map(|i| {
            let mut doc = PolicyDoc::new();
            let _missing = revocation(
                &mut doc,
                &alice,
                1000 + i,
                &format!(r#"User::"m{i}""#),
                &[&alice],
            );
            let reason = "x".repeat(pad);
            let change = doc
                .build_revoke(
                    actor_for(&alice.public(), (2000 + i).to_be_bytes()),
                    &format!(r#"User::"w{i}""#),
                    &reason,
                    0,
                )
                .unwrap()
                .unwrap();
            Arc::from(signed(&change, &[&alice]).to_bytes())
        })
        .collect()
}

/// Held updates are bounded in bytes, in all and per source: past a bound
/// the oldest (of that source, for its own bound) go, and every one that
/// goes is reported so that the driver forgets it.
#[test]
fn held_updates_are_bounded_in_bytes_in_all_and_per_source() {
    let updates = waiting_updates(12, 1000);
    let size = updates[0].len();
    let limits = HeldLimits {
        max_updates: 100,
        max_bytes: 7 * size + size / 2,
        max_bytes_per_source: 3 * size + size / 2,
        ttl_ms: 60_000,
    };
    let mut state = SignedState::new(root()).with_held_limits(limits);
    let peer = |n: u8| Source::Peer(weft_protocol::identity::NodeId::new(key(50 + n).public()));
    // One peer sends six: only its three newest stay.
    for u in &updates[..6] {
        let r = state.ingest_from(vec![u.clone()], peer(0)).pop().unwrap();
        assert!(matches!(r, Ok(Ingested::Held { .. })));
    }
    assert_eq!(state.held_count(), 3);
    assert!(state.held_bytes() <= limits.max_bytes_per_source);
    assert_eq!(state.take_dropped().len(), 3);
    // Two more sources: the total bound holds, the oldest going first.
    for (i, u) in updates[6..].iter().enumerate() {
        state.ingest_from(vec![u.clone()], peer(1 + (i % 2) as u8));
    }
    assert!(state.held_bytes() <= limits.max_bytes);
    assert_eq!(state.held_count(), 7);
    let dropped = state.take_dropped();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    // What held counts is what it holds.
    assert!(state.held_bytes() >= state.held_count() * (size - 64));
}

/// Held updates expire when the clock passes their time bound, and are
/// reported so that the driver forgets them (from memory and store).
#[test]
fn held_updates_expire_after_their_time_bound() {
    let updates = waiting_updates(3, 10);
    let limits = HeldLimits {
        ttl_ms: 600_000,
        ..HeldLimits::default()
    };
    let mut state = SignedState::new(root()).with_held_limits(limits);
    state.advance(1_000_000);
    state.ingest(&updates[0]).unwrap();
    state.advance(1_300_000);
    state.ingest(&updates[1]).unwrap();
    assert_eq!(
        state.advance(1_600_001),
        1,
        "the first is over ten minutes old"
    );
    assert_eq!(state.held_count(), 1);
    assert_eq!(state.take_dropped().len(), 1);
    // The clock never goes back.
    state.advance(0);
    assert_eq!(state.clock_ms(), 1_600_001);
    assert_eq!(state.advance(1_900_001), 1);
    assert_eq!(state.held_count(), 0);
    assert_eq!(state.held_bytes(), 0);
}

/// Updates held before the clock is first set (a node loading its store)
/// are dated at the first advance, not taken as held since 1970.
#[test]
fn updates_held_before_the_clock_is_set_are_dated_when_it_is() {
    let updates = waiting_updates(1, 10);
    let mut state = SignedState::new(root());
    state.ingest(&updates[0]).unwrap();
    assert_eq!(state.advance(1_800_000_000_000), 0);
    assert_eq!(state.held_count(), 1);
    assert_eq!(state.advance(1_800_000_000_000 + 600_001), 1);
}
