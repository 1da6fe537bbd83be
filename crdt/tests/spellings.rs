//! The revocation view under batches and under several spellings of one
//! subject. A signed change may write any key that canonicalizes to a
//! subject, in the right bucket; the view merges every spelling, and a
//! revocation written by one put is taken from the change itself instead of
//! being read back. Whatever the batching and the spellings, the view must
//! equal one rebuilt from scratch.

use std::str::FromStr;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ObjType, ROOT, ReadDoc};
use cedar_policy::EntityUid;
use proptest::prelude::*;
use weft_crdt::schema::revocation_bucket;
use weft_crdt::{CrdtError, PolicyDoc, Request, decide};

/// Spellings of two subjects: the canonical form first, then others that
/// canonicalize to it.
const SPELLINGS: [&str; 5] = [
    r#"User::"alice""#,
    r#" User::"alice""#,
    r#"User::"alice" "#,
    r#"User::"bob""#,
    "\tUser::\"bob\"\n",
];

/// Authors writing raw automerge changes into the genesis document.
struct Authors {
    docs: Vec<Automerge>,
}

impl Authors {
    fn new(n: u8) -> Self {
        let genesis = PolicyDoc::new().save();
        Authors {
            docs: (1..=n)
                .map(|i| {
                    Automerge::load(&genesis)
                        .unwrap()
                        .with_actor(ActorId::from(vec![i; 40]))
                })
                .collect(),
        }
    }

    fn bucket(doc: &Automerge, key: &str) -> automerge::ObjId {
        let (_, revocations) = doc.get(ROOT, "revocations").unwrap().unwrap();
        match doc.get(&revocations, revocation_bucket(key)).unwrap() {
            Some((automerge::Value::Object(ObjType::Map), id)) => id,
            other => panic!("no bucket for {key}: {other:?}"),
        }
    }

    /// A put of `value` under the spelling `key`, by `author` (`None` when
    /// the key already holds exactly that value: automerge writes nothing).
    fn put(&mut self, author: usize, key: &str, value: &str) -> Option<Change> {
        let doc = &mut self.docs[author];
        let bucket = Self::bucket(doc, key);
        let mut tx = doc.transaction();
        tx.put(&bucket, key, value).unwrap();
        tx.commit().0?;
        Some(doc.get_last_local_change().unwrap().clone())
    }

    /// A delete of the spelling `key`, if `author` sees a value there.
    fn delete(&mut self, author: usize, key: &str) -> Option<Change> {
        let doc = &mut self.docs[author];
        let bucket = Self::bucket(doc, key);
        doc.get(&bucket, key).unwrap()?;
        let mut tx = doc.transaction();
        tx.delete(&bucket, key).unwrap();
        tx.commit();
        Some(doc.get_last_local_change().unwrap().clone())
    }

    fn sync(&mut self, from: usize, to: usize) {
        if from != to {
            let mut source = self.docs[from].clone();
            self.docs[to].merge(&mut source).unwrap();
        }
    }
}

/// Applies `batch` together with the changes held for missing dependencies,
/// again until nothing more applies, as a node does.
fn deliver(doc: &mut PolicyDoc, held: &mut Vec<Change>, batch: Vec<Change>) {
    held.extend(batch);
    loop {
        let pending = std::mem::take(held);
        let results = doc.apply_batch(pending.iter().cloned());
        let mut progress = false;
        for (c, r) in pending.into_iter().zip(results) {
            match r {
                Ok(_) => progress = true,
                Err(CrdtError::MissingDeps(_)) => held.push(c),
                Err(e) => panic!("honest change refused: {e}"),
            }
        }
        if !progress || held.is_empty() {
            break;
        }
    }
}

fn revoked(doc: &PolicyDoc) -> Vec<bool> {
    ["alice", "bob", "carol"]
        .iter()
        .map(|u| {
            let uid = |s: &str| EntityUid::from_str(s).unwrap();
            decide(
                doc.view(),
                &Request::new(
                    uid(&format!(r#"User::"{u}""#)),
                    uid(r#"Action::"view""#),
                    uid(r#"Doc::"d""#),
                ),
            )
            .revoked
        })
        .collect()
}

fn assert_matches_rebuild(doc: &PolicyDoc) -> Result<(), TestCaseError> {
    let rebuilt = doc.rebuild().unwrap();
    prop_assert_eq!(rebuilt.view().summary(), doc.view().summary());
    prop_assert_eq!(revoked(&rebuilt), revoked(doc));
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        author: usize,
        key: usize,
        value: u8,
    },
    Delete {
        author: usize,
        key: usize,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..SPELLINGS.len(), 0..4u8).prop_map(|(author, key, value)| Op::Put { author, key, value }),
        2 => (0..3usize, 0..SPELLINGS.len()).prop_map(|(author, key)| Op::Delete { author, key }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Delivered in any order and in batches of any size, puts and deletes
    /// under several spellings leave the incremental view equal to a rebuilt
    /// one after every batch.
    #[test]
    fn batched_spellings_match_a_rebuild(
        ops in prop::collection::vec(op(), 1..28),
        keys in prop::collection::vec(any::<u64>(), 28),
        cuts in prop::collection::vec(1..5usize, 28),
    ) {
        let mut authors = Authors::new(3);
        let mut changes = Vec::new();
        for op in &ops {
            match *op {
                Op::Put { author, key, value } => {
                    let record = if value == 0 {
                        // A record as `weft revoke` writes it.
                        r#"{"reason":"offboarded","after":""}"#.to_string()
                    } else {
                        format!("reason {value}")
                    };
                    changes.extend(authors.put(author, SPELLINGS[key], &record));
                }
                Op::Delete { author, key } => changes.extend(authors.delete(author, SPELLINGS[key])),
                Op::Sync { from, to } => authors.sync(from, to),
            }
        }
        let mut order: Vec<usize> = (0..changes.len()).collect();
        order.sort_by_key(|&i| keys.get(i).copied().unwrap_or(i as u64));
        let mut doc = PolicyDoc::new();
        let mut held = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= order.len() {
                break;
            }
            let end = (at + cut).min(order.len());
            deliver(&mut doc, &mut held, order[at..end].iter().map(|&i| changes[i].clone()).collect());
            assert_matches_rebuild(&doc)?;
            at = end;
        }
        prop_assert!(held.is_empty());
        prop_assert_eq!(doc.change_count(), changes.len() + 1);
    }
}

/// A subject revoked under two spellings, in one batch or one after the
/// other, shows both writes, whichever spelling sorts first.
#[test]
fn two_spellings_are_both_read() {
    for (first, second) in [(0, 1), (1, 0), (0, 2), (3, 4)] {
        let mut authors = Authors::new(2);
        let a = authors.put(0, SPELLINGS[first], "one").unwrap();
        let b = authors.put(1, SPELLINGS[second], "two").unwrap();
        let mut together = PolicyDoc::new();
        for r in together.apply_batch([a.clone(), b.clone()]) {
            r.unwrap();
        }
        let mut apart = PolicyDoc::new();
        apart.apply(a.clone()).unwrap();
        apart.apply(b.clone()).unwrap();
        let mut reversed = PolicyDoc::new();
        reversed.apply(b).unwrap();
        reversed.apply(a).unwrap();
        let summary = together.view().summary();
        assert_eq!(summary.revoked.len(), 1, "{summary:?}");
        let (_, r) = summary.revoked.iter().next().unwrap();
        assert_eq!(r.writes.len(), 2, "{r:?}");
        for doc in [&together, &apart, &reversed] {
            assert_eq!(doc.view().summary(), summary);
            assert_eq!(doc.rebuild().unwrap().view().summary(), summary);
        }
    }
}

/// A put into a key that already held a value (a second revocation of the
/// same subject, concurrent with the first) shows both values, not only the
/// new one.
#[test]
fn a_concurrent_second_put_keeps_the_first() {
    let mut authors = Authors::new(2);
    let a = authors.put(0, SPELLINGS[0], "one").unwrap();
    let b = authors.put(1, SPELLINGS[0], "two").unwrap();
    let mut doc = PolicyDoc::new();
    doc.apply(a).unwrap();
    doc.apply(b).unwrap();
    let summary = doc.view().summary();
    let r = &summary.revoked[SPELLINGS[0]];
    assert_eq!(r.writes.len(), 2, "{r:?}");
    assert_eq!(doc.rebuild().unwrap().view().summary(), summary);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A loaded document reads its revocations in one sorted pass (more than
    /// a few dozen changed subjects); a document fed one change at a time
    /// reads each subject on its own. Among many plain subjects that sort
    /// before, between and after them, the spellings of `alice` and `bob`
    /// read the same both ways.
    #[test]
    fn a_bulk_read_matches_one_subject_at_a_time(
        ops in prop::collection::vec(op(), 1..20),
        fillers in prop::collection::vec((0..3usize, 0..3usize, 0..30u8), 70..110),
    ) {
        let mut authors = Authors::new(3);
        let mut changes = Vec::new();
        for (i, (author, prefix, n)) in fillers.into_iter().enumerate() {
            // Sorting before "alice", between "alice" and "bob", and after
            // "bob"; beyond the 80th, a key again (overwritten by the same
            // author, in conflict when another).
            let key = format!(r#"User::"{}{}""#, ["a", "b", "c"][prefix], i % 80);
            changes.extend(authors.put(author, &key, &format!("filler {n}")));
        }
        for op in &ops {
            match *op {
                Op::Put { author, key, value } => {
                    changes.extend(authors.put(author, SPELLINGS[key], &format!("reason {value}")));
                }
                Op::Delete { author, key } => changes.extend(authors.delete(author, SPELLINGS[key])),
                Op::Sync { from, to } => authors.sync(from, to),
            }
        }
        let mut one_by_one = PolicyDoc::new();
        let mut held = Vec::new();
        for c in &changes {
            deliver(&mut one_by_one, &mut held, vec![c.clone()]);
        }
        prop_assert!(held.is_empty());
        let loaded = PolicyDoc::load(&one_by_one.save()).unwrap();
        prop_assert!(loaded.view().revocation_count() > 64, "the bulk path");
        prop_assert_eq!(loaded.view().summary(), one_by_one.view().summary());
        prop_assert_eq!(revoked(&loaded), revoked(&one_by_one));
    }
}
