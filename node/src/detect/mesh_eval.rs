//! The mesh evaluation (`weft detect eval --mesh`): one detector per site,
//! each fed only its own site's decisions, exchanging signed summaries
//! every slot as the nodes would.
//!
//! Each site of the trace is a node with its own key (fixed seeds) and its
//! own [`Detector`] (summaries enabled) and [`MeshView`]. The trace is
//! replayed in time order; when a 10 s slot ends, every node advances its
//! view, summarizes the slot ([`Detector::summarize`]), merges its own
//! summary, signs it and encodes it, and every other node takes the bytes
//! the whole way in ([`MeshView::ingest_bytes`]: size, admitted signer,
//! signature, body, bounds, merge), as gossip would deliver them; then each
//! node asks its view for alerts on the principals it served
//! ([`Detector::check_mesh`]). Those alerts count from the time the
//! slot's last summary is out on the nodes, [`SLOT_GRACE_MS`] and
//! [`PUBLISH_SPREAD_MS`] after the slot's end. Between slots, each
//! decision also goes into its node's view at once
//! ([`MeshView::observe_local`]), which checks its principal on the spot. Nothing is shared between the nodes but the
//! summaries' bytes and, at each exchange, the alerts raised anywhere
//! since the last one ([`MeshView::note_alert`]): each alert is a
//! quarantine order, which reaches every node (within a second on the
//! mesh; here at the next slot's end, up to 10 s later).
//!
//! Methods, scored as [`super::eval`] scores (the same incidents, grace,
//! warm-up and metrics):
//! - `mesh`: each node's own alerts and its mesh view's;
//! - `single_site`: each node's own alerts alone (the same detectors: the
//!   mesh view never changes what the local detector does);
//! - `all_sites_in_one`: one detector fed every site's decisions, as if a
//!   central collector saw everything (the warm evaluation's detector);
//! - `rate_limit`: the static rule, at each node on its own decisions.
//!
//! An alert is a quarantine of its principal, and every node's quarantine
//! of the same principal has the same effect, so the alerts of all nodes
//! are counted as the mesh's: a principal's first alert at any node, then
//! none for it within the cool-down (15 min).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::summary::SignedSummary;

use super::eval::{EvalConfig, MethodReport, Raised, Run, r4, rate_limit, score};
use super::mesh::{MeshConfig, MeshView};
use super::summary::{PUBLISH_SPREAD_MS, SLOT_GRACE_MS, SLOT_MS};
use super::traces::{Event, Trace};
use super::{Alert, Detector};

/// What the summaries cost in the run.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryCost {
    /// Summaries published (all nodes).
    pub summaries: u64,
    /// Their encoded, signed bytes.
    pub bytes: u64,
    /// Principal lines in them.
    pub principal_lines: u64,
    /// Bytes per principal line (the envelope and signature shared out).
    pub bytes_per_principal: f64,
    /// Bytes one node publishes per minute, on average over the trace.
    pub bytes_per_node_per_minute: f64,
    /// Principals in the largest summary.
    pub max_principals: usize,
    /// Principals left out by the cap, in all.
    pub dropped: u64,
    /// Summaries a receiving node refused (none is expected).
    pub refused: u64,
    /// Signatures verified.
    pub verified: u64,
}

/// The mesh evaluation's report.
#[derive(Clone, Debug, Serialize)]
pub struct MeshEvalReport {
    /// `mesh`.
    pub mode: String,
    /// The trace's seed.
    pub trace_seed: u64,
    /// Principals in the trace.
    pub principals: usize,
    /// Its length, hours.
    pub hours: u64,
    /// Hours scored (after the warm-up).
    pub scored_hours: f64,
    /// Sites (nodes).
    pub sites: usize,
    /// Events replayed.
    pub events: usize,
    /// Incidents per kind.
    pub incidents: BTreeMap<String, usize>,
    /// Each node's detector and its mesh view.
    pub mesh: MethodReport,
    /// Each node's detector alone.
    pub single_site: MethodReport,
    /// One detector over every site's decisions.
    pub all_sites_in_one: MethodReport,
    /// The static rate rule at each node.
    pub rate_limit: MethodReport,
    /// Alerts of the mesh view, per signal.
    pub mesh_signals: BTreeMap<String, usize>,
    /// The summaries' cost.
    pub summaries: SummaryCost,
    /// Events per second through the whole mesh run (all nodes, exchanges
    /// included, one thread).
    pub events_per_sec: f64,
}

/// The key of site `i`: fixed, so runs are reproducible.
fn site_key(i: usize) -> SecretKey {
    let mut seed = [0x5e; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    SecretKey::from_seed(seed)
}

/// The first alert of each principal at any node, then none within the
/// cool-down.
fn mesh_wide(mut alerts: Vec<Raised>, cooldown_ms: u64) -> Vec<Raised> {
    alerts.sort_by(|a, b| (a.at_ms, &a.principal).cmp(&(b.at_ms, &b.principal)));
    let mut last: HashMap<String, u64> = HashMap::new();
    alerts
        .into_iter()
        .filter(|a| {
            let keep = last
                .get(&a.principal)
                .is_none_or(|t| a.at_ms >= t.saturating_add(cooldown_ms));
            if keep {
                last.insert(a.principal.clone(), a.at_ms);
            }
            keep
        })
        .collect()
}

fn raised(a: Alert) -> Raised {
    Raised {
        principal: a.principal,
        at_ms: a.at_ms,
        reason: a.reason,
    }
}

struct Node {
    key: SecretKey,
    id: NodeId,
    detector: Detector,
    view: MeshView,
}

/// Runs the mesh evaluation of `trace` (see the module doc).
pub fn evaluate_mesh(trace: &Trace, cfg: &EvalConfig, mesh: &MeshConfig) -> MeshEvalReport {
    let from = trace.header.start_ms + trace.header.warmup_ms;
    let mut names: Vec<String> = trace.header.sites.clone();
    for e in &trace.events {
        if let Some(s) = &e.decision.site
            && !names.contains(s)
        {
            names.push(s.clone());
        }
    }
    if names.is_empty() {
        names.push("site-0".into());
    }
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut nodes: Vec<Node> = (0..names.len())
        .map(|i| {
            let key = site_key(i);
            let mut detector = Detector::new(cfg.detector.clone(), cfg.seed);
            detector.enable_summaries();
            Node {
                id: NodeId::new(key.public()),
                key,
                detector,
                view: MeshView::new(mesh.clone()),
            }
        })
        .collect();
    let admitted: std::collections::BTreeSet<NodeId> = nodes.iter().map(|n| n.id).collect();
    let mut cost = SummaryCost {
        summaries: 0,
        bytes: 0,
        principal_lines: 0,
        bytes_per_principal: 0.0,
        bytes_per_node_per_minute: 0.0,
        max_principals: 0,
        dropped: 0,
        refused: 0,
        verified: 0,
    };
    let mut local = Vec::new();
    let mut from_mesh = Vec::new();
    let mut signals: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_site: Vec<Vec<Event>> = vec![Vec::new(); names.len()];

    // Alerts raised since the last exchange, told to every node's view at
    // the next one, as their quarantine orders would reach the nodes.
    let mut told: Vec<(String, u64)> = Vec::new();
    let exchange = |nodes: &mut Vec<Node>,
                    now_ms: u64,
                    cost: &mut SummaryCost,
                    told: &mut Vec<(String, u64)>| {
        let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            n.view.advance(now_ms);
            for s in n.detector.summarize(n.id, now_ms) {
                cost.max_principals = cost.max_principals.max(s.principals.len());
                cost.principal_lines += s.principals.len() as u64;
                cost.dropped += u64::from(s.dropped);
                if n.view.ingest_local(&s).is_err() {
                    cost.refused += 1;
                }
                let bytes = SignedSummary::sign(&s, &n.key).to_bytes();
                cost.summaries += 1;
                cost.bytes += bytes.len() as u64;
                sent.push((i, bytes));
            }
        }
        for (from, bytes) in &sent {
            for (j, n) in nodes.iter_mut().enumerate() {
                if j == *from {
                    continue;
                }
                cost.verified += 1;
                if n.view
                    .ingest_bytes(bytes, |id| admitted.contains(id))
                    .is_err()
                {
                    cost.refused += 1;
                }
            }
        }
        for n in nodes.iter_mut() {
            for (p, at) in told.iter() {
                n.view.note_alert(p, *at);
            }
        }
        told.clear();
        let mut out = Vec::new();
        for n in nodes.iter_mut() {
            out.extend(n.detector.check_mesh(&mut n.view, now_ms));
        }
        // The slot's last summary is published the grace and the whole
        // spread after its end: an alert on the merged slot counts then.
        let heard_all = now_ms + SLOT_GRACE_MS + PUBLISH_SPREAD_MS;
        for a in &mut out {
            a.at_ms = a.at_ms.max(heard_all);
        }
        told.extend(out.iter().map(|a| (a.principal.clone(), a.at_ms)));
        out
    };

    let started = Instant::now();
    let mut cur_slot: Option<u64> = None;
    for e in &trace.events {
        let slot = e.decision.at_ms / SLOT_MS;
        if cur_slot.is_some_and(|c| slot > c) {
            for a in exchange(&mut nodes, slot * SLOT_MS, &mut cost, &mut told) {
                *signals
                    .entry(a.signal.clone().unwrap_or_default())
                    .or_default() += 1;
                from_mesh.push(raised(a));
            }
        }
        cur_slot = Some(slot);
        let site = e
            .decision
            .site
            .as_deref()
            .and_then(|s| index.get(s).copied())
            .unwrap_or(0);
        per_site[site].push(e.clone());
        let n = &mut nodes[site];
        let here = n.detector.observe(&e.decision);
        let o = n.view.observe_beside(n.id, &e.decision, here);
        if o.explained {
            *signals.entry("explained".into()).or_default() += 1;
        }
        if let Some(a) = o.local {
            told.push((a.principal.clone(), a.at_ms));
            local.push(raised(a));
        }
        if let Some(a) = o.across {
            told.push((a.principal.clone(), a.at_ms));
            *signals
                .entry(a.signal.clone().unwrap_or_default())
                .or_default() += 1;
            from_mesh.push(raised(a));
        }
    }
    if let Some(c) = cur_slot {
        for a in exchange(&mut nodes, (c + 1) * SLOT_MS, &mut cost, &mut told) {
            *signals
                .entry(a.signal.clone().unwrap_or_default())
                .or_default() += 1;
            from_mesh.push(raised(a));
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);

    // One detector over every site's decisions.
    let mut one = Detector::new(cfg.detector.clone(), cfg.seed);
    let central: Vec<Raised> = trace
        .events
        .iter()
        .filter_map(|e| one.observe(&e.decision).map(raised))
        .collect();
    let mut base = Vec::new();
    for events in &per_site {
        base.extend(rate_limit(
            events,
            cfg.rate_limit_per_min,
            cfg.detector.cooldown_ms,
        ));
    }

    let cooldown = cfg.detector.cooldown_ms;
    let scored = |alerts: Vec<Raised>| -> Vec<Raised> {
        let mut a = mesh_wide(alerts, cooldown);
        a.retain(|a| a.at_ms >= from);
        a
    };
    let copy = |a: &[Raised]| -> Vec<Raised> {
        a.iter()
            .map(|r| Raised {
                principal: r.principal.clone(),
                at_ms: r.at_ms,
                reason: r.reason.clone(),
            })
            .collect()
    };
    let mut both = copy(&local);
    both.extend(from_mesh);
    let incidents: Vec<_> = trace.incidents.iter().collect();
    let run = |alerts: Vec<Raised>| {
        vec![Run {
            incidents: incidents.clone(),
            alerts: scored(alerts),
        }]
    };
    let scored_h = trace.header.hours as f64 - trace.header.warmup_ms as f64 / 3_600_000.0;
    let method = |name: &str, what: &str, alerts: Vec<Raised>| {
        score(trace, cfg, name, what, &run(alerts), scored_h, true)
    };
    let minutes = trace.header.hours as f64 * 60.0;
    cost.bytes_per_principal = if cost.principal_lines == 0 {
        0.0
    } else {
        r4(cost.bytes as f64 / cost.principal_lines as f64)
    };
    cost.bytes_per_node_per_minute = r4(cost.bytes as f64 / names.len() as f64 / minutes.max(1.0));
    let mut incident_kinds = BTreeMap::new();
    for i in &trace.incidents {
        *incident_kinds
            .entry(i.kind.as_str().to_string())
            .or_insert(0) += 1;
    }
    MeshEvalReport {
        mode: "mesh".into(),
        trace_seed: trace.header.seed,
        principals: trace.header.principals,
        hours: trace.header.hours,
        scored_hours: r4(scored_h),
        sites: names.len(),
        events: trace.events.len(),
        incidents: incident_kinds,
        mesh: method(
            "mesh",
            "a detector per site, each fed its own decisions, and its view of the signed summaries of every site",
            both,
        ),
        single_site: method(
            "single_site",
            "a detector per site, each fed its own decisions, nothing shared",
            local,
        ),
        all_sites_in_one: method(
            "all_sites_in_one",
            "one detector fed the decisions of every site",
            central,
        ),
        rate_limit: method(
            "rate_limit",
            &format!(
                "static rule at each site: more than {} requests per principal in 60 s",
                cfg.rate_limit_per_min
            ),
            base,
        ),
        mesh_signals: signals,
        summaries: cost,
        events_per_sec: (trace.events.len() as f64 / secs).round(),
    }
}
