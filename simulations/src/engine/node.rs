//! A node: its record, the inputs to its replica, and how the replica's
//! outputs are carried out.
//!
//! | output | carried out as |
//! |---|---|
//! | `Publish` | published through the node's router |
//! | `Send`, `Respond` | a sync request or response on the network, the request with a timeout |
//! | `Persist` | written to the node's store (held back by `ack_before_flush` sabotage) |
//! | `Forget` | removed from the store, its acknowledgement with it |
//! | `Applied` | recorded (reach, delays), and the subjects it touches probed for revoke wins |
//! | `Disconnect`, `Ban` | the connection closed; a ban keeps the pair apart for good |
//! | `Schedule` | a timer event (none for anti-entropy under `no_anti_entropy` sabotage) |
//! | `Verdict` | a rejection counted; an acceptance lets the router forward the message |
//! | `Penalize` | counted |
//! | `RootAdopted`, `Refused`, `Admitted`, `Held`, `Submitted` | nothing |
//!
//! Rules: every input draws exactly one random number for the replica (a
//! submit, in `workload`, draws none); a Byzantine node's applied updates
//! go into the trace digest but into no statistic or check.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use rand::{Rng, RngCore};
use weft_crdt::{ChangeHash, ChangeSummary};
use weft_protocol::replica::{Input, Output, Replica, Timer, Verdict};

use super::Sim;
use super::queue::Ev;
use crate::gossip::{Det, GossipNode};
use crate::light;
use crate::payload::Payload;

/// Acknowledged-but-unflushed writes a sabotaged store keeps in memory.
const UNFLUSHED: usize = 2;

/// What almost every event reads of a node, kept apart from [`Node`] in
/// one dense array (8 bytes a node) so that checking a receiver costs no
/// cache miss on its large record.
#[derive(Clone, Copy)]
pub(super) struct Hot {
    /// Incarnation: grows at every crash, so events for an earlier life
    /// are dropped.
    pub(super) inc: u32,
    /// The replica runs (`Node::replica` is `Some`).
    pub(super) up: bool,
}

/// One simulated node.
pub(super) struct Node<S> {
    /// The replica; `None` while crashed.
    pub(super) replica: Option<Replica<u32, S>>,
    pub(super) byzantine: bool,
    /// How far the node's clock is off, ms.
    pub(super) skew_ms: i64,
    /// The node's gossipsub router state.
    pub(super) gossip: GossipNode,
    /// The node's store (lookups only: a restart loads it in hash order).
    pub(super) disk: HashMap<ChangeHash, Arc<[u8]>, Det>,
    /// Writes acknowledged but not yet in `disk` (`ack_before_flush`
    /// sabotage): a crash loses them.
    pub(super) unflushed: VecDeque<(ChangeHash, Arc<[u8]>)>,
    /// What the node acknowledged (lookups only: checked in hash order).
    pub(super) acked: HashSet<ChangeHash, Det>,
    /// What the node had acknowledged when it crashed with its store kept:
    /// checked against what it loads on restart.
    pub(super) acked_at_crash: Option<HashSet<ChangeHash, Det>>,
    /// The node's last crash kept its store.
    pub(super) durable: bool,
    /// The subjects whose revocation the node has applied.
    pub(super) revoked_seen: BTreeSet<u32>,
}

impl<P: Payload> Sim<'_, P> {
    /// Hands `input` to node `n`'s replica and carries out its outputs;
    /// true when the replica accepted a gossip message.
    pub(super) fn input(&mut self, n: u32, input: Input<u32>) -> bool {
        let now = self.clock(n);
        let rand = self.rng.next_u64();
        let Some(r) = self.nodes[n as usize].replica.as_mut() else {
            return false;
        };
        let mut outs = std::mem::take(&mut self.scratch.outs);
        r.handle_into(now, rand, input, &mut outs);
        let accepted = self.carry_out_drain(n, &mut outs);
        self.scratch.outs = outs;
        accepted
    }

    /// Carries out `outs`, node `n`'s replica's outputs; true when they
    /// accept a gossip message.
    pub(super) fn carry_out(&mut self, n: u32, mut outs: Vec<Output<u32>>) -> bool {
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
                        self.stats.count.rejected += 1;
                    }
                    accepted |= v == Verdict::Accept;
                }
                Output::Send { to, request } => self.request(n, to, request),
                Output::Respond {
                    request_id,
                    response,
                } => self.respond(n, request_id, response),
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
                Output::Penalize { .. } => self.stats.count.penalties += 1,
                Output::Refused { .. }
                | Output::Admitted { .. }
                | Output::Held { .. }
                | Output::Submitted(_) => {}
                Output::Disconnect { peer, .. } => self.close(n, peer),
                Output::Ban { peer, .. } => {
                    self.stats.count.bans += 1;
                    self.net.banned.insert((n.min(peer), n.max(peer)));
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

    /// Node `n` applied update `hash`: records it and notes the subjects it
    /// touches (for [`Sim::probe`]).
    fn applied(
        &mut self,
        n: u32,
        hash: ChangeHash,
        summary: &ChangeSummary,
        touched: &mut BTreeSet<u32>,
    ) {
        (n, hash.0).hash(&mut self.stats.trace);
        if self.nodes[n as usize].byzantine {
            return;
        }
        self.stats.reached(n, hash, self.now, self.honest);
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
                self.stats.obs.revoke_violations.push((n, k, self.now));
            }
        }
    }

    /// Node `n` sees its connection to `peer` open.
    pub(super) fn connected(&mut self, n: u32, peer: u32) {
        let id = self.payload.fixture().node_ids[peer as usize];
        self.input(n, Input::PeerConnected { peer, node: id });
        self.ensure_heartbeat(n);
    }

    /// Node `n` sees its connection to `peer` close.
    pub(super) fn disconnected(&mut self, n: u32, peer: u32) {
        self.input(n, Input::PeerDisconnected { peer });
        self.ensure_heartbeat(n);
    }
}
