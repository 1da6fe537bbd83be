//! `GET /metrics` of a real node: Prometheus text with decisions by outcome,
//! the decision latency histogram, updates applied and refused by reason,
//! request durations by route, the build info, no sentinel for an unknown
//! state age; and every metric the Grafana dashboard in `deploy/grafana`
//! queries exists in a real two-node mesh's output.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weft_tests::mesh::{
    Author, Fixture, addr, admitted, authorize, eventually, init_logs, push, submit,
};

/// The value of the sample line that starts with `name` (labels included).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_decisions_and_updates() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (node, _) = fx.spawn("n1", true, &[]).await?;
    let mut author = Author::new(&fx);
    push(&node, author.bundle("b", r#"User::"alice""#)?).await?;
    // A refused update: garbage.
    let (code, _) = submit(&node, b"garbage".to_vec()).await?;
    ensure!(code == 400, "{code}");
    for who in ["alice", "alice", "mallory"] {
        authorize(&node, &format!(r#"User::"{who}""#)).await?;
    }
    let text = reqwest::get(format!("{}/metrics", node.api_url()))
        .await?
        .text()
        .await?;
    ensure!(
        sample(&text, r#"weft_decisions_total{outcome="allow"}"#) == Some(2.0),
        "{text}"
    );
    ensure!(
        sample(&text, r#"weft_decisions_total{outcome="deny"}"#) == Some(1.0),
        "{text}"
    );
    ensure!(
        sample(&text, "weft_decision_seconds_count") == Some(3.0),
        "{text}"
    );
    ensure!(
        sample(&text, "weft_updates_applied_total") == Some(1.0),
        "{text}"
    );
    ensure!(
        sample(&text, r#"weft_updates_refused_total{reason="malformed"}"#) == Some(1.0),
        "{text}"
    );
    ensure!(sample(&text, "weft_updates") == Some(1.0), "{text}");
    // A lone node has never synced: no age sample (no -1), and a 0 flag.
    ensure!(sample(&text, "weft_synced") == Some(0.0), "{text}");
    ensure!(
        !text
            .lines()
            .any(|l| l.starts_with("weft_state_age_seconds")),
        "{text}"
    );
    // Three authorize requests, one push and one refused push, timed by route.
    ensure!(
        sample(
            &text,
            r#"weft_http_request_duration_seconds_count{route="/v1/authorize",method="POST",status="200"}"#
        ) == Some(3.0),
        "{text}"
    );
    ensure!(
        sample(
            &text,
            r#"weft_http_request_duration_seconds_count{route="/v1/updates",method="POST",status="400"}"#
        ) == Some(1.0),
        "{text}"
    );
    ensure!(
        sample(
            &text,
            &format!(
                r#"weft_build_info{{version="{}",profile="debug"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ) == Some(1.0),
        "{text}"
    );
    // A path no route serves is labelled by no template, not by the path.
    reqwest::get(format!("{}/no/such/path/xyz", node.api_url())).await?;
    let text = reqwest::get(format!("{}/metrics", node.api_url()))
        .await?
        .text()
        .await?;
    ensure!(!text.contains("/no/such/path/xyz"), "{text}");
    ensure!(
        sample(
            &text,
            r#"weft_http_request_duration_seconds_count{route="unmatched",method="GET",status="404"}"#
        ) == Some(1.0),
        "{text}"
    );
    ensure!(text.trim_end().ends_with("# EOF"), "{text}");
    node.shutdown().await?;
    Ok(())
}

/// The metric names a PromQL expression reads (`weft_*` and `libp2p_*`).
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("weft_") || rest.starts_with("libp2p_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_exists() -> Result<()> {
    init_logs();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/weft.json");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
    )?;
    let mut wanted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().context("targets")? {
            wanted.extend(names_in(target["expr"].as_str().context("expr")?));
        }
    }
    ensure!(wanted.len() >= 15, "{wanted:?}");

    // Two certified nodes that sync, with a decision, an update and a
    // refusal behind them, so every family has samples.
    let fx = Fixture::new()?;
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (b, _) = fx.spawn("b", true, &[addr(&a)]).await?;
    eventually(
        Duration::from_secs(20),
        "the nodes admit each other",
        || async { Ok(admitted(&a).await? == 1 && admitted(&b).await? == 1) },
    )
    .await?;
    let mut author = Author::new(&fx);
    push(&a, author.bundle("b", r#"User::"alice""#)?).await?;
    submit(&a, b"garbage".to_vec()).await?;
    authorize(&a, r#"User::"alice""#).await?;
    let url = format!("{}/metrics", a.api_url());
    let missing = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let found = eventually(
        Duration::from_secs(20),
        "every dashboard metric has a sample",
        || {
            let url = url.clone();
            let wanted = wanted.clone();
            let missing = missing.clone();
            async move {
                let text = reqwest::get(url).await?.text().await?;
                let absent: Vec<String> = wanted
                    .iter()
                    .filter(|name| {
                        !text.lines().any(|l| {
                            l.strip_prefix(name.as_str())
                                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
                        })
                    })
                    .cloned()
                    .collect();
                let done = absent.is_empty();
                *missing.lock().unwrap() = absent;
                Ok(done)
            }
        },
    )
    .await;
    found.with_context(|| format!("missing from /metrics: {:?}", missing.lock().unwrap()))?;
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
