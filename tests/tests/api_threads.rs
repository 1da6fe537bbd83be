//! The HTTP API served by several single-threaded runtimes that share one
//! listening socket, as `weft node run` does (one per core): whichever
//! runtime is free takes a connection, so one that is stalled does not stop
//! decisions, and a shutdown waits for every one of them.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weft_node::daemon::spawn_node;
use weft_tests::mesh::{Author, Fixture, authorize, init_logs, push};

/// A single-threaded runtime on a thread of its own that starts running
/// only once `go` is sent, and stops when `stop` is dropped.
struct ApiThread {
    handle: tokio::runtime::Handle,
    go: std::sync::mpsc::Sender<()>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn api_thread() -> Result<ApiThread> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        if wait.recv().is_ok() {
            let _ = runtime.block_on(stopped);
        }
    });
    Ok(ApiThread {
        handle,
        go,
        stop,
        thread,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_go_on_while_one_api_thread_is_stalled() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let mut author = Author::new(&fx);
    let bundle = author.bundle("b", r#"User::"alice""#)?;
    let stalled = api_thread()?;
    let running = api_thread()?;
    running.go.send(())?;
    let (dir, _) = fx.node_dir("n", true)?;
    let mut opts = fx.options(dir, &[]);
    opts.api_runtimes = vec![stalled.handle.clone(), running.handle.clone()];
    let node = spawn_node(opts).await?;

    // Every request is a new connection; the stalled runtime never takes
    // one, so each is answered by the other.
    tokio::time::timeout(Duration::from_secs(30), async {
        push(&node, bundle).await?;
        for i in 0..16 {
            let v = authorize(&node, r#"User::"alice""#).await?;
            ensure!(v["decision"] == "allow", "request {i}: {v}");
            let v = authorize(&node, r#"User::"mallory""#).await?;
            ensure!(v["decision"] == "deny", "request {i}: {v}");
        }
        Ok(())
    })
    .await
    .context("decisions stopped while one API thread was stalled")??;

    // The shutdown waits for the stalled runtime's server too: it finishes
    // once that runtime runs.
    let shutdown = tokio::spawn(node.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !shutdown.is_finished(),
        "the shutdown returned while one API runtime had not stopped serving"
    );
    stalled.go.send(())?;
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .context("the shutdown did not finish once every API runtime ran")???;
    for t in [stalled, running] {
        drop(t.stop);
        t.thread
            .join()
            .map_err(|_| anyhow::anyhow!("an API thread panicked"))?;
    }
    Ok(())
}
