//! Real nodes over loopback TCP, each with its own sled store in a temporary
//! directory: gossip to 20 nodes, late joiners and restarts catching up by
//! anti-entropy, state restored from sled before any peer is reached, damaged
//! records fetched again, admission (no certificate, revoked node), forged
//! gossip, and a partition and its heal.
//!
//! `RUST_LOG=weft_node=debug cargo test -p weft-tests --test mesh` shows the
//! nodes' logs.

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::{Result, ensure};
use cedar_policy::EntityUid;
use libp2p::Multiaddr;
use weft_crdt::{ChangeHash, PolicyView, Request, decide};
use weft_node::daemon::{NodeHandle, spawn_node};
use weft_node::layout::NodeDir;
use weft_node::store::Store;
use weft_tests::mesh::{
    Author, Fixture, addr, admitted, authorize, eventually, heads, heads_are, http_status,
    init_logs, push, submit,
};

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(20);

fn allows(view: &PolicyView, principal: &str) -> bool {
    let uid = |s: &str| EntityUid::from_str(s).expect("a valid uid");
    let req = Request::new(uid(principal), uid(r#"Action::"view""#), uid(r#"Doc::"d""#));
    decide(view, &req).allow
}

async fn shutdown_all(nodes: Vec<NodeHandle>) -> Result<()> {
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

async fn all_heads_are(nodes: &[NodeHandle], expected: &[String]) -> Result<bool> {
    for n in nodes {
        if !heads_are(n, expected).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `n` has a connection to the node `id`.
async fn connected_to(n: &NodeHandle, id: &str) -> Result<bool> {
    Ok(n.status().await?.peers.iter().any(|p| p.node_id == id))
}

/// Whether any node of `side` is connected to any node of `other`.
async fn crosses(side: &[NodeHandle], other: &[NodeHandle]) -> Result<bool> {
    for n in side {
        for o in other {
            if connected_to(n, &o.node_id().to_string()).await? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn all_admitted(nodes: &[NodeHandle], min: usize) -> Result<bool> {
    for n in nodes {
        if admitted(n).await? < min {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_pushed_to_one_of_twenty_nodes_is_applied_at_all() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..20usize {
        // A binary tree (each node dials its parent) plus a link to the
        // previous node: connected, at most a few hops deep.
        let mut peers: Vec<Multiaddr> = Vec::new();
        if i > 0 {
            peers.push(addr(&nodes[(i - 1) / 2]));
        }
        if i > 1 && (i - 1) / 2 != i - 1 {
            peers.push(addr(&nodes[i - 1]));
        }
        let (n, _) = fx.spawn(&format!("n{i}"), true, &peers).await?;
        nodes.push(n);
    }
    let t = eventually(LONG, "every node admitted by its peers", || {
        let nodes = &nodes;
        async move { all_admitted(nodes, 1).await }
    })
    .await?;
    eprintln!("20 nodes admitted each other in {t:?}");
    // Let gossipsub form its meshes (one or two heartbeats).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut author = Author::new(&fx);
    let id = push(&nodes[7], author.bundle("main", r#"User::"alice""#)?).await?;
    let expected = vec![id];
    let t = eventually(LONG, "the update at all 20 nodes", || {
        let (nodes, expected) = (&nodes, &expected);
        async move { all_heads_are(nodes, expected).await }
    })
    .await?;
    eprintln!("one update reached all 20 nodes in {t:?}");

    for n in &nodes {
        ensure!(
            allows(&n.view(), r#"User::"alice""#),
            "the view was not swapped in"
        );
    }
    let s = http_status(&nodes[19]).await?;
    ensure!(s["updates"] == 1, "{s}");
    ensure!(s["bundles"][0]["name"] == "main", "{s}");
    ensure!(
        s["bundles"][0]["signers"] == serde_json::json!(["alice"]),
        "{s}"
    );
    ensure!(s["bundles"][0]["policies"] == 1, "{s}");
    ensure!(s["trust_root"]["expired"] == false, "{s}");
    shutdown_all(nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_and_restarted_nodes_catch_up_by_anti_entropy() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (b, b_dir) = fx.spawn("b", true, &[addr(&a)]).await?;
    let (c, _) = fx.spawn("c", true, &[addr(&b)]).await?;
    let mut author = Author::new(&fx);
    push(&a, author.bundle("main", r#"User::"alice""#)?).await?;
    let id2 = push(&a, author.revoke(r#"User::"mallory""#)?).await?;
    let expected = vec![id2];
    eventually(SHORT, "the first updates at a, b and c", || {
        let nodes = [&a, &b, &c];
        let expected = &expected;
        async move {
            for n in nodes {
                if !heads_are(n, expected).await? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await?;

    // A node that joins late gets everything by sync (gossip replays nothing).
    let (d, _) = fx.spawn("d", true, &[addr(&c)]).await?;
    let t = eventually(SHORT, "the late joiner to catch up", || {
        let (d, expected) = (&d, &expected);
        async move { heads_are(d, expected).await }
    })
    .await?;
    eprintln!("a late joiner caught up in {t:?}");
    ensure!(d.status().await?.stats.synced >= 2);

    // A node that was down while an update was made catches up on restart.
    b.shutdown().await?;
    let id3 = push(&a, author.bundle("main", r#"User::"bob""#)?).await?;
    let b = spawn_node(fx.options(b_dir, &[addr(&a)])).await?;
    let expected = vec![id3];
    eventually(SHORT, "the restarted node to catch up", || {
        let (b, expected) = (&b, &expected);
        async move { heads_are(b, expected).await }
    })
    .await?;
    ensure!(b.status().await?.updates == 3);
    shutdown_all(vec![a, b, c, d]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_its_state_before_it_reaches_any_peer() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (dir, _) = fx.node_dir("solo", true)?;
    let mut opts = fx.options(dir.clone(), &[]);
    // Snapshot every 3 updates, so the restart loads a snapshot and verifies
    // the two updates after it.
    opts.snapshot_every = 3;
    let node = spawn_node(opts.clone()).await?;
    let mut author = Author::new(&fx);
    push(&node, author.bundle("main", r#"User::"alice""#)?).await?;
    for who in ["mallory", "eve", "trudy"] {
        push(&node, author.revoke(&format!(r#"User::"{who}""#))?).await?;
    }
    push(&node, author.bundle("ops", r#"User::"bob""#)?).await?;
    let before = node.status().await?;
    ensure!(before.updates == 5 && before.revocations == 3);
    node.shutdown().await?;

    // No peers at all: whatever it has, it has from its own store. The
    // snapshot was written off the node's thread; the shutdown waited for it.
    let node = spawn_node(opts.clone()).await?;
    let loaded = node.load_report();
    ensure!(
        loaded.from_snapshot == 3 && loaded.verified == 2 && !loaded.snapshot_dropped,
        "{loaded:?}"
    );
    let after = node.status().await?;
    ensure!(after.peers.is_empty());
    ensure!(after.updates == 5, "{after:?}");
    ensure!(after.heads == before.heads && after.digest == before.digest);
    ensure!(after.revocations == 3 && after.bundles.len() == 2);
    ensure!(after.bundles[0].signers == ["alice"], "{after:?}");
    ensure!(allows(&node.view(), r#"User::"alice""#));
    ensure!(!allows(&node.view(), r#"User::"mallory""#));
    // Decisions come from local state alone.
    let d = authorize(&node, r#"User::"alice""#).await?;
    ensure!(
        d["decision"] == "allow" && d["state"] == before.digest,
        "{d}"
    );
    let d = authorize(&node, r#"User::"mallory""#).await?;
    ensure!(d["decision"] == "deny" && d["revoked"] == true, "{d}");
    node.shutdown().await?;

    // A third start, from the snapshot alone (taken at the second start).
    let node = spawn_node(opts).await?;
    ensure!(node.status().await?.digest == before.digest);
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_update_is_acknowledged_durably_and_released_by_its_dependency() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (dir, _) = fx.node_dir("solo", true)?;
    let node = spawn_node(fx.options(dir.clone(), &[])).await?;
    let mut author = Author::new(&fx);
    let u1 = author.bundle("main", r#"User::"alice""#)?;
    let u2 = author.revoke(r#"User::"mallory""#)?;
    let (code, body) = submit(&node, u2).await?;
    ensure!(code == 202 && body["status"] == "held", "{code} {body}");
    let id2 = body["id"].as_str().unwrap_or_default().to_owned();
    node.shutdown().await?;

    let node = spawn_node(fx.options(dir, &[])).await?;
    let s = node.status().await?;
    ensure!(s.held == 1 && s.updates == 0, "{s:?}");
    push(&node, u1).await?;
    let s = node.status().await?;
    ensure!(s.held == 0 && s.updates == 2 && s.heads == [id2], "{s:?}");
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_dropped_and_fetched_again_from_peers() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (b, b_dir) = fx.spawn("b", true, &[addr(&a)]).await?;
    let mut author = Author::new(&fx);
    push(&a, author.bundle("main", r#"User::"alice""#)?).await?;
    push(&a, author.revoke(r#"User::"mallory""#)?).await?;
    let id3 = push(&a, author.revoke(r#"User::"eve""#)?).await?;
    let expected = vec![id3.clone()];
    eventually(SHORT, "b to hold every update", || {
        let (b, expected) = (&b, &expected);
        async move { heads_are(b, expected).await }
    })
    .await?;
    b.shutdown().await?;

    // Damage b's record of the last update.
    {
        let store = Store::open(&NodeDir::new(&b_dir).store())?;
        let hash: ChangeHash = id3.parse()?;
        store.put_update(&hash, b"WEFT\x10\x01 not an update")?;
        store.flush()?;
    }
    let b = spawn_node(fx.options(b_dir.clone(), &[])).await?;
    let s = b.status().await?;
    ensure!(s.updates == 2, "the damaged record was not dropped: {s:?}");
    b.shutdown().await?;

    // With a peer again, anti-entropy fetches it.
    let b = spawn_node(fx.options(b_dir, &[addr(&a)])).await?;
    eventually(SHORT, "b to fetch the dropped update again", || {
        let (b, expected) = (&b, &expected);
        async move { heads_are(b, expected).await }
    })
    .await?;
    shutdown_all(vec![a, b]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_certificate_is_refused() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (x, _) = fx.spawn("x", false, &[addr(&a)]).await?;
    // x answers locally (autonomy) but nothing it has reaches a.
    let mut author = Author::new(&fx);
    let (code, body) = submit(&x, author.bundle("evil", r#"User::"eve""#)?).await?;
    ensure!(code == 202 && body["status"] == "applied", "{code} {body}");
    // Give x time to dial, present nothing valid, be refused, and redial.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = a.status().await?;
    ensure!(s.peers.iter().all(|p| !p.admitted), "{s:?}");
    ensure!(
        s.updates == 0,
        "an update from an uncertified node was applied: {s:?}"
    );
    shutdown_all(vec![a, x]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_disconnected_and_cannot_rejoin() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (b, _) = fx.spawn("b", true, &[addr(&a)]).await?;
    let (c, _) = fx.spawn("c", true, &[addr(&a), addr(&b)]).await?;
    eventually(SHORT, "a, b and c to admit each other", || {
        let nodes = [&a, &b, &c];
        async move {
            for n in nodes {
                if admitted(n).await? < 2 {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await?;

    let c_id = c.node_id().to_string();
    let mut author = Author::new(&fx);
    push(&a, author.revoke(&c_id)?).await?;
    let connected_to_c = |n| connected_to(n, &c_id);
    eventually(SHORT, "a and b to drop c", || async {
        Ok(!connected_to_c(&a).await? && !connected_to_c(&b).await?)
    })
    .await?;
    ensure!(a.status().await?.stats.bans >= 1 && b.status().await?.stats.bans >= 1);
    // c keeps redialing; it is refused at the transport.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(!connected_to_c(&a).await? && !connected_to_c(&b).await?);

    // A node that learns of the revocation bans c too, whichever comes first.
    let (d, _) = fx.spawn("d", true, &[addr(&a), addr(&c)]).await?;
    eventually(SHORT, "d to learn the revocation and ban c", || async {
        let s = d.status().await?;
        Ok(s.revocations == 1 && s.stats.bans >= 1 && !connected_to_c(&d).await?)
    })
    .await?;
    shutdown_all(vec![a, b, c, d]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_is_rejected_and_its_sender_penalized() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (b, _) = fx.spawn("b", true, &[addr(&a)]).await?;
    eventually(SHORT, "a and b to admit each other", || async {
        Ok(admitted(&a).await? == 1 && admitted(&b).await? == 1)
    })
    .await?;
    let a_id = a.node_id().to_string();
    let score_of_a = |s: &weft_node::control::Status| {
        s.peers
            .iter()
            .find(|p| p.node_id == a_id)
            .and_then(|p| p.score)
    };

    // 1. Garbage, from an admitted node (gossip_raw bypasses every check).
    let mut n = 0u8;
    eventually(SHORT, "a to see b on the topic", || {
        n += 1;
        let bytes = vec![0xEE, n, 1, 2, 3];
        let a = &a;
        async move { Ok(a.gossip_raw(bytes).await.is_ok()) }
    })
    .await?;
    eventually(SHORT, "b to reject the garbage and penalize a", || async {
        let s = b.status().await?;
        Ok(s.stats.refused.get("malformed").copied().unwrap_or(0) >= 1
            && score_of_a(&s).is_some_and(|x| x < 0.0))
    })
    .await?;

    // 2. A tampered update: a valid one with a byte of its signature flipped.
    let mut author = Author::new(&fx);
    let mut forged = author.bundle("main", r#"User::"eve""#)?;
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    a.gossip_raw(forged).await?;
    eventually(SHORT, "b to reject the tampered update", || async {
        let s = b.status().await?;
        Ok(s.stats.refused.get("bad_signature").copied().unwrap_or(0) >= 1)
    })
    .await?;
    ensure!(b.status().await?.updates == 0);

    // 3. A third strike: b bans a.
    a.gossip_raw(vec![0xEE, 0xFF, 0xFF]).await?;
    eventually(SHORT, "b to ban a", || async {
        let s = b.status().await?;
        Ok(s.stats.bans == 1 && s.peers.iter().all(|p| p.node_id != a_id))
    })
    .await?;
    shutdown_all(vec![a, b]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_of_a_partition_keep_working_and_converge_after_the_heal() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    // west: 0 1 2, east: 3 4 5; a chain plus two links across.
    let links: [&[usize]; 6] = [&[], &[0], &[1], &[2, 0], &[3], &[4, 2]];
    for (i, l) in links.iter().enumerate() {
        let peers: Vec<Multiaddr> = l.iter().map(|j| addr(&nodes[*j])).collect();
        let (n, _) = fx.spawn(&format!("p{i}"), true, &peers).await?;
        nodes.push(n);
    }
    eventually(SHORT, "the mesh to form", || {
        let nodes = &nodes;
        async move { all_admitted(nodes, 1).await }
    })
    .await?;

    let (west, east) = nodes.split_at(3);
    for w in west {
        for e in east {
            w.block(e.peer_id()).await?;
            e.block(w.peer_id()).await?;
        }
    }
    eventually(SHORT, "the partition to cut every link across", || async {
        Ok(!crosses(west, east).await?)
    })
    .await?;

    // Each side accepts its own updates.
    let u1 = push(
        &west[0],
        Author::new(&fx).bundle("west", r#"User::"alice""#)?,
    )
    .await?;
    let u2 = push(&east[1], Author::new(&fx).bundle("east", r#"User::"bob""#)?).await?;
    eventually(SHORT, "each side to converge on its own update", || {
        let (u1, u2) = (vec![u1.clone()], vec![u2.clone()]);
        async move { Ok(all_heads_are(west, &u1).await? && all_heads_are(east, &u2).await?) }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(all_heads_are(west, std::slice::from_ref(&u1)).await?);
    ensure!(all_heads_are(east, std::slice::from_ref(&u2)).await?);
    // And keeps enforcing what it has.
    for w in west {
        ensure!(allows(&w.view(), r#"User::"alice""#) && !allows(&w.view(), r#"User::"bob""#));
    }
    for e in east {
        ensure!(allows(&e.view(), r#"User::"bob""#) && !allows(&e.view(), r#"User::"alice""#));
    }

    // Heal.
    for w in west {
        for e in east {
            w.unblock(e.peer_id()).await?;
            e.unblock(w.peer_id()).await?;
        }
    }
    let both = vec![u1, u2];
    let t = eventually(LONG, "every node to hold both updates", || {
        let (nodes, both) = (&nodes, &both);
        async move { all_heads_are(nodes, both).await }
    })
    .await?;
    eprintln!("the partition healed in {t:?}");
    let first = heads(&nodes[0]).await?;
    for n in &nodes {
        ensure!(heads(n).await? == first);
        ensure!(allows(&n.view(), r#"User::"alice""#) && allows(&n.view(), r#"User::"bob""#));
    }
    shutdown_all(nodes).await
}
