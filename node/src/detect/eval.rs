//! Evaluation of the detector against a labeled trace
//! ([`super::traces`]), side by side with a static rate-limit
//! rule.
//!
//! The trace is replayed event by event, in order, through each method; the
//! labels are read only here, never by the detector. Alerts raised during
//! the trace's warm-up are not scored.
//!
//! # Metrics
//! - An attack *incident* (one principal, one kind, a start and an end) is
//!   *detected* when the method alerts on that principal between the start
//!   and the end plus [`EvalConfig::grace_ms`].
//! - A *false positive* is an alert, after the warm-up, that falls in no
//!   incident's span for its principal (benign principals, and attacked
//!   principals outside their attack). Each alert would become a quarantine,
//!   so each counts.
//! - Per kind: recall = detected / incidents; precision = detected /
//!   (detected + all false positives), strict, since an alert does not say
//!   which kind it is (every false alarm counts against every kind); F1, their
//!   harmonic mean. The overall row uses every incident.
//! - False positives per 1,000 principals per day: false positives ×
//!   1,000 / principals × 24 h / the scored hours.
//! - Time to detect: from the incident's first request (the first event
//!   labeled with its kind; before it there is nothing to detect) to its
//!   first alert, median and maximum over the detected incidents of the
//!   kind.
//!
//! # Fresh mode
//! [`EvalConfig::fresh`] asks what a node that has just started sees: each
//! incident gets its own replay, through a fresh detector (no saved state,
//! no warm-up), of every event of the trace from [`FRESH_LEAD_MS`] before
//! the incident's start to its end plus the grace period, so every attack
//! starts in the detector's first minute, among the ordinary traffic of
//! that moment. Each replay scores its own incident; an alert in any
//! replay that falls in no incident's span for its principal is a false
//! positive, and false positives per 1,000 principals per day divide by the
//! replayed hours (the replays' lengths added up). The rate-limit rule is
//! replayed over the same spans.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use super::traces::{AttackKind, Event, Incident, Label, Trace};
use serde::Serialize;

use super::{Detector, DetectorConfig};

/// Settings of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// The detector under test.
    pub detector: DetectorConfig,
    /// The detector's seed.
    pub seed: u64,
    /// How long after an incident's end an alert still counts as detecting
    /// it. Default 5 min.
    pub grace_ms: u64,
    /// The baseline rule's limit: it alerts when a principal makes more
    /// requests than this in 60 s. Default 60 (one a second, twenty times the
    /// busiest ordinary user of the generated traces).
    pub rate_limit_per_min: u32,
    /// Fresh mode (see the module doc): every attack in the first minute of
    /// a fresh detector. Default off: one replay of the whole trace.
    pub fresh: bool,
}

/// In fresh mode, how long before an attack's start its replay begins:
/// the attack starts half a minute into the detector's life.
pub const FRESH_LEAD_MS: u64 = 30_000;

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            detector: DetectorConfig::default(),
            seed: 1,
            grace_ms: 5 * 60_000,
            rate_limit_per_min: 60,
            fresh: false,
        }
    }
}

/// One kind's figures for one method.
#[derive(Clone, Debug, Serialize)]
pub struct KindMetrics {
    /// The attack kind, or `all`.
    pub kind: String,
    /// Incidents of the kind.
    pub incidents: usize,
    /// Of them, detected.
    pub detected: usize,
    /// Precision (strict, see the module doc).
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Median time from the start to the first alert, ms (`null` when none
    /// was detected).
    pub ttd_p50_ms: Option<u64>,
    /// Longest time to detect, ms.
    pub ttd_max_ms: Option<u64>,
    /// Low and slow, in the mesh evaluation: the distinct resources the
    /// attacker touched before the first alert, median over the detected
    /// incidents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources_before_alert_p50: Option<u64>,
    /// The same, the largest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources_before_alert_max: Option<u64>,
}

/// A false positive, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct FalsePositive {
    /// The principal.
    pub principal: String,
    /// When.
    pub at_ms: u64,
    /// The alert's reason.
    pub reason: String,
}

/// One method's results.
#[derive(Clone, Debug, Serialize)]
pub struct MethodReport {
    /// `detector` or `rate_limit`.
    pub method: String,
    /// What it is, in words.
    pub description: String,
    /// Alerts raised after the warm-up.
    pub alerts: usize,
    /// Of them, false positives.
    pub false_positives: usize,
    /// False positives per 1,000 principals per day.
    pub fp_per_1000_principals_per_day: f64,
    /// Per kind, in [`AttackKind::ALL`] order, then `all`.
    pub kinds: Vec<KindMetrics>,
    /// The first false positives (at most 20).
    pub false_positive_samples: Vec<FalsePositive>,
}

/// The detector's cost on this trace (wall clock: not reproducible).
#[derive(Clone, Debug, Serialize)]
pub struct Performance {
    /// Events replayed through the detector per second, one thread.
    pub events_per_sec: f64,
    /// Principals tracked at the end.
    pub tracked: usize,
    /// The detector's estimate of its memory, bytes.
    pub memory_bytes: usize,
    /// That, per tracked principal (trees included).
    pub bytes_per_principal: f64,
}

/// The whole evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// `warm` (one replay, scored after the warm-up) or `fresh` (one replay
    /// per incident through a fresh detector; see the module doc).
    pub mode: String,
    /// The trace's seed.
    pub trace_seed: u64,
    /// Principals in the trace.
    pub principals: usize,
    /// Its length, hours.
    pub hours: u64,
    /// Hours scored: after the warm-up, or in fresh mode the replays'
    /// lengths added up.
    pub scored_hours: f64,
    /// Events replayed.
    pub events: usize,
    /// Incidents per kind.
    pub incidents: BTreeMap<String, usize>,
    /// The anomaly detector.
    pub detector: MethodReport,
    /// The static rate-limit rule.
    pub baseline: MethodReport,
    /// The detector's throughput and memory.
    pub performance: Performance,
}

/// An alert, reduced to what scoring needs.
pub(super) struct Raised {
    pub(super) principal: String,
    pub(super) at_ms: u64,
    pub(super) reason: String,
}

/// The static rule: more than `limit` requests by one principal in 60 s,
/// with the detector's cooldown.
pub(super) fn rate_limit(events: &[Event], limit: u32, cooldown_ms: u64) -> Vec<Raised> {
    let mut seen: HashMap<&str, (VecDeque<u64>, Option<u64>)> = HashMap::new();
    let mut out = Vec::new();
    for e in events.iter().map(|e| &e.decision) {
        let (q, last) = seen.entry(e.principal.as_str()).or_default();
        q.push_back(e.at_ms);
        while q.front().is_some_and(|t| *t + 60_000 <= e.at_ms) {
            q.pop_front();
        }
        if q.len() > limit as usize {
            q.pop_front();
            if last.is_none_or(|l| e.at_ms >= l + cooldown_ms) {
                *last = Some(e.at_ms);
                out.push(Raised {
                    principal: e.principal.clone(),
                    at_ms: e.at_ms,
                    reason: format!("more than {limit} requests in 60 s"),
                });
            }
        }
    }
    out
}

pub(super) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i])
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

pub(super) fn r4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// One replay: the incidents it scores and the alerts it raised (those
/// to score).
pub(super) struct Run<'a> {
    pub(super) incidents: Vec<&'a Incident>,
    pub(super) alerts: Vec<Raised>,
}

pub(super) fn score(
    trace: &Trace,
    cfg: &EvalConfig,
    method: &str,
    description: &str,
    runs: &[Run<'_>],
    scored_h: f64,
    count_resources: bool,
) -> MethodReport {
    let in_incident = |a: &Raised| {
        trace.incidents.iter().any(|i| {
            i.principal == a.principal
                && a.at_ms >= i.start_ms
                && a.at_ms <= i.end_ms + cfg.grace_ms
        })
    };
    let alerts: Vec<&Raised> = runs.iter().flat_map(|r| &r.alerts).collect();
    let fps: Vec<&&Raised> = alerts.iter().filter(|a| !in_incident(a)).collect();
    let fp = fps.len();
    let mut kinds = Vec::new();
    let mut all_ttd = Vec::new();
    let (mut all_n, mut all_d) = (0, 0);
    let metrics = |kind: String, n: usize, d: usize, ttd: &mut Vec<u64>| {
        ttd.sort_unstable();
        let precision = if d + fp == 0 {
            0.0
        } else {
            d as f64 / (d + fp) as f64
        };
        let recall = if n == 0 { 0.0 } else { d as f64 / n as f64 };
        KindMetrics {
            kind,
            incidents: n,
            detected: d,
            precision: r4(precision),
            recall: r4(recall),
            f1: r4(f1(precision, recall)),
            ttd_p50_ms: percentile(ttd, 0.5),
            ttd_max_ms: ttd.last().copied(),
            resources_before_alert_p50: None,
            resources_before_alert_max: None,
        }
    };
    // An attack starts with its first request: before it there is nothing
    // to detect, so time to detect is counted from there.
    let mut first_request: HashMap<(&str, Label), u64> = HashMap::new();
    for e in &trace.events {
        if e.label != Label::Benign {
            first_request
                .entry((e.decision.principal.as_str(), e.label))
                .or_insert(e.decision.at_ms);
        }
    }
    // The multi-site kinds are reported only for a trace that has them, so
    // the report of a single-site trace keeps its shape.
    let kinds_here: Vec<AttackKind> = AttackKind::ALL
        .into_iter()
        .chain(
            AttackKind::MULTI_SITE
                .into_iter()
                .filter(|k| trace.incidents.iter().any(|i| i.kind == *k)),
        )
        .collect();
    for kind in kinds_here {
        let mut ttd = Vec::new();
        let mut touched = Vec::new();
        let mut n = 0;
        for run in runs {
            for i in run.incidents.iter().filter(|i| i.kind == kind) {
                n += 1;
                let first = run
                    .alerts
                    .iter()
                    .filter(|a| a.principal == i.principal)
                    .map(|a| a.at_ms)
                    .filter(|t| *t >= i.start_ms && *t <= i.end_ms + cfg.grace_ms)
                    .min();
                if let Some(t) = first {
                    let began = first_request
                        .get(&(i.principal.as_str(), Label::from(kind)))
                        .copied()
                        .unwrap_or(i.start_ms)
                        .max(i.start_ms);
                    ttd.push(t.saturating_sub(began));
                    if count_resources && kind == AttackKind::LowAndSlow {
                        touched.push(resources_before(trace, i, t));
                    }
                }
            }
        }
        let d = ttd.len();
        all_n += n;
        all_d += d;
        all_ttd.extend(ttd.iter().copied());
        let mut m = metrics(kind.as_str().to_string(), n, d, &mut ttd);
        if !touched.is_empty() {
            touched.sort_unstable();
            m.resources_before_alert_p50 = percentile(&touched, 0.5);
            m.resources_before_alert_max = touched.last().copied();
        }
        kinds.push(m);
    }
    kinds.push(metrics("all".into(), all_n, all_d, &mut all_ttd));
    let per = if trace.header.principals == 0 || scored_h <= 0.0 {
        0.0
    } else {
        fp as f64 * 1000.0 / trace.header.principals as f64 * 24.0 / scored_h
    };
    MethodReport {
        method: method.into(),
        description: description.into(),
        alerts: alerts.len(),
        false_positives: fp,
        fp_per_1000_principals_per_day: r4(per),
        kinds,
        false_positive_samples: fps
            .iter()
            .take(20)
            .map(|a| FalsePositive {
                principal: a.principal.clone(),
                at_ms: a.at_ms,
                reason: a.reason.clone(),
            })
            .collect(),
    }
}

/// The distinct resources of `i`'s attack events up to `t` (the alert).
fn resources_before(trace: &Trace, i: &Incident, t: u64) -> u64 {
    let label = Label::from(i.kind);
    let lo = trace
        .events
        .partition_point(|e| e.decision.at_ms < i.start_ms);
    let hi = trace.events.partition_point(|e| e.decision.at_ms <= t);
    let seen: std::collections::BTreeSet<&str> = trace.events[lo..hi.max(lo)]
        .iter()
        .filter(|e| e.label == label && e.decision.principal == i.principal)
        .map(|e| e.decision.resource.as_str())
        .collect();
    seen.len() as u64
}

/// The spans to replay, each with the incidents it scores: the whole
/// trace, or in fresh mode one span per incident.
fn spans<'a>(trace: &'a Trace, cfg: &EvalConfig) -> Vec<(u64, u64, Vec<&'a Incident>)> {
    if !cfg.fresh {
        let end = trace.events.last().map_or(0, |e| e.decision.at_ms + 1);
        return vec![(0, end, trace.incidents.iter().collect())];
    }
    trace
        .incidents
        .iter()
        .map(|i| {
            (
                i.start_ms.saturating_sub(FRESH_LEAD_MS),
                i.end_ms + cfg.grace_ms,
                vec![i],
            )
        })
        .collect()
}

/// Replays `trace` through the detector and the rate-limit rule and scores
/// both: once over the whole trace, or in fresh mode once per incident (see
/// the module doc).
pub fn evaluate(trace: &Trace, cfg: &EvalConfig) -> EvalReport {
    // Alerts during the warm-up are not scored; a fresh replay has none.
    let from = if cfg.fresh {
        0
    } else {
        trace.header.start_ms + trace.header.warmup_ms
    };
    let mut detector_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    let mut events_n = 0usize;
    let mut replayed_ms = 0u64;
    let mut busy = std::time::Duration::ZERO;
    let (mut tracked, mut memory) = (0, 0);
    for (start, end, incidents) in spans(trace, cfg) {
        let lo = trace.events.partition_point(|e| e.decision.at_ms < start);
        let hi = trace.events.partition_point(|e| e.decision.at_ms < end);
        let events = &trace.events[lo..hi];
        events_n += events.len();
        replayed_ms += end - start;
        let mut det = Detector::new(cfg.detector.clone(), cfg.seed);
        let started = Instant::now();
        let mut raised = Vec::new();
        for e in events {
            if let Some(a) = det.observe(&e.decision) {
                raised.push(Raised {
                    principal: a.principal,
                    at_ms: a.at_ms,
                    reason: a.reason,
                });
            }
        }
        busy += started.elapsed();
        tracked = tracked.max(det.tracked());
        memory = memory.max(det.memory_bytes_estimate());
        raised.retain(|a| a.at_ms >= from);
        let mut base = rate_limit(events, cfg.rate_limit_per_min, cfg.detector.cooldown_ms);
        base.retain(|a| a.at_ms >= from);
        detector_runs.push(Run {
            incidents: incidents.clone(),
            alerts: raised,
        });
        baseline_runs.push(Run {
            incidents,
            alerts: base,
        });
    }
    let secs = busy.as_secs_f64().max(1e-9);
    let performance = Performance {
        events_per_sec: (events_n as f64 / secs).round(),
        tracked,
        memory_bytes: memory,
        bytes_per_principal: (memory as f64 / tracked.max(1) as f64).round(),
    };
    let scored_h = if cfg.fresh {
        replayed_ms as f64 / 3_600_000.0
    } else {
        trace.header.hours as f64 - trace.header.warmup_ms as f64 / 3_600_000.0
    };
    let mut incidents = BTreeMap::new();
    for i in &trace.incidents {
        *incidents.entry(i.kind.as_str().to_string()).or_insert(0) += 1;
    }
    let floors = if cfg.detector.floors.is_some() {
        ", and absolute floors"
    } else {
        ""
    };
    EvalReport {
        mode: if cfg.fresh { "fresh" } else { "warm" }.into(),
        trace_seed: trace.header.seed,
        principals: trace.header.principals,
        hours: trace.header.hours,
        scored_hours: r4(scored_h),
        events: events_n,
        incidents,
        detector: score(
            trace,
            cfg,
            "detector",
            &format!("per-principal robust baselines and half-space trees{floors}"),
            &detector_runs,
            scored_h,
            false,
        ),
        baseline: score(
            trace,
            cfg,
            "rate_limit",
            &format!(
                "static rule: more than {} requests per principal in 60 s",
                cfg.rate_limit_per_min
            ),
            &baseline_runs,
            scored_h,
            false,
        ),
        performance,
    }
}
