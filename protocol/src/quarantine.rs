//! Quarantine orders: the one change a node may make on its own.
//!
//! A node whose detector flags a principal writes a quarantine record for it
//! (`quarantines/SUBJECT`, see [`weft_crdt::quarantine`]) as one automerge
//! change, and signs the change hash with its node key in
//! [`Domain::Quarantine`] (never [`Domain::Update`]: a node key can never
//! sign policy). The order carries the node's certificate, so any node can
//! check it without having met the issuer:
//!
//! ```text
//! QuarantineOrder = { change, root_version, cert (SignedNodeCert bytes), sig }
//! ```
//!
//! It travels, is stored and is synced exactly like a signed update (its
//! envelope kind tells them apart, [`crate::boundary`]). At the boundary the
//! root must let nodes quarantine and the certificate must be one the
//! root's operators signed for the node whose key signed the order. Then
//! [`authorize_order`] reads the records; every rule but one is a function
//! of the order and the trust root only, so every replica accepts the same
//! orders:
//! - the change's author is the certified node;
//! - the change only puts records under `quarantines/`, no deletes (a node
//!   cannot lift a quarantine), each a well-formed record whose `issuer` is
//!   the signing node, with an expiry no later than `issued_at + max_ttl`;
//! - it overwrites only records the same node wrote (a node can shorten or
//!   lift no one else's quarantine);
//! - the certificate was valid at the record's `issued_at`, and the record
//!   expires no later than the certificate does;
//! - and, by the receiving node's clock, the record is not dated more than
//!   [`MAX_CLOCK_SKEW_SECS`] ahead (refused until the clock catches up).
//!
//! The rest of the bounded authority (the hourly allowance, a revoked
//! issuer, expiry, records dated in the future) depends on the time and on
//! other records, so it is applied when a request is decided
//! ([`weft_crdt::decide_at`], [`weft_crdt::quarantine`]).

use serde::{Deserialize, Serialize};
use weft_crdt::quarantine::{MAX_CLOCK_SKEW_SECS, QuarantineRecord, QuarantineRules, parse_record};
use weft_crdt::view::canonical_subject;
use weft_crdt::{ActorId, Change, ChangeSummary, PolicyDoc, Section};

use crate::encoding::{self, Kind};
use crate::identity::{Domain, NodeId, SecretKey, Signature};
use crate::trust::{MAX_NODE_CERT_LEN, SignedNodeCert, TrustRoot};
use crate::update::{Authorization, UpdateError, actor_for, author_of, signing_message};

/// The largest encoded order: one small record and a certificate.
pub const MAX_ORDER_BYTES: usize = 64 * 1024;

/// A node's signed quarantine order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineOrder {
    /// The raw bytes of one automerge change.
    #[serde(with = "encoding::bytes")]
    pub change: Vec<u8>,
    /// The trust-root version the node signed under.
    pub root_version: u64,
    /// The issuing node's certificate (`SignedNodeCert` bytes).
    #[serde(with = "encoding::bytes")]
    pub cert: Vec<u8>,
    /// The node's signature over `change hash || root version`, in
    /// [`Domain::Quarantine`].
    pub sig: Signature,
}

/// The node behind a verified order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIssuer {
    /// Its id.
    pub node: NodeId,
    /// Its certificate, as carried (checked against the root when authorized).
    pub cert: SignedNodeCert,
}

impl QuarantineOrder {
    /// Writes and signs an order quarantining `subject` on top of `doc`:
    /// the record's `issuer` is set to the node, and `issued_at` and
    /// `expires_at` are taken from `record`. `nonce` makes the change's actor
    /// fresh.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        doc: &mut PolicyDoc,
        key: &SecretKey,
        cert: &SignedNodeCert,
        root_version: u64,
        subject: &str,
        mut record: QuarantineRecord,
        nonce: [u8; 8],
    ) -> Result<QuarantineOrder, UpdateError> {
        let node = NodeId::new(key.public());
        record.issuer = Some(node.to_string());
        record.lifted = false;
        let json = serde_json::to_string(&record).expect("a record serializes");
        let actor: ActorId = actor_for(&key.public(), nonce);
        let change = doc
            .build_quarantine(actor, subject, &json, record.issued_at as i64)?
            .ok_or_else(|| UpdateError::Malformed("the quarantine changes nothing".into()))?;
        let sig = key.sign(
            Domain::Quarantine,
            &signing_message(&change.hash(), root_version),
        );
        Ok(QuarantineOrder {
            change: change.raw_bytes().to_vec(),
            root_version,
            cert: cert.to_bytes(),
            sig,
        })
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::Quarantine, self)
    }

    /// Decodes an order, refusing anything over [`MAX_ORDER_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<QuarantineOrder, UpdateError> {
        let o: QuarantineOrder = encoding::decode(Kind::Quarantine, bytes, MAX_ORDER_BYTES)?;
        crate::chunk::check_chunk(&o.change)?;
        if o.cert.len() > MAX_NODE_CERT_LEN {
            return Err(UpdateError::Malformed(
                "the quarantine order's certificate is over its size limit".into(),
            ));
        }
        Ok(o)
    }
}

/// The rules `root` sets for node-issued quarantines.
pub fn rules_of(root: &TrustRoot) -> QuarantineRules {
    QuarantineRules {
        nodes_allowed: root.node_quarantine.allowed,
        max_ttl_secs: root.node_quarantine.max_ttl_secs,
        max_per_hour: root.node_quarantine.max_per_node_per_hour,
    }
}

fn refuse(why: impl Into<String>) -> UpdateError {
    UpdateError::NodeQuarantine(why.into())
}

/// Checks that `issuer` may make `change` (touching what `summary` says)
/// under `root`, on a node whose clock reads `now` (Unix seconds). Every rule
/// but the last is a function of the order and the root alone, so every
/// replica reaches the same verdict:
/// - the root lets nodes quarantine, and the certificate is one its
///   operators signed for the node that signed the order and wrote the change;
/// - the change only puts records under `quarantines/` (no deletes, nothing
///   else), each keyed by a subject in canonical form;
/// - it replaces only records this node wrote before (every operation it
///   overwrites is the node's own): a node can lift or shorten no one
///   else's quarantine;
/// - each record is well formed, issued by this node, not lifted, and lasts
///   between 1 s and `max_ttl`;
/// - the certificate was valid when the record is dated (`issued_at` within
///   its window), and the record expires no later than the certificate: an
///   expired certificate authorizes nothing in force;
/// - last, the record is not dated more than [`MAX_CLOCK_SKEW_SECS`] after
///   `now` ([`UpdateError::FutureDated`]: a node refuses it until its
///   clock catches up, which an honest order never needs).
pub fn authorize_order(
    summary: &ChangeSummary,
    change: &Change,
    issuer: &NodeIssuer,
    root: &TrustRoot,
    now: u64,
) -> Result<Authorization, UpdateError> {
    let limits = root.node_quarantine;
    if !limits.allowed {
        return Err(refuse(format!(
            "trust root version {} does not let nodes quarantine",
            root.version
        )));
    }
    let cert = certified_by(issuer, root)?;
    let node_key = cert.node.public_key();
    if author_of(&summary.actor) != Some(node_key) {
        return Err(refuse("the change's author is not the node that signed it"));
    }
    let sections = summary.sections();
    if sections.iter().any(|s| *s != Section::Quarantines) || summary.paths.is_empty() {
        return Err(refuse("a node may only write under quarantines/"));
    }
    let node = cert.node.to_string();
    let expanded = PolicyDoc::expand(change)?;
    let mut latest = 0;
    for op in &expanded.operations {
        let weft_crdt::legacy::OpType::Put(weft_crdt::ScalarValue::Str(json)) = &op.action else {
            return Err(refuse(
                "a node may only put quarantine records, not delete or restructure",
            ));
        };
        let weft_crdt::legacy::Key::Map(subject) = &op.key else {
            return Err(refuse("a quarantine record must be keyed by its subject"));
        };
        if canonical_subject(subject) != subject.as_str() {
            return Err(refuse(format!("{subject:?} is not in canonical form")));
        }
        if op.pred.iter().any(|p| author_of(&p.1) != Some(node_key)) {
            return Err(refuse(format!(
                "the order replaces a record of {subject} that this node did not write"
            )));
        }
        let rec = parse_record(json).ok_or_else(|| refuse("the quarantine record is not valid"))?;
        if rec.issuer.as_deref() != Some(node.as_str()) {
            return Err(refuse("the record's issuer is not the node that signed it"));
        }
        if rec.lifted {
            return Err(refuse("a node cannot lift a quarantine"));
        }
        let Some(expires) = rec.expires_at else {
            return Err(refuse("a node's quarantine must expire"));
        };
        if expires <= rec.issued_at || expires - rec.issued_at > limits.max_ttl_secs {
            return Err(refuse(format!(
                "the quarantine lasts {} s; the trust root allows 1 to {} s",
                expires.saturating_sub(rec.issued_at),
                limits.max_ttl_secs
            )));
        }
        if rec.issued_at < cert.issued || rec.issued_at >= cert.expires {
            return Err(refuse(format!(
                "the issuer's certificate was not valid at {}, when the order is dated (it is valid from {} until {})",
                crate::time::format_timestamp(rec.issued_at),
                crate::time::format_timestamp(cert.issued),
                crate::time::format_timestamp(cert.expires)
            )));
        }
        if expires > cert.expires {
            return Err(refuse(format!(
                "the quarantine would outlast the issuer's certificate, which expires at {}",
                crate::time::format_timestamp(cert.expires)
            )));
        }
        latest = latest.max(rec.issued_at);
    }
    if latest > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(UpdateError::FutureDated {
            ahead: latest - now,
            skew: MAX_CLOCK_SKEW_SECS,
        });
    }
    Ok(Authorization {
        sections,
        author: node_key,
        signers: vec![format!("node {}", cert.name)],
    })
}

/// The certificate of `issuer`, checked against `root` for everything but
/// its validity in time: issuer an operator with the admit role, signature,
/// and the node it names.
pub fn certified_by(
    issuer: &NodeIssuer,
    root: &TrustRoot,
) -> Result<crate::trust::NodeCert, UpdateError> {
    let refuse = |e: String| UpdateError::NodeQuarantine(format!("the issuer's certificate: {e}"));
    let issued = issuer
        .cert
        .cert()
        .map_err(|e| refuse(e.to_string()))?
        .issued;
    // Checked as of its own start: everything but its window in time.
    let cert = issuer
        .cert
        .verify(root, issued)
        .map_err(|e| refuse(e.to_string()))?;
    if cert.node != issuer.node {
        return Err(refuse(format!(
            "it is for node {}, not for {}",
            cert.node, issuer.node
        )));
    }
    Ok(cert)
}
