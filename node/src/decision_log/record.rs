//! One shipped decision record, one JSON line, modelled on OPA's decision
//! log events so that SIEM pipelines built for OPA read it with few
//! changes.
//!
//! ```text
//! {"decision_id": "…32 hex…",                       OPA: decision_id
//!  "timestamp": "2026-12-06T23:59:01.123Z",         OPA: timestamp (RFC 3339, UTC)
//!  "path": "v1/authorize",                          OPA: path (the endpoint that decided)
//!  "labels": {"id": NODE_ID, "version": "0.1.0"},   OPA: labels.id, labels.version
//!  "input": {"principal", "action", "resource",     OPA: input (the request as asked;
//!            "context"},                                  an identity token is never written,
//!                                                         only the principal it names)
//!  "result": {"decision": "allow"|"deny", "reasons",  OPA: result (the answer)
//!             "errors", "revoked", "revoked_subject",
//!             "quarantined"},
//!  "state": "<digest>",                             OPA: bundles.NAME.revision (what decided)
//!  "node_id": NODE_ID,                              Weft: the node that decided
//!  "sampled_one_in": 100}                           Weft: on a sampled allow only
//! ```

use serde::Serialize;
use serde_json::Value;
use weft_protocol::authorize::DecisionRecord;

use crate::decision_id::DecisionId;

/// The endpoint path that `"path"` names for `POST /v1/authorize`.
pub const AUTHORIZE_PATH: &str = "v1/authorize";

/// A decision on its way to the log: what the API hands over, serialized
/// off the request path.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The decision's id.
    pub id: DecisionId,
    /// When it was decided, Unix milliseconds.
    pub at_ms: u64,
    /// The endpoint that decided ([`AUTHORIZE_PATH`]).
    pub path: &'static str,
    /// Principal, action and resource as asked.
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The request's context, if it had one.
    pub context: Option<Value>,
    /// The answer.
    pub allow: bool,
    /// The policies that decided.
    pub reasons: Vec<String>,
    /// Errors met while deciding.
    pub errors: Vec<String>,
    /// Whether a revocation decided.
    pub revoked: bool,
    /// The revoked subject that decided.
    pub revoked_subject: Option<String>,
    /// Whether a quarantine decided.
    pub quarantined: bool,
    /// The digest of the state that decided.
    pub state: String,
    /// For a sampled allow: one in how many allows is shipped.
    pub sampled_one_in: Option<u64>,
}

impl Pending {
    /// The record of `record`, decided on the state `state`.
    pub fn of(
        id: DecisionId,
        record: &DecisionRecord,
        context: Option<Value>,
        state: &str,
        sampled_one_in: Option<u64>,
    ) -> Pending {
        let (principal, action, resource) = record.asked.who();
        let d = &record.decision;
        Pending {
            id,
            at_ms: record.at_ms,
            path: AUTHORIZE_PATH,
            principal,
            action,
            resource,
            context,
            allow: d.allow,
            reasons: d.reasons.clone(),
            errors: d.errors.clone(),
            revoked: d.revoked,
            revoked_subject: d.revoked_subject.clone(),
            quarantined: d.quarantine.is_some(),
            state: state.to_owned(),
            sampled_one_in,
        }
    }

    /// The record as one JSON line, `\n` included.
    pub fn to_line(&self, node_id: &str) -> Vec<u8> {
        let line = Line {
            decision_id: self.id,
            timestamp: timestamp(self.at_ms),
            path: self.path,
            labels: Labels {
                id: node_id,
                version: env!("CARGO_PKG_VERSION"),
            },
            input: Input {
                principal: &self.principal,
                action: &self.action,
                resource: &self.resource,
                context: self.context.as_ref(),
            },
            result: Answer {
                decision: if self.allow { "allow" } else { "deny" },
                reasons: &self.reasons,
                errors: &self.errors,
                revoked: self.revoked,
                revoked_subject: self.revoked_subject.as_deref(),
                quarantined: self.quarantined,
            },
            state: &self.state,
            node_id,
            sampled_one_in: self.sampled_one_in,
        };
        let mut out = serde_json::to_vec(&line).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// `at_ms` as RFC 3339 UTC with milliseconds.
pub fn timestamp(at_ms: u64) -> String {
    let secs = weft_protocol::time::format_timestamp(at_ms / 1000);
    let whole = secs.strip_suffix('Z').unwrap_or(&secs);
    format!("{whole}.{:03}Z", at_ms % 1000)
}

#[derive(Serialize)]
struct Line<'a> {
    decision_id: DecisionId,
    timestamp: String,
    path: &'a str,
    labels: Labels<'a>,
    input: Input<'a>,
    result: Answer<'a>,
    state: &'a str,
    node_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sampled_one_in: Option<u64>,
}

#[derive(Serialize)]
struct Labels<'a> {
    id: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
struct Input<'a> {
    principal: &'a str,
    action: &'a str,
    resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a Value>,
}

#[derive(Serialize)]
struct Answer<'a> {
    decision: &'a str,
    reasons: &'a [String],
    errors: &'a [String],
    revoked: bool,
    revoked_subject: Option<&'a str>,
    quarantined: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_in_opas_shape() {
        let p = Pending {
            id: DecisionId::from_parts(1, 2),
            at_ms: 1_780_000_000_123,
            path: AUTHORIZE_PATH,
            principal: r#"User::"alice""#.into(),
            action: r#"Action::"view""#.into(),
            resource: r#"Doc::"d""#.into(),
            context: Some(serde_json::json!({"ip": "10.0.0.1"})),
            allow: false,
            reasons: vec!["b/p0".into()],
            errors: vec![],
            revoked: true,
            revoked_subject: Some(r#"User::"alice""#.into()),
            quarantined: false,
            state: "abc".into(),
            sampled_one_in: None,
        };
        let line = p.to_line("12D3node");
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["decision_id"], "00000000000000010000000000000002");
        assert_eq!(v["timestamp"], "2026-05-28T20:26:40.123Z");
        assert_eq!(v["path"], "v1/authorize");
        assert_eq!(v["labels"]["id"], "12D3node");
        assert_eq!(v["input"]["principal"], r#"User::"alice""#);
        assert_eq!(v["input"]["context"]["ip"], "10.0.0.1");
        assert_eq!(v["result"]["decision"], "deny");
        assert_eq!(v["result"]["revoked"], true);
        assert_eq!(v["state"], "abc");
        assert_eq!(v["node_id"], "12D3node");
        assert!(v.get("sampled_one_in").is_none());
    }
}
