//! Partition mode: every decision carries a freshness stamp; with
//! `on_stale = keep` (the default) a node cut off from every peer keeps
//! enforcing its last state, and with `on_stale = deny` it denies everything
//! once `stale_after` has passed without a sync.

use std::time::Duration;

use anyhow::{Result, ensure};
use weft_node::control::Staleness;
use weft_node::daemon::spawn_node;
use weft_node::layout::OnStale;
use weft_tests::mesh::{Author, Fixture, authorize, init_logs, push};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_state_keeps_or_denies_as_configured() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let mut author = Author::new(&fx);
    let bundle = author.bundle("b", r#"User::"alice""#)?;
    for (name, on_stale) in [("keep", OnStale::Keep), ("deny", OnStale::Deny)] {
        let (dir, _) = fx.node_dir(name, true)?;
        let mut opts = fx.options(dir, &[]);
        opts.stale = Staleness {
            after_ms: 300,
            on_stale,
        };
        let node = spawn_node(opts).await?;
        push(&node, bundle.clone()).await?;
        // Fresh (just started): alice is allowed either way.
        let v = authorize(&node, r#"User::"alice""#).await?;
        ensure!(v["decision"] == "allow", "{name}: {v}");
        ensure!(v["freshness"]["stale"] == false, "{name}: {v}");
        ensure!(v["freshness"]["last_sync_ms_ago"].is_null(), "{name}: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = authorize(&node, r#"User::"alice""#).await?;
        ensure!(v["freshness"]["stale"] == true, "{name}: {v}");
        match on_stale {
            OnStale::Keep => ensure!(v["decision"] == "allow", "keep: {v}"),
            OnStale::Deny => {
                ensure!(v["decision"] == "deny", "deny: {v}");
                ensure!(v["errors"].to_string().contains("stale"), "deny: {v}");
            }
        }
        node.shutdown().await?;
    }
    Ok(())
}
