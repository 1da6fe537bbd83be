//! Names and transports on real nodes over loopback: peers reached by
//! `/dns4` names over TCP and QUIC, a listen address given by name, QUIC
//! preferred for a peer that has both (whoever dialed, whatever address
//! it was given), each peer's transport, address and
//! route in `/v1/status`, and admission gating QUIC connections exactly as
//! it gates TCP ones.
//!
//! Names resolve through /etc/hosts (`localhost`): nothing system-wide is
//! written, and no DNS server is needed.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use weft_node::control::PeerStatus;
use weft_node::daemon::{NodeHandle, spawn_node};
use weft_tests::mesh::{Author, Fixture, eventually, http_status, init_logs, submit};

fn ma(s: &str) -> Multiaddr {
    s.parse().expect("a valid multiaddr")
}

/// Listens on loopback TCP and QUIC.
const BOTH: [&str; 2] = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];

async fn start(
    fx: &Fixture,
    name: &str,
    certified: bool,
    listen: &[&str],
    peers: &[Multiaddr],
) -> Result<NodeHandle> {
    let (dir, _) = fx.node_dir(name, certified)?;
    let mut o = fx.options(dir, peers);
    o.listen = listen.iter().map(|a| ma(a)).collect();
    spawn_node(o).await
}

/// `node`'s listen address of the transport `quic` or not, with its host
/// written as `/dns4/localhost`.
fn by_name(node: &NodeHandle, quic: bool) -> Result<Multiaddr> {
    let a = node
        .listen_addrs()
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
        .context("no listen address of that transport")?;
    Ok(a.iter()
        .map(|p| match p {
            Protocol::Ip4(_) => Protocol::Dns4("localhost".into()),
            other => other,
        })
        .collect())
}

/// Whether `node` is admitted by, and connected to, `other` over QUIC
/// (status shows a peer's oldest open connection: once a TCP one is
/// closed, the QUIC one).
async fn quic_only(node: &NodeHandle, other: &NodeHandle) -> Result<bool> {
    Ok(admitted_peer(node, other)
        .await?
        .is_some_and(|p| p.transport.as_deref() == Some("quic")))
}

/// `node`'s view of the peer `other`, once admitted.
async fn admitted_peer(node: &NodeHandle, other: &NodeHandle) -> Result<Option<PeerStatus>> {
    let id = other.node_id().to_string();
    Ok(node
        .status()
        .await?
        .peers
        .into_iter()
        .find(|p| p.node_id == id && p.admitted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_reached_by_name_over_tcp_and_quic() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    // One hub per transport (a node that has a QUIC address is reached
    // over QUIC in the end, whatever address it was dialed at).
    let hub = start(&fx, "hub", true, &["/dns4/localhost/tcp/0"], &[]).await?;
    // The hubs join up: the QUIC-only one dials the TCP one.
    let hub_addr = hub.listen_addrs()[0].clone();
    let hubq = start(
        &fx,
        "hubq",
        true,
        &["/ip4/127.0.0.1/udp/0/quic-v1"],
        &[hub_addr],
    )
    .await?;
    ensure!(
        hub.listen_addrs()[0]
            .to_string()
            .starts_with("/ip4/127.0.0.1/tcp/"),
        "a listen name is resolved at start: {:?}",
        hub.listen_addrs()
    );
    let tcp_name = by_name(&hub, false)?;
    let quic_name = by_name(&hubq, true)?;
    // Discovery connects the four; each spoke is given one hub by name,
    // and that connection is what is looked at.
    let over_tcp = start(
        &fx,
        "over-tcp",
        true,
        &["/ip4/127.0.0.1/tcp/0"],
        &[tcp_name],
    )
    .await?;
    let over_quic = start(
        &fx,
        "over-quic",
        true,
        &["/dns4/localhost/udp/0/quic-v1"],
        &[quic_name],
    )
    .await?;
    eventually(Duration::from_secs(20), "both spokes admitted", || async {
        Ok(admitted_peer(&over_tcp, &hub).await?.is_some()
            && admitted_peer(&over_quic, &hubq).await?.is_some())
    })
    .await?;
    let t = admitted_peer(&over_tcp, &hub).await?.context("hub")?;
    let q = admitted_peer(&over_quic, &hubq).await?.context("hubq")?;
    ensure!(t.transport.as_deref() == Some("tcp"), "{t:?}");
    ensure!(q.transport.as_deref() == Some("quic"), "{q:?}");
    for p in [&t, &q] {
        ensure!(p.route.as_deref() == Some("direct"), "{p:?}");
        let a = p.address.as_deref().unwrap_or_default();
        ensure!(
            a.starts_with("/dns4/localhost/"),
            "the address dialed: {p:?}"
        );
    }
    ensure!(
        q.address
            .as_deref()
            .unwrap_or_default()
            .ends_with("/quic-v1"),
        "{q:?}"
    );
    // The same in the JSON of GET /v1/status.
    let hubq_id = hubq.node_id().to_string();
    let s = http_status(&over_quic).await?;
    let peer = s["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["node_id"] == hubq_id.as_str()))
        .context("the hub in /v1/status")?;
    ensure!(
        peer["transport"] == "quic" && peer["route"] == "direct",
        "{peer}"
    );
    // Its only peer joins its update mesh at a heartbeat (every 1 s).
    eventually(
        Duration::from_secs(10),
        "the hub in the update mesh",
        || async {
            Ok(admitted_peer(&over_quic, &hubq)
                .await?
                .is_some_and(|p| p.update_mesh))
        },
    )
    .await?;

    // An update crosses QUIC and TCP.
    let mut author = Author::new(&fx);
    let (code, body) = submit(&over_quic, author.bundle("main", r#"User::"alice""#)?).await?;
    ensure!(code == 202, "{code} {body}");
    let nodes = [hub, hubq, over_tcp, over_quic];
    eventually(
        Duration::from_secs(10),
        "the update at every node",
        || async {
            for n in &nodes {
                if n.status().await?.updates != 1 {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_has_both_transports_is_reached_over_quic() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let hub = start(&fx, "hub", true, &BOTH, &[]).await?;
    let hub_tcp = by_name(&hub, false)?;
    // Both are given the hub's TCP address only; they find each other by
    // discovery, with both of each other's addresses.
    let a = start(&fx, "a", true, &BOTH, std::slice::from_ref(&hub_tcp)).await?;
    let b = start(&fx, "b", true, &BOTH, std::slice::from_ref(&hub_tcp)).await?;
    eventually(
        Duration::from_secs(30),
        "a and b admitted each other",
        || async {
            Ok(admitted_peer(&a, &b).await?.is_some() && admitted_peer(&b, &a).await?.is_some())
        },
    )
    .await?;
    // Whoever dialed, and whichever transport won a dial's race, the
    // peers end up on QUIC: b, and the hub that a was given by its TCP
    // address.
    let t = eventually(
        Duration::from_secs(20),
        "a and b on QUIC with each other and the hub",
        || async {
            Ok(quic_only(&a, &b).await?
                && quic_only(&b, &a).await?
                && quic_only(&a, &hub).await?
                && quic_only(&b, &hub).await?)
        },
    )
    .await?;
    eprintln!("every pair on QUIC after {t:?}");
    for n in [hub, a, b] {
        n.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_certificate_is_refused_over_quic() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let a = start(&fx, "a", true, &["/ip4/127.0.0.1/udp/0/quic-v1"], &[]).await?;
    let x = start(
        &fx,
        "x",
        false,
        &["/ip4/127.0.0.1/udp/0/quic-v1"],
        &[a.listen_addrs()[0].clone()],
    )
    .await?;
    // x answers locally (autonomy) but nothing it has reaches a.
    let mut author = Author::new(&fx);
    let (code, body) = submit(&x, author.bundle("evil", r#"User::"eve""#)?).await?;
    ensure!(code == 202 && body["status"] == "applied", "{code} {body}");
    // The QUIC connection itself is made: admission, not the transport,
    // refuses x.
    let x_id = x.node_id().to_string();
    eventually(
        Duration::from_secs(10),
        "x connected to a over QUIC",
        || async {
            Ok(a.status()
                .await?
                .peers
                .iter()
                .any(|p| p.node_id == x_id && p.transport.as_deref() == Some("quic")))
        },
    )
    .await?;
    // Give x time to present nothing valid, be refused, and redial.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = a.status().await?;
    ensure!(s.peers.iter().all(|p| !p.admitted), "{s:?}");
    // Every byte a carried went over QUIC, and was counted.
    let (bytes_in, bytes_out) = a.traffic();
    ensure!(bytes_in > 0 && bytes_out > 0, "QUIC traffic not counted");
    ensure!(
        s.updates == 0,
        "an update from an uncertified node was applied over QUIC: {s:?}"
    );
    for n in [a, x] {
        n.shutdown().await?;
    }
    Ok(())
}
