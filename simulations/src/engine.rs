//! The discrete-event loop.
//!
//! One priority queue of events ordered by `(time, sequence)`, one ChaCha8
//! RNG seeded from the run's seed for every random choice (the fixture's keys,
//! the connection graph, latencies, losses, faults, the replicas' `rand`
//! argument), and virtual time in milliseconds. Each node runs the real
//! [`Replica`] over the payload mode's state; the engine carries its outputs
//! out: gossip goes through the overlay of [`crate::gossip`], sync requests
//! and responses travel as messages with a timeout, `Persist` writes the
//! node's simulated store, `Ban` and `Disconnect` close connections, and
//! `Schedule` becomes a timer event.
//!
//! # Network
//! Every message crosses a link: it may be lost (`loss`; with the default
//! `retransmit` model, as on libp2p's TCP, it is sent again after a
//! retransmission timeout that doubles each time, and the connection
//! delivers in order behind it; with `drop` it is gone), delivered twice
//! (`duplicate`), held back out of order (`reorder`), and takes the link's base latency
//! (each link's own, drawn once from `latency` ± `link_spread`) plus jitter
//! from the scenario's distribution. A partition drops messages between
//! groups (one direction only for `one_way`). By default it also closes the
//! connections across it, and nodes redial them one `redial` after the heal
//! (each new connection starts with `Hello`, which syncs); with
//! `partition_closes = false` connections stay open, as across a short
//! routing blackhole, and sync requests across the cut time out. A crash closes the node's connections (its
//! peers see them close, as after `kill -9`); on restart it redials the peers
//! of its original connections.
//!
//! Sync request timeouts are swept in order of their deadlines by one timer,
//! not one event each.
//!
//! Deliveries that cannot change anything (a gossip message, an IHAVE or an
//! IDONTWANT whose every id the receiver has already seen, at send time) are
//! counted in the traffic figures but not queued: a 10,000-node run would
//! otherwise spend most of its time on duplicates that the receiver drops
//! unread.
//!
//! # Layout
//! A 10,000-node run is bound by cache misses on per-node state, so what
//! almost every event reads of a node is kept in dense arrays apart from the
//! node records: incarnation and liveness, connections, link readiness, and
//! the seen-sets (one bitset array by interned message index). The event
//! queue is a timing wheel of reusable per-millisecond buckets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_crdt::{ChangeHash, ChangeSummary};
use weft_protocol::replica::{
    Accepted, Command, Input, Output, Replica, ReplicaConfig, ReplicaState, Timer, Verdict,
};
use weft_protocol::wire::{SyncRequest, SyncResponse};

use crate::SimError;
use crate::check::{self, Observations};
use crate::gossip::{Det, GossipNode, MsgId, MsgIdx, PeerSet, SeenSets, msg_id};
use crate::light;
use crate::payload::{Action, EPOCH_MS, Fixture, Forgery, FullPayload, LightPayload, Payload};
use crate::report::{Heal, Latency, Report, Traffic};
use crate::scenario::{Distribution, FaultKind, LossModel, Mode, Scenario, Shape};

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

/// How often (virtual ms) convergence is sampled while it is awaited.
const SAMPLE_MS: u64 = 50;
/// Reach is reported in buckets of this many ms.
pub const REACH_BUCKET_MS: u64 = 50;
/// Reach buckets reported (up to 10 s after publication; later is the tail).
pub const REACH_BUCKETS: usize = 200;
/// Re-ask for an id by IWANT after this long without it (gossipsub's
/// `iwant_followup_time`, 3 s).
const IWANT_FOLLOWUP_MS: u64 = 3_000;
/// Bytes of gossipsub framing around a message's data, approximately (the
/// protobuf `Message` with its source, sequence number and signature, and
/// the RPC around it).
const ENVELOPE: usize = 64;
/// The same for an anonymous message (`MessageAuthenticity::Anonymous`):
/// the topic and the data's framing, no source, sequence number or
/// signature (116 bytes fewer on the wire).
const ENVELOPE_ANONYMOUS: usize = 24;
/// The `source` of a message that names none (`GossipConfig::anonymous`):
/// no peer is skipped as its publisher.
const NO_SOURCE: u32 = u32::MAX;
/// How long an IDONTWANT holds (libp2p's `IDONTWANT_TIMEOUT`, 3 s; it
/// drops older ones on its heartbeat).
const IDONTWANT_MS: u64 = 3_000;
/// Acknowledged-but-unflushed writes a sabotaged store keeps in memory.
const UNFLUSHED: usize = 2;

#[derive(Clone, Debug)]
enum Msg {
    /// A message, with the node that published it as its envelope names it
    /// (gossipsub's `source` under `MessageAuthenticity::Signed`), or
    /// [`NO_SOURCE`] for an anonymous one.
    Gossip {
        id: MsgIdx,
        source: u32,
        bytes: Arc<[u8]>,
    },
    Oversized {
        len: usize,
    },
    IHave(Arc<[MsgIdx]>),
    IWant(Vec<MsgIdx>),
    IDontWant(MsgIdx),
    Graft,
    Prune,
    /// Sync messages are boxed: they are the largest, and a small `Msg`
    /// keeps the event queue's buckets small.
    Request {
        req: u64,
        request: Box<SyncRequest>,
    },
    Response {
        req: u64,
        response: Box<SyncResponse>,
    },
}

/// Bytes on the wire of an IHAVE with `ids` ids (as [`Msg::size`]).
fn ihave_size(ids: usize) -> u64 {
    16 + 32 * ids as u64 + 6
}

/// Gossipsub's framing around the data of a message with this `source`.
fn envelope(source: u32) -> usize {
    if source == NO_SOURCE {
        ENVELOPE_ANONYMOUS
    } else {
        ENVELOPE
    }
}

impl Msg {
    /// Bytes on the wire, approximately: gossipsub's protobuf framing is
    /// about 64 bytes around a message and 8 per control message; sync
    /// messages are counted as their postcard encoding would be (32 bytes a
    /// hash, the certificate and update bytes as they are).
    fn size(&self) -> u64 {
        let heads = |n: usize| 32 * n as u64 + 8;
        (match self {
            Msg::Gossip { bytes, source, .. } => bytes.len() as u64 + envelope(*source) as u64,
            Msg::Oversized { len } => *len as u64,
            Msg::IHave(ids) => return ihave_size(ids.len()),
            Msg::IWant(ids) => 16 + 32 * ids.len() as u64,
            Msg::IDontWant(_) => 16 + 32,
            Msg::Graft | Msg::Prune => 24,
            Msg::Request { request, .. } => match &**request {
                SyncRequest::Hello { cert, heads: h, .. } => cert.len() as u64 + heads(h.len()) + 8,
                SyncRequest::Heads { heads: h, .. } => heads(h.len()) + 8,
                SyncRequest::Fetch { hashes } => heads(hashes.len()),
                SyncRequest::Roots { .. } => 8,
            },
            Msg::Response { response, .. } => match &**response {
                SyncResponse::Hello { cert, heads: h, .. } => {
                    cert.len() as u64 + heads(h.len()) + 8
                }
                SyncResponse::Offer {
                    heads: h, hashes, ..
                } => heads(h.len()) + heads(hashes.len()) + 8,
                SyncResponse::Roots { roots } => {
                    roots.iter().map(|u| u.0.len() as u64 + 4).sum::<u64>() + 8
                }
                SyncResponse::Updates { updates } => {
                    updates.iter().map(|u| u.0.len() as u64 + 4).sum::<u64>() + 8
                }
                SyncResponse::Refused { reason } => reason.len() as u64 + 8,
            },
        }) + 6
    }

    fn tag(&self) -> u8 {
        match self {
            Msg::Gossip { .. } => 1,
            Msg::Oversized { .. } => 2,
            Msg::IHave(_) => 3,
            Msg::IWant(_) => 4,
            Msg::Graft => 5,
            Msg::Prune => 6,
            Msg::Request { .. } => 7,
            Msg::Response { .. } => 8,
            Msg::IDontWant(_) => 9,
        }
    }
}

#[derive(Debug)]
enum Ev {
    Deliver {
        from: u32,
        to: u32,
        inc_to: u32,
        msg: Msg,
    },
    Connected {
        node: u32,
        peer: u32,
        inc: u32,
    },
    Disconnected {
        node: u32,
        peer: u32,
        inc: u32,
    },
    Timer {
        node: u32,
        inc: u32,
        timer: Timer<u32>,
    },
    Heartbeat {
        node: u32,
        inc: u32,
    },
    RequestTimeout {
        req: u64,
    },
    Update,
    FaultStart(usize),
    FaultEnd(usize),
    Churn(usize),
    Restart {
        node: u32,
    },
    Inject {
        fault: usize,
        round: u32,
    },
    EndOfFaults,
    Redial,
    Sample,
}

impl Ev {
    fn tag(&self) -> (u8, u32) {
        match self {
            Ev::Deliver { to, msg, .. } => (10 + msg.tag(), *to),
            Ev::Connected { node, .. } => (1, *node),
            Ev::Disconnected { node, .. } => (2, *node),
            Ev::Timer { node, .. } => (3, *node),
            Ev::Heartbeat { node, .. } => (4, *node),
            Ev::RequestTimeout { req } => (5, *req as u32),
            Ev::Update => (6, 0),
            Ev::FaultStart(i) | Ev::FaultEnd(i) | Ev::Churn(i) => (7, *i as u32),
            Ev::Restart { node } => (8, *node),
            Ev::Inject { fault, .. } => (9, *fault as u32),
            Ev::EndOfFaults => (30, 0),
            Ev::Redial => (32, 0),
            Ev::Sample => (31, 0),
        }
    }
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

/// Milliseconds the event queue's wheel spans (a power of two).
const WHEEL: u64 = 8_192;

/// The event queue: a timing wheel of one bucket per millisecond for the
/// next [`WHEEL`] ms, first in first out within a bucket, and an ordered map
/// for later events. Sequence numbers grow with every push, so this pops in
/// exactly `(time, sequence)` order: a bucket only ever holds one time, and
/// an event in the map is compared with the wheel's first by both. Many
/// events share a millisecond at 10,000 nodes, and the buckets keep their
/// allocations, so this is much cheaper than a binary heap or a map of
/// buckets.
struct EventQueue {
    slots: Vec<VecDeque<(u64, Ev)>>,
    in_wheel: usize,
    /// No event in the wheel is earlier; the time of the last event popped.
    cursor: u64,
    /// No event in the wheel is earlier either: where the last scan for the
    /// wheel's first event stopped (an event from the map can come first,
    /// and the wheel need not be scanned again up to here).
    scan: u64,
    far: BTreeMap<(u64, u64), Ev>,
    /// Large, empty buckets from past bursts, handed to the next bucket
    /// that fills up, so that a burst (every node's anti-entropy timer in
    /// one millisecond) costs no chain of reallocations.
    spare: Vec<VecDeque<(u64, Ev)>>,
}

/// Buckets at least this large go to the spare pool when they empty.
const BIG_BUCKET: usize = 1_024;
/// Spare buckets kept at most.
const SPARE_BUCKETS: usize = 4;

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue {
            slots: (0..WHEEL).map(|_| VecDeque::new()).collect(),
            in_wheel: 0,
            cursor: 0,
            scan: 0,
            far: BTreeMap::new(),
            spare: Vec::new(),
        }
    }
}

impl EventQueue {
    fn push(&mut self, at: u64, seq: u64, ev: Ev) {
        debug_assert!(at >= self.cursor, "no event is scheduled in the past");
        if at - self.cursor < WHEEL {
            let slot = &mut self.slots[(at % WHEEL) as usize];
            if slot.len() == slot.capacity()
                && slot.len() >= 64
                && let Some(mut big) = self.spare.pop()
            {
                big.extend(slot.drain(..));
                *slot = big;
            }
            slot.push_back((seq, ev));
            self.in_wheel += 1;
            self.scan = self.scan.min(at);
        } else {
            self.far.insert((at, seq), ev);
        }
    }

    fn pop(&mut self) -> Option<Queued> {
        let mut t = self.scan.max(self.cursor);
        let wheel = if self.in_wheel > 0 {
            while self.slots[(t % WHEEL) as usize].is_empty() {
                t += 1;
            }
            self.scan = t;
            self.slots[(t % WHEEL) as usize]
                .front()
                .map(|(seq, _)| *seq)
        } else {
            None
        };
        let far_first = self
            .far
            .first_key_value()
            .is_some_and(|(k, _)| wheel.is_none_or(|seq| *k < (t, seq)));
        if far_first {
            let ((at, seq), ev) = self.far.pop_first().expect("not empty");
            self.cursor = at;
            return Some(Queued { at, seq, ev });
        }
        wheel?;
        let slot = &mut self.slots[(t % WHEEL) as usize];
        let (seq, ev) = slot.pop_front().expect("not empty");
        if slot.is_empty() && slot.capacity() > BIG_BUCKET {
            // A burst (every node connecting at once, a heal) should not
            // pin memory in thousands of buckets: a few go to the spare
            // pool, the rest shrink. Below that, buckets keep their room,
            // so a busy millisecond costs no reallocation.
            if self.spare.len() < SPARE_BUCKETS {
                self.spare
                    .push(std::mem::replace(slot, VecDeque::with_capacity(64)));
            } else {
                slot.shrink_to(64);
            }
        }
        self.in_wheel -= 1;
        self.cursor = t;
        Some(Queued { at: t, seq, ev })
    }
}

/// What almost every event reads of a node, kept apart from [`Node`] in
/// one dense array (8 bytes a node) so that checking a receiver costs no
/// cache miss on its large record.
#[derive(Clone, Copy)]
struct Hot {
    /// Incarnation: grows at every crash, so events for an earlier life
    /// are dropped.
    inc: u32,
    /// The replica runs (`Node::replica` is `Some`).
    up: bool,
}

struct Node<S> {
    replica: Option<Replica<u32, S>>,
    byzantine: bool,
    skew_ms: i64,
    gossip: GossipNode,
    /// The node's store (lookups only: a restart loads it in hash order).
    disk: HashMap<ChangeHash, Arc<[u8]>, Det>,
    unflushed: VecDeque<(ChangeHash, Arc<[u8]>)>,
    /// What the node acknowledged (lookups only: checked in hash order).
    acked: HashSet<ChangeHash, Det>,
    acked_at_crash: Option<HashSet<ChangeHash, Det>>,
    durable: bool,
    revoked_seen: BTreeSet<u32>,
}

struct Req {
    from: u32,
    to: u32,
    inc_from: u32,
    deadline: u64,
}

/// Sync requests in flight, by id. Ids are handed out one after another
/// and every request has the same timeout, so a deque that starts at the
/// oldest live id serves lookups by index and the timeout sweep from its
/// front, in the order of a map by id.
#[derive(Default)]
struct Requests {
    /// The id of `slots[0]`.
    base: u64,
    /// `None` once answered; the front is always live.
    slots: VecDeque<Option<Req>>,
}

impl Requests {
    fn insert(&mut self, req: u64, r: Req) {
        if self.slots.is_empty() {
            self.base = req;
        }
        debug_assert_eq!(req, self.base + self.slots.len() as u64, "ids in order");
        self.slots.push_back(Some(r));
    }

    fn get(&self, req: u64) -> Option<&Req> {
        let i = req.checked_sub(self.base)?;
        self.slots.get(i as usize)?.as_ref()
    }

    fn remove(&mut self, req: u64) -> Option<Req> {
        let i = req.checked_sub(self.base)?;
        let r = self.slots.get_mut(i as usize)?.take();
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.base += 1;
        }
        r
    }

    /// The oldest live request.
    fn first(&self) -> Option<(u64, &Req)> {
        self.slots.front()?.as_ref().map(|r| (self.base, r))
    }
}

struct UpdateRec {
    at: u64,
    origin: u32,
    reached: Vec<u64>,
    count: usize,
    complete_after: Option<u64>,
    clean: bool,
}

struct Partition {
    group: Vec<u8>,
    one_way: bool,
}

#[derive(Default)]
struct Counters {
    bytes: Vec<u64>,
    messages: u64,
    lost: u64,
    partitioned: u64,
    duplicated: u64,
    payload_copies: u64,
    iwant_copies: u64,
    sync_copies: u64,
    first_deliveries: u64,
    gossip_duplicates_dropped: u64,
    idontwant_sent: u64,
    oversized_refused: u64,
    rejected: u64,
    penalties: u64,
    bans: u64,
    crashes: u64,
    forged_sent: u64,
}

struct Sim<'a, P: Payload> {
    sc: &'a Scenario,
    seed: u64,
    rng: ChaCha8Rng,
    payload: P,
    now: u64,
    seq: u64,
    queue: EventQueue,
    nodes: Vec<Node<P::State>>,
    hot: Vec<Hot>,
    seen: SeenSets,
    scratch_sends: Vec<(u32, Msg)>,
    scratch_peers: Vec<u32>,
    scratch_ids: Vec<MsgIdx>,
    scratch_lazy: Vec<u32>,
    scratch_outs: Vec<Output<u32>>,
    /// Each node's open connections (apart from [`Node`], as [`Hot`]: every
    /// delivery checks its connection).
    conns: Vec<PeerSet>,
    /// When each node's outgoing connections are free again (a TCP
    /// connection delivers in order): (peer, ms), sorted by peer.
    link_ready: Vec<Vec<(u32, u64)>>,
    dialled: Vec<BTreeSet<u32>>,
    banned: BTreeSet<(u32, u32)>,
    pending_dials: BTreeSet<(u32, u32)>,
    partition: Option<Partition>,
    requests: Requests,
    next_req: u64,
    /// Every gossip message seen, by id: its index.
    msg_index: HashMap<MsgId, MsgIdx, Det>,
    /// The bytes and publisher of published messages, by index (what IWANT
    /// is answered with).
    msg_bytes: Vec<Option<(Arc<[u8]>, u32)>>,
    /// Published updates, in order (what a Byzantine node replays).
    published: Vec<MsgIdx>,
    updates: Vec<UpdateRec>,
    by_hash: BTreeMap<ChangeHash, usize>,
    delays: Vec<u32>,
    clean_delays: Vec<u32>,
    forged: BTreeSet<ChangeHash>,
    c: Counters,
    obs: Observations,
    heals: Vec<Heal>,
    sampling: bool,
    sweep_scheduled: bool,
    faults_over: bool,
    trace: DefaultHasher,
    events: u64,
    config: ReplicaConfig,
    honest: usize,
}

impl<'a, P: Payload> Sim<'a, P> {
    fn new(sc: &'a Scenario, seed: u64, rng: ChaCha8Rng, payload: P) -> Self {
        Sim {
            sc,
            seed,
            rng,
            payload,
            now: 0,
            seq: 0,
            queue: EventQueue::default(),
            nodes: Vec::new(),
            hot: Vec::new(),
            seen: SeenSets::new(sc.nodes),
            scratch_sends: Vec::new(),
            scratch_peers: Vec::new(),
            scratch_ids: Vec::new(),
            scratch_lazy: Vec::new(),
            scratch_outs: Vec::new(),
            conns: vec![PeerSet::new(); sc.nodes],
            link_ready: vec![Vec::new(); sc.nodes],
            dialled: vec![BTreeSet::new(); sc.nodes],
            banned: BTreeSet::new(),
            pending_dials: BTreeSet::new(),
            partition: None,
            requests: Requests::default(),
            next_req: 0,
            msg_index: HashMap::default(),
            msg_bytes: Vec::new(),
            published: Vec::new(),
            updates: Vec::new(),
            by_hash: BTreeMap::new(),
            delays: Vec::new(),
            clean_delays: Vec::new(),
            forged: BTreeSet::new(),
            c: Counters {
                bytes: vec![0; sc.nodes],
                ..Default::default()
            },
            obs: Observations::default(),
            heals: Vec::new(),
            sampling: false,
            sweep_scheduled: false,
            faults_over: false,
            trace: DefaultHasher::new(),
            events: 0,
            config: ReplicaConfig {
                anti_entropy_interval_ms: sc.replica.anti_entropy,
                ..ReplicaConfig::default()
            },
            honest: sc.nodes,
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(at, self.seq, ev);
    }

    fn clock(&self, n: u32) -> u64 {
        (EPOCH_MS as i64 + self.now as i64 + self.nodes[n as usize].skew_ms).max(0) as u64
    }

    fn alive(&self, n: u32) -> bool {
        self.hot[n as usize].up
    }

    fn honest_live(&self, n: u32) -> bool {
        !self.nodes[n as usize].byzantine && self.alive(n)
    }

    // ---- setup -----------------------------------------------------------

    fn setup(&mut self) {
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
                if j != i && self.dialled[i as usize].insert(j) {
                    self.dialled[j as usize].insert(i);
                    made += 1;
                }
            }
        }
        for i in 0..n as u32 {
            let peers: Vec<u32> = self.dialled[i as usize]
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
            let mut cands: Vec<u32> = self.conns[i as usize]
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

    // ---- the loop --------------------------------------------------------

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
            self.events += 1;
            let (tag, who) = q.ev.tag();
            (q.at, q.seq, tag, who).hash(&mut self.trace);
            if self.events.is_multiple_of(65_536) {
                progress(Progress {
                    now_ms: self.now,
                    end_ms: end,
                    events: self.events,
                });
            }
            if self.handle(q.ev)? {
                break;
            }
        }
        progress(Progress {
            now_ms: end,
            end_ms: end,
            events: self.events,
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
                if self.hot[node as usize].inc == inc
                    && self.alive(node)
                    && self.conns[node as usize].contains(&peer)
                {
                    let id = self.payload.fixture().node_ids[peer as usize];
                    self.input(node, Input::PeerConnected { peer, node: id });
                    self.ensure_heartbeat(node);
                }
            }
            Ev::Disconnected { node, peer, inc } => {
                if self.hot[node as usize].inc == inc && self.alive(node) {
                    self.input(node, Input::PeerDisconnected { peer });
                    self.ensure_heartbeat(node);
                }
            }
            Ev::Timer { node, inc, timer } => {
                if self.hot[node as usize].inc == inc && self.alive(node) {
                    self.input(node, Input::Timer(timer));
                }
            }
            Ev::Heartbeat { node, inc } => {
                if self.hot[node as usize].inc == inc && self.alive(node) {
                    self.heartbeat(node);
                }
            }
            Ev::RequestTimeout { .. } => {
                // Request ids grow and the timeout is one constant, so the
                // oldest requests come first: fail every one past its
                // deadline, and wake up again at the next deadline.
                self.sweep_scheduled = false;
                while let Some((req, first)) = self.requests.first() {
                    if first.deadline > self.now {
                        let deadline = first.deadline;
                        self.sweep_scheduled = true;
                        self.push(deadline, Ev::RequestTimeout { req });
                        break;
                    }
                    let r = self.requests.remove(req).expect("the first is live");
                    if self.hot[r.from as usize].inc == r.inc_from && self.alive(r.from) {
                        self.input(r.from, Input::RequestFailed { peer: r.to });
                    }
                }
            }
            Ev::Update => self.workload()?,
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => {
                if self.partition.is_some() && !self.faults_over {
                    self.heal(format!(
                        "partition {} healed",
                        self.sc.faults[i].shape_name()
                    ));
                }
            }
            Ev::Churn(i) => {
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
            Ev::Restart { node } => {
                if !self.alive(node) {
                    self.restart(node);
                }
            }
            Ev::Inject { fault, round } => self.inject(fault, round),
            Ev::Redial => {
                let dials: Vec<(u32, u32)> = std::mem::take(&mut self.pending_dials)
                    .into_iter()
                    .collect();
                for (a, b) in dials {
                    self.connect(a, b);
                }
            }
            Ev::EndOfFaults => {
                self.faults_over = true;
                let crashed: Vec<u32> = (0..self.nodes.len() as u32)
                    .filter(|n| !self.alive(*n))
                    .collect();
                let anything = self.partition.is_some() || !crashed.is_empty();
                for n in &crashed {
                    self.restart(*n);
                }
                if anything {
                    self.heal(format!(
                        "end of faults: partition healed, {} node(s) restarted",
                        crashed.len()
                    ));
                } else if !self.sampling {
                    // The quiet period: run until converged.
                    self.sampling = true;
                    self.push(self.now + SAMPLE_MS, Ev::Sample);
                }
            }
            Ev::Sample => {
                if self.converged() {
                    for h in self
                        .heals
                        .iter_mut()
                        .filter(|h| h.converged_after_ms.is_none())
                    {
                        h.converged_after_ms = Some(self.now - h.at_ms);
                    }
                    self.sampling = false;
                    if self.faults_over {
                        return Ok(true);
                    }
                } else {
                    self.push(self.now + SAMPLE_MS, Ev::Sample);
                }
            }
        }
        Ok(false)
    }

    // ---- network ---------------------------------------------------------

    fn blocked(&self, from: u32, to: u32) -> bool {
        match &self.partition {
            None => false,
            Some(p) => {
                let (a, b) = (p.group[from as usize], p.group[to as usize]);
                a != b && (!p.one_way || (a, b) == (0, 1))
            }
        }
    }

    fn base_latency(&self, a: u32, b: u32) -> f64 {
        let (lo, hi) = (a.min(b), a.max(b));
        let u = (splitmix(self.seed ^ ((lo as u64) << 32 | hi as u64)) >> 11) as f64
            / (1u64 << 53) as f64
            * 2.0
            - 1.0;
        self.sc.network.latency as f64 * (1.0 + self.sc.network.link_spread * u)
    }

    fn delay(&mut self, from: u32, to: u32) -> u64 {
        self.delay_ordered(from, to).0
    }

    /// A delay, and whether the message was held back out of order.
    fn delay_ordered(&mut self, from: u32, to: u32) -> (u64, bool) {
        let net = &self.sc.network;
        let jitter = net.jitter as f64;
        let extra = match net.distribution {
            Distribution::Constant => 0.0,
            Distribution::Uniform => self.rng.random::<f64>() * jitter,
            Distribution::Exponential => -jitter * (1.0 - self.rng.random::<f64>()).ln(),
        };
        let mut d = self.base_latency(from, to) + extra;
        let mut reordered = false;
        if net.reorder > 0.0 && self.rng.random::<f64>() < net.reorder {
            d += self.rng.random::<f64>() * net.reorder_delay as f64;
            reordered = true;
        }
        ((d.round() as u64).max(1) + net.processing, reordered)
    }

    fn send(&mut self, from: u32, to: u32, msg: Msg) {
        if let Msg::Gossip { .. } = msg {
            self.c.payload_copies += 1;
        }
        if let Msg::Response { response, .. } = &msg
            && let SyncResponse::Updates { updates } = &**response
        {
            self.c.payload_copies += updates.len() as u64;
            self.c.sync_copies += updates.len() as u64;
        }
        let Some(held_back) = self.transmit(from, to, msg.size()) else {
            return;
        };
        let seen = &self.seen;
        let useless = match &msg {
            Msg::Gossip { id, .. } => seen.has(to, *id),
            Msg::IHave(ids) => ids.iter().all(|id| seen.has(to, *id)),
            // It only stops copies the receiver would forward or answer
            // with, and once it has the message it forwards no more.
            Msg::IDontWant(id) => seen.has(to, *id),
            _ => false,
        };
        if useless && self.hot[to as usize].up {
            self.c.gossip_duplicates_dropped += 1;
            return;
        }
        self.enqueue(from, to, held_back, msg);
    }

    /// The first half of a send: counts a message of `size` bytes, and
    /// applies the partition and the loss. `None` if it is gone; otherwise
    /// how long retransmissions hold it back, ms.
    fn transmit(&mut self, from: u32, to: u32, size: u64) -> Option<u64> {
        self.c.bytes[from as usize] += size;
        self.c.messages += 1;
        if self.blocked(from, to) {
            self.c.partitioned += 1;
            return None;
        }
        let mut held_back = 0;
        if self.sc.network.loss > 0.0 {
            match self.sc.network.loss_model {
                LossModel::Drop => {
                    if self.rng.random::<f64>() < self.sc.network.loss {
                        self.c.lost += 1;
                        return None;
                    }
                }
                LossModel::Retransmit => {
                    let mut rto = self.sc.network.rto.max(1);
                    while self.rng.random::<f64>() < self.sc.network.loss && rto < 120_000 {
                        self.c.lost += 1;
                        self.c.bytes[from as usize] += size;
                        held_back += rto;
                        rto *= 2;
                    }
                }
            }
        }
        Some(held_back)
    }

    /// The second half of a send: duplication, delay, in-order delivery on
    /// the connection, and the delivery event.
    fn enqueue(&mut self, from: u32, to: u32, held_back: u64, msg: Msg) {
        let inc_to = self.hot[to as usize].inc;
        if self.sc.network.duplicate > 0.0 && self.rng.random::<f64>() < self.sc.network.duplicate {
            self.c.duplicated += 1;
            let d = self.delay(from, to) + held_back;
            self.push(
                self.now + d,
                Ev::Deliver {
                    from,
                    to,
                    inc_to,
                    msg: msg.clone(),
                },
            );
        }
        let (d, reordered) = self.delay_ordered(from, to);
        let mut at = self.now + d + held_back;
        if !reordered && self.sc.network.loss_model == LossModel::Retransmit {
            // One TCP connection delivers in order.
            let links = &mut self.link_ready[from as usize];
            match links.binary_search_by_key(&to, |(p, _)| *p) {
                Ok(i) => {
                    at = at.max(links[i].1);
                    links[i].1 = at;
                }
                Err(i) => links.insert(i, (to, at)),
            }
        }
        self.push(
            at,
            Ev::Deliver {
                from,
                to,
                inc_to,
                msg,
            },
        );
    }

    fn connect(&mut self, a: u32, b: u32) {
        let key = (a.min(b), a.max(b));
        if self.banned.contains(&key) || !self.alive(a) || !self.alive(b) {
            return;
        }
        if self.blocked(a, b) || self.blocked(b, a) {
            self.pending_dials.insert(key);
            return;
        }
        if !self.conns[a as usize].insert(b) {
            return;
        }
        self.conns[b as usize].insert(a);
        // TCP + Noise + Yamux take about two round trips before either side
        // sees the connection.
        let at = self.now + (4.0 * self.base_latency(a, b)).round() as u64 + 1;
        let (ia, ib) = (self.hot[a as usize].inc, self.hot[b as usize].inc);
        self.push(
            at,
            Ev::Connected {
                node: a,
                peer: b,
                inc: ia,
            },
        );
        self.push(
            at,
            Ev::Connected {
                node: b,
                peer: a,
                inc: ib,
            },
        );
    }

    fn close(&mut self, a: u32, b: u32) {
        if !self.conns[a as usize].remove(&b) {
            return;
        }
        self.conns[b as usize].remove(&a);
        self.nodes[a as usize].gossip.forget(b);
        self.nodes[b as usize].gossip.forget(a);
        let lat = self.base_latency(a, b).round() as u64;
        let (ia, ib) = (self.hot[a as usize].inc, self.hot[b as usize].inc);
        self.push(
            self.now,
            Ev::Disconnected {
                node: a,
                peer: b,
                inc: ia,
            },
        );
        self.push(
            self.now + lat,
            Ev::Disconnected {
                node: b,
                peer: a,
                inc: ib,
            },
        );
    }

    // ---- the replica -----------------------------------------------------

    /// Hands `input` to node `n`'s replica and carries out its outputs;
    /// true when the replica accepted a gossip message.
    fn input(&mut self, n: u32, input: Input<u32>) -> bool {
        let now = self.clock(n);
        let rand = self.rng.next_u64();
        let Some(r) = self.nodes[n as usize].replica.as_mut() else {
            return false;
        };
        let mut outs = std::mem::take(&mut self.scratch_outs);
        r.handle_into(now, rand, input, &mut outs);
        let accepted = self.carry_out_drain(n, &mut outs);
        self.scratch_outs = outs;
        accepted
    }

    fn carry_out(&mut self, n: u32, mut outs: Vec<Output<u32>>) -> bool {
        self.carry_out_drain(n, &mut outs)
    }

    /// Carries out (and empties) `outs`; true when they accept a gossip
    /// message.
    fn carry_out_drain(&mut self, n: u32, outs: &mut Vec<Output<u32>>) -> bool {
        let mut touched: BTreeSet<u32> = BTreeSet::new();
        let mut applied_any = false;
        let mut accepted = false;
        for out in outs.drain(..) {
            match out {
                Output::Publish(bytes) => self.publish(n, bytes),
                Output::Verdict(v) => {
                    if v == Verdict::Reject {
                        self.c.rejected += 1;
                    }
                    accepted |= v == Verdict::Accept;
                }
                Output::Send { to, request } => {
                    self.next_req += 1;
                    let req = self.next_req;
                    let inc_from = self.hot[n as usize].inc;
                    let deadline = self.now + self.sc.replica.request_timeout;
                    self.requests.insert(
                        req,
                        Req {
                            from: n,
                            to,
                            inc_from,
                            deadline,
                        },
                    );
                    if !self.sweep_scheduled {
                        self.sweep_scheduled = true;
                        self.push(deadline, Ev::RequestTimeout { req });
                    }
                    let request = Box::new(request);
                    self.send(n, to, Msg::Request { req, request });
                }
                Output::Respond {
                    request_id,
                    response,
                } => {
                    if let Some(r) = self.requests.get(request_id) {
                        let to = r.from;
                        self.send(
                            n,
                            to,
                            Msg::Response {
                                req: request_id,
                                response: Box::new(response),
                            },
                        );
                    }
                }
                Output::Persist { hash, bytes } => {
                    let node = &mut self.nodes[n as usize];
                    node.acked.insert(hash);
                    if self.sc.sabotage.ack_before_flush {
                        node.unflushed.push_back((hash, bytes));
                        while node.unflushed.len() > UNFLUSHED {
                            if let Some((h, b)) = node.unflushed.pop_front() {
                                node.disk.insert(h, b);
                            }
                        }
                    } else {
                        node.disk.insert(hash, bytes);
                    }
                }
                Output::RootAdopted { .. } => {}
                Output::Forget { hash } => {
                    // A held update dropped unapplied: its acknowledgement
                    // lapses with it (the bound on held updates).
                    let node = &mut self.nodes[n as usize];
                    node.disk.remove(&hash);
                    node.acked.remove(&hash);
                }
                Output::Applied { hash, summary } => {
                    applied_any = true;
                    self.applied(n, hash, &summary, &mut touched);
                }
                Output::Penalize { .. } => self.c.penalties += 1,
                Output::Refused { .. }
                | Output::Admitted { .. }
                | Output::Held { .. }
                | Output::Submitted(_) => {}
                Output::Disconnect { peer, .. } => self.close(n, peer),
                Output::Ban { peer, .. } => {
                    self.c.bans += 1;
                    self.banned.insert((n.min(peer), n.max(peer)));
                    self.close(n, peer);
                }
                Output::Schedule { after_ms, timer } => {
                    if self.sc.sabotage.no_anti_entropy && timer == Timer::AntiEntropy {
                        continue;
                    }
                    let inc = self.hot[n as usize].inc;
                    self.push(
                        self.now + after_ms,
                        Ev::Timer {
                            node: n,
                            inc,
                            timer,
                        },
                    );
                }
            }
        }
        if applied_any && !self.nodes[n as usize].byzantine {
            self.probe(n, touched);
        }
        accepted
    }

    fn applied(
        &mut self,
        n: u32,
        hash: ChangeHash,
        summary: &ChangeSummary,
        touched: &mut BTreeSet<u32>,
    ) {
        (n, hash.0).hash(&mut self.trace);
        if self.nodes[n as usize].byzantine {
            return;
        }
        match self.by_hash.get(&hash) {
            None => self.obs.unauthentic.push((n, hash, self.now)),
            Some(&i) => {
                let u = &mut self.updates[i];
                let (w, bit) = (n as usize / 64, 1u64 << (n % 64));
                if u.reached[w] & bit == 0 {
                    u.reached[w] |= bit;
                    u.count += 1;
                    if u.count == self.honest && u.complete_after.is_none() {
                        u.complete_after = Some(self.now - u.at);
                    }
                    if u.origin != n {
                        self.c.first_deliveries += 1;
                        let d = (self.now - u.at).min(u32::MAX as u64) as u32;
                        self.delays.push(d);
                        if u.clean {
                            self.clean_delays.push(d);
                        }
                    }
                }
            }
        }
        for s in summary.revocations() {
            if let Some(k) = light::subject_index(s) {
                self.nodes[n as usize].revoked_seen.insert(k);
                touched.insert(k);
            }
        }
        for b in summary.bundles() {
            if let Some(k) = b.strip_prefix('g').and_then(|k| k.parse().ok()) {
                touched.insert(k);
            }
        }
    }

    /// Revoke wins: asks the node's real decision procedure about subjects it
    /// has accepted revocations of.
    fn probe(&mut self, n: u32, mut subjects: BTreeSet<u32>) {
        let len = self.nodes[n as usize].revoked_seen.len();
        if len > 0 {
            // As `choose` on the sorted list would pick, without the list.
            let i = self.rng.random_range(..len);
            let k = self.nodes[n as usize].revoked_seen.iter().nth(i);
            subjects.extend(k);
        }
        let node = &self.nodes[n as usize];
        let Some(r) = node.replica.as_ref() else {
            return;
        };
        for k in subjects {
            if node.revoked_seen.contains(&k) && self.payload.allows(r.state(), k) {
                self.obs.revoke_violations.push((n, k, self.now));
            }
        }
    }

    // ---- gossip ----------------------------------------------------------

    /// The index of the message with these bytes, given at first sight.
    fn intern(&mut self, bytes: &[u8]) -> MsgIdx {
        let next = self.msg_bytes.len() as MsgIdx;
        let i = *self.msg_index.entry(msg_id(bytes)).or_insert(next);
        if i == next {
            self.msg_bytes.push(None);
        }
        i
    }

    fn publish(&mut self, n: u32, bytes: Arc<[u8]>) {
        let id = self.intern(&bytes);
        let source = self.source_of(n);
        if self.msg_bytes[id as usize].is_none() {
            self.msg_bytes[id as usize] = Some((bytes.clone(), source));
            self.published.push(id);
        }
        let e = self.next_heartbeat(n);
        self.seen.see(n, id);
        self.nodes[n as usize].gossip.remember(id, e);
        let targets: Vec<u32> = if self.sc.gossip.flood_publish {
            self.conns[n as usize].iter().collect()
        } else {
            self.nodes[n as usize].gossip.mesh.iter().collect()
        };
        for p in targets {
            self.send(
                n,
                p,
                Msg::Gossip {
                    id,
                    source,
                    bytes: bytes.clone(),
                },
            );
        }
        self.ensure_heartbeat(n);
    }

    /// The `source` a message published by `n` carries.
    fn source_of(&self, n: u32) -> u32 {
        if self.sc.gossip.anonymous {
            NO_SOURCE
        } else {
            n
        }
    }

    fn heartbeat_phase(&self, n: u32) -> u64 {
        (n as u64).wrapping_mul(7_919) % self.sc.gossip.heartbeat
    }

    /// The number of node `n`'s first heartbeat strictly after now.
    fn next_heartbeat(&self, n: u32) -> u64 {
        let phase = self.heartbeat_phase(n);
        if self.now < phase {
            0
        } else {
            (self.now - phase) / self.sc.gossip.heartbeat + 1
        }
    }

    fn ensure_heartbeat(&mut self, n: u32) {
        let node = &self.nodes[n as usize];
        if node.gossip.heartbeat_scheduled || !self.hot[n as usize].up {
            return;
        }
        // Each node's heartbeat ticks on its own phase.
        let at = self.heartbeat_phase(n) + self.next_heartbeat(n) * self.sc.gossip.heartbeat;
        self.nodes[n as usize].gossip.heartbeat_scheduled = true;
        let inc = self.hot[n as usize].inc;
        self.push(at, Ev::Heartbeat { node: n, inc });
    }

    fn heartbeat(&mut self, n: u32) {
        let k = self.next_heartbeat(n).saturating_sub(1);
        let (d, d_low, d_high, d_lazy, hg, hl) = {
            let g = &self.sc.gossip;
            (
                g.d,
                g.d_low,
                g.d_high,
                g.d_lazy,
                g.history_gossip,
                g.history_length,
            )
        };
        let node = &mut self.nodes[n as usize];
        let conns = &self.conns[n as usize];
        node.gossip.heartbeat_scheduled = false;
        if node.gossip.mesh.iter().any(|p| !conns.contains(&p)) {
            node.gossip.mesh.retain(|p| conns.contains(p));
        }
        // Scratch space reused across heartbeats.
        let mut sends = std::mem::take(&mut self.scratch_sends);
        let mut cands = std::mem::take(&mut self.scratch_peers);
        if node.gossip.mesh.len() < d_low {
            cands.clear();
            cands.extend(conns.iter().filter(|p| !node.gossip.mesh.contains(p)));
            while node.gossip.mesh.len() < d && !cands.is_empty() {
                let i = self.rng.random_range(0..cands.len());
                let p = cands.swap_remove(i);
                node.gossip.mesh.insert(p);
                sends.push((p, Msg::Graft));
            }
        } else if node.gossip.mesh.len() > d_high {
            cands.clear();
            cands.extend(node.gossip.mesh.iter());
            while cands.len() > d {
                let i = self.rng.random_range(0..cands.len());
                let p = cands.swap_remove(i);
                node.gossip.mesh.remove(&p);
                sends.push((p, Msg::Prune));
            }
        }
        let mut ids = std::mem::take(&mut self.scratch_ids);
        let mut lazy = std::mem::take(&mut self.scratch_lazy);
        ids.clear();
        lazy.clear();
        node.gossip.gossip_ids_into(k, hg, &mut ids);
        if !ids.is_empty() {
            cands.clear();
            cands.extend(conns.iter().filter(|p| !node.gossip.mesh.contains(p)));
            for _ in 0..d_lazy {
                if cands.is_empty() {
                    break;
                }
                let i = self.rng.random_range(0..cands.len());
                lazy.push(cands.swap_remove(i));
            }
        }
        node.gossip.prune(k + 1, hl);
        let mesh = node.gossip.mesh.len();
        let again = node.gossip.gossip_after(k, hg)
            || mesh > d_high
            || (mesh < d_low && mesh < conns.len());
        for (p, m) in sends.drain(..) {
            self.send(n, p, m);
        }
        // IHAVE, as `send` would carry it; the ids are shared by every
        // target, and copied only if one of them is missing one.
        let size = ihave_size(ids.len());
        let mut shared: Option<Arc<[MsgIdx]>> = None;
        for &p in &lazy {
            let Some(held_back) = self.transmit(n, p, size) else {
                continue;
            };
            if self.hot[p as usize].up && ids.iter().all(|id| self.seen.has(p, *id)) {
                self.c.gossip_duplicates_dropped += 1;
                continue;
            }
            let ids = shared.get_or_insert_with(|| Arc::from(&ids[..])).clone();
            self.enqueue(n, p, held_back, Msg::IHave(ids));
        }
        self.scratch_sends = sends;
        self.scratch_peers = cands;
        self.scratch_ids = ids;
        self.scratch_lazy = lazy;
        if again {
            self.ensure_heartbeat(n);
        }
    }

    fn deliver(&mut self, from: u32, to: u32, inc_to: u32, msg: Msg) {
        let h = self.hot[to as usize];
        if h.inc != inc_to || !h.up || !self.conns[to as usize].contains(&from) {
            return;
        }
        match msg {
            Msg::Gossip { id, source, bytes } => {
                if !self.seen.see(to, id) {
                    self.c.gossip_duplicates_dropped += 1;
                    return;
                }
                let g = &mut self.nodes[to as usize].gossip;
                let promised = g.asked.remove(&id).map(|(_, p)| p);
                if bytes.len() > self.sc.gossip.max_transmit {
                    self.c.oversized_refused += 1;
                    return;
                }
                if bytes.len() + envelope(source) > self.sc.gossip.idontwant_threshold {
                    // Gossipsub 1.2, before validation: mesh peers and the
                    // peer an IWANT for it went to need not send it too.
                    let mut peers: Vec<u32> = g.mesh.iter().chain(promised).collect();
                    peers.sort_unstable();
                    peers.dedup();
                    peers.retain(|p| *p != from && *p != source);
                    for p in peers {
                        self.c.idontwant_sent += 1;
                        self.send(to, p, Msg::IDontWant(id));
                    }
                }
                let accepted = self.input(
                    to,
                    Input::Gossip {
                        from,
                        bytes: bytes.to_vec(),
                    },
                );
                if accepted {
                    let e = self.next_heartbeat(to);
                    let now = self.now;
                    let g = &mut self.nodes[to as usize].gossip;
                    g.remember(id, e);
                    // Not back to the sender, not to the publisher, not to
                    // a peer that said IDONTWANT (gossipsub's `forward_msg`).
                    let mut mesh = std::mem::take(&mut self.scratch_peers);
                    mesh.clear();
                    mesh.extend(
                        g.mesh
                            .iter()
                            .filter(|p| *p != from && *p != source && !g.dont_want(*p, id, now)),
                    );
                    for &p in &mesh {
                        self.send(
                            to,
                            p,
                            Msg::Gossip {
                                id,
                                source,
                                bytes: bytes.clone(),
                            },
                        );
                    }
                    self.scratch_peers = mesh;
                    self.ensure_heartbeat(to);
                }
            }
            Msg::Oversized { .. } => {
                // The length-prefixed codec refuses the frame before reading it.
                self.c.oversized_refused += 1;
            }
            Msg::IHave(ids) => {
                let now = self.now;
                let g = &mut self.nodes[to as usize].gossip;
                let want: Vec<MsgIdx> = ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        !self.seen.has(to, *id)
                            && g.asked
                                .get(id)
                                .is_none_or(|(t, _)| now >= t + IWANT_FOLLOWUP_MS)
                    })
                    .collect();
                if !want.is_empty() {
                    for id in &want {
                        g.asked.insert(*id, (now, from));
                    }
                    self.send(to, from, Msg::IWant(want));
                }
            }
            Msg::IWant(ids) => {
                for id in ids {
                    let u = self.next_heartbeat(to);
                    let g = &self.nodes[to as usize].gossip;
                    if g.in_cache(id, u, self.sc.gossip.history_length)
                        && !g.dont_want(from, id, self.now)
                        && let Some((bytes, source)) = self.msg_bytes[id as usize].clone()
                    {
                        self.c.iwant_copies += 1;
                        self.send(to, from, Msg::Gossip { id, source, bytes });
                    }
                }
            }
            Msg::IDontWant(id) => {
                let now = self.now;
                self.nodes[to as usize]
                    .gossip
                    .dont_send(from, id, now, IDONTWANT_MS);
            }
            Msg::Graft => {
                self.nodes[to as usize].gossip.mesh.insert(from);
                if self.nodes[to as usize].gossip.mesh.len() > self.sc.gossip.d_high {
                    self.ensure_heartbeat(to);
                }
            }
            Msg::Prune => {
                self.nodes[to as usize].gossip.mesh.remove(&from);
                self.ensure_heartbeat(to);
            }
            Msg::Request { req, request } => {
                self.input(
                    to,
                    Input::Request {
                        from,
                        request_id: req,
                        request: *request,
                    },
                );
            }
            Msg::Response { req, response } => {
                if self.requests.remove(req).is_some() {
                    self.input(
                        to,
                        Input::Response {
                            from,
                            response: *response,
                        },
                    );
                }
            }
        }
    }

    // ---- workload and faults ---------------------------------------------

    fn random_honest_live(&mut self) -> Option<u32> {
        let live: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|n| self.honest_live(*n))
            .collect();
        live.choose(&mut self.rng).copied()
    }

    fn workload(&mut self) -> Result<(), SimError> {
        if self.faults_over {
            return Ok(());
        }
        self.push(self.now + self.sc.workload.interval, Ev::Update);
        let Some(n) = self.random_honest_live() else {
            return Ok(());
        };
        let action = if self.rng.random::<f64>() < self.sc.workload.revoke_fraction {
            Action::Revoke
        } else {
            Action::Grant
        };
        let k = self.rng.random_range(0..self.sc.workload.subjects);
        let now = self.clock(n);
        let state = self.nodes[n as usize]
            .replica
            .as_ref()
            .expect("live")
            .state();
        let bytes = self.payload.author(state, action, k)?;
        let r = self.nodes[n as usize].replica.as_mut().expect("live");
        // A submit draws no random number: 0 keeps the run's RNG stream.
        let mut outs = r.handle(now, 0, Input::Command(Command::Submit(bytes.into())));
        let answer = match outs.pop() {
            Some(Output::Submitted(answer)) => answer,
            other => unreachable!("a command's effects end with its answer, not {other:?}"),
        };
        let accepted = answer
            .map_err(|e| SimError::Fixture(format!("an operator update was refused: {e}")))?;
        let clean = self.partition.is_none()
            && (0..self.nodes.len() as u32)
                .all(|m| self.nodes[m as usize].byzantine || self.alive(m));
        if let Accepted::Applied(hash) = accepted {
            let words = self.nodes.len().div_ceil(64);
            self.by_hash.insert(hash, self.updates.len());
            self.updates.push(UpdateRec {
                at: self.now,
                origin: n,
                reached: vec![0; words],
                count: 0,
                complete_after: None,
                clean,
            });
        }
        self.carry_out(n, outs);
        Ok(())
    }

    fn fault_start(&mut self, i: usize) {
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
                self.partition = Some(Partition {
                    group,
                    one_way: shape == Shape::OneWay,
                });
                if self.sc.network.partition_closes {
                    // TCP gives up on the connections across the cut (in
                    // either direction); they are redialed after the heal.
                    let mut cut = Vec::new();
                    for a in 0..n as u32 {
                        for b in self.conns[a as usize].iter() {
                            if a < b && (self.blocked(a, b) || self.blocked(b, a)) {
                                cut.push((a, b));
                            }
                        }
                    }
                    for (a, b) in cut {
                        self.close(a, b);
                        self.pending_dials.insert((a, b));
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

    fn heal(&mut self, what: String) {
        self.partition = None;
        self.push(self.now + self.sc.network.redial, Ev::Redial);
        self.heals.push(Heal {
            at_ms: self.now,
            what,
            converged_after_ms: None,
        });
        if !self.sampling {
            self.sampling = true;
            self.push(self.now + SAMPLE_MS, Ev::Sample);
        }
    }

    fn crash(&mut self, n: u32, durable: bool, down: u64) {
        self.c.crashes += 1;
        let peers: Vec<u32> = self.conns[n as usize].iter().collect();
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

    fn restart(&mut self, n: u32) {
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
                    self.obs.lost.push((n, h, self.now));
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
        let peers: Vec<u32> = self.dialled[n as usize].iter().copied().collect();
        for p in peers {
            self.connect(n, p);
        }
        self.ensure_heartbeat(n);
    }

    fn inject(&mut self, fault: usize, round: u32) {
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
                        .published
                        .choose(&mut self.rng)
                        .and_then(|id| self.msg_bytes[*id as usize].as_ref())
                        .map(|(b, _)| b.clone())
                    else {
                        continue;
                    };
                    // Re-published under its own name.
                    Msg::Gossip {
                        id: self.intern(&bytes),
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
                        self.forged.insert(id);
                    }
                    let bytes: Arc<[u8]> = bytes.into();
                    Msg::Gossip {
                        id: self.intern(&bytes),
                        source: self.source_of(b),
                        bytes,
                    }
                }
                _ => {
                    let mut junk = vec![0u8; 512];
                    self.rng.fill_bytes(&mut junk);
                    let bytes: Arc<[u8]> = junk.into();
                    Msg::Gossip {
                        id: self.intern(&bytes),
                        source: self.source_of(b),
                        bytes,
                    }
                }
            };
            self.c.forged_sent += 1;
            let peers: Vec<u32> = self.conns[b as usize].iter().collect();
            for p in peers {
                self.send(b, p, msg.clone());
            }
        }
    }

    // ---- results ---------------------------------------------------------

    fn converged(&self) -> bool {
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

    fn finish(mut self) -> Report {
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
                    self.obs.revoke_violations.push((n, k, self.now));
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
        self.obs.head_sets_at_end = sets.len();
        self.obs.live_at_end = live;
        self.obs.divergent_nodes = divergent;
        self.obs.forged_applied = self
            .obs
            .unauthentic
            .iter()
            .filter(|(_, h, _)| self.forged.contains(h))
            .count();
        let invariants = check::judge(&self.obs);

        // Latency and reach.
        let mut delays = std::mem::take(&mut self.delays);
        delays.sort_unstable();
        let pct = |p: f64| -> u64 {
            if delays.is_empty() {
                return 0;
            }
            let i = ((p * delays.len() as f64).ceil() as usize).clamp(1, delays.len()) - 1;
            delays[i] as u64
        };
        let updates = self.updates.len() as u64;
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
        let total_bytes: u64 = self.c.bytes.iter().sum();
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
            events: self.events,
            trace_digest: format!("{:016x}", self.trace.finish()),
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
                let clean = self.updates.iter().filter(|u| u.clean).count() as u64;
                let pairs = clean * self.honest.saturating_sub(1) as u64;
                if pairs == 0 {
                    1.0
                } else {
                    round6(
                        self.clean_delays.iter().filter(|d| **d <= 1_500).count() as f64
                            / pairs as f64,
                    )
                }
            },
            reach,
            latency_cdf: cdf,
            heals: self.heals.clone(),
            traffic: Traffic {
                bytes_total: total_bytes,
                bytes_per_node: total_bytes / self.nodes.len().max(1) as u64,
                messages: self.c.messages,
                lost: self.c.lost,
                partitioned: self.c.partitioned,
                duplicated: self.c.duplicated,
                payload_copies: self.c.payload_copies,
                copies_gossip: self.c.payload_copies - self.c.iwant_copies - self.c.sync_copies,
                copies_iwant: self.c.iwant_copies,
                copies_sync: self.c.sync_copies,
                first_deliveries: self.c.first_deliveries,
                amplification: if self.c.first_deliveries == 0 {
                    0.0
                } else {
                    round6(self.c.payload_copies as f64 / self.c.first_deliveries as f64)
                },
                duplicates_dropped: self.c.gossip_duplicates_dropped,
                idontwant_sent: self.c.idontwant_sent,
                rejected: self.c.rejected,
                oversized_refused: self.c.oversized_refused,
                penalties: self.c.penalties,
                bans: self.c.bans,
                crashes: self.c.crashes,
                forged_sent: self.c.forged_sent,
            },
            passed: invariants.iter().all(|i| i.pass),
            invariants,
            replay: String::new(),
        };
        report.with_replay()
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn count_of(count: Option<f64>, n: usize) -> usize {
    match count {
        None => 1,
        Some(c) if c >= 1.0 => c as usize,
        Some(c) => ((c * n as f64).round() as usize).max(1),
    }
}

impl crate::scenario::Fault {
    fn shape_name(&self) -> &'static str {
        match self.shape {
            Some(Shape::Halves) | None => "halves",
            Some(Shape::Isolate) => "isolate",
            Some(Shape::Groups) => "groups",
            Some(Shape::OneWay) => "one-way",
        }
    }
}
