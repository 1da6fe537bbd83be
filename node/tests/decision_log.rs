//! Decision logs shipped to a real HTTP receiver on loopback (axum), which
//! checks the headers, gunzips each batch and parses its JSON lines: every
//! record arrives through an outage of the receiver (at least once; these
//! tests also count how many came twice), a full buffer drops its oldest
//! records and counts them, records buffered when the node stops ship after
//! it starts again, and a batch refused with a 4xx is dropped and counted,
//! not retried. Every decision here is a deny (the node holds no policy), so
//! every one is shipped.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_node::daemon::{NodeHandle, NodeOptions, spawn_node};
use weft_node::decision_log::DecisionLogOptions;
use weft_node::keyfile;
use weft_node::layout::NodeDir;
use weft_protocol::trust::{Operator, Role, SignedRoot, TrustRoot, to_trust_file};

const SECRET: &str = "Bearer receiver-secret";

/// What the receiver got: every line of every batch it answered 2xx.
#[derive(Default)]
struct Received {
    lines: Mutex<Vec<Value>>,
    batches: Mutex<usize>,
    /// The status it answers (200 unless a test says otherwise).
    status: AtomicU16,
    /// Why a batch was malformed, if one was.
    bad: Mutex<Vec<String>>,
}

impl Received {
    fn ids(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["decision_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn ingest(State(got): State<Arc<Received>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = StatusCode::from_u16(got.status.load(Ordering::SeqCst)).unwrap();
    let mut bad = Vec::new();
    if headers.get("content-encoding").map(|v| v.as_bytes()) != Some(b"gzip") {
        bad.push("no Content-Encoding: gzip".to_owned());
    }
    if headers.get("content-type").map(|v| v.as_bytes()) != Some(b"application/x-ndjson") {
        bad.push("no Content-Type: application/x-ndjson".to_owned());
    }
    if headers.get("authorization").map(|v| v.as_bytes()) != Some(SECRET.as_bytes()) {
        bad.push("no Authorization header".to_owned());
    }
    let mut text = String::new();
    if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text) {
        bad.push(format!("not gzip: {e}"));
    }
    let mut lines = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => lines.push(v),
            Err(e) => bad.push(format!("not a JSON line: {e}: {line}")),
        }
    }
    if !text.ends_with('\n') {
        bad.push("the batch does not end with a newline".to_owned());
    }
    if !bad.is_empty() {
        got.bad.lock().unwrap().extend(bad);
        return StatusCode::BAD_REQUEST;
    }
    if status.is_success() {
        got.lines.lock().unwrap().extend(lines);
        *got.batches.lock().unwrap() += 1;
    }
    status
}

/// A receiver serving on `addr` until stopped.
struct Receiver {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: SocketAddr, got: Arc<Received>) -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/ingest", axum::routing::post(ingest))
            .with_state(got);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Receiver { addr, stop, task })
    }

    /// Stops it: the port refuses connections until a receiver starts on
    /// it again.
    async fn stop(self) -> SocketAddr {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.addr
    }
}

/// A node directory with a fresh key and trust root and no certificate
/// (the node answers decisions from its local state; it needs no peer).
fn node_dir(base: &std::path::Path) -> Result<std::path::PathBuf> {
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
    let path = base.join("node");
    std::fs::create_dir_all(&path)?;
    let dir = NodeDir::new(&path);
    keyfile::write(&dir.key(), &keyfile::generate()?)?;
    std::fs::write(
        dir.trust(),
        to_trust_file(&SignedRoot::sign(&root, &[&root_key])),
    )?;
    Ok(path)
}

/// Quick settings: batches of 10, sent every 100 ms, retried from 50 ms
/// up to 300 ms.
fn options(dir: &std::path::Path, receiver: SocketAddr) -> Result<NodeOptions> {
    let mut o = NodeOptions::new(dir);
    o.response.detect = false;
    let mut log = DecisionLogOptions::new(Some(format!("http://{receiver}/ingest").parse()?));
    log.headers.insert("authorization", SECRET.parse()?);
    log.batch_max = 10;
    log.flush_every = Duration::from_millis(100);
    log.retry_first = Duration::from_millis(50);
    log.retry_max = Duration::from_millis(300);
    log.timeout = Duration::from_secs(2);
    log.buffer_bytes = 1024 * 1024;
    o.decision_log = Some(log);
    Ok(o)
}

/// Asks for a decision; returns its id, after checking that the body and
/// the header carry the same one.
async fn decide(node: &NodeHandle, principal: &str) -> Result<String> {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/authorize", node.api_url()))
        .json(&serde_json::json!({
            "principal": format!("User::\"{principal}\""),
            "action": "Action::\"view\"",
            "resource": "Doc::\"d\"",
            "context": {"n": principal},
        }))
        .send()
        .await?;
    let header = r
        .headers()
        .get("x-weft-decision-id")
        .ok_or_else(|| anyhow!("no X-Weft-Decision-Id"))?
        .to_str()?
        .to_owned();
    let body: Value = r.json().await?;
    ensure!(body["decision_id"] == header.as_str(), "{body} vs {header}");
    ensure!(header.len() == 32, "{header}");
    Ok(header)
}

/// A metric's value from `/metrics` (0 when it is absent).
async fn metric(node: &NodeHandle, name: &str) -> Result<f64> {
    let text = reqwest::get(format!("{}/metrics", node.api_url()))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
}

async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if check().await? {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each id in `sent` arrived (at least once), nothing else did; returns
/// how many arrived more than once.
fn all_arrived(got: &Received, sent: &[String]) -> Result<usize> {
    let ids = got.ids();
    let unique: BTreeSet<&String> = ids.iter().collect();
    let want: BTreeSet<&String> = sent.iter().collect();
    ensure!(unique == want, "received {unique:?}, sent {want:?}");
    Ok(ids.len() - unique.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_through_a_receiver_outage() -> Result<()> {
    let base = tempfile::tempdir()?;
    let dir = node_dir(base.path())?;
    let got = Arc::new(Received::default());
    got.status.store(200, Ordering::SeqCst);
    let receiver = Receiver::start("127.0.0.1:0".parse()?, got.clone()).await?;
    let node = spawn_node(options(&dir, receiver.addr)?).await?;

    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(decide(&node, &format!("before{i}")).await?);
    }
    eventually("the first 25 records", || async {
        Ok(got.ids().len() >= 25)
    })
    .await?;
    all_arrived(&got, &sent)?;

    // The receiver goes away; decisions go on, and wait in the buffer.
    let port = receiver.stop().await;
    let retried_before = metric(&node, "weft_decision_log_retried_total").await?;
    for i in 0..30 {
        sent.push(decide(&node, &format!("during{i}")).await?);
    }
    eventually("failed deliveries", || async {
        Ok(metric(&node, "weft_decision_log_retried_total").await? > retried_before)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ensure!(metric(&node, "weft_decision_log_buffer_records").await? == 30.0);
    ensure!(metric(&node, "weft_decision_log_buffer_bytes").await? > 30.0 * 200.0);
    ensure!(got.ids().len() == 25, "nothing arrives while it is down");

    // It comes back on the same port: everything held arrives.
    let receiver = Receiver::start(port, got.clone()).await?;
    eventually("all 55 records", || async {
        Ok(got.ids().iter().collect::<BTreeSet<_>>().len() >= 55)
    })
    .await?;
    let twice = all_arrived(&got, &sent)?;
    eventually("an empty buffer", || async {
        Ok(metric(&node, "weft_decision_log_buffer_bytes").await? == 0.0)
    })
    .await?;
    let lines = got.ids().len();
    println!(
        "{} records sent, {lines} lines received in {} batches, {twice} twice",
        sent.len(),
        got.batches.lock().unwrap()
    );
    ensure!(
        metric(&node, "weft_decision_log_sent_total").await? == lines as f64,
        "every line the receiver took is counted as sent, once"
    );
    ensure!(metric(&node, "weft_decision_log_retried_total").await? >= 30.0);
    for reason in ["queue_full", "buffer_full", "rejected", "store"] {
        let name = format!("weft_decision_log_dropped_total{{reason=\"{reason}\"}}");
        ensure!(metric(&node, &name).await? == 0.0, "{name}");
    }
    ensure!(got.bad.lock().unwrap().is_empty(), "{:?}", got.bad);

    // The records: OPA's shape, the request as asked, the answer.
    let first = got.lines.lock().unwrap()[0].clone();
    ensure!(first["decision_id"] == sent[0].as_str(), "{first}");
    ensure!(first["path"] == "v1/authorize", "{first}");
    ensure!(
        first["node_id"] == node.node_id().to_string().as_str(),
        "{first}"
    );
    ensure!(first["labels"]["id"] == first["node_id"], "{first}");
    ensure!(
        first["input"]["principal"] == "User::\"before0\"",
        "{first}"
    );
    ensure!(first["input"]["context"]["n"] == "before0", "{first}");
    ensure!(first["result"]["decision"] == "deny", "{first}");
    ensure!(first["state"] == node.view().digest(), "{first}");
    let ts = first["timestamp"].as_str().unwrap_or_default();
    ensure!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");

    // The audit trail has the same id.
    let audit = node.audit().log.clone();
    eventually("the audit record", || {
        let audit = audit.clone();
        let id = sent[0].clone();
        async move {
            Ok(audit.records_from(0, 1000).iter().any(|r| {
                serde_json::from_slice::<Value>(&r.event)
                    .is_ok_and(|e| e["decision_id"] == id.as_str())
            }))
        }
    })
    .await?;

    node.shutdown().await?;
    receiver.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_counts_them() -> Result<()> {
    let base = tempfile::tempdir()?;
    let dir = node_dir(base.path())?;
    let got = Arc::new(Received::default());
    got.status.store(200, Ordering::SeqCst);
    // A port with no receiver yet.
    let port = Receiver::start("127.0.0.1:0".parse()?, got.clone())
        .await?
        .stop()
        .await;
    let mut opts = options(&dir, port)?;
    if let Some(log) = opts.decision_log.as_mut() {
        // Room for a few dozen records of about 450 bytes.
        log.buffer_bytes = 16 * 1024;
    }
    let node = spawn_node(opts).await?;
    let mut sent = Vec::new();
    for i in 0..100 {
        sent.push(decide(&node, &format!("u{i}")).await?);
    }
    let dropped_name = "weft_decision_log_dropped_total{reason=\"buffer_full\"}";
    eventually("all 100 taken in or dropped", || async {
        Ok(metric(&node, dropped_name).await?
            + metric(&node, "weft_decision_log_buffer_records").await?
            == 100.0)
    })
    .await?;
    let dropped = metric(&node, dropped_name).await? as usize;
    let held = 100 - dropped;
    ensure!(dropped > 0 && held > 10, "dropped {dropped}, held {held}");
    ensure!(metric(&node, "weft_decision_log_buffer_bytes").await? <= 16.0 * 1024.0);

    // The receiver comes: exactly the newest `held` arrive.
    let receiver = Receiver::start(port, got.clone()).await?;
    eventually("the held records", || async {
        Ok(got.ids().iter().collect::<BTreeSet<_>>().len() >= held)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    all_arrived(&got, &sent[dropped..])?;
    println!("100 records, buffer of 16 KiB: {dropped} oldest dropped, {held} delivered");
    node.shutdown().await?;
    receiver.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_buffered_when_the_node_stops_ship_after_it_starts() -> Result<()> {
    let base = tempfile::tempdir()?;
    let dir = node_dir(base.path())?;
    let got = Arc::new(Received::default());
    got.status.store(200, Ordering::SeqCst);
    let port = Receiver::start("127.0.0.1:0".parse()?, got.clone())
        .await?
        .stop()
        .await;
    let node = spawn_node(options(&dir, port)?).await?;
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(decide(&node, &format!("u{i}")).await?);
    }
    eventually("20 records in the buffer", || async {
        Ok(metric(&node, "weft_decision_log_buffer_records").await? == 20.0)
    })
    .await?;
    node.shutdown().await?;

    // The receiver is up before the node is back; the node ships on start.
    let receiver = Receiver::start(port, got.clone()).await?;
    let node = spawn_node(options(&dir, port)?).await?;
    eventually("the 20 records from before the restart", || async {
        Ok(got.ids().iter().collect::<BTreeSet<_>>().len() >= 20)
    })
    .await?;
    let twice = all_arrived(&got, &sent)?;
    ensure!(twice == 0, "{twice} came twice");
    eventually("sent counted", || async {
        Ok(metric(&node, "weft_decision_log_sent_total").await? == 20.0)
    })
    .await?;
    node.shutdown().await?;
    receiver.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_receiver_refuses_is_dropped_and_counted() -> Result<()> {
    let base = tempfile::tempdir()?;
    let dir = node_dir(base.path())?;
    let got = Arc::new(Received::default());
    got.status.store(413, Ordering::SeqCst);
    let receiver = Receiver::start("127.0.0.1:0".parse()?, got.clone()).await?;
    let node = spawn_node(options(&dir, receiver.addr)?).await?;
    for i in 0..5 {
        decide(&node, &format!("u{i}")).await?;
    }
    let rejected = "weft_decision_log_dropped_total{reason=\"rejected\"}";
    eventually("5 records rejected", || async {
        Ok(metric(&node, rejected).await? == 5.0)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(metric(&node, "weft_decision_log_retried_total").await? == 0.0);
    ensure!(metric(&node, "weft_decision_log_buffer_records").await? == 0.0);
    ensure!(got.bad.lock().unwrap().is_empty(), "{:?}", got.bad);
    // The receiver takes batches again: later records go through.
    got.status.store(200, Ordering::SeqCst);
    let id = decide(&node, "later").await?;
    eventually("the later record", || async {
        Ok(got.ids() == [id.clone()])
    })
    .await?;
    node.shutdown().await?;
    receiver.stop().await;
    Ok(())
}

#[test]
fn weft_node_run_names_a_bad_decision_log_setting() -> Result<()> {
    let base = tempfile::tempdir()?;
    let dir = node_dir(base.path())?;
    let config = NodeDir::new(&dir).config();
    for (table, says) in [
        (
            "url = \"ftp://siem.example/\"",
            "error: decision_log.url must be http:// or https://, not ftp://",
        ),
        (
            "url = \"http://127.0.0.1:9/\"\nbatch_max = 0",
            "error: decision_log.batch_max must be at least 1",
        ),
        (
            "url = \"http://127.0.0.1:9/\"\nheaders = { \"bad name\" = \"s3cret\" }",
            "error: decision_log.headers: \"bad name\" is not a header name",
        ),
        ("uri = \"http://127.0.0.1:9/\"", "unknown field `uri`"),
    ] {
        std::fs::write(&config, format!("[decision_log]\n{table}\n"))?;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["node", "run", "--dir"])
            .arg(&dir)
            .args(["--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(1), "{table}: {err}");
        ensure!(err.lines().count() == 1, "one line: {err}");
        ensure!(err.contains(says), "{table}: {err}");
        ensure!(err.contains("weft.toml"), "names the file: {err}");
        ensure!(!err.contains("s3cret"), "{err}");
    }
    Ok(())
}

/// Syslog, the second sink: every record reaches a UDP and a TCP syslog
/// receiver on loopback as one RFC 5424 message whose text is the JSON
/// record (over TCP framed by octet counting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_syslog_over_udp_and_tcp() -> Result<()> {
    use tokio::io::AsyncReadExt as _;
    use weft_node::decision_log::syslog::{SyslogTarget, Transport};

    let base = tempfile::tempdir()?;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    for (i, target) in [
        SyslogTarget {
            transport: Transport::Udp,
            addr: udp.local_addr()?.to_string(),
        },
        SyslogTarget {
            transport: Transport::Tcp,
            addr: tcp.local_addr()?.to_string(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let dir = node_dir(&base.path().join(i.to_string()))?;
        let mut opts = NodeOptions::new(&dir);
        let mut log = DecisionLogOptions::new(None);
        log.syslog = Some(target.clone());
        opts.decision_log = Some(log);
        let node = spawn_node(opts).await?;
        let mut sent = Vec::new();
        for n in 0..3 {
            sent.push(decide(&node, &format!("s{n}")).await?);
        }
        let mut messages = Vec::new();
        match target.transport {
            Transport::Udp => {
                let mut buf = vec![0u8; 65_536];
                for _ in 0..3 {
                    let n =
                        tokio::time::timeout(Duration::from_secs(10), udp.recv(&mut buf)).await??;
                    messages.push(String::from_utf8(buf[..n].to_vec())?);
                }
            }
            Transport::Tcp => {
                let (mut conn, _) =
                    tokio::time::timeout(Duration::from_secs(10), tcp.accept()).await??;
                let mut text = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while messages.len() < 3 {
                    let mut chunk = [0u8; 4096];
                    let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await??;
                    ensure!(n > 0, "the connection closed");
                    text.extend_from_slice(&chunk[..n]);
                    // Octet counting: LENGTH SP MESSAGE, one after another.
                    while let Some(sp) = text.iter().position(|b| *b == b' ') {
                        let len: usize = std::str::from_utf8(&text[..sp])?.parse()?;
                        if text.len() < sp + 1 + len {
                            break;
                        }
                        messages.push(String::from_utf8(text[sp + 1..sp + 1 + len].to_vec())?);
                        text.drain(..sp + 1 + len);
                    }
                }
            }
        }
        for (m, id) in messages.iter().zip(&sent) {
            let node_id = node.node_id().to_string();
            ensure!(m.starts_with("<84>1 "), "a deny, authpriv: {m}");
            let json = m
                .split_once(" decision - ")
                .map(|(h, j)| (h.contains(&format!(" {node_id} weft ")), j))
                .ok_or_else(|| anyhow!("not RFC 5424 as written: {m}"))?;
            ensure!(json.0, "names the node: {m}");
            let v: Value = serde_json::from_str(json.1)?;
            ensure!(v["decision_id"] == id.as_str(), "{v}");
        }
        ensure!(metric(&node, "weft_decision_log_dropped_total{reason=\"syslog\"}").await? == 0.0);
        node.shutdown().await?;
    }
    Ok(())
}

/// `weft node run` takes `[decision_log]` from weft.toml and ships; it
/// warns that weft.toml, holding the receiver's credential, is readable by
/// others, and never logs the credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_node_run_ships_what_weft_toml_says() -> Result<()> {
    let base = tempfile::tempdir()?;
    let dir = node_dir(base.path())?;
    let got = Arc::new(Received::default());
    got.status.store(200, Ordering::SeqCst);
    let receiver = Receiver::start("127.0.0.1:0".parse()?, got.clone()).await?;
    let api = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    std::fs::write(
        NodeDir::new(&dir).config(),
        format!(
            "api = \"{api}\"\nlisten = \"/ip4/127.0.0.1/tcp/0\"\ndetect = false\n\n\
             [decision_log]\nurl = \"http://{}/ingest\"\nheaders = {{ Authorization = \"{SECRET}\" }}\n\
             flush_every = \"1s\"\n",
            receiver.addr
        ),
    )?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["node", "run", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let url = format!("http://{api}");
    let asked = async {
        eventually("the node's API", || async {
            Ok(reqwest::get(format!("{url}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        let r: Value = reqwest::Client::new()
            .post(format!("{url}/v1/authorize"))
            .json(&serde_json::json!({
                "principal": "User::\"cli\"", "action": "Action::\"a\"", "resource": "R::\"r\"",
            }))
            .send()
            .await?
            .json()
            .await?;
        let id = r["decision_id"].as_str().unwrap_or_default().to_owned();
        eventually("the record", || async { Ok(got.ids() == [id.clone()]) }).await
    }
    .await;
    let _ = child.kill();
    let out = child.wait_with_output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    asked?;
    ensure!(got.bad.lock().unwrap().is_empty(), "{:?}", got.bad);
    ensure!(
        !log.contains("receiver-secret"),
        "the secret is logged: {log}"
    );
    // The file holds the receiver's credential and others can read it.
    ensure!(
        log.contains("chmod 600"),
        "no warning about weft.toml: {log}"
    );
    receiver.stop().await;
    Ok(())
}
