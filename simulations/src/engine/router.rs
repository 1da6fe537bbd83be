//! Each node's gossipsub router: publishing, the heartbeat, and what a node
//! does with each message it receives.
//!
//! A node publishes to its mesh (or, with `flood_publish`, to every peer)
//! and forwards a message its replica accepts to its mesh, except the
//! sender, the publisher and peers that sent IDONTWANT for it. On each
//! heartbeat (every `heartbeat` ms, on the node's own phase, and only while
//! there is something to do) it grafts up to `d` peers when below `d_low`,
//! prunes down to `d` when above `d_high`, and sends IHAVE for the ids of the
//! last `history_gossip` heartbeats to `d_lazy` random peers outside the
//! mesh. IWANT is answered from the message cache (`history_length`
//! heartbeats); a message larger than `idontwant_threshold` makes the
//! receiver send IDONTWANT to its mesh (and to the peer it asked for it)
//! before validating it. Sync requests
//! and responses that arrive go to the replica.
//!
//! Rules: a message is delivered only to the incarnation it was sent to and
//! over a connection that is still open; every message is interned once, by
//! its id, and handled by its index from then on.

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;
use weft_protocol::replica::Input;

use super::Sim;
use super::msg::{Msg, NO_SOURCE, envelope, ihave_size};
use super::queue::Ev;
use crate::gossip::{Det, MsgId, MsgIdx, msg_id};
use crate::payload::Payload;

/// Re-ask for an id by IWANT after this long without it (gossipsub's
/// `iwant_followup_time`, 3 s).
const IWANT_FOLLOWUP_MS: u64 = 3_000;
/// How long an IDONTWANT holds (libp2p's `IDONTWANT_TIMEOUT`, 3 s; it
/// drops older ones on its heartbeat).
const IDONTWANT_MS: u64 = 3_000;

/// Every gossip message seen in the run, by index.
#[derive(Default)]
pub(super) struct Messages {
    /// Every gossip message seen, by id: its index.
    index: HashMap<MsgId, MsgIdx, Det>,
    /// The bytes and publisher of published messages, by index (what IWANT
    /// is answered with).
    pub(super) bytes: Vec<Option<(Arc<[u8]>, u32)>>,
    /// Published updates, in order (what a Byzantine node replays).
    pub(super) published: Vec<MsgIdx>,
}

impl Messages {
    /// The index of the message with these bytes, given at first sight.
    pub(super) fn intern(&mut self, bytes: &[u8]) -> MsgIdx {
        let next = self.bytes.len() as MsgIdx;
        let i = *self.index.entry(msg_id(bytes)).or_insert(next);
        if i == next {
            self.bytes.push(None);
        }
        i
    }
}

impl<P: Payload> Sim<'_, P> {
    /// Node `n` publishes `bytes` (its replica's `Publish`).
    pub(super) fn publish(&mut self, n: u32, bytes: Arc<[u8]>) {
        let id = self.msgs.intern(&bytes);
        let source = self.source_of(n);
        if self.msgs.bytes[id as usize].is_none() {
            self.msgs.bytes[id as usize] = Some((bytes.clone(), source));
            self.msgs.published.push(id);
        }
        let e = self.next_heartbeat(n);
        self.seen.see(n, id);
        self.nodes[n as usize].gossip.remember(id, e);
        let targets: Vec<u32> = if self.sc.gossip.flood_publish {
            self.net.conns[n as usize].iter().collect()
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
    pub(super) fn source_of(&self, n: u32) -> u32 {
        if self.sc.gossip.anonymous {
            NO_SOURCE
        } else {
            n
        }
    }

    /// Where node `n`'s heartbeats fall within each heartbeat interval, ms.
    fn heartbeat_phase(&self, n: u32) -> u64 {
        (n as u64).wrapping_mul(7_919) % self.sc.gossip.heartbeat
    }

    /// The number of node `n`'s first heartbeat strictly after now.
    pub(super) fn next_heartbeat(&self, n: u32) -> u64 {
        let phase = self.heartbeat_phase(n);
        if self.now < phase {
            0
        } else {
            (self.now - phase) / self.sc.gossip.heartbeat + 1
        }
    }

    /// Queues node `n`'s next heartbeat, unless one is queued or it is down.
    pub(super) fn ensure_heartbeat(&mut self, n: u32) {
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

    /// Node `n`'s heartbeat: mesh upkeep and IHAVE.
    pub(super) fn heartbeat(&mut self, n: u32) {
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
        let conns = &self.net.conns[n as usize];
        node.gossip.heartbeat_scheduled = false;
        if node.gossip.mesh.iter().any(|p| !conns.contains(&p)) {
            node.gossip.mesh.retain(|p| conns.contains(p));
        }
        // Scratch space reused across heartbeats.
        let mut sends = std::mem::take(&mut self.scratch.sends);
        let mut cands = std::mem::take(&mut self.scratch.peers);
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
        let mut ids = std::mem::take(&mut self.scratch.ids);
        let mut lazy = std::mem::take(&mut self.scratch.lazy);
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
                self.stats.count.gossip_duplicates_dropped += 1;
                continue;
            }
            let ids = shared.get_or_insert_with(|| Arc::from(&ids[..])).clone();
            self.enqueue(n, p, held_back, Msg::IHave(ids));
        }
        self.scratch.sends = sends;
        self.scratch.peers = cands;
        self.scratch.ids = ids;
        self.scratch.lazy = lazy;
        if again {
            self.ensure_heartbeat(n);
        }
    }

    /// A message from `from` arrives at `to` (in incarnation `inc_to`).
    pub(super) fn deliver(&mut self, from: u32, to: u32, inc_to: u32, msg: Msg) {
        let h = self.hot[to as usize];
        if h.inc != inc_to || !h.up || !self.net.conns[to as usize].contains(&from) {
            return;
        }
        match msg {
            Msg::Gossip { id, source, bytes } => {
                if !self.seen.see(to, id) {
                    self.stats.count.gossip_duplicates_dropped += 1;
                    return;
                }
                let g = &mut self.nodes[to as usize].gossip;
                let promised = g.asked.remove(&id).map(|(_, p)| p);
                if bytes.len() > self.sc.gossip.max_transmit {
                    self.stats.count.oversized_refused += 1;
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
                        self.stats.count.idontwant_sent += 1;
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
                    let mut mesh = std::mem::take(&mut self.scratch.peers);
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
                    self.scratch.peers = mesh;
                    self.ensure_heartbeat(to);
                }
            }
            Msg::Oversized { .. } => {
                // The length-prefixed codec refuses the frame before reading it.
                self.stats.count.oversized_refused += 1;
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
                        && let Some((bytes, source)) = self.msgs.bytes[id as usize].clone()
                    {
                        self.stats.count.iwant_copies += 1;
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
}
