//! The compliance report: `weft report --node URL --out FILE.html|FILE.json`.
//!
//! A node answers `GET /v1/report` with the evidence it holds (a [`Report`]
//! whose `audit` is `null`); the CLI adds the audit chain's status and
//! verification from `GET /v1/audit/status` and `GET /v1/audit/verify` when
//! the node has them, derives the controls table, and writes either the JSON
//! document or one self-contained, print-friendly HTML page.
//!
//! # The JSON document (`"format": "weft-report/v1"`)
//! Fields are only ever added. Times are Unix seconds; `null` where a time
//! was not recorded.
//!
//! | field | what it holds |
//! |---|---|
//! | `format`, `generated_at` | `"weft-report/v1"`; when the node assembled the evidence |
//! | `node` | `node_id`, `url`, `digest`, `heads`, `updates`, `held`, `last_sync_ms_ago`, `stale` |
//! | `trust_root` | `version`, `expires`, `expired`, `root_keys`, `root_threshold`, `policy_threshold`, `revoke_threshold`, `quarantine` {`allowed`, `max_ttl_secs`, `max_per_node_per_hour`}, `operators` [{`name`, `key`, `roles`}] |
//! | `certificates` | `node` (this node's: `node_id`, `name`, `issuer`, `issuer_name`, `issued`, `expires`, `valid`, `error`, or `null`), `peers` [{`node_id`, `admitted`, `name`, `expires`}] (the certificate each connected peer was admitted with), `note` |
//! | `bundles` | [{`name`, `description`, `policies` [{`id`, `text`}], `policy_count`, `error`, `conflicts`, `signers` [{`name`, `key`, `roles`}], `changes` [{`hash`, `time`, `signers`}]}] |
//! | `revocations` | [{`subject`, `reason`, `signers`, `time`, `changes`}] |
//! | `quarantines` | [{`subject`, `record`, `reason`, `signers`, `time`}] |
//! | `timeline` | revocations and quarantines by time (unrecorded times last): [{`time`, `kind`, `subject`, `reason`, `signers`}] |
//! | `decisions` | `allow`, `deny`, `revoked`, `total` since the node started, and `updates_applied`, `updates_refused` {reason: n}, `sync_rounds`, `synced`, `bans`, `conflicts` |
//! | `audit` | `null` when the node has no audit trail, else {`status`: `GET /v1/audit/status` or `null`, `verify`: `GET /v1/audit/verify`} |
//! | `notes` | sentences on what is missing or partial |
//! | `controls` | [{`id`, `framework`, `title`, `asks`, `evidence` [section names], `status`: `met`\|`partial`\|`not met`\|`not available`, `why`}], one per control: SOC 2 CC6.1, CC6.2, CC6.3, CC7.2, CC7.3; ISO 27001 A.5.15, A.8.15, A.8.16 |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::Args;
use serde::{Deserialize, Serialize};
use weft_protocol::time::format_timestamp;

use crate::client::NodeClient;
use crate::dashboard::DecisionCounts;
use crate::evidence::{
    BundleEvidence, CertEvidence, NodeEvidence, QuarantineEvidence, RevocationEvidence,
    RootEvidence,
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

/// `GET /v1/audit/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    /// Records in the chain.
    #[serde(default)]
    pub records: u64,
    /// The chain's head hash, hex.
    #[serde(default)]
    pub head: String,
    /// Records dropped (not written).
    #[serde(default)]
    pub dropped: u64,
    /// The last checkpoint.
    #[serde(default)]
    pub last_checkpoint: Option<AuditCheckpoint>,
    /// Checkpoints from peers.
    #[serde(default)]
    pub peer_checkpoints: u64,
}

/// An audit checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// The record it covers.
    #[serde(default)]
    pub seq: u64,
    /// The chain head at that record.
    #[serde(default)]
    pub head: String,
    /// When (Unix milliseconds).
    #[serde(default)]
    pub at_ms: u64,
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
    /// Its status; `null` when that endpoint did not answer.
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

const NO_AUDIT_NOTE: &str = "the node has no audit trail (GET /v1/audit/verify did not answer): logging evidence is not available";

impl Report {
    /// The report of a node's evidence (without the audit chain).
    pub fn from_node(
        e: NodeEvidence,
        cert: Option<CertEvidence>,
        counts: DecisionCounts,
        stale: bool,
        now: u64,
    ) -> Report {
        let s = e.status;
        let mut timeline: Vec<TimelineEntry> = e
            .revocations
            .iter()
            .map(|r| TimelineEntry {
                time: r.time,
                kind: "revocation".into(),
                subject: r.subject.clone(),
                reason: r.reason.clone(),
                signers: r.signers.iter().map(|s| s.label().to_owned()).collect(),
            })
            .chain(e.quarantines.iter().map(|q| TimelineEntry {
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
        let mut report = Report {
            format: FORMAT.into(),
            generated_at: now,
            node: NodeSummary {
                node_id: s.node_id.clone(),
                url: None,
                digest: s.digest.clone(),
                heads: s.heads.clone(),
                updates: s.updates,
                held: s.held,
                last_sync_ms_ago: s.last_sync_ms_ago,
                stale,
            },
            trust_root: e.root,
            certificates: Certificates {
                node: cert,
                peers: s
                    .peers
                    .iter()
                    .map(|p| PeerCert {
                        node_id: p.node_id.clone(),
                        admitted: p.admitted,
                        name: p.cert_name.clone(),
                        expires: p.cert_expires,
                    })
                    .collect(),
                note: "peer certificates are verified at admission; each connected peer is listed with the name and expiry of the certificate it was admitted with".into(),
            },
            bundles: e.bundles,
            revocations: e.revocations,
            quarantines: e.quarantines,
            timeline,
            decisions: DecisionStats {
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
            },
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
        let mut notes = Vec::new();
        if self.audit.is_none() {
            notes.push(NO_AUDIT_NOTE.to_owned());
        }
        let untimed = self
            .bundles
            .iter()
            .flat_map(|b| b.changes.iter())
            .chain(self.revocations.iter().flat_map(|r| r.changes.iter()))
            .filter(|c| c.time.is_none())
            .count();
        if untimed > 0 {
            notes.push(format!(
                "{untimed} signed change(s) recorded no time (written by older tooling): shown as \"time not recorded\""
            ));
        }
        if self.certificates.node.is_none() {
            notes.push("this node has no certificate: its peers refuse it".into());
        }
        self.notes = notes;
        self.controls = controls(self);
    }
}

fn control(
    id: &str,
    framework: &str,
    title: &str,
    asks: &str,
    evidence: &[&str],
    (status, why): (ControlStatus, String),
) -> Control {
    Control {
        id: id.into(),
        framework: framework.into(),
        title: title.into(),
        asks: asks.into(),
        evidence: evidence.iter().map(|s| (*s).to_owned()).collect(),
        status,
        why,
    }
}

/// The controls table, derived from the evidence alone.
pub fn controls(r: &Report) -> Vec<Control> {
    use ControlStatus::*;
    let in_force = r
        .bundles
        .iter()
        .filter(|b| b.error.is_none() && b.policy_count > 0)
        .count();
    let broken = r.bundles.iter().filter(|b| b.error.is_some()).count();
    let unsigned = r.bundles.iter().filter(|b| b.signers.is_empty()).count();
    let root = &r.trust_root;
    let cert_ok = r.certificates.node.as_ref().is_some_and(|c| c.valid);
    let audit_ok = r.audit.as_ref().map(|a| a.verify.ok);

    let cc61 = if r.bundles.is_empty() {
        (
            NotAvailable,
            "no policy bundle is in force on this node".to_owned(),
        )
    } else if broken > 0 || unsigned > 0 || root.expired {
        (
            Partial,
            format!(
                "{in_force} bundle(s) in force; {broken} with errors, {unsigned} without known signers{}",
                if root.expired {
                    "; the trust root has expired"
                } else {
                    ""
                }
            ),
        )
    } else {
        (
            Met,
            format!(
                "{in_force} signed bundle(s) in force under trust root version {}, enforced on every request",
                root.version
            ),
        )
    };
    let cc62 = if root.operators.is_empty() {
        (NotAvailable, "the trust root names no operators".to_owned())
    } else if !cert_ok {
        (
            Partial,
            format!(
                "{} operator(s) registered by key in the trust root, but this node's certificate is {}",
                root.operators.len(),
                if r.certificates.node.is_some() {
                    "not valid"
                } else {
                    "missing"
                }
            ),
        )
    } else {
        (
            Met,
            format!(
                "{} operator(s) registered by key in the signed trust root; nodes admitted by operator-signed certificates",
                root.operators.len()
            ),
        )
    };
    let all_roles = root.operators.iter().filter(|o| o.roles.len() >= 4).count();
    let cc63 = if root.operators.is_empty() {
        (NotAvailable, "the trust root names no operators".to_owned())
    } else if root.policy_threshold < 2 || root.revoke_threshold < 1 {
        (
            Partial,
            format!(
                "roles are assigned per operator ({all_roles} hold every role) and access is removed by signed revocation ({} in force), but one signer suffices for a policy change (policy threshold {})",
                r.revocations.len(),
                root.policy_threshold
            ),
        )
    } else {
        (
            Met,
            format!(
                "roles are assigned per operator, a policy change needs {} signers and a revocation {}; {} revocation(s) in force",
                root.policy_threshold,
                root.revoke_threshold,
                r.revocations.len()
            ),
        )
    };
    let decisions_seen = r.decisions.total > 0 || r.decisions.updates_applied > 0;
    let cc72 = match audit_ok {
        Some(true) => (
            Met,
            format!(
                "decisions and updates are counted ({} decisions, {} refused updates) and recorded in a verified audit chain",
                r.decisions.total,
                r.decisions.updates_refused.values().sum::<u64>()
            ),
        ),
        _ if decisions_seen || !r.decisions.updates_refused.is_empty() => (
            Partial,
            format!(
                "decisions and refused updates are counted ({} decisions), but {}",
                r.decisions.total,
                if audit_ok.is_some() {
                    "the audit chain does not verify"
                } else {
                    "there is no audit trail to review"
                }
            ),
        ),
        _ => (
            Partial,
            "counters are kept but no decision has been recorded yet, and there is no verified audit trail".to_owned(),
        ),
    };
    let timed = r.timeline.iter().filter(|t| t.time.is_some()).count();
    let signed = r.timeline.iter().filter(|t| !t.signers.is_empty()).count();
    let cc73 = if r.timeline.is_empty() {
        (
            Partial,
            "revocation and quarantine are in place, but none is on record to show a response"
                .to_owned(),
        )
    } else if timed == r.timeline.len() && signed == r.timeline.len() && audit_ok == Some(true) {
        (
            Met,
            format!(
                "{} response(s) on record, each signed and timed; audit chain verified",
                r.timeline.len()
            ),
        )
    } else {
        (
            Partial,
            format!(
                "{} response(s) on record: {signed} with signers, {timed} with a time{}",
                r.timeline.len(),
                if audit_ok == Some(true) {
                    ""
                } else {
                    "; no verified audit trail"
                }
            ),
        )
    };
    let a515 = if r.bundles.is_empty() {
        (
            NotAvailable,
            "no access-control rules (policy bundles) are in force".to_owned(),
        )
    } else if in_force == r.bundles.len() && unsigned == 0 {
        (
            Met,
            format!(
                "{} bundle(s) of Cedar policies, each signed by operators named in the trust root",
                r.bundles.len()
            ),
        )
    } else {
        (
            Partial,
            format!(
                "{in_force} of {} bundle(s) in force with known signers",
                r.bundles.len()
            ),
        )
    };
    let a815 = match &r.audit {
        None => (NotAvailable, "the node has no audit trail".to_owned()),
        Some(a) if a.verify.ok => (
            Met,
            format!(
                "hash-chained audit log of {} record(s), {} checkpoint(s), verified",
                a.verify.records, a.verify.checkpoints
            ),
        ),
        Some(a) => (
            NotMet,
            format!(
                "the audit chain does not verify{}{}",
                a.verify
                    .first_bad
                    .map(|n| format!(" from record {n}"))
                    .unwrap_or_default(),
                a.verify
                    .error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        ),
    };
    let a816 = if r.node.stale {
        (
            Partial,
            "decisions are counted, but the node's state is stale (no recent sync with a peer)"
                .to_owned(),
        )
    } else if audit_ok == Some(true) {
        (
            Met,
            "decisions, updates, peers and freshness are monitored (dashboard, metrics) and logged in a verified audit chain".to_owned(),
        )
    } else {
        (
            Partial,
            "decisions, updates, peers and freshness are monitored (dashboard, metrics), but there is no verified audit trail".to_owned(),
        )
    };
    vec![
        control(
            "CC6.1",
            "SOC 2",
            "Logical access security",
            "Logical access to information assets is restricted by access-control software, rules and infrastructure.",
            &["bundles", "trust_root"],
            cc61,
        ),
        control(
            "CC6.2",
            "SOC 2",
            "Registration and authorization",
            "Users and systems are registered and authorized before credentials are issued, and removed when no longer authorized.",
            &["trust_root", "certificates"],
            cc62,
        ),
        control(
            "CC6.3",
            "SOC 2",
            "Role-based access and removal",
            "Access is granted, modified and removed by role, with least privilege and separation of duties.",
            &["trust_root", "revocations"],
            cc63,
        ),
        control(
            "CC7.2",
            "SOC 2",
            "Monitoring for anomalies",
            "System components are monitored for anomalies that indicate malicious acts, errors or failures.",
            &["decisions", "audit"],
            cc72,
        ),
        control(
            "CC7.3",
            "SOC 2",
            "Evaluating and responding to security events",
            "Security events are evaluated and responded to, with a record of the response.",
            &["timeline", "revocations", "quarantines", "audit"],
            cc73,
        ),
        control(
            "A.5.15",
            "ISO 27001",
            "Access control",
            "Rules to control physical and logical access are established and implemented.",
            &["bundles", "trust_root"],
            a515,
        ),
        control(
            "A.8.15",
            "ISO 27001",
            "Logging",
            "Logs recording activities, exceptions and events are produced, stored, protected and analysed.",
            &["audit"],
            a815,
        ),
        control(
            "A.8.16",
            "ISO 27001",
            "Monitoring activities",
            "Networks, systems and applications are monitored for anomalous behaviour.",
            &["decisions", "node", "audit"],
            a816,
        ),
    ]
}

// ---- HTML -------------------------------------------------------------

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(time: Option<u64>) -> String {
    match time {
        Some(t) => format_timestamp(t),
        None => "time not recorded".into(),
    }
}

fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        format!("<span class=\"muted\">{}</span>", escape_html(none))
    } else {
        escape_html(&items.join(", "))
    }
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f4f6f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid #dde3ea}
h3{font-size:15px;margin:16px 0 6px}
.meta{color:#5b6675;margin:0 0 12px}.meta code{font-size:12px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border:1px solid #dde3ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;border:1px solid #e1e6ec;padding:8px;white-space:pre-wrap;word-break:break-word;margin:4px 0}
.muted{color:#7a8594}.key{word-break:break-all}
.st{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;white-space:nowrap}
.met{background:#dff5e3;color:#166b2c}.partial{background:#fff3d6;color:#8a5a00}
.notmet{background:#fde2e1;color:#a8201a}.na{background:#e9ecf0;color:#4b5563}
.notes li{margin:2px 0}
@media print{body{background:#fff}main{padding:0;max-width:none}h2{break-after:avoid}tr,pre{break-inside:avoid}}
"#;

fn status_badge(s: ControlStatus) -> String {
    let class = match s {
        ControlStatus::Met => "met",
        ControlStatus::Partial => "partial",
        ControlStatus::NotMet => "notmet",
        ControlStatus::NotAvailable => "na",
    };
    format!("<span class=\"st {class}\">{}</span>", s.as_str())
}

/// The report as one self-contained HTML page (inline CSS, no scripts,
/// every string from the evidence escaped).
pub fn render_html(r: &Report) -> String {
    let e = escape_html;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Weft compliance report: {}</title><style>{STYLE}</style></head><body><main>\n",
        e(&r.node.node_id)
    );
    let _ = write!(
        h,
        "<h1>Weft compliance report</h1>\n<p class=\"meta\">Generated {} &middot; node <code id=\"node-id\">{}</code>{}<br>state digest <code id=\"digest\">{}</code> &middot; {} update(s), {} held &middot; format {}</p>\n",
        e(&format_timestamp(r.generated_at)),
        e(&r.node.node_id),
        r.node
            .url
            .as_ref()
            .map(|u| format!(" at <code>{}</code>", e(u)))
            .unwrap_or_default(),
        e(&r.node.digest),
        r.node.updates,
        r.node.held,
        e(&r.format)
    );

    // Controls first: what an auditor reads.
    h += "<h2 id=\"controls\">Controls</h2>\n<table><tr><th>Control</th><th>What it asks</th><th>Evidence</th><th>Status</th><th>Why</th></tr>\n";
    for c in &r.controls {
        let _ = writeln!(
            h,
            "<tr class=\"control\" data-id=\"{}\"><td><b>{}</b><br><span class=\"muted\">{} &middot; {}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&c.id),
            e(&c.id),
            e(&c.framework),
            e(&c.title),
            e(&c.asks),
            c.evidence
                .iter()
                .map(|s| format!("<a href=\"#{0}\">{0}</a>", e(s)))
                .collect::<Vec<_>>()
                .join(", "),
            status_badge(c.status),
            e(&c.why)
        );
    }
    h += "</table>\n";
    if !r.notes.is_empty() {
        h += "<ul class=\"notes\">";
        for n in &r.notes {
            let _ = write!(h, "<li>{}</li>", e(n));
        }
        h += "</ul>\n";
    }

    // Node.
    let _ = write!(
        h,
        "<h2 id=\"node\">Node</h2>\n<table><tr><th>Node id</th><td><code>{}</code></td></tr>\
         <tr><th>Heads</th><td>{}</td></tr><tr><th>Last sync</th><td>{}</td></tr><tr><th>Stale</th><td>{}</td></tr></table>\n",
        e(&r.node.node_id),
        r.node
            .heads
            .iter()
            .map(|x| format!("<code>{}</code>", e(x)))
            .collect::<Vec<_>>()
            .join("<br>"),
        match r.node.last_sync_ms_ago {
            Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
            None => "never".into(),
        },
        if r.node.stale { "yes" } else { "no" }
    );

    // Trust root.
    let t = &r.trust_root;
    let _ = write!(
        h,
        "<h2 id=\"trust_root\">Trust root</h2>\n<table><tr><th>Version</th><td>{}</td></tr>\
         <tr><th>Expires</th><td>{}{}</td></tr>\
         <tr><th>Root keys</th><td>{} (threshold {})</td></tr>\
         <tr><th>Policy threshold</th><td>{}</td></tr><tr><th>Revocation threshold</th><td>{}</td></tr>\
         <tr><th>Node quarantine</th><td>{}</td></tr></table>\n",
        t.version,
        e(&format_timestamp(t.expires)),
        if t.expired {
            " <span class=\"st notmet\">expired</span>"
        } else {
            ""
        },
        t.root_keys
            .iter()
            .map(|k| format!("<code class=\"key\">{}</code>", e(k)))
            .collect::<Vec<_>>()
            .join("<br>"),
        t.root_threshold,
        t.policy_threshold,
        t.revoke_threshold,
        if t.quarantine.allowed {
            format!(
                "allowed: at most {} s each, {} per node per hour",
                t.quarantine.max_ttl_secs, t.quarantine.max_per_node_per_hour
            )
        } else {
            format!(
                "not allowed (limits if enabled: {} s, {} per node per hour)",
                t.quarantine.max_ttl_secs, t.quarantine.max_per_node_per_hour
            )
        }
    );
    h += "<h3>Operators</h3><table><tr><th>Name</th><th>Key</th><th>Roles</th></tr>\n";
    for o in &t.operators {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><code class=\"key\">{}</code></td><td>{}</td></tr>",
            e(&o.name),
            e(&o.key),
            e(&o.roles.join(", "))
        );
    }
    h += "</table>\n";

    // Certificates.
    h += "<h2 id=\"certificates\">Node certificates</h2>\n";
    match &r.certificates.node {
        Some(c) => {
            let _ = writeln!(
                h,
                "<table><tr><th>This node</th><td>{} <code>{}</code></td></tr>\
                 <tr><th>Issued by</th><td>{} <code class=\"key\">{}</code></td></tr>\
                 <tr><th>Issued</th><td>{}</td></tr><tr><th>Expires</th><td>{}</td></tr>\
                 <tr><th>Valid</th><td>{}</td></tr></table>",
                e(&c.name),
                e(&c.node_id),
                e(c.issuer_name.as_deref().unwrap_or("(unknown operator)")),
                e(&c.issuer),
                e(&format_timestamp(c.issued)),
                e(&format_timestamp(c.expires)),
                if c.valid {
                    "<span class=\"st met\">valid</span>".to_owned()
                } else {
                    format!(
                        "<span class=\"st notmet\">not valid</span> {}",
                        e(c.error.as_deref().unwrap_or(""))
                    )
                }
            );
        }
        None => h += "<p class=\"muted\">This node has no certificate.</p>\n",
    }
    if !r.certificates.peers.is_empty() {
        h += "<table><tr><th>Peer</th><th>Name</th><th>Certificate</th><th>Expires</th></tr>\n";
        for p in &r.certificates.peers {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&p.node_id),
                e(p.name.as_deref().unwrap_or("")),
                if p.admitted {
                    "verified at admission"
                } else {
                    "not admitted"
                },
                p.expires
                    .map(|t| e(&weft_protocol::time::format_timestamp(t)))
                    .unwrap_or_default()
            );
        }
        h += "</table>\n";
    }
    let _ = writeln!(h, "<p class=\"muted\">{}</p>", e(&r.certificates.note));

    // Bundles.
    h += "<h2 id=\"bundles\">Policies in force</h2>\n";
    if r.bundles.is_empty() {
        h += "<p class=\"muted\">No bundle.</p>\n";
    }
    for b in &r.bundles {
        let _ = writeln!(
            h,
            "<h3 class=\"bundle\">Bundle <code>{}</code> &middot; {} polic{}{}</h3>",
            e(&b.name),
            b.policy_count,
            if b.policy_count == 1 { "y" } else { "ies" },
            b.description
                .as_ref()
                .map(|d| format!(" &middot; {}", e(d)))
                .unwrap_or_default()
        );
        if let Some(err) = &b.error {
            let _ = writeln!(
                h,
                "<p><span class=\"st notmet\">error</span> {} (the last good version stays in force)</p>",
                e(err)
            );
        }
        if b.conflicts > 0 {
            let _ = writeln!(h, "<p>{} concurrent write(s).</p>", b.conflicts);
        }
        h += "<table><tr><th>Signed by</th><th>Key</th><th>Roles</th></tr>\n";
        if b.signers.is_empty() {
            h += "<tr><td colspan=\"3\" class=\"muted\">no known signer</td></tr>\n";
        }
        for s in &b.signers {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td><code class=\"key\">{}</code></td><td>{}</td></tr>",
                e(s.name
                    .as_deref()
                    .unwrap_or("(not in the current trust root)")),
                e(&s.key),
                e(&s.roles.join(", "))
            );
        }
        h += "</table>\n<table><tr><th>Change</th><th>When</th><th>Signers</th></tr>\n";
        for c in &b.changes {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                e(&c.hash.chars().take(16).collect::<String>()),
                e(&when(c.time)),
                list_or(&c.signers, "none known")
            );
        }
        h += "</table>\n";
        for p in &b.policies {
            let _ = writeln!(
                h,
                "<div class=\"policy\"><b>{}</b><pre>{}</pre></div>",
                e(&p.id),
                e(&p.text)
            );
        }
    }

    // Timeline.
    h += "<h2 id=\"timeline\">Revocations and quarantines</h2>\n";
    if r.timeline.is_empty() {
        h += "<p class=\"muted\">None.</p>\n";
    } else {
        h += "<table><tr><th>When</th><th>Kind</th><th>Subject</th><th>Reason</th><th>Signed by</th></tr>\n";
        for t in &r.timeline {
            let _ = writeln!(
                h,
                "<tr class=\"event\"><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                e(&when(t.time)),
                e(&t.kind),
                e(&t.subject),
                e(&t.reason),
                list_or(&t.signers, "not recorded")
            );
        }
        h += "</table>\n";
    }
    h += "<div id=\"revocations\"></div><div id=\"quarantines\"></div>\n";

    // Decisions.
    let d = &r.decisions;
    let _ = write!(
        h,
        "<h2 id=\"decisions\">Decisions and updates</h2>\n<p class=\"muted\">Since the node started.</p>\
         <table><tr><th>Allowed</th><td>{}</td></tr><tr><th>Denied</th><td>{}</td></tr>\
         <tr><th>Denied (revoked)</th><td>{}</td></tr><tr><th>Total</th><td>{}</td></tr>\
         <tr><th>Updates applied</th><td>{}</td></tr><tr><th>Updates refused</th><td>{}</td></tr>\
         <tr><th>Sync rounds / updates by sync</th><td>{} / {}</td></tr><tr><th>Peers banned</th><td>{}</td></tr>\
         <tr><th>Concurrent writes</th><td>{}</td></tr></table>\n",
        d.allow,
        d.deny,
        d.revoked,
        d.total,
        d.updates_applied,
        if d.updates_refused.is_empty() {
            "0".to_owned()
        } else {
            e(&d.updates_refused
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "))
        },
        d.sync_rounds,
        d.synced,
        d.bans,
        d.conflicts
    );

    // Audit.
    h += "<h2 id=\"audit\">Audit chain</h2>\n";
    match &r.audit {
        None => {
            h += "<p><span class=\"st na\">not available</span> The node has no audit trail.</p>\n"
        }
        Some(a) => {
            let v = &a.verify;
            let _ = write!(
                h,
                "<table><tr><th>Verification</th><td>{}</td></tr><tr><th>Records</th><td>{}</td></tr>\
                 <tr><th>Checkpoints</th><td>{}</td></tr>",
                if v.ok {
                    "<span class=\"st met\">verified</span>".to_owned()
                } else {
                    format!(
                        "<span class=\"st notmet\">failed</span>{}{}",
                        v.first_bad
                            .map(|n| format!(" at record {n}"))
                            .unwrap_or_default(),
                        v.error
                            .as_ref()
                            .map(|x| format!(": {}", e(x)))
                            .unwrap_or_default()
                    )
                },
                v.records,
                v.checkpoints
            );
            if let Some(s) = &a.status {
                let _ = write!(
                    h,
                    "<tr><th>Head</th><td><code>{}</code></td></tr><tr><th>Dropped</th><td>{}</td></tr>\
                     <tr><th>Last checkpoint</th><td>{}</td></tr><tr><th>Peer checkpoints</th><td>{}</td></tr>",
                    e(&s.head),
                    s.dropped,
                    match &s.last_checkpoint {
                        Some(c) => format!(
                            "record {} at {}, head <code>{}</code>",
                            c.seq,
                            e(&format_timestamp(c.at_ms / 1000)),
                            e(&c.head)
                        ),
                        None => "none".into(),
                    },
                    s.peer_checkpoints
                );
            }
            h += "</table>\n";
        }
    }
    h += "</main></body></html>\n";
    h
}

// ---- the command --------------------------------------------------------

/// What `weft report` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    /// One HTML page.
    Html,
    /// The JSON document.
    Json,
}

/// The format named by `path`'s extension: `.html` / `.htm` or `.json`.
pub fn out_format(path: &Path) -> Result<OutFormat, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => Ok(OutFormat::Html),
        Some("json") => Ok(OutFormat::Json),
        _ => Err(format!(
            "{} must end in .html or .json: the extension chooses the format",
            path.display()
        )),
    }
}

fn parse_out(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    out_format(&path)?;
    Ok(path)
}

/// `weft report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The node's API, like http://127.0.0.1:7100.
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// Where to write the report: FILE.html (a readable page) or FILE.json
    /// (the evidence document); the extension chooses.
    #[arg(long, value_name = "FILE", value_parser = parse_out)]
    pub out: PathBuf,
    /// Print a JSON summary {"out", "format", "controls": {ID: STATUS}} instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The long help of `weft report`.
pub const REPORT_LONG_ABOUT: &str = "Write a compliance report of a node's state.\n\n\
    Fetches the evidence from the node (GET /v1/report, and GET /v1/audit/status and \
    /v1/audit/verify when the node keeps an audit trail) and writes FILE.html, one \
    self-contained print-friendly page, or FILE.json, the same evidence as a stable JSON \
    document (format weft-report/v1). It holds the policies in force per bundle with who \
    signed them and when, the trust root and operator keys with their roles, the node's \
    certificate, the revocation and quarantine timeline, decision statistics, the audit \
    chain's verification, and a controls table mapping the evidence to SOC 2 CC6.1, \
    CC6.2, CC6.3, CC7.2, CC7.3 and ISO 27001 A.5.15, A.8.15, A.8.16 (met, partial, \
    not met or not available, derived from the data).\n\n\
    Example:\n  weft report --node http://127.0.0.1:7100 --out report.html";

/// Fetches the report of the node at `node` (`http://HOST:PORT`), with the
/// audit chain when the node has one.
pub fn fetch(node: &str) -> Result<Report> {
    let client = NodeClient::new(node)?;
    let mut report: Report = client.get("/v1/report")?.json("a report")?;
    report.node.url = Some(client.base().to_owned());
    let verify = client
        .get("/v1/audit/verify")
        .ok()
        .and_then(|a| a.json::<AuditVerify>("an audit verification").ok());
    let audit = verify.map(|verify| AuditEvidence {
        status: client
            .get("/v1/audit/status")
            .ok()
            .and_then(|a| a.json("an audit status").ok()),
        verify,
    });
    report.set_audit(audit);
    Ok(report)
}

/// The report in the format `format`.
pub fn render(report: &Report, format: OutFormat) -> String {
    match format {
        OutFormat::Html => render_html(report),
        OutFormat::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("a report serializes to JSON");
            s.push('\n');
            s
        }
    }
}

/// Runs `weft report`.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let format = out_format(&args.out).map_err(|e| anyhow!(e))?;
    let report = fetch(&args.node)?;
    std::fs::write(&args.out, render(&report, format))
        .map_err(|e| anyhow!("cannot write {}: {e}", args.out.display()))?;
    let count = |s: ControlStatus| report.controls.iter().filter(|c| c.status == s).count();
    if args.json {
        let controls: BTreeMap<&str, &str> = report
            .controls
            .iter()
            .map(|c| (c.id.as_str(), c.status.as_str()))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "out": args.out.display().to_string(),
                "format": match format { OutFormat::Html => "html", OutFormat::Json => "json" },
                "controls": controls,
            })
        );
    } else {
        eprintln!(
            "report on node {}: {} bundle(s), {} revocation(s), {} quarantine(s); controls: {} met, {} partial, {} not met, {} not available",
            report.node.node_id,
            report.bundles.len(),
            report.revocations.len(),
            report.quarantines.len(),
            count(ControlStatus::Met),
            count(ControlStatus::Partial),
            count(ControlStatus::NotMet),
            count(ControlStatus::NotAvailable),
        );
        println!("{}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RootStatus, StatsStatus, Status};
    use crate::evidence::{
        ChangeEvidence, OperatorEvidence, PolicyEvidence, QuarantineLimitsEvidence, SignerEvidence,
    };

    fn evidence() -> NodeEvidence {
        let alice = SignerEvidence {
            name: Some("alice".into()),
            key: "ed25519.A".into(),
            roles: vec!["policy".into(), "revoke".into()],
        };
        NodeEvidence {
            status: Status {
                audit: Default::default(),
                anomalies: Default::default(),
                node_id: "12D3KooWnode".into(),
                listen: vec![],
                peers: vec![],
                heads: vec!["ab".into()],
                digest: "d1".into(),
                bundles: vec![],
                revocations: 1,
                conflicts: vec![],
                updates: 2,
                held: 0,
                held_bytes: 0,
                last_sync_ms_ago: None,
                trust_root: RootStatus {
                    version: 1,
                    expires: 4_000_000_000,
                    expired: false,
                },
                stats: StatsStatus::default(),
            },
            root: RootEvidence {
                version: 1,
                expires: 4_000_000_000,
                expired: false,
                root_keys: vec!["ed25519.R".into()],
                root_threshold: 1,
                policy_threshold: 2,
                revoke_threshold: 1,
                quarantine: QuarantineLimitsEvidence {
                    allowed: false,
                    max_ttl_secs: 3600,
                    max_per_node_per_hour: 5,
                },
                operators: vec![OperatorEvidence {
                    name: "alice".into(),
                    key: "ed25519.A".into(),
                    roles: vec!["policy".into(), "revoke".into()],
                }],
            },
            bundles: vec![BundleEvidence {
                name: "web<script>".into(),
                description: None,
                policies: vec![PolicyEvidence {
                    id: "p".into(),
                    text: "permit(principal, action, resource) when { \"<script>alert(1)</script>\" == \"x\" };".into(),
                }],
                policy_count: 1,
                error: None,
                conflicts: 0,
                signers: vec![alice.clone()],
                changes: vec![ChangeEvidence {
                    hash: "c1".into(),
                    time: Some(1_700_000_000),
                    signers: vec!["alice".into()],
                }],
            }],
            revocations: vec![RevocationEvidence {
                subject: "User::\"mallory\"".into(),
                reason: "<script>alert('x')</script> & more".into(),
                signers: vec![alice],
                time: Some(1_700_000_100),
                changes: vec![ChangeEvidence {
                    hash: "c2".into(),
                    time: Some(1_700_000_100),
                    signers: vec!["alice".into()],
                }],
            }],
            quarantines: vec![],
        }
    }

    fn cert(valid: bool) -> CertEvidence {
        CertEvidence {
            node_id: "12D3KooWnode".into(),
            name: "n1".into(),
            issuer: "ed25519.A".into(),
            issuer_name: Some("alice".into()),
            issued: 1_700_000_000,
            expires: 4_000_000_000,
            valid,
            error: None,
        }
    }

    fn report() -> Report {
        Report::from_node(
            evidence(),
            Some(cert(true)),
            DecisionCounts {
                allow: 3,
                deny: 1,
                revoked: 2,
            },
            false,
            1_700_000_200,
        )
    }

    fn status(r: &Report, id: &str) -> ControlStatus {
        r.controls.iter().find(|c| c.id == id).unwrap().status
    }

    #[test]
    fn escaping_covers_the_five_characters() {
        assert_eq!(
            escape_html(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(escape_html("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn the_html_escapes_every_string_from_the_evidence() {
        let html = render_html(&report());
        assert!(!html.contains("<script"), "unescaped script tag");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
        assert!(html.contains("web&lt;script&gt;"));
        assert!(html.contains("User::&quot;mallory&quot;"));
        for id in [
            "CC6.1", "CC6.2", "CC6.3", "CC7.2", "CC7.3", "A.5.15", "A.8.15", "A.8.16",
        ] {
            assert!(html.contains(id), "{id}");
        }
        assert!(html.contains("2023-11-14T22:13:20Z"), "a readable time");
    }

    #[test]
    fn controls_follow_the_data() {
        let r = report();
        assert_eq!(r.controls.len(), 8);
        assert_eq!(status(&r, "CC6.1"), ControlStatus::Met);
        assert_eq!(status(&r, "CC6.2"), ControlStatus::Met);
        assert_eq!(status(&r, "CC6.3"), ControlStatus::Met);
        assert_eq!(status(&r, "A.5.15"), ControlStatus::Met);
        // No audit trail: logging is not available, monitoring partial.
        assert_eq!(status(&r, "A.8.15"), ControlStatus::NotAvailable);
        assert_eq!(status(&r, "A.8.16"), ControlStatus::Partial);
        assert_eq!(status(&r, "CC7.2"), ControlStatus::Partial);
        assert_eq!(status(&r, "CC7.3"), ControlStatus::Partial);
        assert!(r.notes.iter().any(|n| n.contains("no audit trail")));

        // A verified audit chain.
        let mut ok = r.clone();
        ok.set_audit(Some(AuditEvidence {
            status: None,
            verify: AuditVerify {
                ok: true,
                records: 10,
                checkpoints: 1,
                first_bad: None,
                error: None,
            },
        }));
        for id in ["A.8.15", "A.8.16", "CC7.2", "CC7.3"] {
            assert_eq!(status(&ok, id), ControlStatus::Met, "{id}");
        }
        assert!(ok.notes.is_empty(), "{:?}", ok.notes);

        // A broken one.
        let mut bad = r.clone();
        bad.set_audit(Some(AuditEvidence {
            status: None,
            verify: AuditVerify {
                ok: false,
                records: 10,
                checkpoints: 1,
                first_bad: Some(4),
                error: Some("hash mismatch".into()),
            },
        }));
        assert_eq!(status(&bad, "A.8.15"), ControlStatus::NotMet);
        assert!(bad.controls[6].why.contains("record 4"));

        // No bundles, one signer enough, no certificate, stale.
        let mut e = evidence();
        e.bundles.clear();
        e.root.policy_threshold = 1;
        let thin = Report::from_node(e, None, DecisionCounts::default(), true, 1);
        assert_eq!(status(&thin, "CC6.1"), ControlStatus::NotAvailable);
        assert_eq!(status(&thin, "A.5.15"), ControlStatus::NotAvailable);
        assert_eq!(status(&thin, "CC6.2"), ControlStatus::Partial);
        assert_eq!(status(&thin, "CC6.3"), ControlStatus::Partial);
        assert_eq!(status(&thin, "A.8.16"), ControlStatus::Partial);

        // A change without a recorded time.
        let mut e = evidence();
        e.revocations[0].time = None;
        e.revocations[0].changes[0].time = None;
        let untimed = Report::from_node(e, Some(cert(true)), DecisionCounts::default(), false, 1);
        assert!(untimed.notes.iter().any(|n| n.contains("recorded no time")));
        assert!(render_html(&untimed).contains("time not recorded"));
    }

    #[test]
    fn the_timeline_is_ordered_by_time() {
        let mut e = evidence();
        let mut early = e.revocations[0].clone();
        early.subject = "User::\"early\"".into();
        early.time = Some(5);
        let mut unknown = e.revocations[0].clone();
        unknown.subject = "User::\"unknown\"".into();
        unknown.time = None;
        e.revocations.push(unknown);
        e.revocations.push(early);
        e.quarantines.push(QuarantineEvidence {
            subject: "User::\"q\"".into(),
            record: serde_json::json!({"reason": "scan"}),
            reason: Some("scan".into()),
            signers: vec![],
            time: Some(6),
        });
        let r = Report::from_node(e, None, DecisionCounts::default(), false, 1);
        let order: Vec<&str> = r.timeline.iter().map(|t| t.subject.as_str()).collect();
        assert_eq!(
            order,
            [
                "User::\"early\"",
                "User::\"q\"",
                "User::\"mallory\"",
                "User::\"unknown\""
            ]
        );
        assert_eq!(r.timeline[1].kind, "quarantine");
    }

    #[test]
    fn the_extension_chooses_the_format() {
        assert_eq!(out_format(Path::new("r.html")), Ok(OutFormat::Html));
        assert_eq!(out_format(Path::new("R.HTM")), Ok(OutFormat::Html));
        assert_eq!(out_format(Path::new("a/r.json")), Ok(OutFormat::Json));
        assert!(
            out_format(Path::new("r.pdf"))
                .unwrap_err()
                .contains(".html or .json")
        );
        assert!(out_format(Path::new("report")).is_err());
    }

    #[test]
    fn the_json_round_trips() {
        let r = report();
        let text = render(&r, OutFormat::Json);
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["controls"][6]["status"], "not available");
        assert!(v["audit"].is_null());
    }
}
