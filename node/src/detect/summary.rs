//! Building a node's detection summaries: per slot, per principal, what
//! this node decided (pure: no I/O, no clock).
//!
//! A [`Summarizer`] takes every decision the detector sees and keeps, for
//! the current slot ([`SLOT_MS`], the detector's 10 s slots), per principal:
//! requests, denies, failed tokens, and the sketches of the resources,
//! actions and (action, resource type) pairs used
//! ([`weft_protocol::summary::sketch_bit`],
//! [`weft_protocol::summary::pair_bits`], the same bits on every node). When a slot has ended, [`Summarizer::summarize`] turns it
//! into a [`Summary`] for the mesh: at most
//! [`weft_protocol::summary::MAX_PRINCIPALS`] principals, the busiest first
//! (denies and failed tokens weigh four requests each, so a quiet prober is
//! not crowded out by busy batch jobs), the rest counted in `dropped`.
//! The node signs it ([`weft_protocol::summary::SignedSummary::sign`]) and
//! publishes it; other nodes merge it into their [`super::mesh::MeshView`].
//!
//! # Cost and what a summary reveals
//! A principal costs its uid (as written, e.g. 15 bytes for `User::"u00042"`
//! with its length), 3 bytes or more of counts and its three sketches: 10
//! bytes for a principal that made one request in the slot, up to 78 for a
//! busy one (a sketch goes dense at 32 bits set). About 28 bytes per
//! principal per slot that it was active in, about 100 for the busiest;
//! each summary adds about 150 (envelopes, node id, slot, signature). A
//! summary reveals, to every admitted node: which principals this node
//! served in the slot, how many requests, denies and failed tokens each
//! had, and which of 256 (resources), 64 (actions) and 256 ((action,
//! resource type) pairs) buckets their uids hash to. It does not reveal the
//! resources or actions themselves, the decisions' times within the slot,
//! the policies, the request contexts or the tokens; a node that knows a
//! resource's uid can test whether a principal's bucket for it is set (one
//! in 256 false matches at one resource, more for busy principals).

use std::collections::HashMap;

use weft_protocol::identity::NodeId;
use weft_protocol::summary::{
    ACTION_BITS, MAX_PRINCIPAL_LEN, MAX_PRINCIPALS, PAIR_BITS, PrincipalSummary, RESOURCE_BITS,
    Summary, pair_bits, sketch_bit,
};

use super::DecisionEvent;

/// The length of a summary's slot: the detector's slot, 10 s.
pub const SLOT_MS: u64 = 10_000;

/// How long after a slot's end a node publishes its summary at the
/// earliest: decisions of the slot's last moments are on the detector's
/// queue for at most `crate::respond::DRAIN_EVERY`, so 200 ms finds them
/// all in.
pub const SLOT_GRACE_MS: u64 = 200;

/// How far the nodes' publishing times are spread within a slot. A node
/// publishes [`SLOT_GRACE_MS`] plus its own phase after each slot's end
/// ([`publish_offset_ms`]), so the mesh's summaries, each of which every
/// node verifies and merges, arrive over 4 s rather than all at once:
/// at the same moment on every node, they would take the cores of a
/// whole mesh for that moment and hold back the updates it forwards. Each
/// summary costs the mesh a verification and a merge per node and its
/// gossip copies, so the spread sets how much of the cores the exchange
/// takes while it lasts; it also delays an alert raised at the exchange
/// (BENCHMARKS.md, "Propagation" and "Detection across sites").
pub const PUBLISH_SPREAD_MS: u64 = 4_000;

/// When after each slot's end `node` publishes its summary:
/// [`SLOT_GRACE_MS`] plus a phase below [`PUBLISH_SPREAD_MS`] read from
/// its node id (a public key: its bytes are as good as random), the same
/// at every start.
pub fn publish_offset_ms(node: &NodeId) -> u64 {
    let key = node.public_key();
    let mut head = [0u8; 8];
    head.copy_from_slice(&key.as_bytes()[..8]);
    SLOT_GRACE_MS + u64::from_le_bytes(head) % PUBLISH_SPREAD_MS
}

/// The first time after `now_ms` that is `offset_ms` past a slot's end
/// (Unix ms): when a node with that offset next publishes.
pub fn publish_due_ms(now_ms: u64, offset_ms: u64) -> u64 {
    let offset = offset_ms % SLOT_MS;
    (now_ms.saturating_sub(offset) / SLOT_MS + 1) * SLOT_MS + offset
}

/// Principals one slot accumulates at most; the busiest
/// [`MAX_PRINCIPALS`] of them are published. Past it, a new principal's
/// decisions in the slot are only counted in `dropped`.
pub const MAX_ACCUMULATED: usize = 4 * MAX_PRINCIPALS;

/// One principal's counts and sketches in one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// Requests.
    pub requests: u32,
    /// Denies.
    pub denies: u32,
    /// Failed or expired tokens.
    pub token_failures: u32,
    /// Resources' sketch.
    pub resources: [u64; RESOURCE_BITS / 64],
    /// Actions' sketch.
    pub actions: [u64; ACTION_BITS / 64],
    /// (Action, resource type) pairs' sketch.
    pub pairs: [u64; PAIR_BITS / 64],
}

impl Cell {
    /// Counts one decision.
    pub fn add(&mut self, ev: &DecisionEvent) {
        self.requests = self.requests.saturating_add(1);
        self.denies = self.denies.saturating_add(u32::from(!ev.allow));
        self.token_failures = self
            .token_failures
            .saturating_add(u32::from(ev.token_failed));
        let r = sketch_bit(&ev.resource, RESOURCE_BITS);
        self.resources[r / 64] |= 1 << (r % 64);
        let a = sketch_bit(&ev.action, ACTION_BITS);
        self.actions[a / 64] |= 1 << (a % 64);
        for p in pair_bits(&ev.action, &ev.resource) {
            self.pairs[p / 64] |= 1 << (p % 64);
        }
    }

    /// The same principal, slot and node reported twice: the larger counts
    /// and the union of the sketches (commutative, associative, idempotent).
    pub fn join(&mut self, o: &Cell) {
        self.requests = self.requests.max(o.requests);
        self.denies = self.denies.max(o.denies);
        self.token_failures = self.token_failures.max(o.token_failures);
        or(&mut self.resources, &o.resources);
        or(&mut self.actions, &o.actions);
        or(&mut self.pairs, &o.pairs);
    }

    /// Two nodes' reports added up: the sums of the counts and the union of
    /// the sketches.
    pub fn add_cell(&mut self, o: &Cell) {
        self.requests = self.requests.saturating_add(o.requests);
        self.denies = self.denies.saturating_add(o.denies);
        self.token_failures = self.token_failures.saturating_add(o.token_failures);
        or(&mut self.resources, &o.resources);
        or(&mut self.actions, &o.actions);
        or(&mut self.pairs, &o.pairs);
    }

    fn weight(&self) -> u64 {
        u64::from(self.requests)
            + 4 * u64::from(self.denies)
            + 4 * u64::from(self.token_failures)
            + u64::from(popcount(&self.resources))
    }

    /// From a received summary's line.
    pub fn of(p: &PrincipalSummary) -> Cell {
        Cell {
            requests: p.requests,
            denies: p.denies,
            token_failures: p.token_failures,
            resources: p.resources,
            actions: p.actions,
            pairs: p.pairs,
        }
    }
}

/// `a |= b`, word by word.
pub fn or<const W: usize>(a: &mut [u64; W], b: &[u64; W]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x |= y;
    }
}

/// Bits set.
pub fn popcount(words: &[u64]) -> u32 {
    words.iter().map(|w| w.count_ones()).sum()
}

/// Linear counting: the distinct items behind a bitmap.
pub fn distinct(words: &[u64]) -> f64 {
    let bits = (words.len() * 64) as f64;
    let zero = bits - f64::from(popcount(words));
    if zero <= 0.0 {
        return bits * bits.ln();
    }
    bits * (bits / zero).ln()
}

/// The per-slot accumulator behind a node's summaries.
#[derive(Debug, Default)]
pub struct Summarizer {
    slot: Option<u64>,
    cells: HashMap<String, Cell>,
    overflow: u32,
    ended: Vec<(u64, HashMap<String, Cell>, u32)>,
}

impl Summarizer {
    /// An empty summarizer.
    pub fn new() -> Self {
        Summarizer::default()
    }

    /// Counts one decision in the slot of its time (a decision older than
    /// the current slot counts in the current one).
    pub fn observe(&mut self, ev: &DecisionEvent) {
        let slot = ev.at_ms / SLOT_MS;
        match self.slot {
            Some(cur) if slot > cur => self.end_slot(slot),
            None => self.slot = Some(slot),
            _ => {}
        }
        if let Some(c) = self.cells.get_mut(ev.principal.as_str()) {
            c.add(ev);
        } else if self.cells.len() < MAX_ACCUMULATED {
            let mut c = Cell::default();
            c.add(ev);
            self.cells.insert(ev.principal.clone(), c);
        } else {
            self.overflow = self.overflow.saturating_add(1);
        }
    }

    fn end_slot(&mut self, next: u64) {
        if let Some(cur) = self.slot
            && !self.cells.is_empty()
        {
            let cells = std::mem::take(&mut self.cells);
            self.ended.push((cur, cells, self.overflow));
            // A node that is not asked for its summaries keeps two at most.
            if self.ended.len() > 2 {
                self.ended.remove(0);
            }
        }
        self.overflow = 0;
        self.slot = Some(next);
    }

    /// The summaries of every slot that ended by `now_ms` and was not
    /// summarized yet (usually one; none when the node decided nothing),
    /// for `node` to sign.
    pub fn summarize(&mut self, node: NodeId, now_ms: u64) -> Vec<Summary> {
        if let Some(cur) = self.slot
            && (cur + 1) * SLOT_MS <= now_ms
        {
            self.end_slot(now_ms / SLOT_MS);
        }
        std::mem::take(&mut self.ended)
            .into_iter()
            .map(|(slot, cells, overflow)| summary_of(node, slot, cells, overflow))
            .collect()
    }
}

fn summary_of(node: NodeId, slot: u64, cells: HashMap<String, Cell>, overflow: u32) -> Summary {
    let active = cells.len();
    let mut all: Vec<(String, Cell)> = cells
        .into_iter()
        .filter(|(k, _)| !k.is_empty() && k.len() <= MAX_PRINCIPAL_LEN)
        .collect();
    // Overflowed decisions, and principals whose uid is too long to carry.
    let mut dropped = overflow as usize + (active - all.len());
    if all.len() > MAX_PRINCIPALS {
        all.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then(a.0.cmp(&b.0)));
        dropped += all.len() - MAX_PRINCIPALS;
        all.truncate(MAX_PRINCIPALS);
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Summary {
        node,
        slot_start_ms: slot * SLOT_MS,
        slot_ms: SLOT_MS as u32,
        dropped: u32::try_from(dropped).unwrap_or(u32::MAX),
        principals: all
            .into_iter()
            .map(|(principal, c)| PrincipalSummary {
                principal,
                requests: c.requests,
                denies: c.denies,
                token_failures: c.token_failures,
                resources: c.resources,
                actions: c.actions,
                pairs: c.pairs,
            })
            .collect(),
    }
}
