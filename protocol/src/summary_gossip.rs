//! A detection summary as gossiped: the node's signed summary
//! ([`crate::summary::SignedSummary`]) with the node's admission
//! certificate, so that every node, including one that never met the
//! summary's node (gossip travels over several hops), can check that the
//! node belongs to the mesh before it looks at the summary, the way a
//! quarantine order carries its issuer's certificate.
//!
//! ```text
//! SummaryGossip = encode(SummaryGossip, { summary: SignedSummary, cert: SignedNodeCert })
//! ```
//!
//! [`SummaryGossip::from_bytes`] checks the size before anything else and
//! decodes the envelope only: the summary's body stays opaque bytes.
//! [`SummaryGossip::certified`] checks the certificate under the trust root
//! and that it is the certificate of the node that signed the summary; only
//! then is the summary's signature checked and its body decoded
//! ([`crate::summary::SignedSummary::verify`], through the caller's
//! `admitted` question). Neither panics on any input; every refusal is one
//! sentence ([`SummaryGossipError`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::encoding::{self, DecodeError, Kind};
use crate::identity::NodeId;
use crate::summary::{MAX_SIGNED_SUMMARY_BYTES, SignedSummary};
use crate::trust::{SignedNodeCert, TrustError, TrustRoot};

/// The largest encoded [`SummaryGossip`]: the largest signed summary and
/// a certificate (a few hundred bytes: its name is at most 64).
pub const MAX_SUMMARY_GOSSIP_BYTES: usize = MAX_SIGNED_SUMMARY_BYTES + 4096;

/// Why a gossiped summary's envelope or certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SummaryGossipError {
    /// The bytes do not decode (over the size limit, not a gossiped
    /// summary, malformed).
    #[error("the gossiped detection summary does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The certificate does not verify under the trust root (unknown or
    /// unauthorized issuer, bad signature, expired).
    #[error("the detection summary's node certificate does not verify: {0}")]
    Certificate(TrustError),
    /// The certificate is another node's than the summary's signer.
    #[error("the certificate sent with the detection summary of node {node} is for node {cert}")]
    NotItsCertificate {
        /// The summary's signer (boxed: a node id holds a key).
        node: Box<NodeId>,
        /// The node the certificate names.
        cert: Box<NodeId>,
    },
}

/// A signed summary and its node's certificate, as gossiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryGossip {
    /// The summary, signed by its node (its body not decoded yet).
    pub summary: SignedSummary,
    /// The node's admission certificate.
    pub cert: SignedNodeCert,
}

impl SummaryGossip {
    /// The canonical encoding (what is gossiped).
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::SummaryGossip, self)
    }

    /// Decodes the envelope, refusing anything over
    /// [`MAX_SUMMARY_GOSSIP_BYTES`] first; nothing is verified yet and the
    /// summary's body stays opaque bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SummaryGossip, SummaryGossipError> {
        Ok(encoding::decode(
            Kind::SummaryGossip,
            bytes,
            MAX_SUMMARY_GOSSIP_BYTES,
        )?)
    }

    /// Checks that the certificate verifies under `root` at `now` (Unix
    /// seconds: an operator of `root` with the admit role signed it, and it
    /// has not expired) and that it is the certificate of the node that
    /// signed the summary. Returns that node. The summary's own signature
    /// is not checked here.
    pub fn certified(&self, root: &TrustRoot, now: u64) -> Result<NodeId, SummaryGossipError> {
        let cert = self
            .cert
            .verify(root, now)
            .map_err(SummaryGossipError::Certificate)?;
        if cert.node != self.summary.node {
            return Err(SummaryGossipError::NotItsCertificate {
                node: Box::new(self.summary.node),
                cert: Box::new(cert.node),
            });
        }
        Ok(cert.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;
    use crate::summary::{PrincipalSummary, Summary};
    use crate::trust::{NodeCert, Operator, Role};

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    const NOW: u64 = 1_767_571_200;

    fn root(operator: &SecretKey) -> TrustRoot {
        TrustRoot {
            version: 1,
            expires: NOW + 86_400,
            root_keys: vec![key(90).public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "alice".into(),
                key: operator.public(),
                roles: Role::ALL.into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: Default::default(),
            max_token_ttl_secs: crate::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: Vec::new(),
        }
    }

    fn cert(node: NodeId, issuer: &SecretKey, expires: u64) -> SignedNodeCert {
        SignedNodeCert::sign(
            &NodeCert {
                node,
                name: "n1".into(),
                issuer: issuer.public(),
                issued: NOW - 60,
                expires,
            },
            issuer,
        )
    }

    fn signed(k: &SecretKey) -> SignedSummary {
        let s = Summary {
            node: NodeId::new(k.public()),
            slot_start_ms: NOW * 1000,
            slot_ms: 10_000,
            dropped: 0,
            principals: vec![PrincipalSummary {
                principal: "User::\"a\"".into(),
                requests: 3,
                denies: 1,
                token_failures: 0,
                resources: [1, 0, 0, 0],
                actions: [2],
                pairs: [4, 0, 0, 0],
            }],
        };
        SignedSummary::sign(&s, k)
    }

    #[test]
    fn a_certified_summary_round_trips_and_names_its_node() {
        let alice = key(1);
        let k = key(2);
        let node = NodeId::new(k.public());
        let g = SummaryGossip {
            summary: signed(&k),
            cert: cert(node, &alice, NOW + 3600),
        };
        let back = SummaryGossip::from_bytes(&g.to_bytes()).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.certified(&root(&alice), NOW).unwrap(), node);
        assert!(back.summary.verify().is_ok());
    }

    #[test]
    fn uncertified_foreign_expired_and_oversized_are_refused() {
        let alice = key(1);
        let k = key(2);
        let node = NodeId::new(k.public());
        let r = root(&alice);
        let refused = |g: SummaryGossip| {
            let e = SummaryGossip::from_bytes(&g.to_bytes())
                .unwrap()
                .certified(&r, NOW)
                .unwrap_err();
            assert!(!e.to_string().contains('\n'));
            e
        };
        // A certificate the node made itself.
        let e = refused(SummaryGossip {
            summary: signed(&k),
            cert: cert(node, &k, NOW + 3600),
        });
        assert!(matches!(e, SummaryGossipError::Certificate(_)), "{e}");
        // An expired one.
        let e = refused(SummaryGossip {
            summary: signed(&k),
            cert: cert(node, &alice, NOW),
        });
        assert!(matches!(e, SummaryGossipError::Certificate(_)), "{e}");
        // Another node's valid certificate.
        let e = refused(SummaryGossip {
            summary: signed(&key(3)),
            cert: cert(node, &alice, NOW + 3600),
        });
        assert!(
            matches!(e, SummaryGossipError::NotItsCertificate { .. }),
            "{e}"
        );
        // Over the limit: refused on its length.
        let big = vec![0u8; MAX_SUMMARY_GOSSIP_BYTES + 1];
        let e = SummaryGossip::from_bytes(&big).unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
        // A bare signed summary is not a gossiped one.
        assert!(SummaryGossip::from_bytes(&signed(&k).to_bytes()).is_err());
    }
}
