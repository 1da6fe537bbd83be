//! Node-issued quarantines across a real mesh: a quarantine reaches every
//! node and denies there; a node that floods quarantines is capped by the
//! trust root's hourly allowance while the mesh keeps serving everyone
//! else; a forged order is refused; an expired one stops denying; operators
//! lift one or make it permanent.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::Value;
use weft_crdt::QuarantineRecord;
use weft_node::daemon::NodeHandle;
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::quarantine::QuarantineOrder;
use weft_protocol::trust::{NodeCert, QuarantineLimits, SignedNodeCert};
use weft_tests::mesh::{Author, Fixture, addr, authorize, eventually, heads, init_logs, now, push};

fn limits() -> QuarantineLimits {
    QuarantineLimits {
        allowed: true,
        max_ttl_secs: 3600,
        max_per_node_per_hour: 3,
    }
}

fn record(ttl: u64) -> QuarantineRecord {
    let t = now();
    QuarantineRecord {
        reason: "deny burst".into(),
        issuer: None,
        issued_at: t,
        expires_at: Some(t + ttl),
        score: Some(0.93),
        evidence: vec!["deny ratio 0.97 (baseline 0.03)".into()],
        lifted: false,
    }
}

async fn denied_everywhere(nodes: &[&NodeHandle], who: &str) -> Result<bool> {
    for n in nodes {
        if authorize(n, who).await?["decision"] != "deny" {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn mesh(fx: &Fixture) -> Result<(NodeHandle, NodeHandle, NodeHandle)> {
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (b, _) = fx.spawn("b", true, &[addr(&a)]).await?;
    let (c, _) = fx.spawn("c", true, &[addr(&b)]).await?;
    let mut author = Author::new(fx);
    push(
        &a,
        author.bundle_policy("main", "permit(principal, action, resource);")?,
    )
    .await?;
    for n in [&a, &b, &c] {
        eventually(Duration::from_secs(15), "the bundle everywhere", || async {
            Ok(authorize(n, r#"User::"w""#).await?["decision"] == "allow")
        })
        .await?;
    }
    Ok((a, b, c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_reaches_every_node_and_a_flood_is_capped() -> Result<()> {
    init_logs();
    let fx = Fixture::with_quarantine(limits())?;
    let (a, b, c) = mesh(&fx).await?;

    // One quarantine: every node denies, with the reason.
    let started = Instant::now();
    a.quarantine(r#"User::"v0""#, record(600)).await?;
    let all = [&a, &b, &c];
    let contained = eventually(Duration::from_secs(10), "v0 denied everywhere", || {
        denied_everywhere(&all, r#"User::"v0""#)
    })
    .await?;
    eprintln!(
        "contained mesh-wide {:?} after the order",
        started.elapsed().min(contained)
    );
    let d = authorize(&c, r#"User::"v0""#).await?;
    ensure!(d["quarantined"] == true, "{d}");
    ensure!(d["quarantine"]["reason"] == "deny burst", "{d}");
    ensure!(d["quarantine"]["issuer"] == a.node_id().to_string(), "{d}");
    // A node that alerts on v0 too issues no second order: v0 is denied
    // everywhere already.
    let again = b.quarantine(r#"User::"v0""#, record(600)).await;
    ensure!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("quarantined already")),
        "{again:?}"
    );

    // A flood: seven more within the hour; the root allows three an hour.
    for i in 1..8 {
        a.quarantine(&format!(r#"User::"v{i}""#), record(600))
            .await?;
    }
    let c_heads_target = heads(&a).await?;
    eventually(Duration::from_secs(10), "c to hold every order", || async {
        Ok(heads(&c).await? == c_heads_target)
    })
    .await?;
    let mut denied = Vec::new();
    for i in 0..8 {
        if authorize(&c, &format!(r#"User::"v{i}""#)).await?["decision"] == "deny" {
            denied.push(i);
        }
    }
    ensure!(denied == vec![0, 1, 2], "honoured: {denied:?}");
    // Everyone else is still served, everywhere.
    for n in [&a, &b, &c] {
        ensure!(authorize(n, r#"User::"w""#).await?["decision"] == "allow");
    }
    let anomalies: Value = reqwest::get(format!("{}/v1/anomalies", c.api_url()))
        .await?
        .json()
        .await?;
    ensure!(anomalies["active_quarantines"] == 3, "{anomalies}");
    let st: Value = reqwest::get(format!("{}/v1/status", a.api_url()))
        .await?
        .json()
        .await?;
    ensure!(st["anomalies"]["active_quarantines"] == 3, "{st}");
    let st_b: Value = reqwest::get(format!("{}/v1/status", b.api_url()))
        .await?
        .json()
        .await?;
    ensure!(st_b["anomalies"]["quarantines_unneeded"] == 1, "{st_b}");
    ensure!(st_b["anomalies"]["quarantines_issued"] == 0, "{st_b}");
    // Peers are listed with the certificate they were admitted with.
    let st_b: Value = reqwest::get(format!("{}/v1/status", b.api_url()))
        .await?
        .json()
        .await?;
    let mut names: Vec<&str> = st_b["peers"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["cert_name"].as_str()).collect())
        .unwrap_or_default();
    names.sort();
    ensure!(names == ["a", "c"], "{st_b}");
    ensure!(
        st_b["peers"][0]["cert_expires"].as_u64() > Some(now()),
        "{st_b}"
    );

    // Operators: lift v0 (built on the node's state), make v1 permanent.
    let mut op = Author::new(&fx);
    op.follow(&a).await?;
    let lift = QuarantineRecord {
        reason: "false positive".into(),
        lifted: true,
        issuer: None,
        issued_at: now(),
        expires_at: None,
        score: None,
        evidence: vec![],
    };
    push(
        &a,
        op.quarantine_at(r#"User::"v0""#, &serde_json::to_string(&lift)?, 0)?,
    )
    .await?;
    push(&a, op.revoke(r#"User::"v1""#)?).await?;
    eventually(
        Duration::from_secs(10),
        "the lift and the revocation at c",
        || async {
            Ok(authorize(&c, r#"User::"v0""#).await?["decision"] == "allow"
                && authorize(&c, r#"User::"v1""#).await?["revoked"] == true)
        },
    )
    .await?;
    // Nor is a revoked principal quarantined: it is denied everywhere.
    let revoked = c.quarantine(r#"User::"v1""#, record(600)).await;
    ensure!(
        revoked
            .as_ref()
            .is_err_and(|e| e.to_string().contains("is revoked")),
        "{revoked:?}"
    );

    for n in [a, b, c] {
        n.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_quarantines_do_not_deny() -> Result<()> {
    init_logs();
    let fx = Fixture::with_quarantine(limits())?;
    let (a, b, c) = mesh(&fx).await?;

    // Expires in two seconds: denies, then lapses on its own.
    a.quarantine(r#"User::"brief""#, record(2)).await?;
    let only_c = [&c];
    eventually(Duration::from_secs(5), "brief denied at c", || {
        denied_everywhere(&only_c, r#"User::"brief""#)
    })
    .await?;
    eventually(Duration::from_secs(10), "brief allowed again", || async {
        Ok(authorize(&c, r#"User::"brief""#).await?["decision"] == "allow")
    })
    .await?;

    // A forged order: a key with a certificate its own author signed (not
    // an operator), gossiped by a node that checks nothing.
    let rogue = SecretKey::from_seed([42; 32]);
    let cert = SignedNodeCert::sign(
        &NodeCert {
            node: NodeId::new(rogue.public()),
            name: "rogue".into(),
            issuer: rogue.public(),
            issued: now(),
            expires: now() + 3600,
        },
        &rogue,
    );
    let mut doc = weft_crdt::PolicyDoc::new();
    let order = QuarantineOrder::issue(
        &mut doc,
        &rogue,
        &cert,
        fx.root.version,
        r#"User::"w""#,
        record(600),
        [1; 8],
    )?;
    let before = heads(&b).await?;
    a.gossip_raw(order.to_bytes()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        heads(&b).await? == before,
        "a forged order changed b's state"
    );
    for n in [&a, &b, &c] {
        ensure!(authorize(n, r#"User::"w""#).await?["decision"] == "allow");
    }
    let st: Value = reqwest::get(format!("{}/v1/status", b.api_url()))
        .await?
        .json()
        .await?;
    ensure!(
        st["stats"]["refused"]["node_quarantine"].as_u64() >= Some(1),
        "{st}"
    );

    // A trust root that does not let nodes quarantine: the node says so.
    let fx2 = Fixture::new()?;
    let (solo, _) = fx2.spawn("solo", true, &[]).await?;
    let err = solo
        .quarantine(r#"User::"w""#, record(600))
        .await
        .expect_err("refused");
    ensure!(
        err.to_string().contains("does not let nodes quarantine"),
        "{err}"
    );
    solo.shutdown().await?;
    for n in [a, b, c] {
        n.shutdown().await?;
    }
    Ok(())
}
