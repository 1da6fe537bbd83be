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
//! envelope kind tells them apart, [`decode_verified`]). Authorization
//! ([`authorize_order`]) is a function of the order and the trust root only,
//! so every replica accepts the same orders:
//! - the root lets nodes quarantine;
//! - the certificate verifies under the root (issuer with the admit role),
//!   names the key that signed, and that key is the change's author;
//! - the change only puts records under `quarantines/`, no deletes (a node
//!   cannot lift a quarantine), each a well-formed record whose `issuer` is
//!   the signing node, with an expiry no later than `issued_at + max_ttl`.
//!
//! The rest of the bounded authority (the hourly allowance, a revoked
//! issuer, expiry) depends on the time and on other records, so it is
//! applied when a request is decided ([`weft_crdt::decide_at`]).

use serde::{Deserialize, Serialize};
use weft_crdt::quarantine::{QuarantineRecord, QuarantineRules, parse_record};
use weft_crdt::view::canonical_subject;
use weft_crdt::{ActorId, Change, ChangeSummary, PolicyDoc, Section};

use crate::encoding::{self, Kind};
use crate::identity::{Domain, NodeId, SecretKey, Signature};
use crate::trust::{MAX_NODE_CERT_LEN, SignedNodeCert, TrustRoot};
use crate::update::{
    Authorization, SignatureCheck, SignedUpdate, UpdateError, VerifiedUpdate, actor_for, author_of,
    check_chunk, signing_message,
};

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
        check_chunk(&o.change)?;
        if o.cert.len() > MAX_NODE_CERT_LEN {
            return Err(UpdateError::Malformed(
                "the quarantine order's certificate is over its size limit".into(),
            ));
        }
        Ok(o)
    }

    /// Parses the change, recomputes its hash, decodes the certificate and
    /// checks the signature under the key the certificate names.
    pub fn verify(self) -> Result<VerifiedUpdate, UpdateError> {
        let (update, check) = self.decode_unchecked()?;
        check.verify()?;
        Ok(update)
    }

    /// [`QuarantineOrder::verify`] without its signature check, which is
    /// returned to be made.
    pub(crate) fn decode_unchecked(self) -> Result<(VerifiedUpdate, SignatureCheck), UpdateError> {
        let change = PolicyDoc::parse_change(&self.change)?;
        let hash = change.hash();
        let cert = SignedNodeCert::from_bytes(&self.cert).map_err(|e| {
            UpdateError::Malformed(format!("the quarantine order's certificate: {e}"))
        })?;
        let node = cert
            .cert()
            .map_err(|e| {
                UpdateError::Malformed(format!("the quarantine order's certificate: {e}"))
            })?
            .node;
        let check = SignatureCheck {
            domain: Domain::Quarantine,
            key: node.public_key(),
            msg: signing_message(&hash, self.root_version),
            sig: self.sig,
        };
        let update = VerifiedUpdate {
            update: SignedUpdate {
                change: self.change,
                root_version: self.root_version,
                signatures: Vec::new(),
            },
            change,
            hash,
            signers: Default::default(),
            issuer: Some(Box::new(NodeIssuer { node, cert })),
        };
        Ok((update, check))
    }
}

/// Decodes and verifies a signed update or a quarantine order, by the kind
/// its envelope names.
pub fn decode_verified(bytes: &[u8]) -> Result<VerifiedUpdate, UpdateError> {
    if encoding::kind_of(bytes) == Some(Kind::Quarantine) {
        QuarantineOrder::from_bytes(bytes)?.verify()
    } else {
        SignedUpdate::from_bytes(bytes)?.verify()
    }
}

/// [`decode_verified`] for every item, on as many threads as the process may
/// run on (each item is still checked on its own, with `verify_strict`).
/// Results are in the order of `items`. For checking many stored updates at
/// once, such as a node's start without a usable snapshot; one update at a
/// time stays on the caller's thread.
pub fn decode_verified_all<B: AsRef<[u8]> + Sync>(
    items: &[B],
) -> Vec<Result<VerifiedUpdate, UpdateError>> {
    /// Below this, starting threads costs more than it saves.
    const PER_THREAD: usize = 256;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(items.len() / PER_THREAD)
        .max(1);
    if threads == 1 {
        return items.iter().map(|b| decode_verified(b.as_ref())).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|b| decode_verified(b.as_ref()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a verifying thread does not panic"))
            .collect()
    })
}

/// Decodes an update or an order and lists its signature checks, unmade.
fn decode_unchecked(bytes: &[u8]) -> Result<(VerifiedUpdate, Vec<SignatureCheck>), UpdateError> {
    if encoding::kind_of(bytes) == Some(Kind::Quarantine) {
        let (u, c) = QuarantineOrder::from_bytes(bytes)?.decode_unchecked()?;
        Ok((u, vec![c]))
    } else {
        SignedUpdate::from_bytes(bytes)?.decode_unchecked()
    }
}

/// Signatures per batch in [`decode_batch_verified`]: larger batches gain
/// little and cost more to redo.
pub const VERIFY_BATCH: usize = 128;

/// [`decode_verified`] for each of `group` (best at most [`VERIFY_BATCH`]
/// items), with their signatures checked in one batch, on this thread
/// (`identity::verify_batch`, about half the cost of one check at a time).
/// A batch that fails is checked again item by item, so each damaged record
/// gets its own error, and every result is `Ok` only where the item
/// verifies on its own as well.
///
/// Only for re-checking updates this node already accepted one at a time
/// (its store, at a start: [`crate::state::SignedState::restore`]): the
/// batch equation can accept a signature that `verify_strict` refuses, if
/// its *signer* (never a third party) built it to, so nodes that batched
/// differently could judge such an update differently. A store rewritten by
/// someone holding an operator's secret key is not something a signature
/// check can catch anyway.
pub fn decode_batch_verified<B: AsRef<[u8]>>(
    group: &[B],
) -> Vec<Result<VerifiedUpdate, UpdateError>> {
    let decoded: Vec<_> = group.iter().map(|b| decode_unchecked(b.as_ref())).collect();
    let checks: Vec<&SignatureCheck> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok())
        .flat_map(|(_, c)| c)
        .collect();
    let batch_holds = [Domain::Update, Domain::Quarantine]
        .into_iter()
        .all(|domain| {
            let items: Vec<_> = checks
                .iter()
                .filter(|c| c.domain == domain)
                .map(|c| (&c.key, c.msg.as_slice(), &c.sig))
                .collect();
            crate::identity::verify_batch(domain, &items).is_ok()
        });
    if batch_holds {
        decoded.into_iter().map(|d| d.map(|(u, _)| u)).collect()
    } else {
        group.iter().map(|b| decode_verified(b.as_ref())).collect()
    }
}

/// The raw change bytes of a signed update or a quarantine order.
pub fn change_bytes(bytes: &[u8]) -> Result<Vec<u8>, UpdateError> {
    if encoding::kind_of(bytes) == Some(Kind::Quarantine) {
        Ok(QuarantineOrder::from_bytes(bytes)?.change)
    } else {
        Ok(SignedUpdate::from_bytes(bytes)?.change)
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
/// under `root`.
pub fn authorize_order(
    summary: &ChangeSummary,
    change: &Change,
    issuer: &NodeIssuer,
    root: &TrustRoot,
) -> Result<Authorization, UpdateError> {
    let limits = root.node_quarantine;
    if !limits.allowed {
        return Err(refuse(format!(
            "trust root version {} does not let nodes quarantine",
            root.version
        )));
    }
    // Expiry is not checked here (it would make the verdict depend on when
    // it is asked); a compromised node is contained by revoking it.
    let cert = issuer
        .cert
        .verify(root, issuer.cert.cert().map(|c| c.issued).unwrap_or(0))
        .map_err(|e| refuse(format!("the issuer's certificate: {e}")))?;
    if author_of(&summary.actor) != Some(cert.node.public_key()) {
        return Err(refuse("the change's author is not the node that signed it"));
    }
    let sections = summary.sections();
    if sections.iter().any(|s| *s != Section::Quarantines) || summary.paths.is_empty() {
        return Err(refuse("a node may only write under quarantines/"));
    }
    let node = cert.node.to_string();
    let expanded = change.decode();
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
    }
    Ok(Authorization {
        sections,
        author: cert.node.public_key(),
        signers: vec![format!("node {}", cert.name)],
    })
}
