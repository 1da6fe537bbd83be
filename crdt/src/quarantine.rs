//! Quarantines: what a record under `quarantines/SUBJECT` says, and when it
//! is honoured.
//!
//! A record is JSON ([`QuarantineRecord`]). A node writes one when its
//! detector flags a principal (the node's signature and certificate are
//! checked by `protocol` before the change is applied); an operator writes
//! one to lift a quarantine (`"lifted": true`), or could quarantine by hand.
//!
//! # Bounded authority, decided when a request is decided
//! Every well-formed record is kept in the document, so replicas that hold
//! the same updates hold the same records whatever order they came in. What
//! a record *does* is decided by [`QuarantineRules`] (from the trust root)
//! and the time, both passed in, so the answer is the same on every replica
//! at the same time. A node-issued record denies only while all hold:
//! - the rules let nodes quarantine at all;
//! - it has not expired: `now < min(expires_at, issued_at + max_ttl)`, so a
//!   node that writes a longer expiry gets the maximum, not more;
//! - its issuer is not revoked;
//! - it is among the first `max_per_hour` records of its issuer in any hour
//!   (records ordered by `(issued_at, subject)`): a compromised node that
//!   floods quarantines locks out at most that many subjects an hour;
//! - it is not lifted.
//!
//! An operator-written record (no `issuer`) is honoured until its expiry, if
//! it has one, unless lifted.

use serde::{Deserialize, Serialize};

use crate::view::PolicyView;

/// The content of a quarantine record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// Why, in one line.
    pub reason: String,
    /// The node that issued it (its node id), or none for an operator's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When it was issued (Unix seconds).
    #[serde(default)]
    pub issued_at: u64,
    /// When it lapses (Unix seconds); none: never (operators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The anomaly score that triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The evidence, a line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// Whether an operator lifted it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lifted: bool,
}

/// Most bytes of a record's JSON that are parsed; a longer record is not
/// honoured.
pub const MAX_RECORD_LEN: usize = 16 * 1024;

/// How far node-issued quarantines are honoured (from the trust root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineRules {
    /// Whether nodes may quarantine at all.
    pub nodes_allowed: bool,
    /// The longest a node-issued quarantine lasts (seconds).
    pub max_ttl_secs: u64,
    /// How many quarantines one node may issue in any hour.
    pub max_per_hour: u32,
}

impl Default for QuarantineRules {
    /// Nodes may not quarantine: the trust root's default.
    fn default() -> Self {
        QuarantineRules {
            nodes_allowed: false,
            max_ttl_secs: 3600,
            max_per_hour: 5,
        }
    }
}

/// A quarantine that decided a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuarantineHit {
    /// The quarantined subject (the principal, the resource, or an ancestor).
    pub subject: String,
    /// Why.
    pub reason: String,
    /// The issuing node, if a node issued it.
    pub issuer: Option<String>,
    /// When it lapses (Unix seconds), if ever.
    pub until: Option<u64>,
}

/// Parses a record; `None` if it is not one.
pub fn parse_record(json: &str) -> Option<QuarantineRecord> {
    if json.len() > MAX_RECORD_LEN {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// When `rec` stops being honoured under `rules` (`None`: never), or
/// `Some(0)` if it never is.
fn lapses_at(rec: &QuarantineRecord, rules: &QuarantineRules) -> Option<u64> {
    if rec.lifted {
        return Some(0);
    }
    match &rec.issuer {
        None => rec.expires_at,
        Some(_) if !rules.nodes_allowed => Some(0),
        Some(_) => {
            let cap = rec.issued_at.saturating_add(rules.max_ttl_secs);
            Some(rec.expires_at.map_or(cap, |e| e.min(cap)))
        }
    }
}

/// Whether the node-issued `rec` of `subject` is within its issuer's hourly
/// allowance: fewer than `max_per_hour` records of the same issuer come
/// before it, ordered by `(issued_at, subject)`, within the hour up to its
/// own `issued_at`.
fn within_rate(view: &PolicyView, subject: &str, rec: &QuarantineRecord, max: u32) -> bool {
    let issuer = rec.issuer.as_deref();
    let key = (rec.issued_at, subject);
    let earlier = view
        .quarantines()
        .filter_map(|(s, json)| Some((s, parse_record(json)?)))
        .filter(|(s, r)| {
            r.issuer.as_deref() == issuer
                && r.issued_at + 3600 > rec.issued_at
                && (r.issued_at, s.as_str()) < key
        })
        .count();
    earlier < max as usize
}

/// The quarantine of `subject` (canonical form) that is in force at `now`
/// (Unix seconds) under `rules`, if any.
pub fn in_force(
    view: &PolicyView,
    subject: &str,
    now: u64,
    rules: &QuarantineRules,
) -> Option<QuarantineHit> {
    let json = view.quarantine_record(subject)?;
    let rec = parse_record(json)?;
    let until = lapses_at(&rec, rules);
    if until.is_some_and(|t| now >= t) {
        return None;
    }
    if let Some(issuer) = &rec.issuer {
        if view.is_revoked_canonical(issuer) {
            return None;
        }
        if !within_rate(view, subject, &rec, rules.max_per_hour) {
            return None;
        }
    }
    Some(QuarantineHit {
        subject: subject.to_owned(),
        reason: rec.reason,
        issuer: rec.issuer,
        until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_junk_is_not_one() {
        let r = QuarantineRecord {
            reason: "deny burst".into(),
            issuer: Some("12D3KooW".into()),
            issued_at: 100,
            expires_at: Some(200),
            score: Some(0.97),
            evidence: vec!["deny ratio 0.9 (baseline 0.05)".into()],
            lifted: false,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(parse_record(&json), Some(r));
        assert_eq!(parse_record("not json"), None);
        assert_eq!(parse_record(&"x".repeat(MAX_RECORD_LEN + 1)), None);
    }

    #[test]
    fn node_quarantines_are_capped_at_the_maximum_ttl() {
        let rules = QuarantineRules {
            nodes_allowed: true,
            max_ttl_secs: 3600,
            max_per_hour: 5,
        };
        let r = QuarantineRecord {
            reason: "x".into(),
            issuer: Some("n".into()),
            issued_at: 1000,
            expires_at: Some(1_000_000),
            score: None,
            evidence: vec![],
            lifted: false,
        };
        assert_eq!(lapses_at(&r, &rules), Some(4600));
        let off = QuarantineRules {
            nodes_allowed: false,
            ..rules
        };
        assert_eq!(lapses_at(&r, &off), Some(0));
        let op = QuarantineRecord {
            issuer: None,
            expires_at: None,
            ..r.clone()
        };
        assert_eq!(lapses_at(&op, &off), None);
        let lifted = QuarantineRecord { lifted: true, ..r };
        assert_eq!(lapses_at(&lifted, &rules), Some(0));
    }
}
