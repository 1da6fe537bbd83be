//! The libp2p driver of the sans-IO [`Replica`]: one task owns the replica,
//! the swarm and the store, and carries out every effect the replica asks for.
//!
//! The swarm itself (behaviours, codec) is [`crate::swarm`], its
//! transports [`crate::transport`]; the commands the task takes and the
//! state it shares are [`crate::control`]; the status and the evidence the
//! task answers are built in `status.rs` in this module, what it does
//! to find peers beyond the configured ones in `discovery.rs`, its side
//! of NAT traversal (relays, hole punching, reachability) in `relay.rs`,
//! and the gossip of detection summaries in `summaries.rs`.
//!
//! # Mapping
//! | replica | driver |
//! |---|---|
//! | `Publish` | gossipsub publish (no peers yet is fine: sync catches them up) |
//! | `Verdict` | `report_message_validation_result` for the message being handled |
//! | `Send` / `Respond` | request-response request / response on the stored channel |
//! | `Persist` | sled insert before anything else; then a flush at once for a local submit or order (durable before the 202), or by the background flusher, [`BACKGROUND_FLUSH_DELAY`] later, for updates from peers (forwarding and the new view never wait on the disk) |
//! | `Applied` | a new [`PolicyView`] is swapped in for readers |
//! | `Penalize` | a log line (gossipsub scoring has already counted the reject) |
//! | `Disconnect` / `Ban` | close the connections; a ban also blocks the peer |
//! | `Schedule` | a timer in this task |
//!
//! # Time
//! The replica checks certificates against `now_ms / 1000` as Unix seconds,
//! so `now_ms` is the wall clock in milliseconds since the Unix epoch. Timers
//! run on tokio's monotonic clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, PublishError};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, ping};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use weft_crdt::ChangeHash;
use weft_protocol::audit::{CheckpointGossip, SignedCheckpoint};
use weft_protocol::export::StateExport;
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::replica::{self, Accepted, Input, Output, Replica, Timer, Verdict};
use weft_protocol::trust::SignedNodeCert;
use weft_protocol::wire::{SyncRequest, SyncResponse};

use crate::audit::AuditEvent;
use crate::clock::now_ms;
use crate::control::{Command, Shared, SubmitError, Submitted};
use crate::store::{Store, StoreError};
use crate::swarm::{Behaviour, BehaviourEvent, TOPIC, fit_response, split_p2p};

mod discovery;
mod relay;
mod spans;
mod status;
mod summaries;

/// First delay before redialing a configured peer; it doubles after each
/// failure up to [`REDIAL_MAX`], and resets after a successful connection.
/// Each wait is drawn within ±20% of the backoff ([`jittered`]), so that
/// the nodes on one side of a healed partition do not dial in lock step.
pub const REDIAL_MIN: Duration = Duration::from_millis(100);

/// Longest delay between two dials of a configured peer. Short: a dial of
/// an unreachable peer costs one SYN (a connect gives up after
/// [`crate::swarm::CONNECT_TIMEOUT`]), and the sooner the next one goes out
/// after a partition heals, the sooner both sides sync. A peer that stays
/// unreachable is dialed about every 1.5 s.
pub const REDIAL_MAX: Duration = Duration::from_millis(500);

/// How often the node task looks for configured peers to dial.
const REDIAL_TICK: Duration = Duration::from_millis(50);

/// How often, at most, the node task tends its discovered peers and relays
/// ([`NodeTask::discover`], [`NodeTask::relay_tick`]): every redial tick
/// would cost an idle node CPU for nothing, since lookups, trims and relay
/// retries run on timers of a second or more.
const MAINTAIN_EVERY: Duration = Duration::from_millis(250);

/// `backoff` within ±20%, drawn anew each time.
fn jittered(backoff: Duration) -> Duration {
    let spread = u64::from(getrandom::u32().unwrap_or(0) % 401); // 0..=400
    backoff * (800 + spread as u32) / 1000
}

/// Refusals of a peer's updates recorded in the audit trail per batch of
/// effects; the rest are counted in the metrics only.
const MAX_REFUSALS_RECORDED: usize = 16;

/// How often an expired trust root is reported.
const EXPIRED_ROOT_LOG_EVERY: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The node task

/// A peer the node dials and keeps dialing.
#[derive(Debug)]
struct DialTarget {
    /// The address, without its `/p2p/` suffix.
    addr: Multiaddr,
    /// The peer at that address: from the `/p2p/` suffix, or learned on the
    /// first connection.
    peer: Option<PeerId>,
    /// When to dial next.
    next: Instant,
    /// The current backoff.
    backoff: Duration,
    /// The dial in flight.
    pending: Option<ConnectionId>,
}

/// Everything the node task needs at start.
pub(crate) struct NodeTaskParts {
    /// The swarm, already listening.
    pub swarm: Swarm<Behaviour>,
    /// The replica, holding the loaded state.
    pub replica: Replica<PeerId>,
    /// The store.
    pub store: Arc<Store>,
    /// Shared with the API.
    pub shared: Arc<Shared>,
    /// The `SignedRoot` bytes the node runs under, for `GET /v1/state`.
    pub signed_root: Vec<u8>,
    /// `DIR/trust.json`, rewritten when the node adopts a rotation.
    pub trust_file: std::path::PathBuf,
    /// Peers to dial and keep dialing.
    pub peers: Vec<Multiaddr>,
    /// How to find more peers, and how to relay.
    pub discovery: crate::discovery::DiscoveryOptions,
    /// The admitted peers the relay server serves (the swarm holds the
    /// other end); the task keeps it.
    pub admitted: crate::relay::Admitted,
    /// Applied updates between snapshots.
    pub snapshot_every: u64,
    /// Commands from the API and tests.
    pub commands: mpsc::Receiver<Command>,
    /// Becomes `true` when the node should stop.
    pub shutdown: watch::Receiver<bool>,
    /// The audit log (peers' checkpoints are kept in it).
    pub audit_log: Arc<crate::audit::AuditLog>,
    /// Where audit events go.
    pub audit: crate::audit::AuditHandle,
    /// This node's signed checkpoints, to gossip.
    pub checkpoints: mpsc::Receiver<Vec<u8>>,
    /// The node's key, to sign quarantine orders.
    pub node_key: SecretKey,
    /// libp2p's metrics, recorded from swarm events.
    pub p2p_metrics: libp2p::metrics::Metrics,
    /// The mesh view, when detection across sites is on.
    pub mesh: Option<Arc<crate::mesh_detect::MeshDetect>>,
    /// This node's detection summaries, to sign and gossip.
    pub summaries: mpsc::Receiver<weft_protocol::summary::Summary>,
}

/// The task that owns the replica and the swarm.
pub(crate) struct NodeTask {
    swarm: Swarm<Behaviour>,
    replica: Replica<PeerId>,
    store: Arc<Store>,
    shared: Arc<Shared>,
    signed_root: Vec<u8>,
    trust_file: std::path::PathBuf,
    topic: IdentTopic,
    targets: Vec<DialTarget>,
    timers: BTreeMap<(Instant, u64), Timer<PeerId>>,
    timer_seq: u64,
    channels: HashMap<u64, ResponseChannel<Vec<u8>>>,
    next_request: u64,
    requests: HashMap<OutboundRequestId, PeerId>,
    partitioned: BTreeSet<PeerId>,
    /// The latest ping round trip to each connected peer.
    rtt: HashMap<PeerId, Duration>,
    /// When each connection last answered a ping (or opened): one silent
    /// for [`crate::swarm::SILENT_CONNECTION`] is closed.
    answered: HashMap<ConnectionId, Instant>,
    /// When the redial tick last ran: a node task that was itself held up
    /// does not blame its connections for the silence.
    last_tick: Instant,
    /// When [`Self::redial`] last tended discovery and relays.
    maintained: Option<Instant>,
    banned: BTreeSet<PeerId>,
    /// Every applied change by actor (hex) and highest op counter, to find
    /// the change that holds a live operation ([`NodeTask::change_of`]): for
    /// the signers and times of bundles and revocations.
    actors: HashMap<String, BTreeMap<u64, ChangeHash>>,
    /// How many hashes `actors` holds.
    indexed: usize,
    /// The author's timestamp of every applied change (Unix seconds, 0 when
    /// not recorded), filled with `actors`.
    times: HashMap<ChangeHash, i64>,
    applied_since_snapshot: u64,
    snapshot_every: u64,
    /// The snapshot being encoded and written on the blocking pool, if any.
    snapshot_writer: Option<tokio::task::JoinHandle<()>>,
    commands: mpsc::Receiver<Command>,
    shutdown: watch::Receiver<bool>,
    audit_log: Arc<crate::audit::AuditLog>,
    audit: crate::audit::AuditHandle,
    audit_topic: IdentTopic,
    checkpoints: mpsc::Receiver<Vec<u8>>,
    node_key: SecretKey,
    p2p_metrics: libp2p::metrics::Metrics,
    /// The topic of detection summaries.
    summary_topic: IdentTopic,
    /// The mesh view, when detection across sites is on.
    mesh: Option<Arc<crate::mesh_detect::MeshDetect>>,
    /// This node's detection summaries, from the detector task.
    summaries: mpsc::Receiver<weft_protocol::summary::Summary>,
    /// Peers admitted so far, to record each admission once.
    admitted: BTreeSet<PeerId>,
    /// Wakes the background flusher ([`flush_when_asked`]).
    flush_wanted: Arc<Notify>,
    /// Discovery: the address book, lookups, connections by peer.
    discovery: discovery::DiscoveryState,
    /// NAT traversal: relays, hole punches, reachability.
    relay: relay::RelayState,
}

/// When the updates among a batch of outputs are flushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// Before anything else is carried out: the caller is told the update
    /// was accepted, so it must survive a crash.
    Now,
    /// By the background flusher, soon after: updates from peers, which a
    /// node that crashes first fetches again by sync.
    Background,
}

/// How long the background flusher waits after it is asked before it
/// flushes: the disk work stays out of the moment an update spreads (each
/// node forwards it, then its peers do, within milliseconds, all on the
/// same cores), and updates that arrive together share one flush.
pub const BACKGROUND_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Flushes the store [`BACKGROUND_FLUSH_DELAY`] after it is asked, on the
/// blocking pool, so that the node's task never waits on the disk for
/// updates from peers. Requests that arrive while it waits are served by
/// the same flush; those that arrive while a flush runs, by one more after
/// it. Returns when `stop` is notified, never during a flush: once it has
/// returned, nothing it started holds the store (and sled's lock on it);
/// the task flushes the store itself as it stops.
async fn flush_when_asked(store: Arc<Store>, wanted: Arc<Notify>, stop: Arc<Notify>) {
    loop {
        tokio::select! {
            biased;
            () = stop.notified() => return,
            () = wanted.notified() => {}
        }
        tokio::select! {
            biased;
            () = stop.notified() => return,
            () = tokio::time::sleep(BACKGROUND_FLUSH_DELAY) => {}
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "flushing the store failed"),
            Err(err) => tracing::error!(%err, "flushing the store did not finish"),
        }
    }
}

impl NodeTask {
    /// A task from its parts. Call [`NodeTask::run`] to drive it.
    pub(crate) fn new(parts: NodeTaskParts, applied_since_snapshot: u64) -> Self {
        let now = Instant::now();
        let targets = parts
            .peers
            .into_iter()
            .map(|addr| {
                let (addr, peer) = split_p2p(addr);
                DialTarget {
                    addr,
                    peer,
                    next: now,
                    backoff: REDIAL_MIN,
                    pending: None,
                }
            })
            .collect();
        let mut task = NodeTask {
            swarm: parts.swarm,
            replica: parts.replica,
            store: parts.store,
            shared: parts.shared,
            signed_root: parts.signed_root,
            trust_file: parts.trust_file,
            topic: IdentTopic::new(TOPIC),
            targets,
            timers: BTreeMap::new(),
            timer_seq: 0,
            channels: HashMap::new(),
            next_request: 0,
            requests: HashMap::new(),
            partitioned: BTreeSet::new(),
            rtt: HashMap::new(),
            answered: HashMap::new(),
            last_tick: Instant::now(),
            maintained: None,
            banned: BTreeSet::new(),
            actors: HashMap::new(),
            indexed: 0,
            times: HashMap::new(),
            applied_since_snapshot,
            snapshot_every: parts.snapshot_every.max(1),
            snapshot_writer: None,
            commands: parts.commands,
            shutdown: parts.shutdown,
            audit_log: parts.audit_log,
            audit: parts.audit,
            audit_topic: IdentTopic::new(crate::audit::AUDIT_TOPIC),
            checkpoints: parts.checkpoints,
            node_key: parts.node_key,
            p2p_metrics: parts.p2p_metrics,
            summary_topic: summaries::topic(),
            mesh: parts.mesh,
            summaries: parts.summaries,
            admitted: BTreeSet::new(),
            flush_wanted: Arc::new(Notify::new()),
            relay: relay::RelayState::new(parts.discovery.relay.clone(), parts.admitted),
            discovery: discovery::DiscoveryState::new(parts.discovery),
        };
        // A node with detection across sites off takes no summaries: it
        // leaves their topic, so that peers send it none.
        if task.mesh.is_none() {
            let topic = task.summary_topic.clone();
            let _ = task.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
        }
        // The swarm is listening already: its first addresses were taken
        // by the start-up, not replayed.
        for address in task.swarm.listeners().cloned().collect::<Vec<_>>() {
            task.relay_listening(&address, true);
        }
        task
    }

    /// Handles swarm events that arrived before the task ran (while the
    /// node waited for its listen addresses).
    pub(crate) fn replay(&mut self, events: Vec<SwarmEvent<BehaviourEvent>>) {
        for e in events {
            self.on_swarm_event(e);
        }
    }

    /// Runs until shutdown is signalled, then flushes the store. While it
    /// runs, [`Shared::liveness`] says so; if it ends any other way (a
    /// panic), it says the task failed.
    pub(crate) async fn run(mut self) {
        let running = self.shared.liveness.running();
        let stop_flusher = Arc::new(Notify::new());
        let flusher = tokio::spawn(flush_when_asked(
            self.store.clone(),
            self.flush_wanted.clone(),
            stop_flusher.clone(),
        ));
        let start = self.replica.start();
        let _ = self.carry_out(start, None, Flush::Background);
        self.check_snapshot();
        self.redial();
        let mut redial = tokio::time::interval(REDIAL_TICK);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // spawn_node has reported an expired root already; repeat it every minute.
        let mut root_check = tokio::time::interval_at(
            Instant::now() + EXPIRED_ROOT_LOG_EVERY,
            EXPIRED_ROOT_LOG_EVERY,
        );
        root_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .timers
                .keys()
                .next()
                .map(|(at, _)| *at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                Some(cp) = self.checkpoints.recv() => self.publish_checkpoint(cp),
                Some(s) = self.summaries.recv() => self.publish_summary(s),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                () = tokio::time::sleep_until(deadline) => self.fire_timers(),
                _ = redial.tick() => self.redial(),
                _ = root_check.tick() => self.check_root(),
            }
        }
        // Not an abort: a flush already on the blocking pool would go on
        // holding the store after this task ends, and a node started again
        // on the same directory would find sled's lock still taken.
        stop_flusher.notify_one();
        if let Err(err) = flusher.await {
            tracing::error!(%err, "the store's flusher failed");
        }
        // The same for a snapshot being written.
        if let Some(writer) = self.snapshot_writer.take()
            && let Err(err) = writer.await
        {
            tracing::error!(%err, "writing a snapshot failed");
        }
        if let Err(err) = self.store.flush() {
            tracing::error!(%err, "flushing the store at shutdown failed");
        }
        tracing::info!("node stopped");
        running.stopped_on_request();
    }

    fn check_root(&self) {
        let root = self.replica.state().root();
        if root.is_expired(now_ms() / 1000) {
            tracing::error!(
                version = root.version,
                expires = %weft_protocol::time::format_timestamp(root.expires),
                "the trust root has expired: this node keeps enforcing it, but operators must rotate it now"
            );
        }
    }

    fn handle(&mut self, input: Input<PeerId>) -> Vec<Output<PeerId>> {
        let rand = getrandom::u64().unwrap_or_else(|_| now_ms());
        self.replica.handle(now_ms(), rand, input)
    }

    /// Hands a local submit to the replica and carries out what it comes to
    /// (persisted and flushed before the answer is returned). The answer,
    /// and the store's error if the update could not be made durable.
    fn submit(&mut self, bytes: Vec<u8>) -> Result<Accepted, SubmitError> {
        let mut out = self.handle(Input::Command(replica::Command::Submit(bytes.into())));
        let answer = match out.pop() {
            Some(Output::Submitted(answer)) => answer,
            other => unreachable!("a command's effects end with its answer, not {other:?}"),
        };
        self.carry_out(out, None, Flush::Now)?;
        Ok(answer?)
    }

    /// Signs, applies and gossips a quarantine order for `subject`.
    fn issue_quarantine(
        &mut self,
        subject: &str,
        record: weft_crdt::QuarantineRecord,
    ) -> Result<String, String> {
        if let Some(why) = self.denied_everywhere(subject, record.issued_at) {
            self.shared.anomalies.quarantine_unneeded();
            tracing::debug!(%subject, %why, "no quarantine needed");
            return Err(why);
        }
        let r = self.try_issue_quarantine(subject, record);
        self.shared.anomalies.quarantine(r.is_ok());
        if let Err(e) = &r {
            tracing::info!(%subject, reason = %e, "quarantine not issued");
        }
        r
    }

    /// Why an order for `subject` would change no answer, if it would not:
    /// the principal is revoked, or a quarantine of it is in force at `now`
    /// (Unix seconds) under the trust root's rules. When a distributed
    /// attack shows in the mesh view, every node alerts on it at the same
    /// exchange; this keeps the orders that arrive first from being
    /// followed by one from every node that hears them.
    fn denied_everywhere(&self, subject: &str, now: u64) -> Option<String> {
        let view = self.shared.view.load();
        let canonical = weft_crdt::view::canonical_subject(subject);
        if view.revocation(&canonical).is_some() {
            return Some(format!("{canonical} is revoked"));
        }
        let rules = weft_protocol::quarantine::rules_of(self.replica.state().root());
        weft_crdt::quarantine::in_force(&view, &canonical, now, &rules).map(|hit| {
            format!(
                "{canonical} is quarantined already (by {})",
                hit.issuer.as_deref().unwrap_or("the operators")
            )
        })
    }

    fn try_issue_quarantine(
        &mut self,
        subject: &str,
        mut record: weft_crdt::QuarantineRecord,
    ) -> Result<String, String> {
        let started = std::time::Instant::now();
        let root = self.replica.state().root();
        // Never ask for more than the root grants: a longer one is refused.
        let cap = record
            .issued_at
            .saturating_add(root.node_quarantine.max_ttl_secs);
        record.expires_at = Some(record.expires_at.map_or(cap, |e| e.min(cap)));
        if !root.node_quarantine.allowed {
            return Err(format!(
                "trust root version {} does not let nodes quarantine",
                root.version
            ));
        }
        let root_version = root.version;
        let cert = weft_protocol::trust::SignedNodeCert::from_bytes(&self.shared.cert.load())
            .map_err(|_| {
                "this node has no valid certificate, so it cannot quarantine".to_owned()
            })?;
        // Nor past the certificate's expiry: such an order is refused too.
        if let Ok(c) = cert.cert() {
            record.expires_at = record.expires_at.map(|e| e.min(c.expires));
        }
        // The order is built on a copy of the document, which the replica
        // then takes in as it takes any order: a clone, not a save and a
        // load (which would parse every policy again on the way to the
        // alert's quarantine).
        let mut doc = self.replica.state().doc().clone();
        let nonce = getrandom::u64().unwrap_or_else(|_| now_ms()).to_be_bytes();
        let reason = record.reason.clone();
        let expires_at = record.expires_at;
        let copied_ms = started.elapsed().as_millis() as u64;
        let order = weft_protocol::quarantine::QuarantineOrder::issue(
            &mut doc,
            &self.node_key,
            &cert,
            root_version,
            subject,
            record,
            nonce,
        )
        .map_err(|e| e.to_string())?;
        let bytes = order.to_bytes();
        match self.submit(bytes) {
            Ok(accepted) => {
                let id = match accepted {
                    Accepted::Applied(hash) | Accepted::Duplicate(hash) | Accepted::Held(hash) => {
                        hash.to_string()
                    }
                    Accepted::Root { version, .. } => format!("trust-root-v{version}"),
                };
                tracing::warn!(%subject, %reason, %id, copied_ms, took_ms = started.elapsed().as_millis() as u64, "quarantine issued");
                self.audit.record(AuditEvent::QuarantineIssued {
                    subject: subject.to_owned(),
                    reason,
                    expires_at,
                    id: id.clone(),
                });
                Ok(id)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Makes an adopted trust root the one the node runs under: stored
    /// (flushed), written to `trust.json` (first, so that a crash between
    /// the two leaves a `trust.json` that a restart adopts), shown to
    /// readers and exports, and a new snapshot taken under it.
    fn adopt_root(&mut self, version: u64, signed: &[u8], dropped: usize) {
        if let Err(err) = crate::rootchain::write_trust_file(&self.trust_file, signed) {
            tracing::error!(path = %self.trust_file.display(), %err, "writing the adopted trust root to the trust file failed");
        }
        if let Err(err) = self
            .store
            .put_root(version, signed)
            .and_then(|()| self.store.flush())
        {
            tracing::error!(%err, "storing the adopted trust root failed");
        }
        self.signed_root = signed.to_vec();
        self.shared
            .root
            .store(Arc::new(self.replica.state().root().clone()));
        self.shared
            .view
            .store(Arc::new(self.replica.state().view().clone()));
        // A snapshot is used only under the root it was taken under
        // (crate::store): take one under this root now, so that the next
        // start does not verify every update from scratch.
        self.applied_since_snapshot = self.snapshot_every;
        self.check_snapshot();
        let _in = spans::update(
            Some(&format_args!("trust-root-v{version}")),
            "trust_root",
            "applied",
            "local",
        )
        .entered();
        tracing::warn!(version, dropped, "adopted a new trust root");
        self.audit.record(AuditEvent::UpdateApplied {
            id: format!("trust-root-v{version}"),
            touches: vec![format!("trust root version {version}")],
            peer: None,
            in_force_us: None,
        });
    }

    /// Gossips one of this node's audit checkpoints (encoded
    /// `SignedCheckpoint`), with the node's certificate. A node without a
    /// certificate has no admitted peers to keep it, so it gossips none.
    fn publish_checkpoint(&mut self, signed: Vec<u8>) {
        let (Ok(checkpoint), Ok(cert)) = (
            SignedCheckpoint::from_bytes(&signed),
            SignedNodeCert::from_bytes(&self.shared.cert.load()),
        ) else {
            tracing::debug!("no certificate: the audit checkpoint is not gossiped");
            return;
        };
        let bytes = CheckpointGossip { checkpoint, cert }.to_bytes();
        let topic = self.audit_topic.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) | Err(PublishError::NoPeersSubscribedToTopic | PublishError::Duplicate) => {}
            Err(err) => tracing::warn!(%err, "publishing an audit checkpoint failed"),
        }
    }

    /// A peer's audit checkpoint: kept and forwarded only if it comes from
    /// an admitted peer and verifies, with a valid certificate of its node
    /// (see [`crate::audit::AuditLog::receive_checkpoint`]); rejected if
    /// forged.
    fn on_checkpoint(&mut self, id: &MessageId, source: &PeerId, data: &[u8]) {
        let view = self.shared.view.load();
        let revoked = |node: &NodeId| view.revocation(&node.to_string()).is_some();
        let arrival = crate::audit::Arrival {
            from_admitted: self.replica.admitted_peers().any(|(p, _)| p == source),
            root: self.replica.state().root(),
            now_ms: now_ms(),
            own: self.shared.node_id,
            revoked: &revoked,
        };
        let verdict = match self.audit_log.receive_checkpoint(data, &arrival) {
            crate::audit::Received::Kept(cp) => {
                tracing::debug!(node = %cp.node, seq = cp.seq, "kept a peer's audit checkpoint");
                MessageAcceptance::Accept
            }
            crate::audit::Received::Ignored(why) => {
                tracing::debug!(peer = %source, why, "ignoring an audit checkpoint");
                MessageAcceptance::Ignore
            }
            crate::audit::Received::Refused(err) => {
                tracing::warn!(peer = %source, %err, "refusing an audit checkpoint");
                MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let out = self.handle(Input::Timer(timer));
            let _ = self.carry_out(out, None, Flush::Background);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { bytes, reply, span } => {
                let _in = span.enter();
                let result = self.submit(bytes).map(|accepted| {
                    let (id, status) = match accepted {
                        Accepted::Applied(hash) => (hash.to_string(), "applied"),
                        Accepted::Duplicate(hash) => (hash.to_string(), "duplicate"),
                        Accepted::Held(hash) => (hash.to_string(), "held"),
                        Accepted::Root { version, adopted } => (
                            format!("trust-root-v{version}"),
                            if adopted { "applied" } else { "duplicate" },
                        ),
                    };
                    tracing::info!(%id, status, "update submitted");
                    Submitted { id, status }
                });
                let _ = reply.send(result);
            }
            Command::Export { reply } => {
                let export = StateExport {
                    signed_root: self.signed_root.clone(),
                    doc: self.replica.state().doc().save(),
                };
                let _ = reply.send(export.to_bytes());
            }
            Command::Status { reply } => {
                let status = self.status();
                let _ = reply.send(status);
            }
            Command::Evidence { full, reply } => {
                let evidence = self.evidence(full);
                let _ = reply.send(evidence);
            }
            Command::SetCert { bytes, reply } => {
                tracing::info!("presenting the reloaded node certificate");
                self.replica.set_cert(bytes.clone());
                self.shared.cert.store(std::sync::Arc::new(bytes));
                let _ = reply.send(());
            }
            Command::Block { peer, reply } => {
                tracing::info!(%peer, "blocking peer (partition)");
                self.partitioned.insert(peer);
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                let _ = reply.send(());
            }
            Command::Unblock { peer, reply } => {
                tracing::info!(%peer, "unblocking peer (partition healed)");
                self.partitioned.remove(&peer);
                if !self.banned.contains(&peer) {
                    self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                }
                for t in &mut self.targets {
                    if t.peer == Some(peer) {
                        t.next = Instant::now();
                        t.backoff = REDIAL_MIN;
                    }
                }
                let _ = reply.send(());
            }
            Command::Quarantine {
                subject,
                record,
                reply,
            } => {
                let r = self.issue_quarantine(&subject, record);
                let _ = reply.send(r);
            }
            #[cfg(feature = "test-hooks")]
            Command::GossipRaw { bytes, reply } => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            #[cfg(feature = "test-hooks")]
            Command::GossipSummaryRaw { bytes, reply } => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.summary_topic.clone(), bytes)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            #[cfg(feature = "test-hooks")]
            Command::PanicForTest => panic!("the node task was asked to panic (test hook)"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        {
            use libp2p::metrics::Recorder as _;
            self.p2p_metrics.record(&event);
            match &event {
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.p2p_metrics.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.p2p_metrics.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.p2p_metrics.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.p2p_metrics.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.p2p_metrics.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.p2p_metrics.record(e),
                _ => {}
            }
        }
        match &event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.answered.insert(*connection_id, Instant::now());
                // A relayed connection that came in names only its peer
                // as its remote address: the circuit it came through is
                // its local one.
                let remote = match endpoint {
                    ConnectedPoint::Listener { local_addr, .. } if endpoint.is_relayed() => {
                        local_addr
                            .clone()
                            .with(libp2p::multiaddr::Protocol::P2p(*peer_id))
                    }
                    _ => endpoint.get_remote_address().clone(),
                };
                self.note_connection(*peer_id, *connection_id, remote, endpoint.is_dialer());
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.answered.remove(connection_id);
                self.note_closed(*peer_id, *connection_id, *num_established == 0);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                self.note_dial_failed(*connection_id);
            }
            _ => {}
        }
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let ConnectedPoint::Dialer { .. } = endpoint {
                    for t in &mut self.targets {
                        if t.pending == Some(connection_id) {
                            t.pending = None;
                            t.peer = Some(peer_id);
                            t.backoff = REDIAL_MIN;
                        }
                    }
                }
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connection established");
                if num_established.get() == 1 {
                    match peer_id.to_string().parse::<NodeId>() {
                        Ok(node) => {
                            let out = self.handle(Input::PeerConnected {
                                peer: peer_id,
                                node,
                            });
                            let _ = self.carry_out(out, None, Flush::Background);
                        }
                        Err(err) => {
                            tracing::warn!(peer = %peer_id, %err, "disconnecting a peer whose id is not a node id");
                            let _ = self.swarm.disconnect_peer_id(peer_id);
                        }
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "peer disconnected");
                self.admitted.remove(&peer_id);
                self.relay_gone(&peer_id);
                self.rtt.remove(&peer_id);
                let out = self.handle(Input::PeerDisconnected { peer: peer_id });
                let _ = self.carry_out(out, None, Flush::Background);
                let now = Instant::now();
                for t in &mut self.targets {
                    if t.peer == Some(peer_id) {
                        t.next = now + jittered(t.backoff);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let now = Instant::now();
                for t in &mut self.targets {
                    if t.pending == Some(connection_id) {
                        t.pending = None;
                        let wait = jittered(t.backoff);
                        t.next = now + wait;
                        tracing::debug!(addr = %t.addr, peer = ?peer_id, %error, retry_in_ms = wait.as_millis() as u64, "dial failed");
                        t.backoff = (t.backoff * 2).min(REDIAL_MAX);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(addr = %send_back_addr, %error, "incoming connection refused or failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.relay_listening(&address, true);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.relay_listening(&address, false);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.relay_listener_closed(listener_id, &reason),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "external address expired");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.on_sync(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.on_ping(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => self.on_mdns(e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.on_relay_server(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.on_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.on_dcutr(e),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => self.on_autonat(e),
            _ => {}
        }
    }

    /// A ping's outcome: the round trip is kept for status; a connection
    /// whose ping went unanswered is closed (a partition, a dead host), so
    /// that the peer is redialed and synced as soon as it can be reached.
    /// A peer that does not speak ping (not a weft node: the admission
    /// timeout decides whether it stays) is neither timed nor closed.
    fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(rtt) => {
                self.rtt.insert(event.peer, rtt);
                self.answered.insert(event.connection, Instant::now());
            }
            Err(ping::Failure::Unsupported) => {
                tracing::debug!(peer = %event.peer, "the peer does not answer pings: its connection is not watched for silence");
                self.answered.remove(&event.connection);
            }
            Err(failure) => {
                tracing::info!(peer = %event.peer, %failure, "a peer stopped answering pings: closing the connection, to redial it");
                self.rtt.remove(&event.peer);
                self.swarm.close_connection(event.connection);
            }
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        if message.topic == self.audit_topic.hash() {
            self.on_checkpoint(&message_id, &propagation_source, &message.data);
            return;
        }
        if message.topic == self.summary_topic.hash() {
            self.on_summary(&message_id, &propagation_source, &message.data);
            return;
        }
        let out = self.handle(Input::Gossip {
            from: propagation_source,
            bytes: message.data,
        });
        let _ = self.carry_out(
            out,
            Some((&message_id, &propagation_source)),
            Flush::Background,
        );
    }

    fn on_sync(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => match SyncRequest::from_bytes(&request) {
                    Ok(request) => {
                        self.next_request += 1;
                        let request_id = self.next_request;
                        self.channels.insert(request_id, channel);
                        let out = self.handle(Input::Request {
                            from: peer,
                            request_id,
                            request,
                        });
                        let _ = self.carry_out(out, None, Flush::Background);
                        // The replica answers every request at once; a channel
                        // left over is dropped rather than kept forever.
                        self.channels.remove(&request_id);
                    }
                    Err(err) => {
                        tracing::warn!(%peer, %err, "refusing a malformed sync request");
                        let refusal = SyncResponse::Refused {
                            reason: format!("malformed sync request: {err}"),
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, refusal.to_bytes());
                        let out = self.handle(Input::Malformed {
                            from: peer,
                            reason: err.to_string(),
                        });
                        let _ = self.carry_out(out, None, Flush::Background);
                    }
                },
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.requests.remove(&request_id);
                    let input = match SyncResponse::from_bytes(&response) {
                        Ok(response) => {
                            if let SyncResponse::Refused { reason } = &response {
                                tracing::info!(%peer, %reason, "peer refused a sync request");
                            }
                            Input::Response {
                                from: peer,
                                response,
                            }
                        }
                        Err(err) => {
                            tracing::warn!(%peer, %err, "dropping a malformed sync response");
                            let out = self.handle(Input::Malformed {
                                from: peer,
                                reason: err.to_string(),
                            });
                            let _ = self.carry_out(out, None, Flush::Background);
                            Input::RequestFailed { peer }
                        }
                    };
                    let out = self.handle(input);
                    let _ = self.carry_out(out, None, Flush::Background);
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.requests.remove(&request_id);
                tracing::debug!(%peer, %error, "sync request failed");
                let out = self.handle(Input::RequestFailed { peer });
                let _ = self.carry_out(out, None, Flush::Background);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Writes updates to the store (not yet durable).
    fn store_updates(&self, updates: &[(ChangeHash, Arc<[u8]>)]) -> Result<(), StoreError> {
        for (hash, bytes) in updates {
            if let Err(err) = self.store.put_update(hash, bytes) {
                tracing::error!(id = %hash, %err, "storing an update failed");
                return Err(err);
            }
        }
        Ok(())
    }

    /// Carries out the replica's effects. Every `Persist` is written to the
    /// store before anything else. With [`Flush::Now`] (a submit or an order
    /// the caller is told was accepted) the store is flushed then too, so
    /// that the update is durable before it is acknowledged or published.
    /// With [`Flush::Background`] (updates from peers) the flush is left to
    /// the background flusher, so that neither forwarding a valid update nor
    /// the new view waits on the disk: a node that crashes before the flush
    /// fetches the update again by sync. Returns the store error, if any,
    /// after carrying out the rest.
    fn carry_out(
        &mut self,
        outputs: Vec<Output<PeerId>>,
        gossip: Option<(&MessageId, &PeerId)>,
        flush: Flush,
    ) -> Result<(), StoreError> {
        let updates: Vec<(ChangeHash, Arc<[u8]>)> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Persist { hash, bytes } => Some((*hash, bytes.clone())),
                _ => None,
            })
            .collect();
        let store_result = if updates.is_empty() {
            Ok(())
        } else {
            self.store_updates(&updates).and_then(|()| match flush {
                Flush::Now => self.store.flush().inspect_err(|err| {
                    tracing::error!(%err, "flushing the store failed");
                }),
                Flush::Background => {
                    self.flush_wanted.notify_one();
                    Ok(())
                }
            })
        };

        let mut applied = false;
        // Recorded once the view that holds them is published, with that
        // time: what the node's decisions see is what the audit says.
        let mut in_force: Vec<(String, Vec<String>, Option<String>)> = Vec::new();
        let mut verdict_given = false;
        let mut refused_recorded = 0;
        let source = match (gossip, flush) {
            (Some(_), _) => "gossip",
            (None, Flush::Now) => "local",
            (None, Flush::Background) => "sync",
        };
        for o in outputs {
            match o {
                Output::Persist { .. } => {}
                Output::RootAdopted {
                    version,
                    signed,
                    dropped,
                } => self.adopt_root(version, &signed, dropped),
                Output::Forget { hash } => {
                    tracing::info!(id = %hash, "dropping a held update that never applied");
                    if let Err(err) = self.store.remove(&hash.0) {
                        tracing::error!(id = %hash, %err, "removing a dropped held update from the store failed");
                    }
                }
                Output::Publish(bytes) => {
                    match self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(self.topic.clone(), bytes.to_vec())
                    {
                        Ok(_) => {}
                        Err(PublishError::NoPeersSubscribedToTopic | PublishError::Duplicate) => {
                            tracing::debug!(
                                "no gossip peers yet; anti-entropy will carry the update"
                            );
                        }
                        Err(err) => tracing::warn!(%err, "publishing an update failed"),
                    }
                }
                Output::Verdict(v) => {
                    if let Some((id, source)) = gossip {
                        verdict_given = true;
                        let acceptance = match v {
                            Verdict::Accept => MessageAcceptance::Accept,
                            Verdict::Reject => MessageAcceptance::Reject,
                            Verdict::Ignore => MessageAcceptance::Ignore,
                        };
                        self.swarm
                            .behaviour_mut()
                            .gossipsub
                            .report_message_validation_result(id, source, acceptance);
                    }
                }
                Output::Send { to, request } => {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&to, request.to_bytes());
                    self.requests.insert(id, to);
                }
                Output::Respond {
                    request_id,
                    response,
                } => {
                    if let Some(channel) = self.channels.remove(&request_id) {
                        let bytes = fit_response(response).to_bytes();
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, bytes);
                    }
                }
                Output::Applied { hash, summary } => {
                    let span = spans::update(Some(&hash), spans::kind(&summary), "applied", source);
                    let _in = span.enter();
                    tracing::info!(id = %hash, paths = summary.paths.len(), "update applied");
                    let touches = summary
                        .bundles()
                        .into_iter()
                        .map(|b| format!("bundle {b}"))
                        .chain(
                            summary
                                .revocations()
                                .into_iter()
                                .map(|s| format!("revocation {s}")),
                        )
                        .chain(
                            summary
                                .quarantines()
                                .into_iter()
                                .map(|s| format!("quarantine {s}")),
                        )
                        .take(32)
                        .collect();
                    in_force.push((
                        hash.to_string(),
                        touches,
                        gossip.map(|(_, p)| p.to_string()),
                    ));
                    self.actors
                        .entry(hex::encode(summary.actor.to_bytes()))
                        .or_default()
                        .insert(summary.max_op, hash);
                    self.times.insert(hash, summary.time);
                    self.indexed += 1;
                    self.applied_since_snapshot += 1;
                    applied = true;
                }
                Output::Penalize { peer, reason } => {
                    tracing::warn!(%peer, %reason, "peer misbehaved");
                }
                Output::Disconnect { peer, reason } => {
                    tracing::info!(%peer, %reason, "disconnecting peer");
                    self.audit.record(AuditEvent::Disconnected {
                        peer: peer.to_string(),
                        reason: reason.clone(),
                    });
                    let _ = self.swarm.disconnect_peer_id(peer);
                    self.forget_peer(&peer);
                }
                Output::Ban { peer, node, reason } => {
                    tracing::warn!(%peer, %node, %reason, "banning peer");
                    self.audit.record(AuditEvent::Banned {
                        peer: peer.to_string(),
                        reason: reason.clone(),
                    });
                    self.banned.insert(peer);
                    self.forget_peer(&peer);
                    let b = self.swarm.behaviour_mut();
                    b.blocked.block_peer(peer);
                    b.gossipsub.blacklist_peer(&peer);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Output::Refused {
                    from,
                    label,
                    reason,
                } => match from {
                    None => {
                        let span = spans::update(None, "other", "refused", source);
                        span.record("update.reason", label);
                        let _in = span.enter();
                        tracing::info!(%reason, "submitted update refused");
                        self.audit.record(AuditEvent::UpdateRefused {
                            reason,
                            source: "api".into(),
                        });
                    }
                    // One record per refusal, by label (the reason quotes
                    // the peer's bytes), at most a few per batch.
                    Some(peer) if refused_recorded < MAX_REFUSALS_RECORDED => {
                        refused_recorded += 1;
                        let span = spans::update(None, "other", "refused", source);
                        span.record("update.reason", label);
                        let _in = span.enter();
                        self.audit.record(AuditEvent::UpdateRefused {
                            reason: label.to_owned(),
                            source: peer.to_string(),
                        });
                    }
                    Some(_) => {}
                },
                Output::Admitted { peer, node } => {
                    if self.admitted.insert(peer) {
                        tracing::info!(%peer, %node, "peer admitted");
                        self.audit.record(AuditEvent::Admitted {
                            peer: peer.to_string(),
                        });
                        self.relay_admitted(peer);
                        self.on_admitted(peer);
                    }
                }
                Output::Held { hash, from } => {
                    let _in = spans::update(Some(&hash), "other", "held", source).entered();
                    tracing::debug!(id = %hash, ?from, "update held for its dependencies");
                }
                Output::Submitted(_) => {
                    // Taken off by the caller of a command ([`Self::submit`]).
                }
                Output::Schedule { after_ms, timer } => {
                    self.timer_seq += 1;
                    let at = Instant::now() + Duration::from_millis(after_ms);
                    self.timers.insert((at, self.timer_seq), timer);
                }
            }
        }
        if let Some((id, source)) = gossip
            && !verdict_given
        {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(id, source, MessageAcceptance::Ignore);
        }
        if let Some(t) = self.replica.stats().last_sync_ms {
            self.shared
                .last_sync_ms
                .store(t, std::sync::atomic::Ordering::Relaxed);
        }
        if applied {
            self.shared
                .view
                .store(Arc::new(self.replica.state().view().clone()));
            let now_us = crate::clock::now_us();
            for (id, touches, peer) in in_force {
                self.audit.record(AuditEvent::UpdateApplied {
                    id,
                    touches,
                    peer,
                    in_force_us: Some(now_us),
                });
            }
            if **self.shared.root.load() != *self.replica.state().root() {
                self.shared
                    .root
                    .store(Arc::new(self.replica.state().root().clone()));
            }
            self.check_snapshot();
        }
        store_result
    }

    /// Every `snapshot_every` applied updates (and once a new trust root is
    /// adopted), copies the state's document
    /// and update hashes (a few milliseconds) and has them encoded and
    /// written on the blocking pool (a few hundred milliseconds for a large
    /// document), so gossip, sync, the audit writer and the detector do not
    /// stop meanwhile. One snapshot at a time: while one is being written,
    /// the next waits.
    fn check_snapshot(&mut self) {
        if self.applied_since_snapshot < self.snapshot_every
            || self
                .snapshot_writer
                .as_ref()
                .is_some_and(|w| !w.is_finished())
        {
            return;
        }
        let started = std::time::Instant::now();
        let capture = crate::store::SnapshotCapture::of(self.replica.state());
        let captured_ms = started.elapsed().as_millis() as u64;
        self.applied_since_snapshot = 0;
        let store = self.store.clone();
        let span = tracing::Span::current();
        self.snapshot_writer = Some(tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            let started = std::time::Instant::now();
            match store.save_capture(&capture) {
                Ok(()) => tracing::info!(
                    updates = capture.update_count(),
                    captured_ms,
                    written_ms = started.elapsed().as_millis() as u64,
                    "saved a snapshot"
                ),
                // The next one comes after as many updates again.
                Err(err) => tracing::error!(%err, "saving a snapshot failed"),
            }
        }));
    }

    /// Closes every connection that has answered no ping for
    /// [`crate::swarm::SILENT_CONNECTION`] (a partition, a dead host), so
    /// that its peer is redialed, and synced on the new connection, as soon
    /// as it can be reached again.
    fn close_silent(&mut self, now: Instant) {
        let late = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        if late > Duration::from_secs(1) {
            // This task was held up: the pongs may be waiting on it.
            for t in self.answered.values_mut() {
                *t = now;
            }
            return;
        }
        let silent: Vec<ConnectionId> = self
            .answered
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) > crate::swarm::SILENT_CONNECTION)
            .map(|(c, _)| *c)
            .collect();
        for c in silent {
            self.answered.remove(&c);
            tracing::info!(connection = ?c, "a connection answered no ping for {:?}: closing it, to redial its peer", crate::swarm::SILENT_CONNECTION);
            self.swarm.close_connection(c);
        }
    }

    fn redial(&mut self) {
        let now = Instant::now();
        self.close_silent(now);
        for i in 0..self.targets.len() {
            let t = &self.targets[i];
            if t.pending.is_some() || now < t.next {
                continue;
            }
            if let Some(p) = t.peer
                && (self.swarm.is_connected(&p)
                    || self.banned.contains(&p)
                    || self.partitioned.contains(&p))
            {
                continue;
            }
            let opts = match t.peer {
                // With the addresses the peer reported: a QUIC one is
                // tried first (see crate::swarm).
                Some(p) => DialOpts::peer_id(p)
                    .addresses(
                        std::iter::once(t.addr.clone())
                            .chain(
                                self.discovery
                                    .book
                                    .addrs(&p)
                                    .iter()
                                    .filter(|a| **a != t.addr)
                                    .cloned(),
                            )
                            .collect(),
                    )
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(t.addr.clone()).build(),
            };
            let id = opts.connection_id();
            let addr = t.addr.clone();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%addr, "dialing");
                    self.targets[i].pending = Some(id);
                }
                Err(err) => {
                    let t = &mut self.targets[i];
                    tracing::debug!(%addr, %err, "cannot dial");
                    t.next = now + jittered(t.backoff);
                    t.backoff = (t.backoff * 2).min(REDIAL_MAX);
                }
            }
        }
        if self
            .maintained
            .is_none_or(|at| now.saturating_duration_since(at) >= MAINTAIN_EVERY)
        {
            self.maintained = Some(now);
            self.discover();
            self.relay_tick();
        }
    }
}
