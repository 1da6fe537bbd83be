//! NAT traversal with no central relay: circuit relay v2, DCUtR hole
//! punching and autonat, as a node uses them ([`crate::task`] drives them,
//! [`crate::swarm`] holds the behaviours).
//!
//! ```text
//! NATed A ──(reservation)──▶ relay R ◀──(reservation)── NATed B
//!    │  dials /ip4/R/tcp/7101/p2p/R/p2p-circuit/p2p/B    │
//!    └──────────── relayed connection through R ─────────┘
//!                 DCUtR on it: both dial at once
//!    A ◀═══════════ direct connection (hole punched) ═══▶ B
//! ```
//!
//! Rules:
//! - **Any admitted node with `relay = true` is a relay**; none is special.
//!   It serves circuit relay v2 ([`server`]) and advertises the hop
//!   protocol, so its peers learn by identify that it relays.
//! - **Only admitted peers may reserve a slot or open a circuit.** The
//!   relay's first rate limiter ([`AdmittedOnly`]) answers from the set of
//!   peers the node task has admitted ([`Admitted`]); a peer outside it is
//!   refused (`RESOURCE_LIMIT_EXCEEDED`) before any slot is counted. The
//!   destination of a circuit must hold a reservation, so it was admitted
//!   too. A peer that loses its admission (revoked, banned, disconnected)
//!   leaves the set at once.
//! - **Bounded.** In all: [`RelayOptions::max_reservations`] and
//!   [`RelayOptions::max_circuits`]; per peer: [`RESERVATIONS_PER_PEER`]
//!   and [`CIRCUITS_PER_PEER`]; per circuit: [`RelayOptions::max_circuit_bytes`]
//!   (both directions) and [`RelayOptions::max_circuit_duration`]; and
//!   token buckets per peer and per IP address on new reservations and
//!   circuits ([`server_config`]).
//! - **A node that is not known to be public listens through relays**: a
//!   node that is not a relay itself and whose reachability (autonat) is
//!   not `public` reserves a slot on up to [`MAX_RELAYS`] admitted relays it
//!   is directly connected to, and so becomes reachable at
//!   `/…/p2p/RELAY/p2p-circuit/p2p/ME`. libp2p confirms that address as an
//!   external address once the relay accepts, so identify carries it to
//!   every peer, and from there it reaches the address books and the
//!   Kademlia tables of the mesh ([`crate::discovery`]).
//! - **DCUtR** runs on every relayed connection: the two ends exchange the
//!   addresses their peers observed them at and dial each other at the same
//!   moment; where both NATs keep the port of an outgoing connection
//!   (endpoint-independent mapping) the two dials meet and a direct
//!   connection replaces the relayed one (closed once the direct one has
//!   settled).
//! - **autonat** (v1) asks admitted peers only ([`autonat`]) to dial the
//!   node back: `public` when one could, `private` when it could not,
//!   `unknown` before the first answer.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, autonat, relay};

/// Default [`RelayOptions::max_reservations`]: 128 nodes may listen through
/// one relay at once, well above the NATed sites of a mesh.
pub const DEFAULT_RELAY_MAX_RESERVATIONS: u32 = 128;

/// Default [`RelayOptions::max_circuits`]: 64 relayed connections at once
/// through one relay. Each pair of NATed nodes that cannot punch a hole
/// holds one while both are up; a pair that can holds one for seconds.
pub const DEFAULT_RELAY_MAX_CIRCUITS: u32 = 64;

/// Default [`RelayOptions::max_circuit_bytes`]: 64 MiB per circuit, both
/// directions together. A relayed connection carries pings (a few hundred
/// bytes a second), gossip and sync: a full state fetch is at most 8 MiB a
/// message, so a circuit outlives a node catching up; then the relay closes
/// it and the two ends connect again.
pub const DEFAULT_RELAY_MAX_CIRCUIT_BYTES: u64 = 64 * 1024 * 1024;

/// Default [`RelayOptions::max_circuit_duration`]: 30 minutes, after which
/// the relay closes a circuit and its ends connect again (a hole punch is
/// tried again too).
pub const DEFAULT_RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(30 * 60);

/// Reservations one peer may hold on a relay at once (beyond a renewal).
pub const RESERVATIONS_PER_PEER: usize = 2;

/// Circuits one peer may be an end of on a relay at once: a NATed node
/// connected through one relay to as many NATed peers as discovery keeps
/// (8 by default), twice over.
pub const CIRCUITS_PER_PEER: usize = 16;

/// How many relays a node that is not public listens through: two, so
/// that losing one relay leaves it reachable while it reserves another.
pub const MAX_RELAYS: usize = 2;

/// How long a reservation lasts before the client renews it.
pub const RESERVATION_DURATION: Duration = Duration::from_secs(60 * 60);

/// What relaying a node does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayOptions {
    /// Serve circuit relay v2 to admitted peers (`relay`).
    pub server: bool,
    /// Reservations held at once in all (`relay_max_reservations`).
    pub max_reservations: u32,
    /// Circuits open at once in all (`relay_max_circuits`).
    pub max_circuits: u32,
    /// Bytes one circuit may carry, both directions together
    /// (`relay_max_circuit_bytes`; 0: no limit).
    pub max_circuit_bytes: u64,
    /// How long one circuit may stay open (`relay_max_circuit_duration`).
    pub max_circuit_duration: Duration,
    /// Whether autonat asks admitted peers to dial this node back. On in
    /// every node; a test that wants a node's reachability to stay
    /// `unknown` turns it off.
    pub probe_reachability: bool,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            server: false,
            max_reservations: DEFAULT_RELAY_MAX_RESERVATIONS,
            max_circuits: DEFAULT_RELAY_MAX_CIRCUITS,
            max_circuit_bytes: DEFAULT_RELAY_MAX_CIRCUIT_BYTES,
            max_circuit_duration: DEFAULT_RELAY_MAX_CIRCUIT_DURATION,
            probe_reachability: true,
        }
    }
}

/// The peers the node has admitted, shared between the node task (which
/// keeps it) and the relay server's gate ([`AdmittedOnly`]). Both run on
/// the node task, so the lock is never contended.
#[derive(Clone, Debug, Default)]
pub struct Admitted(Arc<Mutex<BTreeSet<PeerId>>>);

impl Admitted {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeSet<PeerId>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `peer` was admitted.
    pub fn insert(&self, peer: PeerId) {
        self.with(|s| s.insert(peer));
    }

    /// `peer` is no longer admitted (disconnected, revoked, banned).
    pub fn remove(&self, peer: &PeerId) {
        self.with(|s| s.remove(peer));
    }

    /// Whether `peer` is admitted.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.with(|s| s.contains(peer))
    }
}

/// The relay server's gate: a reservation or a circuit from a peer that is
/// not admitted is refused. Placed first among the rate limiters, so a
/// refused peer takes no token from the others.
pub struct AdmittedOnly {
    admitted: Admitted,
    what: &'static str,
}

impl relay::RateLimiter for AdmittedOnly {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, _now: std::time::Instant) -> bool {
        let ok = self.admitted.contains(&peer);
        if !ok {
            tracing::info!(%peer, %addr, "refusing a relay {} to a peer that is not admitted", self.what);
        }
        ok
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The relay server's configuration: the bounds of [`RelayOptions`] and of
/// this module, the [`AdmittedOnly`] gate, then token buckets: per peer 30
/// reservations (one more a minute) and 60 circuits (one more every 10 s),
/// per IP address 60 reservations (one more every 10 s) and 120 circuits
/// (one more every 5 s): several sites may share an address.
pub fn server_config(options: &RelayOptions, admitted: &Admitted) -> relay::Config {
    let config = relay::Config {
        max_reservations: options.max_reservations as usize,
        max_reservations_per_peer: RESERVATIONS_PER_PEER,
        reservation_duration: RESERVATION_DURATION,
        reservation_rate_limiters: vec![Box::new(AdmittedOnly {
            admitted: admitted.clone(),
            what: "reservation",
        })],
        max_circuits: options.max_circuits as usize,
        max_circuits_per_peer: CIRCUITS_PER_PEER,
        // libp2p panics on a duration above u32::MAX seconds.
        max_circuit_duration: options
            .max_circuit_duration
            .min(Duration::from_secs(u64::from(u32::MAX))),
        max_circuit_bytes: options.max_circuit_bytes,
        circuit_src_rate_limiters: vec![Box::new(AdmittedOnly {
            admitted: admitted.clone(),
            what: "circuit",
        })],
    };
    config
        .reservation_rate_per_peer(nz(30), Duration::from_secs(60))
        .reservation_rate_per_ip(nz(60), Duration::from_secs(10))
        .circuit_src_per_peer(nz(60), Duration::from_secs(10))
        .circuit_src_per_ip(nz(120), Duration::from_secs(5))
}

/// The relay server of a `relay = true` node: [`server_config`], and the
/// hop protocol advertised from the start (libp2p would wait for a
/// confirmed external address; the operator said this node is reachable).
pub fn server(local: PeerId, options: &RelayOptions, admitted: &Admitted) -> relay::Behaviour {
    let mut server = relay::Behaviour::new(local, server_config(options, admitted));
    server.set_status(Some(relay::Status::Enable));
    server
}

/// autonat (v1): the first probe 2 s after start, again every 10 s until
/// three answers agree, then every 5 minutes. Only the servers the node
/// task adds (admitted peers it is directly connected to) are asked, and
/// private addresses count (a mesh may run over a private WAN). As a
/// server it dials back at most 2 probes per peer and 8 in all per second,
/// and only the address the asker was observed at.
pub fn autonat(local: PeerId) -> autonat::Behaviour {
    autonat::Behaviour::new(
        local,
        autonat::Config {
            timeout: Duration::from_secs(10),
            boot_delay: Duration::from_secs(2),
            retry_interval: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(5 * 60),
            throttle_server_period: Duration::from_secs(5),
            use_connected: false,
            confidence_max: 3,
            max_peer_addresses: 8,
            throttle_clients_global_max: 8,
            throttle_clients_peer_max: 2,
            throttle_clients_period: Duration::from_secs(1),
            only_global_ips: false,
        },
    )
}

/// Whether the node can be dialed from outside, as autonat found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// An admitted peer dialed it back.
    Public,
    /// An admitted peer could not.
    Private,
    /// No answer yet.
    #[default]
    Unknown,
}

impl Reachability {
    /// From autonat's status.
    pub fn of(status: &autonat::NatStatus) -> Reachability {
        match status {
            autonat::NatStatus::Public(_) => Reachability::Public,
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        }
    }

    /// `public`, `private` or `unknown`, as `/v1/status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Public => "public",
            Reachability::Private => "private",
            Reachability::Unknown => "unknown",
        }
    }
}

/// Whether `addr` goes through a relay (`/p2p-circuit`).
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The address to listen on through `relay`, given its addresses (those
/// it reported, from the book): the first QUIC one, else the first TCP
/// one, then `/p2p/RELAY/p2p-circuit`. None when it has no direct address.
pub fn circuit_listen_addr(relay: PeerId, addrs: &[Multiaddr]) -> Option<Multiaddr> {
    use crate::transport::Kind;
    let pick = |kind: Kind| addrs.iter().find(|a| Kind::of(a) == kind);
    let mut addr = pick(Kind::Quic).or_else(|| pick(Kind::Tcp))?.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    Some(addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit))
}

/// When a relay whose reservation failed or ended is asked again: after
/// 1 s, doubling per failure in a row, at most 60 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// No failure yet.
    pub const fn new() -> Self {
        Backoff { failures: 0 }
    }

    /// One more failure: how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        Duration::from_secs(1 << (self.failures - 1).min(6)).min(Duration::from_secs(60))
    }

    /// A reservation was accepted.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::relay::RateLimiter as _;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_gate_lets_only_admitted_peers_through() {
        let admitted = Admitted::default();
        let mut gate = AdmittedOnly {
            admitted: admitted.clone(),
            what: "reservation",
        };
        let p = PeerId::random();
        let a = ma("/ip4/203.0.113.9/tcp/7101");
        let now = std::time::Instant::now();
        assert!(!gate.try_next(p, &a, now));
        admitted.insert(p);
        assert!(gate.try_next(p, &a, now));
        admitted.remove(&p);
        assert!(!gate.try_next(p, &a, now), "a peer that left is refused");
    }

    #[test]
    fn the_server_config_holds_the_bounds() {
        let o = RelayOptions {
            max_circuits: 5,
            max_circuit_bytes: 77,
            max_circuit_duration: Duration::from_secs(u64::MAX),
            ..RelayOptions::default()
        };
        let c = server_config(&o, &Admitted::default());
        assert_eq!(c.max_circuits, 5);
        assert_eq!(c.max_circuit_bytes, 77);
        assert_eq!(c.max_reservations, DEFAULT_RELAY_MAX_RESERVATIONS as usize);
        assert_eq!(c.max_circuit_duration.as_secs(), u64::from(u32::MAX));
        assert_eq!(c.reservation_rate_limiters.len(), 3);
        assert_eq!(c.circuit_src_rate_limiters.len(), 3);
    }

    #[test]
    fn listen_addresses_go_through_a_direct_address_of_the_relay() {
        let r = PeerId::random();
        let tcp = ma("/ip4/203.0.113.9/tcp/7101");
        let quic = ma("/ip4/203.0.113.9/udp/7101/quic-v1");
        let circuit = ma(&format!("/ip4/198.51.100.1/tcp/1/p2p/{r}/p2p-circuit"));
        assert_eq!(
            circuit_listen_addr(r, &[circuit.clone(), tcp.clone(), quic.clone()]),
            Some(quic.with(Protocol::P2p(r)).with(Protocol::P2pCircuit))
        );
        assert_eq!(
            circuit_listen_addr(r, &[tcp.clone().with(Protocol::P2p(r))]),
            Some(tcp.with(Protocol::P2p(r)).with(Protocol::P2pCircuit))
        );
        assert_eq!(circuit_listen_addr(r, &[circuit]), None);
        assert!(is_circuit(&ma(&format!("/p2p/{r}/p2p-circuit"))));
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut b = Backoff::new();
        assert_eq!(b.failed(), Duration::from_secs(1));
        assert_eq!(b.failed(), Duration::from_secs(2));
        for _ in 0..10 {
            b.failed();
        }
        assert_eq!(b.failed(), Duration::from_secs(60));
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_secs(1));
    }

    #[test]
    fn reachability_names() {
        assert_eq!(
            Reachability::of(&autonat::NatStatus::Public(ma("/ip4/1.2.3.4/tcp/1"))).as_str(),
            "public"
        );
        assert_eq!(
            Reachability::of(&autonat::NatStatus::Private).as_str(),
            "private"
        );
        assert_eq!(Reachability::default().as_str(), "unknown");
    }
}
