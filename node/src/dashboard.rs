//! The live dashboard: `GET /` serves one self-contained page (inline CSS
//! and JavaScript, nothing fetched from elsewhere) that polls
//! `GET /v1/dashboard` every second, and `GET /v1/anomalies` and
//! `GET /v1/audit/status` beside it, each optional: an endpoint that is
//! missing or fails is shown as not available, never as an error.
//!
//! The decision counters and the ring of recent denies live in a
//! [`DecisionLog`], filled by `POST /v1/authorize`: an allow is one atomic
//! increment, a deny also takes a short lock to push one record.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::control::Status;
use crate::control::evidence::{BundleEvidence, QuarantineEvidence, RevocationEvidence};

/// The dashboard page.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// How many recent denies the node keeps for the dashboard. A hundred fill a
/// screen or two; older ones are in the logs (and the audit trail).
pub const RECENT_DENIES: usize = 100;

/// How many revocations `GET /v1/dashboard` lists, the newest first
/// (`status.revocations` has the total; the report lists them all).
pub const DASHBOARD_REVOCATIONS: usize = 500;

/// One denied request, as the dashboard lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyRecord {
    /// When it was decided (Unix milliseconds).
    pub at_ms: u64,
    /// The principal (for a token, the token's principal when it could be
    /// read, else `token`).
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The policies that determined the deny (forbids), if any.
    pub reasons: Vec<String>,
    /// Errors, and the reason a request was refused before evaluation.
    pub errors: Vec<String>,
    /// Whether the deny is for a revocation.
    pub revoked: bool,
    /// The revoked subject, if any.
    pub revoked_subject: Option<String>,
}

impl DenyRecord {
    /// The deny `record` decided.
    pub fn of(record: &weft_protocol::authorize::DecisionRecord) -> DenyRecord {
        let (principal, action, resource) = record.asked.who();
        let d = &record.decision;
        DenyRecord {
            at_ms: record.at_ms,
            principal,
            action,
            resource,
            reasons: d.reasons.clone(),
            errors: d.errors.clone(),
            revoked: d.revoked,
            revoked_subject: d.revoked_subject.clone(),
        }
    }
}

/// Decision counts since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCounts {
    /// Allowed.
    pub allow: u64,
    /// Denied, revocations not included.
    pub deny: u64,
    /// Denied because a subject is revoked.
    pub revoked: u64,
}

/// Decision counters and the recent denies.
#[derive(Debug)]
pub struct DecisionLog {
    allow: AtomicU64,
    deny: AtomicU64,
    revoked: AtomicU64,
    recent: Mutex<VecDeque<DenyRecord>>,
    capacity: usize,
}

impl Default for DecisionLog {
    fn default() -> Self {
        Self::new()
    }
}

impl DecisionLog {
    /// An empty log keeping the last [`RECENT_DENIES`] denies.
    pub fn new() -> Self {
        Self::with_capacity(RECENT_DENIES)
    }

    /// An empty log keeping the last `capacity` denies.
    pub fn with_capacity(capacity: usize) -> Self {
        DecisionLog {
            allow: AtomicU64::new(0),
            deny: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// Counts one allow.
    pub fn allow(&self) {
        self.allow.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one deny and keeps its record, dropping the oldest when full.
    pub fn deny(&self, record: DenyRecord) {
        let counter = if record.revoked {
            &self.revoked
        } else {
            &self.deny
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.capacity == 0 {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == self.capacity {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The counts so far.
    pub fn counts(&self) -> DecisionCounts {
        DecisionCounts {
            allow: self.allow.load(Ordering::Relaxed),
            deny: self.deny.load(Ordering::Relaxed),
            revoked: self.revoked.load(Ordering::Relaxed),
        }
    }

    /// The recent denies, newest first.
    pub fn recent(&self) -> Vec<DenyRecord> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }
}

/// `GET /v1/dashboard`: what the page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    /// When this answer was made (Unix milliseconds, the node's clock).
    pub now_ms: u64,
    /// The node's status, as `GET /v1/status` gives it.
    pub status: Status,
    /// Whether the state counts as stale (no sync for over `stale_after_ms`).
    pub stale: bool,
    /// After how long without a sync the state is stale.
    pub stale_after_ms: u64,
    /// Bundles with their signers and the times of the changes behind them
    /// (no policy texts).
    pub bundles: Vec<BundleEvidence>,
    /// Revoked subjects with reason, signers and time: the newest
    /// [`DASHBOARD_REVOCATIONS`] (untimed ones last).
    pub revocations: Vec<RevocationEvidence>,
    /// Quarantine records.
    pub quarantines: Vec<QuarantineEvidence>,
    /// Decision counts since the node started.
    pub decisions: DecisionCounts,
    /// The last [`RECENT_DENIES`] denies, newest first.
    pub recent_denies: Vec<DenyRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64, revoked: bool) -> DenyRecord {
        DenyRecord {
            at_ms: i,
            principal: format!("User::\"u{i}\""),
            action: "Action::\"view\"".into(),
            resource: "Doc::\"d\"".into(),
            reasons: vec![],
            errors: vec![],
            revoked,
            revoked_subject: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_denies() {
        let log = DecisionLog::with_capacity(3);
        log.allow();
        log.allow();
        for i in 0..5 {
            log.deny(rec(i, i == 4));
        }
        assert_eq!(
            log.counts(),
            DecisionCounts {
                allow: 2,
                deny: 4,
                revoked: 1
            }
        );
        let at: Vec<u64> = log.recent().iter().map(|r| r.at_ms).collect();
        assert_eq!(at, vec![4, 3, 2]);
        let none = DecisionLog::with_capacity(0);
        none.deny(rec(1, false));
        assert!(none.recent().is_empty());
        assert_eq!(none.counts().deny, 1);
    }

    #[test]
    fn the_page_is_self_contained() {
        let page = DASHBOARD_HTML;
        assert!(page.starts_with("<!DOCTYPE html>"));
        for fetched in ["/v1/dashboard", "/v1/anomalies", "/v1/audit/status"] {
            assert!(page.contains(fetched), "{fetched}");
        }
        for external in ["http://", "https://", "<link", "src=\"", "@import"] {
            assert!(!page.contains(external), "the page loads {external}");
        }
    }
}
