//! Assembling a report: the node's evidence ([`Report::from_node`], in the
//! node's `GET /v1/report`), then the audit chain and what follows from it,
//! the notes and the controls ([`Report::set_audit`], in `weft report`).

use crate::control::evidence::{
    CertEvidence, NodeEvidence, QuarantineEvidence, RevocationEvidence,
};
use crate::dashboard::DecisionCounts;

use super::controls::controls;
use super::model::{
    AuditEvidence, Certificates, DecisionStats, FORMAT, NodeSummary, PeerCert, Report,
    TimelineEntry,
};

const NO_AUDIT_NOTE: &str = "the node has no audit trail (GET /v1/audit/verify did not answer): logging evidence is not available";

const PEER_CERT_NOTE: &str = "peer certificates are verified at admission; each connected peer is listed with the name and expiry of the certificate it was admitted with";

impl Report {
    /// The report of a node's evidence (without the audit chain).
    pub fn from_node(
        e: NodeEvidence,
        cert: Option<CertEvidence>,
        counts: DecisionCounts,
        stale: bool,
        now: u64,
    ) -> Report {
        let mut report = Report {
            format: FORMAT.into(),
            generated_at: now,
            node: node_summary(&e, stale),
            certificates: certificates(&e, cert),
            timeline: timeline(&e.revocations, &e.quarantines),
            decisions: decision_stats(&e, counts),
            trust_root: e.root,
            bundles: e.bundles,
            revocations: e.revocations,
            quarantines: e.quarantines,
            audit: None,
            notes: Vec::new(),
            controls: Vec::new(),
        };
        report.set_audit(None);
        report
    }

    /// Sets the audit chain evidence (`None`: the node has none) and
    /// derives the notes and the controls again.
    pub fn set_audit(&mut self, audit: Option<AuditEvidence>) {
        self.audit = audit;
        self.notes = notes(self);
        self.controls = controls(self);
    }
}

fn node_summary(e: &NodeEvidence, stale: bool) -> NodeSummary {
    let s = &e.status;
    NodeSummary {
        node_id: s.node_id.clone(),
        url: None,
        digest: s.digest.clone(),
        heads: s.heads.clone(),
        updates: s.updates,
        held: s.held,
        last_sync_ms_ago: s.last_sync_ms_ago,
        stale,
    }
}

fn certificates(e: &NodeEvidence, cert: Option<CertEvidence>) -> Certificates {
    Certificates {
        node: cert,
        peers: e
            .status
            .peers
            .iter()
            .map(|p| PeerCert {
                node_id: p.node_id.clone(),
                admitted: p.admitted,
                name: p.cert_name.clone(),
                expires: p.cert_expires,
            })
            .collect(),
        note: PEER_CERT_NOTE.into(),
    }
}

/// Revocations and quarantines by time, the ones with no recorded time last.
fn timeline(
    revocations: &[RevocationEvidence],
    quarantines: &[QuarantineEvidence],
) -> Vec<TimelineEntry> {
    let mut timeline: Vec<TimelineEntry> = revocations
        .iter()
        .map(|r| TimelineEntry {
            time: r.time,
            kind: "revocation".into(),
            subject: r.subject.clone(),
            reason: r.reason.clone(),
            signers: r.signers.iter().map(|s| s.label().to_owned()).collect(),
        })
        .chain(quarantines.iter().map(|q| TimelineEntry {
            time: q.time,
            kind: "quarantine".into(),
            subject: q.subject.clone(),
            reason: q.reason.clone().unwrap_or_default(),
            signers: q.signers.clone(),
        }))
        .collect();
    timeline.sort_by(|a, b| {
        (a.time.is_none(), a.time, &a.subject).cmp(&(b.time.is_none(), b.time, &b.subject))
    });
    timeline
}

fn decision_stats(e: &NodeEvidence, counts: DecisionCounts) -> DecisionStats {
    let s = &e.status;
    DecisionStats {
        allow: counts.allow,
        deny: counts.deny,
        revoked: counts.revoked,
        total: counts.allow + counts.deny + counts.revoked,
        updates_applied: s.stats.applied,
        updates_refused: s.stats.refused.clone(),
        sync_rounds: s.stats.sync_rounds,
        synced: s.stats.synced,
        bans: s.stats.bans,
        conflicts: s.conflicts.len(),
    }
}

/// What is missing or partial in `r`, in sentences.
fn notes(r: &Report) -> Vec<String> {
    let mut notes = Vec::new();
    if r.audit.is_none() {
        notes.push(NO_AUDIT_NOTE.to_owned());
    }
    let untimed = r
        .bundles
        .iter()
        .flat_map(|b| b.changes.iter())
        .chain(r.revocations.iter().flat_map(|r| r.changes.iter()))
        .filter(|c| c.time.is_none())
        .count();
    if untimed > 0 {
        notes.push(format!(
            "{untimed} signed change(s) recorded no time (written by older tooling): shown as \"time not recorded\""
        ));
    }
    if r.certificates.node.is_none() {
        notes.push("this node has no certificate: its peers refuse it".into());
    }
    notes
}
