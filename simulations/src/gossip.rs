//! The gossipsub-like overlay that stands in for libp2p's gossipsub.
//!
//! # How the model maps onto gossipsub
//! | gossipsub (rust-libp2p)          | here                                   | default |
//! |----------------------------------|----------------------------------------|---------|
//! | `mesh_n` (D)                     | [`GossipConfig::d`]                    | 3 (node) |
//! | `mesh_n_low` (D_low)             | [`GossipConfig::d_low`]                | 1 (node) |
//! | `mesh_n_high` (D_high)           | [`GossipConfig::d_high`]               | 12 (node) |
//! | `gossip_lazy` (D_lazy)           | [`GossipConfig::d_lazy`]               | 6 (node) |
//! | `heartbeat_interval`             | [`GossipConfig::heartbeat`]            | 1 s |
//! | `history_gossip` / `history_length` | same names                          | 1 (node) / 5 |
//! | `MessageAuthenticity::Anonymous` + `ValidationMode::Anonymous` | [`GossipConfig::anonymous`] | true (node) |
//! | `flood_publish`                  | [`GossipConfig::flood_publish`]        | true |
//! | `max_transmit_size`              | [`GossipConfig::max_transmit`]         | 4 MiB + 64 KiB |
//! | `message_id_fn` (SHA-256 of data) | [`msg_id`] (its first 8 bytes)        | |
//! | `validate_messages` + `report_message_validation_result` | the replica's `Verdict`: only `Accept` is forwarded and cached | |
//! | duplicate cache                  | `seen`, never expiring within a run    | |
//! | `idontwant_message_size_threshold` | [`GossipConfig::idontwant_threshold`] | 1,000 |
//! | GRAFT / PRUNE / IHAVE / IWANT    | [`crate::engine`]'s control messages   | |
//!
//! Eager push: a node forwards a message it accepted to its mesh peers (not
//! back to the sender), and publishes its own updates to every connected
//! peer (`flood_publish`). Lazy push: on each heartbeat, a node sends IHAVE
//! with the ids of the last `history_gossip` heartbeats to `d_lazy` random
//! connected peers outside its mesh; a peer missing some answers IWANT, and
//! gets the messages still in the cache (`history_length` heartbeats).
//! Mesh maintenance on the heartbeat grafts random peers when the mesh is
//! below `d_low` (up to `d`) and prunes random ones above `d_high` (down to `d`).
//!
//! Forwarding skips, as gossipsub's `forward_msg` does, the peer the message
//! came from, the node that published it if the message names its `source`
//! (only with `anonymous` false: the node's envelope is anonymous and names
//! none), and peers that sent IDONTWANT for it.
//!
//! IDONTWANT (gossipsub 1.2, in libp2p since 0.54): a node that receives a
//! message it has not seen, larger than `idontwant_message_size_threshold`
//! (libp2p's default, 1,000 bytes, which the node keeps), tells its mesh
//! peers and the peer it asked by IWANT, except the sender and the
//! publisher (if named), not to send it; it does so before validation. A peer skips
//! those when it forwards or answers IWANT, for 3 s (`IDONTWANT_TIMEOUT`;
//! libp2p drops them on the heartbeat after). Weft's updates are a few
//! hundred bytes on the wire, below the threshold, so with the node's
//! configuration no IDONTWANT is ever sent; [`GossipConfig::idontwant_threshold`]
//! shows what it would change.
//!
//! Not modelled: peer scoring (the replica's strikes and bans stand in for
//! P4; the other terms are off or near zero in the node's configuration),
//! opportunistic grafting, peer exchange, fanout (there is one topic and
//! every node subscribes), the backoff after PRUNE, and validation time
//! (a message is validated the moment it arrives, so no duplicate arrives
//! while it waits, and gossipsub's `originating_peers` stays empty).
//!
//! Heartbeats that could do nothing (empty cache, mesh within bounds) are
//! not scheduled: the result is the same, and a 10,000-node hour needs it.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use sha2::{Digest, Sha256};

pub use crate::scenario::GossipConfig;

/// A small, fast, deterministic hasher (FxHash's mixing) for lookup-only
/// maps and sets; SipHash dominated a 10,000-node run.
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Deterministic hashing for lookup-only maps and sets.
pub type Det = BuildHasherDefault<FxHasher>;

/// A message id.
pub type MsgId = u64;

/// The message id of `data`: the first 8 bytes of its SHA-256, as the node's
/// `message_id_fn` (which keeps all 32).
pub fn msg_id(data: &[u8]) -> MsgId {
    let h = Sha256::digest(data);
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// A message's index: the order in which the simulation first saw it.
/// Messages are interned ([`crate::engine`] maps each [`MsgId`] to one), so
/// per-node seen-sets are bitsets a few words long instead of hash sets.
pub type MsgIdx = u32;

/// Peers a [`PeerSet`] holds without a heap allocation: a node dials 8
/// peers and is dialled by about as many, so most connection sets and
/// every mesh fit.
const INLINE_PEERS: usize = 22;

/// A small set of peers, sorted: a node has a few dozen connections at
/// most. Up to `INLINE_PEERS` (22) are kept inline, so that checking a
/// connection reads the dense array it sits in and follows no pointer;
/// more spill to a sorted vector. Iterates in ascending order, as a
/// `BTreeSet` does.
#[derive(Clone, Debug)]
pub struct PeerSet {
    len: u32,
    inline: [u32; INLINE_PEERS],
    /// All the peers, when there are more than fit inline.
    spill: Vec<u32>,
}

impl Default for PeerSet {
    fn default() -> Self {
        PeerSet {
            len: 0,
            inline: [0; INLINE_PEERS],
            spill: Vec::new(),
        }
    }
}

impl PartialEq for PeerSet {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for PeerSet {}

impl PeerSet {
    /// An empty set.
    pub fn new() -> Self {
        PeerSet::default()
    }

    /// Whether `p` is in the set.
    #[inline]
    pub fn contains(&self, p: &u32) -> bool {
        self.as_slice().binary_search(p).is_ok()
    }

    /// Adds `p`; true if it was not there.
    pub fn insert(&mut self, p: u32) -> bool {
        let Err(i) = self.as_slice().binary_search(&p) else {
            return false;
        };
        let len = self.len as usize;
        if len < INLINE_PEERS {
            self.inline.copy_within(i..len, i + 1);
            self.inline[i] = p;
        } else {
            if len == INLINE_PEERS {
                self.spill = self.inline.to_vec();
            }
            self.spill.insert(i, p);
        }
        self.len += 1;
        true
    }

    /// Removes `p`; true if it was there.
    pub fn remove(&mut self, p: &u32) -> bool {
        let Ok(i) = self.as_slice().binary_search(p) else {
            return false;
        };
        let len = self.len as usize;
        if len <= INLINE_PEERS {
            self.inline.copy_within(i + 1..len, i);
        } else {
            self.spill.remove(i);
            if len - 1 == INLINE_PEERS {
                self.inline.copy_from_slice(&self.spill);
                self.spill = Vec::new();
            }
        }
        self.len -= 1;
        true
    }

    /// How many.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// In ascending order.
    pub fn iter(&self) -> std::iter::Copied<std::slice::Iter<'_, u32>> {
        self.as_slice().iter().copied()
    }

    /// As a sorted slice.
    #[inline]
    pub fn as_slice(&self) -> &[u32] {
        let len = self.len as usize;
        if len <= INLINE_PEERS {
            &self.inline[..len]
        } else {
            &self.spill
        }
    }

    /// Keeps the peers for which `f` holds.
    pub fn retain(&mut self, mut f: impl FnMut(&u32) -> bool) {
        let kept: Vec<u32> = self.iter().filter(|p| f(p)).collect();
        *self = PeerSet::new();
        for p in kept {
            self.insert(p);
        }
    }
}

/// Every node's seen-set (gossipsub's duplicate cache, never expiring
/// within a run): a bitset per node by message index, all in one array, so
/// whether a receiver already has a message is one word away.
#[derive(Debug)]
pub struct SeenSets {
    /// Words per node.
    words: usize,
    bits: Vec<u64>,
}

impl SeenSets {
    /// Empty sets for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        SeenSets {
            words: 1,
            bits: vec![0; nodes],
        }
    }

    /// Whether node `n` has seen message `i`.
    #[inline]
    pub fn has(&self, n: u32, i: MsgIdx) -> bool {
        let w = i as usize / 64;
        w < self.words && self.bits[n as usize * self.words + w] & (1 << (i % 64)) != 0
    }

    /// Marks message `i` seen by node `n`; true if it was not seen before.
    #[inline]
    pub fn see(&mut self, n: u32, i: MsgIdx) -> bool {
        let w = i as usize / 64;
        if w >= self.words {
            self.widen(w + 1);
        }
        let word = &mut self.bits[n as usize * self.words + w];
        let bit = 1 << (i % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }

    /// Forgets everything node `n` has seen (a crash).
    pub fn clear(&mut self, n: u32) {
        let at = n as usize * self.words;
        self.bits[at..at + self.words].fill(0);
    }

    fn widen(&mut self, need: usize) {
        let words = need.max(self.words * 2);
        let nodes = self.bits.len() / self.words;
        let mut bits = vec![0; nodes * words];
        for (new, old) in bits
            .chunks_exact_mut(words)
            .zip(self.bits.chunks_exact(self.words))
        {
            new[..self.words].copy_from_slice(old);
        }
        self.words = words;
        self.bits = bits;
    }
}

/// One node's gossip state.
///
/// The message cache is kept by heartbeat number instead of being shifted on
/// every heartbeat: a message received before heartbeat `e` fired sits in
/// window `e`; heartbeat `k` announces windows `k - history_gossip < e <= k`,
/// and IWANT is answered while `e + history_length` is above the next
/// heartbeat's number. The same windows as gossipsub's `mcache`, without a
/// heartbeat event per node per second just to shift them.
#[derive(Debug, Default)]
pub struct GossipNode {
    /// Mesh peers.
    pub mesh: PeerSet,
    /// Messages asked for by IWANT, with when and from whom.
    pub asked: HashMap<MsgIdx, (u64, u32), Det>,
    /// IDONTWANTs received: (peer, message, until when they hold).
    dont_send: Vec<(u32, MsgIdx, u64)>,
    /// The message cache: (window, message), oldest first (one flat queue:
    /// a window rarely holds more than one message, and a heartbeat reads
    /// them all).
    windows: VecDeque<(u64, MsgIdx)>,
    /// A heartbeat is scheduled.
    pub heartbeat_scheduled: bool,
}

impl GossipNode {
    /// Fresh state.
    pub fn new() -> Self {
        GossipNode::default()
    }

    /// Records peer `p`'s IDONTWANT for message `i`, received at `now`
    /// and holding for `hold` ms, and drops those that no longer hold.
    pub fn dont_send(&mut self, p: u32, i: MsgIdx, now: u64, hold: u64) {
        self.dont_send.retain(|(_, _, until)| *until > now);
        self.dont_send.push((p, i, now + hold));
    }

    /// Whether peer `p` said IDONTWANT for message `i`, and it still holds.
    pub fn dont_want(&self, p: u32, i: MsgIdx, now: u64) -> bool {
        self.dont_send
            .iter()
            .any(|(q, j, until)| *q == p && *j == i && *until > now)
    }

    /// Forgets a peer whose connection closed: out of the mesh, and its
    /// IDONTWANTs with it.
    pub fn forget(&mut self, p: u32) {
        self.mesh.remove(&p);
        self.dont_send.retain(|(q, _, _)| *q != p);
    }

    /// Puts an accepted message into window `e` (the next heartbeat's number).
    pub fn remember(&mut self, id: MsgIdx, e: u64) {
        self.windows.push_back((e, id));
    }

    /// Messages heartbeat `k` announces by IHAVE, appended to `out`.
    pub fn gossip_ids_into(&self, k: u64, history_gossip: usize, out: &mut Vec<MsgIdx>) {
        out.extend(
            self.windows
                .iter()
                .filter(|(e, _)| *e <= k && e + history_gossip as u64 > k)
                .map(|(_, id)| *id),
        );
    }

    /// Whether a message is still answerable to IWANT when the next heartbeat is `u`.
    pub fn in_cache(&self, id: MsgIdx, u: u64, history_length: usize) -> bool {
        self.windows
            .iter()
            .any(|(e, i)| e + history_length as u64 > u && *i == id)
    }

    /// Whether a heartbeat after `k` still has ids to announce.
    pub fn gossip_after(&self, k: u64, history_gossip: usize) -> bool {
        self.windows
            .back()
            .is_some_and(|(e, _)| e + history_gossip as u64 > k + 1)
    }

    /// Drops windows no longer answerable when the next heartbeat is `u`.
    pub fn prune(&mut self, u: u64, history_length: usize) {
        while self
            .windows
            .front()
            .is_some_and(|(e, _)| e + history_length as u64 <= u)
        {
            self.windows.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn peer_set_behaves_as_a_sorted_set_inline_and_spilled() {
        let mut set = PeerSet::new();
        let mut model = BTreeSet::new();
        // A fixed pseudo-random walk of inserts and removes across the
        // inline limit and back.
        let mut x = 12_345u64;
        for step in 0..4_000_u32 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let p = ((x >> 33) % 40) as u32;
            let grow = (step / 500_u32).is_multiple_of(2);
            if !(x >> 20).is_multiple_of(3) || grow {
                assert_eq!(set.insert(p), model.insert(p));
            } else {
                assert_eq!(set.remove(&p), model.remove(&p));
            }
            assert_eq!(set.len(), model.len());
            assert!(set.iter().eq(model.iter().copied()));
            assert_eq!(set.contains(&p), model.contains(&p));
        }
        set.retain(|p| p % 2 == 0);
        model.retain(|p| p % 2 == 0);
        assert!(set.iter().eq(model.iter().copied()));
        let mut other = PeerSet::new();
        for p in model.iter().rev() {
            other.insert(*p);
        }
        assert_eq!(set, other);
    }
}
