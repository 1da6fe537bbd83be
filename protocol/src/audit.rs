//! The audit trail's pure parts: hash-chained records, signed checkpoints of
//! the chain's head, and the verification that names the first bad record.
//!
//! # The chain
//! Record `n` (numbered from 1) holds the time it was written, the hash of
//! record `n - 1` ([`GENESIS`] for the first) and an event (opaque bytes, JSON
//! in the node). Its hash is
//!
//! ```text
//! sha256("weft/audit-record/v1" || 0x00 || n (u64 BE) || at_ms (u64 BE) || prev (32) || event)
//! ```
//!
//! so changing any byte of a record changes its hash (caught by recomputing
//! it), and removing, inserting or reordering records breaks the numbering or
//! the links (caught by walking the chain). What the chain alone cannot catch
//! is a node that rewrites its log and re-hashes everything after the change,
//! or cuts records off its end: that is what checkpoints are for.
//!
//! # Checkpoints
//! At intervals a node signs `(node, seq, head, at_ms)` — "my record `seq`
//! has hash `head`" — in [`Domain::AuditCheckpoint`] and gossips it with its
//! node certificate ([`CheckpointGossip`]), so that every peer, including
//! one that never met the node, can check that the node belongs to the mesh
//! ([`CheckpointGossip::verify`]). Peers keep what verifies. A rewritten chain disagrees with every checkpoint
//! issued after the first rewritten record, and a truncated one is shorter
//! than the newest checkpoint, whoever holds it. The node cannot forge a
//! peer's copy, and its own signature on the checkpoint stops it from
//! disowning it.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::encoding::{self, DecodeError, Kind};
use crate::identity::{Domain, NodeId, SecretKey, Signature, SignatureError};
use crate::time::format_timestamp;
use crate::trust::{SignedNodeCert, TrustError, TrustRoot};

/// A record's hash, and the chain's head.
pub type ChainHash = [u8; 32];

/// The `prev` of the first record.
pub const GENESIS: ChainHash = [0; 32];

/// The largest event a record may hold. Events are small JSON objects; the
/// limit keeps one record from bloating the log or an export.
pub const MAX_EVENT_LEN: usize = 16 * 1024;

/// The largest encoded [`SignedCheckpoint`]: a checkpoint is about 150
/// bytes, so anything much larger is malformed and refused before decoding.
pub const MAX_CHECKPOINT_LEN: usize = 512;

/// The largest encoded [`CheckpointGossip`]: a signed checkpoint and a node
/// certificate are each a few hundred bytes (a certificate's name is at most
/// 64), so anything much larger is malformed and refused before decoding.
pub const MAX_CHECKPOINT_GOSSIP_LEN: usize = 4096;

/// Length of a stored record's fixed part: `prev`, `hash`, `at_ms`.
const RECORD_HEADER_LEN: usize = 32 + 32 + 8;

const RECORD_DOMAIN: &[u8] = b"weft/audit-record/v1\0";

/// Why a record or a checkpoint could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuditError {
    /// A stored record is too short or too long to be one.
    #[error("record {seq} is malformed: {reason}")]
    Malformed {
        /// Its number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint did not decode.
    #[error("the audit checkpoint does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A checkpoint's signature does not verify under its node's key.
    #[error("the audit checkpoint's signature does not verify: {0}")]
    Signature(#[from] SignatureError),
    /// The certificate gossiped with a checkpoint does not verify under the
    /// trust root (unknown or unauthorized issuer, bad signature, expired).
    #[error("the audit checkpoint's node certificate does not verify: {0}")]
    Certificate(TrustError),
    /// The certificate gossiped with a checkpoint is another node's.
    #[error("the certificate sent with the audit checkpoint of node {node} is for node {cert}")]
    NotItsCertificate {
        /// The checkpoint's node (boxed: a node id holds a key).
        node: Box<NodeId>,
        /// The node the certificate names.
        cert: Box<NodeId>,
    },
}

/// The hash of record `seq` written at `at_ms` after `prev`, holding `event`.
pub fn record_hash(seq: u64, at_ms: u64, prev: &ChainHash, event: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update(RECORD_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    h.update(prev);
    h.update(event);
    h.finalize().into()
}

/// One record of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its number, from 1.
    pub seq: u64,
    /// When it was written (Unix milliseconds).
    pub at_ms: u64,
    /// The hash of the record before it.
    pub prev: ChainHash,
    /// Its hash, as stored (recompute it with [`Record::computed_hash`]).
    pub hash: ChainHash,
    /// The event, as stored.
    pub event: Vec<u8>,
}

impl Record {
    /// Record `seq` after `prev`, with its hash computed.
    pub fn new(seq: u64, at_ms: u64, prev: ChainHash, event: Vec<u8>) -> Record {
        let hash = record_hash(seq, at_ms, &prev, &event);
        Record {
            seq,
            at_ms,
            prev,
            hash,
            event,
        }
    }

    /// The hash its contents give.
    pub fn computed_hash(&self) -> ChainHash {
        record_hash(self.seq, self.at_ms, &self.prev, &self.event)
    }

    /// The stored value (the key is `seq`, big-endian):
    /// `prev (32) || hash (32) || at_ms (u64 BE) || event`.
    pub fn to_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RECORD_HEADER_LEN + self.event.len());
        v.extend_from_slice(&self.prev);
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&self.at_ms.to_be_bytes());
        v.extend_from_slice(&self.event);
        v
    }

    /// Reads record `seq` from its stored value. The hash is not checked.
    pub fn from_value(seq: u64, value: &[u8]) -> Result<Record, AuditError> {
        if value.len() < RECORD_HEADER_LEN {
            return Err(AuditError::Malformed {
                seq,
                reason: format!("{} bytes, shorter than a record's header", value.len()),
            });
        }
        if value.len() > RECORD_HEADER_LEN + MAX_EVENT_LEN {
            return Err(AuditError::Malformed {
                seq,
                reason: format!(
                    "{} bytes, over the limit of {}",
                    value.len(),
                    RECORD_HEADER_LEN + MAX_EVENT_LEN
                ),
            });
        }
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&value[..32]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&value[32..64]);
        let mut at = [0u8; 8];
        at.copy_from_slice(&value[64..72]);
        Ok(Record {
            seq,
            at_ms: u64::from_be_bytes(at),
            prev,
            hash,
            event: value[RECORD_HEADER_LEN..].to_vec(),
        })
    }
}

/// "Record `seq` of `node`'s audit chain has hash `head`", signed by `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The node whose chain this is, and who signs it.
    pub node: NodeId,
    /// The number of the record at the head.
    pub seq: u64,
    /// That record's hash.
    #[serde(with = "hex_hash")]
    pub head: ChainHash,
    /// When the node signed it (Unix milliseconds).
    pub at_ms: u64,
}

/// A checkpoint as gossiped and kept: its encoded body and the node's
/// signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// `encode(Kind::Checkpoint, &Checkpoint)`, exactly the bytes signed.
    #[serde(with = "encoding::bytes")]
    pub body: Vec<u8>,
    /// The node's signature over `body`, in [`Domain::AuditCheckpoint`].
    pub sig: Signature,
}

impl SignedCheckpoint {
    /// Encodes and signs `cp` with `key`, which must be `cp.node`'s key for
    /// the checkpoint to verify.
    pub fn sign(cp: &Checkpoint, key: &SecretKey) -> SignedCheckpoint {
        let body = encoding::encode(Kind::Checkpoint, cp);
        let sig = key.sign(Domain::AuditCheckpoint, &body);
        SignedCheckpoint { body, sig }
    }

    /// The canonical encoding (what is gossiped and stored).
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::SignedCheckpoint, self)
    }

    /// Decodes a signed checkpoint; the signature is not checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedCheckpoint, AuditError> {
        Ok(encoding::decode(
            Kind::SignedCheckpoint,
            bytes,
            MAX_CHECKPOINT_LEN,
        )?)
    }

    /// Decodes the body without checking the signature (for a checkpoint
    /// verified before it was stored).
    pub fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        Ok(encoding::decode(
            Kind::Checkpoint,
            &self.body,
            MAX_CHECKPOINT_LEN,
        )?)
    }

    /// Decodes the body and checks the signature (strictly) against the key
    /// of the node it names.
    pub fn verify(&self) -> Result<Checkpoint, AuditError> {
        let cp = self.checkpoint()?;
        cp.node
            .public_key()
            .verify(Domain::AuditCheckpoint, &self.body, &self.sig)?;
        Ok(cp)
    }
}

/// A checkpoint as gossiped: the signed checkpoint and the certificate of
/// its node, so that a peer that never met the node (gossip travels over
/// several hops) can check that the node belongs to the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointGossip {
    /// The checkpoint, signed by its node.
    pub checkpoint: SignedCheckpoint,
    /// The node's admission certificate.
    pub cert: SignedNodeCert,
}

impl CheckpointGossip {
    /// The canonical encoding (what is gossiped).
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::CheckpointGossip, self)
    }

    /// Decodes a gossiped checkpoint; no signature is checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<CheckpointGossip, AuditError> {
        Ok(encoding::decode(
            Kind::CheckpointGossip,
            bytes,
            MAX_CHECKPOINT_GOSSIP_LEN,
        )?)
    }

    /// Checks that the certificate verifies under `root` at `now` (Unix
    /// seconds: an operator of `root` with the admit role signed it, and it
    /// has not expired), that the checkpoint's signature verifies under its
    /// node's key, and that the certificate is that node's. Returns the
    /// checkpoint.
    pub fn verify(&self, root: &TrustRoot, now: u64) -> Result<Checkpoint, AuditError> {
        let cert = self
            .cert
            .verify(root, now)
            .map_err(AuditError::Certificate)?;
        let cp = self.checkpoint.verify()?;
        if cert.node != cp.node {
            return Err(AuditError::NotItsCertificate {
                node: Box::new(cp.node),
                cert: Box::new(cert.node),
            });
        }
        Ok(cp)
    }
}

/// A checkpoint to check a chain against, and who held it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCheckpoint {
    /// The checkpoint (already verified, or the node's own unsigned head
    /// marker).
    pub checkpoint: Checkpoint,
    /// Who held it: "the node itself", "peer 12D3…".
    pub holder: String,
}

/// The first thing found wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainProblem {
    /// A record's contents do not give its stored hash.
    #[error("record {seq} was changed: its contents no longer match its hash")]
    Changed {
        /// The record.
        seq: u64,
    },
    /// The numbering jumps: records are missing.
    #[error("record {seq} is missing: the log jumps from record {before} to record {after}")]
    Missing {
        /// The first missing record.
        seq: u64,
        /// The record before the gap (0 at the start).
        before: u64,
        /// The record after the gap.
        after: u64,
    },
    /// A record does not link to the one before it.
    #[error(
        "record {seq} does not follow record {}: records were reordered, or one was replaced",
        seq - 1
    )]
    Unlinked {
        /// The record.
        seq: u64,
    },
    /// A record cannot be read.
    #[error("{0}")]
    Unreadable(AuditError),
    /// The log is shorter than a checkpoint says it was.
    #[error(
        "the log ends at record {len}, but a checkpoint signed at {at} covers record {seq} (held by {holder}): the log was truncated"
    )]
    Truncated {
        /// The last record in the log.
        len: u64,
        /// The record the checkpoint covers.
        seq: u64,
        /// When it was signed.
        at: String,
        /// Who held it.
        holder: String,
    },
    /// The chain disagrees with a checkpoint: it was rewritten and re-hashed.
    #[error(
        "record {seq} disagrees with the checkpoint signed at {at} (held by {holder}): a record from {from} to {seq} was changed, removed or reordered, and the chain re-hashed after it"
    )]
    Rewritten {
        /// The first record that may have been rewritten (one after the last
        /// checkpoint that still agrees).
        from: u64,
        /// The record the disagreeing checkpoint covers.
        seq: u64,
        /// When it was signed.
        at: String,
        /// Who held it.
        holder: String,
    },
}

impl ChainProblem {
    /// The first record the problem touches.
    pub fn first_bad(&self) -> u64 {
        match self {
            ChainProblem::Changed { seq }
            | ChainProblem::Missing { seq, .. }
            | ChainProblem::Unlinked { seq } => *seq,
            ChainProblem::Unreadable(AuditError::Malformed { seq, .. }) => *seq,
            ChainProblem::Unreadable(_) => 0,
            ChainProblem::Truncated { len, .. } => len + 1,
            ChainProblem::Rewritten { from, .. } => *from,
        }
    }
}

/// What walking a chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records walked (up to the first problem).
    pub records: u64,
    /// The hash of the last good record ([`GENESIS`] if none).
    pub head: ChainHash,
    /// Checkpoints the chain was checked against.
    pub checkpoints: usize,
    /// The first problem, if any.
    pub problem: Option<ChainProblem>,
}

impl Verification {
    /// Whether the chain is intact and agrees with every checkpoint.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Walks a chain record by record, then checks it against checkpoints.
///
/// Feed it the stored `(seq, value)` pairs in key order with
/// [`ChainWalker::push`]; it stops looking at the first problem. Memory is
/// constant apart from the hashes at the checkpoints' records.
#[derive(Debug)]
pub struct ChainWalker {
    node: NodeId,
    checkpoints: Vec<HeldCheckpoint>,
    /// Hashes of the records the checkpoints cover, filled while walking.
    at_checkpoints: std::collections::BTreeMap<u64, ChainHash>,
    last_seq: u64,
    prev: ChainHash,
    problem: Option<ChainProblem>,
}

impl ChainWalker {
    /// A walker for `node`'s chain, to be checked against `checkpoints`
    /// (those of other nodes are ignored).
    pub fn new(node: NodeId, checkpoints: Vec<HeldCheckpoint>) -> ChainWalker {
        let checkpoints: Vec<HeldCheckpoint> = checkpoints
            .into_iter()
            .filter(|c| c.checkpoint.node == node)
            .collect();
        let at_checkpoints = checkpoints
            .iter()
            .map(|c| (c.checkpoint.seq, GENESIS))
            .collect();
        ChainWalker {
            node,
            checkpoints,
            at_checkpoints,
            last_seq: 0,
            prev: GENESIS,
            problem: None,
        }
    }

    /// The node whose chain this is.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Whether a problem was found already (later records are ignored).
    pub fn failed(&self) -> bool {
        self.problem.is_some()
    }

    /// Takes the next stored record.
    pub fn push(&mut self, seq: u64, value: &[u8]) {
        if self.problem.is_some() {
            return;
        }
        let expected = self.last_seq + 1;
        if seq != expected {
            self.problem = Some(if seq > expected {
                ChainProblem::Missing {
                    seq: expected,
                    before: self.last_seq,
                    after: seq,
                }
            } else {
                ChainProblem::Unlinked { seq }
            });
            return;
        }
        let record = match Record::from_value(seq, value) {
            Ok(r) => r,
            Err(e) => {
                self.problem = Some(ChainProblem::Unreadable(e));
                return;
            }
        };
        if record.computed_hash() != record.hash {
            self.problem = Some(ChainProblem::Changed { seq });
            return;
        }
        if record.prev != self.prev {
            self.problem = Some(ChainProblem::Unlinked { seq });
            return;
        }
        if let Some(slot) = self.at_checkpoints.get_mut(&seq) {
            *slot = record.hash;
        }
        self.last_seq = seq;
        self.prev = record.hash;
    }

    /// Ends the walk and checks the checkpoints: the log must reach every
    /// one, and agree with it.
    pub fn finish(mut self) -> Verification {
        let checked = self.checkpoints.len();
        if self.problem.is_none() {
            // Oldest first, so that a rewrite is placed after the last
            // checkpoint that still agrees.
            self.checkpoints.sort_by_key(|c| c.checkpoint.seq);
            let mut agreed = 0u64;
            for held in &self.checkpoints {
                let cp = &held.checkpoint;
                let at = format_timestamp(cp.at_ms / 1000);
                if cp.seq > self.last_seq {
                    self.problem = Some(ChainProblem::Truncated {
                        len: self.last_seq,
                        seq: cp.seq,
                        at,
                        holder: held.holder.clone(),
                    });
                    break;
                }
                let ours = if cp.seq == 0 {
                    GENESIS
                } else {
                    self.at_checkpoints.get(&cp.seq).copied().unwrap_or(GENESIS)
                };
                if ours != cp.head {
                    self.problem = Some(ChainProblem::Rewritten {
                        from: agreed + 1,
                        seq: cp.seq,
                        at,
                        holder: held.holder.clone(),
                    });
                    break;
                }
                agreed = agreed.max(cp.seq);
            }
        }
        Verification {
            records: self.last_seq,
            head: self.prev,
            checkpoints: checked,
            problem: self.problem,
        }
    }
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(h))
        } else {
            serde::Serialize::serialize(h, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let mut out = [0u8; 32];
            hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
            Ok(out)
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Record> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let r = Record::new(seq, 1_000 + seq, prev, format!("{{\"n\":{seq}}}").into());
                prev = r.hash;
                r
            })
            .collect()
    }

    fn node() -> (SecretKey, NodeId) {
        let key = SecretKey::from_seed([7; 32]);
        let id = NodeId::from(key.public());
        (key, id)
    }

    fn walk(records: &[Record], cps: Vec<HeldCheckpoint>) -> Verification {
        let (_, id) = node();
        let mut w = ChainWalker::new(id, cps);
        for r in records {
            w.push(r.seq, &r.to_value());
        }
        w.finish()
    }

    fn held(records: &[Record], seq: u64, holder: &str) -> HeldCheckpoint {
        let (key, id) = node();
        let cp = Checkpoint {
            node: id,
            seq,
            head: records[seq as usize - 1].hash,
            at_ms: 5_000,
        };
        let signed = SignedCheckpoint::sign(&cp, &key);
        let back = SignedCheckpoint::from_bytes(&signed.to_bytes()).unwrap();
        HeldCheckpoint {
            checkpoint: back.verify().unwrap(),
            holder: holder.into(),
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(10);
        let v = walk(&c, vec![held(&c, 4, "peer"), held(&c, 10, "peer")]);
        assert!(v.ok(), "{:?}", v.problem);
        assert_eq!(v.records, 10);
        assert_eq!(v.head, c[9].hash);
        assert_eq!(v.checkpoints, 2);
    }

    #[test]
    fn a_changed_record_is_named() {
        let mut c = chain(10);
        c[6].event = b"{\"n\":999}".to_vec();
        let v = walk(&c, vec![]);
        assert_eq!(v.problem, Some(ChainProblem::Changed { seq: 7 }));
        assert_eq!(v.records, 6);
    }

    #[test]
    fn a_removed_record_is_named() {
        let mut c = chain(10);
        c.remove(3);
        let v = walk(&c, vec![]);
        assert_eq!(
            v.problem,
            Some(ChainProblem::Missing {
                seq: 4,
                before: 3,
                after: 5
            })
        );
    }

    #[test]
    fn reordered_records_are_named() {
        let c = chain(10);
        // Records 5 and 6 swapped, keys kept in order: each keeps its own
        // number and hash, so the link is what breaks.
        let mut swapped = c.clone();
        let (a, b) = (c[4].clone(), c[5].clone());
        swapped[4] = Record::new(5, b.at_ms, b.prev, b.event.clone());
        swapped[5] = Record::new(6, a.at_ms, a.prev, a.event.clone());
        let v = walk(&swapped, vec![]);
        assert_eq!(v.problem, Some(ChainProblem::Unlinked { seq: 5 }));
    }

    #[test]
    fn truncation_is_caught_by_a_checkpoint() {
        let c = chain(10);
        let cp = held(&c, 9, "peer B");
        let v = walk(&c[..7], vec![cp]);
        match v.problem {
            Some(ChainProblem::Truncated {
                len, seq, holder, ..
            }) => {
                assert_eq!((len, seq, holder.as_str()), (7, 9, "peer B"));
            }
            other => panic!("expected truncation, got {other:?}"),
        }
        // Without the checkpoint the shorter chain looks whole.
        assert!(walk(&c[..7], vec![]).ok());
    }

    #[test]
    fn a_rehashed_rewrite_is_caught_by_a_checkpoint() {
        let c = chain(10);
        let cps = vec![held(&c, 3, "peer B"), held(&c, 8, "peer B")];
        // Rewrite record 5 and re-hash everything after it.
        let mut forged = c[..4].to_vec();
        let mut prev = c[3].hash;
        for seq in 5..=10 {
            let ev = if seq == 5 {
                b"{\"n\":\"forged\"}".to_vec()
            } else {
                c[seq as usize - 1].event.clone()
            };
            let r = Record::new(seq, 1_000 + seq, prev, ev);
            prev = r.hash;
            forged.push(r);
        }
        assert!(walk(&forged, vec![]).ok(), "the chain alone cannot tell");
        let v = walk(&forged, cps);
        match v.problem {
            Some(ChainProblem::Rewritten { from, seq, .. }) => assert_eq!((from, seq), (4, 8)),
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn checkpoints_of_other_nodes_are_ignored_and_forgeries_refused() {
        let c = chain(5);
        let other = SecretKey::from_seed([9; 32]);
        let (_, id) = node();
        let cp = Checkpoint {
            node: NodeId::from(other.public()),
            seq: 50,
            head: [1; 32],
            at_ms: 0,
        };
        let v = walk(
            &c,
            vec![HeldCheckpoint {
                checkpoint: cp,
                holder: "x".into(),
            }],
        );
        assert!(v.ok());
        assert_eq!(v.checkpoints, 0);
        // Signed by the wrong key: refused.
        let forged = SignedCheckpoint::sign(
            &Checkpoint {
                node: id,
                seq: 1,
                head: [0; 32],
                at_ms: 0,
            },
            &other,
        );
        assert!(matches!(forged.verify(), Err(AuditError::Signature(_))));
        // Oversized bytes are refused before decoding.
        assert!(SignedCheckpoint::from_bytes(&vec![0u8; MAX_CHECKPOINT_LEN + 1]).is_err());
    }

    fn cert_for(node: NodeId, issuer: &SecretKey, expires: u64) -> SignedNodeCert {
        SignedNodeCert::sign(
            &crate::trust::NodeCert {
                node,
                name: "edge-1".into(),
                issuer: issuer.public(),
                issued: 1_000,
                expires,
            },
            issuer,
        )
    }

    #[test]
    fn a_gossiped_checkpoint_carries_its_certificate() {
        let (key, id) = node();
        let c = chain(3);
        let signed = SignedCheckpoint::sign(
            &Checkpoint {
                node: id,
                seq: 3,
                head: c[2].hash,
                at_ms: 5_000,
            },
            &key,
        );
        let gossip = CheckpointGossip {
            checkpoint: signed.clone(),
            cert: cert_for(id, &SecretKey::from_seed([1; 32]), 10_000),
        };
        let bytes = gossip.to_bytes();
        assert!(
            bytes.len() < MAX_CHECKPOINT_GOSSIP_LEN / 4,
            "{}",
            bytes.len()
        );
        assert_eq!(CheckpointGossip::from_bytes(&bytes).unwrap(), gossip);
        let root = root_with(&[(&SecretKey::from_seed([1; 32]), true)]);
        assert_eq!(gossip.verify(&root, 9_999).unwrap().seq, 3);
        // A bare signed checkpoint is not one, nor is anything oversized.
        assert!(CheckpointGossip::from_bytes(&signed.to_bytes()).is_err());
        assert!(CheckpointGossip::from_bytes(&vec![0u8; MAX_CHECKPOINT_GOSSIP_LEN + 1]).is_err());
    }

    /// A root whose operators are `ops` (key, whether it may admit nodes).
    fn root_with(ops: &[(&SecretKey, bool)]) -> TrustRoot {
        use crate::trust::{Operator, QuarantineLimits, Role};
        TrustRoot {
            version: 1,
            expires: u64::MAX,
            root_keys: vec![SecretKey::from_seed([200; 32]).public()],
            root_threshold: 1,
            operators: ops
                .iter()
                .enumerate()
                .map(|(i, (k, admit))| Operator {
                    name: format!("op{i}"),
                    key: k.public(),
                    roles: if *admit {
                        Role::ALL.into_iter().collect()
                    } else {
                        [Role::Policy].into_iter().collect()
                    },
                })
                .collect(),
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: QuarantineLimits::default(),
            max_token_ttl_secs: crate::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: Vec::new(),
        }
    }

    #[test]
    fn a_gossiped_checkpoint_needs_a_valid_certificate_of_its_node() {
        let admit = SecretKey::from_seed([1; 32]);
        let policy_only = SecretKey::from_seed([2; 32]);
        let stranger = SecretKey::from_seed([3; 32]);
        let root = root_with(&[(&admit, true), (&policy_only, false)]);
        let (key, id) = node();
        let other = NodeId::from(SecretKey::from_seed([8; 32]).public());
        let checkpoint = SignedCheckpoint::sign(
            &Checkpoint {
                node: id,
                seq: 1,
                head: [1; 32],
                at_ms: 5_000,
            },
            &key,
        );
        let with = |cert| CheckpointGossip {
            checkpoint: checkpoint.clone(),
            cert,
        };
        let now = 5_000;
        assert!(
            with(cert_for(id, &admit, 10_000))
                .verify(&root, now)
                .is_ok()
        );
        for (cert, what) in [
            (cert_for(id, &admit, now), "expired"),
            (cert_for(id, &stranger, 10_000), "not an operator"),
            (
                cert_for(id, &policy_only, 10_000),
                "does not hold the admit role",
            ),
        ] {
            let err = with(cert).verify(&root, now).unwrap_err();
            assert!(matches!(err, AuditError::Certificate(_)), "{err}");
            assert!(err.to_string().contains(what), "{err}");
        }
        assert_eq!(
            with(cert_for(other, &admit, 10_000))
                .verify(&root, now)
                .unwrap_err(),
            AuditError::NotItsCertificate {
                node: Box::new(id),
                cert: Box::new(other)
            }
        );
        // A valid certificate does not vouch for a checkpoint its node did
        // not sign.
        let forged = CheckpointGossip {
            checkpoint: SignedCheckpoint::sign(
                &Checkpoint {
                    node: id,
                    seq: 1,
                    head: [2; 32],
                    at_ms: 5_000,
                },
                &stranger,
            ),
            cert: cert_for(id, &admit, 10_000),
        };
        assert!(matches!(
            forged.verify(&root, now),
            Err(AuditError::Signature(_))
        ));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(Record::from_value(1, &[0u8; 10]).is_err());
        assert!(Record::from_value(1, &vec![0u8; RECORD_HEADER_LEN + MAX_EVENT_LEN + 1]).is_err());
        let r = Record::new(1, 2, GENESIS, b"x".to_vec());
        assert_eq!(Record::from_value(1, &r.to_value()).unwrap(), r);
    }
}
