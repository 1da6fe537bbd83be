//! The mesh-wide view: what every site saw of a principal in the last
//! minute, merged from the nodes' signed summaries, and the signals that
//! only a view across sites can raise.
//!
//! Each node publishes one [`Summary`] per 10 s slot
//! ([`super::summary`]); a [`MeshView`] takes in the summaries that
//! arrive ([`MeshView::ingest`]: admitted signer, signature, bounds, then
//! the merge) and its own ([`MeshView::ingest_local`]). There is no
//! collector: every node merges what reached it, so during a partition
//! each side scores on the sites it still hears from.
//!
//! # What is kept, and for how long
//! - **The window**: per principal, per slot, per site, one [`Cell`]
//!   (counts and sketches) for the last [`MeshConfig::window_slots`] slots
//!   (60 s) and the current one. A summary of a slot already out of the
//!   window, or more than a minute ahead of the node's clock, is refused.
//!   The same site's report of the same slot twice is merged by the larger
//!   counts and the union of the sketches, so duplicates and the order of
//!   arrival change nothing; reports of different sites add up.
//! - **History**: when a slot leaves the window, each principal in it
//!   leaves a trace in its history: the sites it was seen at, the
//!   (action, resource type) pairs it used (a sketch), the resources it
//!   used (two generations of a sketch, 12 h each), when it was first seen, how many slots it was active in, in
//!   how many of them at two sites or more, its last few first visits to a
//!   site and its new resource bits per 5 minutes over the last 3 hours. At most
//!   [`MeshConfig::max_history`] principals (the least recently seen is
//!   forgotten), at most [`MeshConfig::max_cells`] cells in the window and
//!   [`MeshConfig::max_sites`] sites; past those, a summary is refused
//!   whole, the view unchanged.
//!
//! # Signals
//! Computed from the merged window (all sites' counts added, sketches
//! OR-ed) and the principal's history:
//!
//! | signal | alerts when, in the 60 s window across all sites |
//! |---|---|
//! | `mesh_denies` | the detector's deny floor on the merged counts: 30 denies, at least half of the requests, over 10 distinct resources |
//! | `mesh_resources` | 300 distinct resources (the OR of the sites' sketches) |
//! | `mesh_actions` | 16 distinct actions |
//! | `deny_spread` | denies at 3 sites or more, 10 in all, at least half of the requests |
//! | `first_visits` | first visits to 2 sites or more (sites its history never saw it at) within 15 min, for a principal with a history (30 active slots) |
//! | `new_pair_denies` | 3 denies, at least half of the requests, with an (action, resource type) pair its history never saw at any site, for a principal with a history |
//! | `new_site_pairs` | at a site new to it, with an (action, resource type) pair its history never saw at any site, for a principal with a history |
//! | `impossible_travel` | in two slots, at a site new to it while active at another in the same slot, or at a site new to it and then, in a later slot, back at a site it knows; for a principal with a history that is at two sites in one slot in under 5% of its active slots |
//! | `new_resources` | 14 bits of its resource sketch that its history lacked, set within the last hour at any site, and at least twice as many as in the quieter of the two hours before, for a principal with a history first seen 3 h ago or more |
//!
//! Impossible travel has no geography here: sites are node ids. What is
//! implausible is defined from the principal's own history: someone who is
//! never at two sites within 10 s (a person at a desk, a traveller who
//! moves from one site to another) and now is, at a site it never used,
//! twice within a minute, or goes to a site it never used and then, in a
//! later slot of the window, is back at one it uses (a traveller moves
//! once and stays; an intruder at a new site works while the principal
//! works at home). Roaming staff, who move between their usual
//! sites, and a shared service account, which is at many sites at once
//! all day, have histories that make it plausible.
//!
//! A signal alerts on a principal only at a node that served it in the
//! window (the node that can act on it), at most once per
//! [`MeshConfig::cooldown_ms`]; the local detector's own alerts and
//! cool-down are separate ([`super::Detector::check_mesh`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use thiserror::Error;
use weft_protocol::identity::NodeId;
use weft_protocol::summary::{SignedSummary, Summary, SummaryError};

use super::summary::{Cell, SLOT_MS, distinct, or};
use super::{Alert, FeatureContribution, Floors};

/// Settings of the mesh view.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfig {
    /// Slots in the window. Default 6: the detector's 60 s.
    pub window_slots: u64,
    /// Sites (nodes) heard from at most. Default 256.
    pub max_sites: usize,
    /// Cells (principal, slot, site) in the window at most. Default
    /// 1,000,000: about 80 MB, 60 s of 8 sites of 2,048 principals each
    /// sixty times over.
    pub max_cells: usize,
    /// Principals' histories kept at most. Default 100,000 (as the
    /// detector), about 250 bytes each (650 at most: a principal that
    /// keeps meeting new resources and sites).
    pub max_history: usize,
    /// A summary of a slot starting more than this after the node's clock
    /// is refused. Default 60 s.
    pub max_ahead_ms: u64,
    /// The absolute floors applied to the merged window.
    pub floors: Floors,
    /// `deny_spread`: sites with denies. Default 3.
    pub spread_sites: u32,
    /// `deny_spread`: denies in all. Default 10: a third of the deny floor.
    pub spread_denies: u32,
    /// `first_visits`: first visits. Default 2: a traveller makes one
    /// (and stays), roaming staff move to one site at a time, hours apart.
    pub first_visits: u32,
    /// `first_visits`: within this long. Default 15 min.
    pub first_visit_span_ms: u64,
    /// `impossible_travel`: slots at a new site and another at once.
    /// Default 2.
    pub travel_slots: u32,
    /// `new_site_pairs`: bits of the pair sketch new to the principal
    /// anywhere, with a site new to it. Default 1 (one new pair sets one
    /// or two): a traveller works as usual from its new site,
    /// with its own pairs; an intruder there tends to do what the
    /// principal never did.
    pub new_site_pairs: u32,
    /// `new_pair_denies`: denies in the window, at least half of the
    /// requests, with an (action, resource type) pair its history never
    /// saw at any site. Default 3: a probe is refused three times in its
    /// first seconds, where an ordinary principal with a history uses its
    /// own pairs and is refused a few percent of the time.
    pub new_pair_denies: u32,
    /// Active slots before a principal's history speaks for it. Default 30.
    pub history_slots: u32,
    /// `new_resources`: bits of the resource sketch new to the principal's
    /// history, anywhere in the mesh, within
    /// [`MeshConfig::new_resources_span_ms`]. Default 14: about 18 new
    /// resources (some fall on bits the principal already set), where the
    /// busiest ordinary user of the traces meets about 4 in an hour; and
    /// twice as many as in the quieter of the two spans before, since a principal still
    /// meeting its working set meets as many hour after hour.
    pub new_resources: u32,
    /// `new_resources`: the span. Default 1 h.
    pub new_resources_span_ms: u64,
    /// `new_resources`: how long since the principal was first seen before
    /// its history speaks for it. Default 3 h: a new employee meets its
    /// working set in its first hours.
    pub new_resources_age_ms: u64,
    /// After a mesh alert on a principal, no other this long. Default
    /// 15 min, as the detector.
    pub cooldown_ms: u64,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            window_slots: 6,
            max_sites: 256,
            max_cells: 1_000_000,
            max_history: 100_000,
            max_ahead_ms: 60_000,
            floors: Floors::default(),
            spread_sites: 3,
            spread_denies: 10,
            first_visits: 2,
            first_visit_span_ms: 15 * 60_000,
            travel_slots: 2,
            new_site_pairs: 1,
            new_pair_denies: 3,
            history_slots: 30,
            new_resources: 14,
            new_resources_span_ms: 3_600_000,
            new_resources_age_ms: 3 * 3_600_000,
            cooldown_ms: 15 * 60_000,
        }
    }
}

/// Why a summary was not merged; the view is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refused {
    /// It does not decode, verify or keep its bounds, or its node is not admitted.
    #[error("{0}")]
    Summary(#[from] SummaryError),
    /// Its slot has left the window.
    #[error("the detection summary of the slot at {0} ms is older than the window")]
    Stale(u64),
    /// Its slot starts too far after the node's clock.
    #[error("the detection summary of the slot at {0} ms is dated ahead of this node's clock")]
    Ahead(u64),
    /// Its slot is not the mesh's slot length.
    #[error("the detection summary's slot is {0} ms, not {SLOT_MS}")]
    SlotLength(u32),
    /// The view holds as many sites or cells as it may.
    #[error("the mesh view is full ({0})")]
    Full(&'static str),
}

/// Slots after which the newer resource generation becomes the older:
/// 12 h, a day's work in each, so what a principal used yesterday is
/// known today. A flood of resources fills the sketch (then nothing reads
/// as new until it has rotated out) rather than pushing out what the
/// principal uses.
const ROTATE_SLOTS: u64 = 12 * 360;

/// Slots per bucket of a history's counts of new resource bits: 5 min.
const NOVEL_BUCKET_SLOTS: u64 = 30;

/// A principal's new resource bits, counted per 5-minute bucket over the
/// last three spans ([`MeshConfig::new_resources_span_ms`]): exact counts
/// whatever the pace, in a few bytes a bucket.
#[derive(Clone, Debug, Default)]
struct Novel {
    /// (bucket, bits) from the oldest, only buckets with bits: at most
    /// three spans' worth, 8 bytes each.
    buckets: std::collections::VecDeque<(u32, u16)>,
}

impl Novel {
    fn add(&mut self, slot: u64, bits: u32) {
        let b = (slot / NOVEL_BUCKET_SLOTS) as u32;
        let bits = u16::try_from(bits).unwrap_or(u16::MAX);
        match self.buckets.back_mut() {
            Some((last, n)) if *last == b => *n = n.saturating_add(bits),
            _ => self.buckets.push_back((b, bits)),
        }
    }

    /// Forgets the buckets older than three spans of `span_slots` before `slot`.
    fn expire(&mut self, slot: u64, span_slots: u64) {
        let (now, span) = (slot / NOVEL_BUCKET_SLOTS, span_buckets(span_slots));
        while self
            .buckets
            .front()
            .is_some_and(|(b, _)| u64::from(*b) + 3 * span <= now)
        {
            self.buckets.pop_front();
        }
    }

    /// Bits in the span ending with `slot`'s bucket (`ago` 0), or in the
    /// span `ago` spans before it.
    fn in_span(&self, slot: u64, span_slots: u64, ago: u64) -> usize {
        let (now, span) = (slot / NOVEL_BUCKET_SLOTS, span_buckets(span_slots));
        let hi = now.saturating_sub(ago * span);
        let lo = (now + 1).saturating_sub((ago + 1) * span);
        self.buckets
            .iter()
            .filter(|(b, _)| (lo..=hi).contains(&u64::from(*b)))
            .map(|(_, n)| usize::from(*n))
            .sum()
    }

    fn clear(&mut self) {
        self.buckets.clear();
    }
}

fn span_buckets(span_slots: u64) -> u64 {
    span_slots.div_ceil(NOVEL_BUCKET_SLOTS).max(1)
}

#[derive(Clone, Debug, Default)]
struct History {
    known_sites: BTreeSet<u16>,
    known_pairs: [u64; 4],
    /// The resources it used: two generations of the sketch (the newer
    /// one is started afresh every [`ROTATE_SLOTS`]).
    known_resources: [[u64; 4]; 2],
    /// The slot the newer generation started in.
    generation_slot: u64,
    /// Its new resource bits per 5-minute bucket, over three spans.
    novel: Novel,

    /// The slot it was first seen in.
    first_slot: Option<u64>,
    active_slots: u32,
    multi_site_slots: u32,
    /// The slots of the last first visits (at most 8).
    first_visits: Vec<u64>,
    last_alert_ms: Option<u64>,
    lru: u64,
}

/// What the whole mesh saw of one principal in the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshWindow {
    /// Counts added up and sketches OR-ed over sites and slots.
    pub total: Cell,
    /// Sites the principal was active at.
    pub sites: usize,
    /// Sites with at least one deny.
    pub deny_sites: usize,
    /// Sites new to its history, in the window, plus its recent first
    /// visits in its history.
    pub first_visits: usize,
    /// Slots in which it was at a new site and at another.
    pub travel_slots: usize,
    /// Whether, after its first slot at a site new to it in the window, it
    /// was at a site it knows in a later slot: back and forth.
    pub returned: bool,
    /// Sites in the window new to its history.
    pub new_sites: usize,
    /// Bits of the window's (action, resource type) pair sketch its history
    /// lacks: at least one when a pair is new to it.
    pub new_pairs: usize,
    /// Whether its history speaks for it (see [`MeshConfig::history_slots`]).
    pub established: bool,
    /// Its share of active slots at two sites or more, in its history.
    pub multi_site_share: f64,
    /// Bits of its resource sketch new to its history within the span
    /// ([`MeshConfig::new_resources_span_ms`]), the window's included,
    /// those of an alert's cool-down left out; 0 until its history is old
    /// enough ([`MeshConfig::new_resources_age_ms`]).
    pub new_resources: usize,
    /// The same over the span before, or over the span before that when
    /// it had fewer: a principal still meeting its working set meets new
    /// resources at much the same pace hour after hour, and a rise over
    /// hours (low and slow) is measured against the quieter of the two.
    pub new_resources_before: usize,
}

/// What [`MeshView::observe_beside`] made of a decision.
#[derive(Debug)]
pub struct Observed {
    /// The node's own detector's alert, unless the view explained it.
    pub local: Option<Alert>,
    /// Whether the view explained the local alert away.
    pub explained: bool,
    /// The view's own alert on the decision's principal.
    pub across: Option<Alert>,
}

/// The merged summaries of the mesh for the current window, and the
/// principals' histories.
#[derive(Debug)]
pub struct MeshView {
    cfg: MeshConfig,
    sites: BTreeMap<NodeId, u16>,
    now_slot: u64,
    live: HashMap<Arc<str>, BTreeMap<(u64, u16), Cell>>,
    by_slot: BTreeMap<u64, BTreeSet<Arc<str>>>,
    cells: usize,
    history: HashMap<Arc<str>, History>,
    lru: BTreeMap<u64, Arc<str>>,
    tick: u64,
    dirty: BTreeSet<Arc<str>>,
}

impl MeshView {
    /// An empty view.
    pub fn new(cfg: MeshConfig) -> Self {
        MeshView {
            cfg,
            sites: BTreeMap::new(),
            now_slot: 0,
            live: HashMap::new(),
            by_slot: BTreeMap::new(),
            cells: 0,
            history: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            dirty: BTreeSet::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// Cells in the window.
    pub fn cells(&self) -> usize {
        self.cells
    }

    /// Sites heard from.
    pub fn sites(&self) -> usize {
        self.sites.len()
    }

    /// Principals with a history.
    pub fn histories(&self) -> usize {
        self.history.len()
    }

    /// A gossiped summary, the whole way in: the signer must be `admitted`
    /// (asked first, before any signature is checked), the signature
    /// verify, the body keep its bounds, its slot be in the window. On
    /// `Err` the view is unchanged. Returns the principals merged.
    pub fn ingest(
        &mut self,
        signed: &SignedSummary,
        admitted: impl Fn(&NodeId) -> bool,
    ) -> Result<usize, Refused> {
        if !admitted(&signed.node) {
            return Err(SummaryError::NotAdmitted(Box::new(signed.node)).into());
        }
        let s = signed.verify()?;
        self.merge(&s)
    }

    /// [`MeshView::ingest`] from the bytes as gossiped, refused on their
    /// size before anything is decoded.
    pub fn ingest_bytes(
        &mut self,
        bytes: &[u8],
        admitted: impl Fn(&NodeId) -> bool,
    ) -> Result<usize, Refused> {
        let signed = SignedSummary::from_bytes(bytes)?;
        self.ingest(&signed, admitted)
    }

    /// This node's own summary, which it made and needs not verify.
    pub fn ingest_local(&mut self, s: &Summary) -> Result<usize, Refused> {
        s.check()?;
        self.merge(s)
    }

    fn merge(&mut self, s: &Summary) -> Result<usize, Refused> {
        if u64::from(s.slot_ms) != SLOT_MS {
            return Err(Refused::SlotLength(s.slot_ms));
        }
        let slot = s.slot_start_ms / SLOT_MS;
        if slot + self.cfg.window_slots < self.now_slot {
            return Err(Refused::Stale(s.slot_start_ms));
        }
        if slot > self.now_slot + self.cfg.max_ahead_ms / SLOT_MS {
            return Err(Refused::Ahead(s.slot_start_ms));
        }
        let site = match self.sites.get(&s.node) {
            Some(i) => *i,
            None => {
                if self.sites.len() >= self.cfg.max_sites.min(usize::from(u16::MAX)) {
                    return Err(Refused::Full("sites"));
                }
                self.sites.len() as u16
            }
        };
        let new_cells = s
            .principals
            .iter()
            .filter(|p| {
                self.live
                    .get(p.principal.as_str())
                    .is_none_or(|m| !m.contains_key(&(slot, site)))
            })
            .count();
        if self.cells + new_cells > self.cfg.max_cells {
            return Err(Refused::Full("cells"));
        }
        self.sites.entry(s.node).or_insert(site);
        let in_slot = self.by_slot.entry(slot).or_default();
        for p in &s.principals {
            let key: Arc<str> = match self.live.get_key_value(p.principal.as_str()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(p.principal.as_str()),
            };
            let cells = self.live.entry(key.clone()).or_default();
            let c = Cell::of(p);
            match cells.get_mut(&(slot, site)) {
                Some(old) => old.join(&c),
                None => {
                    cells.insert((slot, site), c);
                    self.cells += 1;
                }
            }
            in_slot.insert(key.clone());
            self.dirty.insert(key);
        }
        Ok(s.principals.len())
    }

    /// Moves the view's clock to `now_ms`: the slots that leave the window
    /// go into the principals' histories.
    pub fn advance(&mut self, now_ms: u64) {
        let now_slot = now_ms / SLOT_MS;
        if now_slot <= self.now_slot {
            return;
        }
        self.now_slot = now_slot;
        let keep_from = now_slot.saturating_sub(self.cfg.window_slots);
        while let Some(entry) = self.by_slot.first_entry() {
            if *entry.key() >= keep_from {
                break;
            }
            let (slot, principals) = entry.remove_entry();
            for p in principals {
                let Some(cells) = self.live.get_mut(&p) else {
                    continue;
                };
                let mut sites = Vec::new();
                let mut pairs = [0u64; 4];
                let mut resources = [0u64; 4];
                while let Some(e) = cells.first_entry() {
                    if e.key().0 != slot {
                        break;
                    }
                    sites.push(e.key().1);
                    or(&mut pairs, &e.get().pairs);
                    or(&mut resources, &e.get().resources);
                    e.remove();
                    self.cells -= 1;
                }
                if cells.is_empty() {
                    self.live.remove(&p);
                }
                self.remember(&p, slot, &sites, &pairs, &resources);
            }
        }
    }

    fn remember(
        &mut self,
        p: &Arc<str>,
        slot: u64,
        sites: &[u16],
        pairs: &[u64; 4],
        resources: &[u64; 4],
    ) {
        if sites.is_empty() {
            return;
        }
        let cooldown_ms = self.cfg.cooldown_ms;
        let span = self.cfg.new_resources_span_ms / SLOT_MS;
        let h = self.touch(p);
        let had = !h.known_sites.is_empty();
        for s in sites {
            if h.known_sites.insert(*s) && had {
                h.first_visits.push(slot);
                if h.first_visits.len() > 8 {
                    h.first_visits.remove(0);
                }
            }
        }
        or(&mut h.known_pairs, pairs);
        // Resources new to it: counted unless they are the evidence of an
        // alert cooling down, then known either way.
        h.first_slot.get_or_insert(slot);
        let cooling = h
            .last_alert_ms
            .is_some_and(|t| slot * SLOT_MS < t.saturating_add(cooldown_ms));
        h.novel.expire(slot, span);
        if h.active_slots == 0 {
            h.generation_slot = slot;
        } else if slot >= h.generation_slot.saturating_add(ROTATE_SLOTS) {
            h.known_resources[1] = h.known_resources[0];
            h.known_resources[0] = [0; 4];
            h.generation_slot = slot;
        }
        if h.active_slots > 0 && !cooling {
            let new = new_bits(resources, &h.known_resources);
            if new > 0 {
                h.novel.add(slot, new);
            }
        }
        or(&mut h.known_resources[0], resources);
        h.active_slots = h.active_slots.saturating_add(1);
        if sites.len() >= 2 {
            h.multi_site_slots = h.multi_site_slots.saturating_add(1);
        }
    }

    /// Takes one of this node's decisions ([`MeshView::observe_local`])
    /// beside the alert its own detector raised on it, if any, and says
    /// which alerts stand: the local one first, unless the view
    /// [`explains`](MeshView::explains) it, then the view's own.
    pub fn observe_beside(
        &mut self,
        node: NodeId,
        ev: &super::DecisionEvent,
        local: Option<Alert>,
    ) -> Observed {
        let across = self.observe_local(node, ev);
        let explained = local.as_ref().is_some_and(|a| self.explains(a));
        Observed {
            local: local.filter(|_| !explained),
            explained,
            across,
        }
    }

    /// Whether a local alert on `alert.principal` driven by new (action,
    /// resource type) pairs is explained by what the mesh knows: the
    /// principal's history across sites is established and holds every
    /// pair of the window at every site (this node's decisions included,
    /// once [`MeshView::observe_local`] has them). A site's detector meets
    /// a travelling principal's usual pairs as new; the mesh does not. An
    /// alert over a floor, or driven by anything else, is never explained.
    pub fn explains(&self, alert: &Alert) -> bool {
        if alert.floor.is_some()
            || alert.signal.is_some()
            || alert.features.first().is_none_or(|f| f.name != "new_pairs")
        {
            return false;
        }
        let w = self.window(&alert.principal);
        w.established && w.new_pairs == 0 && w.total.requests > 0
    }

    /// What the mesh saw of `principal` in the window.
    pub fn window(&self, principal: &str) -> MeshWindow {
        let mut w = MeshWindow::default();
        let h = self.history.get(principal);
        let established = h.is_some_and(|h| h.active_slots >= self.cfg.history_slots);
        w.established = established;
        w.multi_site_share = h.map_or(0.0, |h| {
            f64::from(h.multi_site_slots) / f64::from(h.active_slots.max(1))
        });
        let Some(cells) = self.live.get(principal) else {
            return w;
        };
        let known = |s: u16| h.is_some_and(|h| h.known_sites.contains(&s));
        let mut sites: BTreeMap<u16, u32> = BTreeMap::new();
        let mut by_slot: BTreeMap<u64, Vec<u16>> = BTreeMap::new();
        // The window's resources, but those of an alert's cool-down.
        let quiet_from = h
            .and_then(|h| h.last_alert_ms)
            .map_or(0, |t| t.saturating_add(self.cfg.cooldown_ms) / SLOT_MS);
        let mut resources = [0u64; 4];
        for ((slot, site), c) in cells {
            if *slot >= quiet_from {
                or(&mut resources, &c.resources);
            }
            w.total.add_cell(c);
            *sites.entry(*site).or_default() += c.denies;
            by_slot.entry(*slot).or_default().push(*site);
        }
        w.sites = sites.len();
        w.deny_sites = sites.values().filter(|d| **d > 0).count();
        if established {
            let span_slots = self.cfg.first_visit_span_ms / SLOT_MS;
            let recent = h.map_or(0, |h| {
                h.first_visits
                    .iter()
                    .filter(|s| **s + span_slots >= self.now_slot)
                    .count()
            });
            w.new_sites = sites.keys().filter(|s| !known(**s)).count();
            w.first_visits = recent + w.new_sites;
            if let Some(h) = h {
                w.new_pairs = w
                    .total
                    .pairs
                    .iter()
                    .zip(&h.known_pairs)
                    .map(|(x, k)| (x & !k).count_ones() as usize)
                    .sum();
            }
            w.travel_slots = by_slot
                .values()
                .filter(|ss| ss.len() >= 2 && ss.iter().any(|s| !known(*s)))
                .count();
            let first_new = by_slot
                .iter()
                .find(|(_, ss)| ss.iter().any(|s| !known(*s)))
                .map(|(slot, _)| *slot);
            w.returned = first_new.is_some_and(|f| {
                by_slot
                    .range(f + 1..)
                    .any(|(_, ss)| ss.iter().any(|s| known(*s)))
            });
        }
        let aged = |h: &History| {
            h.first_slot.is_some_and(|f| {
                self.now_slot >= f.saturating_add(self.cfg.new_resources_age_ms / SLOT_MS)
            })
        };
        if let Some(h) = h
            && established
            && aged(h)
        {
            let span = self.cfg.new_resources_span_ms / SLOT_MS;
            let recent = h.novel.in_span(self.now_slot, span, 0);
            w.new_resources = recent + new_bits(&resources, &h.known_resources) as usize;
            w.new_resources_before = h.novel.in_span(self.now_slot, span, 1);
            // A rise that takes hours (low and slow) is in the span before
            // too: the quieter of the two spans before is the reference.
            w.new_resources_before =
                w.new_resources_before
                    .min(h.novel.in_span(self.now_slot, span, 2));
        }
        w
    }

    /// The signal `w` raises, if any, as `(name, evidence line)`.
    fn signal(&self, w: &MeshWindow) -> Option<(&'static str, String)> {
        let c = &w.total;
        let f = &self.cfg.floors;
        let resources = distinct(&c.resources).min(f64::from(c.requests));
        let actions = distinct(&c.actions).min(f64::from(c.requests));
        if c.denies >= f.denies
            && c.denies * 2 >= c.requests
            && resources >= f64::from(f.deny_resources)
        {
            return Some((
                "mesh_denies",
                format!(
                    "{} denies of {} requests over {resources:.0} resources at {} sites in the window (floor {})",
                    c.denies, c.requests, w.sites, f.denies
                ),
            ));
        }
        if resources >= f64::from(f.resources) {
            return Some((
                "mesh_resources",
                format!(
                    "{resources:.0} distinct resources at {} sites in the window (floor {})",
                    w.sites, f.resources
                ),
            ));
        }
        if actions >= f64::from(f.actions) {
            return Some((
                "mesh_actions",
                format!(
                    "{actions:.0} distinct actions at {} sites in the window (floor {})",
                    w.sites, f.actions
                ),
            ));
        }
        if w.deny_sites as u32 >= self.cfg.spread_sites
            && c.denies >= self.cfg.spread_denies
            && c.denies * 2 >= c.requests
        {
            return Some((
                "deny_spread",
                format!(
                    "{} denies of {} requests spread over {} sites in the window",
                    c.denies, c.requests, w.deny_sites
                ),
            ));
        }
        if w.new_pairs > 0 && c.denies >= self.cfg.new_pair_denies && c.denies * 2 >= c.requests {
            return Some((
                "new_pair_denies",
                format!(
                    "{} denies of {} requests, with (action, resource type) pairs it never used ({} new bits of their sketch)",
                    c.denies, c.requests, w.new_pairs
                ),
            ));
        }
        if w.first_visits as u32 >= self.cfg.first_visits {
            return Some((
                "first_visits",
                format!(
                    "first visits to {} sites within {} min",
                    w.first_visits,
                    self.cfg.first_visit_span_ms / 60_000
                ),
            ));
        }
        if w.new_sites >= 1 && w.new_pairs as u32 >= self.cfg.new_site_pairs {
            return Some((
                "new_site_pairs",
                format!(
                    "at {} site(s) it never used, with (action, resource type) pairs it never used anywhere ({} new bits of their sketch)",
                    w.new_sites, w.new_pairs
                ),
            ));
        }
        if w.new_resources as u32 >= self.cfg.new_resources
            && w.new_resources >= 2 * w.new_resources_before
        {
            return Some((
                "new_resources",
                format!(
                    "{} bits of its resource sketch new to it across the mesh within {} min, {} in the quieter of the two {} min spans before (signal at {}, and twice that)",
                    w.new_resources,
                    self.cfg.new_resources_span_ms / 60_000,
                    w.new_resources_before,
                    self.cfg.new_resources_span_ms / 60_000,
                    self.cfg.new_resources
                ),
            ));
        }
        if w.returned && w.multi_site_share < 0.05 {
            return Some((
                "impossible_travel",
                format!(
                    "at a site it never used, then back at one it uses, within the window; at two sites at once in {:.1}% of its history",
                    w.multi_site_share * 100.0
                ),
            ));
        }
        if w.travel_slots as u32 >= self.cfg.travel_slots && w.multi_site_share < 0.05 {
            return Some((
                "impossible_travel",
                format!(
                    "at a site it never used while at another, in {} slots of 10 s; at two sites at once in {:.1}% of its history",
                    w.travel_slots,
                    w.multi_site_share * 100.0
                ),
            ));
        }
        None
    }

    /// The alerts of the principals merged since the last call that
    /// `served` says this node served in the window, at `now_ms`: each
    /// signal of the table in the module doc, at most one per principal per
    /// cool-down.
    pub fn check(&mut self, now_ms: u64, served: impl Fn(&str) -> bool) -> Vec<Alert> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter(|p| served(p))
            .filter_map(|p| self.check_one(&p, now_ms))
            .collect()
    }

    /// An alert on `principal` at `at_ms` raised elsewhere: by this node's
    /// detector, or at another node (its quarantine order, arriving). The
    /// view treats it as its own: its cool-down starts, and the new
    /// resources the principal met, the alert's evidence, are consumed, so
    /// that the principal's return to ordinary work at this node does not
    /// alert on what an attack touched at another.
    pub fn note_alert(&mut self, principal: &str, at_ms: u64) {
        let key: Arc<str> = match self.history.get_key_value(principal) {
            Some((k, _)) => k.clone(),
            None => Arc::from(principal),
        };
        let h = self.touch(&key);
        h.first_slot.get_or_insert(at_ms / SLOT_MS);
        if h.last_alert_ms.is_none_or(|t| t < at_ms) {
            h.last_alert_ms = Some(at_ms);
        }
        h.novel.clear();
    }

    /// `p`'s history, made the most recently used (a new one evicts the
    /// least recently used at the bound).
    fn touch(&mut self, p: &Arc<str>) -> &mut History {
        self.tick += 1;
        if !self.history.contains_key(p)
            && self.history.len() >= self.cfg.max_history.max(1)
            && let Some((_, old)) = self.lru.pop_first()
        {
            self.history.remove(&old);
        }
        let h = self.history.entry(p.clone()).or_default();
        self.lru.remove(&h.lru);
        h.lru = self.tick;
        self.lru.insert(self.tick, p.clone());
        h
    }

    /// A decision this node just made, merged at once into its own cell of
    /// the slot (the node's summary of the slot, merged when the slot ends,
    /// holds it too: the larger counts win, so nothing counts twice), and
    /// its principal checked on the spot: a signal needs not wait for the
    /// slot's end when this node's own decision completes it. `node` is
    /// this node's id, as its summaries carry it.
    pub fn observe_local(&mut self, node: NodeId, ev: &super::DecisionEvent) -> Option<Alert> {
        self.advance(ev.at_ms);
        let slot = ev.at_ms / SLOT_MS;
        let site = match self.sites.get(&node) {
            Some(i) => *i,
            None => {
                if self.sites.len() >= self.cfg.max_sites.min(usize::from(u16::MAX)) {
                    return None;
                }
                let i = self.sites.len() as u16;
                self.sites.insert(node, i);
                i
            }
        };
        let key: Arc<str> = match self.live.get_key_value(ev.principal.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(ev.principal.as_str()),
        };
        let cells = self.live.entry(key.clone()).or_default();
        match cells.get_mut(&(slot, site)) {
            Some(c) => c.add(ev),
            None => {
                if self.cells >= self.cfg.max_cells {
                    if cells.is_empty() {
                        self.live.remove(&key);
                    }
                    return None;
                }
                let mut c = Cell::default();
                c.add(ev);
                cells.insert((slot, site), c);
                self.cells += 1;
            }
        }
        self.by_slot.entry(slot).or_default().insert(key.clone());
        self.check_one(&key, ev.at_ms)
    }

    fn check_one(&mut self, p: &Arc<str>, now_ms: u64) -> Option<Alert> {
        let cooling = self
            .history
            .get(p)
            .and_then(|h| h.last_alert_ms)
            .is_some_and(|t| now_ms < t.saturating_add(self.cfg.cooldown_ms));
        if cooling {
            return None;
        }
        let w = self.window(p);
        let (name, line) = self.signal(&w)?;
        let h = self.touch(p);
        h.first_slot.get_or_insert(now_ms / SLOT_MS);
        h.last_alert_ms = Some(now_ms);
        // An alert consumes its evidence: the new resources start again.
        h.novel.clear();
        Some(self.explain(p, now_ms, &w, name, line))
    }

    fn explain(&self, p: &str, now_ms: u64, w: &MeshWindow, name: &str, line: String) -> Alert {
        let c = &w.total;
        let feature = |n: &str, v: f64| FeatureContribution {
            name: n.into(),
            value: (v * 1000.0).round() / 1000.0,
            baseline: 0.0,
            z: 0.0,
            contribution: 0.0,
        };
        Alert {
            principal: p.to_string(),
            score: 1.0,
            at_ms: now_ms,
            features: vec![
                feature("mesh_requests", f64::from(c.requests)),
                feature("mesh_denies", f64::from(c.denies)),
                feature("mesh_token_failures", f64::from(c.token_failures)),
                feature("mesh_distinct_resources", distinct(&c.resources)),
                feature("mesh_distinct_actions", distinct(&c.actions)),
                feature("mesh_sites", w.sites as f64),
                feature("mesh_first_visits", w.first_visits as f64),
                feature("mesh_new_pairs", w.new_pairs as f64),
                feature("mesh_new_resources", w.new_resources as f64),
            ],
            window_start_ms: self
                .now_slot
                .saturating_sub(self.cfg.window_slots)
                .saturating_mul(SLOT_MS),
            window_end_ms: now_ms,
            evidence: vec![line.clone()],
            reason: format!("{p} across the mesh ({name}): {line}"),
            floor: None,
            signal: Some(name.to_string()),
        }
    }
}

/// Bits of `x` in neither generation of `known`.
fn new_bits(x: &[u64; 4], known: &[[u64; 4]; 2]) -> u32 {
    x.iter()
        .zip(known[0].iter().zip(&known[1]))
        .map(|(x, (a, b))| (x & !(a | b)).count_ones())
        .sum()
}

/// Merges two sketches: their union. Commutative, associative and
/// idempotent (the property tests check it).
pub fn merge_sketch<const W: usize>(a: &[u64; W], b: &[u64; W]) -> [u64; W] {
    let mut out = *a;
    or(&mut out, b);
    out
}
