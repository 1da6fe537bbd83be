//! The sans-IO replica: Weft's replication logic as a pure state machine.
//!
//! Events go in ([`Input`]), effects come out ([`Output`]); time and
//! randomness are arguments. The tokio/libp2p node and the deterministic
//! simulator drive the same code. It contains no tokio, no libp2p and no sled.
//!
//! What it does:
//! - **Admission.** On every new connection both sides send `Hello` with their
//!   node certificate. A peer is admitted only with a valid certificate for its
//!   own node id, from an operator with the `admit` role, and only while its
//!   node id is not revoked. A peer not admitted within
//!   [`ReplicaConfig::admission_timeout_ms`] is disconnected. Nothing a peer
//!   sends counts before it is admitted.
//! - **Gossip validation.** A gossiped update is verified and authorized before
//!   the verdict is given; forged or unauthorized ones are rejected and the
//!   sender penalized, and a peer that keeps misbehaving is banned.
//! - **Anti-entropy.** On admission and every
//!   [`ReplicaConfig::anti_entropy_interval_ms`] with a random admitted peer,
//!   the replica exchanges heads and fetches what it lacks by hash, in bounded
//!   batches, verifying each update on its own. An exchange is symmetric (the
//!   side that is asked compares the asker's heads too, and fetches what it
//!   lacks), so a replica that a peer asked since its last round, and that
//!   found the two states equal, skips its own next round; never two rounds
//!   in a row, so a peer that keeps asking cannot stop it from syncing with
//!   the others. In a quiet mesh this saves about a third of the rounds.
//! - **Revoked nodes.** When a node id is revoked, a connected peer with that id
//!   is banned at once, and never admitted again.
//!
//! # The state behind the replica
//! The replica drives any [`ReplicaState`]: the node and full-mode simulations
//! use [`SignedState`] (real automerge, real signatures), and the simulator's
//! light mode uses a state that holds signed ids instead of automerge changes,
//! so that 10,000 replicas fit in one process. Admission, verdicts, strikes,
//! bans and anti-entropy are this module's code in both cases; only what an
//! update *is* differs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::sync::Arc;

use weft_crdt::{ChangeHash, ChangeSummary};

use crate::identity::NodeId;
use crate::state::{Ingested, RootAdoption, SignedState, Source};
use crate::trust::SignedNodeCert;
use crate::update::UpdateError;

/// What the replica needs from the state it replicates.
///
/// [`SignedState`] is the real one. Every method must be a pure function of
/// the state and its arguments (no clock, no RNG), so a simulator replays it.
pub trait ReplicaState {
    /// Decodes, verifies, authorizes and applies a batch of updates; one
    /// result per update, in order (see [`SignedState::ingest_batch`]).
    fn ingest_batch(&mut self, items: Vec<Arc<[u8]>>) -> Vec<Result<Ingested, UpdateError>>;
    /// [`ReplicaState::ingest_batch`] for updates from `source`, which what
    /// is held is counted against (see [`SignedState::ingest_from`]).
    fn ingest_from(
        &mut self,
        items: Vec<Arc<[u8]>>,
        source: Source,
    ) -> Vec<Result<Ingested, UpdateError>> {
        let _ = source;
        self.ingest_batch(items)
    }
    /// [`ReplicaState::ingest_from`] for one update.
    fn ingest_one(&mut self, item: Arc<[u8]>, source: Source) -> Result<Ingested, UpdateError> {
        self.ingest_from(vec![item], source)
            .pop()
            .expect("one result per update")
    }
    /// Moves the state's clock to `now_ms` (see [`SignedState::advance`]).
    fn advance(&mut self, now_ms: u64) {
        let _ = now_ms;
    }
    /// Held updates dropped unapplied since the last call (see
    /// [`SignedState::take_dropped`]).
    fn take_dropped(&mut self) -> Vec<ChangeHash> {
        Vec::new()
    }
    /// The version of the latest trust root.
    fn root_version(&self) -> u64 {
        1
    }
    /// Encoded `SignedRoot`s of versions after `after`, oldest first.
    fn signed_roots_after(&self, after: u64) -> Vec<Arc<[u8]>> {
        let _ = after;
        Vec::new()
    }
    /// Verifies an encoded `SignedRoot` as a rotation at `now_ms` and adopts
    /// it (see [`SignedState::adopt_signed_root`]).
    fn adopt_root(&mut self, bytes: &[u8], now_ms: u64) -> Result<RootAdoption, UpdateError> {
        let _ = (bytes, now_ms);
        Err(UpdateError::Malformed(
            "this state does not take trust roots".into(),
        ))
    }
    /// Decodes, verifies, authorizes and applies one update.
    fn ingest(&mut self, bytes: &[u8]) -> Result<Ingested, UpdateError> {
        self.ingest_batch(vec![Arc::from(bytes)])
            .pop()
            .expect("one result per update")
    }
    /// The current heads.
    fn heads(&self) -> Vec<ChangeHash>;
    /// Whether the update is applied or held.
    fn knows(&self, hash: &ChangeHash) -> bool;
    /// Applied updates a peer with `heads` lacks, in causal order.
    fn missing_for(&self, heads: &[ChangeHash]) -> Vec<ChangeHash>;
    /// The signed bytes of an applied update.
    fn update_bytes(&self, hash: &ChangeHash) -> Option<Arc<[u8]>>;
    /// Dependencies that held updates wait for.
    fn wanted(&self) -> BTreeSet<ChangeHash>;
    /// Whether this node id has been revoked.
    fn is_node_revoked(&self, node: &NodeId) -> bool;
    /// Checks a peer's encoded node certificate at `now_ms` (Unix ms): valid,
    /// from an operator allowed to admit, and for `node`.
    fn check_node_cert(&self, now_ms: u64, node: &NodeId, cert: &[u8]) -> Result<(), String>;
}

impl ReplicaState for SignedState {
    fn ingest_batch(&mut self, items: Vec<Arc<[u8]>>) -> Vec<Result<Ingested, UpdateError>> {
        SignedState::ingest_batch(self, items)
    }
    fn ingest_from(
        &mut self,
        items: Vec<Arc<[u8]>>,
        source: Source,
    ) -> Vec<Result<Ingested, UpdateError>> {
        SignedState::ingest_from(self, items, source)
    }
    fn advance(&mut self, now_ms: u64) {
        SignedState::advance(self, now_ms);
    }
    fn take_dropped(&mut self) -> Vec<ChangeHash> {
        SignedState::take_dropped(self)
    }
    fn root_version(&self) -> u64 {
        self.root().version
    }
    fn signed_roots_after(&self, after: u64) -> Vec<Arc<[u8]>> {
        SignedState::signed_roots_after(self, after)
    }
    fn adopt_root(&mut self, bytes: &[u8], now_ms: u64) -> Result<RootAdoption, UpdateError> {
        Ok(self.adopt_signed_root(bytes, now_ms / 1000)?)
    }
    fn ingest(&mut self, bytes: &[u8]) -> Result<Ingested, UpdateError> {
        SignedState::ingest(self, bytes)
    }
    fn heads(&self) -> Vec<ChangeHash> {
        SignedState::heads(self)
    }
    fn knows(&self, hash: &ChangeHash) -> bool {
        SignedState::knows(self, hash)
    }
    fn missing_for(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        SignedState::missing_for(self, heads)
    }
    fn update_bytes(&self, hash: &ChangeHash) -> Option<Arc<[u8]>> {
        SignedState::update_bytes(self, hash)
    }
    fn wanted(&self) -> BTreeSet<ChangeHash> {
        SignedState::wanted(self)
    }
    fn is_node_revoked(&self, node: &NodeId) -> bool {
        self.view().revocation(&node.to_string()).is_some()
    }
    fn check_node_cert(&self, now_ms: u64, node: &NodeId, cert: &[u8]) -> Result<(), String> {
        let signed = SignedNodeCert::from_bytes(cert).map_err(|e| e.to_string())?;
        let c = signed
            .verify(self.root(), now_ms / 1000)
            .map_err(|e| e.to_string())?;
        if &c.node != node {
            return Err(format!(
                "certificate is for node {}, not for the connected node {node}",
                c.node
            ));
        }
        Ok(())
    }
}
use crate::wire::{
    Hash, MAX_FETCH, MAX_OFFER, MAX_ROOTS, MAX_WIRE_BYTES, SyncRequest, SyncResponse, WireBytes,
};

/// Replica settings.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// How often to sync with one random peer, in milliseconds. Default 5,000:
    /// "every few seconds", so a partition heals within seconds of the link
    /// coming back even when no new update is gossiped.
    pub anti_entropy_interval_ms: u64,
    /// How long a new peer has to present a valid certificate. Default 10,000:
    /// a `Hello` round trip takes milliseconds; ten seconds leaves room for a
    /// loaded node without letting unadmitted connections linger.
    pub admission_timeout_ms: u64,
    /// Misbehaviours (forged or malformed messages) before a peer is banned.
    /// Default 3: one bad message can be an accident of versions, three cannot.
    pub strikes_to_ban: u32,
    /// How long an update being fetched from one peer is not asked of the
    /// other peers that offer it too, in milliseconds. Default 1,000: a
    /// fetch takes one round trip, and one still unanswered after a second
    /// has most likely lost a segment (TCP's initial retransmission timeout
    /// is 1 s, RFC 6298); then the next peer that offers it is asked as
    /// well. After a partition heals, every peer across the cut offers the
    /// same updates at once, and without this each would send them all.
    pub fetch_hedge_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            anti_entropy_interval_ms: 5_000,
            admission_timeout_ms: 10_000,
            strikes_to_ban: 3,
            fetch_hedge_ms: 1_000,
        }
    }
}

/// A timer the replica asks its driver to fire.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer<P> {
    /// Time to sync with a random peer.
    AntiEntropy,
    /// The admission deadline of a peer.
    Admission(P),
    /// Offered updates were left for a fetch in flight to another peer:
    /// time to ask again if that fetch has not brought them.
    Fetch,
    /// The certificate a peer was admitted with may have expired: it is
    /// disconnected if so.
    Certificate(P),
}

/// An event for the replica.
#[derive(Clone, Debug)]
pub enum Input<P> {
    /// A gossip message arrived from `from` (the peer that forwarded it).
    Gossip {
        /// The forwarding peer.
        from: P,
        /// The message bytes (an encoded signed update).
        bytes: Vec<u8>,
    },
    /// A sync request arrived.
    Request {
        /// The asking peer.
        from: P,
        /// The driver's token for the answer.
        request_id: u64,
        /// The request.
        request: SyncRequest,
    },
    /// A sync response arrived to a request we sent.
    Response {
        /// The answering peer.
        from: P,
        /// The response.
        response: SyncResponse,
    },
    /// A request we sent failed (timeout, connection closed, undecodable).
    RequestFailed {
        /// The peer.
        peer: P,
    },
    /// A peer sent a sync message that does not decode. It counts as a
    /// strike, like a bad update: three and the peer is banned.
    Malformed {
        /// The sending peer.
        from: P,
        /// What was wrong, one line.
        reason: String,
    },
    /// A connection to a peer opened; `node` is its authenticated identity.
    PeerConnected {
        /// The peer.
        peer: P,
        /// Its node id, from the authenticated transport.
        node: NodeId,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: P,
    },
    /// A timer fired.
    Timer(Timer<P>),
    /// A command from the node's own side (its API or CLI). Its effects
    /// end with exactly one [`Output::Submitted`].
    Command(Command),
}

/// A command from the node's own side, entering as an [`Input::Command`].
#[derive(Clone, Debug)]
pub enum Command {
    /// A local submit (`POST /v1/updates`, `weft push`): an encoded signed
    /// update, quarantine order, or `SignedRoot` (a rotation), told apart by
    /// its envelope. Whatever it comes to, the replica answers with one
    /// [`Output::Submitted`], after the [`Output::Persist`] of the update
    /// (applied or held) that the driver must make durable before it
    /// acknowledges; what it accepted it also publishes.
    Submit(Arc<[u8]>),
}

/// What a local submit came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Applied to the state.
    Applied(ChangeHash),
    /// Already part of the state: nothing happened.
    Duplicate(ChangeHash),
    /// Verified, and held for dependencies this node lacks.
    Held(ChangeHash),
    /// A trust root of this version: adopted, or (`adopted: false`)
    /// already held.
    Root {
        /// The root's version.
        version: u64,
        /// Whether it was adopted now.
        adopted: bool,
    },
}

/// What the driver should do with a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Forged or malformed: drop and penalize the sender in peer scoring.
    Reject,
    /// Not wrong, not useful (a duplicate, or from a peer not yet admitted): drop.
    Ignore,
}

/// An effect for the driver to carry out, or an event for it to record.
#[derive(Debug)]
pub enum Output<P> {
    /// Publish these bytes on the gossip topic.
    Publish(Arc<[u8]>),
    /// The verdict on the gossip message just handled.
    Verdict(Verdict),
    /// Send a sync request.
    Send {
        /// To whom.
        to: P,
        /// What.
        request: SyncRequest,
    },
    /// Answer a sync request.
    Respond {
        /// The driver's token from [`Input::Request`].
        request_id: u64,
        /// The answer.
        response: SyncResponse,
    },
    /// Store this update durably (before acknowledging a local submit): an
    /// applied update, or one held from a local submit.
    Persist {
        /// Its change hash.
        hash: ChangeHash,
        /// Its signed bytes.
        bytes: Arc<[u8]>,
    },
    /// A newer trust root was adopted (from a submit, gossip or sync): store
    /// it as the node's root, and serve decisions and exports under it.
    RootAdopted {
        /// Its version.
        version: u64,
        /// Its encoded `SignedRoot`.
        signed: Arc<[u8]>,
        /// How many applied updates no longer qualify under the new chain
        /// and were dropped from the state.
        dropped: usize,
    },
    /// A held update was dropped without being applied (over a bound, held
    /// too long, or invalid once its dependencies came): remove it from the
    /// store, if it is there. Never names an applied update.
    Forget {
        /// Its change hash.
        hash: ChangeHash,
    },
    /// An update was applied; the view changed.
    Applied {
        /// Its change hash.
        hash: ChangeHash,
        /// What it touched.
        summary: Box<ChangeSummary>,
    },
    /// The peer misbehaved; lower its score.
    Penalize {
        /// The peer.
        peer: P,
        /// What it did, in one sentence.
        reason: String,
    },
    /// Close the connection to the peer (it may try again).
    Disconnect {
        /// The peer.
        peer: P,
        /// Why.
        reason: String,
    },
    /// Close the connection and refuse the peer from now on.
    Ban {
        /// The peer.
        peer: P,
        /// Its node id.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// Fire this timer after `after_ms` milliseconds.
    Schedule {
        /// Delay.
        after_ms: u64,
        /// The timer.
        timer: Timer<P>,
    },
    /// The answer to an [`Input::Command`]: one per command, after every
    /// other effect of it.
    Submitted(Result<Accepted, UpdateError>),
    /// An update, a quarantine order or a trust root was refused (and
    /// counted in [`ReplicaStats::refused`]). For the record: whether the
    /// sender is to blame shows in the `Penalize` or `Ban` that follows.
    Refused {
        /// The peer that sent it; `None` for a local submit.
        from: Option<P>,
        /// The refusal's label ([`UpdateError::label`]), for metrics.
        label: &'static str,
        /// The refusal, one sentence.
        reason: String,
    },
    /// A peer presented a valid certificate and is admitted: from now on
    /// what it sends counts.
    Admitted {
        /// The peer.
        peer: P,
        /// Its node id.
        node: NodeId,
    },
    /// A verified update waits for dependencies this node lacks (held in
    /// memory, bounded; a local submit's is also persisted).
    Held {
        /// Its change hash.
        hash: ChangeHash,
        /// The peer that sent it; `None` for a local submit.
        from: Option<P>,
    },
}

#[derive(Debug)]
struct Peer {
    node: NodeId,
    admitted: bool,
    /// The name and expiry (Unix seconds) of the certificate it was
    /// admitted with.
    cert: Option<(String, u64)>,
    /// That certificate's bytes, checked again when the trust root rotates.
    cert_bytes: Vec<u8>,
    /// The peer holds a newer trust root than this replica: ask it for the
    /// roots once it is idle.
    wants_roots: bool,
    strikes: u32,
    /// A request to this peer is in flight.
    busy: bool,
    /// Hashes offered by this peer and not fetched yet.
    to_fetch: VecDeque<ChangeHash>,
    /// The peer said it has more to offer.
    more: bool,
}

/// Connected peers by key, in key order (as a `BTreeMap` iterates).
///
/// A node has a few dozen connections at most. Keys sorted in one vector
/// and values in another make a lookup one binary search over a cache line
/// or two, where a `BTreeMap` of these values walks nodes of about a
/// kilobyte each; a simulator with thousands of replicas notices.
#[derive(Debug)]
struct PeerTable<P> {
    keys: Vec<P>,
    vals: Vec<Peer>,
}

impl<P: Ord> PeerTable<P> {
    fn new() -> Self {
        PeerTable {
            keys: Vec::new(),
            vals: Vec::new(),
        }
    }

    fn get(&self, k: &P) -> Option<&Peer> {
        self.keys.binary_search(k).ok().map(|i| &self.vals[i])
    }

    fn get_mut(&mut self, k: &P) -> Option<&mut Peer> {
        self.keys.binary_search(k).ok().map(|i| &mut self.vals[i])
    }

    /// Inserts or replaces.
    fn insert(&mut self, k: P, v: Peer) {
        match self.keys.binary_search(&k) {
            Ok(i) => self.vals[i] = v,
            Err(i) => {
                self.keys.insert(i, k);
                self.vals.insert(i, v);
            }
        }
    }

    fn remove(&mut self, k: &P) -> Option<Peer> {
        let i = self.keys.binary_search(k).ok()?;
        self.keys.remove(i);
        Some(self.vals.remove(i))
    }

    fn iter(&self) -> impl Iterator<Item = (&P, &Peer)> {
        self.keys.iter().zip(self.vals.iter())
    }
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Updates applied, from any source.
    pub applied: u64,
    /// Updates refused, by reason label.
    pub refused: BTreeMap<&'static str, u64>,
    /// Sync rounds started (`Heads` requests sent).
    pub sync_rounds: u64,
    /// Anti-entropy rounds skipped because an exchange with a peer had
    /// already happened since the last one.
    pub rounds_skipped: u64,
    /// Updates received by sync.
    pub synced: u64,
    /// Peers banned.
    pub bans: u64,
    /// Time (ms, driver clock) of the last successful exchange with a peer.
    pub last_sync_ms: Option<u64>,
}

/// The sans-IO replica, over the real [`SignedState`] unless told otherwise.
///
/// # Driving a replica
/// A replica does nothing on its own: it has no clock, no sockets, no disk
/// and no tasks. Its driver (the node task, or the simulator) owns it and
/// calls it from one thread. The methods are of three kinds:
/// - **[`Replica::start`]**, once, before anything else: its outputs
///   schedule the first anti-entropy round.
/// - **[`Replica::handle`]** (or [`Replica::handle_into`]), for every
///   event: a gossip message, a sync request or response, a failed request,
///   a peer connecting or leaving, a timer the replica scheduled firing, and
///   the node's own commands ([`Input::Command`]). Each call takes the
///   wall-clock time in Unix milliseconds (certificates and quarantine
///   orders are judged by it) and a random number (which peer to sync
///   with). Events from one peer must be handled in the order they arrived.
/// - **Queries** ([`Replica::state`], [`Replica::stats`],
///   [`Replica::admitted_peers`], …), at any time, which change nothing.
///   [`Replica::state_mut`] is for loading the store before `start`.
///
/// Each call returns [`Output`]s, in the order they must be carried out:
/// effects (`Persist`, `Forget`, `Publish`, `Verdict`, `Send`, `Respond`,
/// `Disconnect`, `Ban`, `Schedule`, `RootAdopted`) and events for the
/// record (`Applied`, `Held`, `Refused`, `Admitted`, `Penalize`,
/// `Submitted`). Everything the driver audits or counts is among them; it
/// never needs to compare [`Replica::stats`] before and after a call.
///
/// # Rules for the driver
/// - **Persisted before acknowledged.** A `Persist` must be durable before
///   the driver tells anyone the update was accepted: before it passes on
///   the answer to a command (`Submitted`, last in its batch). Updates from
///   peers are written before the rest of their batch is carried out and
///   may be flushed to disk later (a node that crashes first fetches them
///   again by sync).
/// - **`Verdict` answers the gossip message being handled**, and only it:
///   the driver reports it to gossipsub for that message.
/// - **`Respond` answers the request** whose token came in
///   [`Input::Request`]; a request never answered is one the driver drops.
/// - **Every `Schedule` fires once**, as [`Input::Timer`], no earlier than
///   asked; timers that fire late are fine.
/// - **`Ban` is for good**: the driver refuses the peer's connections
///   from then on (the replica refuses its node id too).
/// - **`Forget` removes a held update from the store**; it never names an
///   applied one.
/// - **`RootAdopted`** is stored, with the trust file, before the driver
///   serves decisions under the new root.
pub struct Replica<P, S = SignedState> {
    state: S,
    me: NodeId,
    cert: Vec<u8>,
    config: ReplicaConfig,
    peers: PeerTable<P>,
    /// Hashes asked for by a `Fetch` in flight, and from which peer. A hash
    /// another peer also offers is not asked for twice: it stays in that
    /// peer's `to_fetch` until the fetch in flight ends, and is fetched
    /// from that peer then only if the first fetch did not bring it.
    /// `fetching`: with when (driver clock) it was asked.
    fetching: BTreeMap<ChangeHash, (P, u64)>,
    /// A [`Timer::Fetch`] is scheduled.
    fetch_timer: bool,
    /// The driver's clock at the last input, ms.
    now_ms: u64,
    banned: BTreeSet<NodeId>,
    stats: ReplicaStats,
    /// A peer compared heads with this replica (its anti-entropy round, or
    /// it was behind) and found them equal, since the last tick.
    exchanged: bool,
    /// The last anti-entropy tick was skipped.
    skipped: bool,
}

fn to_wire(h: &ChangeHash) -> Hash {
    h.0
}

fn from_wire(h: &Hash) -> ChangeHash {
    ChangeHash(*h)
}

impl<P: Clone + Ord + Debug, S: ReplicaState> Replica<P, S> {
    /// A replica for node `me`, holding `state`, presenting certificate `cert`
    /// (encoded `SignedNodeCert`).
    pub fn new(state: S, me: NodeId, cert: Vec<u8>, config: ReplicaConfig) -> Self {
        Replica {
            state,
            me,
            cert,
            config,
            peers: PeerTable::new(),
            fetching: BTreeMap::new(),
            fetch_timer: false,
            now_ms: 0,
            banned: BTreeSet::new(),
            stats: ReplicaStats::default(),
            exchanged: false,
            skipped: false,
        }
    }

    /// Presents `cert` (an encoded `SignedNodeCert`) from now on: to every
    /// peer that connects after this, and in every later hello. Peers
    /// admitted already stay admitted.
    pub fn set_cert(&mut self, cert: Vec<u8>) {
        self.cert = cert;
    }

    /// The first effects: schedules anti-entropy.
    pub fn start(&mut self) -> Vec<Output<P>> {
        vec![Output::Schedule {
            after_ms: self.config.anti_entropy_interval_ms,
            timer: Timer::AntiEntropy,
        }]
    }

    /// The verified state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Mutable access to the state, for loading stored updates at start-up.
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// Admitted peers with their node ids.
    pub fn admitted_peers(&self) -> impl Iterator<Item = (&P, &NodeId)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.admitted)
            .map(|(k, p)| (k, &p.node))
    }

    /// Connected peers (admitted or not) with their node ids.
    pub fn connected_peers(&self) -> impl Iterator<Item = (&P, &NodeId, bool)> {
        self.peers.iter().map(|(k, p)| (k, &p.node, p.admitted))
    }

    /// Admitted peers with the name and expiry (Unix seconds) of the
    /// certificate each was admitted with.
    pub fn admitted_certs(&self) -> impl Iterator<Item = (&P, &NodeId, &str, u64)> {
        self.peers.iter().filter_map(|(k, p)| {
            let (name, expires) = p.cert.as_ref()?;
            Some((k, &p.node, name.as_str(), *expires))
        })
    }

    /// Whether this node id is banned here.
    pub fn is_banned(&self, node: &NodeId) -> bool {
        self.banned.contains(node)
    }

    /// [`Command::Submit`]: a trust root by [`Self::on_submit_root`], an
    /// update or an order through the state; answered by one
    /// [`Output::Submitted`], last.
    fn on_submit(&mut self, now_ms: u64, bytes: Arc<[u8]>, out: &mut Vec<Output<P>>) {
        if crate::encoding::kind_of(&bytes) == Some(crate::encoding::Kind::SignedRoot) {
            let answer = self.on_submit_root(now_ms, bytes, out);
            out.push(Output::Submitted(answer));
            return;
        }
        let result = self.state.ingest_one(bytes.clone(), Source::Local);
        let answer = match result {
            Ok(ingested) => {
                let accepted = match &ingested {
                    Ingested::Applied { hash, .. } => Accepted::Applied(*hash),
                    Ingested::Duplicate(hash) => Accepted::Duplicate(*hash),
                    Ingested::Held { hash, .. } => {
                        // Acknowledged means durable, held or not.
                        out.push(Output::Persist {
                            hash: *hash,
                            bytes: bytes.clone(),
                        });
                        Accepted::Held(*hash)
                    }
                };
                self.after_ingest(None, ingested, out);
                if !matches!(accepted, Accepted::Duplicate(_)) {
                    // Publish what we accepted, so peers hear of it now.
                    out.push(Output::Publish(bytes));
                }
                Ok(accepted)
            }
            Err(e) => {
                self.refused(None, &e, out);
                Err(e)
            }
        };
        out.push(Output::Submitted(answer));
    }

    /// Effects for the held updates the state dropped unapplied.
    fn forget_dropped(&mut self, out: &mut Vec<Output<P>>) {
        for hash in self.state.take_dropped() {
            out.push(Output::Forget { hash });
        }
    }

    /// Handles one event.
    pub fn handle(&mut self, now_ms: u64, rand: u64, input: Input<P>) -> Vec<Output<P>> {
        let mut out = Vec::new();
        self.handle_into(now_ms, rand, input, &mut out);
        out
    }

    /// Handles one event, appending its effects to `out` (as [`Self::handle`],
    /// for a driver that reuses one vector across events).
    pub fn handle_into(
        &mut self,
        now_ms: u64,
        rand: u64,
        input: Input<P>,
        out: &mut Vec<Output<P>>,
    ) {
        self.now_ms = now_ms;
        self.state.advance(now_ms);
        self.handle_input(now_ms, rand, input, out);
        self.forget_dropped(out);
    }

    fn handle_input(&mut self, now_ms: u64, rand: u64, input: Input<P>, out: &mut Vec<Output<P>>) {
        match input {
            Input::Gossip { from, bytes } => self.on_gossip(now_ms, from, &bytes, out),
            Input::Request {
                from,
                request_id,
                request,
            } => self.on_request(now_ms, from, request_id, request, out),
            Input::Response { from, response } => self.on_response(now_ms, from, response, out),
            Input::RequestFailed { peer } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.busy = false;
                }
                self.fetch_ended(&peer, out);
            }
            Input::Malformed { from, reason } => {
                self.strike(
                    &from,
                    format!("sent a malformed sync message: {reason}"),
                    out,
                );
            }
            Input::Command(Command::Submit(bytes)) => self.on_submit(now_ms, bytes, out),
            Input::PeerConnected { peer, node } => self.on_connected(peer, node, out),
            Input::PeerDisconnected { peer } => {
                self.peers.remove(&peer);
                self.fetch_ended(&peer, out);
            }
            Input::Timer(Timer::AntiEntropy) => {
                let idle = |p: &&Peer| p.admitted && !p.busy;
                let skip = std::mem::take(&mut self.exchanged) && !self.skipped;
                self.skipped = skip;
                let n = if skip {
                    self.stats.rounds_skipped += 1;
                    0
                } else {
                    self.peers.iter().filter(|(_, p)| idle(p)).count()
                };
                if n > 0 {
                    let peer = self
                        .peers
                        .iter()
                        .filter(|(_, p)| idle(p))
                        .nth((rand % n as u64) as usize)
                        .map(|(k, _)| k.clone())
                        .expect("n idle peers");
                    self.send_heads(&peer, out);
                }
                out.push(Output::Schedule {
                    after_ms: self.config.anti_entropy_interval_ms,
                    timer: Timer::AntiEntropy,
                });
            }
            Input::Timer(Timer::Fetch) => {
                self.fetch_timer = false;
                if !self.fetching.is_empty() {
                    let nobody = self.peers.keys.len();
                    self.resume_fetches_but(nobody, out);
                }
                // Hashes still waiting (their peer was busy): look again.
                if !self.fetch_timer
                    && !self.fetching.is_empty()
                    && self.peers.iter().any(|(_, p)| !p.to_fetch.is_empty())
                {
                    self.fetch_timer = true;
                    out.push(Output::Schedule {
                        after_ms: self.config.fetch_hedge_ms,
                        timer: Timer::Fetch,
                    });
                }
            }
            Input::Timer(Timer::Admission(peer)) => {
                if let Some(p) = self.peers.get(&peer)
                    && !p.admitted
                {
                    out.push(Output::Disconnect {
                        peer,
                        reason: "no valid node certificate in time".into(),
                    });
                }
            }
            Input::Timer(Timer::Certificate(peer)) => self.check_cert_expiry(now_ms, peer, out),
        }
    }

    /// Disconnects `peer` if the certificate it was admitted with has
    /// expired by `now_ms`; otherwise looks again when it expires.
    fn check_cert_expiry(&mut self, now_ms: u64, peer: P, out: &mut Vec<Output<P>>) {
        let Some((name, expires)) = self.peers.get(&peer).and_then(|p| p.cert.clone()) else {
            return;
        };
        if now_ms / 1000 >= expires {
            self.peers.remove(&peer);
            out.push(Output::Disconnect {
                peer: peer.clone(),
                reason: format!("its node certificate ({name}) expired while it was connected"),
            });
            self.fetch_ended(&peer, out);
        } else {
            self.schedule_cert_check(now_ms, peer, expires, out);
        }
    }

    /// Asks for a [`Timer::Certificate`] when a certificate that expires at
    /// `expires` (Unix seconds) lapses, or in a day if that is later (a
    /// timer stays within what any driver's clock can add).
    fn schedule_cert_check(&self, now_ms: u64, peer: P, expires: u64, out: &mut Vec<Output<P>>) {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        let after_ms = expires
            .saturating_mul(1000)
            .saturating_sub(now_ms)
            .clamp(1, DAY_MS);
        out.push(Output::Schedule {
            after_ms,
            timer: Timer::Certificate(peer),
        });
    }

    fn on_connected(&mut self, peer: P, node: NodeId, out: &mut Vec<Output<P>>) {
        if let Some(reason) = self.refusal_for(&node) {
            self.ban(peer, node, reason, out);
            return;
        }
        self.peers.insert(
            peer.clone(),
            Peer {
                node,
                admitted: false,
                cert: None,
                cert_bytes: Vec::new(),
                wants_roots: false,
                strikes: 0,
                busy: true,
                to_fetch: VecDeque::new(),
                more: false,
            },
        );
        out.push(Output::Send {
            to: peer.clone(),
            request: SyncRequest::Hello {
                cert: self.cert.clone(),
                heads: self.heads_wire(),
                root: self.state.root_version(),
            },
        });
        out.push(Output::Schedule {
            after_ms: self.config.admission_timeout_ms,
            timer: Timer::Admission(peer),
        });
    }

    /// Why a node may not be a peer, if it may not.
    fn refusal_for(&self, node: &NodeId) -> Option<String> {
        if self.banned.contains(node) {
            return Some(format!("node {node} is banned"));
        }
        if self.state.is_node_revoked(node) {
            return Some(format!("node {node} is revoked"));
        }
        None
    }

    fn check_cert(&self, now_ms: u64, node: &NodeId, cert: &[u8]) -> Result<(), String> {
        self.state.check_node_cert(now_ms, node, cert)
    }

    fn admit(&mut self, now_ms: u64, peer: &P, cert: &[u8], out: &mut Vec<Output<P>>) -> bool {
        let Some(p) = self.peers.get(peer) else {
            return false;
        };
        if p.admitted {
            return true;
        }
        let node = p.node;
        match self.check_cert(now_ms, &node, cert) {
            Ok(()) => {
                let seen = crate::trust::SignedNodeCert::from_bytes(cert)
                    .and_then(|c| c.cert())
                    .ok()
                    .map(|c| (c.name, c.expires));
                if let Some((_, expires)) = &seen {
                    self.schedule_cert_check(now_ms, peer.clone(), *expires, out);
                }
                if let Some(p) = self.peers.get_mut(peer) {
                    p.admitted = true;
                    p.cert = seen;
                    p.cert_bytes = cert.to_vec();
                }
                out.push(Output::Admitted {
                    peer: peer.clone(),
                    node,
                });
                true
            }
            Err(reason) => {
                out.push(Output::Disconnect {
                    peer: peer.clone(),
                    reason: format!("admission refused: {reason}"),
                });
                self.peers.remove(peer);
                false
            }
        }
    }

    fn on_request(
        &mut self,
        now_ms: u64,
        from: P,
        request_id: u64,
        request: SyncRequest,
        out: &mut Vec<Output<P>>,
    ) {
        let refuse = |reason: &str| Output::Respond {
            request_id,
            response: SyncResponse::Refused {
                reason: reason.into(),
            },
        };
        match request {
            SyncRequest::Hello { cert, heads, root } => {
                if !self.admit(now_ms, &from, &cert, out) {
                    out.push(refuse("admission refused"));
                    return;
                }
                out.push(Output::Respond {
                    request_id,
                    response: SyncResponse::Hello {
                        cert: self.cert.clone(),
                        heads: self.heads_wire(),
                        root: self.state.root_version(),
                    },
                });
                self.note_root(&from, root);
                self.sync_if_behind(&from, &heads, out);
            }
            _ if !self.peers.get(&from).is_some_and(|p| p.admitted) => {
                out.push(refuse(
                    "not admitted: send Hello with a node certificate first",
                ));
            }
            SyncRequest::Heads { heads, root } => {
                self.note_root(&from, root);
                let theirs: Vec<ChangeHash> = heads.iter().map(from_wire).collect();
                let missing = self.state.missing_for(&theirs);
                // Only an exchange that found both sides equal stands in for
                // this replica's own round: where they differ, updates are
                // being lost or are still spreading, and rounds repair that.
                if missing.is_empty() && theirs.iter().all(|h| self.state.knows(h)) {
                    self.exchanged = true;
                }
                let more = missing.len() > MAX_OFFER;
                out.push(Output::Respond {
                    request_id,
                    response: SyncResponse::Offer {
                        heads: self.heads_wire(),
                        hashes: missing.iter().take(MAX_OFFER).map(to_wire).collect(),
                        more,
                        root: self.state.root_version(),
                    },
                });
                self.sync_if_behind(&from, &heads, out);
            }
            SyncRequest::Roots { after } => {
                let mut roots = Vec::new();
                let mut bytes = 0;
                for r in self
                    .state
                    .signed_roots_after(after)
                    .into_iter()
                    .take(MAX_ROOTS)
                {
                    bytes += r.len();
                    if bytes > MAX_WIRE_BYTES / 2 && !roots.is_empty() {
                        break;
                    }
                    roots.push(WireBytes(r.to_vec()));
                }
                out.push(Output::Respond {
                    request_id,
                    response: SyncResponse::Roots { roots },
                });
            }
            SyncRequest::Fetch { hashes } => {
                let updates = hashes
                    .iter()
                    .take(MAX_FETCH)
                    .filter_map(|h| self.state.update_bytes(&from_wire(h)))
                    .map(|b| WireBytes(b.to_vec()))
                    .collect();
                out.push(Output::Respond {
                    request_id,
                    response: SyncResponse::Updates { updates },
                });
            }
        }
    }

    fn on_response(
        &mut self,
        now_ms: u64,
        from: P,
        response: SyncResponse,
        out: &mut Vec<Output<P>>,
    ) {
        if let Some(p) = self.peers.get_mut(&from) {
            p.busy = false;
        } else {
            return;
        }
        // The peer's one request in flight is answered: what it was asked
        // to fetch is no longer in flight (whatever the answer brings is
        // ingested below, before other peers are asked for the rest).
        let fetched = self.forget_fetching(&from);
        self.on_answer(now_ms, from.clone(), response, out);
        if fetched {
            self.resume_fetches(&from, out);
        }
        // Offered hashes left waiting while this peer was busy.
        if self
            .peers
            .get(&from)
            .is_some_and(|p| p.admitted && !p.busy && !p.to_fetch.is_empty())
        {
            self.continue_fetch(&from, out);
        }
    }

    fn on_answer(
        &mut self,
        now_ms: u64,
        from: P,
        response: SyncResponse,
        out: &mut Vec<Output<P>>,
    ) {
        match response {
            SyncResponse::Hello { cert, heads, root } => {
                if self.admit(now_ms, &from, &cert, out) {
                    self.stats.last_sync_ms = Some(now_ms);
                    self.note_root(&from, root);
                    self.sync_if_behind(&from, &heads, out);
                    self.continue_fetch(&from, out);
                }
            }
            SyncResponse::Refused { reason } => {
                // The peer refused us; nothing to learn. Keep the reason for logs.
                let _ = reason;
            }
            _ if !self.peers.get(&from).is_some_and(|p| p.admitted) => {}
            SyncResponse::Offer {
                heads,
                hashes,
                more,
                root,
            } => {
                self.stats.last_sync_ms = Some(now_ms);
                self.note_root(&from, root);
                let wanted: Vec<ChangeHash> = hashes
                    .iter()
                    .map(from_wire)
                    .filter(|h| !self.state.knows(h))
                    .collect();
                if let Some(p) = self.peers.get_mut(&from) {
                    p.to_fetch.extend(wanted);
                    p.more = more;
                }
                let _ = heads;
                self.continue_fetch(&from, out);
            }
            SyncResponse::Roots { roots } => {
                for bytes in roots {
                    if let Err(e) = self.take_root(now_ms, &bytes.0, out) {
                        self.refused(Some(&from), &e, out);
                        if e.is_misbehaviour() {
                            self.strike(&from, format!("sent a bad trust root by sync: {e}"), out);
                            break;
                        }
                    }
                }
                self.continue_fetch(&from, out);
            }
            SyncResponse::Updates { updates } => {
                self.stats.last_sync_ms = Some(now_ms);
                self.stats.synced += updates.len() as u64;
                // One batch: automerge's cost is per call, not per change.
                let batch = updates.into_iter().map(|WireBytes(b)| b.into()).collect();
                let source = self.source_of(&from);
                for result in self.state.ingest_from(batch, source) {
                    match result {
                        Ok(ingested) => self.after_ingest(Some(&from), ingested, out),
                        Err(e) => {
                            self.refused(Some(&from), &e, out);
                            if e.is_misbehaviour() {
                                self.strike(&from, format!("sent a bad update by sync: {e}"), out);
                            }
                        }
                    }
                }
                self.continue_fetch(&from, out);
            }
        }
    }

    /// Forgets the hashes in flight from `peer`; true if there were any.
    fn forget_fetching(&mut self, peer: &P) -> bool {
        if self.fetching.is_empty() {
            return false;
        }
        let before = self.fetching.len();
        self.fetching.retain(|_, (q, _)| q != peer);
        self.fetching.len() != before
    }

    /// The request in flight to `peer` ended without an answer (failed, or
    /// the peer left): other peers are asked for what it was to bring.
    fn fetch_ended(&mut self, peer: &P, out: &mut Vec<Output<P>>) {
        if self.forget_fetching(peer) {
            self.resume_fetches(peer, out);
        }
    }

    /// Continues fetching from every idle peer (other than `except`) that
    /// still has offered hashes waiting: those were left while another
    /// peer was fetching them.
    fn resume_fetches(&mut self, except: &P, out: &mut Vec<Output<P>>) {
        let skip = self.peers.keys.binary_search(except).unwrap_or(usize::MAX);
        self.resume_fetches_but(skip, out);
    }

    /// As [`Self::resume_fetches`], skipping the peer at index `skip`.
    fn resume_fetches_but(&mut self, skip: usize, out: &mut Vec<Output<P>>) {
        let waiting: Vec<P> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, (_, p))| *i != skip && p.admitted && !p.busy && !p.to_fetch.is_empty())
            .map(|(_, (k, _))| k.clone())
            .collect();
        for k in waiting {
            self.continue_fetch(&k, out);
        }
    }

    /// Sends the next `Fetch` to `peer`, or asks for more heads, or fetches
    /// dependencies that held updates still wait for. Hashes a `Fetch` to
    /// another peer is bringing are left in the queue for later.
    fn continue_fetch(&mut self, peer: &P, out: &mut Vec<Output<P>>) {
        let wanted = self.state.wanted();
        let root = self.state.root_version();
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.busy {
            return;
        }
        if p.wants_roots && p.admitted {
            p.wants_roots = false;
            p.busy = true;
            out.push(Output::Send {
                to: peer.clone(),
                request: SyncRequest::Roots { after: root },
            });
            return;
        }
        let now = self.now_ms;
        let hedge = self.config.fetch_hedge_ms;
        // In flight from another peer, and not for long.
        let in_flight = |f: &BTreeMap<ChangeHash, (P, u64)>, h: &ChangeHash| {
            f.get(h)
                .is_some_and(|(q, since)| q != peer && now.saturating_sub(*since) < hedge)
        };
        let mut batch: Vec<Hash> = Vec::new();
        let mut later: Vec<ChangeHash> = Vec::new();
        while batch.len() < MAX_FETCH {
            let Some(h) = p.to_fetch.pop_front() else {
                break;
            };
            if self.state.knows(&h) {
                continue;
            }
            if in_flight(&self.fetching, &h) {
                later.push(h);
            } else {
                batch.push(to_wire(&h));
            }
        }
        // What the peer offered is recorded as in flight; the dependencies
        // of held updates asked for below are a guess (the peer may not
        // have them), and hold nobody else back.
        let offered = batch.len();
        let left = !later.is_empty();
        for h in later.into_iter().rev() {
            p.to_fetch.push_front(h);
        }
        for h in wanted {
            if batch.len() >= MAX_FETCH {
                break;
            }
            if in_flight(&self.fetching, &h) {
                continue;
            }
            let w = to_wire(&h);
            if !batch.contains(&w) {
                batch.push(w);
            }
        }
        if !batch.is_empty() {
            p.busy = true;
            for h in &batch[..offered] {
                let asked = self
                    .fetching
                    .entry(from_wire(h))
                    .or_insert_with(|| (peer.clone(), now));
                if asked.0 != *peer {
                    *asked = (peer.clone(), now);
                }
            }
            out.push(Output::Send {
                to: peer.clone(),
                request: SyncRequest::Fetch { hashes: batch },
            });
        } else if p.more {
            p.more = false;
            self.send_heads(peer, out);
        }
        if left && !self.fetch_timer {
            self.fetch_timer = true;
            out.push(Output::Schedule {
                after_ms: self.config.fetch_hedge_ms,
                timer: Timer::Fetch,
            });
        }
    }

    fn sync_if_behind(&mut self, peer: &P, heads: &[Hash], out: &mut Vec<Output<P>>) {
        let behind = heads.iter().any(|h| !self.state.knows(&from_wire(h)));
        if behind {
            self.send_heads(peer, out);
        }
    }

    fn send_heads(&mut self, peer: &P, out: &mut Vec<Output<P>>) {
        let heads = self.heads_wire();
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.busy || !p.admitted {
            return;
        }
        p.busy = true;
        self.stats.sync_rounds += 1;
        out.push(Output::Send {
            to: peer.clone(),
            request: SyncRequest::Heads {
                heads,
                root: self.state.root_version(),
            },
        });
    }

    fn heads_wire(&self) -> Vec<Hash> {
        // Collected in place: a `ChangeHash` is a `Hash`.
        self.state.heads().into_iter().map(|h| h.0).collect()
    }

    /// Notes the trust root version a peer holds: a newer one is asked for
    /// as soon as the peer is idle ([`Self::continue_fetch`]).
    fn note_root(&mut self, peer: &P, theirs: u64) {
        let ours = self.state.root_version();
        if let Some(p) = self.peers.get_mut(peer)
            && theirs > ours
        {
            p.wants_roots = true;
        }
    }

    /// Adopts the encoded `SignedRoot` in `bytes` if it is a rotation from
    /// the latest root: the effects say so, and peers whose certificates no
    /// longer verify under the new root are disconnected. `Ok(false)` when
    /// the root is already held.
    fn take_root(
        &mut self,
        now_ms: u64,
        bytes: &[u8],
        out: &mut Vec<Output<P>>,
    ) -> Result<bool, UpdateError> {
        match self.state.adopt_root(bytes, now_ms)? {
            RootAdoption::Known => Ok(false),
            RootAdoption::Adopted {
                version,
                signed,
                dropped,
            } => {
                out.push(Output::RootAdopted {
                    version,
                    signed,
                    dropped: dropped.len(),
                });
                let refused: Vec<(P, String)> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.admitted)
                    .filter_map(|(k, p)| {
                        self.state
                            .check_node_cert(now_ms, &p.node, &p.cert_bytes)
                            .err()
                            .map(|e| (k.clone(), e))
                    })
                    .collect();
                for (peer, reason) in refused {
                    self.peers.remove(&peer);
                    out.push(Output::Disconnect {
                        peer: peer.clone(),
                        reason: format!(
                            "its certificate does not verify under trust root version {version}: {reason}"
                        ),
                    });
                    self.fetch_ended(&peer, out);
                }
                Ok(true)
            }
        }
    }

    /// A local submit of an encoded `SignedRoot` (`POST /v1/updates`, `weft
    /// trust rotate`): adopted if it is a rotation from the latest root, and
    /// then published.
    fn on_submit_root(
        &mut self,
        now_ms: u64,
        bytes: Arc<[u8]>,
        out: &mut Vec<Output<P>>,
    ) -> Result<Accepted, UpdateError> {
        match self.take_root(now_ms, &bytes, out) {
            Ok(adopted) => {
                if adopted {
                    out.push(Output::Publish(bytes));
                }
                Ok(Accepted::Root {
                    version: self.state.root_version(),
                    adopted,
                })
            }
            Err(e) => {
                self.refused(None, &e, out);
                Err(e)
            }
        }
    }

    /// Counts a refusal and tells the driver of it.
    fn refused(&mut self, from: Option<&P>, e: &UpdateError, out: &mut Vec<Output<P>>) {
        *self.stats.refused.entry(e.label()).or_default() += 1;
        out.push(Output::Refused {
            from: from.cloned(),
            label: e.label(),
            reason: e.to_string(),
        });
    }

    fn on_gossip(&mut self, now_ms: u64, from: P, bytes: &[u8], out: &mut Vec<Output<P>>) {
        if !self.peers.get(&from).is_some_and(|p| p.admitted) {
            out.push(Output::Verdict(Verdict::Ignore));
            return;
        }
        if crate::encoding::kind_of(bytes) == Some(crate::encoding::Kind::SignedRoot) {
            let verdict = match self.take_root(now_ms, bytes, out) {
                Ok(true) => Verdict::Accept,
                Ok(false) => Verdict::Ignore,
                Err(e) => {
                    self.refused(Some(&from), &e, out);
                    if e.is_misbehaviour() {
                        self.strike(&from, format!("gossiped a bad trust root: {e}"), out);
                        Verdict::Reject
                    } else {
                        Verdict::Ignore
                    }
                }
            };
            out.push(Output::Verdict(verdict));
            return;
        }
        let source = self.source_of(&from);
        let result = self.state.ingest_one(Arc::from(bytes), source);
        match result {
            Ok(ingested) => {
                let verdict = match &ingested {
                    Ingested::Duplicate(_) => Verdict::Ignore,
                    _ => Verdict::Accept,
                };
                out.push(Output::Verdict(verdict));
                if let Ingested::Held { .. } = ingested {
                    self.continue_fetch(&from, out);
                }
                self.after_ingest(Some(&from), ingested, out);
            }
            Err(e) => {
                self.refused(Some(&from), &e, out);
                if e.is_misbehaviour() {
                    out.push(Output::Verdict(Verdict::Reject));
                    self.strike(&from, format!("gossiped a bad update: {e}"), out);
                } else {
                    out.push(Output::Verdict(Verdict::Ignore));
                }
            }
        }
    }

    /// The source that updates from `peer` count against.
    fn source_of(&self, peer: &P) -> Source {
        self.peers
            .get(peer)
            .map_or(Source::Local, |p| Source::Peer(p.node))
    }

    fn strike(&mut self, peer: &P, reason: String, out: &mut Vec<Output<P>>) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.strikes += 1;
        let node = p.node;
        if p.strikes >= self.config.strikes_to_ban {
            self.ban(
                peer.clone(),
                node,
                format!("{reason} (strike {})", self.config.strikes_to_ban),
                out,
            );
        } else {
            out.push(Output::Penalize {
                peer: peer.clone(),
                reason,
            });
        }
    }

    fn ban(&mut self, peer: P, node: NodeId, reason: String, out: &mut Vec<Output<P>>) {
        self.banned.insert(node);
        self.peers.remove(&peer);
        self.stats.bans += 1;
        out.push(Output::Ban {
            peer: peer.clone(),
            node,
            reason,
        });
        self.fetch_ended(&peer, out);
    }

    fn after_ingest(&mut self, from: Option<&P>, ingested: Ingested, out: &mut Vec<Output<P>>) {
        if let Ingested::Held { hash, .. } = &ingested {
            out.push(Output::Held {
                hash: *hash,
                from: from.cloned(),
            });
        }
        let (first, released) = match ingested {
            Ingested::Applied {
                hash,
                summary,
                released,
                ..
            } => (Some((hash, summary)), released),
            Ingested::Held { released, .. } => (None, released),
            Ingested::Duplicate(_) => return,
        };
        // Node ids among the subjects these updates revoke: only a peer
        // named by one of them can have become revoked.
        let mut revoked_nodes: BTreeSet<NodeId> = BTreeSet::new();
        for (h, s) in first.into_iter().chain(released) {
            self.stats.applied += 1;
            revoked_nodes.extend(
                s.revocations()
                    .into_iter()
                    .map(str::trim)
                    // A Cedar uid (`User::"…"`) is never a node id: no parse.
                    .filter(|subject| !subject.contains("::"))
                    .filter_map(|subject| subject.parse::<NodeId>().ok()),
            );
            if let Some(bytes) = self.state.update_bytes(&h) {
                out.push(Output::Persist { hash: h, bytes });
            }
            out.push(Output::Applied {
                hash: h,
                summary: Box::new(s),
            });
        }
        if !revoked_nodes.is_empty() {
            let revoked: Vec<(P, NodeId)> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    revoked_nodes.contains(&p.node) && self.state.is_node_revoked(&p.node)
                })
                .map(|(k, p)| (k.clone(), p.node))
                .collect();
            for (peer, node) in revoked {
                self.ban(peer, node, format!("node {node} was revoked"), out);
            }
        }
    }
}

impl UpdateError {
    /// Whether receiving this update from a peer is the peer's fault (a forged,
    /// tampered or malformed update), as opposed to a matter of timing (an
    /// unknown root version).
    pub fn is_misbehaviour(&self) -> bool {
        // An equivocation is the author's fault, not the relaying peer's:
        // an honest peer that holds the other change relays it in good faith.
        // An order dated a little ahead of this node's clock may be fine by
        // the relaying peer's.
        // A root older than this node's is one the peer has not replaced yet.
        !matches!(
            self,
            UpdateError::RootVersion { .. }
                | UpdateError::FutureDated { .. }
                | UpdateError::Rotation(crate::trust::TrustError::Rollback { .. })
                | UpdateError::State(weft_crdt::CrdtError::Equivocation { .. })
        )
    }
}
