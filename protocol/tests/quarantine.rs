//! Node-issued quarantines: what an order may do, what the trust root lets
//! it do, and when it denies (expiry, hourly allowance, revoked issuer,
//! operators' lift and make-permanent). Real automerge, real signatures.

use proptest::prelude::*;
use weft_crdt::quarantine::QuarantineRecord;
use weft_crdt::{BundleContent, Decision, PolicyDoc, Request, decide_at};
use weft_protocol::identity::{Domain, NodeId, SecretKey};
use weft_protocol::quarantine::{QuarantineOrder, rules_of};
use weft_protocol::state::{Ingested, SignedState};
use weft_protocol::trust::{NodeCert, Operator, QuarantineLimits, Role, SignedNodeCert, TrustRoot};
use weft_protocol::update::{SignedUpdate, UpdateError, actor_for, signing_message};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

const T0: u64 = 1_800_000_000;

/// alice: every role. Nodes may quarantine for at most an hour, 3 an hour.
fn root(allowed: bool) -> TrustRoot {
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![key(100).public()],
        root_threshold: 1,
        operators: vec![Operator {
            name: "alice".into(),
            key: key(1).public(),
            roles: Role::ALL.into_iter().collect(),
        }],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits {
            allowed,
            max_ttl_secs: 3600,
            max_per_node_per_hour: 3,
        },
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    }
}

fn cert_for(node: &SecretKey, issuer: &SecretKey) -> SignedNodeCert {
    SignedNodeCert::sign(
        &NodeCert {
            node: NodeId::new(node.public()),
            name: "site-a".into(),
            issuer: issuer.public(),
            issued: T0 - 10,
            expires: T0 + 86_400,
        },
        issuer,
    )
}

/// The state's clock in these tests: after every order they write.
const CLOCK: u64 = T0 + 4000;

/// A state where `User::"u"` may view `Doc::"d"`, its clock at [`CLOCK`].
fn state(allowed: bool) -> SignedState {
    let mut s = SignedState::new(root(allowed));
    s.advance(CLOCK * 1000);
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let mut content = BundleContent::default();
    content.policies.insert(
        "p".into(),
        "permit(principal, action, resource);".to_owned(),
    );
    let change = doc
        .build_bundle(actor_for(&key(1).public(), [0; 8]), "main", &content, 0)
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&change, 1);
    u.sign(&key(1)).unwrap();
    s.ingest(&u.to_bytes()).unwrap();
    s
}

fn record(issued_at: u64, ttl: u64) -> QuarantineRecord {
    QuarantineRecord {
        reason: "deny burst".into(),
        issuer: None,
        issued_at,
        expires_at: Some(issued_at + ttl),
        score: Some(0.98),
        evidence: vec!["deny ratio 0.95 (baseline 0.02)".into()],
        lifted: false,
    }
}

fn order(
    s: &SignedState,
    node: &SecretKey,
    subject: &str,
    rec: QuarantineRecord,
    n: u64,
) -> Vec<u8> {
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    QuarantineOrder::issue(
        &mut doc,
        node,
        &cert_for(node, &key(1)),
        1,
        subject,
        rec,
        n.to_be_bytes(),
    )
    .unwrap()
    .to_bytes()
}

fn ask(s: &SignedState, principal: &str, now: u64) -> Decision {
    let req = Request::new(
        principal.parse().unwrap(),
        r#"Action::"view""#.parse().unwrap(),
        r#"Doc::"d""#.parse().unwrap(),
    );
    decide_at(s.view(), &req, now, &rules_of(s.root()))
}

fn refused(s: &mut SignedState, bytes: &[u8]) -> String {
    let heads = s.heads();
    let err = s.ingest(bytes).expect_err("refused");
    assert_eq!(
        s.heads(),
        heads,
        "a refused order leaves the state unchanged"
    );
    err.to_string()
}

#[test]
fn an_order_quarantines_until_it_expires() {
    let mut s = state(true);
    let node = key(50);
    let o = order(&s, &node, r#"User::"u""#, record(T0, 600), 1);
    assert!(matches!(s.ingest(&o).unwrap(), Ingested::Applied { .. }));
    let d = ask(&s, r#"User::"u""#, T0 + 10);
    assert!(!d.allow);
    let hit = d.quarantine.expect("quarantined");
    assert_eq!(hit.reason, "deny burst");
    assert_eq!(hit.issuer, Some(NodeId::new(node.public()).to_string()));
    assert_eq!(hit.until, Some(T0 + 600));
    // Others are untouched; at expiry it lapses on its own.
    assert!(ask(&s, r#"User::"v""#, T0 + 10).allow);
    assert!(ask(&s, r#"User::"u""#, T0 + 600).allow);
    // The same order again is a duplicate.
    assert!(matches!(s.ingest(&o).unwrap(), Ingested::Duplicate(_)));
}

#[test]
fn orders_beyond_the_roots_limits_are_refused() {
    // Nodes may not quarantine under this root.
    let mut s = state(false);
    let o = order(&s, &key(50), r#"User::"u""#, record(T0, 600), 1);
    assert!(refused(&mut s, &o).contains("does not let nodes quarantine"));

    let mut s = state(true);
    // Longer than the maximum TTL.
    let o = order(&s, &key(50), r#"User::"u""#, record(T0, 7200), 2);
    assert!(refused(&mut s, &o).contains("allows 1 to 3600 s"));
    // A certificate issued by someone without the admit role (not an operator).
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let bad_cert = QuarantineOrder::issue(
        &mut doc,
        &key(50),
        &cert_for(&key(50), &key(77)),
        1,
        r#"User::"u""#,
        record(T0, 600),
        [3; 8],
    )
    .unwrap()
    .to_bytes();
    assert!(refused(&mut s, &bad_cert).contains("certificate"));
}

#[test]
fn forged_orders_are_refused() {
    let mut s = state(true);
    let node = key(50);
    // Signed by another key than the one the certificate names.
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let mut o = QuarantineOrder::issue(
        &mut doc,
        &node,
        &cert_for(&node, &key(1)),
        1,
        r#"User::"u""#,
        record(T0, 600),
        [1; 8],
    )
    .unwrap();
    let change = PolicyDoc::parse_change(&o.change).unwrap();
    o.sig = key(51).sign(Domain::Quarantine, &signing_message(&change.hash(), 1));
    assert!(refused(&mut s, &o.to_bytes()).contains("bad signature"));
    // Signed in the update domain instead: a node key never signs updates.
    o.sig = node.sign(Domain::Update, &signing_message(&change.hash(), 1));
    assert!(refused(&mut s, &o.to_bytes()).contains("bad signature"));
    // A record naming another issuer (framing another node).
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let mut rec = record(T0, 600);
    rec.issuer = Some(NodeId::new(key(52).public()).to_string());
    let json = serde_json::to_string(&rec).unwrap();
    let change = doc
        .build_quarantine(actor_for(&node.public(), [2; 8]), r#"User::"u""#, &json, 0)
        .unwrap()
        .unwrap();
    let framed = QuarantineOrder {
        change: change.raw_bytes().to_vec(),
        root_version: 1,
        cert: cert_for(&node, &key(1)).to_bytes(),
        sig: node.sign(Domain::Quarantine, &signing_message(&change.hash(), 1)),
    };
    assert!(refused(&mut s, &framed.to_bytes()).contains("issuer is not the node"));
    // Malformed and oversized bytes.
    assert!(refused(&mut s, b"WEFT\x40\x01junk").contains("malformed"));
    let mut big = b"WEFT\x40\x01".to_vec();
    big.resize(weft_protocol::quarantine::MAX_ORDER_BYTES + 1, 0);
    assert!(refused(&mut s, &big).contains("over the limit"));
}

#[test]
fn a_node_can_only_write_under_quarantines() {
    let mut s = state(true);
    let node = key(50);
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let mut content = BundleContent::default();
    content.policies.insert(
        "evil".into(),
        "forbid(principal, action, resource);".to_owned(),
    );
    let change = doc
        .build_bundle(actor_for(&node.public(), [9; 8]), "main", &content, 0)
        .unwrap()
        .unwrap();
    let o = QuarantineOrder {
        change: change.raw_bytes().to_vec(),
        root_version: 1,
        cert: cert_for(&node, &key(1)).to_bytes(),
        sig: node.sign(Domain::Quarantine, &signing_message(&change.hash(), 1)),
    };
    assert!(refused(&mut s, &o.to_bytes()).contains("only write under quarantines/"));
    // A revocation written by a node is refused the same way.
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let change = doc
        .build_revoke(actor_for(&node.public(), [8; 8]), r#"User::"v""#, "x", 0)
        .unwrap()
        .unwrap();
    let o = QuarantineOrder {
        change: change.raw_bytes().to_vec(),
        root_version: 1,
        cert: cert_for(&node, &key(1)).to_bytes(),
        sig: node.sign(Domain::Quarantine, &signing_message(&change.hash(), 1)),
    };
    assert!(refused(&mut s, &o.to_bytes()).contains("only write under quarantines/"));
    assert!(ask(&s, r#"User::"v""#, T0).allow);
}

#[test]
fn a_flooding_node_is_capped_and_a_revoked_node_is_ignored() {
    let mut s = state(true);
    let node = key(50);
    // Eight quarantines within one hour; the root allows three an hour.
    for i in 0..8u64 {
        let o = order(
            &s,
            &node,
            &format!(r#"User::"v{i}""#),
            record(T0 + i, 3000),
            i,
        );
        s.ingest(&o).unwrap();
    }
    let denied: Vec<u64> = (0..8)
        .filter(|i| !ask(&s, &format!(r#"User::"v{i}""#), T0 + 100).allow)
        .collect();
    assert_eq!(denied, vec![0, 1, 2], "the first three by issue time");
    // The mesh keeps serving everyone else.
    assert!(ask(&s, r#"User::"w""#, T0 + 100).allow);
    // An hour later the node has a fresh allowance.
    let o = order(&s, &node, r#"User::"late""#, record(T0 + 3700, 600), 99);
    s.ingest(&o).unwrap();
    assert!(!ask(&s, r#"User::"late""#, T0 + 3701).allow);
    // Revoking the node voids everything it issued.
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let change = doc
        .build_revoke(
            actor_for(&key(1).public(), [7; 8]),
            &NodeId::new(node.public()).to_string(),
            "compromised",
            0,
        )
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&change, 1);
    u.sign(&key(1)).unwrap();
    s.ingest(&u.to_bytes()).unwrap();
    assert!(ask(&s, r#"User::"v0""#, T0 + 100).allow);
    assert!(ask(&s, r#"User::"late""#, T0 + 3701).allow);
    // And its new orders are refused outright? No: accepted into the
    // document (every replica must agree whatever the order of arrival), but
    // never honoured.
    let o = order(&s, &node, r#"User::"x""#, record(T0 + 3800, 600), 100);
    s.ingest(&o).unwrap();
    assert!(ask(&s, r#"User::"x""#, T0 + 3801).allow);
}

#[test]
fn operators_lift_or_make_permanent() {
    let mut s = state(true);
    let node = key(50);
    s.ingest(&order(&s, &node, r#"User::"u""#, record(T0, 600), 1))
        .unwrap();
    s.ingest(&order(&s, &node, r#"User::"v""#, record(T0, 600), 2))
        .unwrap();
    assert!(!ask(&s, r#"User::"u""#, T0 + 1).allow);
    // Lift u: an operator's record, lifted.
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let lifted = QuarantineRecord {
        reason: "false positive".into(),
        lifted: true,
        issuer: None,
        issued_at: T0 + 2,
        expires_at: None,
        score: None,
        evidence: vec![],
    };
    let change = doc
        .build_quarantine(
            actor_for(&key(1).public(), [5; 8]),
            r#"User::"u""#,
            &serde_json::to_string(&lifted).unwrap(),
            0,
        )
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&change, 1);
    u.sign(&key(1)).unwrap();
    s.ingest(&u.to_bytes()).unwrap();
    assert!(ask(&s, r#"User::"u""#, T0 + 3).allow);
    // Make v permanent: revoke it. It stays denied after the quarantine lapses.
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let change = doc
        .build_revoke(
            actor_for(&key(1).public(), [6; 8]),
            r#"User::"v""#,
            "confirmed",
            0,
        )
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&change, 1);
    u.sign(&key(1)).unwrap();
    s.ingest(&u.to_bytes()).unwrap();
    let d = ask(&s, r#"User::"v""#, T0 + 10_000);
    assert!(!d.allow && d.revoked);
    // A node cannot lift: its order may only put records it issues, unlifted.
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let change = doc
        .build_quarantine(
            actor_for(&node.public(), [4; 8]),
            r#"User::"v""#,
            &serde_json::to_string(&lifted).unwrap(),
            0,
        )
        .unwrap()
        .unwrap();
    let o = QuarantineOrder {
        change: change.raw_bytes().to_vec(),
        root_version: 1,
        cert: cert_for(&node, &key(1)).to_bytes(),
        sig: node.sign(Domain::Quarantine, &signing_message(&change.hash(), 1)),
    };
    assert!(refused(&mut s, &o.to_bytes()).contains("issuer is not the node"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    /// Replicas that receive the same orders in any order, with duplicates,
    /// honour the same quarantines (the allowance is a function of the set).
    #[test]
    fn the_allowance_is_the_same_whatever_the_arrival_order(
        perm in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
        dup in 0..7usize,
    ) {
        let base = state(true);
        let node = key(50);
        let orders: Vec<Vec<u8>> = (0..7u64)
            .map(|i| order(&base, &node, &format!(r#"User::"v{i}""#), record(T0 + (i * 7) % 5, 3000), i))
            .collect();
        let mut a = state(true);
        for o in &orders {
            a.ingest(o).unwrap();
        }
        let mut b = state(true);
        for &i in &perm {
            b.ingest(&orders[i]).unwrap();
        }
        b.ingest(&orders[dup]).unwrap();
        prop_assert_eq!(a.heads().len(), b.heads().len());
        for i in 0..7 {
            let p = format!(r#"User::"v{i}""#);
            prop_assert_eq!(ask(&a, &p, T0 + 100), ask(&b, &p, T0 + 100));
        }
        let denied = (0..7).filter(|i| !ask(&a, &format!(r#"User::"v{i}""#), T0 + 100).allow).count();
        prop_assert_eq!(denied, 3);
    }
}

#[test]
fn orders_decode_only_as_orders() {
    let s = state(true);
    let o = order(&s, &key(50), r#"User::"u""#, record(T0, 600), 1);
    assert!(SignedUpdate::from_bytes(&o).is_err());
    let back = QuarantineOrder::from_bytes(&o).unwrap();
    assert_eq!(back.to_bytes(), o);
    let _: UpdateError = QuarantineOrder::from_bytes(b"nope").unwrap_err();
}

/// An order for `subject` by `node` whose change is built on `doc` as is.
fn order_on(
    doc: &mut PolicyDoc,
    node: &SecretKey,
    subject: &str,
    rec: QuarantineRecord,
    n: u64,
) -> Vec<u8> {
    QuarantineOrder::issue(
        doc,
        node,
        &cert_for(node, &key(1)),
        1,
        subject,
        rec,
        n.to_be_bytes(),
    )
    .unwrap()
    .to_bytes()
}

/// Finding: orders dated a year ahead passed `expires - issued <= max` and
/// fell outside every hourly bucket, so eight of them were all in force
/// until next year. An order dated past the skew is refused (for now, with
/// no blame on the relay), and a record dated in the future that a node
/// with a fast clock applied is neither in force nor counted.
#[test]
fn orders_dated_in_the_future_are_refused_and_never_in_force() {
    let mut s = state(true);
    let node = key(50);
    // Hours ahead (the test certificate lives a day; a year is refused the same way).
    let ahead = 20 * 3600;
    let o = order(&s, &node, r#"User::"u""#, record(CLOCK + ahead, 3000), 1);
    let heads = s.heads();
    let err = s.ingest(&o).unwrap_err();
    assert!(matches!(err, UpdateError::FutureDated { .. }), "{err}");
    assert!(!err.is_misbehaviour(), "a relay is not to blame");
    assert_eq!(s.heads(), heads);
    // Within the skew it is accepted.
    let near = order(&s, &node, r#"User::"n""#, record(CLOCK + 200, 600), 2);
    assert!(matches!(s.ingest(&near).unwrap(), Ingested::Applied { .. }));
    // A node whose clock is far ahead applies future-dated orders; where
    // they are decided, at the real time, they do nothing and take nothing
    // from the issuer's allowance.
    let mut fast = state(true);
    fast.advance((CLOCK + 2 * ahead) * 1000);
    for i in 0..8u64 {
        let o = order(
            &fast,
            &node,
            &format!(r#"User::"f{i}""#),
            record(CLOCK + ahead + i, 3000),
            10 + i,
        );
        fast.ingest(&o).unwrap();
    }
    for i in 0..8u64 {
        assert!(
            ask(&fast, &format!(r#"User::"f{i}""#), T0 + 100).allow,
            "f{i} in force hours early"
        );
    }
    let o = order(&fast, &node, r#"User::"now""#, record(T0 + 50, 600), 30);
    fast.ingest(&o).unwrap();
    assert!(
        !ask(&fast, r#"User::"now""#, T0 + 100).allow,
        "the allowance is intact"
    );
}

/// Finding: a node could lift any quarantine by writing its own short
/// record over another node's or an operator's record for the subject.
#[test]
fn a_node_cannot_replace_a_record_it_did_not_write() {
    let mut s = state(true);
    let (a, b) = (key(50), key(51));
    s.ingest(&order(&s, &a, r#"User::"u""#, record(T0, 3000), 1))
        .unwrap();
    // b writes over a's record with a one-second quarantine.
    let over = order(&s, &b, r#"User::"u""#, record(T0 + 1, 1), 2);
    let err = refused(&mut s, &over);
    assert!(err.contains("did not write"), "{err}");
    assert!(!ask(&s, r#"User::"u""#, T0 + 100).allow);
    // a may replace its own.
    let own = order(&s, &a, r#"User::"u""#, record(T0 + 2, 600), 3);
    assert!(matches!(s.ingest(&own).unwrap(), Ingested::Applied { .. }));

    // An operator's record is no node's to overwrite either.
    let mut doc = PolicyDoc::load(&s.doc().save()).unwrap();
    let held = QuarantineRecord {
        reason: "held by an operator".into(),
        issuer: None,
        issued_at: T0,
        expires_at: None,
        score: None,
        evidence: vec![],
        lifted: false,
    };
    let change = doc
        .build_quarantine(
            actor_for(&key(1).public(), [6; 8]),
            r#"User::"op""#,
            &serde_json::to_string(&held).unwrap(),
            0,
        )
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&change, 1);
    u.sign(&key(1)).unwrap();
    s.ingest(&u.to_bytes()).unwrap();
    let over = order(&s, &a, r#"User::"op""#, record(T0 + 5, 1), 4);
    assert!(refused(&mut s, &over).contains("did not write"));
    assert!(!ask(&s, r#"User::"op""#, T0 + 10_000).allow);
}

/// Written beside a record instead of over it (concurrently, or by leaving
/// out what it overwrites), a node's record cannot outrank an operator's,
/// nor shorten another node's: every replica decides alike whatever the
/// order the changes came in.
#[test]
fn concurrent_records_cannot_shorten_or_lift_a_quarantine() {
    let base = state(true);
    let (a, b) = (key(50), key(51));
    // a quarantines u for 3000 s; b, concurrently, for 1 s.
    let long = order(&base, &a, r#"User::"u""#, record(T0, 3000), 1);
    let short = order(&base, &b, r#"User::"u""#, record(T0, 1), 2);
    // An operator lifts w while a node, concurrently, quarantines it.
    let mut doc = PolicyDoc::load(&base.doc().save()).unwrap();
    let lifted = QuarantineRecord {
        reason: "false positive".into(),
        issuer: None,
        issued_at: T0,
        expires_at: None,
        score: None,
        evidence: vec![],
        lifted: true,
    };
    let change = doc
        .build_quarantine(
            actor_for(&key(1).public(), [7; 8]),
            r#"User::"w""#,
            &serde_json::to_string(&lifted).unwrap(),
            0,
        )
        .unwrap()
        .unwrap();
    let mut lift = SignedUpdate::new(&change, 1);
    lift.sign(&key(1)).unwrap();
    let lift = lift.to_bytes();
    let mut doc = PolicyDoc::load(&base.doc().save()).unwrap();
    let node_w = order_on(&mut doc, &b, r#"User::"w""#, record(T0, 3000), 3);
    let all = [long, short, lift, node_w];
    for perm in [[0, 1, 2, 3], [1, 0, 3, 2], [3, 2, 1, 0], [2, 3, 0, 1]] {
        let mut s = state(true);
        for i in perm {
            s.ingest(&all[i]).unwrap();
        }
        assert!(
            !ask(&s, r#"User::"u""#, T0 + 100).allow,
            "{perm:?}: u's quarantine was shortened"
        );
        assert!(
            ask(&s, r#"User::"w""#, T0 + 100).allow,
            "{perm:?}: the operator's lift was outranked"
        );
    }
}

/// Finding: an expired node certificate still authorized orders (it was
/// checked as of its own issue time). An order must be dated within its
/// certificate's validity and end by its expiry.
#[test]
fn an_expired_certificate_authorizes_nothing_in_force() {
    let mut s = state(true);
    s.advance((T0 + 200_000) * 1000);
    let node = key(50);
    // The certificate expired at T0 + 86,400: an order dated after it.
    let late = order(&s, &node, r#"User::"u""#, record(T0 + 100_000, 600), 1);
    let err = refused(&mut s, &late);
    assert!(err.contains("was not valid at"), "{err}");
    // Backdated into the certificate's life, it may not outlast it.
    let backdated = order(&s, &node, r#"User::"u""#, record(T0 + 86_000, 600), 2);
    let err = refused(&mut s, &backdated);
    assert!(err.contains("outlast the issuer's certificate"), "{err}");
    // Dated before the certificate was issued.
    let early = order(&s, &node, r#"User::"u""#, record(T0 - 1000, 600), 3);
    assert!(refused(&mut s, &early).contains("was not valid at"));
    // Within its life, and ending by its expiry, it applies.
    let fine = order(&s, &node, r#"User::"u""#, record(T0 + 85_000, 600), 4);
    assert!(matches!(s.ingest(&fine).unwrap(), Ingested::Applied { .. }));
}
