//! The live dashboard in a real headless Chromium: a three-node mesh, the
//! page of one node open, a user revoked through another node, and the open
//! page (never reloaded) showing the revocation and the revoked deny within
//! seconds, with no script error. The screenshot is left in
//! `target/test-artifacts/dashboard.png`.
//!
//! Needs Chromium and chromedriver (`apt-get install chromium
//! chromium-driver`); without them the test fails, it does not skip.

mod browser;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use fantoccini::Locator;
use weft_node::daemon::NodeHandle;
use weft_tests::mesh::{
    Author, Fixture, addr, admitted, authorize, eventually, heads, heads_are, init_logs, push,
};

const ALICE: &str = r#"User::"alice""#;
const MALLORY: &str = r#"User::"mallory""#;

/// Runs `script` in the page and returns its string result.
async fn text_of(b: &browser::Browser, script: &str) -> Result<String> {
    let v = b.client.execute(script, vec![]).await?;
    Ok(v.as_str().unwrap_or_default().to_owned())
}

/// The text of the element with id `id`.
async fn element_text(b: &browser::Browser, id: &str) -> Result<String> {
    text_of(
        b,
        &format!("var e = document.getElementById('{id}'); return e ? e.textContent : '';"),
    )
    .await
}

/// Polls the open page until the element `id` contains `needle`.
async fn page_shows(
    b: &browser::Browser,
    id: &str,
    needle: &str,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let text = element_text(b, id).await?;
        if text.contains(needle) {
            return Ok(start.elapsed());
        }
        ensure!(
            start.elapsed() < timeout,
            "the page's #{id} did not show {needle} within {timeout:?}; it shows: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn script_errors(b: &browser::Browser) -> Result<Vec<String>> {
    let v = b
        .client
        .execute(
            "return window.weftErrors || ['window.weftErrors is missing'];",
            vec![],
        )
        .await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|e| e.as_str().unwrap_or_default().to_owned())
        .collect())
}

async fn drive(b: &browser::Browser, nodes: &[NodeHandle], author: &mut Author) -> Result<()> {
    let page = format!("{}/", nodes[0].api_url());
    b.client.goto(&page).await?;
    // The sentinel the page adds after its first successful refresh.
    b.client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("weft-ready"))
        .await
        .context("the dashboard never completed a refresh (#weft-ready missing)")?;
    let errors = script_errors(b).await?;
    ensure!(errors.is_empty(), "script errors on the page: {errors:?}");

    let node_id = nodes[0].node_id().to_string();
    ensure!(
        element_text(b, "node-id").await? == node_id,
        "the page names another node"
    );
    page_shows(b, "bundles", "main", Duration::from_secs(5)).await?;
    page_shows(b, "peers", "admitted", Duration::from_secs(5)).await?;
    // Each peer's transport, route and address, as /v1/status gives them.
    page_shows(b, "peers", "direct", Duration::from_secs(5)).await?;
    page_shows(b, "peers", "/ip4/127.0.0.1/", Duration::from_secs(5)).await?;
    let peers = element_text(b, "peers").await?;
    ensure!(
        peers.contains("tcp") || peers.contains("quic"),
        "the peers panel names no transport: {peers}"
    );
    page_shows(b, "revocations", "none", Duration::from_secs(5)).await?;
    // The audit panel shows the chain (records, head), not "not available".
    page_shows(b, "audit", "records", Duration::from_secs(5)).await?;
    let audit_text = element_text(b, "audit").await?;
    ensure!(
        !audit_text.contains("not available"),
        "the audit panel: {audit_text}"
    );
    page_shows(b, "anomalies", "none", Duration::from_secs(5)).await?;
    let refreshes = text_of(b, "return document.body.getAttribute('data-refreshes');").await?;

    // Revoke alice through the third node; the page of the first must show
    // it without a reload.
    let revoked_at = Instant::now();
    push(&nodes[2], author.revoke(ALICE)?).await?;
    let shown = page_shows(b, "revocations", ALICE, Duration::from_secs(10)).await?;
    println!(
        "DASHBOARD revocation pushed at node 3 shown on node 1's open page after {:?} (poll {:?})",
        revoked_at.elapsed(),
        shown
    );
    let again = text_of(b, "return document.body.getAttribute('data-refreshes');").await?;
    ensure!(
        again.parse::<u64>().unwrap_or(0) > refreshes.parse::<u64>().unwrap_or(0),
        "the page did not refresh by itself"
    );
    ensure!(
        text_of(
            b,
            "return performance.getEntriesByType('navigation').length + '';"
        )
        .await?
            == "1",
        "the page was reloaded"
    );

    // A quarantine written through the second node shows in its panel.
    push(
        &nodes[1],
        author.quarantine_at(MALLORY, r#"{"reason": "port scan"}"#, 0)?,
    )
    .await?;
    page_shows(b, "quarantines", MALLORY, Duration::from_secs(10)).await?;
    page_shows(b, "quarantines", "port scan", Duration::from_secs(5)).await?;

    // A revoked deny and a plain deny at the first node show in the recent denies.
    let answer = authorize(&nodes[0], ALICE).await?;
    ensure!(answer["revoked"] == true, "{answer}");
    let answer = authorize(&nodes[0], MALLORY).await?;
    ensure!(answer["decision"] == "deny", "{answer}");
    page_shows(b, "denies", MALLORY, Duration::from_secs(5)).await?;
    page_shows(b, "denies", "revoked", Duration::from_secs(5)).await?;
    page_shows(b, "total-revoked", "1 total", Duration::from_secs(5)).await?;

    let errors = script_errors(b).await?;
    ensure!(errors.is_empty(), "script errors on the page: {errors:?}");
    let console = b.console_errors().await?;
    ensure!(
        console.is_empty(),
        "errors in the browser console: {console:?}"
    );

    let png = browser::artifacts_dir()?.join("dashboard.png");
    std::fs::write(&png, b.client.screenshot().await?)?;
    println!("DASHBOARD screenshot: {}", png.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_revocation_live() -> Result<()> {
    init_logs();
    // Fail early and clearly when there is no browser.
    browser::chromium()?;
    browser::chromedriver()?;

    let fx = Fixture::new()?;
    let (n1, _) = fx.spawn("n1", true, &[]).await?;
    let (n2, _) = fx.spawn("n2", true, &[addr(&n1)]).await?;
    let (n3, _) = fx.spawn("n3", true, &[addr(&n1), addr(&n2)]).await?;
    let nodes = vec![n1, n2, n3];
    eventually(Duration::from_secs(30), "three admitted pairs", || async {
        for n in &nodes {
            if admitted(n).await? < 2 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;

    let mut author = Author::new(&fx);
    push(&nodes[0], author.bundle("main", ALICE)?).await?;
    let expected = heads(&nodes[0]).await?;
    eventually(Duration::from_secs(30), "the bundle everywhere", || async {
        for n in &nodes {
            if !heads_are(n, &expected).await? {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    ensure!(authorize(&nodes[0], ALICE).await?["decision"] == "allow");

    let b = browser::Browser::start(1400, 1300).await?;
    let result = drive(&b, &nodes, &mut author).await;
    let closed = b.close().await;
    for n in nodes {
        n.shutdown().await?;
    }
    result?;
    closed
}

/// A node whose reads need a token: the page opened with the token in the
/// URL fragment reads its data with it (the fragment is cleared from the
/// address bar and never reaches the server), while the same reads without
/// the token are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_with_a_token_from_the_fragment() -> Result<()> {
    use weft_node::api::access::Scope;
    use weft_node::api::tokens;
    init_logs();
    browser::chromium()?;
    browser::chromedriver()?;

    let fx = Fixture::new()?;
    let (dir, _) = fx.node_dir("n1", true)?;
    let token = tokens::mint()?;
    let file = dir.join("api-tokens");
    std::fs::write(
        &file,
        tokens::line("browser", &[Scope::Read, Scope::Audit], &token),
    )?;
    let mut opts = fx.options(dir, &[]);
    opts.api_tokens_file = Some(file);
    let node = weft_node::daemon::spawn_node(opts).await?;
    let url = node.api_url();
    let http = reqwest::Client::new();
    let anon = http.get(format!("{url}/v1/dashboard")).send().await?;
    ensure!(
        anon.status() == 401,
        "a read without the token: {}",
        anon.status()
    );
    let page = http.get(format!("{url}/")).send().await?;
    ensure!(
        page.status() == 200,
        "the page itself is open: {}",
        page.status()
    );

    let b = browser::Browser::start(1200, 900).await?;
    let result = async {
        b.client.goto(&format!("{url}/#token={token}")).await?;
        b.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Id("weft-ready"))
            .await
            .context("the dashboard never completed a refresh with the token")?;
        let errors = script_errors(&b).await?;
        ensure!(errors.is_empty(), "script errors on the page: {errors:?}");
        ensure!(
            element_text(&b, "node-id").await? == node.node_id().to_string(),
            "the page names another node"
        );
        page_shows(&b, "audit", "records", Duration::from_secs(5)).await?;
        let hash = text_of(&b, "return window.location.hash;").await?;
        ensure!(
            hash.is_empty(),
            "the token stayed in the address bar: {hash}"
        );
        Ok(())
    }
    .await;
    let closed = b.close().await;
    node.shutdown().await?;
    result?;
    closed
}

/// `GET /v1/dashboard` and `GET /` without a browser: the counts, the recent
/// denies newest first with what was asked and why, revocations with their
/// signer, and the page itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_json_counts_decisions_and_keeps_recent_denies() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (node, _) = fx.spawn("n1", true, &[]).await?;
    let mut author = Author::new(&fx);
    push(&node, author.bundle("main", ALICE)?).await?;
    push(
        &node,
        author.revoke_at(r#"User::"bob""#, "left", 1_700_000_000)?,
    )
    .await?;
    ensure!(authorize(&node, ALICE).await?["decision"] == "allow");
    ensure!(authorize(&node, MALLORY).await?["decision"] == "deny");
    ensure!(authorize(&node, r#"User::"bob""#).await?["revoked"] == true);

    let d: serde_json::Value = reqwest::get(format!("{}/v1/dashboard", node.api_url()))
        .await?
        .json()
        .await?;
    ensure!(
        d["decisions"] == serde_json::json!({"allow": 1, "deny": 1, "revoked": 1}),
        "{}",
        d["decisions"]
    );
    let denies = d["recent_denies"].as_array().context("no recent denies")?;
    ensure!(denies.len() == 2, "{denies:?}");
    ensure!(denies[0]["principal"] == r#"User::"bob""#, "{denies:?}");
    ensure!(denies[0]["revoked"] == true, "{denies:?}");
    ensure!(
        denies[0]["revoked_subject"] == r#"User::"bob""#,
        "{denies:?}"
    );
    ensure!(denies[1]["principal"] == MALLORY, "{denies:?}");
    ensure!(denies[1]["action"] == r#"Action::"view""#, "{denies:?}");
    ensure!(denies[1]["resource"] == r#"Doc::"d""#, "{denies:?}");
    ensure!(denies[1]["at_ms"].as_u64().is_some_and(|t| t > 0));
    ensure!(d["status"]["node_id"] == node.node_id().to_string());
    ensure!(d["bundles"][0]["name"] == "main", "{}", d["bundles"]);
    ensure!(d["bundles"][0]["signers"][0]["name"] == "alice");
    let rev = &d["revocations"][0];
    ensure!(rev["subject"] == r#"User::"bob""#, "{rev}");
    ensure!(
        rev["reason"] == "left" && rev["time"] == 1_700_000_000,
        "{rev}"
    );
    ensure!(rev["signers"][0]["name"] == "alice", "{rev}");
    ensure!(d["stale"] == false, "{d}");

    let page = reqwest::get(format!("{}/", node.api_url())).await?;
    ensure!(page.status() == 200);
    ensure!(
        page.headers()["content-type"]
            .to_str()?
            .starts_with("text/html"),
        "{:?}",
        page.headers()
    );
    let html = page.text().await?;
    ensure!(html.contains("weft-ready") && html.contains("/v1/dashboard"));
    node.shutdown().await?;
    Ok(())
}
