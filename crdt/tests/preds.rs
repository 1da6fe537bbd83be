//! Predecessors: an operation that overwrites or deletes names the
//! operations it replaces, and each must be an operation at the same object
//! and key; a deletion names at least one. A change that names one
//! elsewhere, one that does not exist, or one twice, or deletes nothing, is
//! refused and the document is unchanged; an honest change
//! that replaces an operation a concurrent change has since overwritten is
//! applied, and the document still saves and loads.

use automerge::legacy::OpId;
use automerge::{ActorId, Change, ExpandedChange};
use weft_crdt::{CrdtError, PolicyDoc, Refusal};

fn lane(n: u8) -> ActorId {
    ActorId::from(vec![n; 40])
}

fn revoke(doc: &mut PolicyDoc, actor: ActorId, who: &str, reason: &str) -> Change {
    doc.build_revoke(actor, &format!(r#"User::"{who}""#), reason, 1)
        .unwrap()
        .unwrap()
}

/// `change` with its first operation edited by `edit`.
fn forge(change: &Change, edit: impl FnOnce(&mut automerge::legacy::Op)) -> Change {
    let mut expanded: ExpandedChange = change.decode();
    edit(expanded.operations.first_mut().unwrap());
    Change::from(expanded)
}

/// The refusal of `change` by a document holding `base`, alone and in a
/// batch after `base`'s last change; the document is unchanged and still
/// saves and loads.
fn refused(base: &[Change], change: &Change) -> String {
    let mut reasons = Vec::new();
    for in_batch in [false, true] {
        let mut doc = PolicyDoc::new();
        let (before, batch) = if in_batch {
            let (last, rest) = base.split_last().unwrap();
            (rest, vec![last.clone(), change.clone()])
        } else {
            (base, vec![change.clone()])
        };
        for c in before {
            doc.apply(c.clone()).unwrap();
        }
        let count = doc.change_count() + usize::from(in_batch);
        let results = doc.apply_checked(batch, |_, _| Ok::<(), ()>(()));
        let last = results.last().unwrap();
        let Err(Refusal::State(CrdtError::Malformed(reason))) = last else {
            panic!("the forged change was not refused as malformed: {last:?}");
        };
        assert_eq!(doc.heads(), vec![base.last().unwrap().hash()]);
        assert_eq!(doc.change_count(), count);
        let loaded = PolicyDoc::load(&doc.save()).unwrap();
        assert_eq!(loaded.heads(), doc.heads());
        assert_eq!(doc.changes().len(), base.len());
        reasons.push(reason.clone());
    }
    reasons.pop().unwrap()
}

/// `fuzz/` target `ingest`: a quarantine record's key edited while its
/// predecessor still named the record it replaced under the old key.
/// automerge applied it, and then panicked whenever the document gave its
/// changes back (sync, snapshots).
#[test]
fn an_operation_that_replaces_an_operation_at_another_key_is_refused() {
    let mut author = PolicyDoc::new();
    let first = revoke(&mut author, lane(1), "a", "one");
    let again = revoke(&mut author, lane(2), "a", "two");
    assert_eq!(again.decode().operations[0].pred.len(), 1);
    let moved = forge(&again, |op| {
        // Another spelling of the subject: the same bucket, another key.
        op.key = automerge::legacy::Key::Map(r#" User::"a""#.into())
    });
    let reason = refused(&[first], &moved);
    assert!(reason.contains("replaces"), "{reason}");
}

#[test]
fn an_operation_that_replaces_no_operation_or_one_twice_is_refused() {
    let mut author = PolicyDoc::new();
    let first = revoke(&mut author, lane(1), "a", "one");
    let again = revoke(&mut author, lane(2), "a", "two");
    let pred = again.decode().operations[0]
        .pred
        .iter()
        .next()
        .cloned()
        .unwrap();
    let nowhere = forge(&again, |op| {
        op.pred = vec![OpId(pred.0 + 7, pred.1.clone())].into()
    });
    let twice = forge(&again, |op| {
        op.pred = vec![pred.clone(), pred.clone()].into()
    });
    for forged in [nowhere, twice] {
        refused(std::slice::from_ref(&first), &forged);
    }
}

#[test]
fn an_honest_overwrite_of_an_overwritten_operation_is_applied() {
    let mut base = PolicyDoc::new();
    let first = revoke(&mut base, lane(1), "a", "one");
    let mut left = PolicyDoc::load(&base.save()).unwrap();
    let mut right = PolicyDoc::load(&base.save()).unwrap();
    let l = revoke(&mut left, lane(2), "a", "left");
    let r = revoke(&mut right, lane(3), "a", "right");
    // Each replaces `first`'s operation, which the other overwrote.
    for order in [[&l, &r], [&r, &l]] {
        let mut doc = PolicyDoc::new();
        doc.apply(first.clone()).unwrap();
        doc.apply(order[0].clone()).unwrap();
        doc.apply(order[1].clone()).unwrap();
        let mut batch = PolicyDoc::new();
        for result in batch.apply_batch([first.clone(), order[0].clone(), order[1].clone()]) {
            result.unwrap();
        }
        let loaded = PolicyDoc::load(&doc.save()).unwrap();
        assert_eq!(loaded.heads(), doc.heads());
        assert_eq!(batch.heads(), doc.heads());
        assert_eq!(doc.changes().len(), 3);
    }
}

/// `fuzz/` target `ingest`: a deletion that names no operation it replaces
/// applied, and the document then panicked whenever it gave its changes
/// back (automerge keeps a deletion only as the successor of what it
/// deletes, so this one was lost).
#[test]
fn a_deletion_of_nothing_is_refused() {
    let mut author = PolicyDoc::new();
    let first = revoke(&mut author, lane(1), "a", "one");
    let reinstate = author
        .build_reinstate(lane(2), r#"User::"a""#, 1)
        .unwrap()
        .unwrap();
    let nothing = forge(&reinstate, |op| op.pred = Vec::new().into());
    let reason = refused(&[first], &nothing);
    assert!(reason.contains("names no operation"), "{reason}");
}
