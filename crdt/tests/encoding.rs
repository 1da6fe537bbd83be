//! One change, one byte string: automerge's columns allow other encodings
//! of the same operations, which it parses and applies, but a document
//! gives its changes back re-encoded, under another hash. A change encoded
//! another way than automerge encodes it is refused, and the document is
//! unchanged.

use automerge::{ActorId, Change};
use sha2::{Digest as _, Sha256};
use weft_crdt::{CrdtError, PolicyDoc};

/// `fuzz/` target `ingest`: a revocation whose boolean `insert` column
/// says 35 operations are not insertions where the change has one. It
/// parsed and decoded to the same operations and applied; the document
/// then gave it back under another hash, so it was missing from every save.
#[test]
fn a_change_encoded_another_way_is_refused() {
    let mut author = PolicyDoc::new();
    let change = author
        .build_revoke(ActorId::from(vec![1; 40]), r#"User::"a""#, "r", 1)
        .unwrap()
        .unwrap();
    let same = |c: &Change| {
        let (a, b) = (c.decode(), change.decode());
        (c.seq(), c.start_op(), c.deps(), c.actor_id())
            == (
                change.seq(),
                change.start_op(),
                change.deps(),
                change.actor_id(),
            )
            && (c.timestamp(), c.message(), c.other_actor_ids())
                == (
                    change.timestamp(),
                    change.message(),
                    change.other_actor_ids(),
                )
            && a.operations == b.operations
    };
    let raw = change.raw_bytes();
    let other = (8..raw.len())
        .filter(|&i| raw[i] == 0x01)
        .filter_map(|i| {
            let mut bytes = raw.to_vec();
            bytes[i] = 0x23;
            let hash = Sha256::digest(&bytes[8..]);
            bytes[4..8].copy_from_slice(&hash[..4]);
            let parsed = PolicyDoc::parse_change(&bytes).ok()?;
            let decoded = std::panic::catch_unwind(|| same(&parsed)).unwrap_or(false);
            decoded.then_some(parsed)
        })
        .next()
        .expect("a run that can be longer than the operations");
    assert_ne!(other.hash(), change.hash());

    let mut doc = PolicyDoc::new();
    let before = doc.heads();
    let err = doc.apply(other).unwrap_err();
    assert!(matches!(err, CrdtError::Malformed(_)), "{err}");
    assert!(err.to_string().contains("encoded"), "{err}");
    assert_eq!(doc.heads(), before);
    doc.apply(change.clone()).unwrap();
    assert_eq!(doc.changes().last().map(|c| c.hash()), Some(change.hash()));
}
