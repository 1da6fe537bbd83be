//! Faults: partitions, crashes and restarts, churn, Byzantine nodes, and
//! the end of faults.
//!
//! A partition splits the nodes into groups (`halves`, `one-way`, `isolate`,
//! `groups`) until its heal; a crash takes down random honest nodes, with or
//! without their store, for `down` ms; churn crashes one every `every` ms;
//! Byzantine nodes (chosen at setup) send, every `every` ms, in turn an
//! oversized frame, a replayed valid update, a forgery with a bad signature,
//! an unauthorized one, and junk. Each heal is recorded and timed by the
//! convergence sampling. When the scenario's duration is over, every
//! partition heals and every crashed node restarts, and the run goes on until
//! converged (or the quiet period ends).
//!
//! Rules: crashes and churn pick honest nodes that are up (Byzantine nodes
//! never crash); nothing starts once faults are over; a restarted node loads its store in
//! hash order, and what it had acknowledged but lost is recorded for the
//! durability check.

use std::sync::Arc;

use rand::seq::IndexedRandom;
use rand::{Rng, RngCore};
use weft_crdt::ChangeHash;
use weft_protocol::replica::{Replica, ReplicaState};

use super::Sim;
use super::msg::Msg;
use super::net::Partition;
use super::node::Hot;
use super::queue::Ev;
use crate::gossip::GossipNode;
use crate::payload::{Forgery, Payload};
use crate::report::Heal;
use crate::scenario::{FaultKind, Shape};

impl<P: Payload> Sim<'_, P> {
    /// Fault `i` starts: a partition or a crash.
    pub(super) fn fault_start(&mut self, i: usize) {
        if self.faults_over {
            return;
        }
        let f = self.sc.faults[i].clone();
        let n = self.nodes.len();
        match f.kind {
            FaultKind::Partition => {
                let shape = f.shape.unwrap_or(Shape::Halves);
                let group: Vec<u8> = match shape {
                    Shape::Halves | Shape::OneWay => (0..n).map(|i| u8::from(i >= n / 2)).collect(),
                    Shape::Isolate => {
                        let victim = f.node.unwrap_or_else(|| self.rng.random_range(0..n)) % n;
                        (0..n).map(|i| u8::from(i == victim)).collect()
                    }
                    Shape::Groups => {
                        let g = f.groups.unwrap_or(3).clamp(2, 255) as u8;
                        (0..n).map(|_| self.rng.random_range(0..g)).collect()
                    }
                };
                self.net.partition = Some(Partition {
                    group,
                    one_way: shape == Shape::OneWay,
                });
                if self.sc.network.partition_closes {
                    // TCP gives up on the connections across the cut (in
                    // either direction); they are redialed after the heal.
                    let mut cut = Vec::new();
                    for a in 0..n as u32 {
                        for b in self.net.conns[a as usize].iter() {
                            if a < b && (self.net.blocked(a, b) || self.net.blocked(b, a)) {
                                cut.push((a, b));
                            }
                        }
                    }
                    for (a, b) in cut {
                        self.close(a, b);
                        self.net.pending_dials.insert((a, b));
                    }
                }
            }
            FaultKind::Crash => {
                let want = count_of(f.count, n);
                for _ in 0..want {
                    if let Some(v) = self.random_honest_live() {
                        self.crash(v, f.durable.unwrap_or(true), f.down.unwrap_or(10_000));
                    }
                }
            }
            _ => {}
        }
    }

    /// Lifts the partition, queues the redials and records the heal. Each
    /// cut connection is dialed again after its own wait, drawn uniformly
    /// within `redial` (pair by pair, lower node first): a node dials a
    /// configured peer it cannot reach about once per redial cycle, and
    /// the heal falls anywhere within that cycle.
    fn heal(&mut self, what: String) {
        self.net.partition = None;
        let dials = std::mem::take(&mut self.net.pending_dials);
        for (a, b) in dials {
            let wait = self.rng.random_range(0..=self.sc.network.redial);
            self.push(self.now + wait, Ev::Redial { a, b });
        }
        self.stats.heals.push(Heal {
            at_ms: self.now,
            what,
            converged_after_ms: None,
        });
        self.start_sampling();
    }

    /// Crashes node `n` (keeping its store if `durable`) for `down` ms.
    pub(super) fn crash(&mut self, n: u32, durable: bool, down: u64) {
        self.stats.count.crashes += 1;
        let peers: Vec<u32> = self.net.conns[n as usize].iter().collect();
        for p in peers {
            self.close(n, p);
        }
        let node = &mut self.nodes[n as usize];
        node.replica = None;
        node.gossip = GossipNode::new();
        self.hot[n as usize] = Hot {
            inc: self.hot[n as usize].inc + 1,
            up: false,
        };
        self.seen.clear(n);
        node.unflushed.clear();
        node.durable = durable;
        if durable {
            node.acked_at_crash = Some(std::mem::take(&mut node.acked));
        } else {
            node.disk.clear();
            node.acked.clear();
            node.acked_at_crash = None;
        }
        node.revoked_seen.clear();
        if !self.faults_over {
            self.push(self.now + down, Ev::Restart { node: n });
        }
    }

    /// Restarts node `n` from its store and redials its peers.
    pub(super) fn restart(&mut self, n: u32) {
        let mut state = self.payload.fresh();
        let mut stored: Vec<(ChangeHash, Arc<[u8]>)> = self.nodes[n as usize]
            .disk
            .iter()
            .map(|(h, b)| (*h, b.clone()))
            .collect();
        stored.sort_unstable_by_key(|(h, _)| *h);
        let stored: Vec<Arc<[u8]>> = stored.into_iter().map(|(_, b)| b).collect();
        if !stored.is_empty() {
            // The node loads its store: each update verified again.
            let _ = state.ingest_batch(stored);
        }
        let node = &mut self.nodes[n as usize];
        if let Some(acked) = node.acked_at_crash.take() {
            let mut acked: Vec<ChangeHash> = acked.into_iter().collect();
            acked.sort_unstable();
            for h in acked {
                if !self.payload.contains(&state, &h) {
                    self.stats.obs.lost.push((n, h, self.now));
                }
            }
        }
        node.acked = node.disk.keys().copied().collect();
        node.revoked_seen = self.payload.revoked_subjects(&state).into_iter().collect();
        let id = self.payload.fixture().node_ids[n as usize];
        let cert = self.payload.fixture().certs[n as usize].clone();
        let mut r = Replica::new(state, id, cert, self.config.clone());
        let outs = r.start();
        node.replica = Some(r);
        self.hot[n as usize].up = true;
        self.carry_out(n, outs);
        let peers: Vec<u32> = self.net.dialled[n as usize].iter().copied().collect();
        for p in peers {
            self.connect(n, p);
        }
        self.ensure_heartbeat(n);
    }

    /// Byzantine fault `fault`'s round `round`: every live Byzantine node
    /// sends one bad message to each of its peers.
    pub(super) fn inject(&mut self, fault: usize, round: u32) {
        let f = &self.sc.faults[fault];
        let until = f.until.unwrap_or(self.sc.duration).min(self.sc.duration);
        if self.now >= until || self.faults_over {
            return;
        }
        let every = f.every.unwrap_or(5_000);
        self.push(
            self.now + every,
            Ev::Inject {
                fault,
                round: round + 1,
            },
        );
        let byz: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|n| self.nodes[*n as usize].byzantine && self.alive(*n))
            .collect();
        for b in byz {
            // Oversized and replayed first: three forgeries get a node banned.
            let msg = match round % 5 {
                0 => Msg::Oversized {
                    len: self.sc.gossip.max_transmit + 1,
                },
                1 => {
                    // Replay an old, valid update.
                    let Some(bytes) = self
                        .msgs
                        .published
                        .choose(&mut self.rng)
                        .and_then(|id| self.msgs.bytes[*id as usize].as_ref())
                        .map(|(b, _)| b.clone())
                    else {
                        continue;
                    };
                    // Re-published under its own name.
                    Msg::Gossip {
                        id: self.msgs.intern(&bytes),
                        source: self.source_of(b),
                        bytes,
                    }
                }
                2 | 3 => {
                    let what = if round % 5 == 2 {
                        Forgery::BadSignature
                    } else {
                        Forgery::Unauthorized
                    };
                    let state = self.nodes[b as usize]
                        .replica
                        .as_ref()
                        .expect("live")
                        .state();
                    let (bytes, id) = self.payload.forge(state, b as usize, what, &mut self.rng);
                    if let Some(id) = id {
                        self.stats.forged.insert(id);
                    }
                    let bytes: Arc<[u8]> = bytes.into();
                    Msg::Gossip {
                        id: self.msgs.intern(&bytes),
                        source: self.source_of(b),
                        bytes,
                    }
                }
                _ => {
                    let mut junk = vec![0u8; 512];
                    self.rng.fill_bytes(&mut junk);
                    let bytes: Arc<[u8]> = junk.into();
                    Msg::Gossip {
                        id: self.msgs.intern(&bytes),
                        source: self.source_of(b),
                        bytes,
                    }
                }
            };
            self.stats.count.forged_sent += 1;
            let peers: Vec<u32> = self.net.conns[b as usize].iter().collect();
            for p in peers {
                self.send(b, p, msg.clone());
            }
        }
    }

    /// Partition `i` heals.
    pub(super) fn fault_end(&mut self, i: usize) {
        if self.net.partition.is_some() && !self.faults_over {
            self.heal(format!(
                "partition {} healed",
                self.sc.faults[i].shape_name()
            ));
        }
    }

    /// Churn fault `i` crashes a random honest node and queues its next
    /// crash, until the fault's end.
    pub(super) fn churn(&mut self, i: usize) {
        let f = &self.sc.faults[i];
        let until = f.until.unwrap_or(self.sc.duration).min(self.sc.duration);
        if self.now < until && !self.faults_over {
            let (down, durable, every) = (
                f.down.unwrap_or(10_000),
                f.durable.unwrap_or(true),
                f.every.unwrap_or(5_000),
            );
            if let Some(n) = self.random_honest_live() {
                self.crash(n, durable, down);
            }
            self.push(self.now + every, Ev::Churn(i));
        }
    }

    /// The scenario's duration is over: every crashed node restarts, a
    /// partition heals, and convergence is awaited.
    pub(super) fn end_of_faults(&mut self) {
        self.faults_over = true;
        let crashed: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|n| !self.alive(*n))
            .collect();
        let anything = self.net.partition.is_some() || !crashed.is_empty();
        for n in &crashed {
            self.restart(*n);
        }
        if anything {
            self.heal(format!(
                "end of faults: partition healed, {} node(s) restarted",
                crashed.len()
            ));
        } else {
            // The quiet period: run until converged.
            self.start_sampling();
        }
    }
}

/// How many nodes a fault's `count` means of `n`: an absolute number from
/// 1 up, a fraction of `n` below (at least one); one if unset.
pub(super) fn count_of(count: Option<f64>, n: usize) -> usize {
    match count {
        None => 1,
        Some(c) if c >= 1.0 => c as usize,
        Some(c) => ((c * n as f64).round() as usize).max(1),
    }
}

impl crate::scenario::Fault {
    /// The partition's shape as a scenario file names it.
    fn shape_name(&self) -> &'static str {
        match self.shape {
            Some(Shape::Halves) | None => "halves",
            Some(Shape::Isolate) => "isolate",
            Some(Shape::Groups) => "groups",
            Some(Shape::OneWay) => "one-way",
        }
    }
}
