//! The discrete-event loop.
//!
//! One event queue ordered by `(time, sequence)`, one ChaCha8 RNG seeded from
//! the run's seed for every random choice (the fixture's keys, the
//! connection graph, latencies, losses, faults, the replicas' `rand`
//! argument), and virtual time in milliseconds. Each node runs the real
//! [`Replica`](weft_protocol::replica::Replica) over the payload mode's
//! state; the engine carries its outputs out: gossip goes through the
//! overlay of [`crate::gossip`], sync requests and responses travel as
//! messages with a timeout, `Persist` writes the node's simulated store,
//! `Ban` and `Disconnect` close connections, and `Schedule` becomes a timer
//! event.
//!
//! This file holds `Sim`, the whole state of one run, with the main loop and
//! the dispatch of each event to the part that handles it:
//!
//! - `setup`: time zero: the Byzantine nodes, clock skews, replicas, the
//!   connection graph, the initial mesh and the first events.
//! - `queue`: the events and the timing wheel that orders them.
//! - `msg`: the messages that cross a link and their size on the wire.
//! - `net`: the links: latency, loss, duplication, reordering, partitions,
//!   connections.
//! - `node`: a node's record, the inputs to its replica and how the
//!   replica's outputs are carried out.
//! - `requests`: sync requests in flight and their timeouts.
//! - `router`: each node's gossipsub router: publishing, the heartbeat and
//!   what a node does with each message it receives.
//! - `workload`: the operator updates submitted during the run.
//! - `faults`: partitions, crashes and restarts, churn, Byzantine injection,
//!   heals and the end of faults.
//! - `record`: what the run records for the report (traffic counters, each
//!   update's reach, the observations the checks judge, the trace digest)
//!   and the convergence sampling.
//! - `finish`: the final checks and the [`Report`].
//!
//! # Rules
//! - Every random draw comes from `Sim::rng`, in event order: a draw moved,
//!   added or removed changes every later result for that seed.
//! - Every event is queued by `Sim::push`, which numbers it, so events at the
//!   same millisecond run in the order they were queued.
//! - An event for a node carries the node's incarnation; one for an earlier
//!   life (before a crash) is dropped.
//! - Every collection whose iteration order can reach a result is ordered
//!   (`BTreeMap`, `BTreeSet`, a sorted `Vec`); hash maps only serve lookups.
//!
//! # Layout
//! A 10,000-node run is bound by cache misses on per-node state, so what
//! almost every event reads of a node is kept in dense arrays apart from the
//! node records: incarnation and liveness (`hot`), connections and link
//! readiness (in `net`), and the seen-sets (one bitset array by interned
//! message index).

mod faults;
mod finish;
mod msg;
mod net;
mod node;
mod queue;
mod record;
mod requests;
mod router;
mod setup;
mod workload;

use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use std::hash::Hash;
use weft_protocol::replica::{Input, Output, ReplicaConfig};

use crate::SimError;
use crate::gossip::{MsgIdx, SeenSets};
use crate::payload::{EPOCH_MS, Fixture, FullPayload, LightPayload, Payload};
use crate::report::Report;
use crate::scenario::{Mode, Scenario};

pub use finish::{REACH_BUCKET_MS, REACH_BUCKETS};
use msg::Msg;
use net::Network;
use node::{Hot, Node};
use queue::{Ev, EventQueue};
use record::Recorder;
use requests::Requests;
use router::Messages;

/// Progress of a run, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Virtual time now, ms.
    pub now_ms: u64,
    /// The latest virtual time the run can reach, ms.
    pub end_ms: u64,
    /// Events handled so far.
    pub events: u64,
}

/// Runs `scenario` with `seed` and checks it. `progress` is called now and
/// then with how far the run is.
pub fn run_scenario(
    scenario: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, SimError> {
    scenario.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fx = Fixture::new(scenario.nodes, &mut rng);
    match scenario.mode {
        Mode::Full => {
            let p = FullPayload::new(fx, scenario.workload.subjects)?;
            Sim::new(scenario, seed, rng, p).run(progress)
        }
        Mode::Light => {
            let p = LightPayload::new(fx, &scenario.sabotage);
            Sim::new(scenario, seed, rng, p).run(progress)
        }
    }
}

/// Buffers reused from one event to the next, so that the busiest paths
/// allocate nothing.
#[derive(Default)]
struct Scratch {
    sends: Vec<(u32, Msg)>,
    peers: Vec<u32>,
    ids: Vec<MsgIdx>,
    lazy: Vec<u32>,
    outs: Vec<Output<u32>>,
}

/// One run: the scenario, the RNG, the queue, every node and everything
/// recorded.
struct Sim<'a, P: Payload> {
    sc: &'a Scenario,
    seed: u64,
    rng: ChaCha8Rng,
    payload: P,
    config: ReplicaConfig,
    /// Virtual time, ms: the time of the event being handled.
    now: u64,
    queue: EventQueue,
    nodes: Vec<Node<P::State>>,
    /// Each node's incarnation and liveness (apart from `nodes`: see the
    /// module doc's layout).
    hot: Vec<Hot>,
    /// The gossip message indices each node has seen.
    seen: SeenSets,
    net: Network,
    requests: Requests,
    msgs: Messages,
    stats: Recorder,
    scratch: Scratch,
    /// Nodes that are not Byzantine.
    honest: usize,
    /// Convergence is being sampled (an `Ev::Sample` is queued).
    sampling: bool,
    /// The scenario's duration is over: no more updates or faults, every
    /// crashed node is back, and the run ends once converged.
    faults_over: bool,
}

impl<'a, P: Payload> Sim<'a, P> {
    fn new(sc: &'a Scenario, seed: u64, rng: ChaCha8Rng, payload: P) -> Self {
        Sim {
            sc,
            seed,
            rng,
            payload,
            config: ReplicaConfig {
                anti_entropy_interval_ms: sc.replica.anti_entropy,
                ..ReplicaConfig::default()
            },
            now: 0,
            queue: EventQueue::default(),
            nodes: Vec::new(),
            hot: Vec::new(),
            seen: SeenSets::new(sc.nodes),
            net: Network::new(sc.nodes),
            requests: Requests::default(),
            msgs: Messages::default(),
            stats: Recorder::new(sc.nodes),
            scratch: Scratch::default(),
            honest: sc.nodes,
            sampling: false,
            faults_over: false,
        }
    }

    /// Queues `ev` at virtual time `at`.
    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    /// Node `n`'s wall clock, ms since the Unix epoch, with its skew.
    fn clock(&self, n: u32) -> u64 {
        (EPOCH_MS as i64 + self.now as i64 + self.nodes[n as usize].skew_ms).max(0) as u64
    }

    fn alive(&self, n: u32) -> bool {
        self.hot[n as usize].up
    }

    /// Node `n` is up and in incarnation `inc`.
    fn current(&self, n: u32, inc: u32) -> bool {
        self.hot[n as usize].inc == inc && self.alive(n)
    }

    fn honest_live(&self, n: u32) -> bool {
        !self.nodes[n as usize].byzantine && self.alive(n)
    }

    /// A random honest node that is up, if any.
    fn random_honest_live(&mut self) -> Option<u32> {
        let live: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|n| self.honest_live(*n))
            .collect();
        live.choose(&mut self.rng).copied()
    }

    fn run(mut self, progress: &mut dyn FnMut(Progress)) -> Result<Report, SimError> {
        self.setup();
        let end = self.sc.duration + self.sc.quiet;
        progress(Progress {
            now_ms: 0,
            end_ms: end,
            events: 0,
        });
        while let Some(q) = self.queue.pop() {
            if q.at > end {
                break;
            }
            self.now = q.at;
            self.stats.events += 1;
            let (tag, who) = q.ev.tag();
            (q.at, q.seq, tag, who).hash(&mut self.stats.trace);
            if self.stats.events.is_multiple_of(65_536) {
                progress(Progress {
                    now_ms: self.now,
                    end_ms: end,
                    events: self.stats.events,
                });
            }
            if self.handle(q.ev)? {
                break;
            }
        }
        progress(Progress {
            now_ms: end,
            end_ms: end,
            events: self.stats.events,
        });
        Ok(self.finish())
    }

    /// Handles one event; true when the run is over.
    fn handle(&mut self, ev: Ev) -> Result<bool, SimError> {
        match ev {
            Ev::Deliver {
                from,
                to,
                inc_to,
                msg,
            } => self.deliver(from, to, inc_to, msg),
            Ev::Connected { node, peer, inc } => {
                if self.current(node, inc) && self.net.conns[node as usize].contains(&peer) {
                    self.connected(node, peer);
                }
            }
            Ev::Disconnected { node, peer, inc } => {
                if self.current(node, inc) {
                    self.disconnected(node, peer);
                }
            }
            Ev::Timer { node, inc, timer } => {
                if self.current(node, inc) {
                    self.input(node, Input::Timer(timer));
                }
            }
            Ev::Heartbeat { node, inc } => {
                if self.current(node, inc) {
                    self.heartbeat(node);
                }
            }
            Ev::RequestTimeout { .. } => self.sweep_requests(),
            Ev::Update => self.workload()?,
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::Churn(i) => self.churn(i),
            Ev::Restart { node } => {
                if !self.alive(node) {
                    self.restart(node);
                }
            }
            Ev::Inject { fault, round } => self.inject(fault, round),
            Ev::Redial { a, b } => self.connect(a, b),
            Ev::EndOfFaults => self.end_of_faults(),
            Ev::Sample => return Ok(self.sample()),
        }
        Ok(false)
    }
}
