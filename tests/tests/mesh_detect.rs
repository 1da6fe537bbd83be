//! Detection across sites on real nodes: three nodes in one process share
//! signed detection summaries on gossipsub (`weft/summaries/v1`).
//!
//! - A probe spread over the three nodes (twelve denied requests over
//!   twelve secrets at each, under every node's own floors: no node's
//!   local detector alerts) is flagged by the mesh view, and with
//!   quarantines allowed by the trust root, the prober is denied at every
//!   node within a second of the first alert. The same probe at one node
//!   only is not flagged.
//! - Summaries published on the topic by a node that is not admitted (a
//!   certificate it signed itself, or another node's), or forged in a
//!   certified node's name, are refused (rejected on gossipsub) and change
//!   nothing: a summary that would have flagged a principal, had it been
//!   signed by its node, flags no one. The control, the same summary signed
//!   by the node it names, does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use weft_node::daemon::NodeHandle;
use weft_node::keyfile;
use weft_node::layout::NodeDir;
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::summary::{PrincipalSummary, SignedSummary, Summary, pair_bits, sketch_bit};
use weft_protocol::summary_gossip::SummaryGossip;
use weft_protocol::trust::{NodeCert, QuarantineLimits, SignedNodeCert};
use weft_tests::mesh::{
    Author, Fixture, addr, authorize, authorize_body, eventually, http_status, init_logs, now, push,
};

const SLOT_MS: u64 = 10_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn alerts(node: &NodeHandle) -> Result<Vec<Value>> {
    let v: Value = reqwest::get(format!("{}/v1/anomalies", node.api_url()))
        .await?
        .json()
        .await?;
    Ok(v["alerts"].as_array().cloned().unwrap_or_default())
}

async fn alerts_on(node: &NodeHandle, who: &str) -> Result<Vec<Value>> {
    Ok(alerts(node)
        .await?
        .into_iter()
        .filter(|a| a["principal"] == who)
        .collect())
}

/// The node's mesh view in `/v1/status`.
async fn mesh_view(node: &NodeHandle) -> Result<Value> {
    let st = http_status(node).await?;
    Ok(st["anomalies"]["mesh"].clone())
}

/// `who` editing `resource`: denied by the mesh's policy (views only).
async fn edit(node: &NodeHandle, who: &str, resource: &str) -> Result<()> {
    let (code, body) = authorize_body(
        node,
        &json!({
            "principal": who,
            "action": r#"Action::"edit""#,
            "resource": resource,
        }),
    )
    .await?;
    ensure!(code == 200 && body["decision"] == "deny", "{code} {body}");
    Ok(())
}

/// Three certified nodes, each connected to the other two, under a root
/// that lets nodes quarantine, with one policy: anyone may view anything.
/// Returns them and their directories once every node has heard every
/// node's summary.
async fn mesh(fx: &Fixture) -> Result<Vec<(NodeHandle, std::path::PathBuf)>> {
    let (a, da) = fx.spawn("a", true, &[]).await?;
    let (b, db) = fx.spawn("b", true, &[addr(&a)]).await?;
    let (c, dc) = fx.spawn("c", true, &[addr(&a), addr(&b)]).await?;
    let nodes = [&a, &b, &c];
    for n in nodes {
        eventually(Duration::from_secs(15), "every node admitted", || async {
            Ok(n.status()
                .await?
                .peers
                .iter()
                .filter(|p| p.admitted)
                .count()
                == 2)
        })
        .await?;
    }
    let mut author = Author::new(fx);
    push(
        &a,
        author.bundle_policy(
            "main",
            r#"permit(principal, action == Action::"view", resource);"#,
        )?,
    )
    .await?;
    for n in nodes {
        eventually(Duration::from_secs(15), "the bundle everywhere", || async {
            Ok(authorize(n, r#"User::"w""#).await?["decision"] == "allow")
        })
        .await?;
    }
    // Every node decides something in each slot until every node's view has
    // heard from all three.
    eventually(
        Duration::from_secs(40),
        "summaries from every site",
        || async {
            let mut all = true;
            for n in nodes {
                authorize(n, r#"User::"w""#).await?;
                all &= mesh_view(n).await?["sites"] == 3;
            }
            Ok(all)
        },
    )
    .await?;
    Ok(vec![(a, da), (b, db), (c, dc)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_spread_over_three_nodes_is_flagged_and_contained_everywhere() -> Result<()> {
    init_logs();
    let fx = Fixture::with_quarantine(QuarantineLimits {
        allowed: true,
        max_ttl_secs: 3600,
        max_per_node_per_hour: 10,
    })?;
    let nodes = mesh(&fx).await?;
    let all: Vec<&NodeHandle> = nodes.iter().map(|(n, _)| n).collect();

    // Mallory: twelve denied edits over twelve secrets at each node, all at
    // once. Eve: the same twelve at one node only.
    let mallory = r#"User::"mallory""#;
    let eve = r#"User::"eve""#;
    let probe = all.iter().enumerate().flat_map(|(i, n)| {
        (0..12)
            .map(move |k| async move { edit(n, mallory, &format!(r#"Secret::"s{i}-{k}""#)).await })
    });
    let started = now_ms();
    for r in futures::future::join_all(probe).await {
        r?;
    }
    for k in 0..12 {
        edit(all[0], eve, &format!(r#"Secret::"s0-{k}""#)).await?;
    }
    eprintln!("the probe took {} ms", now_ms() - started);

    // The first alert anywhere, then the prober denied everywhere.
    let (at_node, alert) = 'wait: loop {
        for (i, n) in all.iter().enumerate() {
            if let Some(a) = alerts_on(n, mallory).await?.pop() {
                break 'wait (i, a);
            }
        }
        ensure!(
            now_ms() < started + 2 * SLOT_MS + 10_000,
            "no alert on mallory two slots after the probe"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let alert_ms = alert["at_ms"].as_u64().context("the alert's time")?;
    loop {
        let mut denied = 0;
        for n in &all {
            let d = authorize(n, mallory).await?;
            if d["decision"] == "deny" {
                ensure!(d["quarantined"] == true, "{d}");
                denied += 1;
            }
        }
        if denied == all.len() {
            break;
        }
        ensure!(
            now_ms() < alert_ms + 5_000,
            "mallory still allowed somewhere 5 s after the alert"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let contained_ms = now_ms().saturating_sub(alert_ms);
    eprintln!(
        "mesh alert at node {at_node} {} ms after the probe began ({}: {}); mallory denied at all three nodes {contained_ms} ms after the alert",
        alert_ms.saturating_sub(started),
        alert["signal"],
        alert["reason"]
    );
    ensure!(
        contained_ms <= 1_000,
        "contained {contained_ms} ms after the alert"
    );
    ensure!(
        ["mesh_denies", "deny_spread"].contains(&alert["signal"].as_str().unwrap_or("")),
        "{alert}"
    );

    // Give every node's view the rest of the slot, then look at what each
    // raised: mesh alerts only, none by a node's own detector, and nothing
    // on eve.
    tokio::time::sleep(Duration::from_millis(SLOT_MS + 500)).await;
    // Each node waits its own turn to quarantine on a mesh alert, and one
    // that finds an order in force issues none.
    let (mut issued, mut unneeded) = (0, 0);
    for n in &all {
        let st = http_status(n).await?;
        issued += st["anomalies"]["quarantines_issued"].as_u64().unwrap_or(0);
        unneeded += st["anomalies"]["quarantines_unneeded"]
            .as_u64()
            .unwrap_or(0);
    }
    eprintln!("quarantines issued {issued}, not needed {unneeded}");
    ensure!(issued >= 1, "no node issued the quarantine");
    for (i, n) in all.iter().enumerate() {
        for a in alerts_on(n, mallory).await? {
            ensure!(
                a["signal"].is_string() && a.get("floor").is_none(),
                "node {i} raised a local alert: {a}"
            );
        }
        let on_eve = alerts_on(n, eve).await?;
        ensure!(on_eve.is_empty(), "node {i}: {on_eve:#?}");
        let view = mesh_view(n).await?;
        eprintln!("node {i}'s mesh view: {view}");
        ensure!(view["summaries"]["accepted"].as_u64() > Some(0), "{view}");
        ensure!(view["summaries"]["refused"] == 0, "{view}");
    }
    let metrics = reqwest::get(format!("{}/metrics", all[0].api_url()))
        .await?
        .text()
        .await?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"weft_detect_summaries_total{outcome="accepted"}"#)),
        "no summary counter in /metrics"
    );

    for (n, _) in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

/// During a partition each side scores on the sites it still hears from:
/// with c cut off from a and b, sixteen denied edits at each of the three
/// (48 in all, 16 per node) are flagged on the a-b side, which sees 32 at
/// two sites, and not at c, which sees its own 16 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_of_a_partition_scores_on_what_reaches_it() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let nodes = mesh(&fx).await?;
    let (a, b, c) = (&nodes[0].0, &nodes[1].0, &nodes[2].0);
    let peer = |n: &NodeHandle| -> Result<libp2p::PeerId> { Ok(n.node_id().to_string().parse()?) };
    for (x, y) in [(a, c), (b, c)] {
        x.block(peer(y)?).await?;
        y.block(peer(x)?).await?;
    }
    for (n, expected) in [(a, 1), (b, 1), (c, 0)] {
        eventually(Duration::from_secs(10), "the partition", || async {
            Ok(n.status()
                .await?
                .peers
                .iter()
                .filter(|p| p.admitted)
                .count()
                == expected)
        })
        .await?;
    }

    let mallory = r#"User::"mallory""#;
    let all = [a, b, c];
    let probe = all.iter().enumerate().flat_map(|(i, n)| {
        (0..16)
            .map(move |k| async move { edit(n, mallory, &format!(r#"Secret::"p{i}-{k}""#)).await })
    });
    let started = now_ms();
    for r in futures::future::join_all(probe).await {
        r?;
    }
    for n in [a, b] {
        eventually(
            Duration::from_secs(2 * SLOT_MS / 1000 + 10),
            "the a-b side flags mallory",
            || async { Ok(!alerts_on(n, mallory).await?.is_empty()) },
        )
        .await?;
        let seen = alerts_on(n, mallory).await?;
        eprintln!(
            "flagged {} ms after the probe began: {}",
            seen[0]["at_ms"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(started),
            seen[0]["reason"]
        );
        ensure!(seen[0]["signal"] == "mesh_denies", "{seen:#?}");
        ensure!(
            seen[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("at 2 sites in the window")),
            "{seen:#?}"
        );
    }
    // c has had every slot end since the probe, and heard nothing of it.
    while now_ms() < started + 2 * SLOT_MS + 1_000 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at_c = alerts_on(c, mallory).await?;
    ensure!(at_c.is_empty(), "c flagged mallory alone: {at_c:#?}");

    for (n, _) in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

/// A summary of `node`'s current slot in which `who` was denied 40 edits
/// over 40 secrets.
fn probe_summary(node: NodeId, who: &str) -> Summary {
    let mut resources = [0u64; 4];
    let mut pairs = [0u64; 4];
    for k in 0..40 {
        let b = sketch_bit(&format!(r#"Secret::"x{k}""#), 256);
        resources[b / 64] |= 1 << (b % 64);
    }
    for p in pair_bits(r#"Action::"edit""#, r#"Secret::"x0""#) {
        pairs[p / 64] |= 1 << (p % 64);
    }
    let a = sketch_bit(r#"Action::"edit""#, 64);
    Summary {
        node,
        slot_start_ms: now_ms() / SLOT_MS * SLOT_MS,
        slot_ms: SLOT_MS as u32,
        dropped: 0,
        principals: vec![PrincipalSummary {
            principal: who.into(),
            requests: 40,
            denies: 40,
            token_failures: 0,
            resources,
            actions: [1 << a],
            pairs,
        }],
    }
}

fn cert_of(dir: &std::path::Path) -> Result<SignedNodeCert> {
    Ok(SignedNodeCert::from_bytes(&std::fs::read(
        NodeDir::new(dir).cert(),
    )?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_unadmitted_summaries_are_refused_and_change_nothing() -> Result<()> {
    init_logs();
    let fx = Fixture::with_quarantine(QuarantineLimits {
        allowed: true,
        max_ttl_secs: 3600,
        max_per_node_per_hour: 10,
    })?;
    let nodes = mesh(&fx).await?;
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    let (c, c_dir) = (&nodes[2].0, &nodes[2].1);
    let c_key = keyfile::read(&NodeDir::new(c_dir).key())?;
    let c_cert = cert_of(c_dir)?;

    // b serves both victims once: one denied edit each.
    let (v1, v2) = (r#"User::"victim1""#, r#"User::"victim2""#);
    edit(b, v1, r#"Secret::"x0""#).await?;
    edit(b, v2, r#"Secret::"x0""#).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = mesh_view(b).await?;

    // Published through a (which checks nothing it publishes itself):
    let rogue = SecretKey::from_seed([42; 32]);
    let rogue_node = NodeId::new(rogue.public());
    let self_signed = SignedNodeCert::sign(
        &NodeCert {
            node: rogue_node,
            name: "rogue".into(),
            issuer: rogue.public(),
            issued: now(),
            expires: now() + 3600,
        },
        &rogue,
    );
    let forgeries = [
        // a node that is not admitted, with a certificate it made itself;
        SummaryGossip {
            summary: SignedSummary::sign(&probe_summary(rogue_node, v1), &rogue),
            cert: self_signed,
        },
        // the same node, sent with c's certificate;
        SummaryGossip {
            summary: SignedSummary::sign(&probe_summary(rogue_node, v1), &rogue),
            cert: c_cert.clone(),
        },
        // and a summary in c's name, with c's certificate, signed by the
        // rogue key.
        {
            let mut forged = SignedSummary::sign(&probe_summary(c.node_id(), v1), &rogue);
            forged.node = c.node_id();
            SummaryGossip {
                summary: forged,
                cert: c_cert.clone(),
            }
        },
    ];
    // The control first (a is penalized for the forgeries after): the same
    // summary, on victim2, signed by c, flags victim2 at b.
    let genuine = SummaryGossip {
        summary: SignedSummary::sign(&probe_summary(c.node_id(), v2), &c_key),
        cert: c_cert.clone(),
    };
    a.gossip_raw_summary(genuine.to_bytes()).await?;
    eventually(
        Duration::from_secs(5),
        "the control flags victim2 at b",
        || async { Ok(!alerts_on(b, v2).await?.is_empty()) },
    )
    .await?;
    let control = alerts_on(b, v2).await?;
    ensure!(control[0]["signal"] == "mesh_denies", "{control:#?}");
    let after_control = mesh_view(b).await?;
    ensure!(
        after_control["summaries"]["accepted"].as_u64() > before["summaries"]["accepted"].as_u64(),
        "{after_control}"
    );

    for f in &forgeries {
        a.gossip_raw_summary(f.to_bytes()).await?;
    }
    let refused_before = after_control["summaries"]["refused"].as_u64().unwrap_or(0);
    eventually(Duration::from_secs(5), "b refuses all three", || async {
        Ok(mesh_view(b).await?["summaries"]["refused"].as_u64() >= Some(refused_before + 3))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mesh_view(b).await?;
    eprintln!(
        "b's mesh view before: {before}\nafter the control: {after_control}\nafter the forgeries: {after}"
    );
    ensure!(
        after["summaries"]["refused"].as_u64() == Some(refused_before + 3),
        "{after}"
    );
    ensure!(after["sites"] == 3, "a site was added: {after}");
    let on_v1 = alerts_on(b, v1).await?;
    ensure!(
        on_v1.is_empty(),
        "a forged summary flagged victim1: {on_v1:#?}"
    );
    ensure!(
        authorize(b, v1).await?["decision"] == "allow",
        "victim1 quarantined"
    );
    // c refused the two of another node (the one in its own name it
    // ignores as its own).
    let at_c = mesh_view(c).await?;
    ensure!(at_c["summaries"]["refused"].as_u64() >= Some(2), "{at_c}");

    for (n, _) in nodes {
        n.shutdown().await?;
    }
    Ok(())
}
