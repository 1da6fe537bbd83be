//! The relay serves admitted peers only, on real nodes over loopback: a
//! node with `relay = true`, an admitted node that reserves a slot on it
//! and is reached through it, and an outsider (a libp2p peer with a fresh
//! key and no node certificate) whose reservation and circuit are refused
//! by the relay itself (`RESOURCE_LIMIT_EXCEEDED`, counted in the relay's
//! status), while it is still connected.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use weft_node::daemon::{NodeHandle, spawn_node};
use weft_tests::mesh::{Fixture, eventually, init_logs};

/// A node that relays (`relay = true`), or not; its reachability is not
/// probed, so a node that is not a relay keeps listening through relays.
async fn start(fx: &Fixture, name: &str, relay: bool, peers: &[Multiaddr]) -> Result<NodeHandle> {
    let (dir, _) = fx.node_dir(name, true)?;
    let mut o = fx.options(dir, peers);
    o.discovery.relay.server = relay;
    o.discovery.relay.probe_reachability = false;
    spawn_node(o).await
}

/// `node`'s first listen address with its `/p2p/` id.
fn full_addr(node: &NodeHandle) -> Multiaddr {
    node.listen_addrs()[0]
        .clone()
        .with(Protocol::P2p(peer_of(node)))
}

fn peer_of(node: &NodeHandle) -> PeerId {
    node.node_id()
        .to_string()
        .parse()
        .expect("a node id is a peer id")
}

/// An outsider: libp2p over TCP with the relay client, a fresh key, no
/// certificate, no weft protocol at all.
fn outsider() -> Result<libp2p::Swarm<libp2p::relay::client::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_, relay| relay)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admitted_peers_reserve_and_open_circuits_on_a_relay() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let relay = start(&fx, "relay", true, &[]).await?;
    let r = peer_of(&relay);
    let a = start(&fx, "a", false, &[full_addr(&relay)]).await?;

    // The admitted node reserves a slot and is reachable through the relay.
    eventually(Duration::from_secs(15), "a reservation of a", || async {
        Ok(!a.status().await?.relay.via.is_empty())
    })
    .await?;
    let st = relay.status().await?;
    ensure!(
        st.relay.serving && st.relay.reservations >= 1,
        "{:?}",
        st.relay
    );
    let circuit_to_a = a.status().await?.relay.via[0].parse::<Multiaddr>()?;
    ensure!(
        circuit_to_a.iter().any(|p| p == Protocol::P2p(r))
            && circuit_to_a.iter().any(|p| p == Protocol::P2pCircuit),
        "{circuit_to_a} is not a circuit through the relay"
    );

    // An admitted node given only that circuit reaches a through it.
    let (dir, _) = fx.node_dir("b", true)?;
    let mut o = fx.options(dir, std::slice::from_ref(&circuit_to_a));
    o.discovery.kademlia = false;
    o.discovery.peers = 0;
    o.discovery.relay.probe_reachability = false;
    let b = spawn_node(o).await?;
    let a_id = a.node_id().to_string();
    eventually(
        Duration::from_secs(15),
        "b to admit a through the relay",
        || {
            let (b, a_id) = (&b, &a_id);
            async move {
                Ok(b.status()
                    .await?
                    .peers
                    .iter()
                    .any(|p| p.node_id == *a_id && p.admitted))
            }
        },
    )
    .await?;
    let seen = b
        .status()
        .await?
        .peers
        .into_iter()
        .find(|p| p.node_id == a_id)
        .context("a")?;
    ensure!(
        matches!(
            seen.route.as_deref(),
            Some("relayed" | "direct after hole punch")
        ),
        "b reaches a as {:?} {:?}",
        seen.transport,
        seen.route
    );
    let refused_before = relay.status().await?.relay;

    // The outsider connects to the relay, and while it is still connected
    // (before the admission timeout) asks for a reservation.
    let mut out = outsider()?;
    out.dial(full_addr(&relay))?;
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(SwarmEvent::ConnectionEstablished { peer_id, .. }) = out.next().await
                && peer_id == r
            {
                return;
            }
        }
    })
    .await;
    ensure!(
        connected.is_ok(),
        "the outsider did not connect to the relay"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let on_relay = relay.listen_addrs()[0]
        .clone()
        .with(Protocol::P2p(r))
        .with(Protocol::P2pCircuit);
    let listener = out.listen_on(on_relay)?;
    let refusal = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match out.next().await {
                Some(SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                }) if listener_id == listener => return Some(reason),
                Some(SwarmEvent::NewListenAddr { address, .. }) => {
                    return Some(Err(std::io::Error::other(format!("RESERVED {address}"))));
                }
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .context("the relay never answered the outsider's reservation")?
    .context("the outsider's swarm ended")?;
    let why = format!("{refusal:?}");
    ensure!(
        why.contains("ResourceLimitExceeded"),
        "the outsider's reservation was not refused by the relay: {why}"
    );

    // Nor may it open a circuit to a, which holds a reservation.
    out.dial(circuit_to_a.clone())?;
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match out.next().await {
                Some(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                    return format!("{error:?}");
                }
                Some(SwarmEvent::ConnectionEstablished { peer_id, .. })
                    if peer_id.to_string() == a_id =>
                {
                    return "CONNECTED to a".to_owned();
                }
                Some(_) => {}
                None => return "the swarm ended".to_owned(),
            }
        }
    })
    .await
    .context("the circuit dial neither failed nor connected")?;
    ensure!(
        failed.contains("ResourceLimitExceeded"),
        "the outsider's circuit was not refused by the relay: {failed}"
    );

    // The relay counts both refusals (once it has sent them).
    eventually(
        Duration::from_secs(5),
        "the relay to count both refusals",
        || {
            let (relay, before) = (&relay, &refused_before);
            async move {
                let after = relay.status().await?.relay;
                Ok(after.refused_reservations > before.refused_reservations
                    && after.refused_circuits > before.refused_circuits)
            }
        },
    )
    .await?;
    if a.status()
        .await?
        .peers
        .iter()
        .any(|p| p.peer_id == out.local_peer_id().to_string() && p.admitted)
    {
        bail!("the outsider was admitted");
    }
    Ok(())
}
