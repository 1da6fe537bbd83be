//! The node's audit trail: a hash-chained log in sled, fed through a bounded
//! queue, with signed checkpoints gossiped to peers.
//!
//! ```text
//! store/ (sled, beside the updates)
//! ├── audit                seq (u64 BE) -> prev (32) || hash (32) || at_ms (u64 BE) || event (JSON)
//! ├── audit_checkpoints    seq (u64 BE) -> this node's SignedCheckpoint of that record
//! ├── audit_peer_cps       node id (38) || seq (u64 BE) -> a peer's SignedCheckpoint
//! │                        node id (38) || seq (u64 BE) || head (32) -> a second one of that record (an equivocation)
//! ├── audit_peer_arrivals  node id (38) || arrival (u64 BE) -> seq (u64 BE), the order they arrived in
//! └── meta                 "audit_head" -> seq (u64 BE) || hash (32), rewritten with every batch
//! ```
//!
//! What is written: every deny, allows sampled one in
//! [`AuditConfig::allow_one_in`], every update applied or refused (with the
//! peer it came from), admissions, disconnections and bans. The chain and
//! its verification are in [`weft_protocol::audit`].
//!
//! # Nothing is lost silently
//! Producers never write to the disk themselves: they put events on bounded
//! queues and a writer task appends them in batches.
//! - Decisions, from the API's handlers, go on the decision queue
//!   ([`AuditConfig::queue`]). When it is full the handler waits for room,
//!   up to [`AuditConfig::wait`]: that is the backpressure, a node asked for
//!   more decisions than it can record answers more slowly rather than
//!   forget them. Each wait is counted (`weft_audit_waits_total`).
//! - Everything else (updates applied or refused, admissions, bans,
//!   anomalies, quarantines) comes from the node task, which must never
//!   stall the network, so it goes on a queue of its own
//!   ([`AuditConfig::control_queue`]) that a flood of decisions cannot
//!   fill, and the writer empties it first.
//!
//! An event that still finds no room (after the wait, for a decision) is
//! dropped and counted; the count shows in `/metrics`
//! (`weft_audit_dropped_total`), in `weft status`, and in the chain itself,
//! as a `dropped` record the writer appends as soon as it has room, so a gap
//! in the trail is recorded in the trail.
//!
//! # Checkpoints
//! Every [`AuditConfig::checkpoint_every`] (if the chain grew; the first
//! at a random point of the second half of the first interval, so nodes
//! started together take turns), the writer signs a checkpoint of the head
//! with the node's key, keeps it, flushes, and has the node task gossip it
//! on [`AUDIT_TOPIC`], with the node's certificate ([`CheckpointGossip`]). A node that later rewrites or
//! truncates its log is caught by `weft audit verify --peer-dir` against the
//! checkpoints its peers keep.
//!
//! # Peers' checkpoints
//! A peer takes a gossiped checkpoint in ([`AuditLog::receive_checkpoint`])
//! only when the peer that passed it on is admitted (otherwise it is
//! ignored: neither kept nor forwarded), and only when the certificate sent
//! with it verifies under the peer's trust root now and is the certificate
//! of the checkpoint's node, and the node's signature verifies (otherwise it
//! is refused, counted in `weft_audit_checkpoints_refused_total`, and
//! rejected on gossipsub, which penalizes the sender). So only nodes an
//! operator admitted take room, and no number of made-up node ids fills
//! [`MAX_CHECKPOINT_NODES`]. Checkpoints of a revoked node are ignored, and
//! so are a node's checkpoints beyond [`CHECKPOINT_BURST`] at once and one
//! per [`CHECKPOINT_REFILL`] after that.
//!
//! Of each node, a peer numbers the checkpoints it keeps in the order they
//! arrive, and keeps ([`keeps_arrival`]):
//! - the first it ever kept;
//! - the newest [`RECENT_CHECKPOINTS`] (128);
//! - of older ones, [`CHECKPOINTS_PER_DOUBLING`] (4) per doubling of age:
//!   of those between `128 · 2^L` and `128 · 2^(L+1)` arrivals old, those
//!   whose number is a multiple of `32 · 2^L`, for `L` below
//!   [`THINNED_LEVELS`];
//! - and for good, any two checkpoints of one record with different hashes
//!   (an equivocation, which no honest log explains), up to
//!   [`MAX_EQUIVOCATIONS`] per node.
//!
//! That is at most 253 checkpoints per node (within
//! [`MAX_PEER_CHECKPOINTS`]), and 16 for equivocations. The bound it gives:
//! of any `e` consecutive arrivals, one is still kept after `k` more
//! arrivals whenever `k < 128` or `k <= 3e + 1` (within 2^38 arrivals). A
//! node that rewrites its log from record `r` on is contradicted by every
//! checkpoint it signed before of a record from `r` on; if `e` of those
//! arrived in a row, it must have `3e + 2` new checkpoints (and at least
//! 128) taken in after them before the last is thinned out. With the rate above, that takes at least `(3e - 126) · 10 s`:
//! at the default interval, a rewrite reaching back over a time `T` stays
//! exposed for at least `T` less 21 minutes after it, and a rewrite of
//! records up to the first checkpoint a peer kept stays exposed for good.
//! Only a rewrite of records signed so recently that fewer than a third as
//! many checkpoints covered them as the node then signs can disappear from
//! a peer's copies.
//!
//! What is never lost of a node: the first checkpoint a peer kept, the
//! newest 128, and every equivocation kept.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;
use weft_protocol::audit::{
    AuditError, ChainHash, ChainWalker, Checkpoint, CheckpointGossip, GENESIS, HeldCheckpoint,
    MAX_EVENT_LEN, Record, SignedCheckpoint, Verification,
};
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::trust::TrustRoot;

/// The gossipsub topic of audit checkpoints.
pub const AUDIT_TOPIC: &str = "weft/audit/v2";

/// The most checkpoints of one node a peer keeps by [`keeps_arrival`]:
/// [`RECENT_CHECKPOINTS`], [`CHECKPOINTS_PER_DOUBLING`] at each of
/// [`THINNED_LEVELS`], and the first (253), rounded up. Pairs of
/// equivocating checkpoints ([`MAX_EQUIVOCATIONS`]) come on top.
pub const MAX_PEER_CHECKPOINTS: usize = 256;

/// The newest checkpoints of a node that a peer keeps all of. At the
/// default interval (30 s) that is the last hour.
pub const RECENT_CHECKPOINTS: u64 = 128;

/// Checkpoints kept of each older stretch of a node's history, which
/// doubles in length from one stretch to the next.
pub const CHECKPOINTS_PER_DOUBLING: u64 = 4;

/// The stretches of doubling length kept after the recent ones: the oldest
/// ends 128 · 2^31 = 2^38 arrivals back, which at the accepted rate
/// ([`CHECKPOINT_REFILL`]) takes 87,000 years to reach. Beyond it only the
/// first is kept.
pub const THINNED_LEVELS: u32 = 31;

/// Equivocations kept per node: a second checkpoint of a record that a
/// checkpoint already held gives another hash for. Each is kept with the
/// one it contradicts, for good; a few are proof enough, and more are not
/// kept.
pub const MAX_EQUIVOCATIONS: usize = 8;

/// Checkpoints of one node a peer takes in at once, beyond its rate: as
/// many as [`RECENT_CHECKPOINTS`], so a burst replaces at most the recent
/// ones.
pub const CHECKPOINT_BURST: usize = 128;

/// After a burst, a peer takes in one checkpoint of a node per this long:
/// ten seconds, three times the rate of the default interval (30 s).
/// Checkpoints over the rate are ignored (neither kept nor forwarded).
pub const CHECKPOINT_REFILL: Duration = Duration::from_secs(10);

// The recent ones and the thinned levels leave room for the first.
const _: () = assert!(
    RECENT_CHECKPOINTS + CHECKPOINTS_PER_DOUBLING * (THINNED_LEVELS as u64)
        < MAX_PEER_CHECKPOINTS as u64
);

/// Whether a peer keeps the checkpoint of a node that arrived `index`-th
/// (from 0), once the newest that arrived is the `newest`-th.
///
/// It keeps the first; the newest [`RECENT_CHECKPOINTS`]; and of those
/// whose age `newest - index` lies in `[128 · 2^L, 128 · 2^(L+1))` for a
/// level `L` below [`THINNED_LEVELS`], those whose index is a multiple of
/// `128 · 2^L / 4` ([`CHECKPOINTS_PER_DOUBLING`] per level). A checkpoint
/// it drops it never keeps again at a later `newest` (a multiple of a
/// level's spacing is one of every level below), so the kept set can be
/// thinned as checkpoints arrive.
///
/// Why `e` consecutive arrivals followed by `k` more keep one when
/// `3e + 1 >= k`: the oldest of them is `k + e - 1` old, at a level `L`
/// with `128 · 2^L <= k + e - 1`, whose spacing `32 · 2^L` is then at most
/// `(k + e - 1) / 4 <= e`. So the run holds a multiple of that spacing, and
/// it is kept whatever the level of its own age, since the levels of the
/// run's younger arrivals have smaller spacings that divide it.
pub fn keeps_arrival(index: u64, newest: u64) -> bool {
    if index == 0 {
        return true;
    }
    let age = newest.saturating_sub(index);
    if age < RECENT_CHECKPOINTS {
        return true;
    }
    let level = (age / RECENT_CHECKPOINTS).ilog2();
    level < THINNED_LEVELS
        && index.is_multiple_of((RECENT_CHECKPOINTS << level) / CHECKPOINTS_PER_DOUBLING)
}

/// Nodes whose checkpoints a peer keeps at most; checkpoints of more are
/// not kept. Only nodes with a valid certificate get in, so this bounds the
/// disk against a mesh far larger than any real one, not against made-up
/// node ids (those are refused before).
pub const MAX_CHECKPOINT_NODES: usize = 10_000;

const RECORDS: &str = "audit";
const OWN_CPS: &str = "audit_checkpoints";
const PEER_CPS: &str = "audit_peer_cps";
const PEER_ARRIVALS: &str = "audit_peer_arrivals";
const META: &str = "meta";
const KEY_HEAD: &[u8] = b"audit_head";

/// Who held a checkpoint, in messages: the node's own head marker.
pub const HELD_BY_HEAD_MARKER: &str = "the node's own head marker";
/// Who held a checkpoint, in messages: the node's own signed checkpoints.
pub const HELD_BY_SELF: &str = "the node itself";

/// Settings of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Decisions the queue holds before new ones wait for room. Default
    /// 8,192: the writer appends tens of thousands of records a second, so
    /// this absorbs a burst of several hundred milliseconds.
    pub queue: usize,
    /// How long a decision waits for room in a full queue before its record
    /// is dropped (and counted). Default 100 ms; zero never waits.
    pub wait: Duration,
    /// Events of the node task (updates, admissions, bans, anomalies,
    /// quarantines) the writer holds before new ones are dropped (and
    /// counted). Default 4,096; decisions never use this room.
    pub control_queue: usize,
    /// Allows written: one in this many (denies are always written).
    /// Default 100; 1 writes every allow, 0 none.
    pub allow_one_in: u64,
    /// How often a checkpoint is signed and gossiped, if the chain grew.
    /// Default 30 s: a rewrite is exposed to peers within half a minute.
    /// Peers take in one per [`CHECKPOINT_REFILL`] (10 s) after a burst of
    /// [`CHECKPOINT_BURST`], so a shorter interval only makes sense for a
    /// short while (tests).
    pub checkpoint_every: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            queue: 8192,
            wait: Duration::from_millis(100),
            control_queue: 4096,
            allow_one_in: 100,
            checkpoint_every: Duration::from_secs(30),
        }
    }
}

/// One thing the audit trail records (stored as JSON, tagged by `kind`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The node started.
    Started {
        /// Its id.
        node: String,
        /// The software version.
        version: String,
    },
    /// A decision: every deny, a sample of allows.
    Decision {
        /// The principal (Cedar uid), or what was given in its place.
        principal: String,
        /// The action.
        action: String,
        /// The resource.
        resource: String,
        /// `allow` or `deny`.
        decision: String,
        /// The policies that decided.
        reasons: Vec<String>,
        /// Errors, and why a request was denied before evaluation.
        errors: Vec<String>,
        /// Whether a revocation decided.
        revoked: bool,
        /// For an allow: one in how many allows is written.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        sampled_one_in: Option<u64>,
        /// The decision's id, as the answer carried it
        /// ([`crate::decision_id`]).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        decision_id: Option<String>,
    },
    /// An update was applied.
    UpdateApplied {
        /// Its id (change hash).
        id: String,
        /// What it changed: `bundle NAME`, `revocation SUBJECT`,
        /// `quarantine SUBJECT` (a revocation or quarantine that is lifted
        /// shows the same way: the update's own record says which).
        #[serde(default)]
        touches: Vec<String>,
        /// The peer it came from; none for a local submit or the store.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        peer: Option<String>,
        /// When the update came into force: the wall-clock time, in
        /// microseconds since the Unix epoch, at which the node's decisions
        /// started seeing it (the view holding it was published). The
        /// record's own `at_ms` is when the audit writer wrote it, later.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        in_force_us: Option<u64>,
    },
    /// An update was refused.
    UpdateRefused {
        /// Why.
        reason: String,
        /// `api`, or the peer it came from.
        source: String,
    },
    /// A peer was admitted (its certificate verified).
    Admitted {
        /// Its node id.
        peer: String,
    },
    /// The node disconnected a peer (admission refused, misbehaviour).
    Disconnected {
        /// Its node id.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The node banned a peer.
    Banned {
        /// Its node id.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The node's detector raised an alert.
    Anomaly {
        /// The principal.
        principal: String,
        /// The score.
        score: f64,
        /// Why, in one line.
        reason: String,
        /// The features that drove it.
        evidence: Vec<String>,
    },
    /// This node quarantined a subject on its own authority.
    QuarantineIssued {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
        /// When it lapses (Unix seconds).
        expires_at: Option<u64>,
        /// The order's id.
        id: String,
    },
    /// The HTTP API refused a request for want of a credential or a scope,
    /// or over the update rate.
    ApiRefused {
        /// The request's method.
        method: String,
        /// The request's path (no query).
        path: String,
        /// The client's IP address.
        client: String,
        /// The answer's status: 401, 403 or 429.
        status: u16,
        /// Why, as the client was told.
        reason: String,
        /// The credential it came with: `token NAME`, `token sha256:` and the
        /// first 8 hex digits of an unknown token's hash (never the token).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        credential: Option<String>,
    },
    /// Events dropped because the queue was full.
    Dropped {
        /// How many since the last such record.
        count: u64,
    },
}

impl AuditEvent {
    /// The record of the decision `decision_id`: `sampled_one_in` is set
    /// for a sampled allow.
    pub fn decision(
        record: &weft_protocol::authorize::DecisionRecord,
        decision_id: &crate::decision_id::DecisionId,
        sampled_one_in: Option<u64>,
    ) -> AuditEvent {
        let (principal, action, resource) = record.asked.who();
        let d = &record.decision;
        AuditEvent::Decision {
            principal,
            action,
            resource,
            decision: if d.allow { "allow" } else { "deny" }.to_owned(),
            reasons: d.reasons.clone(),
            errors: d.errors.clone(),
            revoked: d.revoked,
            sampled_one_in,
            decision_id: Some(decision_id.to_string()),
        }
    }
}

/// A failure of the audit log's storage.
#[derive(Debug, Error)]
pub enum AuditLogError {
    /// sled failed.
    #[error("the audit log's store failed: {0}")]
    Sled(#[from] sled::Error),
    /// An event is too large to record.
    #[error("an audit event of {0} bytes is over the limit of {MAX_EVENT_LEN}")]
    TooLarge(usize),
}

/// The hash-chained log, in the node's sled database.
pub struct AuditLog {
    db: sled::Db,
    records: sled::Tree,
    own: sled::Tree,
    peers: sled::Tree,
    meta: sled::Tree,
    /// The last record's number and hash.
    head: Mutex<(u64, ChainHash, u64)>,
    /// Gossiped checkpoints refused since start.
    refused: AtomicU64,
    /// The order peers' checkpoints arrived in, per node.
    arrivals: sled::Tree,
    /// Each node's room for more checkpoints.
    rates: Mutex<Rates>,
}

/// What a gossiped checkpoint is judged against
/// ([`AuditLog::receive_checkpoint`]).
pub struct Arrival<'a> {
    /// Whether the peer that passed it on (gossip's propagation source,
    /// not necessarily the checkpoint's node) is admitted.
    pub from_admitted: bool,
    /// The trust root this node runs under, to check certificates against.
    pub root: &'a TrustRoot,
    /// Now, in Unix milliseconds.
    pub now_ms: u64,
    /// This node's id: its own checkpoints coming back are not kept.
    pub own: NodeId,
    /// Whether a node is revoked: a revoked node's checkpoints are not kept.
    pub revoked: &'a dyn Fn(&NodeId) -> bool,
}

/// What became of a gossiped checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// It verified and was new, and is kept: forward it.
    Kept(Checkpoint),
    /// It is not kept and not forwarded, but is no proof that the peer
    /// that passed it on misbehaved (that peer is not admitted, the
    /// checkpoint is held already or is this node's own, its node is
    /// revoked or over its rate).
    Ignored(&'static str),
    /// It is forged or malformed, or its node has no valid certificate:
    /// reject it, so that gossipsub's scoring penalizes the peer that
    /// passed it on.
    Refused(AuditError),
}

impl AuditLog {
    /// Opens the log in `db`, resuming after its last record.
    pub fn open(db: &sled::Db) -> Result<AuditLog, AuditLogError> {
        let records = db.open_tree(RECORDS)?;
        let own = db.open_tree(OWN_CPS)?;
        let peers = db.open_tree(PEER_CPS)?;
        let meta = db.open_tree(META)?;
        let head = match records.last()? {
            Some((k, v)) => {
                let seq = seq_of(&k);
                match Record::from_value(seq, &v) {
                    Ok(r) => (seq, r.hash, r.at_ms),
                    // A damaged last record: continue the numbering; the
                    // damage stays visible to `weft audit verify`.
                    Err(_) => (seq, GENESIS, 0),
                }
            }
            None => (0, GENESIS, 0),
        };
        Ok(AuditLog {
            db: db.clone(),
            records,
            own,
            peers,
            meta,
            head: Mutex::new(head),
            refused: AtomicU64::new(0),
            arrivals: db.open_tree(PEER_ARRIVALS)?,
            rates: Mutex::new(Rates::default()),
        })
    }

    /// The last record's number (0 when empty) and hash.
    pub fn head(&self) -> (u64, ChainHash) {
        let h = self.head.lock().unwrap_or_else(|e| e.into_inner());
        (h.0, h.1)
    }

    /// Appends one event written at `at_ms` (kept monotonic: never earlier
    /// than the record before it).
    pub fn append(&self, at_ms: u64, event: &AuditEvent) -> Result<Record, AuditLogError> {
        let bytes = serde_json::to_vec(event).expect("audit events always serialize");
        if bytes.len() > MAX_EVENT_LEN {
            return Err(AuditLogError::TooLarge(bytes.len()));
        }
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let at_ms = at_ms.max(head.2);
        let record = Record::new(head.0 + 1, at_ms, head.1, bytes);
        self.records
            .insert(record.seq.to_be_bytes(), record.to_value())?;
        *head = (record.seq, record.hash, at_ms);
        Ok(record)
    }

    /// Writes the head marker (after a batch of appends).
    pub fn mark_head(&self) -> Result<(), AuditLogError> {
        let (seq, hash) = self.head();
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&hash);
        self.meta.insert(KEY_HEAD, v)?;
        Ok(())
    }

    /// Makes everything written durable.
    pub fn flush(&self) -> Result<(), AuditLogError> {
        self.db.flush()?;
        Ok(())
    }

    /// How many records the log holds.
    pub fn len(&self) -> u64 {
        self.head().0
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps one of this node's own checkpoints.
    pub fn put_own_checkpoint(
        &self,
        cp: &Checkpoint,
        signed: &SignedCheckpoint,
    ) -> Result<(), AuditLogError> {
        self.own.insert(cp.seq.to_be_bytes(), signed.to_bytes())?;
        Ok(())
    }

    /// This node's newest checkpoint.
    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        let (_, v) = self.own.last().ok()??;
        SignedCheckpoint::from_bytes(&v).ok()?.verify().ok()
    }

    /// This node's own checkpoints that verify.
    pub fn own_checkpoints(&self) -> Vec<Checkpoint> {
        self.own
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| SignedCheckpoint::from_bytes(&v).ok()?.verify().ok())
            .collect()
    }

    /// The head marker, if written.
    pub fn head_marker(&self) -> Option<(u64, ChainHash)> {
        let v = self.meta.get(KEY_HEAD).ok()??;
        if v.len() != 40 {
            return None;
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&v[8..]);
        Some((seq_of(&v[..8]), hash))
    }

    /// Keeps a peer's checkpoint (already verified; `cp.node` is the peer).
    /// Returns whether it was new.
    ///
    /// A checkpoint of a record already held with the same hash is not new.
    /// One with another hash is an equivocation: it is kept beside the one
    /// it contradicts, and both are kept for good (up to
    /// [`MAX_EQUIVOCATIONS`] per node). Any other is numbered as its node's
    /// next arrival, and the node's checkpoints are thinned by
    /// [`keeps_arrival`]. Checkpoints of a node beyond
    /// [`MAX_CHECKPOINT_NODES`] are not kept.
    pub fn put_peer_checkpoint(
        &self,
        cp: &Checkpoint,
        signed: &SignedCheckpoint,
    ) -> Result<bool, AuditLogError> {
        let prefix = cp.node.to_peer_id_bytes();
        let key = peer_key(&prefix, cp.seq);
        if let Some(held) = self.peers.get(&key)? {
            let held_head = SignedCheckpoint::from_bytes(&held)
                .and_then(|s| s.checkpoint())
                .ok()
                .map(|c| c.head);
            match held_head {
                Some(head) if head == cp.head => return Ok(false),
                Some(_) => return self.put_equivocation(&prefix, cp, signed),
                // A damaged copy: the new one takes its place.
                None => {
                    self.peers.insert(key, signed.to_bytes())?;
                    return Ok(true);
                }
            }
        }
        let known = self.peers.scan_prefix(prefix).next().is_some();
        if !known && self.peer_nodes() >= MAX_CHECKPOINT_NODES {
            return Ok(false);
        }
        let newest = self.next_arrival(&prefix)?;
        self.peers.insert(key, signed.to_bytes())?;
        self.arrivals
            .insert(peer_key(&prefix, newest), &cp.seq.to_be_bytes())?;
        self.thin(&prefix, newest)?;
        Ok(true)
    }

    /// Keeps `cp`, which contradicts the checkpoint held of its record.
    fn put_equivocation(
        &self,
        prefix: &[u8; 38],
        cp: &Checkpoint,
        signed: &SignedCheckpoint,
    ) -> Result<bool, AuditLogError> {
        let mut key = peer_key(prefix, cp.seq);
        key.extend_from_slice(&cp.head);
        if self.peers.contains_key(&key)? {
            return Ok(false);
        }
        let held = self
            .peers
            .scan_prefix(prefix)
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.len() == EQUIVOCATION_KEY_LEN)
            .count();
        if held >= MAX_EQUIVOCATIONS {
            return Ok(false);
        }
        self.peers.insert(key, signed.to_bytes())?;
        tracing::warn!(node = %cp.node, seq = cp.seq, "a node signed two checkpoints of one audit record");
        Ok(true)
    }

    /// The number of the next checkpoint of the node with key prefix
    /// `prefix` to arrive. Checkpoints held without a number are numbered
    /// first, in the order of their records.
    fn next_arrival(&self, prefix: &[u8; 38]) -> Result<u64, AuditLogError> {
        if let Some(last) = self.arrivals.scan_prefix(prefix).keys().next_back() {
            return Ok(seq_of(&last?[prefix.len()..]) + 1);
        }
        let mut n = 0;
        for k in self.peers.scan_prefix(prefix).keys() {
            let k = k?;
            if k.len() == PEER_KEY_LEN {
                self.arrivals
                    .insert(peer_key(prefix, n), &k[prefix.len()..])?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops the node's checkpoints that [`keeps_arrival`] no longer keeps
    /// now that the `newest`-th arrived, except those contradicted by an
    /// equivocation.
    fn thin(&self, prefix: &[u8; 38], newest: u64) -> Result<(), AuditLogError> {
        for item in self.arrivals.scan_prefix(prefix) {
            let (k, seq) = item?;
            if keeps_arrival(seq_of(&k[prefix.len()..]), newest) {
                continue;
            }
            self.arrivals.remove(&k)?;
            let key = peer_key(prefix, seq_of(&seq));
            let contradicted = self
                .peers
                .scan_prefix(&key)
                .keys()
                .filter_map(Result::ok)
                .any(|k| k.len() == EQUIVOCATION_KEY_LEN);
            if !contradicted {
                self.peers.remove(key)?;
            }
        }
        Ok(())
    }

    /// Distinct peers whose checkpoints are held.
    fn peer_nodes(&self) -> usize {
        let mut n = 0;
        let mut last: Option<Vec<u8>> = None;
        for k in self.peers.iter().keys().filter_map(Result::ok) {
            let p = &k[..k.len().min(38)];
            if last.as_deref() != Some(p) {
                n += 1;
                last = Some(p.to_vec());
            }
        }
        n
    }

    /// Takes in a checkpoint gossiped by a peer (an encoded
    /// [`CheckpointGossip`]) and says what became of it. In order:
    /// - passed on by a peer that is not admitted: ignored, unread;
    /// - malformed, forged, or without a valid certificate of its node
    ///   under `arrival.root` ([`CheckpointGossip::verify`]): refused and
    ///   counted;
    /// - this node's own, or of a revoked node: ignored;
    /// - over its node's rate ([`CHECKPOINT_BURST`], then one per
    ///   [`CHECKPOINT_REFILL`]): ignored;
    /// - otherwise kept by [`AuditLog::put_peer_checkpoint`] if new.
    pub fn receive_checkpoint(&self, bytes: &[u8], arrival: &Arrival<'_>) -> Received {
        if !arrival.from_admitted {
            return Received::Ignored("the peer that passed it on is not admitted");
        }
        let checked = CheckpointGossip::from_bytes(bytes)
            .and_then(|g| Ok((g.verify(arrival.root, arrival.now_ms / 1000)?, g.checkpoint)));
        let (cp, signed) = match checked {
            Ok(c) => c,
            Err(err) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Received::Refused(err);
            }
        };
        if cp.node == arrival.own {
            return Received::Ignored("it is this node's own");
        }
        if (arrival.revoked)(&cp.node) {
            return Received::Ignored("its node is revoked");
        }
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if !rates.has_room(cp.node, arrival.now_ms) {
            return Received::Ignored("its node is over its rate");
        }
        match self.put_peer_checkpoint(&cp, &signed) {
            Ok(true) => {
                rates.spend(cp.node);
                Received::Kept(cp)
            }
            Ok(false) => Received::Ignored("it is held already, or its node is one too many"),
            Err(err) => {
                tracing::error!(%err, "storing a peer's audit checkpoint failed");
                Received::Ignored("the store failed")
            }
        }
    }

    /// Gossiped checkpoints refused since start (forged, malformed, or
    /// without a valid certificate of their node).
    pub fn checkpoints_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Peers' checkpoints held, in all.
    pub fn peer_checkpoint_count(&self) -> usize {
        self.peers.len()
    }

    /// The checkpoints of `node` this node holds (verified again).
    pub fn peer_checkpoints_of(&self, node: &NodeId) -> Vec<(Checkpoint, SignedCheckpoint)> {
        self.peers
            .scan_prefix(node.to_peer_id_bytes())
            .values()
            .filter_map(Result::ok)
            .filter_map(|v| {
                let s = SignedCheckpoint::from_bytes(&v).ok()?;
                let cp = s.verify().ok()?;
                (cp.node == *node).then_some((cp, s))
            })
            .collect()
    }

    /// Record `seq`, as stored.
    pub fn record(&self, seq: u64) -> Option<Record> {
        let v = self.records.get(seq.to_be_bytes()).ok()??;
        Record::from_value(seq, &v).ok()
    }

    /// The first record written at or after `since_ms` (records are written
    /// in time order, so this is a binary search), or `len + 1`.
    pub fn first_since(&self, since_ms: u64) -> u64 {
        let (mut lo, mut hi) = (1u64, self.len() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.record(mid) {
                Some(r) if r.at_ms < since_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// Records from `from` on, at most `limit`.
    pub fn records_from(&self, from: u64, limit: usize) -> Vec<Record> {
        self.records
            .range(from.to_be_bytes()..)
            .filter_map(Result::ok)
            .take(limit)
            .filter_map(|(k, v)| Record::from_value(seq_of(&k), &v).ok())
            .collect()
    }

    /// Walks the whole chain of `node` (this node) against its own
    /// checkpoints, its head marker, and `extra` (peers' copies).
    pub fn verify(&self, node: NodeId, extra: Vec<HeldCheckpoint>) -> Verification {
        let mut held: Vec<HeldCheckpoint> = self
            .own_checkpoints()
            .into_iter()
            .map(|checkpoint| HeldCheckpoint {
                checkpoint,
                holder: HELD_BY_SELF.into(),
            })
            .collect();
        if let Some((seq, head)) = self.head_marker() {
            held.push(HeldCheckpoint {
                checkpoint: Checkpoint {
                    node,
                    seq,
                    head,
                    at_ms: 0,
                },
                holder: HELD_BY_HEAD_MARKER.into(),
            });
        }
        held.extend(extra);
        let mut walker = ChainWalker::new(node, held);
        for item in self.records.iter() {
            let Ok((k, v)) = item else { break };
            if k.len() != 8 {
                continue;
            }
            walker.push(seq_of(&k), &v);
            if walker.failed() {
                break;
            }
        }
        walker.finish()
    }

    /// Direct access to the records tree, for tests that tamper with it.
    #[doc(hidden)]
    pub fn records_tree(&self) -> &sled::Tree {
        &self.records
    }
}

/// The length of a peer's checkpoint's key: its node (38) and record (8).
const PEER_KEY_LEN: usize = 38 + 8;

/// The length of an equivocation's key: a checkpoint's key and its head.
const EQUIVOCATION_KEY_LEN: usize = PEER_KEY_LEN + 32;

/// `prefix` (a node) followed by `n` (a record or an arrival), big-endian.
fn peer_key(prefix: &[u8; 38], n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(PEER_KEY_LEN);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// Each node's room for checkpoints: a token bucket of
/// [`CHECKPOINT_BURST`], refilled one per [`CHECKPOINT_REFILL`]. Only nodes
/// with a valid certificate get one, and a full bucket carries no
/// information, so full ones are forgotten when the map grows large.
#[derive(Default)]
struct Rates {
    /// Per node: tokens left, and when they were counted (Unix ms).
    buckets: BTreeMap<NodeId, (f64, u64)>,
}

impl Rates {
    /// Whether `node` may have one more checkpoint kept at `now_ms`.
    fn has_room(&mut self, node: NodeId, now_ms: u64) -> bool {
        let burst = CHECKPOINT_BURST as f64;
        let refill = CHECKPOINT_REFILL.as_millis() as f64;
        let refilled = |(tokens, at): (f64, u64)| {
            (tokens + now_ms.saturating_sub(at) as f64 / refill).min(burst)
        };
        if !self.buckets.contains_key(&node) && self.buckets.len() >= MAX_CHECKPOINT_NODES {
            self.buckets.retain(|_, b| refilled(*b) < burst);
        }
        let bucket = self.buckets.entry(node).or_insert((burst, now_ms));
        *bucket = (refilled(*bucket), now_ms.max(bucket.1));
        bucket.0 >= 1.0
    }

    /// Takes one checkpoint's room from `node` (after [`Rates::has_room`]).
    fn spend(&mut self, node: NodeId) {
        if let Some(b) = self.buckets.get_mut(&node) {
            b.0 -= 1.0;
        }
    }
}

fn seq_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[8 - n..].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

/// Counters of the audit trail, shared by its producers, its writer, the API
/// and the metrics.
#[derive(Debug, Default)]
pub struct AuditCounters {
    /// Events dropped because the queue was full (or the writer stopped).
    pub dropped: AtomicU64,
    /// Decisions that found the queue full and waited for room.
    pub waits: AtomicU64,
    /// Drops already written into the chain as `dropped` records.
    dropped_recorded: AtomicU64,
    /// Records written since start.
    pub written: AtomicU64,
    /// Allows seen, for sampling.
    allows: AtomicU64,
    /// Checkpoints signed since start.
    pub checkpoints: AtomicU64,
    /// Storage failures of the writer.
    pub failures: AtomicU64,
}

/// The producers' side, cheap to clone.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<AuditEvent>,
    control: mpsc::Sender<AuditEvent>,
    counters: Arc<AuditCounters>,
    allow_one_in: u64,
    wait: Duration,
}

impl AuditHandle {
    /// Queues an event of the node task on the control queue, without
    /// waiting; if that queue is full, drops it and counts the drop.
    pub fn record(&self, event: AuditEvent) {
        if self.control.try_send(event).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a decision: always for a deny, one in
    /// [`AuditConfig::allow_one_in`] for an allow. When the decision queue
    /// is full it waits for room, up to [`AuditConfig::wait`], then drops the
    /// record and counts the drop.
    pub async fn decision(&self, make: impl FnOnce(Option<u64>) -> AuditEvent, allow: bool) {
        let event = if allow {
            if self.allow_one_in == 0 {
                return;
            }
            let n = self.counters.allows.fetch_add(1, Ordering::Relaxed);
            if !n.is_multiple_of(self.allow_one_in) {
                return;
            }
            make(Some(self.allow_one_in))
        } else {
            make(None)
        };
        let event = match self.tx.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(event)) => event,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.counters.waits.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.wait, self.tx.send(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters.
    pub fn counters(&self) -> &AuditCounters {
        &self.counters
    }
    /// A handle whose events (decisions and the node task's) all go to
    /// `tx`, for tests of producers.
    #[doc(hidden)]
    pub fn for_tests(tx: mpsc::Sender<AuditEvent>) -> Self {
        AuditHandle {
            control: tx.clone(),
            tx,
            counters: Arc::default(),
            allow_one_in: 1,
            wait: Duration::ZERO,
        }
    }
}

/// The audit trail in [`crate::control::Status`] and `GET /v1/audit/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    /// Records in the chain.
    pub records: u64,
    /// The last record's hash, hex.
    pub head: String,
    /// Events dropped since start because the queue was full.
    pub dropped: u64,
    /// Decisions since start that found the queue full and waited for room.
    #[serde(default)]
    pub waits: u64,
    /// This node's newest checkpoint.
    pub last_checkpoint: Option<CheckpointStatus>,
    /// Peers' checkpoints this node holds.
    pub peer_checkpoints: u64,
    /// Gossiped checkpoints refused since start: forged, malformed, or
    /// about a node without a valid certificate.
    #[serde(default)]
    pub checkpoints_refused: u64,
}

/// A checkpoint in [`AuditStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// The record it covers.
    pub seq: u64,
    /// That record's hash, hex.
    pub head: String,
    /// When it was signed (Unix milliseconds).
    pub at_ms: u64,
}

impl From<&Checkpoint> for CheckpointStatus {
    fn from(cp: &Checkpoint) -> Self {
        CheckpointStatus {
            seq: cp.seq,
            head: hex::encode(cp.head),
            at_ms: cp.at_ms,
        }
    }
}

/// The audit trail of a running node: the log, its producers' handle, and
/// the writer task.
pub struct Audit {
    /// The log.
    pub log: Arc<AuditLog>,
    /// The producers' handle.
    pub handle: AuditHandle,
}

impl Audit {
    /// The trail's status now.
    pub fn status(&self) -> AuditStatus {
        status_of(&self.log, &self.handle)
    }
}

/// The status of the trail in `log`, fed through `handle`.
pub fn status_of(log: &AuditLog, handle: &AuditHandle) -> AuditStatus {
    let (records, head) = log.head();
    AuditStatus {
        records,
        head: hex::encode(head),
        dropped: handle.counters.dropped.load(Ordering::Relaxed),
        waits: handle.counters.waits.load(Ordering::Relaxed),
        last_checkpoint: log.last_checkpoint().as_ref().map(Into::into),
        peer_checkpoints: log.peer_checkpoint_count() as u64,
        checkpoints_refused: log.checkpoints_refused(),
    }
}

/// How long the writer lets records gather once it has emptied its queue.
/// Without the pause it parks after each batch and the next record (each
/// deny, one allow in `allow_one_in`) has to wake it: a syscall on the
/// request path and a context switch per record. 5 ms bounds that to 200
/// wake-ups a second; records reach the log at most that much later.
const WRITE_EVERY: Duration = Duration::from_millis(5);

/// The most records written in one batch; a full batch means more are
/// waiting, and they are written at once, without the pause.
const WRITE_BATCH: usize = 256;

/// Starts the trail on `log`: returns it and its writer, which runs until
/// every [`AuditHandle`] is dropped or `stop` turns true, then flushes.
/// Checkpoints it signs with `key` go to `publish` (the node task gossips
/// them).
pub fn start(
    log: Arc<AuditLog>,
    config: &AuditConfig,
    node: NodeId,
    key: SecretKey,
    publish: mpsc::Sender<Vec<u8>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Audit, impl std::future::Future<Output = ()> + use<>) {
    let (tx, mut rx) = mpsc::channel(config.queue.max(1));
    let (control, mut control_rx) = mpsc::channel(config.control_queue.max(1));
    let counters = Arc::new(AuditCounters::default());
    let handle = AuditHandle {
        tx,
        control,
        counters: counters.clone(),
        allow_one_in: config.allow_one_in,
        wait: config.wait,
    };
    let every = config.checkpoint_every.max(Duration::from_millis(10));
    let writer_log = log.clone();
    let writer = async move {
        let log = writer_log;
        // The first checkpoint comes at a random point of the second half
        // of the first interval, so that nodes started together (a mesh
        // upgraded at once) do not all sign, gossip and verify at the same
        // moment of every interval.
        let half_ms = (every.as_millis() as u64 / 2).max(1);
        let random_ms = getrandom::u64().unwrap_or(0) % half_ms;
        let phase = Duration::from_millis(half_ms + random_ms);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut control_batch = Vec::with_capacity(WRITE_BATCH);
        loop {
            // Both queues' senders live in every `AuditHandle`, so either
            // ending means every handle is gone; what the other still holds
            // is written below.
            tokio::select! {
                // The node task's events first: a flood of decisions never
                // holds them back.
                biased;
                n = control_rx.recv_many(&mut control_batch, WRITE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    write_batch(&log, &counters, control_batch.drain(..));
                }
                n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    write_batch(&log, &counters, batch.drain(..));
                    if n < WRITE_BATCH {
                        // The queue is empty: let records gather rather than
                        // have each sampled decision wake this task.
                        tokio::time::sleep(WRITE_EVERY).await;
                    }
                }
                _ = tick.tick() => {
                    write_batch(&log, &counters, std::iter::empty());
                    checkpoint(&log, &counters, node, &key, &publish);
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        // Whatever is still queued is written before the end.
        rx.close();
        control_rx.close();
        while let Ok(ev) = control_rx.try_recv() {
            batch.push(ev);
        }
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }
        write_batch(&log, &counters, batch.drain(..));
        checkpoint(&log, &counters, node, &key, &publish);
        if let Err(err) = log.flush() {
            tracing::error!(%err, "flushing the audit log failed");
        }
    };
    (Audit { log, handle }, writer)
}

fn write_batch(log: &AuditLog, counters: &AuditCounters, events: impl Iterator<Item = AuditEvent>) {
    let now = crate::clock::now_ms();
    let mut wrote = false;
    for ev in events {
        match log.append(now, &ev) {
            Ok(_) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
                wrote = true;
            }
            Err(err) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%err, "writing an audit record failed");
            }
        }
    }
    let dropped = counters.dropped.load(Ordering::Relaxed);
    let recorded = counters.dropped_recorded.load(Ordering::Relaxed);
    if dropped > recorded {
        let ev = AuditEvent::Dropped {
            count: dropped - recorded,
        };
        if log.append(now, &ev).is_ok() {
            counters.dropped_recorded.store(dropped, Ordering::Relaxed);
            counters.written.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                count = dropped - recorded,
                "audit events were dropped: the queue was full"
            );
            wrote = true;
        }
    }
    if wrote && let Err(err) = log.mark_head() {
        tracing::error!(%err, "writing the audit head marker failed");
    }
}

fn checkpoint(
    log: &AuditLog,
    counters: &AuditCounters,
    node: NodeId,
    key: &SecretKey,
    publish: &mpsc::Sender<Vec<u8>>,
) {
    let (seq, head) = log.head();
    if seq == 0 || log.last_checkpoint().is_some_and(|c| c.seq >= seq) {
        return;
    }
    let cp = Checkpoint {
        node,
        seq,
        head,
        at_ms: crate::clock::now_ms(),
    };
    let signed = SignedCheckpoint::sign(&cp, key);
    if let Err(err) = log
        .put_own_checkpoint(&cp, &signed)
        .and_then(|()| log.flush())
    {
        tracing::error!(%err, "storing an audit checkpoint failed");
        return;
    }
    counters.checkpoints.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(seq, "audit checkpoint signed");
    let _ = publish.try_send(signed.to_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::audit::ChainProblem;
    use weft_protocol::trust::{NodeCert, SignedNodeCert};

    fn key() -> (SecretKey, NodeId) {
        let k = SecretKey::from_seed([3; 32]);
        let id = NodeId::new(k.public());
        (k, id)
    }

    fn log_with(n: u64) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = AuditLog::open(&db).unwrap();
        for i in 0..n {
            log.append(
                1_000 + i,
                &AuditEvent::Admitted {
                    peer: format!("p{i}"),
                },
            )
            .unwrap();
        }
        log.mark_head().unwrap();
        (dir, log)
    }

    #[test]
    fn the_log_resumes_its_chain_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (seq, head) = {
            let db = sled::open(dir.path()).unwrap();
            let log = AuditLog::open(&db).unwrap();
            for i in 0..5 {
                log.append(i, &AuditEvent::Dropped { count: i }).unwrap();
            }
            log.flush().unwrap();
            log.head()
        };
        let db = sled::open(dir.path()).unwrap();
        let log = AuditLog::open(&db).unwrap();
        assert_eq!(log.head(), (seq, head));
        log.append(0, &AuditEvent::Dropped { count: 9 }).unwrap();
        let (_, id) = key();
        let v = log.verify(id, vec![]);
        assert!(v.ok(), "{:?}", v.problem);
        assert_eq!(v.records, 6);
        // Time never goes backwards within the chain.
        assert_eq!(log.record(6).unwrap().at_ms, 4);
    }

    #[test]
    fn tampering_in_the_store_is_named() {
        let (_, id) = key();
        let (_d, log) = log_with(20);
        let mut v = log
            .records_tree()
            .get(7u64.to_be_bytes())
            .unwrap()
            .unwrap()
            .to_vec();
        let last = v.len() - 2;
        v[last] ^= 1;
        log.records_tree().insert(7u64.to_be_bytes(), v).unwrap();
        assert_eq!(
            log.verify(id, vec![]).problem,
            Some(ChainProblem::Changed { seq: 7 })
        );

        let (_d, log) = log_with(20);
        log.records_tree().remove(12u64.to_be_bytes()).unwrap();
        assert!(matches!(
            log.verify(id, vec![]).problem,
            Some(ChainProblem::Missing { seq: 12, .. })
        ));

        // Truncated: the head marker remembers the length.
        let (_d, log) = log_with(20);
        for s in 15..=20u64 {
            log.records_tree().remove(s.to_be_bytes()).unwrap();
        }
        assert!(matches!(
            log.verify(id, vec![]).problem,
            Some(ChainProblem::Truncated {
                len: 14,
                seq: 20,
                ..
            })
        ));
    }

    /// A mesh for checkpoint tests: an operator who admits nodes, and the
    /// root naming it.
    struct Mesh {
        operator: SecretKey,
        root: TrustRoot,
    }

    /// A second into 2030, in milliseconds: "now" in these tests.
    const NOW_MS: u64 = 1_900_000_000_000;

    impl Mesh {
        fn new() -> Mesh {
            use weft_protocol::trust::{Operator, QuarantineLimits, Role};
            let operator = SecretKey::from_seed([40; 32]);
            let root = TrustRoot {
                version: 1,
                expires: u64::MAX,
                root_keys: vec![SecretKey::from_seed([41; 32]).public()],
                root_threshold: 1,
                operators: vec![Operator {
                    name: "alice".into(),
                    key: operator.public(),
                    roles: Role::ALL.into_iter().collect(),
                }],
                policy_threshold: 1,
                revoke_threshold: 1,
                node_quarantine: QuarantineLimits::default(),
                max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
                accepted_heads: Vec::new(),
            };
            Mesh { operator, root }
        }

        /// A certificate of `node` signed by `issuer`, expiring at `expires`
        /// (Unix seconds).
        fn cert(node: NodeId, issuer: &SecretKey, expires: u64) -> SignedNodeCert {
            SignedNodeCert::sign(
                &NodeCert {
                    node,
                    name: "edge".into(),
                    issuer: issuer.public(),
                    issued: NOW_MS / 1000 - 3600,
                    expires,
                },
                issuer,
            )
        }

        /// A node of the mesh: its key, id and a valid certificate.
        fn node(&self, seed: u8) -> (SecretKey, NodeId, SignedNodeCert) {
            let k = SecretKey::from_seed([seed; 32]);
            let id = NodeId::new(k.public());
            let cert = Mesh::cert(id, &self.operator, NOW_MS / 1000 + 86_400);
            (k, id, cert)
        }

        fn arrival(&self, now_ms: u64) -> Arrival<'_> {
            Arrival {
                from_admitted: true,
                root: &self.root,
                now_ms,
                own: key().1,
                revoked: &|_| false,
            }
        }
    }

    /// A checkpoint as the store keeps it, unsigned: the store takes
    /// checkpoints already verified, and signing thousands is slow.
    fn unsigned(node: NodeId, seq: u64, head: ChainHash) -> (Checkpoint, SignedCheckpoint) {
        let cp = Checkpoint {
            node,
            seq,
            head,
            at_ms: seq,
        };
        let body = weft_protocol::encoding::encode(weft_protocol::encoding::Kind::Checkpoint, &cp);
        let sig = weft_protocol::identity::Signature::from_bytes([0; 64]);
        (cp, SignedCheckpoint { body, sig })
    }

    /// The `(seq, head)` of every checkpoint of `node` held, unverified.
    fn held(log: &AuditLog, node: &NodeId) -> Vec<(u64, ChainHash)> {
        log.peers
            .scan_prefix(node.to_peer_id_bytes())
            .values()
            .map(|v| {
                let cp = SignedCheckpoint::from_bytes(&v.unwrap())
                    .and_then(|s| s.checkpoint())
                    .unwrap();
                (cp.seq, cp.head)
            })
            .collect()
    }

    /// `key`'s checkpoint of record `seq` with hash `head`, as gossiped with
    /// `cert`.
    fn gossip(key: &SecretKey, cert: &SignedNodeCert, seq: u64, head: ChainHash) -> Vec<u8> {
        let cp = Checkpoint {
            node: NodeId::new(key.public()),
            seq,
            head,
            at_ms: NOW_MS,
        };
        CheckpointGossip {
            checkpoint: SignedCheckpoint::sign(&cp, key),
            cert: cert.clone(),
        }
        .to_bytes()
    }

    #[test]
    fn a_checkpoint_passed_on_by_a_peer_that_is_not_admitted_is_not_kept() {
        let mesh = Mesh::new();
        let (_d, log) = log_with(1);
        let (k, id, cert) = mesh.node(50);
        let bytes = gossip(&k, &cert, 1, [1; 32]);
        let mut arrival = mesh.arrival(NOW_MS);
        arrival.from_admitted = false;
        assert!(matches!(
            log.receive_checkpoint(&bytes, &arrival),
            Received::Ignored(_)
        ));
        assert!(log.peer_checkpoints_of(&id).is_empty());
        assert_eq!(log.checkpoints_refused(), 0, "ignored, not refused");
        // The same bytes through an admitted peer are kept.
        assert!(matches!(
            log.receive_checkpoint(&bytes, &mesh.arrival(NOW_MS)),
            Received::Kept(_)
        ));
        assert_eq!(log.peer_checkpoints_of(&id).len(), 1);
    }

    #[test]
    fn checkpoints_of_nodes_without_a_valid_certificate_are_refused() {
        let mesh = Mesh::new();
        let (_d, log) = log_with(1);
        let (k, id, good) = mesh.node(51);
        let (_, other, others_cert) = mesh.node(52);
        let stranger = SecretKey::from_seed([53; 32]);
        let now = NOW_MS / 1000;
        let bare = {
            let cp = Checkpoint {
                node: id,
                seq: 1,
                head: [1; 32],
                at_ms: NOW_MS,
            };
            SignedCheckpoint::sign(&cp, &k).to_bytes()
        };
        let cases = [
            ("no certificate", bare),
            (
                "an expired certificate",
                gossip(&k, &Mesh::cert(id, &mesh.operator, now - 1), 1, [1; 32]),
            ),
            (
                "a certificate of another mesh",
                gossip(&k, &Mesh::cert(id, &stranger, now + 60), 1, [1; 32]),
            ),
            (
                "another node's certificate",
                gossip(&k, &others_cert, 1, [1; 32]),
            ),
        ];
        for (i, (what, bytes)) in cases.iter().enumerate() {
            let got = log.receive_checkpoint(bytes, &mesh.arrival(NOW_MS));
            assert!(matches!(got, Received::Refused(_)), "{what}: {got:?}");
            assert_eq!(log.checkpoints_refused(), i as u64 + 1, "{what}");
            assert_eq!(log.peer_checkpoint_count(), 0, "{what}: nothing kept");
        }
        assert!(log.peer_checkpoints_of(&other).is_empty());
        let got = log.receive_checkpoint(&gossip(&k, &good, 1, [1; 32]), &mesh.arrival(NOW_MS));
        assert!(matches!(got, Received::Kept(_)), "{got:?}");
    }

    #[test]
    fn fake_node_ids_cannot_fill_the_node_cap() {
        let mesh = Mesh::new();
        let (_d, log) = log_with(1);
        let stranger = SecretKey::from_seed([60; 32]);
        let now = NOW_MS / 1000;
        // Fresh keys, each with a certificate it made up (or made by
        // someone outside the mesh): every one is refused, none is held.
        for i in 0..300u32 {
            let mut seed = [61u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            let k = SecretKey::from_seed(seed);
            let id = NodeId::new(k.public());
            let issuer = if i % 2 == 0 { &k } else { &stranger };
            let bytes = gossip(&k, &Mesh::cert(id, issuer, now + 60), 1, [1; 32]);
            let got = log.receive_checkpoint(&bytes, &mesh.arrival(NOW_MS));
            assert!(matches!(got, Received::Refused(_)), "fake {i}: {got:?}");
        }
        assert_eq!(log.peer_nodes(), 0);
        assert_eq!(log.checkpoints_refused(), 300);
        // A node of the mesh still has its room.
        let (k, id, cert) = mesh.node(62);
        let got = log.receive_checkpoint(&gossip(&k, &cert, 1, [1; 32]), &mesh.arrival(NOW_MS));
        assert!(matches!(got, Received::Kept(_)), "{got:?}");
        assert_eq!(log.peer_nodes(), 1);
        assert_eq!(log.peer_checkpoints_of(&id).len(), 1);
    }

    #[test]
    fn checkpoints_of_revoked_nodes_and_this_node_are_ignored() {
        let mesh = Mesh::new();
        let (_d, log) = log_with(1);
        let (k, id, cert) = mesh.node(63);
        let bytes = gossip(&k, &cert, 1, [1; 32]);
        let revoked = |n: &NodeId| *n == id;
        let mut arrival = mesh.arrival(NOW_MS);
        arrival.revoked = &revoked;
        assert!(matches!(
            log.receive_checkpoint(&bytes, &arrival),
            Received::Ignored(_)
        ));
        let mut arrival = mesh.arrival(NOW_MS);
        arrival.own = id;
        assert!(matches!(
            log.receive_checkpoint(&bytes, &arrival),
            Received::Ignored(_)
        ));
        assert_eq!(log.peer_checkpoint_count(), 0);
        assert_eq!(log.checkpoints_refused(), 0);
    }

    #[test]
    fn a_node_cannot_flood_its_peers_with_checkpoints() {
        let mesh = Mesh::new();
        let (_d, log) = log_with(1);
        let (k, id, cert) = mesh.node(64);
        let mut kept = 0;
        for seq in 1..=(CHECKPOINT_BURST as u64 + 50) {
            let got =
                log.receive_checkpoint(&gossip(&k, &cert, seq, [1; 32]), &mesh.arrival(NOW_MS));
            match got {
                Received::Kept(_) => kept += 1,
                Received::Ignored(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(kept, CHECKPOINT_BURST);
        // Room for one more after the refill interval.
        let later = NOW_MS + CHECKPOINT_REFILL.as_millis() as u64;
        let next = CHECKPOINT_BURST as u64 + 51;
        let arrival = mesh.arrival(later);
        assert!(matches!(
            log.receive_checkpoint(&gossip(&k, &cert, next, [1; 32]), &arrival),
            Received::Kept(_)
        ));
        assert!(matches!(
            log.receive_checkpoint(&gossip(&k, &cert, next + 1, [1; 32]), &arrival),
            Received::Ignored(_)
        ));
        // Another node is not held back by this one.
        let (k2, _, cert2) = mesh.node(65);
        assert!(matches!(
            log.receive_checkpoint(&gossip(&k2, &cert2, 1, [1; 32]), &arrival),
            Received::Kept(_)
        ));
        assert_eq!(log.peer_checkpoints_of(&id).len(), CHECKPOINT_BURST + 1);
    }

    #[test]
    fn peers_keep_the_newest_and_a_thinning_tail_back_to_the_first() {
        let (_, id) = key();
        let (_d, log) = log_with(1);
        let n = 3_000u64;
        for seq in 1..=n {
            let (cp, signed) = unsigned(id, seq, [seq as u8; 32]);
            assert!(log.put_peer_checkpoint(&cp, &signed).unwrap());
            let count = log.peers.scan_prefix(id.to_peer_id_bytes()).count();
            assert!(count <= MAX_PEER_CHECKPOINTS, "{count} after {seq}");
        }
        // Arrival i (from 0) is the checkpoint of record i + 1.
        let expected: Vec<u64> = (0..n)
            .filter(|&i| keeps_arrival(i, n - 1))
            .map(|i| i + 1)
            .collect();
        let seqs: Vec<u64> = held(&log, &id).iter().map(|h| h.0).collect();
        assert_eq!(seqs, expected);
        assert_eq!(seqs[0], 1, "the first is kept");
        assert!(seqs.ends_with(&((n - RECENT_CHECKPOINTS + 1)..=n).collect::<Vec<_>>()));
        // Again: not new.
        let (cp, signed) = unsigned(id, n, [n as u8; 32]);
        assert!(!log.put_peer_checkpoint(&cp, &signed).unwrap());
    }

    /// A chain of `n` records, with records from `changed` on rewritten
    /// (0: none), and its hashes.
    fn hashes(n: u64, changed: u64) -> Vec<ChainHash> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let ev = if changed != 0 && seq >= changed {
                    b"forged".to_vec()
                } else {
                    b"true".to_vec()
                };
                let r = Record::new(seq, seq, prev, ev);
                prev = r.hash;
                r.hash
            })
            .collect()
    }

    #[test]
    fn a_rewrite_is_still_exposed_after_hundreds_of_new_checkpoints() {
        let (_, id) = key();
        let (_d, peer) = log_with(1);
        let keep = |seq: u64, chain: &[ChainHash]| {
            let (cp, signed) = unsigned(id, seq, chain[seq as usize - 1]);
            assert!(peer.put_peer_checkpoint(&cp, &signed).unwrap());
        };
        // 100 checkpoints of the honest chain, one per record; then records
        // from 50 on are rewritten, and 300 checkpoints of the rewritten
        // chain follow.
        let honest = hashes(100, 0);
        for seq in 1..=100 {
            keep(seq, &honest);
        }
        let forged = hashes(400, 50);
        for seq in 101..=400 {
            keep(seq, &forged);
        }
        let held: Vec<HeldCheckpoint> = held(&peer, &id)
            .into_iter()
            .map(|(seq, head)| HeldCheckpoint {
                checkpoint: unsigned(id, seq, head).0,
                holder: "peer".into(),
            })
            .collect();
        assert!(held.len() <= MAX_PEER_CHECKPOINTS);
        let mut walker = ChainWalker::new(id, held);
        let mut prev = GENESIS;
        for seq in 1..=400u64 {
            let ev = if seq >= 50 {
                b"forged".to_vec()
            } else {
                b"true".to_vec()
            };
            let r = Record::new(seq, seq, prev, ev);
            prev = r.hash;
            walker.push(seq, &r.to_value());
        }
        match walker.finish().problem {
            Some(ChainProblem::Rewritten { from, seq, .. }) => {
                assert!(from <= 50 && (50..=100).contains(&seq), "{from} {seq}");
            }
            other => panic!("the rewrite went unnoticed: {other:?}"),
        }
    }

    #[test]
    fn two_checkpoints_of_one_record_are_both_kept() {
        let (_, id) = key();
        let (_d, log) = log_with(1);
        let put = |seq: u64, head: ChainHash| {
            let (cp, signed) = unsigned(id, seq, head);
            log.put_peer_checkpoint(&cp, &signed).unwrap()
        };
        for seq in 1..=200 {
            assert!(put(seq, [1; 32]));
        }
        // Record 150 signed again with another hash: the node equivocates.
        assert!(put(150, [2; 32]));
        assert!(!put(150, [2; 32]), "held already");
        for seq in 201..=3_000 {
            assert!(put(seq, [1; 32]));
        }
        let at_150: Vec<ChainHash> = held(&log, &id)
            .iter()
            .filter(|h| h.0 == 150)
            .map(|h| h.1)
            .collect();
        assert_eq!(at_150, vec![[1; 32], [2; 32]], "both, whatever came after");
        // Bounded, however often it equivocates.
        for seq in 2_900..3_000 {
            put(seq, [3; 32]);
        }
        let all = held(&log, &id);
        let mut seqs: Vec<u64> = all.iter().map(|h| h.0).collect();
        seqs.dedup();
        assert_eq!(all.len() - seqs.len(), MAX_EQUIVOCATIONS);
    }

    /// The retention rule over every history up to a few thousand
    /// arrivals, and sampled far beyond: the first is kept; no more than
    /// [`MAX_PEER_CHECKPOINTS`] are; what is dropped is never needed again;
    /// and of any `e` consecutive arrivals followed by `k` more, one is kept
    /// when `k < RECENT_CHECKPOINTS` or `3e + 1 >= k`.
    #[test]
    fn the_retention_rule_keeps_the_first_stays_bounded_and_keeps_evidence() {
        let mut before: Vec<bool> = Vec::new();
        for newest in 0..3_000u64 {
            let kept: Vec<bool> = (0..=newest).map(|i| keeps_arrival(i, newest)).collect();
            assert!(kept[0], "the first, at {newest}");
            let n = kept.iter().filter(|k| **k).count();
            assert!(n <= MAX_PEER_CHECKPOINTS, "{n} at {newest}");
            assert_eq!(n as u64, kept_count(newest), "{newest}");
            for (i, was) in before.iter().enumerate() {
                assert!(*was || !kept[i], "{i} came back at {newest}");
            }
            // For each arrival, how far back the nearest kept one is: the
            // shortest run ending there that keeps one is one longer.
            let mut nearest = 0u64;
            for (last, k) in kept.iter().enumerate() {
                nearest = if *k { 0 } else { nearest + 1 };
                let after = newest - last as u64;
                // A run of `nearest` arrivals ending at `last` lost them all:
                // the bound must not have promised one.
                let promised = after < RECENT_CHECKPOINTS || 3 * nearest + 1 >= after;
                assert!(
                    nearest == 0 || !promised,
                    "{nearest} arrivals up to {last} all dropped at {newest}"
                );
            }
            before = kept;
        }
        // Far beyond, sampled: the count stays bounded, and the bound holds
        // for the shortest run it speaks of.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let shift = next() % 64;
            let newest = next() >> shift;
            assert!(
                kept_count(newest) <= MAX_PEER_CHECKPOINTS as u64,
                "{newest}"
            );
            let after = next() % (newest.min(1 << 40) + 1);
            let last = newest - after;
            let e = after.saturating_sub(1).div_ceil(3).clamp(1, last + 1);
            let first = last + 1 - e;
            if newest - first < RECENT_CHECKPOINTS << THINNED_LEVELS {
                assert!(
                    kept_between(first, last, newest),
                    "arrivals {first}..={last} all dropped at {newest}"
                );
            }
        }
    }

    /// The arrivals [`keeps_arrival`] keeps when the newest is `newest`,
    /// counted level by level rather than one by one.
    fn kept_count(newest: u64) -> u64 {
        let mut n = if newest < RECENT_CHECKPOINTS {
            newest + 1
        } else {
            RECENT_CHECKPOINTS + 1
        };
        for level in 0..THINNED_LEVELS {
            n += level_range(level, newest)
                .map_or(0, |(lo, hi, spacing)| hi / spacing - (lo - 1) / spacing);
        }
        n
    }

    /// Whether [`keeps_arrival`] keeps one of `first..=last` when the newest
    /// is `newest`, found level by level.
    fn kept_between(first: u64, last: u64, newest: u64) -> bool {
        if first == 0 || newest - last < RECENT_CHECKPOINTS {
            return true;
        }
        (0..THINNED_LEVELS).any(|level| {
            level_range(level, newest).is_some_and(|(lo, hi, spacing)| {
                let (lo, hi) = (lo.max(first), hi.min(last));
                lo <= hi && hi / spacing > (lo - 1) / spacing
            })
        })
    }

    /// The arrivals (never the first) whose age puts them at `level` when
    /// the newest is `newest`, and the spacing kept there.
    fn level_range(level: u32, newest: u64) -> Option<(u64, u64, u64)> {
        let young = RECENT_CHECKPOINTS << level;
        let old = (young << 1) - 1;
        if newest < young {
            return None;
        }
        let hi = newest - young;
        let lo = newest.saturating_sub(old).max(1);
        (lo <= hi).then_some((lo, hi, young / CHECKPOINTS_PER_DOUBLING))
    }

    #[tokio::test]
    async fn a_full_queue_drops_counts_and_records_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let (k, id) = key();
        let (ptx, mut prx) = mpsc::channel(4);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let cfg = AuditConfig {
            queue: 8,
            control_queue: 8,
            wait: Duration::ZERO,
            allow_one_in: 1,
            checkpoint_every: Duration::from_secs(3600),
        };
        let (audit, writer) = start(log.clone(), &cfg, id, k, ptx, stop);
        // The writer is not running yet: 8 fit, 42 are dropped.
        for i in 0..50 {
            audit.handle.record(AuditEvent::Dropped { count: i });
        }
        assert_eq!(audit.handle.counters().dropped.load(Ordering::Relaxed), 42);
        assert_eq!(audit.status().dropped, 42);
        let handle = audit.handle.clone();
        drop(audit);
        drop(handle);
        writer.await;
        let records = log.records_from(1, 100);
        assert_eq!(records.len(), 9, "8 events and one record of the gap");
        let last: AuditEvent = serde_json::from_slice(&records[8].event).unwrap();
        assert_eq!(last, AuditEvent::Dropped { count: 42 });
        // The final checkpoint was signed and handed over for gossip.
        let bytes = prx.try_recv().expect("a checkpoint to gossip");
        let cp = SignedCheckpoint::from_bytes(&bytes)
            .unwrap()
            .verify()
            .unwrap();
        assert_eq!((cp.node, cp.seq), (id, 9));
        assert!(log.verify(id, vec![]).ok());
    }

    fn handle(
        allow_one_in: u64,
        queue: usize,
        wait: Duration,
    ) -> (
        AuditHandle,
        mpsc::Receiver<AuditEvent>,
        mpsc::Receiver<AuditEvent>,
    ) {
        let (tx, rx) = mpsc::channel(queue);
        let (control, control_rx) = mpsc::channel(queue);
        let h = AuditHandle {
            tx,
            control,
            counters: Arc::default(),
            allow_one_in,
            wait,
        };
        (h, rx, control_rx)
    }

    #[tokio::test]
    async fn allows_are_sampled_and_denies_always_written() {
        let (h, mut rx, _control) = handle(10, 1000, Duration::ZERO);
        let ev = |s: Option<u64>| AuditEvent::Dropped {
            count: s.unwrap_or(0),
        };
        for _ in 0..100 {
            h.decision(ev, true).await;
        }
        for _ in 0..7 {
            h.decision(ev, false).await;
        }
        let mut allows = 0;
        let mut denies = 0;
        while let Ok(e) = rx.try_recv() {
            match e {
                AuditEvent::Dropped { count: 10 } => allows += 1,
                AuditEvent::Dropped { count: 0 } => denies += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((allows, denies), (10, 7));
    }

    fn deny(n: u64) -> impl FnOnce(Option<u64>) -> AuditEvent {
        move |_| AuditEvent::Dropped { count: n }
    }

    #[tokio::test]
    async fn a_full_queue_makes_decisions_wait_instead_of_dropping_them() {
        let (h, mut rx, _control) = handle(1, 2, Duration::from_secs(5));
        h.decision(deny(1), false).await;
        h.decision(deny(2), false).await;
        // The queue is full; the writer frees room 50 ms later.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut got = Vec::new();
            while let Some(AuditEvent::Dropped { count }) = rx.recv().await {
                got.push(count);
                if got.len() == 3 {
                    break;
                }
            }
            got
        });
        let started = std::time::Instant::now();
        h.decision(deny(3), false).await;
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "the third decision waited for room: {:?}",
            started.elapsed()
        );
        assert_eq!(
            reader.await.unwrap(),
            vec![1, 2, 3],
            "nothing lost, in order"
        );
        let c = h.counters();
        assert_eq!(c.waits.load(Ordering::Relaxed), 1);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_decision_that_waits_too_long_is_dropped_and_counted() {
        let (h, _rx, _control) = handle(1, 1, Duration::from_millis(20));
        h.decision(deny(1), false).await;
        let started = std::time::Instant::now();
        h.decision(deny(2), false).await;
        assert!(started.elapsed() >= Duration::from_millis(20));
        let c = h.counters();
        assert_eq!(c.waits.load(Ordering::Relaxed), 1);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_flood_of_decisions_does_not_crowd_out_the_node_tasks_events() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let (k, id) = key();
        let (ptx, _prx) = mpsc::channel(4);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let cfg = AuditConfig {
            queue: 4,
            wait: Duration::ZERO,
            control_queue: 4,
            ..AuditConfig::default()
        };
        let (audit, writer) = start(log.clone(), &cfg, id, k, ptx, stop);
        // The writer is not running yet: the decision queue overflows...
        for i in 0..20 {
            audit.handle.decision(deny(100 + i), false).await;
        }
        // ...and the node task's events still have their room.
        for i in 0..4 {
            audit.handle.record(AuditEvent::Dropped { count: i });
        }
        let c = audit.handle.counters();
        assert_eq!(c.dropped.load(Ordering::Relaxed), 16);
        let handle = audit.handle.clone();
        drop(audit);
        drop(handle);
        writer.await;
        let counts: Vec<u64> = log
            .records_from(1, 100)
            .iter()
            .map(|r| match serde_json::from_slice(&r.event).unwrap() {
                AuditEvent::Dropped { count } => count,
                other => panic!("{other:?}"),
            })
            .collect();
        // The node task's events first, with the record of the gap right
        // after the first batch, then the decisions that fit.
        assert_eq!(counts, vec![0, 1, 2, 3, 16, 100, 101, 102, 103]);
        assert!(log.verify(id, vec![]).ok());
    }
}
