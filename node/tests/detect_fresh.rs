//! A node that has just started is not blind: a fresh node (no
//! `detector.state`, detection on as `weft node run` has it) serves twenty
//! ordinary principals for a few seconds, then one principal sends 1,500
//! requests in about a second over 1,500 resources it never used and five
//! actions. The node holds no policy, so every decision is a deny: the
//! ordinary principals' few denies a second are ordinary for the floors,
//! the probe's hundreds are not. `GET /v1/anomalies` shows the alert, from
//! an absolute floor, within seconds and inside the node's first minute. A
//! second fresh node with the floors off (the learned model alone, which is
//! the detector without them) gets the same traffic and stays silent: its
//! half-space trees hold no reference window yet.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use futures::StreamExt as _;
use serde_json::{Value, json};
use weft_node::daemon::{NodeHandle, NodeOptions, spawn_node};
use weft_node::keyfile;
use weft_node::layout::NodeDir;
use weft_protocol::trust::{Operator, Role, SignedRoot, TrustRoot, to_trust_file};

async fn decide(client: &reqwest::Client, node: &NodeHandle, body: Value) -> Result<bool> {
    let r = client
        .post(format!("{}/v1/authorize", node.api_url()))
        .json(&body)
        .send()
        .await?;
    ensure!(r.status() == 200, "authorize answered {}", r.status());
    let v: Value = r.json().await?;
    Ok(v["decision"] == "allow")
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; returns
/// how long it took.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Twenty users viewing their few documents, one request every 25 ms in
/// turn (two a second each), for `secs` seconds.
async fn ordinary(client: &reqwest::Client, node: &NodeHandle, secs: u64) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut k = 0u64;
    while Instant::now() < until {
        let body = json!({
            "principal": format!("User::\"u{}\"", k % 20),
            "action": "Action::\"view\"",
            "resource": format!("Doc::\"d{}\"", k % 7),
        });
        decide(client, node, body).await?;
        k += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// Mallory's probe: 1,500 requests, 32 at a time, over 1,500 resources;
/// one in twenty views a document, the rest edit, delete, admin or list
/// secrets. Returns how long it took and how many were denied.
async fn burst(client: &reqwest::Client, node: &NodeHandle) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let actions = ["edit", "delete", "admin", "list"];
    let answers: Vec<Result<bool>> =
        futures::stream::iter((0..1_500u32).zip(actions.iter().cycle()))
            .map(|(k, action)| {
                let body = if k % 20 == 0 {
                    json!({
                        "principal": "User::\"mallory\"",
                        "action": "Action::\"view\"",
                        "resource": format!("Doc::\"m{k}\""),
                    })
                } else {
                    json!({
                        "principal": "User::\"mallory\"",
                        "action": format!("Action::\"{action}\""),
                        "resource": format!("Secret::\"s{k}\""),
                    })
                };
                decide(client, node, body)
            })
            .buffer_unordered(32)
            .collect()
            .await;
    let mut denied = 0;
    for a in answers {
        denied += usize::from(!a?);
    }
    Ok((started.elapsed(), denied))
}

async fn alerts(node: &NodeHandle) -> Result<Vec<Value>> {
    let v: Value = reqwest::get(format!("{}/v1/anomalies", node.api_url()))
        .await?
        .json()
        .await?;
    Ok(v["alerts"].as_array().cloned().unwrap_or_default())
}

/// A fresh node directory: a key and a trust root, no certificate and no
/// detector state (the node decides from its local state; it needs no
/// peer).
fn node_dir(base: &std::path::Path, name: &str) -> Result<std::path::PathBuf> {
    let root_key = keyfile::generate()?;
    let alice = keyfile::generate()?;
    let now = weft_node::clock::now_secs();
    let root = TrustRoot {
        version: 1,
        expires: now + 86_400,
        root_keys: vec![root_key.public()],
        root_threshold: 1,
        operators: vec![Operator {
            name: "alice".into(),
            key: alice.public(),
            roles: Role::ALL.into_iter().collect(),
        }],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: Default::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: Vec::new(),
    };
    let path = base.join(name);
    std::fs::create_dir_all(&path)?;
    let dir = NodeDir::new(&path);
    keyfile::write(&dir.key(), &keyfile::generate()?)?;
    std::fs::write(
        dir.trust(),
        to_trust_file(&SignedRoot::sign(&root, &[&root_key])),
    )?;
    Ok(path)
}

/// A fresh node, and when it started.
async fn fresh_node(
    base: &std::path::Path,
    name: &str,
    floors: bool,
) -> Result<(NodeHandle, Instant)> {
    let dir = node_dir(base, name)?;
    let mut o = NodeOptions::new(&dir);
    ensure!(o.response.detect, "detection is off by default");
    if !floors {
        o.response.detector.floors = None;
    }
    let started = Instant::now();
    let node = spawn_node(o).await?;
    ensure!(
        !dir.join("detector.state").exists(),
        "the node is not fresh"
    );
    Ok((node, started))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_flags_a_gross_burst_in_its_first_minute() -> Result<()> {
    let base = tempfile::tempdir()?;
    let client = reqwest::Client::new();

    let (node, born) = fresh_node(base.path(), "fresh", true).await?;
    ordinary(&client, &node, 4).await?;
    ensure!(alerts(&node).await?.is_empty(), "ordinary users alerted");
    let (took, denied) = burst(&client, &node).await?;
    eprintln!("the burst took {took:?}; {denied} of 1500 denied");
    ensure!(denied == 1_500, "{denied} denied");
    let waited = eventually(Duration::from_secs(5), "mallory's alert", || async {
        Ok(!alerts(&node).await?.is_empty())
    })
    .await?;
    let seen = alerts(&node).await?;
    let age = born.elapsed();
    eprintln!("alert listed {waited:?} after the burst, {age:?} into the node's life");
    ensure!(age < Duration::from_secs(60), "{age:?}");
    ensure!(seen.len() == 1, "{seen:#?}");
    let a = &seen[0];
    ensure!(a["principal"] == r#"User::"mallory""#, "{a}");
    ensure!(a["floor"] == "denies", "{a}");
    ensure!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("absolute floor")),
        "{a}"
    );
    // The ordinary users go on, unflagged.
    ordinary(&client, &node, 1).await?;
    ensure!(alerts(&node).await?.len() == 1);
    node.shutdown().await?;

    // The same traffic on a fresh node with the learned model alone: no
    // alert, the trees are still empty.
    let (blind, _) = fresh_node(base.path(), "blind", false).await?;
    ordinary(&client, &blind, 4).await?;
    burst(&client, &blind).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let none = alerts(&blind).await?;
    ensure!(none.is_empty(), "{none:#?}");
    blind.shutdown().await?;
    Ok(())
}
