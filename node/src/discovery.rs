//! Discovery with no special node: how a node started with the address of
//! any one admitted node finds the rest of the mesh, and keeps enough
//! peers for the gossip mesh when some leave for good.
//!
//! Three sources feed one address book ([`Book`]):
//! - **identify**: the listen addresses each admitted peer reports about
//!   itself (so a peer that dialed in is redialed after it drops, and over
//!   QUIC when it has a QUIC address), with the relayed addresses
//!   (`/…/p2p/RELAY/p2p-circuit`) a node behind NAT is reachable at
//!   ([`crate::relay`]);
//! - **Kademlia** among admitted peers ([`kademlia`]): a node adds to its
//!   routing table only the peers it has admitted, with the addresses they
//!   reported, and asks its admitted peers for the peers closest to a
//!   random key when it holds fewer than [`DiscoveryOptions::peers`]
//!   connections ([`Lookups`]);
//! - **mDNS**, off by default, for nodes on one LAN.
//!
//! Rules:
//! - Discovery proposes, admission decides: a peer dialed from the book
//!   must present a valid node certificate like any other, and one that
//!   does not is dropped from the book.
//! - A node dials peers from the book only while it holds fewer than
//!   [`DiscoveryOptions::peers`] connections, and the book holds at most
//!   [`MAX_BOOK`] peers of [`MAX_ADDRS`] addresses each, so a lying peer
//!   can neither make it dial without end nor fill its memory.
//! - A node holds at most twice [`DiscoveryOptions::peers`] peers: above
//!   that, [`to_trim`] picks the newest that no rule keeps, so the
//!   connections a lookup opens do not pile up into a full mesh.
//! - Kademlia carries no state: no records are stored or served (record
//!   and provider inserts are filtered, and none are put). State travels
//!   only as signed updates over gossip and sync.
//! - The DHT speaks its own protocol ([`KAD_PROTOCOL`]), so a weft node
//!   never joins a public DHT.
//!
//! Why Kademlia rather than gossipsub peer exchange: rust-libp2p's
//! gossipsub PX carries peer ids without addresses (signed peer records
//! are not implemented), and it is sent only when a mesh is pruned, which
//! a sparse mesh (degree 3, pruned above 12) rarely does; a node told only
//! of ids could not dial them. Kademlia's answers carry addresses, its
//! lookups run whenever a node needs peers, and with manual inserts its
//! routing table is exactly the admitted peers.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol, kad};
use tokio::time::Instant;

/// The Kademlia protocol of weft meshes.
pub const KAD_PROTOCOL: &str = "/weft/kad/1.0.0";

/// The most peers the address book holds.
pub const MAX_BOOK: usize = 1024;

/// The most addresses the book holds for one peer.
pub const MAX_ADDRS: usize = 8;

/// How many connections a node keeps by discovery by default: the gossip
/// mesh's degree (3) plus room for the peers lazy gossip reaches outside
/// it, well under the mesh's upper bound (12) and the connection limit.
pub const DEFAULT_DISCOVERY_PEERS: u32 = 8;

/// How a node discovers peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// Kademlia lookups among admitted peers (`discovery`).
    pub kademlia: bool,
    /// Dial peers from the book while the node holds fewer connections
    /// than this (`discovery_peers`; 0 dials none).
    pub peers: usize,
    /// mDNS on the local network (`mdns`).
    pub mdns: bool,
    /// Circuit relay, DCUtR and autonat ([`crate::relay`]).
    pub relay: crate::relay::RelayOptions,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            kademlia: true,
            peers: DEFAULT_DISCOVERY_PEERS as usize,
            mdns: false,
            relay: crate::relay::RelayOptions::default(),
        }
    }
}

/// The Kademlia behaviour: [`KAD_PROTOCOL`], manual routing-table inserts
/// (the node task adds admitted peers only), no records kept, no automatic
/// bootstrap (the node task runs its lookups, [`Lookups`]), and server
/// mode from the start (admitted peers answer each other's lookups).
pub fn kademlia(local: PeerId) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    config
        .set_kbucket_inserts(kad::BucketInserts::Manual)
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        .set_periodic_bootstrap_interval(None)
        .set_query_timeout(Duration::from_secs(10))
        .set_parallelism(NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN))
        .set_replication_interval(None)
        .set_publication_interval(None)
        .set_provider_publication_interval(None);
    let mut kad = kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), config);
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// Whether the book should keep `addr`, reported by (or for) a peer whose
/// connection comes from `seen_from` (when known): an address with an IP
/// or a name and TCP or QUIC, or such an address of a relay followed by
/// `/p2p/RELAY/p2p-circuit` (one circuit, no more); no unspecified
/// address, and no loopback address unless the report itself came over
/// loopback.
pub fn dialable(addr: &Multiaddr, seen_from: Option<&Multiaddr>) -> bool {
    let protocols: Vec<Protocol<'_>> = addr.iter().collect();
    match protocols
        .iter()
        .position(|p| matches!(p, Protocol::P2pCircuit))
    {
        None => direct(&protocols, seen_from),
        // The relay's part ends with its peer id; after the circuit, at
        // most the peer's own id.
        Some(i) => {
            let after = &protocols[i + 1..];
            i >= 1
                && matches!(protocols[i - 1], Protocol::P2p(_))
                && after.len() <= 1
                && after.iter().all(|p| matches!(p, Protocol::P2p(_)))
                && direct(&protocols[..i], seen_from)
        }
    }
}

/// [`dialable`] for an address with no circuit in it.
fn direct(protocols: &[Protocol<'_>], seen_from: Option<&Multiaddr>) -> bool {
    let local_report = seen_from.is_none_or(is_loopback);
    let mut it = protocols.iter();
    let host_ok = match it.next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified() && (local_report || !ip.is_loopback()),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified() && (local_report || !ip.is_loopback()),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => true,
        _ => false,
    };
    let transport_ok = match (it.next(), it.next(), it.next()) {
        (Some(Protocol::Tcp(p)), next, None) => {
            *p != 0 && next.is_none_or(|n| matches!(n, Protocol::P2p(_)))
        }
        (Some(Protocol::Udp(p)), Some(Protocol::QuicV1), next) => {
            *p != 0 && next.is_none_or(|n| matches!(n, Protocol::P2p(_)))
        }
        _ => false,
    };
    host_ok && transport_ok && it.next().is_none()
}

/// Whether `addr` is on this host: a loopback IP, or the name `localhost`.
fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        Some(Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n)) => {
            n.eq_ignore_ascii_case("localhost")
        }
        _ => false,
    }
}

/// An address without a trailing `/p2p/PEER`.
fn bare(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// What the book knows of one peer.
#[derive(Clone, Debug)]
struct Entry {
    addrs: Vec<Multiaddr>,
    /// Dials that failed in a row.
    failures: u32,
    /// Not dialed from the book before this.
    next: Instant,
}

/// First wait before a peer whose dial failed is dialed again from the
/// book; it doubles per failure, up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);

/// Longest wait between two dials of a peer from the book.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Failed dials in a row after which a peer leaves the book (until it is
/// reported again).
const MAX_FAILURES: u32 = 8;

/// Peers the node may dial, with their addresses.
#[derive(Debug, Default)]
pub struct Book {
    peers: BTreeMap<PeerId, Entry>,
}

impl Book {
    /// Adds `addrs` for `peer` (those [`dialable`] from `seen_from`),
    /// newest first, at most [`MAX_ADDRS`]; a peer not yet in a full book
    /// is not added. A peer reported again may be dialed at once.
    pub fn learn(
        &mut self,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Multiaddr>,
        seen_from: Option<&Multiaddr>,
        now: Instant,
    ) {
        let fresh: Vec<Multiaddr> = addrs
            .into_iter()
            .map(bare)
            .filter(|a| dialable(a, seen_from))
            .collect();
        if fresh.is_empty() {
            return;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_BOOK {
            return;
        }
        let e = self.peers.entry(peer).or_insert_with(|| Entry {
            addrs: Vec::new(),
            failures: 0,
            next: now,
        });
        for a in fresh.into_iter().rev() {
            e.addrs.retain(|x| *x != a);
            e.addrs.insert(0, a);
        }
        e.addrs.truncate(MAX_ADDRS);
        e.failures = 0;
        e.next = e.next.min(now);
    }

    /// Forgets `peer` (refused, banned, or not a weft node).
    pub fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// The addresses known for `peer`.
    pub fn addrs(&self, peer: &PeerId) -> &[Multiaddr] {
        self.peers.get(peer).map_or(&[], |e| &e.addrs)
    }

    /// A dial of `peer` from the book succeeded.
    pub fn connected(&mut self, peer: &PeerId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.failures = 0;
        }
    }

    /// A dial of `peer` from the book failed: it waits longer before the
    /// next, and leaves the book after [`MAX_FAILURES`] in a row.
    pub fn failed(&mut self, peer: &PeerId, now: Instant) {
        let Some(e) = self.peers.get_mut(peer) else {
            return;
        };
        e.failures += 1;
        if e.failures >= MAX_FAILURES {
            self.peers.remove(peer);
            return;
        }
        let wait = RETRY_MIN
            .saturating_mul(1 << (e.failures - 1).min(16))
            .min(RETRY_MAX);
        e.next = now + wait;
    }

    /// Up to `n` peers to dial now, chosen at random among those `skip`
    /// does not rule out (connected, being dialed, banned…), with their
    /// addresses.
    pub fn pick(
        &self,
        n: usize,
        now: Instant,
        skip: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        if n == 0 {
            return Vec::new();
        }
        let mut ready: Vec<(&PeerId, &Entry)> = self
            .peers
            .iter()
            .filter(|(p, e)| e.next <= now && !skip(p))
            .collect();
        // A partial Fisher–Yates shuffle: the first n are a random choice.
        for i in 0..ready.len().min(n) {
            let j = i + (getrandom::u64().unwrap_or(0) as usize) % (ready.len() - i);
            ready.swap(i, j);
        }
        ready
            .into_iter()
            .take(n)
            .map(|(p, e)| (*p, e.addrs.clone()))
            .collect()
    }

    /// How many peers the book holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// First wait between two lookups while a node holds fewer connections
/// than it wants; it doubles up to [`LOOKUP_MAX`], and starts again after
/// a peer is lost.
const LOOKUP_MIN: Duration = Duration::from_secs(1);

/// Longest wait between two lookups while a node wants more peers.
const LOOKUP_MAX: Duration = Duration::from_secs(30);

/// Wait between two lookups of a node that has the peers it wants: they
/// refresh its routing table.
const LOOKUP_REFRESH: Duration = Duration::from_secs(300);

/// When the node runs its next Kademlia lookup (`Id` names a running
/// lookup: kad's query id).
#[derive(Debug)]
pub struct Lookups<Id = kad::QueryId> {
    next: Instant,
    backoff: Duration,
    running: Option<Id>,
}

impl<Id: PartialEq + Copy> Lookups<Id> {
    /// The first lookup as soon as the routing table has a peer.
    pub fn new(now: Instant) -> Self {
        Lookups {
            next: now,
            backoff: LOOKUP_MIN,
            running: None,
        }
    }

    /// Whether a lookup should start now. None runs while another does.
    pub fn due(&self, now: Instant) -> bool {
        self.running.is_none() && now >= self.next
    }

    /// A lookup started; the next one comes after the backoff (doubled)
    /// when the node wants more peers, or after [`LOOKUP_REFRESH`].
    pub fn started(&mut self, id: Id, now: Instant, wants_more: bool) {
        self.running = Some(id);
        if wants_more {
            self.next = now + self.backoff;
            self.backoff = (self.backoff * 2).min(LOOKUP_MAX);
        } else {
            self.next = now + LOOKUP_REFRESH;
        }
    }

    /// Whether `id` is the running lookup; if so it has finished.
    pub fn finished(&mut self, id: Id) -> bool {
        if self.running == Some(id) {
            self.running = None;
            true
        } else {
            false
        }
    }

    /// A peer was lost, or newly admitted: look again soon.
    pub fn soon(&mut self, now: Instant) {
        self.backoff = LOOKUP_MIN;
        self.next = self.next.min(now + LOOKUP_MIN);
    }
}

/// How long a new connection is left alone before [`to_trim`] may close
/// its peer: its admission, identify, a Kademlia query and a gossip GRAFT
/// are over by then.
pub const TRIM_GRACE: Duration = Duration::from_secs(20);

/// A connected peer, as [`to_trim`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connected {
    /// The peer.
    pub peer: PeerId,
    /// When its newest connection opened.
    pub since: Instant,
    /// Whether a connection to it runs through a relay.
    pub relayed: bool,
    /// Whether a rule keeps it whatever the count: named by `--peer`, in a
    /// gossip mesh with this node, a relay holding its reservation, or
    /// connected only by its own dials (the dialer closes).
    pub kept: bool,
}

/// The peers to close so that at most `high` stay: newest first, never
/// one that is kept, reached through a relay, or connected for less than
/// [`TRIM_GRACE`]. Fewer than asked when too few may go.
pub fn to_trim(peers: &[Connected], high: usize, now: Instant) -> Vec<PeerId> {
    let excess = peers.len().saturating_sub(high);
    if excess == 0 {
        return Vec::new();
    }
    let mut may_go: Vec<&Connected> = peers
        .iter()
        .filter(|c| !c.kept && !c.relayed && now.duration_since(c.since) >= TRIM_GRACE)
        .collect();
    may_go.sort_by(|a, b| b.since.cmp(&a.since).then(a.peer.cmp(&b.peer)));
    may_go.into_iter().take(excess).map(|c| c.peer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_reachable_addresses_are_kept() {
        let wan = ma("/ip4/203.0.113.9/tcp/7101");
        assert!(dialable(&ma("/ip4/203.0.113.9/tcp/7101"), Some(&wan)));
        assert!(dialable(
            &ma("/ip4/203.0.113.9/udp/7101/quic-v1"),
            Some(&wan)
        ));
        assert!(dialable(&ma("/dns4/site-a.example/tcp/7101"), Some(&wan)));
        assert!(!dialable(&ma("/ip4/127.0.0.1/tcp/7101"), Some(&wan)));
        assert!(dialable(
            &ma("/ip4/127.0.0.1/tcp/7101"),
            Some(&ma("/ip4/127.0.0.1/tcp/5"))
        ));
        assert!(dialable(
            &ma("/ip4/127.0.0.1/tcp/7101"),
            Some(&ma("/dns4/localhost/tcp/5"))
        ));
        assert!(!dialable(&ma("/ip4/0.0.0.0/tcp/7101"), None));
        assert!(!dialable(&ma("/ip4/203.0.113.9/tcp/0"), None));
        assert!(!dialable(&ma("/ip4/203.0.113.9/udp/7101"), None));
        assert!(!dialable(&ma("/ip4/203.0.113.9/tcp/7101/ws"), None));
        // A relay's circuit: the relay's address, its id, one circuit.
        let r = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        assert!(dialable(
            &ma(&format!("/ip4/203.0.113.9/tcp/7101/p2p/{r}/p2p-circuit")),
            Some(&wan)
        ));
        assert!(dialable(
            &ma(&format!(
                "/ip4/203.0.113.9/udp/7101/quic-v1/p2p/{r}/p2p-circuit/p2p/{r}"
            )),
            None
        ));
        assert!(!dialable(
            &ma("/ip4/203.0.113.9/tcp/7101/p2p-circuit"),
            None
        ));
        assert!(!dialable(&ma(&format!("/p2p/{r}/p2p-circuit")), None));
        assert!(!dialable(
            &ma(&format!("/ip4/127.0.0.1/tcp/7101/p2p/{r}/p2p-circuit")),
            Some(&wan)
        ));
        assert!(!dialable(
            &ma(&format!(
                "/ip4/203.0.113.9/tcp/7101/p2p/{r}/p2p-circuit/p2p/{r}/p2p-circuit"
            )),
            None
        ));
    }

    #[test]
    fn the_book_is_bounded_and_forgets_peers_that_fail() {
        let now = Instant::now();
        let mut book = Book::default();
        let p = PeerId::random();
        let addrs: Vec<Multiaddr> = (1..=20)
            .map(|i| ma(&format!("/ip4/127.0.0.1/tcp/{i}")))
            .collect();
        book.learn(p, addrs, None, now);
        assert_eq!(book.addrs(&p).len(), MAX_ADDRS);
        assert_eq!(book.pick(5, now, |_| false).len(), 1);
        assert!(book.pick(5, now, |q| *q == p).is_empty());
        book.failed(&p, now);
        assert!(
            book.pick(5, now, |_| false).is_empty(),
            "waits after a failure"
        );
        assert_eq!(book.pick(5, now + RETRY_MIN, |_| false).len(), 1);
        for _ in 1..MAX_FAILURES {
            book.failed(&p, now);
        }
        assert!(book.is_empty());
        for i in 0..MAX_BOOK + 10 {
            book.learn(
                PeerId::random(),
                [ma(&format!("/ip4/10.0.0.1/tcp/{}", i + 1))],
                None,
                now,
            );
        }
        assert_eq!(book.len(), MAX_BOOK);
        assert_eq!(book.pick(3, now, |_| false).len(), 3);
    }

    #[test]
    fn lookups_back_off_while_wanting_and_refresh_when_full() {
        let t0 = Instant::now();
        let mut l: Lookups<u32> = Lookups::new(t0);
        assert!(l.due(t0));
        l.started(1, t0, true);
        assert!(!l.due(t0 + LOOKUP_MAX), "one lookup at a time");
        assert!(!l.finished(2));
        assert!(l.finished(1));
        assert!(!l.due(t0), "waits its backoff");
        assert!(l.due(t0 + LOOKUP_MIN));
        l.started(2, t0 + LOOKUP_MIN, true);
        l.finished(2);
        assert!(!l.due(t0 + LOOKUP_MIN * 2), "the backoff doubled");
        assert!(l.due(t0 + LOOKUP_MIN * 3));
        l.soon(t0 + LOOKUP_MIN);
        assert!(
            l.due(t0 + LOOKUP_MIN * 2),
            "a lost peer makes it look again soon"
        );
        l.started(3, t0, false);
        l.finished(3);
        assert!(!l.due(t0 + LOOKUP_MAX));
        assert!(l.due(t0 + LOOKUP_REFRESH));
    }

    #[test]
    fn trimming_closes_the_newest_free_peers_down_to_the_bound() {
        let t0 = Instant::now();
        let later = t0 + TRIM_GRACE * 3;
        let peer = |age_s: u64, relayed: bool, kept: bool| Connected {
            peer: PeerId::random(),
            since: later - Duration::from_secs(age_s),
            relayed,
            kept,
        };
        let old = peer(50, false, false);
        let newer = peer(40, false, false);
        let newest = peer(30, false, false);
        let kept = peer(25, false, true);
        let relayed = peer(25, true, false);
        let young = peer(5, false, false);
        let all = vec![
            old.clone(),
            newer.clone(),
            newest.clone(),
            kept,
            relayed,
            young,
        ];
        // At or under the bound: nothing goes.
        assert!(to_trim(&all, 6, later).is_empty());
        assert!(to_trim(&all, 10, later).is_empty());
        // Two over: the two newest of those that may go.
        assert_eq!(to_trim(&all, 4, later), vec![newest.peer, newer.peer]);
        // Far over: only the three that may go, never the kept, the
        // relayed or the young.
        assert_eq!(
            to_trim(&all, 0, later),
            vec![newest.peer, newer.peer, old.peer]
        );
        // Before the grace has passed for anyone, nobody goes.
        assert!(to_trim(&all, 0, t0).is_empty());
    }
}
