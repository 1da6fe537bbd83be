//! Detection summaries as gossip delivers them: the envelope, the signature
//! and the body's decoder, then the merge into a mesh view.
//!
//! Random bytes stop at the signature, so most inputs are signed here by a
//! fixed node key: the body is either fuzzed bytes or a real summary built
//! from fuzzed fields and then damaged byte by byte, so the body decoder
//! and the bounds checks see near-valid input. Whatever comes in, nothing
//! panics; what is refused leaves the view unchanged; what is accepted
//! keeps its bounds and re-encodes to the bytes that were signed.
//!
//! The same summaries also come wrapped as the node gossips them
//! (`SummaryGossip`: the signed summary and its node's certificate, the
//! certificate signed by an operator of a fixed trust root, or not, and the
//! envelope's bytes damaged), through the node's whole check
//! (`MeshDetect::receive`): a summary not merged leaves the view unchanged.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weft_node::detect::mesh::{MeshConfig, MeshView};
use weft_node::mesh_detect::{Arrival, MeshDetect, Received};
use weft_protocol::encoding::{self, Kind};
use weft_protocol::identity::{Domain, NodeId, SecretKey};
use weft_protocol::summary::{
    MAX_PRINCIPAL_LEN, MAX_PRINCIPALS, PrincipalSummary, SignedSummary, Summary,
};
use weft_protocol::summary_gossip::SummaryGossip;
use weft_protocol::trust::{NodeCert, Operator, QuarantineLimits, Role, SignedNodeCert, TrustRoot};

const T0: u64 = 1_767_600_000_000;

#[derive(Debug, Arbitrary)]
struct Line {
    principal: String,
    requests: u32,
    denies: u32,
    token_failures: u32,
    resources: [u64; 4],
    actions: u64,
    pairs: [u64; 4],
}

#[derive(Debug, Arbitrary)]
enum Body {
    /// Fuzzed bytes, signed as they are.
    Raw(Vec<u8>),
    /// A summary from fuzzed fields, encoded, then damaged.
    Built {
        slot: u8,
        slot_ms: u32,
        dropped: u32,
        lines: Vec<Line>,
        edits: Vec<(u16, u8)>,
        other_node: bool,
    },
}

#[derive(Debug, Arbitrary)]
enum Input {
    /// Bytes as they come off the wire, unsigned.
    Wire(Vec<u8>),
    /// A signed body; `damage_sig` flips a bit of the signature.
    Signed {
        body: Body,
        damage_sig: Option<u8>,
        admitted: bool,
    },
    /// A signed body in the gossip envelope, with a certificate from the
    /// root's operator (`certified`) or from a stranger, the envelope's
    /// bytes then damaged.
    Gossip {
        body: Body,
        damage_sig: Option<u8>,
        certified: bool,
        edits: Vec<(u16, u8)>,
    },
}

fn operator() -> &'static SecretKey {
    static K: OnceLock<SecretKey> = OnceLock::new();
    K.get_or_init(|| SecretKey::from_seed([1; 32]))
}

fn root() -> &'static TrustRoot {
    static R: OnceLock<TrustRoot> = OnceLock::new();
    R.get_or_init(|| TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![SecretKey::from_seed([9; 32]).public()],
        root_threshold: 1,
        operators: vec![Operator {
            name: "ops".into(),
            key: operator().public(),
            roles: [Role::Admit].into_iter().collect(),
        }],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    })
}

fn signed(body: &Body, damage_sig: Option<u8>) -> SignedSummary {
    let body = body_bytes(body);
    let mut sig = key().sign(Domain::DetectSummary, &body).to_bytes();
    if let Some(b) = damage_sig {
        sig[usize::from(b) % 64] ^= 1 << (b % 8);
    }
    SignedSummary {
        node: NodeId::new(key().public()),
        body,
        sig: weft_protocol::identity::Signature::from_bytes(sig),
    }
}

fn key() -> &'static SecretKey {
    static K: OnceLock<SecretKey> = OnceLock::new();
    K.get_or_init(|| SecretKey::from_seed([7; 32]))
}

fn body_bytes(b: &Body) -> Vec<u8> {
    match b {
        Body::Raw(bytes) => bytes.clone(),
        Body::Built {
            slot,
            slot_ms,
            dropped,
            lines,
            edits,
            other_node,
        } => {
            let node = if *other_node {
                NodeId::new(SecretKey::from_seed([8; 32]).public())
            } else {
                NodeId::new(key().public())
            };
            let mut principals: Vec<PrincipalSummary> = lines
                .iter()
                .take(64)
                .map(|l| PrincipalSummary {
                    principal: l.principal.chars().take(300).collect(),
                    requests: l.requests,
                    denies: l.denies,
                    token_failures: l.token_failures,
                    resources: l.resources,
                    actions: [l.actions],
                    pairs: l.pairs,
                })
                .collect();
            if lines.len() % 2 == 0 {
                principals.sort_by(|a, b| a.principal.cmp(&b.principal));
            }
            let s = Summary {
                node,
                slot_start_ms: T0 + u64::from(*slot) * 10_000,
                slot_ms: if *slot_ms % 3 == 0 { *slot_ms } else { 10_000 },
                dropped: *dropped,
                principals,
            };
            let mut bytes = encoding::encode(Kind::Summary, &s);
            for (at, x) in edits.iter().take(8) {
                let i = usize::from(*at) % bytes.len();
                bytes[i] ^= x;
            }
            bytes
        }
    }
}

fn check(view: &mut MeshView, bytes: &[u8], admitted: bool) {
    let cells = view.cells();
    let sites = view.sites();
    match view.ingest_bytes(bytes, |_| admitted) {
        Ok(n) => {
            assert!(admitted, "a summary from a node not admitted was merged");
            let (signed, s) = SignedSummary::open(bytes, |_| true).expect("merged, so it opens");
            assert_eq!(n, s.principals.len());
            assert!(s.principals.len() <= MAX_PRINCIPALS);
            for p in &s.principals {
                assert!(!p.principal.is_empty() && p.principal.len() <= MAX_PRINCIPAL_LEN);
                assert!(p.denies <= p.requests && p.token_failures <= p.requests);
                let w = view.window(&p.principal);
                assert!(w.total.requests >= p.requests);
            }
            assert_eq!(encoding::encode(Kind::Summary, &s), signed.body);
            key()
                .public()
                .verify(Domain::DetectSummary, &signed.body, &signed.sig)
                .expect("merged, so signed");
        }
        Err(e) => {
            let line = e.to_string();
            assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
            assert_eq!(view.cells(), cells, "a refusal changed the view");
            assert_eq!(view.sites(), sites, "a refusal changed the view");
        }
    }
}

fuzz_target!(|input: Input| {
    let mut view = MeshView::new(MeshConfig::default());
    view.advance(T0 + 20_000);
    match input {
        Input::Wire(bytes) => check(&mut view, &bytes, true),
        Input::Signed {
            body,
            damage_sig,
            admitted,
        } => check(&mut view, &signed(&body, damage_sig).to_bytes(), admitted),
        Input::Gossip {
            body,
            damage_sig,
            certified,
            edits,
        } => {
            let stranger = SecretKey::from_seed([3; 32]);
            let issuer: &SecretKey = if certified { operator() } else { &stranger };
            let cert = NodeCert {
                node: NodeId::new(key().public()),
                name: "n1".into(),
                issuer: issuer.public(),
                issued: T0 / 1000 - 60,
                expires: T0 / 1000 + 86_400,
            };
            let mut bytes = SummaryGossip {
                summary: signed(&body, damage_sig),
                cert: SignedNodeCert::sign(&cert, issuer),
            }
            .to_bytes();
            for (at, x) in edits.iter().take(8) {
                let i = usize::from(*at) % bytes.len();
                bytes[i] ^= x;
            }
            let md = MeshDetect::new(MeshConfig::default());
            md.view().advance(T0 + 20_000);
            let own = NodeId::new(SecretKey::from_seed([5; 32]).public());
            let arrival = Arrival {
                root: root(),
                now_ms: T0 + 20_000,
                own,
                from_admitted: true,
                revoked: &|_| false,
            };
            let before = {
                let v = md.view();
                (v.cells(), v.sites())
            };
            match md.receive(&bytes, &arrival) {
                Received::Merged { .. } => {
                    assert!(certified, "merged with a stranger's certificate")
                }
                Received::Ignored(_, line) | Received::Refused(line) => {
                    assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
                    let after = {
                        let v = md.view();
                        (v.cells(), v.sites())
                    };
                    assert_eq!(after, before, "a summary not merged changed the view");
                }
            }
        }
    }
});
