//! Author lanes: one actor's changes form a numbered sequence. A replica
//! admits only the next number; a second, different change at a number it
//! already holds is refused as an equivocation, and a number past the next
//! one is refused as malformed, as is a change that names an actor with no
//! change here. Each refusal leaves the state unchanged.

use automerge::{ActorId, Change, ExpandedChange};
use proptest::prelude::*;
use std::collections::BTreeSet;
use weft_crdt::{CrdtError, PolicyDoc};

fn lane(n: u8) -> ActorId {
    ActorId::from(vec![n; 40])
}

fn revoke(doc: &mut PolicyDoc, actor: ActorId, who: &str) -> Change {
    doc.build_revoke(actor, &format!(r#"User::"{who}""#), "r", 1)
        .unwrap()
        .unwrap()
}

#[test]
fn a_lane_continues_with_the_next_number() {
    let mut author = PolicyDoc::new();
    let c1 = revoke(&mut author, lane(1), "a");
    let c2 = revoke(&mut author, lane(1), "b");
    assert_eq!((c1.seq(), c2.seq()), (1, 2));
    assert_eq!(author.lane(&lane(1)), Some((2, c2.hash())));

    let mut replica = PolicyDoc::new();
    // The second alone waits for the first (it depends on it).
    assert!(matches!(
        replica.apply(c2.clone()),
        Err(CrdtError::MissingDeps(_))
    ));
    replica.apply(c1).unwrap();
    replica.apply(c2.clone()).unwrap();
    assert_eq!(replica.lane(&lane(1)), Some((2, c2.hash())));
    assert_eq!(replica.heads(), author.heads());
    // The lane table survives a save and load.
    let loaded = PolicyDoc::load(&replica.save()).unwrap();
    assert_eq!(loaded.lane(&lane(1)), Some((2, c2.hash())));
}

#[test]
fn a_second_change_at_the_same_number_is_an_equivocation() {
    let base = PolicyDoc::new();
    // Two copies of one author's lane sign different changes at number 1.
    let mut left = PolicyDoc::load(&base.save()).unwrap();
    let mut right = PolicyDoc::load(&base.save()).unwrap();
    let a = revoke(&mut left, lane(7), "a");
    let b = revoke(&mut right, lane(7), "b");
    assert_eq!((a.seq(), b.seq()), (1, 1));
    assert_ne!(a.hash(), b.hash());

    for (first, second) in [(&a, &b), (&b, &a)] {
        let mut doc = PolicyDoc::new();
        doc.apply(first.clone()).unwrap();
        let before = doc.save();
        let view_before = doc.view().summary();
        let err = doc.apply(second.clone()).unwrap_err();
        match &err {
            CrdtError::Equivocation {
                seq,
                latest,
                latest_hash,
                ..
            } => {
                assert_eq!((*seq, *latest), (1, 1));
                assert_eq!(*latest_hash, first.hash());
            }
            other => panic!("expected an equivocation, got {other}"),
        }
        assert!(err.to_string().starts_with("equivocation: "), "{err}");
        assert_eq!(doc.save(), before, "a refused change left a trace");
        assert_eq!(doc.view().summary(), view_before);
        // In one batch too: the first is admitted, the second refused.
        let mut doc = PolicyDoc::new();
        let results = doc.apply_batch([first.clone(), second.clone()]);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(CrdtError::Equivocation { .. })));
        assert!(doc.contains(&first.hash()) && !doc.contains(&second.hash()));
        // `summarize` (used for updates under an older trust root) agrees.
        assert!(matches!(
            doc.summarize(second),
            Err(CrdtError::Equivocation { .. })
        ));
    }
}

#[test]
fn a_number_past_the_next_one_is_refused() {
    let mut author = PolicyDoc::new();
    let c1 = revoke(&mut author, lane(3), "a");
    // The same change claiming to be number 3 of its lane: its dependencies
    // are all here, but numbers 1 and 2 of the lane are not.
    let mut expanded = ExpandedChange::from(&c1);
    expanded.seq = 3;
    let forged = Change::from(expanded);
    let mut doc = PolicyDoc::new();
    let before = doc.save();
    let err = doc.apply(forged).unwrap_err();
    assert!(matches!(err, CrdtError::Malformed(_)), "{err}");
    assert!(err.to_string().contains("number 3"), "{err}");
    assert_eq!(doc.save(), before);
    // The honest change still applies afterwards.
    doc.apply(c1).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Two lanes' changes delivered in any order, with duplicates, end in the
    /// same state with the same lane table, whatever the delivery.
    #[test]
    fn lanes_converge_in_any_order(
        who in prop::collection::vec((0..2u8, 0..6u8), 1..16),
        keys in prop::collection::vec(any::<u64>(), 16),
        dups in prop::collection::vec(0..16usize, 0..4),
    ) {
        let mut author = PolicyDoc::new();
        let changes: Vec<Change> = who
            .iter()
            .enumerate()
            .map(|(i, &(l, s))| revoke(&mut author, lane(l + 1), &format!("u{s}-{i}")))
            .collect();
        let mut order: Vec<usize> = (0..changes.len()).collect();
        order.sort_by_key(|&i| keys[i]);
        for d in dups {
            order.push(d % changes.len());
        }
        let mut doc = PolicyDoc::new();
        let mut held: Vec<Change> = Vec::new();
        for i in order {
            held.push(changes[i].clone());
            loop {
                let pending = std::mem::take(&mut held);
                let mut progress = false;
                for (c, r) in pending.iter().zip(doc.apply_batch(pending.clone())) {
                    match r {
                        Ok(_) => progress = true,
                        Err(CrdtError::MissingDeps(_)) => held.push(c.clone()),
                        Err(e) => return Err(TestCaseError::fail(format!("refused: {e}"))),
                    }
                }
                if !progress {
                    break;
                }
            }
        }
        prop_assert!(held.is_empty());
        prop_assert_eq!(doc.heads(), author.heads());
        prop_assert_eq!(doc.view().summary(), author.view().summary());
        for l in [lane(1), lane(2)] {
            prop_assert_eq!(doc.lane(&l), author.lane(&l));
        }
    }
}

/// The change of `actor`'s lane that holds operation `op`: the one with the
/// lowest highest-op counter at or above the op's counter.
fn change_of(changes: &[&Change], op: &weft_crdt::OpRef) -> Option<automerge::ChangeHash> {
    changes
        .iter()
        .filter(|c| hex::encode(c.actor_id().to_bytes()) == op.actor && c.max_op() >= op.counter)
        .min_by_key(|c| c.max_op())
        .map(|c| c.hash())
}

#[test]
fn live_operations_name_the_change_in_a_lane_that_wrote_each_item() {
    let mut doc = PolicyDoc::new();
    let ra = revoke(&mut doc, lane(3), "a");
    let mut content = weft_crdt::BundleContent::default();
    content
        .policies
        .insert("p".into(), "permit(principal, action, resource);".into());
    let b1 = doc
        .build_bundle(lane(3), "web", &content, 1)
        .unwrap()
        .unwrap();
    let rb = revoke(&mut doc, lane(3), "b");
    content
        .policies
        .insert("q".into(), "forbid(principal, action, resource);".into());
    let b2 = doc
        .build_bundle(lane(3), "web", &content, 2)
        .unwrap()
        .unwrap();
    let lane_changes = [&ra, &b1, &rb, &b2];
    // One actor wrote all four: the actor alone cannot tell them apart.
    let view = doc.view();
    for (who, change) in [("a", &ra), ("b", &rb)] {
        let r = view.revocation(&format!(r#"User::"{who}""#)).unwrap();
        assert_eq!(r.actors, vec![hex::encode(lane(3).to_bytes())]);
        let held: Vec<_> = r
            .writes
            .iter()
            .map(|w| change_of(&lane_changes, w))
            .collect();
        assert_eq!(held, vec![Some(change.hash())], "revocation of {who}");
    }
    // The bundle holds operations of both of its changes and of no other.
    let bundle = view.bundles().find(|b| b.name == "web").unwrap();
    let held: BTreeSet<_> = bundle
        .writes
        .iter()
        .map(|w| change_of(&lane_changes, w))
        .collect();
    assert_eq!(held, BTreeSet::from([Some(b1.hash()), Some(b2.hash())]));
    // A replica that received the changes sees the same operations.
    let mut replica = PolicyDoc::new();
    for c in lane_changes {
        replica.apply(c.clone()).unwrap();
    }
    // So does one loaded from a save (the view is read in bulk then).
    let loaded = PolicyDoc::load(&doc.save()).unwrap();
    for other in [replica.view(), loaded.view()] {
        for who in ["a", "b"] {
            let subject = format!(r#"User::"{who}""#);
            assert_eq!(
                other.revocation(&subject).unwrap().writes,
                view.revocation(&subject).unwrap().writes
            );
        }
        let web = other.bundles().find(|b| b.name == "web").unwrap();
        assert_eq!(web.writes, bundle.writes);
    }
}

/// A change names, besides its own actor, the actors whose operations it
/// refers to; each has a change in the causal past of an honest change.
/// automerge 0.12 assumes so and panics while applying a change that names
/// an actor it has never seen (`fuzz/` target `ingest`, a byte flipped in a
/// re-signed update). Such a change is refused, alone or in a batch, and
/// the document is unchanged.
#[test]
fn a_change_naming_an_actor_with_no_change_here_is_refused() {
    let mut author = PolicyDoc::new();
    let first = revoke(&mut author, lane(1), "a");
    let second = revoke(&mut author, lane(2), "b");
    let mut expanded: ExpandedChange = second.decode();
    let stranger = lane(9);
    let op = expanded.operations.first_mut().unwrap();
    op.pred = vec![automerge::legacy::OpId(1, stranger.clone())].into();
    let forged = Change::from(expanded);
    assert!(forged.other_actor_ids().contains(&stranger));

    for batch in [vec![forged.clone()], vec![first.clone(), forged.clone()]] {
        let mut doc = PolicyDoc::new();
        if batch.len() == 1 {
            doc.apply(first.clone()).unwrap();
        }
        let results = doc.apply_checked(batch.clone(), |_, _| Ok::<(), ()>(()));
        let last = results.last().unwrap();
        let Err(weft_crdt::Refusal::State(CrdtError::Malformed(reason))) = last else {
            panic!("the forged change was not refused as malformed: {last:?}");
        };
        assert!(reason.contains(&stranger.to_hex_string()), "{reason}");
        assert_eq!(doc.heads(), vec![first.hash()]);
        assert_eq!(doc.change_count(), 2);
        let loaded = PolicyDoc::load(&doc.save()).unwrap();
        assert_eq!(loaded.heads(), doc.heads());
    }
}

/// automerge 0.12 keeps a document's change times as differences and
/// panics when one overflows (`fuzz/` target `ingest`: a revocation dated
/// near `i64::MIN` on a document whose changes are dated now). A change
/// dated outside `0..=MAX_CHANGE_TIME` is neither written nor applied.
#[test]
fn a_change_dated_out_of_range_is_refused() {
    let now = 1_800_000_000;
    let mut author = PolicyDoc::new();
    let first = author
        .build_revoke(lane(1), r#"User::"a""#, "r", now)
        .unwrap()
        .unwrap();
    for time in [i64::MIN + 4, -1, weft_crdt::MAX_CHANGE_TIME + 1, i64::MAX] {
        let err = author
            .clone()
            .build_revoke(lane(2), r#"User::"b""#, "r", time)
            .unwrap_err();
        assert!(matches!(err, CrdtError::Malformed(_)), "{time}: {err}");

        let second = revoke(&mut author.clone(), lane(2), "b");
        let mut expanded: ExpandedChange = second.decode();
        expanded.time = time;
        expanded.hash = None;
        let forged = Change::from(expanded);
        let mut doc = PolicyDoc::new();
        doc.apply(first.clone()).unwrap();
        let err = doc.apply(forged).unwrap_err();
        assert!(matches!(err, CrdtError::Malformed(_)), "{time}: {err}");
        assert!(err.to_string().contains("dated"), "{err}");
        assert_eq!(doc.heads(), vec![first.hash()]);
    }
}
