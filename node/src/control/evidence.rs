//! What a node can show about its own state, with provenance: the policies in
//! force and who signed them when, the trust root, the node's certificate, the
//! revocations and quarantines with their signers and times.
//!
//! The node task assembles a [`NodeEvidence`] (it owns the replica, so it
//! knows which operator keys signed which change); the dashboard
//! (`GET /v1/dashboard`) and the compliance report (`GET /v1/report`,
//! `weft report`) are built from it.
//!
//! Times are the authors' own: each automerge change carries the timestamp
//! its author's CLI set (Unix seconds). A change written with time 0 (older
//! tooling, or tests) has no recorded time, and is shown as such.

use serde::{Deserialize, Serialize};

use super::Status;

/// An operator key that signed something, named by the trust root if it can.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SignerEvidence {
    /// The operator's name in the current trust root; `null` for a key the
    /// root no longer lists.
    pub name: Option<String>,
    /// The public key (`ed25519.…`).
    pub key: String,
    /// The operator's roles in the current trust root.
    pub roles: Vec<String>,
}

impl SignerEvidence {
    /// The operator's name, or the key when the root does not name it.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.key)
    }
}

/// One signed change behind a piece of state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvidence {
    /// The change's hash, hex.
    pub hash: String,
    /// The author's timestamp (Unix seconds); `null` when the change
    /// recorded none.
    pub time: Option<u64>,
    /// Who signed it (operator names, or keys the root does not name).
    pub signers: Vec<String>,
}

/// One policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEvidence {
    /// The policy's id within its bundle.
    pub id: String,
    /// Its Cedar text.
    pub text: String,
}

/// One bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvidence {
    /// The bundle's name.
    pub name: String,
    /// Its description, if it has one.
    pub description: Option<String>,
    /// The policies of the version in force (empty when the evidence was
    /// asked for without policy texts).
    pub policies: Vec<PolicyEvidence>,
    /// How many policies are in force.
    pub policy_count: usize,
    /// Why the merged content is not in force, if it is not.
    pub error: Option<String>,
    /// Concurrent writes in the bundle.
    pub conflicts: usize,
    /// Everyone who signed a change that wrote what the bundle holds now.
    pub signers: Vec<SignerEvidence>,
    /// Those changes, oldest first (changes with no recorded time last).
    pub changes: Vec<ChangeEvidence>,
}

/// One revoked subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEvidence {
    /// The subject: a Cedar entity uid, a node id or `token:<id>`.
    pub subject: String,
    /// The reason the revocation gives.
    pub reason: String,
    /// Who signed the live revocation records.
    pub signers: Vec<SignerEvidence>,
    /// When, by the latest live record's author (Unix seconds); `null` when
    /// not recorded.
    pub time: Option<u64>,
    /// The changes holding the live records.
    pub changes: Vec<ChangeEvidence>,
}

/// One quarantine record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEvidence {
    /// The quarantined subject.
    pub subject: String,
    /// The stored record: parsed JSON when it is JSON, else the text.
    pub record: serde_json::Value,
    /// The reason, when the record has a `reason` field.
    pub reason: Option<String>,
    /// Who signed the change that wrote it, when known.
    pub signers: Vec<String>,
    /// When, by its author (Unix seconds), when known.
    pub time: Option<u64>,
}

/// One operator of the trust root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorEvidence {
    /// Name.
    pub name: String,
    /// Public key.
    pub key: String,
    /// Roles: `policy`, `revoke`, `admit`, `issue`.
    pub roles: Vec<String>,
}

/// What nodes may quarantine on their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineLimitsEvidence {
    /// Whether nodes may quarantine at all.
    pub allowed: bool,
    /// The longest quarantine a node may order, seconds.
    pub max_ttl_secs: u64,
    /// How many quarantines one node may order per hour.
    pub max_per_node_per_hour: u32,
}

/// The trust root in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootEvidence {
    /// Version.
    pub version: u64,
    /// Expiry (Unix seconds).
    pub expires: u64,
    /// Whether it has expired (it is still enforced).
    pub expired: bool,
    /// The root keys.
    pub root_keys: Vec<String>,
    /// How many root keys must sign the next root.
    pub root_threshold: u32,
    /// How many operators must sign a policy update.
    pub policy_threshold: u32,
    /// How many operators must sign a revocation.
    pub revoke_threshold: u32,
    /// What nodes may quarantine on their own.
    pub quarantine: QuarantineLimitsEvidence,
    /// The operators and their roles.
    pub operators: Vec<OperatorEvidence>,
}

/// A node certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEvidence {
    /// The node it admits.
    pub node_id: String,
    /// The node's name.
    pub name: String,
    /// The issuing operator's key.
    pub issuer: String,
    /// The issuing operator's name, if the root lists the key.
    pub issuer_name: Option<String>,
    /// Issued (Unix seconds).
    pub issued: u64,
    /// Expires (Unix seconds).
    pub expires: u64,
    /// Whether it verifies against the trust root now.
    pub valid: bool,
    /// Why it does not, if it does not.
    pub error: Option<String>,
}

/// Everything the node task knows, with provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEvidence {
    /// The node's status, as `GET /v1/status` gives it.
    pub status: Status,
    /// The trust root in force.
    pub root: RootEvidence,
    /// Bundles by name.
    pub bundles: Vec<BundleEvidence>,
    /// Revocations by subject.
    pub revocations: Vec<RevocationEvidence>,
    /// Quarantines by subject.
    pub quarantines: Vec<QuarantineEvidence>,
}

/// The `reason` field of a quarantine record, if it has one.
pub fn record_reason(record: &serde_json::Value) -> Option<String> {
    record
        .get("reason")
        .and_then(|r| r.as_str())
        .map(str::to_owned)
}

/// A stored record as JSON: parsed when it parses, else the text as a string.
pub fn record_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// An author's timestamp as evidence: `None` for 0 or less (not recorded).
pub fn recorded_time(time: i64) -> Option<u64> {
    u64::try_from(time).ok().filter(|t| *t > 0)
}

/// The certificate in `bytes` (an encoded `SignedNodeCert`), checked against
/// `root` at `now` (Unix seconds); `None` when there is none or it does not
/// decode.
pub fn cert_evidence(
    bytes: &[u8],
    root: &weft_protocol::trust::TrustRoot,
    now: u64,
) -> Option<CertEvidence> {
    use weft_protocol::trust::SignedNodeCert;
    if bytes.is_empty() {
        return None;
    }
    let signed = SignedNodeCert::from_bytes(bytes).ok()?;
    let cert = signed.cert().ok()?;
    let verdict = signed.verify(root, now);
    Some(CertEvidence {
        node_id: cert.node.to_string(),
        name: cert.name.clone(),
        issuer: cert.issuer.to_string(),
        issuer_name: root.operator_by_key(&cert.issuer).map(|o| o.name.clone()),
        issued: cert.issued,
        expires: cert.expires,
        valid: verdict.is_ok(),
        error: verdict.err().map(|e| e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_records() {
        assert_eq!(recorded_time(0), None);
        assert_eq!(recorded_time(-5), None);
        assert_eq!(recorded_time(1_700_000_000), Some(1_700_000_000));
        let v = record_value(r#"{"reason": "scan", "ttl": 60}"#);
        assert_eq!(record_reason(&v).as_deref(), Some("scan"));
        assert_eq!(record_value("plain"), serde_json::json!("plain"));
        assert_eq!(record_reason(&record_value("plain")), None);
    }
}
