//! The node task's side of detection across sites: it gossips this node's
//! detection summaries (signed with the node key, sent with the node's
//! certificate) on [`SUMMARY_TOPIC`], and takes peers' summaries in through
//! [`MeshDetect::receive`], reporting the verdict to gossipsub before it
//! forwards anything. The checks and the view are in [`crate::mesh_detect`].

use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId, PublishError};
use weft_protocol::identity::NodeId;
use weft_protocol::summary::{SignedSummary, Summary};
use weft_protocol::summary_gossip::SummaryGossip;
use weft_protocol::trust::SignedNodeCert;

use super::NodeTask;
use crate::clock::now_ms;
use crate::mesh_detect::{Arrival, Outcome, Received, SUMMARY_TOPIC};

impl NodeTask {
    /// Signs one of this node's summaries and gossips it with the node's
    /// certificate. A node without a certificate has no admitted peers to
    /// take it, so it gossips none.
    pub(super) fn publish_summary(&mut self, summary: Summary) {
        let Some(mesh) = self.mesh.clone() else {
            return;
        };
        let Ok(cert) = SignedNodeCert::from_bytes(&self.shared.cert.load()) else {
            tracing::debug!("no certificate: the detection summary is not gossiped");
            mesh.count(Outcome::Unpublished);
            return;
        };
        let bytes = SummaryGossip {
            summary: SignedSummary::sign(&summary, &self.node_key),
            cert,
        }
        .to_bytes();
        let topic = self.summary_topic.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => mesh.count(Outcome::Published),
            Err(PublishError::NoPeersSubscribedToTopic | PublishError::Duplicate) => {
                mesh.count(Outcome::Unpublished);
            }
            Err(err) => {
                mesh.count(Outcome::Unpublished);
                tracing::warn!(%err, "publishing a detection summary failed");
            }
        }
    }

    /// A peer's summary: merged and forwarded only when it passes every
    /// check of [`crate::mesh_detect`]; rejected when forged or malformed,
    /// ignored otherwise. A node with detection across sites off ignores
    /// them all.
    pub(super) fn on_summary(&mut self, id: &MessageId, source: &PeerId, data: &[u8]) {
        let verdict = match &self.mesh {
            None => MessageAcceptance::Ignore,
            Some(mesh) => {
                let view = self.shared.view.load();
                let revoked = |node: &NodeId| view.revocation(&node.to_string()).is_some();
                let arrival = Arrival {
                    root: self.replica.state().root(),
                    now_ms: now_ms(),
                    own: self.shared.node_id,
                    from_admitted: self.replica.admitted_peers().any(|(p, _)| p == source),
                    revoked: &revoked,
                };
                match mesh.receive(data, &arrival) {
                    Received::Merged { node, principals } => {
                        tracing::debug!(%node, principals, "merged a detection summary");
                        MessageAcceptance::Accept
                    }
                    Received::Ignored(outcome, why) => {
                        tracing::debug!(peer = %source, outcome = outcome.label(), %why, "ignoring a detection summary");
                        MessageAcceptance::Ignore
                    }
                    Received::Refused(err) => {
                        tracing::warn!(peer = %source, %err, "refusing a detection summary");
                        MessageAcceptance::Reject
                    }
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict);
    }
}

/// The topic, as gossipsub names it.
pub(super) fn topic() -> libp2p::gossipsub::IdentTopic {
    libp2p::gossipsub::IdentTopic::new(SUMMARY_TOPIC)
}
