//! Online anomaly detection over the node's authorization decisions.
//!
//! The node feeds every decision to a [`Detector`] as a [`DecisionEvent`];
//! [`Detector::observe`] returns an [`Alert`] when the principal's recent
//! behaviour is far from its own history and from what principals like it
//! usually do. An alert explains itself: its score, the features that drove
//! it (each with its value, its baseline and its share), the evidence window
//! and a few human lines. What to do with an alert (a node-signed quarantine
//! above a threshold) is the caller's business.
//!
//! # What is tracked, per principal
//! Over a sliding window ([`DetectorConfig::window_ms`], 60 s, kept as six
//! 10 s slots):
//!
//! | feature | what |
//! |---|---|
//! | `rate` | requests in the window |
//! | `deny_ratio` | denies / (requests + 4): the 4 keeps one deny of one request from reading as 100% |
//! | `distinct_resources` | distinct resources (linear counting over a 128-bit bitmap per slot) |
//! | `distinct_actions` | distinct actions (64-bit bitmap per slot) |
//! | `new_pairs` | (action, resource type) pairs this principal never used before (a 256-bit Bloom filter) |
//! | `new_sites` | sites (node ids) this principal was never seen at (a 64-bit filter) |
//! | `token_failures` | requests with a failed or expired token |
//! | `new_resources_1h` | resources new to the principal (two rotating 1,024-bit Bloom filters), decayed with a one-hour half-life: the slow signal |
//! | `off_hours` | how rare this hour of the day is for the principal (a 24-bucket histogram of UTC hours from `at_ms`): `ln(1/24 ÷ p(hour))`, 0 at a usual hour; it supports an alert, never drives one |
//!
//! Everything is fixed-size: about 1 KB per principal whatever it does, and
//! [`DetectorConfig::max_principals`] principals at most (the least recently
//! seen is evicted first).
//!
//! # Baselines
//! Each feature has a robust baseline per principal: an exponentially
//! weighted mean and mean absolute deviation, fed once per closed 10 s slot
//! with the window's value *winsorized* at mean + 3 deviations, so an attack
//! in progress does not teach the baseline that it is normal. A principal
//! with little history is compared mostly with a *population* baseline of
//! principals at the same stage (tiers by log2 of the windows seen): a
//! brand-new employee is measured against what other principals looked like
//! in their first windows, which is to say exploring, not against settled
//! colleagues. The own baseline's weight is `n / (n + own_weight_samples)`.
//! A feature's deviation is the robust z-score
//! `max(0, x − mean) / (deviation + floor)`, where the per-feature floor is
//! the smallest change that matters (so a perfectly regular principal is not
//! alarmed by one extra request), capped at [`DetectorConfig::z_cap`].
//!
//! The slow feature, `new_resources_1h`, needs more: it rises over hours, a
//! resource at a time, and winsorizing alone would let each step teach the
//! baseline the next one. Its baselines learn only from windows whose
//! novelty z-score is at most 1, and it drives nothing until the principal
//! is established (128 windows of activity and three hours since it was
//! first seen): a young principal is still meeting its world.
//!
//! # The multivariate model: half-space trees
//! The vector of capped z-scores, scaled to `[0, 1]`, goes to an ensemble of
//! half-space trees ([`hst`]), shared by all principals, updated online once
//! per closed slot with the windows that are clearly ordinary (a norm under
//! half the alerting one, and no alert cooling down), and scoring every
//! event. HS-trees need no training step,
//! use constant memory and time, forget old windows (concept drift), and score
//! a point by how little recent mass its region holds, which catches joint
//! deviations (a few features each moderately up) as well as single extreme
//! ones.
//!
//! Existing crates were considered: `extended-isolation-forest` and
//! `isolation_forest` are batch models (fit on a data set, then score), with
//! no streaming update; the half-space trees in `irithyll` come inside a large
//! streaming-ML framework and do not take a seed. Half-space trees are a
//! small, well-understood algorithm, so they are implemented here (about 200
//! lines), seeded, with no dependency.
//!
//! # When it alerts
//! An event alerts when (1) the Euclidean norm of the z-scores of the
//! features that can drive an alert (all but `off_hours`, which only
//! supports: working late is not an attack) reaches
//! [`DetectorConfig::min_norm`], (2) the trees score the point at or above
//! [`DetectorConfig::threshold`], (3) the principal had no alert in the
//! last [`DetectorConfig::cooldown_ms`], and (4) the detector is past its
//! learning period ([`DetectorConfig::learning_ms`], 12 h from its first
//! decision).
//!
//! # The learning period
//! A detector that has just started (a new node, or one with no saved
//! state) knows no principal: what it first sees of each is that
//! principal's first windows, and a principal's first busy window (a
//! batch job's nightly run, a user's first use of one of its own
//! (action, resource type) pairs or of its second site) is far from a
//! baseline made of minutes. On the generated traces that is about ten
//! false alerts per 1,000 principals a day on a fresh detector, for a few
//! bulk exfiltrations found, which look like a batch job's run to a model
//! with no reference. So for its first 12 h the model learns (baselines,
//! population tiers, trees) and alerts on nobody; the absolute floors
//! alert from the first decision. The start of the learning period is
//! kept in the saved state, so a restart does not begin it again. Twelve
//! hours is the evaluation's warm-up, after which no ordinary principal
//! of the traces is flagged. (The trees alone would score nothing before
//! they hold their first reference window, [`hst::HstConfig::window`]
//! ordinary windows: minutes on a node serving a thousand principals.)
//!
//! # Absolute floors: no blind start
//! An event also alerts, whatever the baselines and the trees hold and
//! during the learning period too, when its principal's window crosses an
//! absolute floor ([`Floors`]), from the detector's first decision:
//!
//! | floor | alerts at, in the 60 s window | ordinary maximum (traces) |
//! |---|---|---|
//! | `denies` | 30 denies, at least half of the requests, over at least 10 distinct resources | 4% of a few requests a minute |
//! | `resources` | 300 distinct resources | 120 (a batch job's tables) |
//! | `actions` | 16 distinct actions | 5 |
//!
//! The floors are looked at only when the model does not alert, so every
//! alert of the model is unchanged by them; they cost a few comparisons per
//! event (the window's features are computed for the model anyway). Their
//! price is the principals they flag that are not attacks: a crawler, an
//! indexer or a backup job reading 300 distinct resources a minute, and a
//! client whose requests over many resources are refused en masse (say,
//! after its access was revoked); each alerts once per cool-down. None of
//! the generated traces' ordinary principals crosses one (`weft detect
//! eval`, twelve seeds; `docs/detection.md`). A floor alert says so in
//! [`Alert::floor`] and its first evidence line.
//!
//! # Across sites
//! A detector sees one node's decisions. With
//! [`Detector::enable_summaries`] it also keeps, per 10 s slot, what the
//! node publishes to the mesh ([`summary`]: per principal, counts and
//! sketches, signed by the node key, [`Detector::summarize`]); a
//! [`mesh::MeshView`] merges the summaries of every site that reach the
//! node, and [`Detector::check_mesh`] scores the principals this node served
//! on what the whole mesh saw in the window: the absolute floors on the
//! merged counts, and cross-site signals (denies spread over many sites,
//! first visits to many sites, probes on pairs never used, impossible
//! travel, resources new to the principal anywhere in the mesh), tabled
//! in [`mesh`].
//! `weft detect eval --mesh` runs one detector per site exchanging the
//! summaries ([`mesh_eval`]).
//!
//! # Determinism
//! No wall clock and no thread RNG: time comes from the events, the trees
//! from the seed, and hashing is FNV-1a. The same events in the same order
//! give the same alerts.

pub mod cli;
pub mod eval;
pub mod hst;
pub mod mesh;
pub mod mesh_eval;
pub mod summary;
pub mod traces;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use hst::{HalfSpaceTrees, HstConfig};

/// One authorization decision, as the detector sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionEvent {
    /// When it was decided (Unix ms).
    pub at_ms: u64,
    /// The principal's Cedar uid (the token's principal for a token request).
    pub principal: String,
    /// The action's Cedar uid.
    pub action: String,
    /// The resource's Cedar uid; its type is the part before `::`.
    pub resource: String,
    /// The decision.
    pub allow: bool,
    /// Whether the request carried a failed or expired token.
    pub token_failed: bool,
    /// The node that decided, for streams that span sites.
    pub site: Option<String>,
}

impl DecisionEvent {
    /// What the detector sees of a decision this node made.
    pub fn of(record: &weft_protocol::authorize::DecisionRecord) -> DecisionEvent {
        let (principal, action, resource) = record.asked.who();
        DecisionEvent {
            at_ms: record.at_ms,
            principal,
            action,
            resource,
            allow: record.decision.allow,
            token_failed: record.token_failed,
            site: None,
        }
    }
}

/// One feature's part in an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureContribution {
    /// The feature's name (see the module doc).
    pub name: String,
    /// Its value over the evidence window.
    pub value: f64,
    /// The baseline it was compared with (the blended mean).
    pub baseline: f64,
    /// Its robust z-score (capped).
    pub z: f64,
    /// Its share of the squared z-scores, in `[0, 1]`.
    pub contribution: f64,
}

/// An anomaly: a principal behaving far from its baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The principal.
    pub principal: String,
    /// The half-space trees' score, in `[0, 1]`.
    pub score: f64,
    /// When (the time of the event that raised it).
    pub at_ms: u64,
    /// The features, the driving one first, down to those with a
    /// contribution of at least 1%.
    pub features: Vec<FeatureContribution>,
    /// Where the evidence window starts.
    pub window_start_ms: u64,
    /// Where it ends.
    pub window_end_ms: u64,
    /// Short human lines, one per driving feature.
    pub evidence: Vec<String>,
    /// One line: why.
    pub reason: String,
    /// The absolute floor the window crossed (`denies`, `resources` or
    /// `actions`, see [`Floors`]), when one did; such an alert stands
    /// whatever the trees' score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// The cross-site signal that raised it (see [`mesh`]), when the mesh
    /// view did: the score is then 1 and the features are the merged
    /// window's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// Settings of the detector. The defaults were tuned on generated traces
/// (`weft detect gen`, seeds other than the benchmark's) for at most one
/// false alert per 1,000 principals per day; see BENCHMARKS.md.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// The trees' score at which an event alerts. Default 0.2: at least one
    /// tree in five isolates the point from the ordinary windows of the
    /// last few minutes. The trees act as a veto on deviations that many
    /// principals share right now; on the tuning traces (seeds 2 and 3,
    /// 1,000 principals) 0.1 and 0.3 moved recall by a few percent.
    pub threshold: f64,
    /// The norm of the driving z-scores an event needs. Default 5.5: on the
    /// tuning traces, no benign principal went above 4.2 after the
    /// warm-up, and one request from a new site with a new (action,
    /// resource type) pair reaches 6.4, two from two new sites 10.
    pub min_norm: f64,
    /// Principals tracked at most; the least recently seen is evicted.
    /// Default 100,000: about 100 MB.
    pub max_principals: usize,
    /// The sliding window. Default 60 s (six 10 s slots): long enough to see
    /// a rate, short enough that a burst shows within seconds.
    pub window_ms: u64,
    /// After an alert, no other for the same principal this long. Default
    /// 15 min: one alert per incident, the quarantine does the rest.
    pub cooldown_ms: u64,
    /// Half-life of `new_resources_1h`. Default one hour.
    pub novelty_half_life_ms: u64,
    /// Windows after which a principal's own baseline weighs as much as the
    /// population's. Default 30 (five minutes of activity).
    pub own_weight_samples: f64,
    /// Weight of a new window in a principal's baseline once it has 50.
    /// Default 0.02: a memory of about 50 windows of activity.
    pub baseline_alpha: f64,
    /// Weight of a new window in a population baseline. Default 0.002.
    pub population_alpha: f64,
    /// z-scores are capped here, and scaled by it into `[0, 1]` for the
    /// trees. Default 12.
    pub z_cap: f64,
    /// The half-space trees.
    pub hst: HstConfig,
    /// Absolute floors that alert whatever the baselines and the trees
    /// hold, from a detector's first decision (`None`: none, the detector
    /// relies on its learned model alone). See [`Floors`].
    pub floors: Option<Floors>,
    /// How long the detector learns, from its first decision, before its
    /// model alerts; the floors alert from the first decision. Default
    /// 12 h: a principal it has known for minutes has no reference, and
    /// what the model then flags is its first busy window (a batch job's
    /// nightly run, a user's first new pairs), not an attack. Twelve hours
    /// is the evaluation's warm-up, after which no ordinary principal of
    /// the traces is flagged.
    pub learning_ms: u64,
}

/// Absolute floors: behaviour in one window so far beyond what any
/// ordinary principal does that it alerts on its own, without a baseline
/// and without the trees. A fresh detector (a new node, or one with no
/// saved state) has neither for minutes; the floors work from its first
/// decision. Each is counted over the sliding window
/// ([`DetectorConfig::window_ms`]).
///
/// Why these numbers: the busiest ordinary principal of the generated
/// traces is a batch job at up to 300 queries a minute over 120 tables with
/// one action and no deny, and an ordinary user makes at most a few
/// requests a minute over at most 50 resources, with up to 4% denies and
/// five actions. Every floor is at least 2.5 times the ordinary maximum of
/// what it counts, and the deny floor needs both many denies and many
/// resources, so a client retrying one refused request does not cross it.
#[derive(Clone, Debug, PartialEq)]
pub struct Floors {
    /// Denies in the window that alert, when they are at least half of the
    /// principal's requests there and fall on at least
    /// [`Floors::deny_resources`] distinct resources. Default 30: one a
    /// second for half a minute, over ten times what the noisiest ordinary
    /// user is refused in a minute.
    pub denies: u32,
    /// Distinct resources the denies of [`Floors::denies`] need. Default 10.
    pub deny_resources: u32,
    /// Distinct resources in the window that alert, denied or not. Default
    /// 300: 2.5 times a batch job's 120 tables (the estimate is a linear
    /// count over 128 bits, within about 20% at 300).
    pub resources: u32,
    /// Distinct actions in the window that alert. Default 16: three times
    /// the five actions an ordinary user has (the estimate is a linear count
    /// over 64 bits, within about 10% at 16).
    pub actions: u32,
}

impl Default for Floors {
    fn default() -> Self {
        Floors {
            denies: 30,
            deny_resources: 10,
            resources: 300,
            actions: 16,
        }
    }
}

impl Floors {
    /// The first floor the window's features `x` cross, as a line for the
    /// alert: which floor, the value and the floor.
    fn crossed(&self, x: &[f64; NF]) -> Option<(&'static str, String)> {
        let count = x[0];
        // `deny_ratio` is denies / (requests + 4).
        let denies = (x[1] * (count + 4.0)).round();
        let resources = x[2];
        let actions = x[3];
        if denies >= f64::from(self.denies)
            && denies * 2.0 >= count
            && resources >= f64::from(self.deny_resources)
        {
            return Some((
                "denies",
                format!(
                    "{denies:.0} denies of {count:.0} requests over {resources:.0} resources in the window (floor {})",
                    self.denies
                ),
            ));
        }
        if resources >= f64::from(self.resources) {
            return Some((
                "resources",
                format!(
                    "{resources:.0} distinct resources in the window (floor {})",
                    self.resources
                ),
            ));
        }
        if actions >= f64::from(self.actions) {
            return Some((
                "actions",
                format!(
                    "{actions:.0} distinct actions in the window (floor {})",
                    self.actions
                ),
            ));
        }
        None
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            threshold: 0.2,
            min_norm: 5.5,
            max_principals: 100_000,
            window_ms: 60_000,
            cooldown_ms: 15 * 60_000,
            novelty_half_life_ms: 3_600_000,
            own_weight_samples: 30.0,
            baseline_alpha: 0.02,
            population_alpha: 0.002,
            z_cap: 12.0,
            hst: HstConfig::default(),
            floors: Some(Floors::default()),
            learning_ms: 12 * 3_600_000,
        }
    }
}

/// The features, in vector order.
pub const FEATURES: [&str; NF] = [
    "rate",
    "deny_ratio",
    "distinct_resources",
    "distinct_actions",
    "new_pairs",
    "new_sites",
    "token_failures",
    "new_resources_1h",
    "off_hours",
];
const NF: usize = 9;
const OFF_HOURS: usize = 8;
const NOVEL: usize = 7;
/// Windows of history after which a principal is established (tier 7):
/// about two hours of activity at one request a minute, a working day at
/// one request every four minutes...
const ESTABLISHED: u32 = 128;
/// ...and at least three hours since it was first seen, so what it
/// explored while new (decayed with a one-hour half-life) is mostly gone.
const ESTABLISHED_MS: u64 = 3 * 3_600_000;
/// The smallest change of each feature that matters (see the module doc).
/// A new (action, resource type) pair scores 4 and a new site 5 against a
/// principal that never shows either, so one request from a site the
/// principal was never seen at, with a pair it never used, reaches
/// [`DetectorConfig::min_norm`] on its own; a new site alone does not.
const FLOORS: [f64; NF] = [5.0, 0.08, 4.0, 1.0, 0.25, 0.2, 1.0, 3.0, 1.0];
/// The novelty baselines (the principal's and its tier's) learn only from
/// windows whose novelty z-score is at most this: a rise over hours, one
/// resource at a time, never teaches them that it is normal.
const NOVEL_HOLD_Z: f64 = 1.0;
const SLOTS: usize = 6;
const TIERS: usize = 16;
const RES_BITS: usize = 1024;
const RES_ROTATE: u32 = 150;

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Slot {
    idx: u64,
    count: u32,
    denies: u32,
    token_failed: u32,
    new_pairs: u16,
    new_sites: u16,
    resources: [u64; 2],
    actions: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Baseline {
    mean: f32,
    dev: f32,
}

impl Baseline {
    fn update(&mut self, x: f64, floor: f64, alpha: f64) {
        let (m, d) = (f64::from(self.mean), f64::from(self.dev));
        let x = x.min(m + 3.0 * (d + floor));
        let m2 = m + alpha * (x - m);
        self.mean = m2 as f32;
        self.dev = (d + alpha * ((x - m2).abs() - d)) as f32;
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Principal {
    slots: [Slot; SLOTS],
    cur: u64,
    lru: u64,
    samples: u32,
    first_seen_ms: u64,
    known_pairs: [u64; 4],
    known_sites: u64,
    known_res: [[u64; RES_BITS / 64]; 2],
    res_inserts: u32,
    hours: [u16; 24],
    off_hours: f32,
    novel: f32,
    novel_at_ms: u64,
    base: [Baseline; NF],
    last_alert_ms: Option<u64>,
}

/// The detector: per-principal state, population baselines and the trees.
pub struct Detector {
    cfg: DetectorConfig,
    seed: u64,
    slot_ms: u64,
    principals: HashMap<Arc<str>, Principal>,
    by_recency: BTreeMap<u64, Arc<str>>,
    tick: u64,
    population: [[Baseline; NF]; TIERS],
    population_n: [u64; TIERS],
    trees: HalfSpaceTrees,
    evicted: u64,
    summaries: Option<summary::Summarizer>,
    /// The time of the first decision seen: the learning period runs from
    /// there ([`DetectorConfig::learning_ms`]).
    started_ms: Option<u64>,
}

/// The layout of [`Detector::save`]'s bytes; a change of layout bumps it.
const SAVED_VERSION: u32 = 2;

#[derive(Serialize)]
struct SavedRef<'a> {
    version: u32,
    seed: u64,
    window_ms: u64,
    hst: &'a HstConfig,
    tick: u64,
    evicted: u64,
    population: &'a [[Baseline; NF]; TIERS],
    population_n: &'a [u64; TIERS],
    trees: &'a HalfSpaceTrees,
    principals: Vec<(&'a str, &'a Principal)>,
    started_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Saved {
    version: u32,
    seed: u64,
    window_ms: u64,
    hst: HstConfig,
    tick: u64,
    evicted: u64,
    population: [[Baseline; NF]; TIERS],
    population_n: [u64; TIERS],
    trees: HalfSpaceTrees,
    principals: Vec<(String, Principal)>,
    started_ms: Option<u64>,
}

/// Version 1 of the saved state: [`Saved`] without the start of the
/// learning period (a detector saved so is past it).
#[derive(Deserialize)]
struct SavedV1 {
    version: u32,
    seed: u64,
    window_ms: u64,
    hst: HstConfig,
    tick: u64,
    evicted: u64,
    population: [[Baseline; NF]; TIERS],
    population_n: [u64; TIERS],
    trees: HalfSpaceTrees,
    principals: Vec<(String, Principal)>,
}

impl From<SavedV1> for Saved {
    fn from(v: SavedV1) -> Saved {
        Saved {
            version: v.version,
            seed: v.seed,
            window_ms: v.window_ms,
            hst: v.hst,
            tick: v.tick,
            evicted: v.evicted,
            population: v.population,
            population_n: v.population_n,
            trees: v.trees,
            principals: v.principals,
            started_ms: Some(0),
        }
    }
}

/// FNV-1a, then a SplitMix finalizer: a stable hash (the same on every run
/// and platform), salted by the seed.
fn hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    hst::SplitMix(h).next()
}

fn resource_type(uid: &str) -> &str {
    uid.split_once("::").map_or(uid, |(t, _)| t)
}

/// Linear counting: the distinct items behind `set` bits of `bits`.
fn linear_count(set: u32, bits: u32) -> f64 {
    let zero = bits - set;
    if zero == 0 {
        // Saturated: report the estimate at one zero bit.
        return f64::from(bits) * f64::from(bits).ln();
    }
    f64::from(bits) * (f64::from(bits) / f64::from(zero)).ln()
}

fn hour_of(at_ms: u64) -> usize {
    ((at_ms / 3_600_000) % 24) as usize
}

impl Principal {
    fn new(population: &[Baseline; NF]) -> Self {
        Principal {
            slots: [Slot::default(); SLOTS],
            cur: 0,
            lru: 0,
            samples: 0,
            first_seen_ms: 0,
            known_pairs: [0; 4],
            known_sites: 0,
            known_res: [[0; RES_BITS / 64]; 2],
            res_inserts: 0,
            hours: [0; 24],
            off_hours: 0.0,
            novel: 0.0,
            novel_at_ms: 0,
            base: *population,
            last_alert_ms: None,
        }
    }

    fn established(&self, at_ms: u64) -> bool {
        self.samples >= ESTABLISHED && at_ms >= self.first_seen_ms.saturating_add(ESTABLISHED_MS)
    }

    fn tier(&self) -> usize {
        ((u64::from(self.samples) + 1).ilog2() as usize).min(TIERS - 1)
    }

    fn novelty_at(&self, at_ms: u64, half_life_ms: u64) -> f64 {
        let dt = at_ms.saturating_sub(self.novel_at_ms) as f64;
        f64::from(self.novel) * (-dt / half_life_ms as f64 * std::f64::consts::LN_2).exp()
    }

    /// The features over the window ending with slot `cur`, at `at_ms`.
    fn features(&self, at_ms: u64, half_life_ms: u64) -> [f64; NF] {
        let mut count = 0u32;
        let mut denies = 0u32;
        let mut tokens = 0u32;
        let mut pairs = 0u32;
        let mut sites = 0u32;
        let mut res = [0u64; 2];
        let mut acts = 0u64;
        for s in &self.slots {
            if s.idx + (SLOTS as u64) > self.cur && s.idx <= self.cur && s.count > 0 {
                count += s.count;
                denies += s.denies;
                tokens += s.token_failed;
                pairs += u32::from(s.new_pairs);
                sites += u32::from(s.new_sites);
                res[0] |= s.resources[0];
                res[1] |= s.resources[1];
                acts |= s.actions;
            }
        }
        let res_set = res[0].count_ones() + res[1].count_ones();
        [
            f64::from(count),
            f64::from(denies) / (f64::from(count) + 4.0),
            linear_count(res_set, 128).min(f64::from(count)),
            linear_count(acts.count_ones(), 64).min(f64::from(count)),
            f64::from(pairs),
            f64::from(sites),
            f64::from(tokens),
            self.novelty_at(at_ms, half_life_ms),
            f64::from(self.off_hours),
        ]
    }
}

/// The blended baseline and z-scores of a feature vector.
struct Scored {
    baseline: [f64; NF],
    z: [f64; NF],
}

impl Detector {
    /// A detector with no history. `seed` draws the trees (and salts the
    /// hashes), so the same seed and events give the same alerts.
    pub fn new(cfg: DetectorConfig, seed: u64) -> Self {
        let trees = HalfSpaceTrees::new(cfg.hst.clone(), NF, seed);
        let slot_ms = (cfg.window_ms / SLOTS as u64).max(1);
        Detector {
            cfg,
            seed,
            slot_ms,
            principals: HashMap::new(),
            by_recency: BTreeMap::new(),
            tick: 0,
            population: [[Baseline::default(); NF]; TIERS],
            population_n: [0; TIERS],
            trees,
            evicted: 0,
            summaries: None,
            started_ms: None,
        }
    }

    /// From now on, also keeps what [`Detector::summarize`] publishes:
    /// per slot, per principal, counts and sketches for the mesh
    /// ([`summary`]). Off by default: a node alone needs none.
    pub fn enable_summaries(&mut self) {
        self.summaries.get_or_insert_with(summary::Summarizer::new);
    }

    /// The summaries of the slots that ended by `now_ms` and were not
    /// summarized yet, as `node` will sign and publish them (none when
    /// summaries are not enabled, or nothing was decided).
    pub fn summarize(
        &mut self,
        node: weft_protocol::identity::NodeId,
        now_ms: u64,
    ) -> Vec<weft_protocol::summary::Summary> {
        self.summaries
            .as_mut()
            .map(|s| s.summarize(node, now_ms))
            .unwrap_or_default()
    }

    /// Whether `principal` made a request here within the window before
    /// `at_ms`.
    pub fn served(&self, principal: &str, at_ms: u64) -> bool {
        self.principals
            .get(principal)
            .is_some_and(|p| (p.cur + SLOTS as u64) * self.slot_ms > at_ms)
    }

    /// The mesh view's alerts at `now_ms` on the principals this node
    /// served in the window ([`mesh::MeshView::check`]): scored on what the
    /// whole mesh saw of them. They have their own cool-down, in the view,
    /// so the local alerts stay what they are without the mesh.
    pub fn check_mesh(&self, mesh: &mut mesh::MeshView, now_ms: u64) -> Vec<Alert> {
        mesh.check(now_ms, |p| self.served(p, now_ms))
    }

    /// Whether the detector is still in its learning period at `at_ms`
    /// ([`DetectorConfig::learning_ms`] from its first decision).
    pub fn learning(&self, at_ms: u64) -> bool {
        self.started_ms
            .is_none_or(|t| at_ms < t.saturating_add(self.cfg.learning_ms))
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Principals tracked now.
    pub fn tracked(&self) -> usize {
        self.principals.len()
    }

    /// Principals evicted so far to stay within the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// An estimate of the bytes held: per principal its fixed state, its key
    /// (twice: the map and the recency index share one allocation) and the
    /// maps' overhead, plus the trees.
    pub fn memory_bytes_estimate(&self) -> usize {
        let per = std::mem::size_of::<Principal>() + std::mem::size_of::<Arc<str>>() * 2 + 48;
        let keys: usize = self.principals.keys().map(|k| k.len() + 16).sum();
        self.principals.len() * per + keys + self.trees.memory_bytes()
    }

    /// The detector's whole state (principals, baselines, trees, seed) as
    /// bytes, for [`Detector::restore`]: a restarted node carries on where
    /// it stopped instead of learning its baselines again.
    pub fn save(&self) -> Vec<u8> {
        let mut principals: Vec<(&str, &Principal)> = self
            .principals
            .iter()
            .map(|(k, p)| (k.as_ref(), p))
            .collect();
        principals.sort_by_key(|(_, p)| p.lru);
        let saved = SavedRef {
            version: SAVED_VERSION,
            seed: self.seed,
            window_ms: self.cfg.window_ms,
            hst: &self.cfg.hst,
            tick: self.tick,
            evicted: self.evicted,
            population: &self.population,
            population_n: &self.population_n,
            trees: &self.trees,
            principals,
            started_ms: self.started_ms,
        };
        postcard::to_allocvec(&saved).unwrap_or_default()
    }

    /// A detector from [`Detector::save`]'s bytes, with `cfg`. It goes on
    /// exactly as the saved one would have (same seed, same state). Fails,
    /// with the reason, on bytes that do not decode or were saved under
    /// another window or trees' shape; principals over `cfg`'s cap are
    /// dropped, least recently seen first.
    pub fn restore(cfg: DetectorConfig, bytes: &[u8]) -> Result<Detector, String> {
        let undecodable =
            |e: postcard::Error| format!("the saved detector state does not decode: {e}");
        let version: u32 = postcard::from_bytes(bytes).map_err(undecodable)?;
        let saved: Saved = if version == 1 {
            postcard::from_bytes::<SavedV1>(bytes)
                .map_err(undecodable)?
                .into()
        } else {
            postcard::from_bytes(bytes).map_err(undecodable)?
        };
        if saved.version != SAVED_VERSION && saved.version != 1 {
            return Err(format!(
                "the saved detector state is version {}, this build reads {SAVED_VERSION}",
                saved.version
            ));
        }
        if saved.window_ms != cfg.window_ms || saved.hst != cfg.hst {
            return Err(
                "the saved detector state was made with another window or other trees".into(),
            );
        }
        let mut d = Detector::new(cfg, saved.seed);
        if !saved.trees.fits(&d.cfg.hst, NF) {
            return Err("the saved trees do not match their settings".into());
        }
        d.tick = saved.tick;
        d.evicted = saved.evicted;
        d.population = saved.population;
        d.population_n = saved.population_n;
        d.trees = saved.trees;
        d.started_ms = saved.started_ms;
        let cap = d.cfg.max_principals.max(1);
        let skip = saved.principals.len().saturating_sub(cap);
        d.evicted += skip as u64;
        for (k, p) in saved.principals.into_iter().skip(skip) {
            let k: Arc<str> = Arc::from(k.as_str());
            if d.by_recency.insert(p.lru, k.clone()).is_some() {
                return Err("the saved detector state has two principals at one tick".into());
            }
            d.principals.insert(k, p);
        }
        Ok(d)
    }

    /// Takes one decision into account; returns an alert when it makes the
    /// principal's behaviour anomalous (see the module doc).
    pub fn observe(&mut self, ev: &DecisionEvent) -> Option<Alert> {
        if let Some(s) = &mut self.summaries {
            s.observe(ev);
        }
        let slot = ev.at_ms / self.slot_ms;
        self.tick += 1;
        self.started_ms.get_or_insert(ev.at_ms);
        let key: Arc<str> = match self.principals.get_key_value(ev.principal.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                if self.principals.len() >= self.cfg.max_principals.max(1)
                    && let Some((_, old)) = self.by_recency.pop_first()
                {
                    self.principals.remove(&old);
                    self.evicted += 1;
                }
                let k: Arc<str> = Arc::from(ev.principal.as_str());
                let mut p = Principal::new(&self.population[0]);
                p.cur = slot;
                p.slots[(slot % SLOTS as u64) as usize].idx = slot;
                p.novel_at_ms = ev.at_ms;
                p.first_seen_ms = ev.at_ms;
                p.lru = self.tick;
                self.by_recency.insert(self.tick, k.clone());
                self.principals.insert(k.clone(), p);
                k
            }
        };
        let mut p = self.principals.remove(&key)?;
        self.by_recency.remove(&p.lru);
        p.lru = self.tick;
        self.by_recency.insert(p.lru, key.clone());

        if slot > p.cur {
            self.close_slot(&mut p);
            p.cur = slot;
            let s = &mut p.slots[(slot % SLOTS as u64) as usize];
            *s = Slot {
                idx: slot,
                ..Slot::default()
            };
        }
        self.record(&mut p, ev);
        let alert = self.check(&mut p, ev);
        self.principals.insert(key, p);
        alert
    }

    /// A slot ends: its window becomes one sample for the trees and the
    /// baselines (scored against the baselines before they learn from it).
    fn close_slot(&mut self, p: &mut Principal) {
        let end_ms = (p.cur + 1) * self.slot_ms;
        let x = p.features(end_ms, self.cfg.novelty_half_life_ms);
        let sc = self.score_vector(p, &x, end_ms);
        // The trees learn what clearly ordinary windows look like (a norm
        // under half the alerting one), not those of a principal just
        // alerted on, so an attack in progress, even one that rises slowly,
        // never becomes the reference it is measured by.
        let cooling = p
            .last_alert_ms
            .is_some_and(|t| end_ms < t.saturating_add(self.cfg.cooldown_ms));
        if norm(&sc.z) < self.cfg.min_norm / 2.0 && !cooling {
            self.trees.update(&self.unit(&sc.z));
        }
        let tier = p.tier();
        let n = self.population_n[tier];
        let pop_alpha = (1.0 / (n as f64 + 1.0)).max(self.cfg.population_alpha);
        let own_alpha = (1.0 / (f64::from(p.samples) + 1.0)).max(self.cfg.baseline_alpha);
        let hold_novel = sc.z[NOVEL] > NOVEL_HOLD_Z;
        for i in 0..NF {
            if i == NOVEL && hold_novel {
                continue;
            }
            self.population[tier][i].update(x[i], FLOORS[i], pop_alpha);
            p.base[i].update(x[i], FLOORS[i], own_alpha);
        }
        self.population_n[tier] += 1;
        p.samples = p.samples.saturating_add(1);
    }

    fn record(&mut self, p: &mut Principal, ev: &DecisionEvent) {
        let seed = self.seed;
        // While an alert cools down, what the principal touches is that
        // alert's evidence: it neither counts as new again later nor
        // crowds the principal's own resources out of the filter.
        let cooling = p
            .last_alert_ms
            .is_some_and(|t| ev.at_ms < t.saturating_add(self.cfg.cooldown_ms));
        let i = (p.cur % SLOTS as u64) as usize;
        let hour = hour_of(ev.at_ms);
        let total: u32 = p.hours.iter().map(|h| u32::from(*h)).sum();
        let prob = (f64::from(p.hours[hour]) + 1.0) / (f64::from(total) + 24.0);
        p.off_hours = (1.0 / 24.0 / prob).ln().max(0.0) as f32;
        p.hours[hour] = p.hours[hour].saturating_add(1);
        if total > 50_000 {
            for h in &mut p.hours {
                *h /= 2;
            }
        }

        let s = &mut p.slots[i];
        s.count += 1;
        s.denies += u32::from(!ev.allow);
        s.token_failed += u32::from(ev.token_failed);
        let r = hash(seed, &[&ev.resource]);
        s.resources[(r >> 63) as usize] |= 1 << (r & 63);
        s.actions |= 1 << (hash(seed, &[&ev.action]) & 63);

        let pair = hash(seed, &[&ev.action, resource_type(&ev.resource)]);
        let (b1, b2) = ((pair & 255) as usize, ((pair >> 8) & 255) as usize);
        let known = |bits: &[u64; 4], b: usize| bits[b / 64] & (1 << (b % 64)) != 0;
        if !(known(&p.known_pairs, b1) && known(&p.known_pairs, b2)) {
            s.new_pairs = s.new_pairs.saturating_add(1);
            p.known_pairs[b1 / 64] |= 1 << (b1 % 64);
            p.known_pairs[b2 / 64] |= 1 << (b2 % 64);
        }
        if let Some(site) = &ev.site {
            let b = hash(seed, &[site]) & 63;
            if p.known_sites & (1 << b) == 0 {
                // The first site of a principal is where it lives, not news.
                if p.known_sites != 0 {
                    s.new_sites = s.new_sites.saturating_add(1);
                }
                p.known_sites |= 1 << b;
            }
        }

        let bits: Vec<usize> = (0..3)
            .map(|k| ((r >> (k * 20)) as usize) % RES_BITS)
            .collect();
        let has = |f: &[u64; RES_BITS / 64]| bits.iter().all(|b| f[b / 64] & (1 << (b % 64)) != 0);
        if !cooling && !has(&p.known_res[0]) && !has(&p.known_res[1]) {
            let decayed = p.novelty_at(ev.at_ms, self.cfg.novelty_half_life_ms);
            p.novel = (decayed + 1.0) as f32;
            p.novel_at_ms = ev.at_ms;
            for b in &bits {
                p.known_res[0][b / 64] |= 1 << (b % 64);
            }
            p.res_inserts += 1;
            if p.res_inserts >= RES_ROTATE {
                // Two generations: the older one is forgotten, so the filter
                // never fills up and long-unused resources become new again.
                p.known_res[1] = p.known_res[0];
                p.known_res[0] = [0; RES_BITS / 64];
                p.res_inserts = 0;
            }
        }
    }

    fn score_vector(&self, p: &Principal, x: &[f64; NF], at_ms: u64) -> Scored {
        let established = p.established(at_ms);
        let pop = &self.population[p.tier()];
        let w = f64::from(p.samples) / (f64::from(p.samples) + self.cfg.own_weight_samples);
        let mut baseline = [0.0; NF];
        let mut z = [0.0; NF];
        for i in 0..NF {
            let mean = w * f64::from(p.base[i].mean) + (1.0 - w) * f64::from(pop[i].mean);
            let dev = w * f64::from(p.base[i].dev) + (1.0 - w) * f64::from(pop[i].dev);
            baseline[i] = mean;
            z[i] = ((x[i] - mean).max(0.0) / (dev + FLOORS[i])).min(self.cfg.z_cap);
            if i == NOVEL && !established {
                // A young principal is still learning its world: new
                // resources say nothing about it yet.
                z[i] = 0.0;
            }
        }
        Scored { baseline, z }
    }

    fn unit(&self, z: &[f64; NF]) -> [f64; NF] {
        z.map(|v| v / self.cfg.z_cap)
    }

    fn check(&mut self, p: &mut Principal, ev: &DecisionEvent) -> Option<Alert> {
        if p.last_alert_ms
            .is_some_and(|last| ev.at_ms < last.saturating_add(self.cfg.cooldown_ms))
        {
            return None;
        }
        let x = p.features(ev.at_ms, self.cfg.novelty_half_life_ms);
        let sc = self.score_vector(p, &x, ev.at_ms);
        let norm = norm(&sc.z);
        // While the detector learns, the model has no reference for
        // anyone: only the floors alert.
        let learning = self.learning(ev.at_ms);
        let score = if learning {
            0.0
        } else {
            self.trees.score(&self.unit(&sc.z))
        };
        let modelled = !learning && norm >= self.cfg.min_norm && score >= self.cfg.threshold;
        // The floors are looked at only when the model does not alert, so
        // every alert the model raises is the same with or without them.
        let floor = if modelled {
            None
        } else {
            Some(self.cfg.floors.as_ref()?.crossed(&x)?)
        };
        p.last_alert_ms = Some(ev.at_ms);
        let mut alert = self.explain(ev, p, &x, &sc, score);
        if let Some((name, line)) = floor {
            alert.reason = format!(
                "{} crosses an absolute floor, whatever its baseline: {line}",
                ev.principal
            );
            alert.evidence.insert(0, line);
            alert.floor = Some(name.to_string());
        }
        // An alert consumes its evidence: the slow novelty count starts
        // again from the baseline, so the same resources do not alert twice.
        p.novel = sc.baseline[NOVEL] as f32;
        p.novel_at_ms = ev.at_ms;
        Some(alert)
    }

    fn explain(
        &self,
        ev: &DecisionEvent,
        p: &Principal,
        x: &[f64; NF],
        sc: &Scored,
        score: f64,
    ) -> Alert {
        let total: f64 =
            sc.z.iter()
                .map(|z| z * z)
                .sum::<f64>()
                .max(f64::MIN_POSITIVE);
        let mut order: Vec<usize> = (0..NF).collect();
        order.sort_by(|a, b| sc.z[*b].total_cmp(&sc.z[*a]).then(a.cmp(b)));
        // The driving feature is always listed: an alert from a floor may
        // come with every z-score at 0 (a principal whose baseline is as
        // busy as the floor).
        let features: Vec<FeatureContribution> = order
            .iter()
            .map(|&i| FeatureContribution {
                name: FEATURES[i].to_string(),
                value: round3(x[i]),
                baseline: round3(sc.baseline[i]),
                z: round3(sc.z[i]),
                contribution: round3(sc.z[i] * sc.z[i] / total),
            })
            .enumerate()
            .filter(|(k, f)| *k == 0 || f.contribution >= 0.01)
            .map(|(_, f)| f)
            .collect();
        let window_start_ms = (p.cur + 1).saturating_sub(SLOTS as u64) * self.slot_ms;
        let evidence: Vec<String> = features
            .iter()
            .filter(|f| f.contribution >= 0.05)
            .map(|f| {
                format!(
                    "{}: {} in the window, usually {} (z {:.1})",
                    f.name,
                    fmt_num(f.value),
                    fmt_num(f.baseline),
                    f.z
                )
            })
            .collect();
        let top = &features[0];
        let reason = format!(
            "{} behaves unlike its baseline: {} {} against a usual {} (score {:.2})",
            ev.principal,
            top.name.replace('_', " "),
            fmt_num(top.value),
            fmt_num(top.baseline),
            score
        );
        Alert {
            principal: ev.principal.clone(),
            score: round3(score),
            at_ms: ev.at_ms,
            features,
            window_start_ms,
            window_end_ms: ev.at_ms,
            evidence,
            reason,
            floor: None,
            signal: None,
        }
    }
}

/// The Euclidean norm of the z-scores of the features that can drive an
/// alert (all but `off_hours`).
fn norm(z: &[f64; NF]) -> f64 {
    z.iter()
        .enumerate()
        .filter(|(i, _)| *i != OFF_HOURS)
        .map(|(_, v)| v * v)
        .sum::<f64>()
        .sqrt()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod mesh_tests;
#[cfg(test)]
mod tests;
