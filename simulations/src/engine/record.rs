//! What a run records for its report: traffic counters, each update's reach,
//! the observations the invariant checks judge, heals, the trace digest;
//! and the convergence sampling that times each heal.
//!
//! Rules: the trace digest takes every event handled (in `Sim::run`) and
//! every update applied, in order; a Byzantine node's deliveries count in
//! no statistic. Recording draws nothing from the RNG.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::DefaultHasher;

use weft_crdt::ChangeHash;
use weft_protocol::replica::ReplicaState;

use super::Sim;
use super::queue::Ev;
use crate::check::Observations;
use crate::payload::Payload;
use crate::report::Heal;

/// How often (virtual ms) convergence is sampled while it is awaited.
const SAMPLE_MS: u64 = 50;

/// Everything recorded during a run.
pub(super) struct Recorder {
    /// Traffic and fault counters.
    pub(super) count: Counters,
    /// Updates submitted, in order.
    pub(super) updates: Vec<UpdateRec>,
    /// The index in `updates` of each update, by hash.
    pub(super) by_hash: BTreeMap<ChangeHash, usize>,
    /// Each first delivery of an update to an honest node other than its
    /// origin: ms after submission.
    pub(super) delays: Vec<u32>,
    /// The same, for updates submitted with no fault in force.
    pub(super) clean_delays: Vec<u32>,
    /// The ids Byzantine nodes' forgeries would have if applied.
    pub(super) forged: BTreeSet<ChangeHash>,
    /// What the invariant checks judge.
    pub(super) obs: Observations,
    /// Each heal, timed once converged.
    pub(super) heals: Vec<Heal>,
    /// The trace digest.
    pub(super) trace: DefaultHasher,
    /// Events handled.
    pub(super) events: u64,
}

/// Traffic and fault counters (the report's `traffic`).
#[derive(Default)]
pub(super) struct Counters {
    /// Bytes sent by each node, retransmissions included.
    pub(super) bytes: Vec<u64>,
    pub(super) messages: u64,
    pub(super) lost: u64,
    pub(super) partitioned: u64,
    pub(super) duplicated: u64,
    pub(super) payload_copies: u64,
    pub(super) iwant_copies: u64,
    pub(super) sync_copies: u64,
    pub(super) first_deliveries: u64,
    pub(super) gossip_duplicates_dropped: u64,
    pub(super) idontwant_sent: u64,
    pub(super) oversized_refused: u64,
    pub(super) rejected: u64,
    pub(super) penalties: u64,
    pub(super) bans: u64,
    pub(super) crashes: u64,
    pub(super) forged_sent: u64,
}

/// One submitted update and how far it has reached.
pub(super) struct UpdateRec {
    /// Submitted at, virtual ms.
    pub(super) at: u64,
    /// The node that submitted it.
    pub(super) origin: u32,
    /// A bitset of the honest nodes that applied it.
    pub(super) reached: Vec<u64>,
    /// How many honest nodes applied it.
    pub(super) count: usize,
    /// When every honest node had it, ms after submission.
    pub(super) complete_after: Option<u64>,
    /// Submitted with no partition and every honest node up.
    pub(super) clean: bool,
}

impl Recorder {
    pub(super) fn new(nodes: usize) -> Self {
        Recorder {
            count: Counters {
                bytes: vec![0; nodes],
                ..Default::default()
            },
            updates: Vec::new(),
            by_hash: BTreeMap::new(),
            delays: Vec::new(),
            clean_delays: Vec::new(),
            forged: BTreeSet::new(),
            obs: Observations::default(),
            heals: Vec::new(),
            trace: DefaultHasher::new(),
            events: 0,
        }
    }

    /// Node `origin` submitted update `hash` at `at`, of a run with `nodes`
    /// nodes.
    pub(super) fn submitted(
        &mut self,
        hash: ChangeHash,
        at: u64,
        origin: u32,
        nodes: usize,
        clean: bool,
    ) {
        self.by_hash.insert(hash, self.updates.len());
        self.updates.push(UpdateRec {
            at,
            origin,
            reached: vec![0; nodes.div_ceil(64)],
            count: 0,
            complete_after: None,
            clean,
        });
    }

    /// Honest node `n` applied update `hash` at `now`, of a run with
    /// `honest` honest nodes: an update no one submitted is unauthentic.
    pub(super) fn reached(&mut self, n: u32, hash: ChangeHash, now: u64, honest: usize) {
        match self.by_hash.get(&hash) {
            None => self.obs.unauthentic.push((n, hash, now)),
            Some(&i) => {
                let u = &mut self.updates[i];
                let (w, bit) = (n as usize / 64, 1u64 << (n % 64));
                if u.reached[w] & bit == 0 {
                    u.reached[w] |= bit;
                    u.count += 1;
                    if u.count == honest && u.complete_after.is_none() {
                        u.complete_after = Some(now - u.at);
                    }
                    if u.origin != n {
                        self.count.first_deliveries += 1;
                        let d = (now - u.at).min(u32::MAX as u64) as u32;
                        self.delays.push(d);
                        if u.clean {
                            self.clean_delays.push(d);
                        }
                    }
                }
            }
        }
    }
}

impl<P: Payload> Sim<'_, P> {
    /// Every honest node that is up has the same heads (and, once faults are
    /// over, every honest node is up).
    pub(super) fn converged(&self) -> bool {
        let mut first: Option<Vec<ChangeHash>> = None;
        for node in &self.nodes {
            if node.byzantine {
                continue;
            }
            let Some(r) = node.replica.as_ref() else {
                if self.faults_over {
                    return false;
                }
                continue;
            };
            let h = r.state().heads();
            match &first {
                None => first = Some(h),
                Some(f) if *f != h => return false,
                _ => {}
            }
        }
        true
    }

    /// Samples convergence every [`SAMPLE_MS`] from now on, until converged.
    pub(super) fn start_sampling(&mut self) {
        if !self.sampling {
            self.sampling = true;
            self.push(self.now + SAMPLE_MS, Ev::Sample);
        }
    }

    /// One sample: once converged, every heal not yet timed is, and sampling
    /// stops. True when the run is over (converged after the faults).
    pub(super) fn sample(&mut self) -> bool {
        if self.converged() {
            for h in self
                .stats
                .heals
                .iter_mut()
                .filter(|h| h.converged_after_ms.is_none())
            {
                h.converged_after_ms = Some(self.now - h.at_ms);
            }
            self.sampling = false;
            if self.faults_over {
                return true;
            }
        } else {
            self.push(self.now + SAMPLE_MS, Ev::Sample);
        }
        false
    }
}
