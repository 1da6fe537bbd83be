//! The report's data model: the JSON document `weft-report/v1` (see the
//! table in the module doc of [`crate::report`]). The evidence sections are
//! the node's own types ([`crate::control::evidence`], [`crate::audit::AuditStatus`]);
//! the types here add what the report derives from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::AuditStatus;
use crate::control::evidence::{
    BundleEvidence, CertEvidence, QuarantineEvidence, RevocationEvidence, RootEvidence,
};

/// The report format's name and version.
pub const FORMAT: &str = "weft-report/v1";

/// The node the report is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Its node id.
    pub node_id: String,
    /// The API URL the report was fetched from (set by the CLI).
    pub url: Option<String>,
    /// The state digest.
    pub digest: String,
    /// The document's heads.
    pub heads: Vec<String>,
    /// Updates applied.
    pub updates: usize,
    /// Updates held for missing dependencies.
    pub held: usize,
    /// Milliseconds since the last exchange with a peer.
    pub last_sync_ms_ago: Option<u64>,
    /// Whether the state counts as stale.
    pub stale: bool,
}

/// A connected peer, as far as certificates go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCert {
    /// Its node id.
    pub node_id: String,
    /// Whether it presented a certificate that verified here.
    pub admitted: bool,
    /// The name on that certificate.
    #[serde(default)]
    pub name: Option<String>,
    /// When that certificate expires (Unix seconds).
    #[serde(default)]
    pub expires: Option<u64>,
}

/// Node certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificates {
    /// This node's own certificate; `null` when it has none.
    pub node: Option<CertEvidence>,
    /// Connected peers and whether their certificates verified.
    pub peers: Vec<PeerCert>,
    /// What the node keeps of peer certificates.
    pub note: String,
}

/// One entry of the revocation and quarantine timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When (Unix seconds); `null` when not recorded.
    pub time: Option<u64>,
    /// `revocation` or `quarantine`.
    pub kind: String,
    /// The subject.
    pub subject: String,
    /// The reason given.
    pub reason: String,
    /// Who signed it.
    pub signers: Vec<String>,
}

/// Decision and update statistics since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionStats {
    /// Allowed.
    pub allow: u64,
    /// Denied (revocations not included).
    pub deny: u64,
    /// Denied for a revocation.
    pub revoked: u64,
    /// Every decision.
    pub total: u64,
    /// Signed updates applied.
    pub updates_applied: u64,
    /// Updates refused, by reason.
    pub updates_refused: BTreeMap<String, u64>,
    /// Anti-entropy rounds.
    pub sync_rounds: u64,
    /// Updates received by sync.
    pub synced: u64,
    /// Peers banned.
    pub bans: u64,
    /// Concurrent writes in bundles.
    pub conflicts: usize,
}

/// `GET /v1/audit/verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerify {
    /// Whether the whole chain verifies.
    pub ok: bool,
    /// Records checked.
    #[serde(default)]
    pub records: u64,
    /// Checkpoints checked.
    #[serde(default)]
    pub checkpoints: u64,
    /// The first record that does not verify.
    #[serde(default)]
    pub first_bad: Option<u64>,
    /// Why it does not verify.
    #[serde(default)]
    pub error: Option<String>,
}

/// The audit chain, as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvidence {
    /// Its status, as `GET /v1/audit/status` gives it; `null` when that
    /// endpoint did not answer.
    pub status: Option<AuditStatus>,
    /// Its verification.
    pub verify: AuditVerify,
}

/// How far the evidence supports a control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlStatus {
    /// The evidence supports it.
    #[serde(rename = "met")]
    Met,
    /// Some of it is supported.
    #[serde(rename = "partial")]
    Partial,
    /// The evidence shows it failing (e.g. the audit chain does not verify).
    #[serde(rename = "not met")]
    NotMet,
    /// The evidence it needs is missing.
    #[serde(rename = "not available")]
    NotAvailable,
}

impl ControlStatus {
    /// The text form, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlStatus::Met => "met",
            ControlStatus::Partial => "partial",
            ControlStatus::NotMet => "not met",
            ControlStatus::NotAvailable => "not available",
        }
    }
}

/// One row of the controls table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// The control id, like `CC6.1` or `A.8.15`.
    pub id: String,
    /// `SOC 2` or `ISO 27001`.
    pub framework: String,
    /// The control's short title.
    pub title: String,
    /// What it asks for, in a sentence.
    pub asks: String,
    /// The report sections that support it.
    pub evidence: Vec<String>,
    /// How far the evidence supports it.
    pub status: ControlStatus,
    /// Why, from the data.
    pub why: String,
}

/// The compliance report: the evidence, and the controls derived from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: String,
    /// When the node assembled the evidence (Unix seconds).
    pub generated_at: u64,
    /// The node.
    pub node: NodeSummary,
    /// The trust root in force.
    pub trust_root: RootEvidence,
    /// Node certificates.
    pub certificates: Certificates,
    /// Bundles: the policies in force, who signed them and when.
    pub bundles: Vec<BundleEvidence>,
    /// Revoked subjects.
    pub revocations: Vec<RevocationEvidence>,
    /// Quarantines.
    pub quarantines: Vec<QuarantineEvidence>,
    /// Revocations and quarantines by time.
    pub timeline: Vec<TimelineEntry>,
    /// Decision and update statistics.
    pub decisions: DecisionStats,
    /// The audit chain; `null` when the node has none.
    pub audit: Option<AuditEvidence>,
    /// What is missing or partial.
    pub notes: Vec<String>,
    /// The controls table.
    pub controls: Vec<Control>,
}
