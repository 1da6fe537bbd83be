//! A node is never half alive: once its node task has died (here by the
//! test hook that makes it panic, as a bug would), `/healthz` and `/readyz`
//! answer 503 with one sentence, updates are refused with a clear error,
//! and decisions are still answered from the last state.

use std::time::Duration;

use anyhow::{Result, ensure};
use weft_node::daemon::NodeHandle;
use weft_tests::mesh::{Author, Fixture, authorize, eventually, init_logs, push, submit};

/// `GET path`: the status code and the body.
async fn get(node: &NodeHandle, path: &str) -> Result<(u16, String)> {
    let resp = reqwest::get(format!("{}{path}", node.api_url())).await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

/// A 503 whose body is `{"error": "<one line>"}`.
fn unavailable(code: u16, body: &str) -> Result<()> {
    ensure!(code == 503, "{code} {body}");
    let v: serde_json::Value = serde_json::from_str(body)?;
    let e = v["error"].as_str().unwrap_or_default();
    ensure!(!e.is_empty() && !e.contains('\n'), "{body}");
    ensure!(v.as_object().is_some_and(|o| o.len() == 1), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_task_died_is_not_healthy() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (node, _) = fx.spawn("n1", true, &[]).await?;
    let mut author = Author::new(&fx);
    push(&node, author.bundle("b", r#"User::"alice""#)?).await?;

    let (code, body) = get(&node, "/healthz").await?;
    ensure!(code == 200 && body == "ok", "{code} {body}");
    eventually(Duration::from_secs(5), "/readyz to answer 200", || async {
        Ok(get(&node, "/readyz").await?.0 == 200)
    })
    .await?;

    node.panic_node_task().await?;
    eventually(Duration::from_secs(5), "/healthz to answer 503", || async {
        Ok(get(&node, "/healthz").await?.0 == 503)
    })
    .await?;
    let (code, body) = get(&node, "/healthz").await?;
    unavailable(code, &body)?;
    let (code, body) = get(&node, "/readyz").await?;
    unavailable(code, &body)?;

    // Decisions come from the last state, which needs no node task.
    let v = authorize(&node, r#"User::"alice""#).await?;
    ensure!(v["decision"] == "allow", "{v}");
    // Updates need the node task: a 503 that says it has stopped.
    let (code, v) = submit(&node, author.revoke(r#"User::"alice""#)?).await?;
    ensure!(code == 503, "{code} {v}");
    ensure!(
        v["error"].as_str().is_some_and(|e| e.contains("stopped")),
        "{v}"
    );

    // Shutting down reports the failure, and does not hang.
    let stopped = tokio::time::timeout(Duration::from_secs(30), node.shutdown()).await?;
    let err = stopped.expect_err("the node task panicked");
    ensure!(format!("{err:#}").contains("panicked"), "{err:#}");
    Ok(())
}
