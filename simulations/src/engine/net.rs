//! The network: links between nodes, the connections over them and the
//! partitions that cut them.
//!
//! Every message crosses a link: it may be lost (`loss`; with the default
//! `retransmit` model, as on libp2p's TCP, it is sent again after a
//! retransmission timeout that doubles each time, and the connection
//! delivers in order behind it; with `drop` it is gone), delivered twice
//! (`duplicate`), held back out of order (`reorder`), and takes the link's
//! base latency (each link's own, drawn once from `latency` ± `link_spread`)
//! plus jitter from the scenario's distribution. A partition drops messages
//! between groups (one direction only for `one_way`). By default it also
//! closes the connections across it (the node pings each peer every second
//! and closes a connection whose ping goes unanswered for two), and nodes
//! redial each one within `redial` after the heal, a uniform draw per
//! connection (each new connection starts with `Hello`, which syncs);
//! with `partition_closes = false` connections stay open, as across a short
//! routing blackhole, and sync requests across the cut time out. A crash
//! closes the node's connections (its peers see them close, as after
//! `kill -9`); on restart it redials the peers of its original connections.
//!
//! Deliveries that cannot change anything (a gossip message, an IHAVE or an
//! IDONTWANT whose every id the receiver has already seen, at send time) are
//! counted in the traffic figures but not queued: a 10,000-node run would
//! otherwise spend most of its time on duplicates that the receiver drops
//! unread.
//!
//! Rules: a link's base latency is a pure function of the seed and the two
//! nodes, drawing nothing from the RNG; each message draws from it for its
//! loss, then its duplication, then for each copy its jitter and
//! reordering, in that order.

use std::collections::BTreeSet;

use rand::Rng;
use weft_protocol::wire::SyncResponse;

use super::Sim;
use super::msg::Msg;
use super::queue::Ev;
use crate::gossip::PeerSet;
use crate::payload::Payload;
use crate::scenario::{Distribution, LossModel};

/// The connections between nodes and what stands in their way.
pub(super) struct Network {
    /// Each node's open connections (apart from the node records, as
    /// `Sim::hot`: every delivery checks its connection).
    pub(super) conns: Vec<PeerSet>,
    /// When each node's outgoing connections are free again (a TCP
    /// connection delivers in order): (peer, ms), sorted by peer.
    link_ready: Vec<Vec<(u32, u64)>>,
    /// The peers each node dialed or was dialed by at the start: whom it
    /// redials after a restart.
    pub(super) dialled: Vec<BTreeSet<u32>>,
    /// Pairs (lower node first) of which one banned the other: never
    /// connected again.
    pub(super) banned: BTreeSet<(u32, u32)>,
    /// Pairs (lower node first) to dial at the next redial: connections cut
    /// by a partition, or dialed across one.
    pub(super) pending_dials: BTreeSet<(u32, u32)>,
    /// The partition in force, if any.
    pub(super) partition: Option<Partition>,
}

/// A partition: which group each node is in.
pub(super) struct Partition {
    /// Each node's group.
    pub(super) group: Vec<u8>,
    /// Only messages from group 0 to group 1 are dropped.
    pub(super) one_way: bool,
}

impl Network {
    pub(super) fn new(nodes: usize) -> Self {
        Network {
            conns: vec![PeerSet::new(); nodes],
            link_ready: vec![Vec::new(); nodes],
            dialled: vec![BTreeSet::new(); nodes],
            banned: BTreeSet::new(),
            pending_dials: BTreeSet::new(),
            partition: None,
        }
    }

    /// The partition drops messages from `from` to `to`.
    pub(super) fn blocked(&self, from: u32, to: u32) -> bool {
        match &self.partition {
            None => false,
            Some(p) => {
                let (a, b) = (p.group[from as usize], p.group[to as usize]);
                a != b && (!p.one_way || (a, b) == (0, 1))
            }
        }
    }
}

impl<P: Payload> Sim<'_, P> {
    /// The base latency of the link between `a` and `b`, ms.
    pub(super) fn base_latency(&self, a: u32, b: u32) -> f64 {
        let (lo, hi) = (a.min(b), a.max(b));
        let u = (splitmix(self.seed ^ ((lo as u64) << 32 | hi as u64)) >> 11) as f64
            / (1u64 << 53) as f64
            * 2.0
            - 1.0;
        self.sc.network.latency as f64 * (1.0 + self.sc.network.link_spread * u)
    }

    /// A delay for a message from `from` to `to`, ms.
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

    /// Sends `msg` from `from` to `to`: counts it, and queues its delivery
    /// unless the link loses it or the receiver has no use for it.
    pub(super) fn send(&mut self, from: u32, to: u32, msg: Msg) {
        if let Msg::Gossip { .. } = msg {
            self.stats.count.payload_copies += 1;
        }
        if let Msg::Response { response, .. } = &msg
            && let SyncResponse::Updates { updates } = &**response
        {
            self.stats.count.payload_copies += updates.len() as u64;
            self.stats.count.sync_copies += updates.len() as u64;
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
            self.stats.count.gossip_duplicates_dropped += 1;
            return;
        }
        self.enqueue(from, to, held_back, msg);
    }

    /// The first half of a send: counts a message of `size` bytes, and
    /// applies the partition and the loss. `None` if it is gone; otherwise
    /// how long retransmissions hold it back, ms.
    pub(super) fn transmit(&mut self, from: u32, to: u32, size: u64) -> Option<u64> {
        self.stats.count.bytes[from as usize] += size;
        self.stats.count.messages += 1;
        if self.net.blocked(from, to) {
            self.stats.count.partitioned += 1;
            return None;
        }
        let mut held_back = 0;
        if self.sc.network.loss > 0.0 {
            match self.sc.network.loss_model {
                LossModel::Drop => {
                    if self.rng.random::<f64>() < self.sc.network.loss {
                        self.stats.count.lost += 1;
                        return None;
                    }
                }
                LossModel::Retransmit => {
                    let mut rto = self.sc.network.rto.max(1);
                    while self.rng.random::<f64>() < self.sc.network.loss && rto < 120_000 {
                        self.stats.count.lost += 1;
                        self.stats.count.bytes[from as usize] += size;
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
    pub(super) fn enqueue(&mut self, from: u32, to: u32, held_back: u64, msg: Msg) {
        let inc_to = self.hot[to as usize].inc;
        if self.sc.network.duplicate > 0.0 && self.rng.random::<f64>() < self.sc.network.duplicate {
            self.stats.count.duplicated += 1;
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
            let links = &mut self.net.link_ready[from as usize];
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

    /// Opens a connection between `a` and `b` (both see it after about two
    /// round trips), unless they banned each other, one is down, or a
    /// partition stands between them (then it is dialed at the next redial).
    pub(super) fn connect(&mut self, a: u32, b: u32) {
        let key = (a.min(b), a.max(b));
        if self.net.banned.contains(&key) || !self.alive(a) || !self.alive(b) {
            return;
        }
        if self.net.blocked(a, b) || self.net.blocked(b, a) {
            self.net.pending_dials.insert(key);
            return;
        }
        if !self.net.conns[a as usize].insert(b) {
            return;
        }
        self.net.conns[b as usize].insert(a);
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

    /// Closes the connection between `a` and `b`: `a` sees it close now,
    /// `b` one latency later.
    pub(super) fn close(&mut self, a: u32, b: u32) {
        if !self.net.conns[a as usize].remove(&b) {
            return;
        }
        self.net.conns[b as usize].remove(&a);
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
}

/// SplitMix64's finalizer: a well-mixed 64-bit hash of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
