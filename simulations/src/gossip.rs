//! The gossipsub-like overlay that stands in for libp2p's gossipsub.
//!
//! # How the model maps onto gossipsub
//! | gossipsub (rust-libp2p)          | here                                   | default |
//! |----------------------------------|----------------------------------------|---------|
//! | `mesh_n` (D)                     | [`GossipConfig::d`]                    | 6 (node) |
//! | `mesh_n_low` (D_low)             | [`GossipConfig::d_low`]                | 2 (node) |
//! | `mesh_n_high` (D_high)           | [`GossipConfig::d_high`]               | 12 (node) |
//! | `gossip_lazy` (D_lazy)           | [`GossipConfig::d_lazy`]               | 6 |
//! | `heartbeat_interval`             | [`GossipConfig::heartbeat`]            | 1 s |
//! | `history_gossip` / `history_length` | same names                          | 3 / 5 |
//! | `flood_publish`                  | [`GossipConfig::flood_publish`]        | true |
//! | `max_transmit_size`              | [`GossipConfig::max_transmit`]         | 4 MiB + 64 KiB |
//! | `message_id_fn` (SHA-256 of data) | [`msg_id`] (its first 8 bytes)        | |
//! | `validate_messages` + `report_message_validation_result` | the replica's `Verdict`: only `Accept` is forwarded and cached | |
//! | duplicate cache                  | `seen`, never expiring within a run    | |
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
//! Not modelled: peer scoring (the replica's strikes and bans stand in for
//! P4; the other terms are off or near zero in the node's configuration),
//! opportunistic grafting, peer exchange, IDONTWANT, fanout (there is one
//! topic and every node subscribes), and the backoff after PRUNE.
//!
//! Heartbeats that could do nothing (empty cache, mesh within bounds) are
//! not scheduled: the result is the same, and a 10,000-node hour needs it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use sha2::{Digest, Sha256};

pub use crate::scenario::GossipConfig;

/// Deterministic hashing for lookup-only sets.
pub type Det = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// A message id.
pub type MsgId = u64;

/// The message id of `data`: the first 8 bytes of its SHA-256, as the node's
/// `message_id_fn` (which keeps all 32).
pub fn msg_id(data: &[u8]) -> MsgId {
    let h = Sha256::digest(data);
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// One node's gossip state.
#[derive(Debug, Default)]
pub struct GossipNode {
    /// Mesh peers.
    pub mesh: BTreeSet<u32>,
    /// Every message id seen.
    pub seen: HashSet<MsgId, Det>,
    /// Ids asked for by IWANT, with when.
    pub asked: HashMap<MsgId, u64, Det>,
    /// The message cache, one window per heartbeat, newest first.
    windows: VecDeque<Vec<MsgId>>,
    /// A heartbeat is scheduled.
    pub heartbeat_scheduled: bool,
}

impl GossipNode {
    /// Fresh state.
    pub fn new() -> Self {
        let mut g = GossipNode::default();
        g.windows.push_front(Vec::new());
        g
    }

    /// Puts an accepted message into the current cache window.
    pub fn remember(&mut self, id: MsgId) {
        if let Some(w) = self.windows.front_mut() {
            w.push(id);
        }
    }

    /// Ids to announce by IHAVE: the last `history_gossip` windows.
    pub fn gossip_ids(&self, history_gossip: usize) -> Vec<MsgId> {
        self.windows
            .iter()
            .take(history_gossip)
            .flat_map(|w| w.iter().copied())
            .collect()
    }

    /// Whether an id is still in the cache (answerable to IWANT).
    pub fn in_cache(&self, id: MsgId) -> bool {
        self.windows.iter().any(|w| w.contains(&id))
    }

    /// Whether the cache is empty.
    pub fn cache_empty(&self) -> bool {
        self.windows.iter().all(Vec::is_empty)
    }

    /// Starts a new window, dropping those older than `history_length`.
    pub fn shift(&mut self, history_length: usize) {
        self.windows.push_front(Vec::new());
        self.windows.truncate(history_length.max(1));
    }
}
