//! The trust-boundary ingest of [`SignedState`], driven with signed inputs.
//!
//! Random bytes stop at the envelope's signatures, so this target builds
//! what a hostile but key-holding author would send. Fixed once per process
//! ([`Fixture`]): operator keys from fixed seeds, a chain of two trust roots
//! (version 1 with an operator that version 2 removes, version 2 vouching
//! for version 1's history by its `accepted_heads`), two certified nodes
//! allowed to quarantine, and a base state holding real applied bundles, a
//! revocation and a node's quarantine order. Real updates withheld from the
//! base (children of its heads, a grandchild, a vouched version-1 update,
//! orders, an operator's lift, a reinstatement) are the templates.
//!
//! Each input is a few steps on a clone of the base state: a single update
//! through [`SignedState::ingest`] (the HTTP API), a batch through
//! [`SignedState::ingest_from`] from the local source or a peer (gossip,
//! sync), or a move of the clock ([`SignedState::advance`]). Each update
//! starts from a template, from a change freshly written on one of the
//! fixture's documents (a revocation, a reinstatement, a bundle, a
//! quarantine record by a node or an operator, with fuzzed subjects, texts,
//! dates and actors), or from an update sent earlier in the input; its
//! change is then mutated (bytes of the chunk, seq, start op, time, deps,
//! actor, message, and each operation's object, key, action, value and
//! predecessors), re-framed with a valid checksum, and signed again: as its
//! author would, by a fuzzed set of keys (operators, a non-operator, a
//! root key), as a node's order under a fuzzed certificate, unsigned, or
//! with a damaged signature, under a fuzzed root version.
//!
//! What it asserts:
//! - no panic escapes. automerge's panics on malformed changes are caught
//!   on purpose by `PolicyDoc::parse_change` and `PolicyDoc::expand`, and
//!   libfuzzer's own hook would abort on them before they are caught, so
//!   the hook here only records each panic; a panic that reaches this
//!   target's `catch_unwind` is printed with every panic recorded for the
//!   input, and aborts;
//! - a refused update, a duplicate, or a batch with nothing applied or held
//!   leaves the state as it was (heads, applied and held updates, held
//!   bytes, wanted hashes), and drops nothing held;
//! - what the outcome says holds: an applied update (and what it or a held
//!   one released) is applied, a held one is not, a duplicate is; and every
//!   update that a step applied is reported applied exactly once (the node
//!   persists and announces what the results report);
//! - held updates stay within the (small) [`HeldLimits`] in count and
//!   bytes, and no update reported dropped is applied (the node removes
//!   dropped updates from its store);
//! - when anything applied, the final state survives persistence:
//!   restoring it from its snapshot (the saved document and every update's
//!   bytes, as the node's store does) gives the same heads, updates and
//!   view, and ingesting its updates again in causal order into a fresh
//!   state (the store's path without a snapshot) gives the same heads.
//!
//! With `WEFT_INGEST_OUTCOMES=FILE` set, the outcome of every update is
//! appended to FILE as one line (applied, held, duplicate, refused and the
//! reason), for a histogram of what a corpus reaches.
#![no_main]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::num::NonZeroU8;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use automerge::ObjType;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use weft_crdt::legacy::{self, ElementId, Key, ObjectId, OpId, OpType};
use weft_crdt::quarantine::QuarantineRecord;
use weft_crdt::{ActorId, BundleContent, Change, ChangeHash, PolicyDoc, ScalarValue};
use weft_protocol::boundary::decode_verified;
use weft_protocol::identity::{Domain, NodeId, SecretKey, Signature};
use weft_protocol::quarantine::QuarantineOrder;
use weft_protocol::state::{HeldLimits, Ingested, SignedState, Source};
use weft_protocol::trust::{
    NodeCert, Operator, QuarantineLimits, Role, SignedNodeCert, SignedRoot, TrustRoot,
};
use weft_protocol::update::{
    SignedUpdate, UpdateError, UpdateSignature, actor_for, signing_message,
};

// ---------------------------------------------------------------------------
// The input

/// What one fuzz input does, step by step, to a clone of the base state.
#[derive(Arbitrary, Debug)]
struct Input {
    steps: Vec<Step>,
}

const MAX_STEPS: usize = 8;
const MAX_BATCH: usize = 4;
const MAX_MUTATIONS: usize = 3;
const MAX_TEXT: usize = 96;

#[derive(Arbitrary, Debug)]
enum Step {
    /// One update through `SignedState::ingest`, as `POST /v1/updates`.
    Local(Item),
    /// Updates through `SignedState::ingest_from`, as gossip and sync.
    Batch { from: Sender, items: Vec<Item> },
    /// The driver's clock moves.
    Advance(Advance),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Sender {
    Local,
    PeerA,
    PeerB,
}

#[derive(Arbitrary, Debug)]
enum Advance {
    Secs(u16),
    PastTtl,
    Back(u16),
}

#[derive(Arbitrary, Debug)]
struct Item {
    origin: Origin,
    mutations: Vec<Mutation>,
    envelope: Envelope,
}

/// Where an update's change comes from.
#[derive(Arbitrary, Debug)]
enum Origin {
    /// A real update of the fixture (applied in the base, or withheld).
    Template(u8),
    /// An update sent earlier in this input, byte for byte.
    Again(u8),
    Revoke {
        on: u8,
        author: u8,
        nonce: u8,
        subject: Subject,
        reason: String,
        time: i64,
    },
    Reinstate {
        on: u8,
        author: u8,
        nonce: u8,
        subject: Subject,
        time: i64,
    },
    Bundle {
        on: u8,
        author: u8,
        nonce: u8,
        name: Name,
        policy: Policy,
        entities: Option<String>,
        time: i64,
    },
    /// A quarantine record: a node's order (signed by `writer` as a node)
    /// or, with an operator as `writer`, an operator's write.
    Quarantine {
        on: u8,
        writer: u8,
        nonce: u8,
        subject: Subject,
        record: Record,
    },
}

#[derive(Arbitrary, Debug)]
enum Subject {
    Known(u8),
    Raw(String),
}

const SUBJECTS: &[&str] = &[
    r#"User::"mallory""#,
    r#"User::"q""#,
    r#"User::"x""#,
    r#"User::"r""#,
    r#"User::"y""#,
    r#"User :: "q""#,
    r#"Doc::"d""#,
    r#"User::"q\u0000""#,
    "",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Raw(String),
}

const NAMES: &[&str] = &["main", "second", "eve", "a/b", ""];

#[derive(Arbitrary, Debug)]
enum Policy {
    Known(u8),
    Raw(String),
}

const POLICIES: &[&str] = &[
    "permit(principal, action, resource);",
    r#"forbid(principal == User::"x", action, resource);"#,
    "permit(principal == ?principal, action, resource);",
    r#"permit(principal in Group::"g", action == Action::"view", resource) when { resource.public };"#,
    "permit(",
];

#[derive(Arbitrary, Debug)]
enum Record {
    Fields {
        /// Seconds from the fixture's clock.
        issued: i32,
        /// Seconds from `issued`; none: no expiry.
        ttl: Option<i32>,
        issuer: Issuer,
        lifted: bool,
        reason: String,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Issuer {
    /// The node that writes it (none for an operator).
    Writer,
    None,
    Node(u8),
    Raw(String),
}

/// A change to the change, before it is signed again.
#[derive(Arbitrary, Debug)]
enum Mutation {
    /// XORs a byte of the chunk's contents (the framing is fixed after).
    Flip {
        at: u16,
        xor: NonZeroU8,
    },
    /// Cuts the chunk's contents.
    Cut {
        at: u16,
    },
    /// Inserts bytes into the chunk's contents.
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    /// Leaves the chunk's checksum wrong.
    Checksum,
    Seq(i8),
    StartOp(i8),
    Time(i64),
    Deps(Deps),
    Actor {
        who: u8,
        nonce: u8,
    },
    Message(Option<String>),
    Extra(Vec<u8>),
    Op {
        op: u8,
        edit: OpEdit,
    },
}

#[derive(Arbitrary, Debug)]
enum Deps {
    Clear,
    Drop(u8),
    Add(u8),
    Random([u8; 32]),
    Twice(u8),
}

#[derive(Arbitrary, Debug)]
enum OpEdit {
    ObjRoot,
    Obj { counter: i8, actor: u8 },
    Key(String),
    Elem { counter: u16, actor: u8 },
    Delete,
    Put(String),
    PutInt(i64),
    MakeMap,
    MakeList,
    Increment(i64),
    Insert,
    PredClear,
    Pred { counter: u16, actor: u8 },
    Remove,
    Repeat,
}

/// How the update is wrapped and signed.
#[derive(Arbitrary, Debug)]
enum Envelope {
    /// As its author would: the signers or the node of its origin.
    Auto,
    /// A signed update by these keys (any number, none included).
    Update {
        signers: Vec<u8>,
        version: Version,
        damage: Option<(u8, NonZeroU8)>,
    },
    /// A node's quarantine order by key `node` carrying certificate `cert`.
    Order {
        node: u8,
        cert: u8,
        version: Version,
        damage: Option<(u8, NonZeroU8)>,
    },
}

#[derive(Arbitrary, Debug)]
enum Version {
    Own,
    V1,
    V2,
    Next,
    Any(u64),
}

// ---------------------------------------------------------------------------
// The fixture

/// The state's clock in the fixture (Unix seconds).
const CLOCK: u64 = 1_800_000_000;

/// Held updates: few and small, so the bounds are reached.
const LIMITS: HeldLimits = HeldLimits {
    max_updates: 4,
    max_bytes: 4096,
    max_bytes_per_source: 2048,
    ttl_ms: 60_000,
};

/// Key indexes: operators alice (every role), bob (policy), carol (revoke,
/// and admit in version 1), eve (policy, version 1 only); mallory (no
/// operator); the nodes n and r; the root key.
const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const EVE: usize = 3;
const NODE_N: usize = 5;
const NODE_R: usize = 6;
const SEEDS: [u8; 8] = [1, 2, 3, 4, 66, 50, 51, 100];

/// A real update: its change, the version it names, how it was signed.
struct Template {
    change: Vec<u8>,
    version: u64,
    signed: Signed,
}

#[derive(Clone)]
enum Signed {
    Operators(Vec<usize>),
    /// A node's order: the node's key and the certificate's index.
    Node(usize, usize),
}

struct Fixture {
    keys: Vec<SecretKey>,
    /// Certificates: n by alice; n expired; n by bob (no admit role); r by
    /// mallory (no operator); r by alice; n, valid only from tomorrow.
    certs: Vec<Vec<u8>>,
    v2: TrustRoot,
    chain: Vec<(TrustRoot, Arc<[u8]>)>,
    base: SignedState,
    templates: Vec<Template>,
    /// Documents new changes are written on: the base; the base with a
    /// withheld revocation, bundle or order; version 1's history before
    /// the rotation; the genesis document.
    docs: Vec<PolicyDoc>,
    /// Every change hash of the fixture, the genesis included.
    hashes: Vec<ChangeHash>,
    /// Actors the fixture's changes use (for object ids and predecessors).
    actors: Vec<ActorId>,
}

fn key_of(fx: &Fixture, who: u8) -> &SecretKey {
    &fx.keys[who as usize % fx.keys.len()]
}

fn operator(name: &str, key: &SecretKey, roles: &[Role]) -> Operator {
    Operator {
        name: name.into(),
        key: key.public(),
        roles: roles.iter().copied().collect(),
    }
}

fn cert(node: &SecretKey, name: &str, by: &SecretKey, issued: u64, expires: u64) -> Vec<u8> {
    SignedNodeCert::sign(
        &NodeCert {
            node: NodeId::new(node.public()),
            name: name.into(),
            issuer: by.public(),
            issued,
            expires,
        },
        by,
    )
    .to_bytes()
}

fn signed_update(change: &[u8], version: u64, keys: &[&SecretKey]) -> Vec<u8> {
    let mut u = SignedUpdate {
        change: change.to_vec(),
        root_version: version,
        signatures: Vec::new(),
    };
    for k in keys {
        u.sign(k).expect("a fixture change hashes");
    }
    u.to_bytes()
}

fn order_bytes(change: &[u8], version: u64, node: &SecretKey, cert: &[u8]) -> Vec<u8> {
    let hash = weft_protocol::chunk::change_hash(change).expect("a fixture change hashes");
    QuarantineOrder {
        change: change.to_vec(),
        root_version: version,
        cert: cert.to_vec(),
        sig: node.sign(Domain::Quarantine, &signing_message(&hash, version)),
    }
    .to_bytes()
}

fn record_json(issuer: Option<String>, issued_at: u64, ttl: Option<u64>, lifted: bool) -> String {
    serde_json::to_string(&QuarantineRecord {
        reason: "deny burst".into(),
        issuer,
        issued_at,
        expires_at: ttl.map(|t| issued_at + t),
        score: Some(0.9),
        evidence: vec!["deny ratio 0.9".into()],
        lifted,
    })
    .expect("a record serializes")
}

fn content(policy: &str) -> BundleContent {
    let mut c = BundleContent::default();
    c.policies.insert("p".into(), policy.into());
    c
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let keys: Vec<SecretKey> = SEEDS
        .iter()
        .map(|s| SecretKey::from_seed([*s; 32]))
        .collect();
    let k = |i: usize| &keys[i];
    let actor = |i: usize, nonce: u8| actor_for(&keys[i].public(), [nonce; 8]);
    let day = 86_400;
    let certs = vec![
        cert(k(NODE_N), "site-n", k(ALICE), CLOCK - day, CLOCK + day),
        cert(k(NODE_N), "site-n", k(ALICE), CLOCK - 3 * day, CLOCK - day),
        cert(k(NODE_N), "site-n", k(BOB), CLOCK - day, CLOCK + day),
        cert(k(NODE_R), "site-r", k(4), CLOCK - day, CLOCK + day),
        cert(k(NODE_R), "site-r", k(ALICE), CLOCK - day, CLOCK + day),
        cert(k(NODE_N), "site-n", k(ALICE), CLOCK + day, CLOCK + 2 * day),
    ];
    let limits = QuarantineLimits {
        allowed: true,
        max_ttl_secs: 3600,
        max_per_node_per_hour: 3,
    };
    let all = Role::ALL;
    let v1 = TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![k(7).public()],
        root_threshold: 1,
        operators: vec![
            operator("alice", k(ALICE), &all),
            operator("bob", k(BOB), &[Role::Policy]),
            operator("carol", k(CAROL), &[Role::Revoke, Role::Admit]),
            operator("eve", k(EVE), &[Role::Policy]),
        ],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: limits,
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    };

    // Version 1's history: h1 to h3 in a line, h4 beside h2 and h3.
    let mut doc = PolicyDoc::new();
    let h1 = doc
        .build_bundle(actor(EVE, 0), "main", &content(POLICIES[0]), 0)
        .unwrap()
        .unwrap();
    let after_h1 = doc.clone();
    let h2 = doc
        .build_revoke(actor(CAROL, 0), SUBJECTS[0], "test", 0)
        .unwrap()
        .unwrap();
    let h3 = doc
        .build_bundle(actor(EVE, 1), "eve", &content(POLICIES[1]), 0)
        .unwrap()
        .unwrap();
    let mut beside = after_h1.clone();
    let h4 = beside
        .build_revoke(actor(CAROL, 1), SUBJECTS[4], "test", 0)
        .unwrap()
        .unwrap();
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.operators = vec![
        operator("alice", k(ALICE), &all),
        operator("bob", k(BOB), &[Role::Policy]),
        operator("carol", k(CAROL), &[Role::Revoke]),
    ];
    v2.policy_threshold = 2;
    v2.accepted_heads = vec![h3.hash().0, h4.hash().0];
    let signed_v1: Arc<[u8]> = Arc::from(SignedRoot::sign(&v1, &[k(7)]).to_bytes());
    let chain = vec![(v1.clone(), signed_v1)];

    // The base: version 2, h1 to h3 (vouched), then a bundle by bob and
    // alice, and n's quarantine of User::"q".
    let mut base = SignedState::new(v2.clone())
        .with_chain(chain.clone())
        .with_held_limits(LIMITS);
    base.advance(CLOCK * 1000);
    let v1_signed = [
        signed_update(h1.raw_bytes(), 1, &[k(EVE)]),
        signed_update(h2.raw_bytes(), 1, &[k(CAROL)]),
        signed_update(h3.raw_bytes(), 1, &[k(EVE)]),
    ];
    for r in base.ingest_from(
        v1_signed.iter().map(|b| Arc::from(&b[..])).collect(),
        Source::Local,
    ) {
        assert!(matches!(r, Ok(Ingested::Applied { .. })), "{r:?}");
    }
    let mut doc = base.doc().clone();
    let h5 = doc
        .build_bundle(actor(BOB, 0), "main", &content(POLICIES[3]), 0)
        .unwrap()
        .unwrap();
    let h5_bytes = signed_update(h5.raw_bytes(), 2, &[k(BOB), k(ALICE)]);
    let issued = CLOCK - 100;
    let json = record_json(Some(node_id(k(NODE_N))), issued, Some(1800), false);
    let h6 = doc
        .build_quarantine(actor(NODE_N, 0), SUBJECTS[1], &json, issued as i64)
        .unwrap()
        .unwrap();
    let h6_bytes = order_bytes(h6.raw_bytes(), 2, k(NODE_N), &certs[0]);
    for b in [&h5_bytes, &h6_bytes] {
        let r = base.ingest(b);
        assert!(matches!(r, Ok(Ingested::Applied { .. })), "{r:?}");
    }

    // Withheld: children of the base, a grandchild, h4, orders, a lift.
    let on_base = base.doc().clone();
    let mut d = on_base.clone();
    let w1 = d
        .build_revoke(actor(CAROL, 0), SUBJECTS[2], "test", 0)
        .unwrap()
        .unwrap();
    let with_w1 = d.clone();
    let w3 = d
        .build_revoke(actor(CAROL, 0), r#"User::"z""#, "test", 0)
        .unwrap()
        .unwrap();
    let mut d = on_base.clone();
    let w2 = d
        .build_bundle(actor(ALICE, 0), "second", &content(POLICIES[2]), 0)
        .unwrap()
        .unwrap();
    let with_w2 = d;
    let mut d = on_base.clone();
    let json = record_json(Some(node_id(k(NODE_R))), CLOCK, Some(600), false);
    let w4 = d
        .build_quarantine(actor(NODE_R, 0), SUBJECTS[3], &json, CLOCK as i64)
        .unwrap()
        .unwrap();
    let with_w4 = d;
    let mut d = on_base.clone();
    let json = record_json(Some(node_id(k(NODE_N))), CLOCK, Some(600), false);
    let w5 = d
        .build_quarantine(actor(NODE_N, 0), SUBJECTS[1], &json, CLOCK as i64)
        .unwrap()
        .unwrap();
    let mut d = on_base.clone();
    let json = record_json(None, CLOCK, None, true);
    let w7 = d
        .build_quarantine(actor(CAROL, 2), SUBJECTS[1], &json, CLOCK as i64)
        .unwrap()
        .unwrap();
    let mut d = on_base.clone();
    let w8 = d
        .build_reinstate(actor(CAROL, 2), SUBJECTS[0], 0)
        .unwrap()
        .unwrap();
    let mut d = on_base.clone();
    let json = record_json(Some(node_id(k(NODE_R))), CLOCK, Some(600), false);
    let w9 = d
        .build_quarantine(actor(NODE_R, 0), SUBJECTS[1], &json, CLOCK as i64)
        .unwrap()
        .unwrap();

    let ops = |v: &[usize]| Signed::Operators(v.to_vec());
    let t = |c: &Change, version: u64, signed: Signed| Template {
        change: c.raw_bytes().to_vec(),
        version,
        signed,
    };
    let templates = vec![
        t(&h1, 1, ops(&[EVE])),
        t(&h2, 1, ops(&[CAROL])),
        t(&h3, 1, ops(&[EVE])),
        t(&h5, 2, ops(&[BOB, ALICE])),
        t(&h6, 2, Signed::Node(NODE_N, 0)),
        t(&w1, 2, ops(&[CAROL])),
        t(&w2, 2, ops(&[ALICE, BOB])),
        t(&w3, 2, ops(&[CAROL])),
        t(&w4, 2, Signed::Node(NODE_R, 4)),
        t(&w5, 2, Signed::Node(NODE_N, 0)),
        t(&h4, 1, ops(&[CAROL])),
        t(&w7, 2, ops(&[CAROL])),
        t(&w8, 2, ops(&[CAROL])),
        t(&w9, 2, Signed::Node(NODE_R, 4)),
    ];
    let mut hashes: Vec<ChangeHash> = [&h1, &h2, &h3, &h4, &h5, &h6, &w1, &w2, &w3, &w4]
        .into_iter()
        .chain([&w5, &w7, &w8, &w9])
        .map(|c| c.hash())
        .collect();
    hashes.push(weft_crdt::schema::genesis_hash());
    let mut actors: Vec<ActorId> = (0..keys.len()).map(|i| actor(i, 0)).collect();
    actors.push(ActorId::from(weft_crdt::schema::GENESIS_ACTOR.to_vec()));
    actors.push(actor(EVE, 1));
    actors.push(actor(CAROL, 2));
    Fixture {
        docs: vec![
            on_base,
            with_w1,
            with_w2,
            with_w4,
            after_h1,
            beside,
            PolicyDoc::new(),
        ],
        keys,
        certs,
        v2,
        chain,
        base,
        templates,
        hashes,
        actors,
    }
}

fn node_id(key: &SecretKey) -> String {
    NodeId::new(key.public()).to_string()
}

// ---------------------------------------------------------------------------
// Building one update

fn text(s: &str) -> &str {
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn pick<'a, T>(list: &'a [T], i: u8) -> &'a T {
    &list[i as usize % list.len()]
}

fn subject(s: &Subject) -> &str {
    match s {
        Subject::Known(i) => *pick(SUBJECTS, *i),
        Subject::Raw(s) => text(s),
    }
}

/// The change an origin writes and how its author would sign it.
fn write(
    fx: &Fixture,
    origin: &Origin,
    sent: &[Arc<[u8]>],
) -> Option<Result<(Vec<u8>, u64, Signed), Arc<[u8]>>> {
    let doc_on = |on: u8| (pick(&fx.docs, on).clone(), if on % 7 >= 4 { 1 } else { 2 });
    let author_actor = |who: u8, nonce: u8| actor_for(&key_of(fx, who).public(), [nonce; 8]);
    // An honest author's cosigners: a second policy operator for a bundle
    // under version 2.
    let with_cosigner = |who: u8, version: u64| {
        let who = who as usize % fx.keys.len();
        let mut v = vec![who];
        if version == 2 {
            v.push(if who == ALICE { BOB } else { ALICE });
        }
        Signed::Operators(v)
    };
    let built = match origin {
        Origin::Template(i) => {
            let t = pick(&fx.templates, *i);
            return Some(Ok((t.change.clone(), t.version, t.signed.clone())));
        }
        Origin::Again(i) => {
            return (!sent.is_empty()).then(|| Err(pick(sent, *i).clone()));
        }
        Origin::Revoke {
            on,
            author,
            nonce,
            subject: s,
            reason,
            time,
        } => {
            let (mut doc, version) = doc_on(*on);
            let change = doc
                .build_revoke(
                    author_actor(*author, *nonce),
                    subject(s),
                    text(reason),
                    *time,
                )
                .ok()??;
            (
                change,
                version,
                Signed::Operators(vec![*author as usize % fx.keys.len()]),
            )
        }
        Origin::Reinstate {
            on,
            author,
            nonce,
            subject: s,
            time,
        } => {
            let (mut doc, version) = doc_on(*on);
            let change = doc
                .build_reinstate(author_actor(*author, *nonce), subject(s), *time)
                .ok()??;
            (
                change,
                version,
                Signed::Operators(vec![*author as usize % fx.keys.len()]),
            )
        }
        Origin::Bundle {
            on,
            author,
            nonce,
            name,
            policy,
            entities,
            time,
        } => {
            let (mut doc, version) = doc_on(*on);
            let name = match name {
                Name::Known(i) => *pick(NAMES, *i),
                Name::Raw(s) => text(s),
            };
            let mut c = content(match policy {
                Policy::Known(i) => *pick(POLICIES, *i),
                Policy::Raw(s) => text(s),
            });
            c.entities = entities.as_deref().map(|e| text(e).to_owned());
            let change = doc
                .build_bundle(author_actor(*author, *nonce), name, &c, *time)
                .ok()??;
            (change, version, with_cosigner(*author, version))
        }
        Origin::Quarantine {
            on,
            writer,
            nonce,
            subject: s,
            record,
        } => {
            let (mut doc, version) = doc_on(*on);
            let who = *writer as usize % fx.keys.len();
            let is_node = who == NODE_N || who == NODE_R;
            let (json, time) = match record {
                Record::Raw(s) => (text(s).to_owned(), CLOCK as i64),
                Record::Fields {
                    issued,
                    ttl,
                    issuer,
                    lifted,
                    reason,
                } => {
                    let issued_at = CLOCK.saturating_add_signed(i64::from(*issued));
                    let issuer = match issuer {
                        Issuer::Writer => is_node.then(|| node_id(&fx.keys[who])),
                        Issuer::None => None,
                        Issuer::Node(i) => Some(node_id(key_of(fx, *i))),
                        Issuer::Raw(s) => Some(text(s).to_owned()),
                    };
                    let json = serde_json::to_string(&QuarantineRecord {
                        reason: text(reason).to_owned(),
                        issuer,
                        issued_at,
                        expires_at: ttl.map(|t| issued_at.saturating_add_signed(i64::from(t))),
                        score: Some(0.9),
                        evidence: Vec::new(),
                        lifted: *lifted,
                    })
                    .ok()?;
                    (json, issued_at as i64)
                }
            };
            let change = doc
                .build_quarantine(author_actor(*writer, *nonce), subject(s), &json, time)
                .ok()??;
            let signed = if is_node {
                Signed::Node(who, if who == NODE_N { 0 } else { 4 })
            } else {
                Signed::Operators(vec![who])
            };
            (change, version, signed)
        }
    };
    let (change, version, signed) = built;
    Some(Ok((change.raw_bytes().to_vec(), version, signed)))
}

/// The chunk's contents: everything after its magic bytes, checksum, type
/// and length, when the header reads as one.
fn body_of(change: &[u8]) -> Option<&[u8]> {
    let mut at = 9;
    loop {
        let b = *change.get(at)?;
        at += 1;
        if b & 0x80 == 0 {
            return change.get(at..);
        }
        if at > 18 {
            return None;
        }
    }
}

/// A change chunk of `body`, its length and checksum as automerge writes
/// them (chunk type 1, uncompressed).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut head = vec![1u8];
    let mut n = body.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            head.push(b);
            break;
        }
        head.push(b | 0x80);
    }
    let mut hasher = Sha256::new();
    hasher.update(&head);
    hasher.update(body);
    let hash = hasher.finalize();
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83];
    out.extend_from_slice(&hash[..4]);
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    out
}

/// Applies `m` to the change bytes; false when it does not apply.
fn mutate(fx: &Fixture, change: &mut Vec<u8>, m: &Mutation) -> bool {
    match m {
        Mutation::Flip { at, xor } => edit_body(change, |b| {
            if b.is_empty() {
                return false;
            }
            let i = *at as usize % b.len();
            b[i] ^= xor.get();
            true
        }),
        Mutation::Cut { at } => edit_body(change, |b| {
            let i = *at as usize % (b.len() + 1);
            b.truncate(i);
            true
        }),
        Mutation::Insert { at, bytes } => edit_body(change, |b| {
            let i = *at as usize % (b.len() + 1);
            b.splice(i..i, bytes.iter().take(16).copied());
            true
        }),
        Mutation::Checksum => {
            if change.len() < 8 {
                return false;
            }
            change[4] ^= 1;
            true
        }
        _ => edit_expanded(change, |e| expand_edit(fx, e, m)),
    }
}

fn edit_body(change: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
    let Some(body) = body_of(change) else {
        return false;
    };
    let mut body = body.to_vec();
    if !f(&mut body) {
        return false;
    }
    *change = frame(&body);
    true
}

/// Decodes the change, edits it, and encodes it again. Both directions run
/// under `catch_unwind`: automerge panics on some changes it parses, and on
/// some it is asked to encode.
fn edit_expanded(change: &mut Vec<u8>, f: impl FnOnce(&mut legacy::Change) -> bool) -> bool {
    let Ok(parsed) = PolicyDoc::parse_change(change) else {
        return false;
    };
    let Ok(mut expanded) = PolicyDoc::expand(&parsed) else {
        return false;
    };
    if !f(&mut expanded) {
        return false;
    }
    match catch_unwind(AssertUnwindSafe(move || Change::from(expanded))) {
        Ok(c) => {
            *change = c.raw_bytes().to_vec();
            true
        }
        Err(_) => false,
    }
}

fn expand_edit(fx: &Fixture, e: &mut legacy::Change, m: &Mutation) -> bool {
    let actor = |i: u8| pick(&fx.actors, i).clone();
    match m {
        Mutation::Seq(d) => e.seq = e.seq.saturating_add_signed(i64::from(*d)),
        Mutation::StartOp(d) => {
            let s = e.start_op.get().saturating_add_signed(i64::from(*d));
            e.start_op = std::num::NonZeroU64::new(s.max(1)).expect("at least 1");
        }
        Mutation::Time(t) => e.time = *t,
        Mutation::Deps(d) => match d {
            Deps::Clear => e.deps.clear(),
            Deps::Drop(i) => {
                if e.deps.is_empty() {
                    return false;
                }
                let i = *i as usize % e.deps.len();
                e.deps.remove(i);
            }
            Deps::Add(i) => e.deps.push(*pick(&fx.hashes, *i)),
            Deps::Random(h) => e.deps.push(ChangeHash(*h)),
            Deps::Twice(i) => {
                if e.deps.is_empty() {
                    return false;
                }
                let h = *pick(&e.deps, *i);
                e.deps.push(h);
            }
        },
        Mutation::Actor { who, nonce } => {
            e.actor_id = if *nonce == 0xff {
                actor(*who)
            } else {
                actor_for(&key_of(fx, *who).public(), [*nonce; 8])
            }
        }
        Mutation::Message(msg) => e.message = msg.as_deref().map(|s| text(s).to_owned()),
        Mutation::Extra(b) => e.extra_bytes = b.iter().take(32).copied().collect(),
        Mutation::Op { op, edit } => return op_edit(fx, e, *op, edit),
        Mutation::Flip { .. } | Mutation::Cut { .. } | Mutation::Insert { .. } => return false,
        Mutation::Checksum => return false,
    }
    true
}

fn op_edit(fx: &Fixture, e: &mut legacy::Change, op: u8, edit: &OpEdit) -> bool {
    if e.operations.is_empty() {
        return false;
    }
    let n = e.operations.len();
    let i = op as usize % n;
    let start = e.start_op.get();
    let own = e.actor_id.clone();
    let actor = |a: u8| {
        if a == 0 {
            own.clone()
        } else {
            pick(&fx.actors, a).clone()
        }
    };
    let o = &mut e.operations[i];
    match edit {
        OpEdit::ObjRoot => o.obj = ObjectId::Root,
        OpEdit::Obj { counter, actor: a } => {
            let base = match &o.obj {
                ObjectId::Id(OpId(c, _)) => *c,
                ObjectId::Root => start,
            };
            o.obj = ObjectId::Id(OpId(
                base.saturating_add_signed(i64::from(*counter)),
                actor(*a),
            ));
        }
        OpEdit::Key(k) => o.key = Key::Map(text(k).into()),
        OpEdit::Elem { counter, actor: a } => {
            o.key = Key::Seq(if *counter == 0 {
                ElementId::Head
            } else {
                ElementId::Id(OpId(u64::from(*counter), actor(*a)))
            })
        }
        OpEdit::Delete => o.action = OpType::Delete,
        OpEdit::Put(s) => o.action = OpType::Put(ScalarValue::Str(text(s).into())),
        OpEdit::PutInt(v) => o.action = OpType::Put(ScalarValue::Int(*v)),
        OpEdit::MakeMap => o.action = OpType::Make(ObjType::Map),
        OpEdit::MakeList => o.action = OpType::Make(ObjType::List),
        OpEdit::Increment(v) => o.action = OpType::Increment(*v),
        OpEdit::Insert => o.insert = !o.insert,
        OpEdit::PredClear => o.pred = legacy::SortedVec::new(),
        OpEdit::Pred { counter, actor: a } => {
            let mut p: Vec<OpId> = o.pred.iter().cloned().collect();
            p.push(OpId(u64::from(*counter), actor(*a)));
            o.pred = p.into();
        }
        OpEdit::Remove => {
            e.operations.remove(i);
        }
        OpEdit::Repeat => {
            let copy = e.operations[i].clone();
            e.operations.insert(i, copy);
        }
    }
    true
}

/// Wraps and signs `change` as `envelope` says (`version` and `signed` are
/// the origin's own).
fn wrap(
    fx: &Fixture,
    change: Vec<u8>,
    version: u64,
    signed: &Signed,
    envelope: &Envelope,
) -> Option<Vec<u8>> {
    let version_of = |v: &Version| match v {
        Version::Own => version,
        Version::V1 => 1,
        Version::V2 => 2,
        Version::Next => 3,
        Version::Any(v) => *v,
    };
    // The hash the signatures cover; a change that does not frame as one
    // is signed over the hash of its bytes (refused before it is checked).
    let hash = weft_protocol::chunk::change_hash(&change)
        .unwrap_or_else(|_| ChangeHash(Sha256::digest(&change).into()));
    let damaged = |mut sig: Signature, damage: &Option<(u8, NonZeroU8)>| {
        if let Some((at, xor)) = damage {
            let mut b = sig.to_bytes();
            b[*at as usize % b.len()] ^= xor.get();
            sig = Signature::from_bytes(b);
        }
        sig
    };
    let update = |keys: &[usize], version: u64, damage: &Option<(u8, NonZeroU8)>| {
        let msg = signing_message(&hash, version);
        let mut signatures: Vec<UpdateSignature> = keys
            .iter()
            .map(|&k| UpdateSignature {
                key: fx.keys[k].public(),
                sig: fx.keys[k].sign(Domain::Update, &msg),
            })
            .collect();
        if let Some(first) = signatures.first_mut() {
            first.sig = damaged(first.sig, damage);
        }
        SignedUpdate {
            change: change.clone(),
            root_version: version,
            signatures,
        }
        .to_bytes()
    };
    let order = |node: usize, cert: usize, version: u64, damage: &Option<(u8, NonZeroU8)>| {
        let msg = signing_message(&hash, version);
        QuarantineOrder {
            change: change.clone(),
            root_version: version,
            cert: fx.certs[cert].clone(),
            sig: damaged(fx.keys[node].sign(Domain::Quarantine, &msg), damage),
        }
        .to_bytes()
    };
    Some(match (envelope, signed) {
        (Envelope::Auto, Signed::Operators(keys)) => update(keys, version, &None),
        (Envelope::Auto, Signed::Node(node, cert)) => order(*node, *cert, version, &None),
        (
            Envelope::Update {
                signers,
                version: v,
                damage,
            },
            _,
        ) => {
            let keys: Vec<usize> = signers
                .iter()
                .take(6)
                .map(|k| *k as usize % fx.keys.len())
                .collect();
            update(&keys, version_of(v), damage)
        }
        (
            Envelope::Order {
                node,
                cert,
                version: v,
                damage,
            },
            _,
        ) => order(
            *node as usize % fx.keys.len(),
            *cert as usize % fx.certs.len(),
            version_of(v),
            damage,
        ),
    })
}

/// The bytes of one item, or none when its origin writes nothing.
fn build(fx: &Fixture, item: &Item, sent: &[Arc<[u8]>]) -> Option<Arc<[u8]>> {
    let (mut change, version, signed) = match write(fx, &item.origin, sent)? {
        Ok(w) => w,
        Err(again) => return Some(again),
    };
    for m in item.mutations.iter().take(MAX_MUTATIONS) {
        mutate(fx, &mut change, m);
    }
    wrap(fx, change, version, &signed, &item.envelope).map(Arc::from)
}

// ---------------------------------------------------------------------------
// Running an input and checking the state

/// What a refusal must leave unchanged.
#[derive(Debug, PartialEq, Eq)]
struct Digest {
    heads: BTreeSet<ChangeHash>,
    applied: usize,
    held: usize,
    held_bytes: usize,
    wanted: BTreeSet<ChangeHash>,
}

fn digest(s: &SignedState) -> Digest {
    Digest {
        heads: s.heads().into_iter().collect(),
        applied: s.update_count(),
        held: s.held_count(),
        held_bytes: s.held_bytes(),
        wanted: s.wanted(),
    }
}

fn run(input: &Input) {
    let fx = fixture();
    let mut state = fx.base.clone();
    let mut sent: Vec<Arc<[u8]>> = Vec::new();
    let mut any_applied = false;
    for step in input.steps.iter().take(MAX_STEPS) {
        let before = digest(&state);
        let applied_before: BTreeSet<ChangeHash> = state.update_hashes().copied().collect();
        let (items, results) = match step {
            Step::Advance(a) => {
                let now = state.clock_ms();
                state.advance(match a {
                    Advance::Secs(s) => now + u64::from(*s) * 1000,
                    Advance::PastTtl => now + LIMITS.ttl_ms + 1,
                    Advance::Back(s) => now.saturating_sub(u64::from(*s) * 1000),
                });
                check_bounds(&mut state);
                continue;
            }
            Step::Local(item) => {
                let Some(bytes) = build(fx, item, &sent) else {
                    note("not built");
                    continue;
                };
                let r = state.ingest(&bytes);
                (vec![bytes], vec![r])
            }
            Step::Batch { from, items } => {
                let built: Vec<Arc<[u8]>> = items
                    .iter()
                    .take(MAX_BATCH)
                    .filter_map(|i| build(fx, i, &sent))
                    .collect();
                if built.is_empty() {
                    continue;
                }
                let source = match from {
                    Sender::Local => Source::Local,
                    Sender::PeerA => Source::Peer(NodeId::new(fx.keys[NODE_N].public())),
                    Sender::PeerB => Source::Peer(NodeId::new(fx.keys[4].public())),
                };
                let r = state.ingest_from(built.clone(), source);
                (built, r)
            }
        };
        assert_eq!(items.len(), results.len(), "one result per update");
        let dropped = state.take_dropped();
        for h in &dropped {
            assert!(!state.contains(h), "update {h} reported dropped is applied");
        }
        check_bounds(&mut state);
        let mut changed = false;
        for r in &results {
            note(&outcome(r));
            match r {
                Ok(Ingested::Applied { hash, released, .. }) => {
                    changed = true;
                    assert!(state.contains(hash), "applied {hash} is not in the state");
                    for (h, _) in released {
                        assert!(state.contains(h), "released {h} is not in the state");
                    }
                }
                Ok(Ingested::Held {
                    hash,
                    missing,
                    released,
                }) => {
                    changed = true;
                    assert!(!missing.is_empty(), "held {hash} for nothing");
                    assert!(!state.contains(hash), "held {hash} is applied");
                    for (h, _) in released {
                        assert!(state.contains(h), "released {h} is not in the state");
                    }
                }
                Ok(Ingested::Duplicate(hash)) => {
                    assert!(state.contains(hash), "duplicate {hash} is not in the state");
                }
                Err(_) => {}
            }
        }
        // Every update applied in the step is reported applied, once: the
        // node persists and announces exactly what the results report.
        let mut reported: Vec<ChangeHash> = Vec::new();
        for r in &results {
            match r {
                Ok(Ingested::Applied { hash, released, .. }) => {
                    reported.push(*hash);
                    reported.extend(released.iter().map(|(h, _)| *h));
                }
                Ok(Ingested::Held { released, .. }) => {
                    reported.extend(released.iter().map(|(h, _)| *h));
                }
                _ => {}
            }
        }
        let newly: BTreeSet<ChangeHash> = state
            .update_hashes()
            .filter(|h| !applied_before.contains(h))
            .copied()
            .collect();
        let reported_set: BTreeSet<ChangeHash> = reported.iter().copied().collect();
        assert_eq!(
            reported.len(),
            reported_set.len(),
            "an update reported applied twice: {reported:?}"
        );
        assert_eq!(
            newly, reported_set,
            "the updates applied are not those reported applied"
        );
        if !changed {
            let mut after = digest(&state);
            // A change refused as an equivocation is known from then on,
            // so a held update's dependency on it is no longer wanted.
            if results
                .iter()
                .any(|r| matches!(r, Err(e) if e.label() == "equivocation"))
            {
                after.wanted.clone_from(&before.wanted);
            }
            assert_eq!(before, after, "a refusal changed the state");
            assert!(dropped.is_empty(), "a refusal dropped {dropped:?}");
        }
        any_applied |= !newly.is_empty();
        sent.extend(items);
    }
    // Restoring costs more than the rest of an input: once, at its end.
    if any_applied {
        check_persistence(fx, &state);
    }
}

fn check_bounds(state: &mut SignedState) {
    assert!(
        state.held_count() <= LIMITS.max_updates,
        "{} updates held",
        state.held_count()
    );
    assert!(
        state.held_bytes() <= LIMITS.max_bytes,
        "{} bytes held",
        state.held_bytes()
    );
    for h in state.take_dropped() {
        assert!(
            !state.contains(&h),
            "update {h} reported dropped is applied"
        );
    }
}

/// The state restored from its snapshot, and rebuilt from its updates in
/// causal order, is the same state.
fn check_persistence(fx: &Fixture, state: &SignedState) {
    let saved = state.doc().save();
    let hashes: Vec<ChangeHash> = state
        .doc()
        .changes()
        .iter()
        .map(|c| c.hash())
        .filter(|h| *h != weft_crdt::schema::genesis_hash())
        .collect();
    let covered: Vec<(ChangeHash, Arc<[u8]>)> = hashes
        .iter()
        .map(|h| {
            let bytes = state
                .update_bytes(h)
                .unwrap_or_else(|| panic!("change {h} of the document has no update"));
            (*h, bytes)
        })
        .collect();
    let heads: BTreeSet<ChangeHash> = state.heads().into_iter().collect();

    let restored = SignedState::restore_on(
        1,
        fx.v2.clone(),
        || PolicyDoc::load(&saved).map_err(|e| e.to_string()),
        &covered,
    )
    .unwrap_or_else(|e| panic!("the snapshot of an accepted state is refused: {e}"));
    let restored_heads: BTreeSet<ChangeHash> = restored.heads().into_iter().collect();
    assert_eq!(restored_heads, heads, "the snapshot restores other heads");
    assert_eq!(restored.update_count(), state.update_count());
    assert_eq!(
        restored.view().summary(),
        state.view().summary(),
        "the restored view differs from the state's"
    );

    let mut replayed = SignedState::new(fx.v2.clone())
        .with_chain(fx.chain.clone())
        .with_max_held(covered.len() + 1);
    replayed.advance(state.clock_ms());
    let verified: Vec<_> = covered
        .iter()
        .map(|(h, b)| {
            let v = decode_verified(b)
                .unwrap_or_else(|e| panic!("accepted update {h} does not verify: {e}"));
            (v, b.clone())
        })
        .collect();
    for (r, (h, _)) in replayed
        .ingest_verified_batch(verified)
        .iter()
        .zip(&covered)
    {
        assert!(
            matches!(r, Ok(Ingested::Applied { .. })),
            "accepted update {h}, ingested again in causal order: {r:?}"
        );
    }
    let replayed_heads: BTreeSet<ChangeHash> = replayed.heads().into_iter().collect();
    assert_eq!(
        replayed_heads, heads,
        "the updates ingested again reach other heads"
    );
}

// ---------------------------------------------------------------------------
// Outcomes, for the histogram

fn outcome(r: &Result<Ingested, UpdateError>) -> String {
    match r {
        Ok(Ingested::Applied { .. }) => "applied".into(),
        Ok(Ingested::Held { .. }) => "held".into(),
        Ok(Ingested::Duplicate(_)) => "duplicate".into(),
        Err(e) => {
            let mut s = format!("refused {}", e.label());
            if matches!(
                e.label(),
                "malformed" | "schema" | "node_quarantine" | "state"
            ) {
                // The gist of the sentence: its first words, numbers and
                // hashes left out.
                let msg = e.to_string();
                s.push(':');
                for w in msg.split_whitespace().take(7) {
                    let w = if w.chars().any(|c| c.is_ascii_digit()) {
                        "#"
                    } else {
                        w
                    };
                    let _ = write!(s, " {w}");
                }
            }
            s
        }
    }
}

fn note(line: &str) {
    static OUT: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let path = std::env::var_os("WEFT_INGEST_OUTCOMES")?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the outcomes file opens");
        Some(Mutex::new(file))
    });
    if let Some(f) = out {
        let _ = writeln!(f.lock().expect("not poisoned"), "{line}");
    }
}

// ---------------------------------------------------------------------------
// Panics

/// The panics of the current input, with their location (and a backtrace
/// when `RUST_BACKTRACE` asks for one).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if let Ok(mut p) = PANICS.try_lock()
                && p.len() < 8
            {
                p.push(format!("{info}\n{}", std::backtrace::Backtrace::capture()));
            }
        }))
    });
}

fuzz_target!(|input: Input| {
    record_panics();
    PANICS.lock().expect("not poisoned").clear();
    if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
        eprintln!("a panic escaped the ingest of:\n{input:#?}");
        for p in PANICS.lock().expect("not poisoned").iter() {
            eprintln!("---- panic (the last is the one that escaped):\n{p}");
        }
        std::process::abort();
    }
});
