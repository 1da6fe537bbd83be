//! The end of a run: the final checks and the [`Report`].
//!
//! The final checks compare the heads of every honest node that is up
//! (the largest group with the same heads is the majority; the others are
//! divergent), probe each for revoke wins once more, and hand the
//! observations to [`check::judge`]. The figures: per-node latency (each
//! first delivery to an honest node other than the update's origin), the
//! time until an update reached every honest node, reach by time, traffic.
//!
//! Rules: a percentile is one of the sorted samples, never interpolated;
//! fractions are rounded to six decimals. Finishing draws nothing from the
//! RNG.

use std::collections::BTreeMap;
use std::hash::Hasher;

use weft_crdt::ChangeHash;
use weft_protocol::replica::ReplicaState;

use super::Sim;
use crate::check;
use crate::payload::Payload;
use crate::report::{Latency, Report, Traffic};

/// Reach is reported in buckets of this many ms.
pub const REACH_BUCKET_MS: u64 = 50;
/// Reach buckets reported (up to 10 s after publication; later is the tail).
pub const REACH_BUCKETS: usize = 200;

impl<P: Payload> Sim<'_, P> {
    /// The final checks and the report.
    pub(super) fn finish(mut self) -> Report {
        // Final checks.
        let mut sets: BTreeMap<Vec<ChangeHash>, Vec<u32>> = BTreeMap::new();
        let mut live = 0;
        for n in 0..self.nodes.len() as u32 {
            if !self.honest_live(n) {
                continue;
            }
            live += 1;
            let node = &self.nodes[n as usize];
            let r = node.replica.as_ref().expect("live");
            sets.entry(r.state().heads()).or_default().push(n);
            for &k in &node.revoked_seen {
                if self.payload.allows(r.state(), k) {
                    self.stats.obs.revoke_violations.push((n, k, self.now));
                }
            }
        }
        let majority = sets.values().map(Vec::len).max().unwrap_or(0);
        let mut divergent: Vec<u32> = Vec::new();
        let mut skipped = false;
        for v in sets.values() {
            if v.len() == majority && !skipped {
                skipped = true;
                continue;
            }
            divergent.extend(v);
        }
        divergent.sort_unstable();
        self.stats.obs.head_sets_at_end = sets.len();
        self.stats.obs.live_at_end = live;
        self.stats.obs.divergent_nodes = divergent;
        self.stats.obs.forged_applied = self
            .stats
            .obs
            .unauthentic
            .iter()
            .filter(|(_, h, _)| self.stats.forged.contains(h))
            .count();
        let invariants = check::judge(&self.stats.obs);

        // Latency and reach.
        let mut delays = std::mem::take(&mut self.stats.delays);
        delays.sort_unstable();
        let pct = |p: f64| -> u64 {
            if delays.is_empty() {
                return 0;
            }
            let i = ((p * delays.len() as f64).ceil() as usize).clamp(1, delays.len()) - 1;
            delays[i] as u64
        };
        let updates = self.stats.updates.len() as u64;
        let pairs = updates * self.honest.saturating_sub(1) as u64;
        let mut reach = Vec::with_capacity(REACH_BUCKETS + 1);
        let mut j = 0usize;
        for b in 0..=REACH_BUCKETS {
            let t = b as u64 * REACH_BUCKET_MS;
            while j < delays.len() && delays[j] as u64 <= t {
                j += 1;
            }
            let f = if pairs == 0 {
                1.0
            } else {
                j as f64 / pairs as f64
            };
            reach.push((t, round6(f)));
        }
        let within = |ms: u64| -> f64 {
            if pairs == 0 {
                return 1.0;
            }
            round6(delays.partition_point(|d| (*d as u64) <= ms) as f64 / pairs as f64)
        };
        let total_bytes: u64 = self.stats.count.bytes.iter().sum();
        let cdf: Vec<(u64, f64)> = if delays.is_empty() {
            Vec::new()
        } else {
            (0..=100)
                .map(|p| {
                    (
                        pct(p as f64 / 100.0).max(if p == 0 { delays[0] as u64 } else { 0 }),
                        p as f64 / 100.0,
                    )
                })
                .collect()
        };
        let byz = self.nodes.iter().filter(|n| n.byzantine).count();
        let mut complete: Vec<u64> = self
            .stats
            .updates
            .iter()
            .filter_map(|u| u.complete_after)
            .collect();
        complete.sort_unstable();
        let cpct = |p: f64| -> u64 {
            if complete.is_empty() {
                return 0;
            }
            complete[((p * (complete.len() - 1) as f64).floor() as usize).min(complete.len() - 1)]
        };
        let to_all = Latency {
            p50_ms: cpct(0.50),
            p99_ms: cpct(0.99),
            p9999_ms: cpct(0.9999),
            max_ms: complete.last().copied().unwrap_or(0),
            samples: complete.len() as u64,
        };
        let report = Report {
            scenario: self.sc.name.clone(),
            mode: self.sc.mode,
            seed: self.seed,
            nodes: self.sc.nodes,
            byzantine: byz,
            duration_ms: self.sc.duration,
            simulated_ms: self.now,
            events: self.stats.events,
            trace_digest: format!("{:016x}", self.stats.trace.finish()),
            updates,
            latency: Latency {
                p50_ms: pct(0.50),
                p99_ms: pct(0.99),
                p9999_ms: pct(0.9999),
                max_ms: delays.last().copied().unwrap_or(0) as u64,
                samples: delays.len() as u64,
            },
            to_all,
            reach_within_1500ms: within(1_500),
            reach_within_1500ms_connected: {
                let clean = self.stats.updates.iter().filter(|u| u.clean).count() as u64;
                let pairs = clean * self.honest.saturating_sub(1) as u64;
                if pairs == 0 {
                    1.0
                } else {
                    round6(
                        self.stats
                            .clean_delays
                            .iter()
                            .filter(|d| **d <= 1_500)
                            .count() as f64
                            / pairs as f64,
                    )
                }
            },
            reach,
            latency_cdf: cdf,
            heals: self.stats.heals.clone(),
            traffic: Traffic {
                bytes_total: total_bytes,
                bytes_per_node: total_bytes / self.nodes.len().max(1) as u64,
                messages: self.stats.count.messages,
                lost: self.stats.count.lost,
                partitioned: self.stats.count.partitioned,
                duplicated: self.stats.count.duplicated,
                payload_copies: self.stats.count.payload_copies,
                copies_gossip: self.stats.count.payload_copies
                    - self.stats.count.iwant_copies
                    - self.stats.count.sync_copies,
                copies_iwant: self.stats.count.iwant_copies,
                copies_sync: self.stats.count.sync_copies,
                first_deliveries: self.stats.count.first_deliveries,
                amplification: if self.stats.count.first_deliveries == 0 {
                    0.0
                } else {
                    round6(
                        self.stats.count.payload_copies as f64
                            / self.stats.count.first_deliveries as f64,
                    )
                },
                duplicates_dropped: self.stats.count.gossip_duplicates_dropped,
                idontwant_sent: self.stats.count.idontwant_sent,
                rejected: self.stats.count.rejected,
                oversized_refused: self.stats.count.oversized_refused,
                penalties: self.stats.count.penalties,
                bans: self.stats.count.bans,
                crashes: self.stats.count.crashes,
                forged_sent: self.stats.count.forged_sent,
            },
            passed: invariants.iter().all(|i| i.pass),
            invariants,
            replay: String::new(),
        };
        report.with_replay()
    }
}
/// `x` rounded to six decimals.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
