//! The node task's side of NAT traversal ([`crate::relay`]): the relay
//! server's gate and counters, the relays this node listens through, the
//! hole punches DCUtR made, and what autonat found.
//!
//! Rules:
//! - A relay's listen addresses are its external addresses from the start.
//! - The gate ([`crate::relay::Admitted`]) holds exactly the peers the task
//!   has admitted: a peer enters it when admitted and leaves it when
//!   disconnected, refused, revoked or banned, before its connections close.
//! - A node listens through relays ([`NodeTask::relay_tick`], every redial
//!   tick) when it is not a relay itself and autonat has not found it
//!   public: on up to [`crate::relay::MAX_RELAYS`] admitted peers that
//!   advertise the hop protocol and are directly connected, once QUIC has
//!   been preferred on that connection (a reservation lives on the
//!   connection it was made on). A reservation
//!   refused or lost is asked for again after [`crate::relay::Backoff`]; a
//!   node found public leaves its relays.
//! - A connection is hole punched when DCUtR says so, or when it is a
//!   direct one that came in from a peer this node reached through a relay
//!   in the last 30 s while the node was not known to be public (libp2p
//!   tells only one side of a hole punch), or a direct one to a peer with
//!   a hole-punched connection open (QUIC preferred over a punched TCP
//!   connection goes through the same mapping).
//! - autonat asks only admitted peers with a direct connection.
//! - A peer reached both directly and through a relay keeps the direct
//!   connection: the relayed one is closed once the direct one has been up
//!   for [`super::discovery::QUIC_SETTLE`] (DCUtR's exchange is over by
//!   then). Two relayed connections to one peer (both dialed at once)
//!   would leave no room under the per-peer limit for the hole punch: both
//!   sides keep the one the smaller peer id dialed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use libp2p::core::transport::ListenerId;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, StreamProtocol, autonat, dcutr, relay};
use tokio::time::Instant;

use super::NodeTask;
use super::discovery::QUIC_SETTLE;
use crate::control::RelayStatus;
use crate::relay::{Admitted, Backoff, MAX_RELAYS, Reachability, RelayOptions};
use crate::transport::Kind;

/// How long after a relayed connection opened a direct one that comes in
/// from the same peer counts as its hole punch: DCUtR starts at once and
/// makes three attempts, each a round trip or two over the relay.
const HOLE_PUNCH_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// The NAT traversal state the node task keeps.
#[derive(Debug)]
pub(super) struct RelayState {
    /// The settings.
    options: RelayOptions,
    /// The admitted peers, shared with the relay server's gate.
    gate: Admitted,
    /// What autonat found.
    pub(super) reachability: Reachability,
    /// Connected peers that advertise the hop protocol (relays).
    hop: BTreeSet<PeerId>,
    /// This node's circuit listeners, with their relay.
    listeners: HashMap<ListenerId, PeerId>,
    /// Relays that accepted this node's reservation.
    accepted: BTreeSet<PeerId>,
    /// Per relay: failures in a row, and when to ask it again.
    retry: BTreeMap<PeerId, (Backoff, Instant)>,
    /// The peers autonat may ask.
    autonat_servers: BTreeSet<PeerId>,
    /// Open connections made by hole punching.
    pub(super) hole_punched: BTreeSet<ConnectionId>,
    /// When a relayed connection with each peer last opened (pruned after
    /// [`HOLE_PUNCH_WINDOW`]).
    relayed_at: BTreeMap<PeerId, Instant>,
    /// Counters for status.
    counters: RelayStatus,
}

impl RelayState {
    pub(super) fn new(options: RelayOptions, gate: Admitted) -> Self {
        RelayState {
            counters: RelayStatus {
                serving: options.server,
                ..RelayStatus::default()
            },
            options,
            gate,
            reachability: Reachability::Unknown,
            hop: BTreeSet::new(),
            listeners: HashMap::new(),
            accepted: BTreeSet::new(),
            retry: BTreeMap::new(),
            autonat_servers: BTreeSet::new(),
            hole_punched: BTreeSet::new(),
            relayed_at: BTreeMap::new(),
        }
    }
}

impl NodeTask {
    /// `peer` was admitted: the relay server serves it from now on.
    pub(super) fn relay_admitted(&mut self, peer: PeerId) {
        self.relay.gate.insert(peer);
    }

    /// `peer` is no longer admitted, or no longer connected: out of the
    /// gate at once, and its relay (if it was one) is left.
    pub(super) fn relay_gone(&mut self, peer: &PeerId) {
        self.relay.gate.remove(peer);
        self.relay.hop.remove(peer);
        self.relay.accepted.remove(peer);
        if self.relay.autonat_servers.remove(peer)
            && let Some(autonat) = self.swarm.behaviour_mut().autonat.as_mut()
        {
            autonat.remove_server(peer);
        }
        let through: Vec<ListenerId> = self
            .relay
            .listeners
            .iter()
            .filter(|(_, r)| *r == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in through {
            self.swarm.remove_listener(id);
        }
    }

    /// A listen address came or went: a relay's own (not circuit)
    /// addresses are its external addresses, which it hands to the peers
    /// that reserve a slot (a reservation must carry one; libp2p would
    /// otherwise wait for autonat).
    pub(super) fn relay_listening(&mut self, address: &Multiaddr, up: bool) {
        if !self.relay.options.server || crate::relay::is_circuit(address) {
            return;
        }
        if up {
            self.swarm.add_external_address(address.clone());
        } else {
            self.swarm.remove_external_address(address);
        }
    }

    /// A connection opened: a direct one that came in from a peer this
    /// node reached through a relay moments ago, while this node is not
    /// known to be public, came through its NAT only because DCUtR punched
    /// a hole (libp2p reports the hole punch to one side only: the one
    /// whose dial the connection answered).
    pub(super) fn relay_note_connection(&mut self, peer: &PeerId, id: ConnectionId) {
        let now = Instant::now();
        let Some(new) = self
            .discovery
            .connections
            .get(peer)
            .and_then(|l| l.iter().find(|c| c.id == id))
        else {
            return;
        };
        if new.kind() == Kind::Relayed {
            self.relay.relayed_at.insert(*peer, now);
            return;
        }
        if self.relay.reachability == Reachability::Public {
            return;
        }
        // A new direct connection to a peer already hole punched (QUIC
        // preferred over a punched TCP connection, say) crosses the NAT
        // through the same punched mapping.
        let punched = &self.relay.hole_punched;
        if self
            .discovery
            .connections
            .get(peer)
            .is_some_and(|l| l.iter().any(|c| c.id != id && punched.contains(&c.id)))
        {
            self.relay.hole_punched.insert(id);
            tracing::info!(%peer, "hole punched: a direct connection to a peer already punched through");
            return;
        }
        if new.dialer {
            return;
        }
        if self
            .relay
            .relayed_at
            .get(peer)
            .is_some_and(|at| now.duration_since(*at) <= HOLE_PUNCH_WINDOW)
        {
            self.relay.hole_punched.insert(id);
            self.relay.counters.hole_punches += 1;
            tracing::info!(%peer, "hole punched: a direct connection came in through the NAT");
        }
    }

    /// The protocols `peer` reported by identify: whether it relays.
    pub(super) fn relay_protocols(&mut self, peer: PeerId, protocols: &[StreamProtocol]) {
        if protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.relay.hop.insert(peer);
        } else {
            self.relay.hop.remove(&peer);
        }
    }

    /// Whether `peer` has a connection that is not relayed.
    fn directly_connected(&self, peer: &PeerId) -> bool {
        self.discovery
            .connections
            .get(peer)
            .is_some_and(|l| l.iter().any(|c| c.kind() != Kind::Relayed))
    }

    /// Whether `relay`'s direct connections are the ones that will stay, so
    /// a reservation made on them lasts: all QUIC, or TCP while the relay
    /// has no QUIC address or its QUIC dial did not take
    /// ([`NodeTask::prefer_quic`] closes TCP connections once a QUIC one
    /// has settled, and with them the reservation and every circuit on it).
    fn settled_relay(&self, relay: &PeerId, now: Instant) -> bool {
        let Some(l) = self.discovery.connections.get(relay) else {
            return false;
        };
        let direct: Vec<Kind> = l
            .iter()
            .map(|c| c.kind())
            .filter(|k| *k != Kind::Relayed)
            .collect();
        if direct.is_empty() {
            return false;
        }
        if direct.iter().all(|k| *k == Kind::Quic) {
            return true;
        }
        let quic_addr = self
            .discovery
            .book
            .addrs(relay)
            .iter()
            .any(|a| Kind::of(a) == Kind::Quic);
        let quic_failed = self
            .discovery
            .quic_tried
            .get(relay)
            .is_some_and(|t| now.duration_since(*t) >= QUIC_SETTLE);
        !direct.contains(&Kind::Quic) && (!quic_addr || quic_failed)
    }

    /// Every redial tick: keeps autonat's servers to the admitted peers
    /// this node is directly connected to, and listens through relays
    /// while the node is not known to be public (see the module doc).
    pub(super) fn relay_tick(&mut self) {
        self.sync_autonat_servers();
        let now = Instant::now();
        self.relay
            .relayed_at
            .retain(|_, at| now.duration_since(*at) <= HOLE_PUNCH_WINDOW);
        if self.relay.options.server {
            return;
        }
        if self.relay.reachability == Reachability::Public {
            if !self.relay.listeners.is_empty() {
                tracing::info!("reachable directly (autonat): leaving the relays");
                for id in self.relay.listeners.keys().copied().collect::<Vec<_>>() {
                    self.swarm.remove_listener(id);
                }
            }
            return;
        }
        let want = MAX_RELAYS.saturating_sub(self.relay.listeners.len());
        if want == 0 || self.relay.hop.is_empty() {
            return;
        }
        let using: BTreeSet<PeerId> = self.relay.listeners.values().copied().collect();
        let picks: Vec<(PeerId, Multiaddr)> = self
            .relay
            .hop
            .iter()
            .filter(|p| {
                self.admitted.contains(*p)
                    && !using.contains(*p)
                    && self.relay.retry.get(*p).is_none_or(|(_, at)| *at <= now)
                    && self.settled_relay(p, now)
            })
            .filter_map(|p| {
                let mut addrs = self.discovery.book.addrs(p).to_vec();
                addrs.extend(
                    self.discovery
                        .connections
                        .get(p)
                        .into_iter()
                        .flatten()
                        .filter(|c| c.dialer)
                        .map(|c| c.remote.clone()),
                );
                crate::relay::circuit_listen_addr(*p, &addrs).map(|a| (*p, a))
            })
            .take(want)
            .collect();
        for (relay, addr) in picks {
            match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, %addr, reachability = self.relay.reachability.as_str(), "asking a relay for a reservation");
                    self.relay.listeners.insert(id, relay);
                }
                Err(err) => {
                    let entry = self
                        .relay
                        .retry
                        .entry(relay)
                        .or_insert((Backoff::new(), now));
                    let wait = entry.0.failed();
                    entry.1 = now + wait;
                    tracing::info!(%relay, %addr, %err, retry_in_ms = wait.as_millis() as u64, "cannot listen through a relay");
                }
            }
        }
    }

    fn sync_autonat_servers(&mut self) {
        if self.swarm.behaviour().autonat.as_ref().is_none() {
            return;
        }
        let want: BTreeSet<PeerId> = self
            .admitted
            .iter()
            .filter(|p| self.directly_connected(p))
            .copied()
            .collect();
        let add: Vec<PeerId> = want
            .difference(&self.relay.autonat_servers)
            .copied()
            .collect();
        let drop: Vec<PeerId> = self
            .relay
            .autonat_servers
            .difference(&want)
            .copied()
            .collect();
        if let Some(autonat) = self.swarm.behaviour_mut().autonat.as_mut() {
            for p in &add {
                autonat.add_server(*p, None);
            }
            for p in &drop {
                autonat.remove_server(p);
            }
        }
        self.relay.autonat_servers = want;
    }

    /// A listener closed: if it was a circuit listener, its relay is asked
    /// again after a backoff.
    pub(super) fn relay_listener_closed(
        &mut self,
        id: ListenerId,
        reason: &Result<(), std::io::Error>,
    ) {
        let Some(relay) = self.relay.listeners.remove(&id) else {
            return;
        };
        self.relay.accepted.remove(&relay);
        let now = Instant::now();
        let entry = self
            .relay
            .retry
            .entry(relay)
            .or_insert((Backoff::new(), now));
        let wait = entry.0.failed();
        entry.1 = now + wait;
        match reason {
            Err(err) => {
                let err = error_chain(err);
                tracing::info!(%relay, %err, retry_in_ms = wait.as_millis() as u64, "a relay refused or lost this node's reservation");
            }
            Ok(()) => {
                tracing::info!(%relay, "no longer listening through a relay");
            }
        }
    }

    /// An event of the relay server.
    pub(super) fn on_relay_server(&mut self, event: relay::Event) {
        let c = &mut self.relay.counters;
        match event {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                if !renewed {
                    c.reservations += 1;
                    tracing::info!(peer = %src_peer_id, "relay: reservation accepted");
                }
            }
            relay::Event::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                c.refused_reservations += 1;
                tracing::info!(peer = %src_peer_id, ?status, "relay: reservation refused");
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                c.reservations = c.reservations.saturating_sub(1);
                tracing::debug!(peer = %src_peer_id, "relay: reservation ended");
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                c.circuits += 1;
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit opened");
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => {
                c.refused_circuits += 1;
                tracing::info!(src = %src_peer_id, dst = %dst_peer_id, ?status, "relay: circuit refused");
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => {
                c.circuits = c.circuits.saturating_sub(1);
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, ?error, "relay: circuit closed");
            }
            other => tracing::debug!(event = ?other, "relay event"),
        }
    }

    /// An event of the relay client.
    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                self.relay.accepted.insert(relay_peer_id);
                if let Some((backoff, _)) = self.relay.retry.get_mut(&relay_peer_id) {
                    backoff.succeeded();
                }
                if !renewal {
                    tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                }
            }
            other => tracing::debug!(event = ?other, "relay client event"),
        }
    }

    /// A DCUtR outcome: a hole-punched connection is marked as such.
    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        let c = &mut self.relay.counters;
        match event.result {
            Ok(connection) => {
                c.hole_punches += 1;
                self.relay.hole_punched.insert(connection);
                tracing::info!(peer = %event.remote_peer_id, "hole punched: a direct connection replaces the relayed one");
            }
            Err(err) => {
                c.hole_punch_failures += 1;
                let err = error_chain(&err);
                tracing::info!(peer = %event.remote_peer_id, %err, "hole punching failed: staying relayed");
                c.last_hole_punch_error = Some(err);
            }
        }
    }

    /// An autonat event: the node's reachability.
    pub(super) fn on_autonat(&mut self, event: autonat::Event) {
        match event {
            autonat::Event::StatusChanged { old, new } => {
                let now = Reachability::of(&new);
                tracing::info!(
                    from = Reachability::of(&old).as_str(),
                    to = now.as_str(),
                    "reachability changed"
                );
                self.relay.reachability = now;
            }
            other => tracing::debug!(event = ?other, "autonat event"),
        }
    }

    /// Closes the relayed connections of peers also reached directly, and
    /// duplicate relayed ones (see the module doc).
    pub(super) fn prefer_direct(&mut self) {
        let now = Instant::now();
        let local = *self.swarm.local_peer_id();
        let mut close = Vec::new();
        for (peer, l) in &self.discovery.connections {
            let settled = |since: Instant| now.duration_since(since) >= QUIC_SETTLE;
            let relayed: Vec<_> = l.iter().filter(|c| c.kind() == Kind::Relayed).collect();
            if relayed.is_empty() {
                continue;
            }
            if l.iter()
                .any(|c| c.kind() != Kind::Relayed && settled(c.since))
            {
                close.extend(relayed.iter().map(|c| c.id));
            } else if relayed.len() > 1
                && relayed.len() == l.len()
                && relayed.iter().all(|c| settled(c.since))
            {
                let keep_dialed_here = local < *peer;
                let keep = relayed
                    .iter()
                    .find(|c| c.dialer == keep_dialed_here)
                    .unwrap_or(&relayed[0])
                    .id;
                close.extend(relayed.iter().map(|c| c.id).filter(|id| *id != keep));
            }
        }
        for id in close {
            for l in self.discovery.connections.values_mut() {
                l.retain(|c| c.id != id);
            }
            tracing::debug!(connection = ?id, "closing a peer's redundant relayed connection");
            self.swarm.close_connection(id);
        }
    }

    /// Whether `peer` is a relay holding this node's reservation, which
    /// [`NodeTask::trim`] keeps.
    pub(super) fn relay_keeps(&self, peer: &PeerId) -> bool {
        self.relay.accepted.contains(peer)
    }

    /// NAT traversal for `/v1/status`.
    pub(super) fn relay_status(&self) -> RelayStatus {
        let mut s = self.relay.counters.clone();
        s.via = self
            .swarm
            .external_addresses()
            .filter(|a| crate::relay::is_circuit(a))
            .map(ToString::to_string)
            .collect();
        s
    }
}

/// An error with its sources, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
