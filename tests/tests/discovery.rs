//! Discovery with no special node, on real nodes over loopback: six nodes
//! each given only node 0's address find one another (Kademlia among
//! admitted peers, identify's addresses); node 0 is then stopped for good,
//! and an update pushed to node 1 still reaches every other node, and a
//! node started with only node 2's address joins and gets it. With
//! discovery off, the same start stays a star around node 0: the first
//! test's mesh is discovery's doing. Two nodes given no peer at all find
//! each other by mDNS.
//!
//! `RUST_LOG=weft_node=debug cargo test -p weft-tests --test discovery`
//! shows the nodes' logs.

use std::time::Duration;

use anyhow::{Result, ensure};
use libp2p::Multiaddr;
use weft_node::daemon::{NodeHandle, spawn_node};
use weft_tests::mesh::{Author, Fixture, addr, admitted, eventually, heads_are, init_logs, push};

/// The gossip mesh's degree (`mesh_n` in `weft_node::swarm::gossipsub_config`).
const MESH_DEGREE: usize = 3;

/// Starts node `name` given only `peers`, with discovery on or off.
async fn start(
    fx: &Fixture,
    name: &str,
    peers: &[Multiaddr],
    discovery: bool,
) -> Result<NodeHandle> {
    let (dir, _) = fx.node_dir(name, true)?;
    let mut o = fx.options(dir, peers);
    o.discovery.kademlia = discovery;
    spawn_node(o).await
}

/// Whether every node has admitted at least `min` peers.
async fn all_have(nodes: &[&NodeHandle], min: usize) -> Result<bool> {
    for n in nodes {
        if admitted(n).await? < min {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_given_one_address_find_the_mesh_and_outlive_their_bootstrap() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let n0 = start(&fx, "n0", &[], true).await?;
    let boot = addr(&n0);
    let mut rest = Vec::new();
    for i in 1..6 {
        rest.push(start(&fx, &format!("n{i}"), std::slice::from_ref(&boot), true).await?);
    }
    // Five others each: at least the mesh degree's worth of peers.
    let want = MESH_DEGREE.min(5);
    let t = eventually(
        Duration::from_secs(30),
        "every node admitted by enough peers",
        || {
            let nodes: Vec<&NodeHandle> = std::iter::once(&n0).chain(rest.iter()).collect();
            async move { all_have(&nodes, want).await }
        },
    )
    .await?;
    eprintln!("6 nodes given only node 0's address: each has {want}+ admitted peers after {t:?}");
    for n in &rest {
        let s = n.status().await?;
        let others = s
            .peers
            .iter()
            .filter(|p| p.admitted && p.node_id != n0.node_id().to_string())
            .count();
        ensure!(
            others >= want - 1,
            "a node has {others} peers besides node 0: {s:?}"
        );
    }

    // Node 0 goes away for good.
    n0.shutdown().await?;
    // Gossipsub meshes form on the next heartbeat (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut author = Author::new(&fx);
    let id = push(&rest[0], author.bundle("main", r#"User::"alice""#)?).await?;
    let expected = vec![id];
    let t = eventually(
        Duration::from_secs(5),
        "the update at every remaining node",
        || {
            let (rest, expected) = (&rest, &expected);
            async move {
                for n in rest {
                    if !heads_are(n, expected).await? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;
    eprintln!("with node 0 stopped, an update pushed to node 1 reached nodes 2-5 in {t:?}");

    // A newcomer knows only node 2.
    let late = start(&fx, "n6", &[addr(&rest[1])], true).await?;
    let t = eventually(
        Duration::from_secs(20),
        "the newcomer synced and meshed",
        || {
            let (late, expected) = (&late, &expected);
            async move { Ok(heads_are(late, expected).await? && admitted(late).await? >= want) }
        },
    )
    .await?;
    eprintln!("a node given only node 2's address joined (update and {want}+ peers) in {t:?}");
    late.shutdown().await?;
    for n in rest {
        n.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_discovery_nodes_given_one_address_stay_a_star() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let n0 = start(&fx, "n0", &[], false).await?;
    let boot = addr(&n0);
    let mut rest = Vec::new();
    for i in 1..6 {
        rest.push(start(&fx, &format!("n{i}"), std::slice::from_ref(&boot), false).await?);
    }
    eventually(Duration::from_secs(20), "node 0 admitted by all", || {
        let n0 = &n0;
        async move { Ok(admitted(n0).await? == 5) }
    })
    .await?;
    // Time the discovering mesh needed to connect everyone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in &rest {
        let s = n.status().await?;
        ensure!(
            s.peers.len() == 1 && s.peers[0].node_id == n0.node_id().to_string(),
            "with discovery off a node found a peer besides node 0: {s:?}"
        );
    }
    n0.shutdown().await?;
    for n in rest {
        n.shutdown().await?;
    }
    Ok(())
}

/// Needs a network interface other than loopback that carries multicast
/// (mDNS announces the addresses on it): the nodes listen on every
/// interface for the few seconds the test takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_lan_find_each_other_by_mdns() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let mut nodes = Vec::new();
    for name in ["m0", "m1"] {
        let (dir, _) = fx.node_dir(name, true)?;
        // No peer given and no Kademlia: mDNS alone.
        let mut o = fx.options(dir, &[]);
        o.discovery.kademlia = false;
        o.discovery.mdns = true;
        o.listen = vec!["/ip4/0.0.0.0/tcp/0".parse()?];
        nodes.push(spawn_node(o).await?);
    }
    let t = eventually(
        Duration::from_secs(15),
        "two nodes admitted by mDNS",
        || {
            let nodes = &nodes;
            async move { Ok(admitted(&nodes[0]).await? == 1 && admitted(&nodes[1]).await? == 1) }
        },
    )
    .await?;
    eprintln!("two nodes with no peer given found each other by mDNS in {t:?}");
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}
