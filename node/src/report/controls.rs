//! The controls table: SOC 2 CC6.1, CC6.2, CC6.3, CC7.2, CC7.3 and ISO 27001
//! A.5.15, A.8.15, A.8.16, each judged from the report's evidence alone by
//! one function below.

use super::model::{
    Control,
    ControlStatus::{self, Met, NotAvailable, NotMet, Partial},
    Report,
};

const SOC2: &str = "SOC 2";
const ISO27001: &str = "ISO 27001";

/// The controls table, derived from the evidence alone.
pub fn controls(r: &Report) -> Vec<Control> {
    [cc6_1, cc6_2, cc6_3, cc7_2, cc7_3, a5_15, a8_15, a8_16]
        .iter()
        .map(|control| control(r))
        .collect()
}

/// A control's fixed text, and the verdict on it.
struct Text {
    id: &'static str,
    framework: &'static str,
    title: &'static str,
    asks: &'static str,
    evidence: &'static [&'static str],
}

impl Text {
    fn judged(self, status: ControlStatus, why: impl Into<String>) -> Control {
        Control {
            id: self.id.into(),
            framework: self.framework.into(),
            title: self.title.into(),
            asks: self.asks.into(),
            evidence: self.evidence.iter().map(|s| (*s).to_owned()).collect(),
            status,
            why: why.into(),
        }
    }
}

/// How the bundles stand.
struct Bundles {
    /// Without an error and with at least one policy.
    in_force: usize,
    /// With an error.
    broken: usize,
    /// Without a known signer.
    unsigned: usize,
}

impl Bundles {
    fn of(r: &Report) -> Bundles {
        let b = &r.bundles;
        Bundles {
            in_force: b
                .iter()
                .filter(|b| b.error.is_none() && b.policy_count > 0)
                .count(),
            broken: b.iter().filter(|b| b.error.is_some()).count(),
            unsigned: b.iter().filter(|b| b.signers.is_empty()).count(),
        }
    }
}

/// Whether the audit chain verifies; `None` when the node has none.
fn audit_ok(r: &Report) -> Option<bool> {
    r.audit.as_ref().map(|a| a.verify.ok)
}

/// CC6.1: signed policy bundles in force under the trust root.
fn cc6_1(r: &Report) -> Control {
    let text = Text {
        id: "CC6.1",
        framework: SOC2,
        title: "Logical access security",
        asks: "Logical access to information assets is restricted by access-control software, rules and infrastructure.",
        evidence: &["bundles", "trust_root"],
    };
    let b = Bundles::of(r);
    let root = &r.trust_root;
    if r.bundles.is_empty() {
        text.judged(NotAvailable, "no policy bundle is in force on this node")
    } else if b.broken > 0 || b.unsigned > 0 || root.expired {
        text.judged(
            Partial,
            format!(
                "{} bundle(s) in force; {} with errors, {} without known signers{}",
                b.in_force,
                b.broken,
                b.unsigned,
                if root.expired {
                    "; the trust root has expired"
                } else {
                    ""
                }
            ),
        )
    } else {
        text.judged(
            Met,
            format!(
                "{} signed bundle(s) in force under trust root version {}, enforced on every request",
                b.in_force, root.version
            ),
        )
    }
}

/// CC6.2: operators registered by key, nodes admitted by certificate.
fn cc6_2(r: &Report) -> Control {
    let text = Text {
        id: "CC6.2",
        framework: SOC2,
        title: "Registration and authorization",
        asks: "Users and systems are registered and authorized before credentials are issued, and removed when no longer authorized.",
        evidence: &["trust_root", "certificates"],
    };
    let operators = r.trust_root.operators.len();
    let cert_ok = r.certificates.node.as_ref().is_some_and(|c| c.valid);
    if operators == 0 {
        text.judged(NotAvailable, "the trust root names no operators")
    } else if !cert_ok {
        text.judged(
            Partial,
            format!(
                "{operators} operator(s) registered by key in the trust root, but this node's certificate is {}",
                if r.certificates.node.is_some() {
                    "not valid"
                } else {
                    "missing"
                }
            ),
        )
    } else {
        text.judged(
            Met,
            format!(
                "{operators} operator(s) registered by key in the signed trust root; nodes admitted by operator-signed certificates"
            ),
        )
    }
}

/// CC6.3: roles per operator, several signers for a policy change,
/// removal by signed revocation.
fn cc6_3(r: &Report) -> Control {
    let text = Text {
        id: "CC6.3",
        framework: SOC2,
        title: "Role-based access and removal",
        asks: "Access is granted, modified and removed by role, with least privilege and separation of duties.",
        evidence: &["trust_root", "revocations"],
    };
    let root = &r.trust_root;
    let all_roles = root.operators.iter().filter(|o| o.roles.len() >= 4).count();
    if root.operators.is_empty() {
        text.judged(NotAvailable, "the trust root names no operators")
    } else if root.policy_threshold < 2 || root.revoke_threshold < 1 {
        text.judged(
            Partial,
            format!(
                "roles are assigned per operator ({all_roles} hold every role) and access is removed by signed revocation ({} in force), but one signer suffices for a policy change (policy threshold {})",
                r.revocations.len(),
                root.policy_threshold
            ),
        )
    } else {
        text.judged(
            Met,
            format!(
                "roles are assigned per operator, a policy change needs {} signers and a revocation {}; {} revocation(s) in force",
                root.policy_threshold,
                root.revoke_threshold,
                r.revocations.len()
            ),
        )
    }
}

/// CC7.2: decisions and updates counted, and recorded in a verified audit
/// chain.
fn cc7_2(r: &Report) -> Control {
    let text = Text {
        id: "CC7.2",
        framework: SOC2,
        title: "Monitoring for anomalies",
        asks: "System components are monitored for anomalies that indicate malicious acts, errors or failures.",
        evidence: &["decisions", "audit"],
    };
    let d = &r.decisions;
    let seen = d.total > 0 || d.updates_applied > 0 || !d.updates_refused.is_empty();
    match audit_ok(r) {
        Some(true) => text.judged(
            Met,
            format!(
                "decisions and updates are counted ({} decisions, {} refused updates) and recorded in a verified audit chain",
                d.total,
                d.updates_refused.values().sum::<u64>()
            ),
        ),
        audit if seen => text.judged(
            Partial,
            format!(
                "decisions and refused updates are counted ({} decisions), but {}",
                d.total,
                if audit.is_some() {
                    "the audit chain does not verify"
                } else {
                    "there is no audit trail to review"
                }
            ),
        ),
        _ => text.judged(
            Partial,
            "counters are kept but no decision has been recorded yet, and there is no verified audit trail",
        ),
    }
}

/// CC7.3: revocations and quarantines on record, signed and timed.
fn cc7_3(r: &Report) -> Control {
    let text = Text {
        id: "CC7.3",
        framework: SOC2,
        title: "Evaluating and responding to security events",
        asks: "Security events are evaluated and responded to, with a record of the response.",
        evidence: &["timeline", "revocations", "quarantines", "audit"],
    };
    let total = r.timeline.len();
    let timed = r.timeline.iter().filter(|t| t.time.is_some()).count();
    let signed = r.timeline.iter().filter(|t| !t.signers.is_empty()).count();
    let verified = audit_ok(r) == Some(true);
    if total == 0 {
        text.judged(
            Partial,
            "revocation and quarantine are in place, but none is on record to show a response",
        )
    } else if timed == total && signed == total && verified {
        text.judged(
            Met,
            format!("{total} response(s) on record, each signed and timed; audit chain verified"),
        )
    } else {
        text.judged(
            Partial,
            format!(
                "{total} response(s) on record: {signed} with signers, {timed} with a time{}",
                if verified {
                    ""
                } else {
                    "; no verified audit trail"
                }
            ),
        )
    }
}

/// A.5.15: access-control rules (policy bundles) in force, each signed.
fn a5_15(r: &Report) -> Control {
    let text = Text {
        id: "A.5.15",
        framework: ISO27001,
        title: "Access control",
        asks: "Rules to control physical and logical access are established and implemented.",
        evidence: &["bundles", "trust_root"],
    };
    let b = Bundles::of(r);
    let total = r.bundles.len();
    if total == 0 {
        text.judged(
            NotAvailable,
            "no access-control rules (policy bundles) are in force",
        )
    } else if b.in_force == total && b.unsigned == 0 {
        text.judged(
            Met,
            format!(
                "{total} bundle(s) of Cedar policies, each signed by operators named in the trust root"
            ),
        )
    } else {
        text.judged(
            Partial,
            format!(
                "{} of {total} bundle(s) in force with known signers",
                b.in_force
            ),
        )
    }
}

/// A.8.15: a hash-chained audit log that verifies.
fn a8_15(r: &Report) -> Control {
    let text = Text {
        id: "A.8.15",
        framework: ISO27001,
        title: "Logging",
        asks: "Logs recording activities, exceptions and events are produced, stored, protected and analysed.",
        evidence: &["audit"],
    };
    match &r.audit {
        None => text.judged(NotAvailable, "the node has no audit trail"),
        Some(a) if a.verify.ok => text.judged(
            Met,
            format!(
                "hash-chained audit log of {} record(s), {} checkpoint(s), verified",
                a.verify.records, a.verify.checkpoints
            ),
        ),
        Some(a) => text.judged(
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
    }
}

/// A.8.16: a fresh node, monitored, and logged in a verified audit chain.
fn a8_16(r: &Report) -> Control {
    let text = Text {
        id: "A.8.16",
        framework: ISO27001,
        title: "Monitoring activities",
        asks: "Networks, systems and applications are monitored for anomalous behaviour.",
        evidence: &["decisions", "node", "audit"],
    };
    if r.node.stale {
        text.judged(
            Partial,
            "decisions are counted, but the node's state is stale (no recent sync with a peer)",
        )
    } else if audit_ok(r) == Some(true) {
        text.judged(
            Met,
            "decisions, updates, peers and freshness are monitored (dashboard, metrics) and logged in a verified audit chain",
        )
    } else {
        text.judged(
            Partial,
            "decisions, updates, peers and freshness are monitored (dashboard, metrics), but there is no verified audit trail",
        )
    }
}
