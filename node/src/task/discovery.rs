//! The node task's side of discovery ([`crate::discovery`]): what it learns
//! from identify, Kademlia and mDNS, the lookups it runs, the peers it
//! dials from the address book, and the connections it keeps per peer for
//! status (transport, remote address, direct or relayed).
//!
//! Rules:
//! - Only admitted peers enter the Kademlia routing table, with the
//!   listen addresses they reported by identify; a peer that is banned or
//!   disconnected for want of a certificate leaves it and the book.
//! - Discovery dials only while the node holds fewer connections than
//!   `discovery_peers`, and counts its own dials in flight against that.
//! - A direct connection is preferred to a relayed one (`relay.rs`).
//! - QUIC is preferred whoever dialed and however the race of a dial
//!   went: an admitted peer connected over TCP only that has a QUIC
//!   address in the book is dialed once over QUIC
//!   ([`NodeTask::prefer_quic`]; again after [`QUIC_RETRY`] if that did not
//!   take), and once its QUIC connection has been up for [`QUIC_SETTLE`]
//!   its TCP connections are closed (not at once: the admission exchange
//!   or a sync may still be running on them).
//! - Two TCP connections to one admitted peer (both dialed at once) take two of the
//!   per-peer limit's places and are both pinged: once both have been up
//!   for [`QUIC_SETTLE`], both sides keep the oldest one the smaller peer
//!   id dialed (the oldest of all when it dialed none).
//! - A node holds at most twice `discovery_peers` peers
//!   ([`NodeTask::trim`]): Kademlia's lookups and bootstraps connect to
//!   every peer they ask, and those connections would otherwise stay (the
//!   idle timeout is an hour), until every node held a connection to every
//!   other, each pinged every second. Above the bound, the peers this node
//!   dialed and connected most recently go first (a connection is its
//!   dialer's to close: the other side may hold it by name and would dial
//!   again), but never a peer named by `--peer`, a peer in
//!   a gossip mesh with this node, a relay holding this node's
//!   reservation, a peer reached through a relay, nor one connected for
//!   less than [`crate::discovery::TRIM_GRACE`]. A relay server (`relay = true`) trims
//!   nothing: the peers behind NAT keep their reservations on it.

use std::collections::BTreeMap;

use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, identify, kad, mdns};
use tokio::time::Instant;

use super::NodeTask;
use crate::discovery::{Book, Connected, Lookups, to_trim};
use crate::transport::Kind;

/// How long a peer's QUIC connection must have been up before its TCP
/// connections are closed: the admission exchange (a round trip or two)
/// and a sync round started on them are over by then.
pub(super) const QUIC_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a peer connected over TCP only waits before it is dialed over
/// QUIC again, after a QUIC dial that did not replace its connection.
pub(super) const QUIC_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// How often [`NodeTask::trim`] looks at the peer count.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The discovery state the node task keeps.
#[derive(Debug)]
pub(super) struct DiscoveryState {
    /// The settings.
    pub(super) options: crate::discovery::DiscoveryOptions,
    /// Peers to dial, with their addresses.
    pub(super) book: Book,
    /// When the next Kademlia lookup runs.
    pub(super) lookups: Lookups,
    /// Discovery's dials in flight, by connection.
    pub(super) dialing: BTreeMap<ConnectionId, PeerId>,
    /// What each connected peer reported by identify, with the remote
    /// address of the connection it came on, until the peer is admitted.
    pub(super) heard: BTreeMap<PeerId, (Vec<Multiaddr>, Multiaddr)>,
    /// Every open connection, by peer, oldest first.
    pub(super) connections: BTreeMap<PeerId, Vec<Conn>>,
    /// When each peer connected over TCP only was last dialed over QUIC,
    /// or last found to have no QUIC address in the book.
    pub(super) quic_tried: BTreeMap<PeerId, Instant>,
    /// When [`NodeTask::trim`] last ran.
    pub(super) trimmed: Instant,
}

/// One open connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: ConnectionId,
    /// Its remote address; for a relayed connection that came in, the
    /// circuit it came through (`/…/p2p/RELAY/p2p-circuit/p2p/PEER`).
    pub(super) remote: Multiaddr,
    /// When it opened.
    pub(super) since: Instant,
    /// Whether this node dialed it.
    pub(super) dialer: bool,
    /// Its transport, read from `remote` once: the maintenance that runs
    /// every redial tick asks it of every connection.
    kind: Kind,
    /// Whether `remote` is a direct address (not through a relay).
    direct: bool,
}

impl Conn {
    pub(super) fn new(id: ConnectionId, remote: Multiaddr, dialer: bool) -> Self {
        Conn {
            id,
            kind: Kind::of(&remote),
            direct: crate::transport::path_of(&remote) == "direct",
            remote,
            since: Instant::now(),
            dialer,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    pub(super) fn direct(&self) -> bool {
        self.direct
    }
}

impl DiscoveryState {
    pub(super) fn new(options: crate::discovery::DiscoveryOptions) -> Self {
        DiscoveryState {
            options,
            book: Book::default(),
            lookups: Lookups::new(Instant::now()),
            dialing: BTreeMap::new(),
            heard: BTreeMap::new(),
            connections: BTreeMap::new(),
            quic_tried: BTreeMap::new(),
            trimmed: Instant::now(),
        }
    }
}

impl NodeTask {
    /// A connection opened: kept for status.
    pub(super) fn note_connection(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        remote: Multiaddr,
        dialer: bool,
    ) {
        self.discovery
            .connections
            .entry(peer)
            .or_default()
            .push(Conn::new(id, remote, dialer));
        if self.discovery.dialing.remove(&id).is_some() {
            self.discovery.book.connected(&peer);
        }
        self.relay_note_connection(&peer, id);
    }

    /// Dials over QUIC, once per stay, each admitted peer connected over
    /// TCP only whose QUIC addresses are in the book; closes the TCP
    /// connections of a peer whose QUIC connection has settled.
    fn prefer_quic(&mut self) {
        let now = Instant::now();
        let local = *self.swarm.local_peer_id();
        let mut close = Vec::new();
        for (peer, l) in &self.discovery.connections {
            let settled = |c: &Conn| now.duration_since(c.since) >= QUIC_SETTLE;
            if l.iter().any(|c| c.kind() == Kind::Quic && settled(c)) {
                // On QUIC: its TCP connections go.
                close.extend(l.iter().filter(|c| c.kind() == Kind::Tcp).map(|c| c.id));
            } else if l.len() > 1
                && self.admitted.contains(peer)
                && l.iter().all(|c| c.kind() == Kind::Tcp && settled(c))
            {
                // Two TCP connections (both sides dialed at once) take two
                // places under the per-peer limit, and each is pinged:
                // both sides keep the one the smaller peer id dialed.
                // The list is oldest first: the oldest the smaller peer id
                // dialed, else the oldest.
                let keep_dialed_here = local < *peer;
                let keep = l
                    .iter()
                    .find(|c| c.dialer == keep_dialed_here)
                    .unwrap_or(&l[0])
                    .id;
                close.extend(l.iter().map(|c| c.id).filter(|id| *id != keep));
            }
        }
        for id in close {
            for l in self.discovery.connections.values_mut() {
                // Closed once: the close is reported later.
                l.retain(|c| c.id != id);
            }
            tracing::debug!(connection = ?id, "closing a peer's redundant TCP connection");
            self.swarm.close_connection(id);
        }
        // (peer, its QUIC addresses, whether its connection has settled)
        let candidates: Vec<(PeerId, Vec<Multiaddr>, bool)> = self
            .discovery
            .connections
            .iter()
            .filter(|(p, l)| {
                self.admitted.contains(*p)
                    && self
                        .discovery
                        .quic_tried
                        .get(*p)
                        .is_none_or(|t| now.duration_since(*t) >= QUIC_RETRY)
                    && l.iter().all(|c| c.kind() == Kind::Tcp && c.direct())
            })
            .map(|(p, l)| {
                let quic: Vec<Multiaddr> = self
                    .discovery
                    .book
                    .addrs(p)
                    .iter()
                    .filter(|a| Kind::of(a) == Kind::Quic)
                    .cloned()
                    .collect();
                let settled = l.iter().all(|c| now.duration_since(c.since) >= QUIC_SETTLE);
                (*p, quic, settled)
            })
            .collect();
        let mut want = Vec::new();
        for (peer, quic, settled) in candidates {
            if !quic.is_empty() {
                want.push((peer, quic));
            } else if settled {
                // Its identify has long come in without a QUIC address:
                // looked at again after QUIC_RETRY, not on every pass.
                self.discovery.quic_tried.insert(peer, now);
            }
        }
        for (peer, quic) in want {
            self.discovery.quic_tried.insert(peer, now);
            let opts = DialOpts::peer_id(peer)
                .addresses(quic)
                .condition(PeerCondition::Always)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => tracing::debug!(%peer, "connected over TCP: dialing its QUIC address"),
                Err(err) => tracing::debug!(%peer, %err, "cannot dial a peer over QUIC"),
            }
        }
    }

    /// Closes the peers above twice `discovery_peers`, newest first, among
    /// those no rule keeps (the module doc lists them).
    pub(super) fn trim(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.discovery.trimmed) < TRIM_EVERY {
            return;
        }
        self.discovery.trimmed = now;
        let want = self.discovery.options.peers;
        if want == 0 || self.discovery.options.relay.server {
            return;
        }
        let high = want.saturating_mul(2);
        if self.discovery.connections.len() <= high {
            return;
        }
        let named: std::collections::BTreeSet<PeerId> =
            self.targets.iter().filter_map(|t| t.peer).collect();
        let meshed: std::collections::BTreeSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let peers: Vec<Connected> = self
            .discovery
            .connections
            .iter()
            .filter_map(|(p, l)| {
                Some(Connected {
                    peer: *p,
                    since: l.iter().map(|c| c.since).max()?,
                    relayed: l.iter().any(|c| c.kind() == Kind::Relayed),
                    // A connection is the dialer's to close: a peer that
                    // dialed this node may hold it by name, and would
                    // dial it again at once.
                    kept: named.contains(p)
                        || meshed.contains(p)
                        || self.relay_keeps(p)
                        || !l.iter().any(|c| c.dialer),
                })
            })
            .collect();
        for peer in to_trim(&peers, high, now) {
            tracing::debug!(%peer, "more peers than twice discovery_peers: closing one");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// A connection closed; when it was the peer's last, look for peers
    /// again soon.
    pub(super) fn note_closed(&mut self, peer: PeerId, id: ConnectionId, last: bool) {
        if let Some(list) = self.discovery.connections.get_mut(&peer) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                self.discovery.connections.remove(&peer);
            }
        }
        self.relay.hole_punched.remove(&id);
        if last {
            self.discovery.heard.remove(&peer);
            self.discovery.quic_tried.remove(&peer);
            self.look_soon_if_short();
        }
    }

    /// A dial failed: if discovery made it, the peer waits longer.
    pub(super) fn note_dial_failed(&mut self, id: ConnectionId) {
        if let Some(peer) = self.discovery.dialing.remove(&id) {
            self.discovery.book.failed(&peer, Instant::now());
        }
    }

    /// `peer`'s oldest direct connection, else its oldest one, for status.
    pub(super) fn connection_of(&self, peer: &PeerId) -> Option<&Conn> {
        let l = self.discovery.connections.get(peer)?;
        l.iter()
            .find(|c| c.kind() != Kind::Relayed)
            .or_else(|| l.first())
    }

    /// What a peer reported by identify: its listen addresses enter the
    /// book and the routing table once it is admitted.
    pub(super) fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received {
            peer_id,
            connection_id,
            info,
        } = event
        else {
            return;
        };
        tracing::trace!(peer = %peer_id, agent = %info.agent_version, addrs = info.listen_addrs.len(), "identified peer");
        self.relay_protocols(peer_id, &info.protocols);
        let Some(remote) = self
            .discovery
            .connections
            .get(&peer_id)
            .and_then(|l| l.iter().find(|c| c.id == connection_id))
            .map(|c| c.remote.clone())
        else {
            return;
        };
        let mut addrs = info.listen_addrs;
        addrs.truncate(crate::discovery::MAX_ADDRS * 2);
        if self.admitted.contains(&peer_id) {
            self.learn_admitted(peer_id, addrs, &remote);
        } else {
            self.discovery.heard.insert(peer_id, (addrs, remote));
        }
    }

    /// `peer` was admitted: what it reported enters the book and the
    /// routing table.
    pub(super) fn on_admitted(&mut self, peer: PeerId) {
        if let Some((addrs, remote)) = self.discovery.heard.remove(&peer) {
            self.learn_admitted(peer, addrs, &remote);
        }
        self.look_soon_if_short();
    }

    /// Asks for a lookup soon, only while the node holds fewer peers than
    /// it wants: a lookup connects to every peer it asks.
    fn look_soon_if_short(&mut self) {
        if self.discovery.connections.len() < self.discovery.options.peers {
            self.discovery.lookups.soon(Instant::now());
        }
    }

    fn learn_admitted(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, remote: &Multiaddr) {
        let now = Instant::now();
        self.discovery
            .book
            .learn(peer, addrs.iter().cloned(), Some(remote), now);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            for a in self.discovery.book.addrs(&peer).to_vec() {
                kad.add_address(&peer, a);
            }
        }
    }

    /// `peer` is not to be dialed again by discovery: banned, or refused
    /// for want of a valid certificate. It leaves the relay's gate at once.
    pub(super) fn forget_peer(&mut self, peer: &PeerId) {
        self.relay_gone(peer);
        self.discovery.book.forget(peer);
        self.discovery.heard.remove(peer);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            kad.remove_peer(peer);
        }
    }

    /// A Kademlia event: the peers a lookup found enter the book (they
    /// still have to be admitted when dialed). Inbound record requests are
    /// filtered and dropped: Kademlia carries no state here.
    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => {
                if let kad::QueryResult::GetClosestPeers(result) = result {
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    let now = Instant::now();
                    let local = *self.swarm.local_peer_id();
                    let mut found = 0;
                    for p in peers.into_iter().filter(|p| p.peer_id != local) {
                        if !self.banned.contains(&p.peer_id) {
                            found += 1;
                            self.discovery.book.learn(p.peer_id, p.addrs, None, now);
                        }
                    }
                    tracing::debug!(
                        found,
                        book = self.discovery.book.len(),
                        "a discovery lookup answered"
                    );
                }
                if step.last {
                    self.discovery.lookups.finished(id);
                }
            }
            kad::Event::InboundRequest { request } => {
                tracing::trace!(?request, "kad request");
            }
            _ => {}
        }
    }

    /// An mDNS event: peers found on the LAN enter the book.
    pub(super) fn on_mdns(&mut self, event: mdns::Event) {
        if let mdns::Event::Discovered(found) = event {
            let now = Instant::now();
            for (peer, addr) in found {
                if !self.banned.contains(&peer) {
                    self.discovery.book.learn(peer, [addr], None, now);
                }
            }
        }
    }

    /// Runs a lookup when one is due, and dials peers from the book while
    /// the node holds fewer connections than it wants.
    pub(super) fn discover(&mut self) {
        self.prefer_quic();
        self.prefer_direct();
        self.trim();
        let want = self.discovery.options.peers;
        if want == 0 {
            return;
        }
        let now = Instant::now();
        let connected = self.swarm.connected_peers().count();
        let wants_more = connected < want;
        if self.discovery.lookups.due(now)
            && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
            && kad.kbuckets().next().is_some()
        {
            let id = kad.get_closest_peers(PeerId::random());
            self.discovery.lookups.started(id, now, wants_more);
        }
        let budget = want.saturating_sub(connected + self.discovery.dialing.len());
        if budget == 0 || self.discovery.book.is_empty() {
            return;
        }
        let dialing: Vec<PeerId> = self.discovery.dialing.values().copied().collect();
        let picks = {
            let swarm = &self.swarm;
            let (banned, partitioned) = (&self.banned, &self.partitioned);
            let local = *swarm.local_peer_id();
            self.discovery.book.pick(budget, now, |p| {
                *p == local
                    || swarm.is_connected(p)
                    || banned.contains(p)
                    || partitioned.contains(p)
                    || dialing.contains(p)
            })
        };
        for (peer, addrs) in picks {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%peer, "dialing a discovered peer");
                    self.discovery.dialing.insert(id, peer);
                }
                Err(err) => {
                    tracing::debug!(%peer, %err, "cannot dial a discovered peer");
                    self.discovery.book.failed(&peer, now);
                }
            }
        }
    }
}
