//! `GET /metrics`: the node's counters in Prometheus (OpenMetrics) text.
//!
//! # Layout
//! One registry holds three groups:
//! - `weft_*`, the node's own. Decision counts and latency, and every API
//!   request's duration by route ([`HttpDurations`]), are recorded by the
//!   API as requests are answered. Everything the node task owns (updates
//!   applied and refused, peers, sync rounds, traffic, freshness) is read
//!   from the node's status at scrape time, so the request path never waits
//!   on the node task.
//! - `libp2p_*`, libp2p's own (libp2p-metrics): connections, dials, identify
//!   and gossipsub messages, recorded by the node task from swarm events.
//! - `libp2p_gossipsub_*`, gossipsub's internals: mesh peers, messages by
//!   topic and verdict, scores.
//!
//! # Rules
//! - Names carry their unit (`_seconds`, `_bytes`) and counters end in
//!   `_total` (the encoder adds it).
//! - No sentinel values: a quantity that is not known yet has no sample
//!   (`weft_state_age_seconds` before the first exchange with a peer), and
//!   a separate 0/1 gauge says which case holds (`weft_synced`).
//! - `weft_build_info{version,profile} 1` says what is running.
//! - The docs list every metric: `docs/metrics.md`.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::control::Status;

/// A label with one value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `allow`, `deny` or `revoked`.
    pub outcome: String,
}

/// What became of a detection summary.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SummaryOutcome {
    /// `published`, `accepted`, `refused`, … ([`crate::mesh_detect::Outcome`]).
    pub outcome: String,
}

/// A refusal reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// The refusal's short label (`bad_signature`, `too_few_signers`, ...).
    pub reason: String,
}

/// The labels of a request duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template, like `/v1/authorize`, or `unmatched`.
    pub route: &'static str,
    /// The method, or `other`.
    pub method: &'static str,
    /// The response's status code.
    pub status: u16,
}

/// Upper bounds of the request duration buckets, in seconds: every 25 µs
/// from 50 to 200 µs and every 50 to 100 µs up to 500 µs, so that a p99
/// near the 250 µs goal is read to within a bucket of 50 µs or less; then
/// coarser up to 10 s (a streamed audit export, a slow client).
pub const HTTP_BUCKETS: [f64; 27] = [
    10e-6, 25e-6, 50e-6, 75e-6, 100e-6, 125e-6, 150e-6, 175e-6, 200e-6, 250e-6, 300e-6, 400e-6,
    500e-6, 750e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0,
    10.0,
];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// `weft_http_request_duration_seconds{route,method,status}`: one histogram
/// per label set, made on first use (the labels come from a closed set).
#[derive(Clone)]
pub struct HttpDurations {
    family: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

impl HttpDurations {
    /// The histogram of `route`, `method` and `status` (a clone of the
    /// registered one, to observe into).
    pub fn of(&self, route: &'static str, method: &'static str, status: u16) -> Histogram {
        self.family
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .clone()
    }
}

/// `weft_state_age_seconds`, present only once the node has exchanged
/// state with a peer (milliseconds in an atomic; `u64::MAX` for never).
#[derive(Debug, Default)]
struct StateAge(AtomicU64);

impl Collector for StateAge {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let ms = self.0.load(Ordering::Relaxed);
        if ms == u64::MAX {
            return Ok(());
        }
        let metric = encoder.encode_descriptor(
            "state_age",
            "Seconds since the last exchange with a peer (no sample before the first: see weft_synced)",
            Some(&Unit::Seconds),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(ms as f64 / 1000.0).encode(metric)
    }
}

/// The node's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    decisions: Family<Outcome, Counter>,
    decision_seconds: Histogram,
    http: HttpDurations,
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
    state_age: Arc<StateAge>,
    synced_once: Gauge,
    root_expired: Gauge,
    audit_records: Gauge,
    audit_dropped: Counter,
    audit_waits: Counter,
    audit_peer_checkpoints: Gauge,
    audit_checkpoints_refused: Counter,
    anomaly_alerts: Counter,
    quarantines_issued: Counter,
    quarantines_active: Gauge,
    summaries: Family<SummaryOutcome, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the node's metrics under the `weft_` prefix; libp2p's are
    /// added by [`Metrics::with_registry`].
    pub fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("weft");
        let m = Metrics {
            http: HttpDurations {
                family: Family::new_with_constructor(http_histogram),
            },
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
            state_age: Arc::new(StateAge(AtomicU64::new(u64::MAX))),
            synced_once: Gauge::default(),
            root_expired: Gauge::default(),
            audit_records: Gauge::default(),
            audit_dropped: Counter::default(),
            audit_waits: Counter::default(),
            audit_peer_checkpoints: Gauge::default(),
            audit_checkpoints_refused: Counter::default(),
            anomaly_alerts: Counter::default(),
            quarantines_issued: Counter::default(),
            quarantines_active: Gauge::default(),
            summaries: Family::default(),
            registry: Mutex::new(Registry::default()),
        };
        r.register(
            "build",
            "What is running: the version, and the build profile",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "profile",
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    },
                ),
            ]),
        );
        r.register_with_unit(
            "http_request_duration",
            "API requests by route, method and status: from the request head read to the last byte of the answer handed to the connection",
            Unit::Seconds,
            m.http.family.clone(),
        );
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
        r.register_with_unit(
            "network_receive",
            "Bytes received on every libp2p connection",
            Unit::Bytes,
            m.bytes_in.clone(),
        );
        r.register_with_unit(
            "network_transmit",
            "Bytes sent on every libp2p connection",
            Unit::Bytes,
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
        r.register_collector(Box::new(m.state_age.clone()));
        r.register(
            "synced",
            "1 once the node has exchanged state with a peer since it started, else 0",
            m.synced_once.clone(),
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
        r.register(
            "detect_summaries",
            "Detection summaries by outcome: this node's published (or unpublished), peers' accepted, refused (forged, malformed, uncertified), rate_limited, out_of_window, full or ignored",
            m.summaries.clone(),
        );
        *m.registry.lock().expect("no poisoned lock at start") = root;
        m
    }

    /// Runs `f` on the registry, to register more metrics (libp2p's) at start.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The request duration histograms, for the API's middleware.
    pub fn http(&self) -> &HttpDurations {
        &self.http
    }

    /// Registers more metrics (under the `weft_` prefix), such as the
    /// decision log's ([`crate::decision_log::DecisionLogMetrics`]).
    pub fn register_with(&self, add: impl FnOnce(&mut Registry)) {
        self.with_registry(|root| add(root.sub_registry_with_prefix("weft")))
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
        self.state_age.0.store(
            status.last_sync_ms_ago.unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.synced_once
            .set(i64::from(status.last_sync_ms_ago.is_some()));
        self.root_expired.set(i64::from(status.trust_root.expired));
        self.audit_records.set(status.audit.records as i64);
        raise(&self.anomaly_alerts, status.anomalies.alerts);
        raise(
            &self.quarantines_issued,
            status.anomalies.quarantines_issued,
        );
        self.quarantines_active
            .set(status.anomalies.active_quarantines as i64);
        if let Some(mesh) = &status.anomalies.mesh {
            for (outcome, n) in mesh.summaries.by_label() {
                raise(
                    &self.summaries.get_or_create(&SummaryOutcome {
                        outcome: outcome.to_owned(),
                    }),
                    n,
                );
            }
        }
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
