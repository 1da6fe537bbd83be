//! What the node keeps of its detector's findings, for `GET /v1/anomalies`,
//! `weft status`, `/metrics` and the dashboard: the recent alerts (bounded)
//! and counters.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Alerts kept for `GET /v1/anomalies`, newest first; older ones are
/// dropped (they stay in the audit trail).
pub const RECENT_ALERTS: usize = 200;

/// Recent alerts and counters, shared by the detector task and the API.
#[derive(Debug, Default)]
pub struct AnomalyLog {
    alerts: Mutex<VecDeque<Value>>,
    total: AtomicU64,
    quarantines_issued: AtomicU64,
    quarantines_refused: AtomicU64,
    quarantines_unneeded: AtomicU64,
    /// Decisions the detector could not take in because its queue was full.
    pub dropped: AtomicU64,
}

/// The detector's figures in [`crate::api::Status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyStatus {
    /// Alerts raised since start.
    pub alerts: u64,
    /// Quarantines this node issued since start.
    pub quarantines_issued: u64,
    /// Quarantines the node wanted to issue but could not (the trust root
    /// does not allow it, or the order was refused).
    pub quarantines_refused: u64,
    /// Quarantines the node did not issue because the principal was
    /// denied everywhere already: revoked, or under a quarantine in force
    /// (another node's order for the same alert, most often).
    #[serde(default)]
    pub quarantines_unneeded: u64,
    /// Decisions the detector skipped because its queue was full.
    pub dropped: u64,
    /// Quarantines in force now (any issuer), under the trust root's rules.
    pub active_quarantines: u64,
    /// The mesh view, when detection across sites is on: sites heard from,
    /// cells held, summaries by outcome ([`crate::mesh_detect`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<crate::mesh_detect::MeshStatus>,
}

impl AnomalyLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps one alert (as JSON).
    pub fn push(&self, alert: Value) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut a = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        a.push_front(alert);
        a.truncate(RECENT_ALERTS);
    }

    /// Counts a quarantine issued (`true`) or not issued (`false`).
    pub fn quarantine(&self, issued: bool) {
        let c = if issued {
            &self.quarantines_issued
        } else {
            &self.quarantines_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a quarantine not issued because the principal was denied
    /// everywhere already.
    pub fn quarantine_unneeded(&self) {
        self.quarantines_unneeded.fetch_add(1, Ordering::Relaxed);
    }

    /// The recent alerts, newest first.
    pub fn recent(&self) -> Vec<Value> {
        let a = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        a.iter().cloned().collect()
    }

    /// The counters.
    pub fn status(&self) -> AnomalyStatus {
        AnomalyStatus {
            alerts: self.total.load(Ordering::Relaxed),
            quarantines_issued: self.quarantines_issued.load(Ordering::Relaxed),
            quarantines_refused: self.quarantines_refused.load(Ordering::Relaxed),
            quarantines_unneeded: self.quarantines_unneeded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            active_quarantines: 0,
            mesh: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_alerts_and_counts_all() {
        let log = AnomalyLog::new();
        for i in 0..(RECENT_ALERTS + 5) {
            log.push(serde_json::json!({ "n": i }));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), RECENT_ALERTS);
        assert_eq!(recent[0]["n"], RECENT_ALERTS + 4);
        assert_eq!(log.status().alerts, (RECENT_ALERTS + 5) as u64);
    }
}
