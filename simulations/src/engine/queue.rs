//! The events of a run and the queue that orders them.
//!
//! Rules: events pop in `(time, sequence)` order, where the sequence number
//! is handed out by [`EventQueue::push`], one more at every push; nothing is
//! queued earlier than the last event popped. An event's [`Ev::tag`] (its
//! kind and the node or index it concerns) goes into the trace digest with
//! its time and sequence number.

use std::collections::{BTreeMap, VecDeque};

use weft_protocol::replica::Timer;

use super::msg::Msg;

/// One thing that happens at a virtual time. Events for a node carry its
/// incarnation (`inc`, `inc_to`) and are dropped if it has crashed since.
#[derive(Debug)]
pub(super) enum Ev {
    /// A message arrives at `to` over its connection from `from`.
    Deliver {
        from: u32,
        to: u32,
        inc_to: u32,
        msg: Msg,
    },
    /// The node sees its connection to `peer` open.
    Connected { node: u32, peer: u32, inc: u32 },
    /// The node sees its connection to `peer` close.
    Disconnected { node: u32, peer: u32, inc: u32 },
    /// A timer the replica asked for (`Output::Schedule`) fires.
    Timer {
        node: u32,
        inc: u32,
        timer: Timer<u32>,
    },
    /// The node's gossipsub heartbeat.
    Heartbeat { node: u32, inc: u32 },
    /// The sweep of timed-out sync requests.
    RequestTimeout { req: u64 },
    /// The workload submits an update.
    Update,
    /// Fault `i` of the scenario starts (a partition, a crash).
    FaultStart(usize),
    /// Partition `i` heals.
    FaultEnd(usize),
    /// The next crash of churn fault `i`.
    Churn(usize),
    /// A crashed node restarts.
    Restart { node: u32 },
    /// Byzantine fault `fault` sends its forgeries of round `round`.
    Inject { fault: usize, round: u32 },
    /// The scenario's duration is over.
    EndOfFaults,
    /// A connection cut by a partition is dialed again.
    Redial { a: u32, b: u32 },
    /// Convergence is sampled.
    Sample,
}

impl Ev {
    /// The event's kind and the node (or request, or fault) it concerns,
    /// for the trace digest.
    pub(super) fn tag(&self) -> (u8, u32) {
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
            Ev::Redial { a, .. } => (32, *a),
            Ev::Sample => (31, 0),
        }
    }
}

/// An event popped from the queue, with its time and sequence number.
pub(super) struct Queued {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) ev: Ev,
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
pub(super) struct EventQueue {
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
    /// The sequence number of the last event pushed.
    seq: u64,
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
            seq: 0,
        }
    }
}

impl EventQueue {
    /// Queues `ev` at `at`, after every event already queued at `at`.
    pub(super) fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let seq = self.seq;
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

    /// The next event in `(time, sequence)` order.
    pub(super) fn pop(&mut self) -> Option<Queued> {
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
