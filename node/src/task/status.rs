//! What the node task answers about itself: its [`Status`]
//! (`Command::Status`, for `GET /v1/status` and `weft status`) and its
//! [`NodeEvidence`], the state with provenance (`Command::Evidence`, for the
//! dashboard and the compliance report).
//!
//! Both find who signed each bundle and revocation, and when, through the
//! index of applied changes by actor (`NodeTask::actors`, with the authors'
//! times in `NodeTask::times`). Carrying out an `Applied` output keeps that
//! index current; [`NodeTask::status`] rebuilds it from the document when
//! the changes it holds are not the state's update count (as after a start
//! from the store).
//!
//! Rules: these methods change nothing but that index; the types they fill
//! are defined in [`crate::control`].

use std::collections::{BTreeSet, HashMap};

use libp2p::PeerId;
use weft_crdt::ChangeHash;

use super::NodeTask;
use crate::clock::now_ms;
use crate::control::evidence::{
    BundleEvidence, ChangeEvidence, NodeEvidence, OperatorEvidence, PolicyEvidence,
    QuarantineEvidence, QuarantineLimitsEvidence, RevocationEvidence, RootEvidence, SignerEvidence,
    record_reason, record_value, recorded_time,
};
use crate::control::{BundleStatus, PeerStatus, RootStatus, StatsStatus, Status};

impl NodeTask {
    /// The applied change that holds operation `op`: its actor's change
    /// with the lowest highest-op counter at or above the op's counter (an
    /// actor's changes hold increasing, disjoint op ranges). Valid once
    /// `actors` is indexed ([`NodeTask::status`] does that).
    fn change_of(&self, op: &weft_crdt::OpRef) -> Option<&ChangeHash> {
        self.actors
            .get(&op.actor)?
            .range(op.counter..)
            .next()
            .map(|(_, hash)| hash)
    }

    /// The node's status: peers, heads, bundles with their signers, the
    /// trust root, counters, the audit trail and anomalies. Indexes the
    /// applied changes by actor first if any are new.
    pub(super) fn status(&mut self) -> Status {
        let now = now_ms();
        let state = self.replica.state();
        if self.indexed != state.update_count() {
            self.actors.clear();
            self.times.clear();
            self.indexed = 0;
            for m in state.doc().automerge().get_changes_meta(&[]) {
                if state.contains(&m.hash) {
                    self.actors
                        .entry(hex::encode(m.actor.to_bytes()))
                        .or_default()
                        .insert(m.max_op, m.hash);
                    self.times.insert(m.hash, m.timestamp);
                    self.indexed += 1;
                }
            }
        }
        let root = state.root();
        let view = state.view();
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let update_mesh: std::collections::HashSet<&PeerId> =
            gossipsub.mesh_peers(&self.topic.hash()).collect();
        let certs: HashMap<PeerId, (String, u64)> = self
            .replica
            .admitted_certs()
            .map(|(p, _, name, expires)| (*p, (name.to_owned(), expires)))
            .collect();
        let peers = self
            .replica
            .connected_peers()
            .map(|(peer, node, admitted)| {
                let cert = certs.get(peer);
                let conn = self.connection_of(peer);
                let hole_punched = conn.is_some_and(|c| self.relay.hole_punched.contains(&c.id));
                let conn_addr = conn.map(|c| &c.remote);
                PeerStatus {
                    node_id: node.to_string(),
                    peer_id: peer.to_string(),
                    admitted,
                    score: gossipsub.peer_score(peer),
                    cert_name: cert.map(|c| c.0.clone()),
                    cert_expires: cert.map(|c| c.1),
                    rtt_ms: self.rtt.get(peer).map(|d| d.as_secs_f64() * 1000.0),
                    transport: conn_addr.map(|a| crate::transport::Kind::of(a).as_str().to_owned()),
                    address: conn_addr.map(ToString::to_string),
                    route: conn_addr.map(|a| {
                        if hole_punched {
                            "direct after hole punch".to_owned()
                        } else {
                            crate::transport::path_of(a).to_owned()
                        }
                    }),
                    hole_punched,
                    update_mesh: update_mesh.contains(peer),
                }
            })
            .collect();
        let bundles = view
            .bundles()
            .map(|b| {
                let mut signers = BTreeSet::new();
                let hashes = b.writes.iter().filter_map(|w| self.change_of(w));
                for hash in hashes {
                    for key in state.signers_of(hash).into_iter().flatten() {
                        signers.insert(
                            root.operator_by_key(key)
                                .map(|op| op.name.clone())
                                .unwrap_or_else(|| key.to_string()),
                        );
                    }
                }
                let content = b.effective_content.as_ref().unwrap_or(&b.merged);
                BundleStatus {
                    name: b.name.clone(),
                    signers: signers.into_iter().collect(),
                    policies: content.policies.len(),
                    error: b.error.as_ref().map(ToString::to_string),
                    conflicts: b.conflicts.len(),
                }
            })
            .collect();
        let stats = self.replica.stats();
        Status {
            node_id: self.shared.node_id.to_string(),
            listen: self.swarm.listeners().map(ToString::to_string).collect(),
            peers,
            heads: state.heads().iter().map(ToString::to_string).collect(),
            digest: view.digest().to_owned(),
            bundles,
            revocations: view.revocation_count(),
            conflicts: view.conflicts().cloned().collect(),
            updates: state.update_count(),
            held: state.held_count(),
            held_bytes: state.held_bytes(),
            last_sync_ms_ago: stats.last_sync_ms.map(|t| now.saturating_sub(t)),
            trust_root: RootStatus {
                version: root.version,
                expires: root.expires,
                expired: root.is_expired(now / 1000),
            },
            stats: StatsStatus {
                applied: stats.applied,
                refused: stats
                    .refused
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
                sync_rounds: stats.sync_rounds,
                rounds_skipped: stats.rounds_skipped,
                synced: stats.synced,
                bans: stats.bans,
                bytes_in: self.shared.traffic.bytes_in(),
                bytes_out: self.shared.traffic.bytes_out(),
            },
            audit: crate::audit::status_of(&self.audit_log, &self.audit),
            anomalies: {
                let mut a = self.shared.anomalies.status();
                let rules = weft_protocol::quarantine::rules_of(root);
                a.active_quarantines = view
                    .quarantines()
                    .filter(|(s, _)| {
                        weft_crdt::quarantine::in_force(view, s, now / 1000, &rules).is_some()
                    })
                    .count() as u64;
                a.mesh = self.mesh.as_ref().map(|m| m.status());
                a
            },
            reachability: self.relay.reachability.as_str().to_owned(),
            relay: self.relay_status(),
        }
    }

    /// The state with provenance: who signed what, and when. With `full`,
    /// every policy's text, and the author of each quarantine (found by a
    /// scan of the change history, so only for the report).
    pub(super) fn evidence(&mut self, full: bool) -> NodeEvidence {
        let status = self.status();
        let state = self.replica.state();
        let root = state.root();
        let view = state.view();
        let roles_of = |op: &weft_protocol::trust::Operator| -> Vec<String> {
            op.roles.iter().map(|r| r.as_str().to_owned()).collect()
        };
        let signer = |key: &weft_protocol::identity::PublicKey| match root.operator_by_key(key) {
            Some(op) => SignerEvidence {
                name: Some(op.name.clone()),
                key: key.to_string(),
                roles: roles_of(op),
            },
            None => SignerEvidence {
                name: None,
                key: key.to_string(),
                roles: Vec::new(),
            },
        };
        let change = |hash: &ChangeHash| ChangeEvidence {
            hash: hash.to_string(),
            time: self.times.get(hash).copied().and_then(recorded_time),
            signers: state
                .signers_of(hash)
                .into_iter()
                .flatten()
                .map(|k| signer(k).label().to_owned())
                .collect(),
        };
        // The changes that hold these operations, with their signers, oldest first.
        let provenance = |writes: &[weft_crdt::OpRef]| {
            let hashes: BTreeSet<&ChangeHash> =
                writes.iter().filter_map(|w| self.change_of(w)).collect();
            let mut signers = BTreeSet::new();
            for h in &hashes {
                for k in state.signers_of(h).into_iter().flatten() {
                    signers.insert(signer(k));
                }
            }
            let mut changes: Vec<ChangeEvidence> = hashes.into_iter().map(change).collect();
            changes.sort_by_key(|c| (c.time.is_none(), c.time, c.hash.clone()));
            (signers.into_iter().collect::<Vec<_>>(), changes)
        };
        let bundles = view
            .bundles()
            .map(|b| {
                let content = b.effective_content.as_ref().unwrap_or(&b.merged);
                let (signers, changes) = provenance(&b.writes);
                BundleEvidence {
                    name: b.name.clone(),
                    description: content.description.clone(),
                    policies: if full {
                        content
                            .policies
                            .iter()
                            .map(|(id, text)| PolicyEvidence {
                                id: id.clone(),
                                text: text.clone(),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    policy_count: content.policies.len(),
                    error: b.error.as_ref().map(ToString::to_string),
                    conflicts: b.conflicts.len(),
                    signers,
                    changes,
                }
            })
            .collect();
        let revocations = view
            .revocations()
            .map(|r| {
                let (signers, changes) = provenance(&r.writes);
                RevocationEvidence {
                    subject: r.subject.clone(),
                    reason: r.reason.clone(),
                    signers,
                    time: changes.iter().filter_map(|c| c.time).max(),
                    changes,
                }
            })
            .collect();
        // Quarantine records carry no actor list in the view; the change
        // that wrote one names it in its message.
        let mut quarantine_changes: HashMap<String, (i64, ChangeHash)> = HashMap::new();
        if full && view.quarantines().next().is_some() {
            for m in state.doc().automerge().get_changes_meta(&[]) {
                let Some(subject) = m
                    .message
                    .as_deref()
                    .and_then(|t| t.strip_prefix("quarantine "))
                else {
                    continue;
                };
                if !state.contains(&m.hash) {
                    continue;
                }
                let entry = quarantine_changes
                    .entry(subject.to_owned())
                    .or_insert((m.timestamp, m.hash));
                if m.timestamp >= entry.0 {
                    *entry = (m.timestamp, m.hash);
                }
            }
        }
        let quarantines = view
            .quarantines()
            .map(|(subject, text)| {
                let record = record_value(text);
                let found = quarantine_changes.get(subject).map(|(_, h)| change(h));
                QuarantineEvidence {
                    subject: subject.clone(),
                    reason: record_reason(&record),
                    record,
                    signers: found
                        .as_ref()
                        .map(|c| c.signers.clone())
                        .unwrap_or_default(),
                    time: found.and_then(|c| c.time),
                }
            })
            .collect();
        let now = now_ms() / 1000;
        NodeEvidence {
            status,
            root: RootEvidence {
                version: root.version,
                expires: root.expires,
                expired: root.is_expired(now),
                root_keys: root.root_keys.iter().map(ToString::to_string).collect(),
                root_threshold: root.root_threshold,
                policy_threshold: root.policy_threshold,
                revoke_threshold: root.revoke_threshold,
                quarantine: QuarantineLimitsEvidence {
                    allowed: root.node_quarantine.allowed,
                    max_ttl_secs: root.node_quarantine.max_ttl_secs,
                    max_per_node_per_hour: root.node_quarantine.max_per_node_per_hour,
                },
                operators: root
                    .operators
                    .iter()
                    .map(|op| OperatorEvidence {
                        name: op.name.clone(),
                        key: op.key.to_string(),
                        roles: roles_of(op),
                    })
                    .collect(),
            },
            bundles,
            revocations,
            quarantines,
        }
    }
}
