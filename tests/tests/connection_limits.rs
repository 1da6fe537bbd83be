//! Connection limits on a real node: bare libp2p clients (TCP, Noise,
//! Yamux, nothing else) on 127.0.0.1 open more connections than the node
//! allows from one address, from one peer and in all. The extra ones are
//! refused, a refused address gets in again once one of its connections
//! closes, and the node keeps serving its API and decisions throughout.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};
use weft_node::daemon::{NodeHandle, spawn_node};
use weft_node::limits::ConnectionLimits;
use weft_node::swarm::libp2p_keypair;
use weft_protocol::identity::SecretKey;
use weft_tests::mesh::{Author, Fixture, addr, authorize, init_logs, push};

/// A libp2p client with no protocols: it only holds connections.
fn client(seed: u8) -> Result<Swarm<dummy::Behaviour>> {
    let key = libp2p_keypair(&SecretKey::from_seed([seed; 32])).map_err(anyhow::Error::msg)?;
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| dummy::Behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build())
}

/// What became of a dial.
#[derive(Debug, PartialEq, Eq)]
enum Dialed {
    /// Established, and still open a second later.
    Open(ConnectionId),
    /// Refused before the handshake finished.
    Refused,
    /// Established, then closed by the node within a second.
    Closed,
}

impl Dialed {
    /// Whether the node turned the connection away, before or after the
    /// handshake (which of the two depends on the limit: an address is
    /// refused on accept, a peer or the total once the peer is known).
    fn turned_away(&self) -> bool {
        !matches!(self, Dialed::Open(_))
    }
}

/// Dials `peer` at `at` (a new connection even if one is open) and
/// watches the connection for a second.
async fn dial(c: &mut Swarm<dummy::Behaviour>, peer: PeerId, at: &Multiaddr) -> Result<Dialed> {
    let opts = DialOpts::peer_id(peer)
        .addresses(vec![at.clone()])
        .condition(PeerCondition::Always)
        .build();
    let id = opts.connection_id();
    c.dial(opts)?;
    let mut open = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let wait = if open {
            // Once open, watch it for a second.
            tokio::time::Instant::now() + Duration::from_secs(1)
        } else {
            deadline
        };
        let event = match tokio::time::timeout_at(wait.min(deadline), c.select_next_some()).await {
            Ok(e) => e,
            Err(_) if open => return Ok(Dialed::Open(id)),
            Err(_) => bail!("no answer to a dial within 10 s"),
        };
        match event {
            SwarmEvent::ConnectionEstablished { connection_id, .. } if connection_id == id => {
                open = true;
            }
            SwarmEvent::ConnectionClosed { connection_id, .. } if connection_id == id => {
                return Ok(Dialed::Closed);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, .. } if connection_id == id => {
                return Ok(Dialed::Refused);
            }
            _ => {}
        }
    }
}

/// Closes connection `id` and waits until it is closed.
async fn close(c: &mut Swarm<dummy::Behaviour>, id: ConnectionId) -> Result<()> {
    ensure!(c.close_connection(id), "connection {id} is not open");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SwarmEvent::ConnectionClosed { connection_id, .. } = c.select_next_some().await
                && connection_id == id
            {
                return;
            }
        }
    })
    .await
    .context("the connection did not close")
}

/// Drives the clients' swarms (their connections run on their own, but
/// events must be taken) while `f` runs.
async fn with_clients<T>(
    clients: &mut [Swarm<dummy::Behaviour>],
    f: impl std::future::Future<Output = T>,
) -> T {
    let drive = async {
        loop {
            let polls = clients.iter_mut().map(|c| c.select_next_some());
            futures::future::select_all(polls.map(Box::pin)).await;
        }
    };
    tokio::select! {
        out = f => out,
        () = drive => unreachable!("the clients' event streams never end"),
    }
}

/// The node still answers: health, and a decision.
async fn serves(node: &NodeHandle) -> Result<()> {
    let health = reqwest::get(format!("{}/healthz", node.api_url())).await?;
    ensure!(
        health.status() == 200,
        "/healthz answered {}",
        health.status()
    );
    let v = authorize(node, r#"User::"alice""#).await?;
    ensure!(v["decision"] == "allow", "{v}");
    Ok(())
}

async fn start(fx: &Fixture, name: &str, limits: ConnectionLimits) -> Result<NodeHandle> {
    let (dir, _) = fx.node_dir(name, true)?;
    let mut opts = fx.options(dir, &[]);
    opts.connections = limits;
    // The clients present no certificate; keep them for the whole test.
    opts.replica.admission_timeout_ms = 600_000;
    let node = spawn_node(opts).await?;
    let mut author = Author::new(fx);
    push(&node, author.bundle("b", r#"User::"alice""#)?).await?;
    Ok(node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limits_are_refused_and_the_node_keeps_serving() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;

    // Per IP: three connections from 127.0.0.1, whoever makes them.
    let node = start(
        &fx,
        "per-ip",
        ConnectionLimits {
            per_ip: 3,
            ..ConnectionLimits::default()
        },
    )
    .await?;
    let (peer, at) = (node.peer_id(), addr(&node));
    let mut clients = (1..=4).map(client).collect::<Result<Vec<_>>>()?;
    let mut open = Vec::new();
    for c in &mut clients[..3] {
        match dial(c, peer, &at).await? {
            Dialed::Open(id) => open.push(id),
            other => bail!("a connection within the limit: {other:?}"),
        }
    }
    let fourth = dial(&mut clients[3], peer, &at).await?;
    ensure!(
        fourth == Dialed::Refused,
        "a fourth from one address: {fourth:?}"
    );
    with_clients(&mut clients, serves(&node)).await?;
    // A closed connection frees its slot.
    close(&mut clients[0], open[0]).await?;
    let mut admitted = false;
    for _ in 0..50 {
        if matches!(dial(&mut clients[3], peer, &at).await?, Dialed::Open(_)) {
            admitted = true;
            break;
        }
    }
    ensure!(
        admitted,
        "the freed slot was never given to another connection"
    );
    let again = dial(&mut clients[0], peer, &at).await?;
    ensure!(
        again == Dialed::Refused,
        "the address is full again: {again:?}"
    );
    with_clients(&mut clients, serves(&node)).await?;
    node.shutdown().await?;

    // Per peer and in all: two connections per peer, three in all.
    let node = start(
        &fx,
        "per-peer",
        ConnectionLimits {
            max_connections: 3,
            per_peer: 2,
            per_ip: 0,
            pending_incoming: 64,
        },
    )
    .await?;
    let (peer, at) = (node.peer_id(), addr(&node));
    let mut clients = (5..=6).map(client).collect::<Result<Vec<_>>>()?;
    for _ in 0..2 {
        let d = dial(&mut clients[0], peer, &at).await?;
        ensure!(
            matches!(d, Dialed::Open(_)),
            "within the per-peer limit: {d:?}"
        );
    }
    let third = dial(&mut clients[0], peer, &at).await?;
    ensure!(third.turned_away(), "a third from one peer: {third:?}");
    let d = dial(&mut clients[1], peer, &at).await?;
    ensure!(matches!(d, Dialed::Open(_)), "the third in all: {d:?}");
    let fourth = dial(&mut clients[1], peer, &at).await?;
    ensure!(fourth.turned_away(), "a fourth in all: {fourth:?}");
    with_clients(&mut clients, serves(&node)).await?;
    node.shutdown().await?;
    Ok(())
}
