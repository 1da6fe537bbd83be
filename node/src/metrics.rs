//! `GET /metrics`: the node's counters in Prometheus text format.
//!
//! Decision counts and latency are recorded by the API as requests are
//! answered. Everything the node task owns (updates applied and refused, peers,
//! sync rounds, traffic, freshness) is read from the node's status at scrape
//! time, so the request path never waits on the node task.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::control::Status;

/// A label with one value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `allow`, `deny` or `revoked`.
    pub outcome: String,
}

/// A refusal reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The refusal's short label (`bad_signature`, `too_few_signers`, ...).
    pub reason: String,
}

/// The node's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    decisions: Family<Outcome, Counter>,
    decision_seconds: Histogram,
    applied: Counter,
    refused: Family<Reason, Counter>,
    sync_rounds: Counter,
    rounds_skipped: Counter,
    synced: Counter,
    bans: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    peers: Gauge,
    admitted: Gauge,
    updates: Gauge,
    held: Gauge,
    held_bytes: Gauge,
    revocations: Gauge,
    state_age: Gauge<f64, AtomicU64>,
    root_expired: Gauge,
    audit_records: Gauge,
    audit_dropped: Counter,
    audit_waits: Counter,
    audit_peer_checkpoints: Gauge,
    audit_checkpoints_refused: Counter,
    anomaly_alerts: Counter,
    quarantines_issued: Counter,
    quarantines_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `weft_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("weft");
        let m = Metrics {
            decisions: Family::default(),
            // 1 µs to about 1 s in factors of 2: decisions take microseconds
            // to milliseconds (Cedar's cost grows with the policy count).
            decision_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 21)),
            applied: Counter::default(),
            refused: Family::default(),
            sync_rounds: Counter::default(),
            rounds_skipped: Counter::default(),
            synced: Counter::default(),
            bans: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            peers: Gauge::default(),
            admitted: Gauge::default(),
            updates: Gauge::default(),
            held: Gauge::default(),
            held_bytes: Gauge::default(),
            revocations: Gauge::default(),
            state_age: Gauge::default(),
            root_expired: Gauge::default(),
            audit_records: Gauge::default(),
            audit_dropped: Counter::default(),
            audit_waits: Counter::default(),
            audit_peer_checkpoints: Gauge::default(),
            audit_checkpoints_refused: Counter::default(),
            anomaly_alerts: Counter::default(),
            quarantines_issued: Counter::default(),
            quarantines_active: Gauge::default(),
            registry: Mutex::new(Registry::default()),
        };
        r.register(
            "decisions",
            "Authorization decisions by outcome",
            m.decisions.clone(),
        );
        r.register(
            "decision_seconds",
            "Time to decide one request",
            m.decision_seconds.clone(),
        );
        r.register(
            "updates_applied",
            "Signed updates applied, from any source",
            m.applied.clone(),
        );
        r.register(
            "updates_refused",
            "Signed updates refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "sync_rounds",
            "Anti-entropy rounds started",
            m.sync_rounds.clone(),
        );
        r.register(
            "sync_rounds_skipped",
            "Anti-entropy rounds skipped: a peer had synced with this node since the last one",
            m.rounds_skipped.clone(),
        );
        r.register(
            "synced_updates",
            "Updates received by sync",
            m.synced.clone(),
        );
        r.register("peer_bans", "Peers banned", m.bans.clone());
        r.register(
            "bytes_in",
            "Bytes received on every connection",
            m.bytes_in.clone(),
        );
        r.register(
            "bytes_out",
            "Bytes sent on every connection",
            m.bytes_out.clone(),
        );
        r.register("peers", "Connected peers", m.peers.clone());
        r.register("peers_admitted", "Admitted peers", m.admitted.clone());
        r.register("updates", "Updates in the state", m.updates.clone());
        r.register(
            "updates_held",
            "Updates held for missing dependencies",
            m.held.clone(),
        );
        r.register(
            "updates_held_bytes",
            "Bytes of the updates held for missing dependencies",
            m.held_bytes.clone(),
        );
        r.register("revocations", "Revoked subjects", m.revocations.clone());
        r.register(
            "state_age_seconds",
            "Seconds since the last exchange with a peer (-1 before the first)",
            m.state_age.clone(),
        );
        r.register(
            "trust_root_expired",
            "1 when the trust root has expired",
            m.root_expired.clone(),
        );
        r.register(
            "audit_records",
            "Records in the audit chain",
            m.audit_records.clone(),
        );
        r.register(
            "audit_dropped",
            "Audit events dropped because the queue was full (each gap is also recorded in the chain)",
            m.audit_dropped.clone(),
        );
        r.register(
            "audit_waits",
            "Decisions that found the audit queue full and waited for room (backpressure)",
            m.audit_waits.clone(),
        );
        r.register(
            "audit_peer_checkpoints",
            "Peers' audit checkpoints held",
            m.audit_peer_checkpoints.clone(),
        );
        r.register(
            "audit_checkpoints_refused",
            "Gossiped audit checkpoints refused: forged, malformed, or of a node without a valid certificate",
            m.audit_checkpoints_refused.clone(),
        );
        r.register(
            "anomaly_alerts",
            "Anomaly alerts this node's detector raised",
            m.anomaly_alerts.clone(),
        );
        r.register(
            "quarantines_issued",
            "Quarantines this node issued on its own authority",
            m.quarantines_issued.clone(),
        );
        r.register(
            "quarantines_active",
            "Quarantines in force now, under the trust root's limits",
            m.quarantines_active.clone(),
        );
        *m.registry.lock().expect("no poisoned lock at start") = r;
        m
    }

    /// Registers more metrics (under the `weft_` prefix), such as the
    /// decision log's ([`crate::decision_log::DecisionLogMetrics`]).
    pub fn register_with(&self, add: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        add(&mut registry);
    }

    /// Records one decision.
    pub fn observe_decision(&self, allow: bool, revoked: bool, seconds: f64) {
        let outcome = if revoked {
            "revoked"
        } else if allow {
            "allow"
        } else {
            "deny"
        };
        self.decisions
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
        self.decision_seconds.observe(seconds);
    }

    /// Renders every metric, after bringing the node-owned ones up to `status`.
    pub fn render(&self, status: &Status) -> String {
        let raise = |c: &Counter, to: u64| {
            let now = c.get();
            if to > now {
                c.inc_by(to - now);
            }
        };
        raise(&self.applied, status.stats.applied);
        for (reason, n) in &status.stats.refused {
            raise(
                &self.refused.get_or_create(&Reason {
                    reason: reason.clone(),
                }),
                *n,
            );
        }
        raise(&self.sync_rounds, status.stats.sync_rounds);
        raise(&self.rounds_skipped, status.stats.rounds_skipped);
        raise(&self.synced, status.stats.synced);
        raise(&self.bans, status.stats.bans);
        raise(&self.bytes_in, status.stats.bytes_in);
        raise(&self.bytes_out, status.stats.bytes_out);
        self.peers.set(status.peers.len() as i64);
        self.admitted
            .set(status.peers.iter().filter(|p| p.admitted).count() as i64);
        self.updates.set(status.updates as i64);
        self.held.set(status.held as i64);
        self.held_bytes.set(status.held_bytes as i64);
        self.revocations.set(status.revocations as i64);
        self.state_age.set(
            status
                .last_sync_ms_ago
                .map(|ms| ms as f64 / 1000.0)
                .unwrap_or(-1.0),
        );
        self.root_expired.set(i64::from(status.trust_root.expired));
        self.audit_records.set(status.audit.records as i64);
        raise(&self.anomaly_alerts, status.anomalies.alerts);
        raise(
            &self.quarantines_issued,
            status.anomalies.quarantines_issued,
        );
        self.quarantines_active
            .set(status.anomalies.active_quarantines as i64);
        raise(&self.audit_dropped, status.audit.dropped);
        raise(&self.audit_waits, status.audit.waits);
        self.audit_peer_checkpoints
            .set(status.audit.peer_checkpoints as i64);
        raise(
            &self.audit_checkpoints_refused,
            status.audit.checkpoints_refused,
        );
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}
