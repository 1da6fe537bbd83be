//! `GET /metrics` of a real node: Prometheus text with decisions by outcome,
//! the decision latency histogram, updates applied and refused by reason.

use anyhow::{Result, ensure};
use weft_tests::mesh::{Author, Fixture, authorize, init_logs, push, submit};

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
    ensure!(text.contains("weft_state_age_seconds"), "{text}");
    ensure!(text.trim_end().ends_with("# EOF"), "{text}");
    node.shutdown().await?;
    Ok(())
}
