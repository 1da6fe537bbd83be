//! Connection limits: how many libp2p connections the node holds in all,
//! per peer, per remote IP address, and still in their handshake.
//!
//! A connection costs a socket, a Noise handshake (a Diffie-Hellman and a
//! signature check) and a Yamux session with its buffers before the node
//! knows who is on the other end: admission by certificate comes after.
//! Peer ids cost nothing to make, so without limits one host could open
//! connections until the node ran out of file descriptors or memory. With
//! them, the node refuses the extra connections and keeps serving the ones
//! it holds.
//!
//! The total, per-peer and pending-incoming limits are libp2p's
//! `connection_limits` behaviour. The per-IP limit is [`PerIpLimit`], a
//! behaviour of this module: it counts each inbound connection against its
//! remote IP address from the moment it is accepted (still in its
//! handshake) until it closes, and refuses a new one from an address that
//! already holds [`ConnectionLimits::per_ip`]. Outbound connections, which
//! the node chose to make, are not counted against an address. A handshake
//! that never finishes holds its slots for at most the transport's
//! connection timeout (10 s, libp2p's default).
//!
//! Every limit is a `weft.toml` setting; 0 turns one off.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, connection_limits};

/// Default [`ConnectionLimits::max_connections`]: 256. A node holds a
/// connection to each configured peer and to each node that dials it, and
/// gossipsub keeps at most 12 of them in its mesh (in the propagation
/// benchmark each node dials 3). 256 leaves room for a hub that a couple of
/// hundred sites peer with, and caps what a flood of connections can take.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;

/// Default [`ConnectionLimits::per_peer`]: 3. A node needs one connection
/// to a peer; two nodes that dial each other at the same moment briefly
/// hold two, and two nodes behind NAT that did so through a relay need a
/// third for the direct connection a hole punch makes (the relayed ones
/// are closed once it has settled, [`crate::relay`]).
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 3;

/// Default [`ConnectionLimits::per_ip`]: 8. A site runs one node, at most a
/// few behind one NAT address: 8 lets four nodes share an address with
/// two connections each, while one host minting peer ids holds at most 8
/// of the [`DEFAULT_MAX_CONNECTIONS`] slots. Meshes on one host (tests, the
/// demo) set it higher or turn it off.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 8;

/// Default [`ConnectionLimits::pending_incoming`]: 64. An honest mesh has
/// few handshakes in flight at once (each peer redials once after a
/// partition heals); 64 bounds the CPU a flood of handshakes can take, and a
/// handshake that stalls frees its slot after the 10 s connection timeout.
pub const DEFAULT_MAX_PENDING_INCOMING: u32 = 64;

/// How many connections the node accepts. 0 turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Established connections in all, inbound and outbound.
    pub max_connections: u32,
    /// Established connections with one peer.
    pub per_peer: u32,
    /// Inbound connections, established or in their handshake, from one
    /// remote IP address.
    pub per_ip: u32,
    /// Inbound connections in their handshake.
    pub pending_incoming: u32,
}

impl Default for ConnectionLimits {
    /// The `DEFAULT_*` constants of this module.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            pending_incoming: DEFAULT_MAX_PENDING_INCOMING,
        }
    }
}

impl ConnectionLimits {
    /// The limits libp2p's `connection_limits` behaviour enforces: all but
    /// the per-IP one.
    pub(crate) fn libp2p(&self) -> connection_limits::ConnectionLimits {
        let limit = |n: u32| (n != 0).then_some(n);
        connection_limits::ConnectionLimits::default()
            .with_max_established(limit(self.max_connections))
            .with_max_established_per_peer(limit(self.per_peer))
            .with_max_pending_incoming(limit(self.pending_incoming))
    }
}

/// Why [`PerIpLimit`] refused a connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ip} already holds {limit} connections, the most one address may hold")]
pub struct IpLimitExceeded {
    /// The remote address.
    pub ip: IpAddr,
    /// The limit it reached.
    pub limit: u32,
}

/// Inbound connections by remote IP address: the bookkeeping of
/// [`PerIpLimit`], with no libp2p in it.
#[derive(Debug, Default)]
pub struct IpCounter {
    limit: u32,
    per_ip: HashMap<IpAddr, u32>,
    by_connection: HashMap<ConnectionId, IpAddr>,
}

impl IpCounter {
    /// A counter that lets each address hold `limit` connections (0: no
    /// limit).
    pub fn new(limit: u32) -> Self {
        IpCounter {
            limit,
            ..IpCounter::default()
        }
    }

    /// Counts connection `id` from `ip`, or refuses it when `ip` already
    /// holds the limit. A connection already counted is not counted again.
    pub fn admit(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), IpLimitExceeded> {
        if self.by_connection.contains_key(&id) {
            return Ok(());
        }
        let held = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.limit != 0 && held >= self.limit {
            return Err(IpLimitExceeded {
                ip,
                limit: self.limit,
            });
        }
        self.per_ip.insert(ip, held + 1);
        self.by_connection.insert(id, ip);
        Ok(())
    }

    /// Forgets connection `id` (closed, or refused after it was counted);
    /// nothing happens for one that was never counted.
    pub fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.by_connection.remove(&id) else {
            return;
        };
        match self.per_ip.get_mut(&ip) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// How many counted connections `ip` holds.
    pub fn held(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }
}

/// The IP address a multiaddr starts with, if it starts with one; an
/// IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4
/// client) as the IPv4 address it maps, so both count as one address.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip).to_canonical()),
        _ => None,
    }
}

/// A network behaviour that refuses an inbound connection from a remote IP
/// address that already holds its limit of connections (see the module
/// doc). It refuses a connection as soon as it is accepted, before the
/// handshake, and adds nothing to the connections it lets through.
#[derive(Debug)]
pub struct PerIpLimit {
    counter: IpCounter,
}

impl PerIpLimit {
    /// A behaviour that lets each address hold `limit` inbound connections
    /// (0: no limit).
    pub fn new(limit: u32) -> Self {
        PerIpLimit {
            counter: IpCounter::new(limit),
        }
    }
}

impl NetworkBehaviour for PerIpLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match ip_of(remote_addr) {
            Some(ip) => self
                .counter
                .admit(connection_id, ip)
                .map_err(ConnectionDenied::new),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Counted when it was pending; `admit` counts it now only if it
        // was not (and refuses it if that would pass the limit).
        if let Some(ip) = ip_of(remote_addr) {
            self.counter
                .admit(connection_id, ip)
                .map_err(ConnectionDenied::new)?;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.counter.release(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn each_address_holds_at_most_the_limit() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let mut c = IpCounter::new(2);
        c.admit(id(1), a).unwrap();
        c.admit(id(2), a).unwrap();
        assert_eq!(c.admit(id(3), a), Err(IpLimitExceeded { ip: a, limit: 2 }));
        // Another address is counted apart.
        c.admit(id(3), b).unwrap();
        assert_eq!((c.held(&a), c.held(&b)), (2, 1));
        // Counting a connection twice changes nothing.
        c.admit(id(1), a).unwrap();
        assert_eq!(c.held(&a), 2);
        // A closed connection frees its slot, once.
        c.release(id(1));
        c.release(id(1));
        assert_eq!(c.held(&a), 1);
        c.admit(id(4), a).unwrap();
        assert!(c.admit(id(5), a).is_err());
        // Releasing one never counted (refused) is harmless.
        c.release(id(5));
        assert_eq!(c.held(&a), 2);
        for n in [2, 3, 4] {
            c.release(id(n));
        }
        assert_eq!((c.held(&a), c.held(&b)), (0, 0));
        assert!(c.per_ip.is_empty() && c.by_connection.is_empty());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mut c = IpCounter::new(0);
        for n in 0..1000 {
            c.admit(id(n), a).unwrap();
        }
        assert_eq!(c.held(&a), 1000);
    }

    #[test]
    fn the_behaviour_counts_from_accept_to_close() {
        let mut b = PerIpLimit::new(1);
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/7101".parse().unwrap();
        let remote: Multiaddr = "/ip4/10.0.0.1/tcp/5000".parse().unwrap();
        let other: Multiaddr = "/ip4/10.0.0.2/tcp/5000".parse().unwrap();
        b.handle_pending_inbound_connection(id(1), &local, &remote)
            .unwrap();
        // A second from the same address is refused while the first is in
        // its handshake, and after it is established.
        assert!(
            b.handle_pending_inbound_connection(id(2), &local, &remote)
                .is_err()
        );
        b.handle_established_inbound_connection(id(1), PeerId::random(), &local, &remote)
            .unwrap();
        let refused = b
            .handle_pending_inbound_connection(id(3), &local, &remote)
            .unwrap_err();
        assert!(
            refused
                .downcast::<IpLimitExceeded>()
                .is_ok_and(|e| e.ip.to_string() == "10.0.0.1")
        );
        b.handle_pending_inbound_connection(id(4), &local, &other)
            .unwrap();
        // The same IPv4 address seen through a dual-stack listener.
        let mapped: Multiaddr = "/ip6/::ffff:10.0.0.1/tcp/5001".parse().unwrap();
        assert!(
            b.handle_pending_inbound_connection(id(7), &local, &mapped)
                .is_err()
        );
        // Addresses that are not IP are not limited.
        let memory: Multiaddr = "/memory/1".parse().unwrap();
        b.handle_pending_inbound_connection(id(5), &local, &memory)
            .unwrap();
        b.handle_pending_inbound_connection(id(6), &local, &memory)
            .unwrap();
        assert_eq!(b.counter.held(&"10.0.0.1".parse().unwrap()), 1);
    }
}
