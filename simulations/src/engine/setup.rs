//! Time zero: the nodes, the connection graph, the initial mesh and the
//! first events.
//!
//! In order: the Byzantine nodes are chosen (never node 0), each node gets
//! its clock skew and a started replica, each node dials `dials` random
//! others, each grafts up to `d` random connected peers into its mesh, and
//! the workload's first update, each fault's start (and a partition's end)
//! and the end of faults are queued.
//!
//! Rules: this order is part of the run's RNG stream, so it is part of
//! every result: any change to it changes every seed's run.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use rand::Rng;
use weft_protocol::replica::Replica;

use super::Sim;
use super::faults::count_of;
use super::node::{Hot, Node};
use super::queue::Ev;
use crate::gossip::GossipNode;
use crate::payload::Payload;
use crate::scenario::FaultKind;

impl<P: Payload> Sim<'_, P> {
    /// Builds the mesh and queues the first events.
    pub(super) fn setup(&mut self) {
        let n = self.sc.nodes;
        // Byzantine nodes are chosen up front so every statistic and check
        // excludes them from the start.
        let mut byzantine = BTreeSet::new();
        for f in &self.sc.faults {
            if f.kind == FaultKind::Byzantine {
                let want = count_of(f.count, n).min(n.saturating_sub(2));
                while byzantine.len() < want {
                    byzantine.insert(self.rng.random_range(1..n) as u32);
                }
            }
        }
        self.honest = n - byzantine.len();
        let max_skew = self
            .sc
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Skew)
            .map(|f| f.max_skew.unwrap_or(30_000))
            .max()
            .unwrap_or(0) as i64;
        for i in 0..n {
            let skew_ms = if max_skew > 0 {
                self.rng.random_range(-max_skew..=max_skew)
            } else {
                0
            };
            let id = self.payload.fixture().node_ids[i];
            let cert = self.payload.fixture().certs[i].clone();
            let replica = Replica::new(self.payload.fresh(), id, cert, self.config.clone());
            self.hot.push(Hot { inc: 0, up: true });
            self.nodes.push(Node {
                replica: Some(replica),
                byzantine: byzantine.contains(&(i as u32)),
                skew_ms,
                gossip: GossipNode::new(),
                disk: HashMap::default(),
                unflushed: VecDeque::new(),
                acked: HashSet::default(),
                acked_at_crash: None,
                durable: true,
                revoked_seen: BTreeSet::new(),
            });
        }
        for i in 0..n as u32 {
            let outs = self.nodes[i as usize]
                .replica
                .as_mut()
                .expect("alive at start")
                .start();
            self.carry_out(i, outs);
        }
        // The connection graph: each node dials `dials` random others.
        let dials = self.sc.gossip.dials.min(n - 1);
        for i in 0..n as u32 {
            let mut tries = 0;
            let mut made = 0;
            while made < dials && tries < dials * 10 {
                tries += 1;
                let j = self.rng.random_range(0..n as u32);
                if j != i && self.net.dialled[i as usize].insert(j) {
                    self.net.dialled[j as usize].insert(i);
                    made += 1;
                }
            }
        }
        for i in 0..n as u32 {
            let peers: Vec<u32> = self.net.dialled[i as usize]
                .iter()
                .copied()
                .filter(|j| *j > i)
                .collect();
            for j in peers {
                self.connect(i, j);
            }
        }
        // The initial mesh: each node grafts up to `d` random connected peers.
        let d = self.sc.gossip.d;
        let d_high = self.sc.gossip.d_high;
        for i in 0..n as u32 {
            let mut cands: Vec<u32> = self.net.conns[i as usize]
                .iter()
                .filter(|p| !self.nodes[i as usize].gossip.mesh.contains(p))
                .collect();
            while self.nodes[i as usize].gossip.mesh.len() < d && !cands.is_empty() {
                let k = self.rng.random_range(0..cands.len());
                let p = cands.swap_remove(k);
                if self.nodes[p as usize].gossip.mesh.len() < d_high {
                    self.nodes[i as usize].gossip.mesh.insert(p);
                    self.nodes[p as usize].gossip.mesh.insert(i);
                }
            }
        }
        self.push(self.sc.workload.start, Ev::Update);
        for (i, f) in self.sc.faults.iter().enumerate() {
            match f.kind {
                FaultKind::Partition | FaultKind::Crash => {
                    self.push(f.at, Ev::FaultStart(i));
                    if f.kind == FaultKind::Partition {
                        self.push(f.until.unwrap_or(self.sc.duration), Ev::FaultEnd(i));
                    }
                }
                FaultKind::Churn => self.push(f.at, Ev::Churn(i)),
                FaultKind::Byzantine => self.push(f.at, Ev::Inject { fault: i, round: 0 }),
                FaultKind::Skew => {}
            }
        }
        self.push(self.sc.duration, Ev::EndOfFaults);
    }
}
