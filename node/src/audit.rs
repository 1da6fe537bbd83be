//! The node's audit trail: a hash-chained log in sled, fed through a bounded
//! queue, with signed checkpoints gossiped to peers.
//!
//! ```text
//! store/ (sled, beside the updates)
//! ├── audit              seq (u64 BE) -> prev (32) || hash (32) || at_ms (u64 BE) || event (JSON)
//! ├── audit_checkpoints  seq (u64 BE) -> this node's SignedCheckpoint of that record
//! ├── audit_peer_cps     peer id (38) || seq (u64 BE) -> a peer's SignedCheckpoint
//! └── meta               "audit_head" -> seq (u64 BE) || hash (32), rewritten with every batch
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
//! Every [`AuditConfig::checkpoint_every`] (if the chain grew), the writer
//! signs a checkpoint of the head with the node's key, keeps it, flushes, and
//! has the node task gossip it on [`AUDIT_TOPIC`], with the node's
//! certificate ([`weft_protocol::audit::CheckpointGossip`]). Peers verify and keep the
//! newest [`MAX_PEER_CHECKPOINTS`] of each node, so a node that later rewrites
//! or truncates its log is caught by `weft audit verify --peer-dir` against
//! any of them.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;
use weft_protocol::audit::{
    ChainHash, ChainWalker, Checkpoint, GENESIS, HeldCheckpoint, MAX_EVENT_LEN, Record,
    SignedCheckpoint, Verification,
};
use weft_protocol::identity::{NodeId, SecretKey};

/// The gossipsub topic of audit checkpoints.
pub const AUDIT_TOPIC: &str = "weft/audit/v2";

/// Checkpoints kept per peer. At the default interval (30 s) that is about
/// two hours of one peer's history at full rate; older ones are dropped
/// first, and since each one covers the whole chain before it, the newest
/// alone catches any rewrite before it.
pub const MAX_PEER_CHECKPOINTS: usize = 256;

/// Peers whose checkpoints are kept at most. A node seeing checkpoints of
/// more distinct nodes than this refuses the new ones (a flood of fresh keys
/// must not fill the disk).
pub const MAX_CHECKPOINT_NODES: usize = 10_000;

const RECORDS: &str = "audit";
const OWN_CPS: &str = "audit_checkpoints";
const PEER_CPS: &str = "audit_peer_cps";
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
    },
    /// An update was applied (or held for its dependencies).
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
    /// Events dropped because the queue was full.
    Dropped {
        /// How many since the last such record.
        count: u64,
    },
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
    /// Returns whether it was new. The newest [`MAX_PEER_CHECKPOINTS`] per
    /// peer are kept; checkpoints of a peer beyond [`MAX_CHECKPOINT_NODES`]
    /// are refused.
    pub fn put_peer_checkpoint(
        &self,
        cp: &Checkpoint,
        signed: &SignedCheckpoint,
    ) -> Result<bool, AuditLogError> {
        let prefix = cp.node.to_peer_id_bytes();
        let mut key = prefix.to_vec();
        key.extend_from_slice(&cp.seq.to_be_bytes());
        if self.peers.contains_key(&key)? {
            return Ok(false);
        }
        let known = self.peers.scan_prefix(prefix).next().is_some();
        if !known && self.peer_nodes() >= MAX_CHECKPOINT_NODES {
            return Ok(false);
        }
        self.peers.insert(key, signed.to_bytes())?;
        let held: Vec<sled::IVec> = self
            .peers
            .scan_prefix(prefix)
            .keys()
            .filter_map(Result::ok)
            .collect();
        if held.len() > MAX_PEER_CHECKPOINTS {
            for k in &held[..held.len() - MAX_PEER_CHECKPOINTS] {
                self.peers.remove(k)?;
            }
        }
        Ok(true)
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

/// The audit trail in [`crate::api::Status`] and `GET /v1/audit/status`.
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
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
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
    let now = crate::net::now_ms();
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
        at_ms: crate::net::now_ms(),
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

    #[test]
    fn peer_checkpoints_are_capped_per_peer() {
        let (k, id) = key();
        let (_d, log) = log_with(1);
        for seq in 1..=(MAX_PEER_CHECKPOINTS as u64 + 10) {
            let cp = Checkpoint {
                node: id,
                seq,
                head: [seq as u8; 32],
                at_ms: seq,
            };
            assert!(
                log.put_peer_checkpoint(&cp, &SignedCheckpoint::sign(&cp, &k))
                    .unwrap()
            );
        }
        let held = log.peer_checkpoints_of(&id);
        assert_eq!(held.len(), MAX_PEER_CHECKPOINTS);
        assert_eq!(held[0].0.seq, 11, "the oldest are dropped first");
        let again = held[0].0.clone();
        assert!(!log.put_peer_checkpoint(&again, &held[0].1).unwrap());
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
