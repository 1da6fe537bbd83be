//! The node's libp2p transports: TCP (Noise, Yamux) and QUIC side by side,
//! under a DNS resolver, beside the circuit relay client, with the bounds
//! on connects and handshakes and the byte counters every connection feeds.
//!
//! Layout:
//! ```text
//! or
//! ├── relay client (/…/p2p/RELAY/p2p-circuit[/p2p/PEER]: a stream through a relay,
//! │   over one of the connections below) → Noise → Yamux (≤ HANDSHAKE_TIMEOUT)
//! └── DNS (/dns4, /dns6, /dns: resolved when dialing; system resolver, /etc/hosts first)
//!     └── or
//!         ├── TCP (nodelay, connect ≤ CONNECT_TIMEOUT) → counted → Noise → Yamux (≤ HANDSHAKE_TIMEOUT)
//!         └── QUIC v1 (/udp/PORT/quic-v1: TLS 1.3 and streams built in) → counted streams
//! ```
//!
//! Rules:
//! - The bounds apply to both transports. TCP: a connect that has not
//!   completed within [`CONNECT_TIMEOUT`] fails, and the handshakes above it
//!   must finish within [`HANDSHAKE_TIMEOUT`]. QUIC: connecting and the
//!   handshake are one exchange (the TLS handshake rides in the first
//!   packets, done in one round trip), so an outgoing QUIC dial must finish
//!   within [`CONNECT_TIMEOUT`], for the same reason (a fresh dial beats
//!   the stack's backed-off retransmissions after a heal); an incoming one
//!   within [`HANDSHAKE_TIMEOUT`].
//! - Which peer may stay is not decided here: the node certificate is
//!   checked above every transport alike (`task`, the replica's admission).
//! - [`Traffic`] counts TCP bytes on the socket (Noise and Yamux overhead
//!   included) and QUIC bytes on its streams (QUIC's own headers and
//!   encryption not included). A relayed connection is counted once, as
//!   the bytes of the connection to the relay that carries it.
//! - Names in `listen` addresses are resolved once, at start
//!   ([`resolve_listen`]); names in peer addresses at every dial, so a
//!   site whose address changes is found again.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent};
use libp2p::core::transport::timeout::TransportTimeout;
use libp2p::core::transport::{Boxed, OrTransport, Transport as _};
use libp2p::core::upgrade;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, dns, identity, noise, quic, relay, tcp, yamux};

/// How long a TCP connect may take before the dial fails (the handshakes
/// above it are not included), and how long an outgoing QUIC dial may take
/// in all. One second: a SYN (or a QUIC Initial) answered at all is
/// answered within a round trip; one that is not (a partition, a dead
/// host) is better sent again soon by a new dial than by the kernel's (or
/// QUIC's) backed-off retransmissions.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a dial may take from the TCP connect to an established,
/// authenticated and multiplexed connection, and how long an incoming
/// QUIC handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which transport carries a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCP, with Noise and Yamux.
    Tcp,
    /// QUIC v1.
    Quic,
    /// A circuit through a relay (`/p2p-circuit`), with Noise and Yamux,
    /// over the relay's connections (TCP or QUIC).
    Relayed,
}

impl Kind {
    /// The transport of an address: relayed if it has `/p2p-circuit`, else
    /// QUIC if it has `/quic-v1`, else TCP.
    pub fn of(addr: &Multiaddr) -> Kind {
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            Kind::Relayed
        } else if addr.iter().any(|p| matches!(p, Protocol::QuicV1)) {
            Kind::Quic
        } else {
            Kind::Tcp
        }
    }

    /// `tcp`, `quic` or `relayed`, as `/v1/status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Quic => "quic",
            Kind::Relayed => "relayed",
        }
    }
}

/// Whether a connection at this remote address goes through a relay
/// (`/p2p-circuit`): `relayed`, else `direct`.
pub fn path_of(addr: &Multiaddr) -> &'static str {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        "relayed"
    } else {
        "direct"
    }
}

/// Bytes the node's connections have carried since it started (see the
/// module doc for what is counted on each transport). Cheap: two relaxed
/// atomic adds per read or write.
#[derive(Debug, Default)]
pub struct Traffic {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Traffic {
    /// Bytes received on every connection so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes sent on every connection so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

/// A stream that adds what it reads and writes to a [`Traffic`].
struct Counted<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.traffic
                .bytes_in
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.traffic
                .bytes_in
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.traffic
                .bytes_out
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.traffic
                .bytes_out
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A stream muxer whose streams add what they carry to a [`Traffic`]:
/// QUIC's, which has no byte stream below it to count.
struct CountedMuxer<M> {
    inner: M,
    traffic: Arc<Traffic>,
}

impl<M> StreamMuxer for CountedMuxer<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = Counted<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let traffic = self.traffic.clone();
        Pin::new(&mut self.inner)
            .poll_inbound(cx)
            .map_ok(|inner| Counted { inner, traffic })
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let traffic = self.traffic.clone();
        Pin::new(&mut self.inner)
            .poll_outbound(cx)
            .map_ok(|inner| Counted { inner, traffic })
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// TCP (with `nodelay`, connects bounded by [`CONNECT_TIMEOUT`]) counted
/// into `traffic`, then Noise and Yamux within [`HANDSHAKE_TIMEOUT`].
fn counted_tcp(
    key: &identity::Keypair,
    traffic: Arc<Traffic>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Error> {
    Ok(TransportTimeout::with_outgoing_timeout(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
        CONNECT_TIMEOUT,
    )
    .map(move |inner, _| Counted {
        inner,
        traffic: traffic.clone(),
    })
    .upgrade(upgrade::Version::V1Lazy)
    .authenticate(noise::Config::new(key)?)
    .multiplex(yamux::Config::default())
    .timeout(HANDSHAKE_TIMEOUT)
    .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
    .boxed())
}

/// QUIC v1, outgoing dials bounded by [`CONNECT_TIMEOUT`] and incoming
/// handshakes by [`HANDSHAKE_TIMEOUT`], its streams counted into `traffic`.
fn counted_quic(key: &identity::Keypair, traffic: Arc<Traffic>) -> Boxed<(PeerId, StreamMuxerBox)> {
    let mut config = quic::Config::new(key);
    config.handshake_timeout = HANDSHAKE_TIMEOUT;
    TransportTimeout::with_outgoing_timeout(quic::tokio::Transport::new(config), CONNECT_TIMEOUT)
        .map(move |(peer, muxer), _| {
            let muxer = CountedMuxer {
                inner: muxer,
                traffic: traffic.clone(),
            };
            (peer, StreamMuxerBox::new(muxer))
        })
        .boxed()
}

/// The relay client's transport (from `libp2p::relay::client::new`), with
/// Noise and Yamux on each circuit, within [`HANDSHAKE_TIMEOUT`].
fn relayed(
    key: &identity::Keypair,
    relay: relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Error> {
    Ok(relay
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(HANDSHAKE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// The node's transport: the relay client beside TCP and QUIC under DNS
/// (see the module doc), its bytes counted into `traffic`. The resolver is
/// the system's (`/etc/resolv.conf`, with `/etc/hosts` looked up first); on
/// a host whose resolver configuration cannot be read, names resolve
/// through `/etc/hosts` only, which is logged.
pub fn build(
    key: &identity::Keypair,
    traffic: Arc<Traffic>,
    relay: relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Error> {
    let both = || -> Result<_, Error> {
        Ok(OrTransport::new(
            counted_quic(key, traffic.clone()),
            counted_tcp(key, traffic.clone())?,
        )
        .map(|either, _| either.into_inner()))
    };
    let direct = match dns::tokio::Transport::system(both()?) {
        Ok(resolving) => resolving.boxed(),
        Err(err) => {
            tracing::warn!(%err, "cannot read the system's DNS configuration: peer names resolve through /etc/hosts only");
            dns::tokio::Transport::custom(
                both()?,
                dns::ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                dns::ResolverOpts::default(),
            )
            .boxed()
        }
    };
    Ok(OrTransport::new(relayed(key, relay)?, direct)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// A listen address with its name resolved: `/dns4/NAME`, `/dns6/NAME`
/// or `/dns/NAME` becomes `/ip4/…` or `/ip6/…` (the first address the
/// system resolver gives of the kind asked for; `/dns` takes either). Any
/// other address is returned as it is. The error names the address.
pub async fn resolve_listen(addr: &Multiaddr) -> Result<Multiaddr, String> {
    let mut out = Multiaddr::empty();
    for p in addr.iter() {
        let (name, want): (_, fn(&IpAddr) -> bool) = match &p {
            Protocol::Dns4(n) => (n, IpAddr::is_ipv4),
            Protocol::Dns6(n) => (n, IpAddr::is_ipv6),
            Protocol::Dns(n) => (n, |_| true),
            other => {
                out.push(other.clone());
                continue;
            }
        };
        let found = tokio::net::lookup_host((name.as_ref(), 0))
            .await
            .map_err(|e| format!("cannot resolve {name} in the listen address {addr}: {e}"))?
            .map(|s| s.ip())
            .find(want)
            .ok_or_else(|| {
                format!("{name} in the listen address {addr} has no address of the kind asked for")
            })?;
        out.push(match found {
            IpAddr::V4(ip) => Protocol::Ip4(ip),
            IpAddr::V6(ip) => Protocol::Ip6(ip),
        });
    }
    Ok(out)
}

/// Whether the node can listen on `addr`: `/ip4`, `/ip6`, `/dns4`,
/// `/dns6` or `/dns`, then `/tcp/PORT` or `/udp/PORT/quic-v1`, and
/// nothing else. The error says what is expected.
pub fn check_listen(addr: &Multiaddr) -> Result<Kind, String> {
    let mut it = addr.iter();
    let host_ok = matches!(
        it.next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
                | Protocol::Dns(_)
        )
    );
    let kind = match (it.next(), it.next(), it.next()) {
        (Some(Protocol::Tcp(_)), None, None) => Some(Kind::Tcp),
        (Some(Protocol::Udp(_)), Some(Protocol::QuicV1), None) => Some(Kind::Quic),
        _ => None,
    };
    match kind {
        Some(kind) if host_ok => Ok(kind),
        _ => Err(format!(
            "{addr} is not an address to listen on: expected /ip4/ADDR, /ip6/ADDR, /dns4/NAME, /dns6/NAME or /dns/NAME, then /tcp/PORT or /udp/PORT/quic-v1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn kinds_and_paths_of_addresses() {
        assert_eq!(Kind::of(&ma("/ip4/10.0.0.1/tcp/7101")), Kind::Tcp);
        assert_eq!(Kind::of(&ma("/ip4/10.0.0.1/udp/7101/quic-v1")), Kind::Quic);
        assert_eq!(Kind::of(&ma("/dns4/a.example/udp/1/quic-v1")), Kind::Quic);
        assert_eq!(path_of(&ma("/ip4/10.0.0.1/tcp/7101")), "direct");
        let circuit = ma(
            "/ip4/10.0.0.1/udp/7101/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        );
        assert_eq!(Kind::of(&circuit), Kind::Relayed);
        assert_eq!(Kind::of(&circuit).as_str(), "relayed");
        assert_eq!(
            path_of(&ma(
                "/ip4/10.0.0.1/tcp/7101/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            )),
            "relayed"
        );
    }

    #[test]
    fn listen_addresses_are_checked() {
        assert_eq!(check_listen(&ma("/ip4/0.0.0.0/tcp/7101")), Ok(Kind::Tcp));
        assert_eq!(
            check_listen(&ma("/ip6/::/udp/7101/quic-v1")),
            Ok(Kind::Quic)
        );
        assert_eq!(check_listen(&ma("/dns4/localhost/tcp/0")), Ok(Kind::Tcp));
        for bad in [
            "/ip4/0.0.0.0/udp/7101",
            "/ip4/0.0.0.0/tcp/7101/ws",
            "/tcp/7101",
            "/ip4/0.0.0.0/udp/7101/quic",
        ] {
            let e = check_listen(&ma(bad)).unwrap_err();
            assert!(e.contains(bad) && e.contains("quic-v1"), "{e}");
        }
    }

    #[tokio::test]
    async fn listen_names_resolve_through_the_hosts_file() {
        let a = resolve_listen(&ma("/dns4/localhost/tcp/0")).await.unwrap();
        assert_eq!(a, ma("/ip4/127.0.0.1/tcp/0"));
        let q = resolve_listen(&ma("/dns/localhost/udp/5/quic-v1"))
            .await
            .unwrap();
        assert_eq!(Kind::of(&q), Kind::Quic);
        let same = resolve_listen(&ma("/ip4/127.0.0.1/tcp/1")).await.unwrap();
        assert_eq!(same, ma("/ip4/127.0.0.1/tcp/1"));
        let e = resolve_listen(&ma("/dns6/localhost/tcp/0")).await;
        // localhost may or may not have an IPv6 address here; when it has
        // none, the error names the address.
        if let Err(e) = e {
            assert!(e.contains("/dns6/localhost/tcp/0"), "{e}");
        }
    }
}
