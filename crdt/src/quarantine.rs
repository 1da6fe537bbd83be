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
//!
//! # Records dated in the future are ignored
//! A record whose `issued_at` lies more than [`MAX_CLOCK_SKEW_SECS`] ahead of
//! the deciding node's clock is neither in force nor counted in its issuer's
//! hourly allowance: dating an order a year ahead would otherwise put it
//! outside every hour that the allowance counts, and keep it in force until
//! then. (Nodes also refuse to apply such an order, see
//! `weft_protocol::quarantine`; this rule covers a record applied by a node
//! whose clock was ahead.)
//!
//! # Concurrent records of one subject
//! Two records written concurrently under one subject both stay in the
//! document; [`merge_sides`] says which count, on every replica alike:
//! - if any is an operator's record (no `issuer`), the operators' latest one
//!   is the subject's record: a node can never override what an operator
//!   wrote, whether a quarantine or its lifting;
//! - otherwise (nodes' records only) every one of them is decided on, and
//!   the subject is quarantined while any is in force: a node cannot shorten
//!   another node's quarantine by writing beside it.
//!
//! A node cannot write *over* a record it did not issue either: its order may
//! only replace its own records (checked by `weft_protocol::quarantine`
//! before the order is applied).

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

/// How far ahead of a node's clock a record's `issued_at` may lie, in
/// seconds: five minutes, the clock skew Kerberos tolerates by default and
/// far more than NTP-synced hosts drift. A record dated further ahead is
/// ignored until the clock catches up, and nodes refuse to apply it.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Whether `rec` is dated more than [`MAX_CLOCK_SKEW_SECS`] after `now`.
pub fn dated_in_future(rec: &QuarantineRecord, now: u64) -> bool {
    rec.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS)
}

/// Which of the records written concurrently under one subject count (see
/// the module doc), given in automerge's order (its winner last): the
/// record shown and decided on, and the others decided on as well. `None`
/// when there is no record. A side that is not a record's JSON counts as an
/// operator's (a node's order must hold a well-formed record).
pub fn merge_sides(sides: Vec<String>) -> Option<(String, Vec<String>)> {
    let by_operator = |json: &String| parse_record(json).is_none_or(|r| r.issuer.is_none());
    if let Some(shown) = sides.iter().rev().find(|s| by_operator(s)) {
        return Some((shown.clone(), Vec::new()));
    }
    let mut sides = sides;
    let shown = sides.pop()?;
    Some((shown, sides))
}

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
/// allowance at `now`: fewer than `max_per_hour` records of the same issuer
/// come before it, ordered by `(issued_at, subject)`, within the hour up to
/// its own `issued_at`. Records dated in the future are not counted (nor
/// ever in force).
fn within_rate(
    view: &PolicyView,
    subject: &str,
    rec: &QuarantineRecord,
    max: u32,
    now: u64,
) -> bool {
    let issuer = rec.issuer.as_deref();
    let key = (rec.issued_at, subject);
    let earlier = view
        .all_quarantine_records()
        .filter_map(|(s, json)| Some((s, parse_record(json)?)))
        .filter(|(s, r)| {
            r.issuer.as_deref() == issuer
                && !dated_in_future(r, now)
                && r.issued_at.saturating_add(3600) > rec.issued_at
                && (r.issued_at, s.as_str()) < key
        })
        .count();
    earlier < max as usize
}

/// The quarantine of `subject` (canonical form) that is in force at `now`
/// (Unix seconds) under `rules`, if any: the first of its records
/// ([`PolicyView::quarantine_records`]) in force.
pub fn in_force(
    view: &PolicyView,
    subject: &str,
    now: u64,
    rules: &QuarantineRules,
) -> Option<QuarantineHit> {
    view.quarantine_records(subject)
        .find_map(|json| record_in_force(view, subject, json, now, rules))
}

/// Whether one record of `subject` is in force at `now` under `rules`.
fn record_in_force(
    view: &PolicyView,
    subject: &str,
    json: &str,
    now: u64,
    rules: &QuarantineRules,
) -> Option<QuarantineHit> {
    let rec = parse_record(json)?;
    if dated_in_future(&rec, now) {
        return None;
    }
    let until = lapses_at(&rec, rules);
    if until.is_some_and(|t| now >= t) {
        return None;
    }
    if let Some(issuer) = &rec.issuer {
        if view.is_revoked_canonical(issuer) {
            return None;
        }
        if !within_rate(view, subject, &rec, rules.max_per_hour, now) {
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
