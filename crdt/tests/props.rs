//! Property tests over random histories by several operators: convergence,
//! revoke-wins, and the incremental view against a rebuild.

use std::collections::BTreeMap;
use std::str::FromStr;

use automerge::{ActorId, Change, ChangeHash};
use cedar_policy::EntityUid;
use proptest::prelude::*;
use weft_crdt::{BundleContent, CrdtError, PolicyDoc, Request, decide};

const SUBJECTS: [&str; 4] = [
    r#"User::"alice""#,
    r#"User::"bob""#,
    r#"Group::"staff""#,
    r#"Doc::"d1""#,
];
const PRINCIPALS: [&str; 5] = [
    r#"User::"alice""#,
    r#"User::"bob""#,
    r#"User::"carol""#,
    r#"Robot::"r""#,
    r#"Group::"staff""#,
];
const RESOURCES: [&str; 2] = [r#"Doc::"d1""#, r#"Doc::"d2""#];
const ACTIONS: [&str; 2] = [r#"Action::"view""#, r#"Action::"edit""#];

/// A palette of bundle contents: all valid alone, some invalid when merged.
fn palette(i: usize) -> BundleContent {
    let mut b = BundleContent::default();
    let mut p = |k: &str, v: &str| {
        b.policies.insert(k.into(), v.into());
    };
    match i % 6 {
        0 => p(
            "p1",
            r#"permit(principal == User::"alice", action, resource);"#,
        ),
        1 => {
            p(
                "p1",
                r#"permit(principal in Group::"staff", action == Action::"view", resource);"#,
            );
            p(
                "f1",
                r#"forbid(principal == User::"carol", action, resource);"#,
            );
        }
        2 => {
            p(
                "p1",
                r#"permit(principal == User::"alice", action == Action::"view", resource);"#,
            );
            b.schema = Some(
                "entity Group; entity User in [Group]; entity Doc; action view, edit appliesTo { principal: User, resource: Doc };"
                    .into(),
            );
        }
        3 => {
            p(
                "p3",
                r#"permit(principal == Robot::"r", action, resource);"#,
            );
            p(
                "p1",
                r#"permit(principal, action == Action::"edit", resource in Doc::"d1");"#,
            );
        }
        4 => {
            p(
                "g",
                r#"forbid(principal, action, resource) unless { context has ok };"#,
            );
            p("p1", r#"permit(principal, action, resource);"#);
        }
        _ => {}
    }
    if i % 2 == 1 {
        b.entities = Some(
            r#"[{"uid":{"type":"User","id":"bob"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},
                {"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]}]"#
                .into(),
        );
    }
    b
}

#[derive(Clone, Debug)]
enum Op {
    Bundle {
        author: usize,
        name: usize,
        content: usize,
    },
    Revoke {
        author: usize,
        subject: usize,
    },
    Reinstate {
        author: usize,
        subject: usize,
    },
    /// `to` learns everything `from` has.
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..2usize, 0..6usize).prop_map(|(author, name, content)| Op::Bundle { author, name, content }),
        3 => (0..3usize, 0..4usize).prop_map(|(author, subject)| Op::Revoke { author, subject }),
        2 => (0..3usize, 0..4usize).prop_map(|(author, subject)| Op::Reinstate { author, subject }),
        3 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

struct History {
    changes: Vec<Change>,
    /// Subjects each change revoked, for the revoke-wins check.
    revokes: Vec<(ChangeHash, String)>,
}

/// Runs the operations on three authoring replicas and returns every change.
/// With `lanes`, each author writes every change with one actor (as the CLI
/// does with its lane file); otherwise every change has a fresh actor.
fn run(ops: &[Op], lanes: bool) -> History {
    let mut authors: Vec<PolicyDoc> = (0..3).map(|_| PolicyDoc::new()).collect();
    let mut changes = Vec::new();
    let mut revokes = Vec::new();
    let mut n = 0u32;
    let mut actor_for = |author: usize| {
        n += 1;
        let mut v = vec![0u8; 40];
        if lanes {
            v[39] = 1 + author as u8;
        } else {
            v[..4].copy_from_slice(&n.to_be_bytes());
        }
        ActorId::from(v)
    };
    for (t, op) in ops.iter().enumerate() {
        let t = t as i64;
        match *op {
            Op::Bundle {
                author,
                name,
                content,
            } => {
                let name = ["main", "extra"][name];
                if let Some(c) = authors[author]
                    .build_bundle(actor_for(author), name, &palette(content), t)
                    .unwrap()
                {
                    changes.push(c);
                }
            }
            Op::Revoke { author, subject } => {
                if let Some(c) = authors[author]
                    .build_revoke(actor_for(author), SUBJECTS[subject], "r", t)
                    .unwrap()
                {
                    revokes.push((c.hash(), SUBJECTS[subject].to_string()));
                    changes.push(c);
                }
            }
            Op::Reinstate { author, subject } => {
                if let Ok(Some(c)) =
                    authors[author].build_reinstate(actor_for(author), SUBJECTS[subject], t)
                {
                    changes.push(c);
                }
            }
            Op::Sync { from, to } if from != to => {
                let missing = authors[from].changes_since(&authors[to].heads());
                for r in authors[to].apply_batch(missing) {
                    r.unwrap();
                }
            }
            Op::Sync { .. } => {}
        }
    }
    History { changes, revokes }
}

/// Delivers changes in the given order, holding those whose deps are missing
/// until they arrive, as a node does.
fn deliver(doc: &mut PolicyDoc, changes: impl IntoIterator<Item = Change>, batch: bool) {
    let mut held = Vec::new();
    deliver_held(doc, &mut held, changes, batch);
    assert!(held.is_empty(), "changes left undelivered");
}

/// Like [`deliver`], keeping changes whose dependencies are still missing in `held`.
fn deliver_held(
    doc: &mut PolicyDoc,
    held: &mut Vec<Change>,
    changes: impl IntoIterator<Item = Change>,
    batch: bool,
) {
    for c in changes {
        held.push(c);
        loop {
            let mut progress = false;
            let mut still = Vec::new();
            let pending: Vec<Change> = std::mem::take(held);
            let results: Vec<Result<weft_crdt::Applied, CrdtError>> = if batch {
                doc.apply_batch(pending.iter().cloned())
            } else {
                pending.iter().map(|c| doc.apply(c.clone())).collect()
            };
            for (c, r) in pending.into_iter().zip(results) {
                match r {
                    Ok(_) => progress = true,
                    Err(CrdtError::MissingDeps(_)) => still.push(c),
                    Err(e) => panic!("honest change refused: {e}"),
                }
            }
            *held = still;
            if !progress {
                break;
            }
        }
    }
}

fn requests() -> Vec<Request> {
    let mut out = Vec::new();
    for p in PRINCIPALS {
        for a in ACTIONS {
            for r in RESOURCES {
                out.push(Request::new(
                    EntityUid::from_str(p).unwrap(),
                    EntityUid::from_str(a).unwrap(),
                    EntityUid::from_str(r).unwrap(),
                ));
            }
        }
    }
    out
}

fn decisions(doc: &PolicyDoc) -> Vec<(bool, Vec<String>, bool)> {
    requests()
        .iter()
        .map(|r| {
            let d = decide(doc.view(), r);
            (d.allow, d.reasons, d.revoked)
        })
        .collect()
}

/// A permutation of `0..n` with duplicates inserted, from proptest's random indices.
fn delivery_order(n: usize, keys: &[u64], dups: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by_key(|&i| keys.get(i).copied().unwrap_or(i as u64));
    for &d in dups {
        if n > 0 {
            let at = d % (idx.len() + 1);
            idx.insert(at, d % n);
        }
    }
    idx
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Replicas that receive the same changes, in any order, duplicated, in
    /// batches or one by one, or partly and the rest later, end with the same
    /// view and the same decisions.
    #[test]
    fn convergence(
        ops in prop::collection::vec(op(), 1..24),
        keys in prop::collection::vec(any::<u64>(), 64),
        keys2 in prop::collection::vec(any::<u64>(), 64),
        dups in prop::collection::vec(any::<usize>(), 0..6),
        split in any::<usize>(),
        lanes in any::<bool>(),
    ) {
        let h = run(&ops, lanes);
        let n = h.changes.len();
        let mut a = PolicyDoc::new();
        deliver(&mut a, h.changes.iter().cloned(), false);

        let order = delivery_order(n, &keys, &dups);
        let mut b = PolicyDoc::new();
        deliver(&mut b, order.iter().map(|&i| h.changes[i].clone()), true);

        // Partial delivery now, the rest merged later from another replica.
        let order2 = delivery_order(n, &keys2, &[]);
        let cut = if n == 0 { 0 } else { split % (n + 1) };
        let mut c = PolicyDoc::new();
        let mut held_c = Vec::new();
        deliver_held(&mut c, &mut held_c, order2[..cut].iter().map(|&i| h.changes[i].clone()), false);
        let mut d = PolicyDoc::new();
        let mut held = Vec::new();
        deliver_held(&mut d, &mut held, order2[cut..].iter().map(|&i| h.changes[i].clone()), false);
        let missing = a.changes_since(&c.heads());
        deliver_held(&mut c, &mut held_c, missing, true);
        prop_assert!(held_c.is_empty());

        let reference = a.view().summary();
        prop_assert_eq!(&b.view().summary(), &reference);
        prop_assert_eq!(&c.view().summary(), &reference);
        prop_assert_eq!(decisions(&a), decisions(&b));
        prop_assert_eq!(decisions(&a), decisions(&c));
        // The partial replica holds a subset until it hears the rest.
        prop_assert!(d.change_count() <= a.change_count());
    }

    /// The incremental view always equals a view rebuilt from scratch.
    #[test]
    fn incremental_view_equals_rebuild(
        ops in prop::collection::vec(op(), 1..24),
        keys in prop::collection::vec(any::<u64>(), 64),
        lanes in any::<bool>(),
    ) {
        let h = run(&ops, lanes);
        let order = delivery_order(h.changes.len(), &keys, &[]);
        let mut doc = PolicyDoc::new();
        // Check after every single delivery, not just at the end.
        let mut held = Vec::new();
        for i in order {
            deliver_held(&mut doc, &mut held, [h.changes[i].clone()], false);
            let rebuilt = doc.rebuild().unwrap();
            prop_assert_eq!(rebuilt.view().summary(), doc.view().summary());
            prop_assert_eq!(decisions(&rebuilt), decisions(&doc));
        }
    }

    /// Once a replica holds a revocation, no decision allows its subject unless
    /// the replica also holds a reinstatement that causally follows it.
    #[test]
    fn revoke_wins(
        ops in prop::collection::vec(op(), 1..24),
        keys in prop::collection::vec(any::<u64>(), 64),
        lanes in any::<bool>(),
    ) {
        let h = run(&ops, lanes);
        let order = delivery_order(h.changes.len(), &keys, &[]);
        let mut doc = PolicyDoc::new();
        let mut held = Vec::new();
        for i in order {
            deliver_held(&mut doc, &mut held, [h.changes[i].clone()], false);
            for (hash, subject) in &h.revokes {
                if !doc.contains(hash) {
                    continue;
                }
                // Is there a reinstatement in the doc whose causal past holds this revocation?
                let lifted = lifted_by_descendant(&doc, hash, subject);
                let uid = EntityUid::from_str(subject).unwrap();
                for r in requests() {
                    if *r.principal() == uid || *r.resource() == uid {
                        let d = decide(doc.view(), &r);
                        if !lifted {
                            prop_assert!(d.revoked && !d.allow, "revoked {} was allowed", subject);
                        }
                    }
                }
            }
        }
    }
}

/// Whether some change in `doc` that deletes `revocations/subject` has the
/// revocation `hash` in its causal past.
fn lifted_by_descendant(doc: &PolicyDoc, hash: &ChangeHash, subject: &str) -> bool {
    let changes = doc.changes();
    let by_hash: BTreeMap<ChangeHash, &Change> = changes.iter().map(|c| (c.hash(), c)).collect();
    changes.iter().any(|c| {
        let deletes = c.decode().operations.iter().any(|op| {
            matches!(op.action, automerge::legacy::OpType::Delete)
                && matches!(&op.key, automerge::legacy::Key::Map(k) if k.as_str() == subject)
        });
        deletes && in_past(&by_hash, c, hash)
    })
}

fn in_past(by_hash: &BTreeMap<ChangeHash, &Change>, from: &Change, target: &ChangeHash) -> bool {
    let mut stack: Vec<ChangeHash> = from.deps().to_vec();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(h) = stack.pop() {
        if &h == target {
            return true;
        }
        if seen.insert(h)
            && let Some(c) = by_hash.get(&h)
        {
            stack.extend(c.deps().iter().copied());
        }
    }
    false
}
