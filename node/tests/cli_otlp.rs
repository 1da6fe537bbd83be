//! Traces over OTLP from a real `weft node run`: with `otlp_endpoint` in
//! weft.toml, the node posts OTLP/HTTP protobuf to a collector stand-in
//! (axum on loopback, decoding with `opentelemetry-proto`'s types), with a
//! span for an authorize request (route, method, status, and the decision
//! id when the answer has one) and a span for the revocation it applied
//! (update id, kind, outcome), under the resource `service.name = "weft"`
//! with the node id as `service.instance.id`. A collector that is down
//! costs spans and a log line, never a decision.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use prost::Message as _;

mod support;
use support::{free_port, ok};

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One exported span, flattened: its name, its attributes and its
/// resource's attributes, every value as text.
#[derive(Clone, Debug)]
struct Span {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attrs: Vec<(String, String)>,
    resource: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn resource(&self, key: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The collector stand-in: `POST /v1/traces` decodes an
/// `ExportTraceServiceRequest` and keeps its spans. Returns its base URL.
fn collector(rt: &tokio::runtime::Runtime, spans: Arc<Mutex<Vec<Span>>>) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let spans = spans.clone();
            async move {
                assert_eq!(
                    headers.get("content-type").and_then(|v| v.to_str().ok()),
                    Some("application/x-protobuf")
                );
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = spans.lock().unwrap();
                for rs in req.resource_spans {
                    let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            kept.push(Span {
                                name: s.name,
                                trace_id: s.trace_id,
                                span_id: s.span_id,
                                parent_span_id: s.parent_span_id,
                                attrs: text(&s.attributes),
                                resource: resource.clone(),
                            });
                        }
                    }
                }
                // An empty ExportTraceServiceResponse.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[test]
fn spans_of_requests_and_updates_reach_an_otlp_collector() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let endpoint = collector(&rt, spans.clone());

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    ok(p, &["key", "gen", "--out", "root.key"]);
    let ops = ok(p, &["key", "gen", "--out", "ops.key"]);
    let ops = ops.lines().last().unwrap();
    ok(
        p,
        &[
            "trust",
            "init",
            "--root-key",
            "root.key",
            "--operator",
            &format!("ops={ops}"),
            "--out",
            "trust.json",
        ],
    );
    let node_id = ok(p, &["node", "init", "--dir", "n1", "--trust", "trust.json"]);
    let node_id = node_id.lines().last().unwrap().trim().to_owned();
    let toml = p.join("n1/weft.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    assert!(config.contains("otlp_endpoint = \"\""), "{config}");
    std::fs::write(
        &toml,
        config.replace(
            "otlp_endpoint = \"\"",
            &format!("otlp_endpoint = \"{endpoint}\""),
        ),
    )
    .unwrap();

    let api = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{api}");
    let mut node = Node(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "node",
                "run",
                "--dir",
                "n1",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--api",
                &api,
            ])
            .current_dir(p)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let answer: serde_json::Value = http
        .post(format!("{url}/v1/authorize"))
        .body(r#"{"principal": "User::\"alice\"", "action": "Action::\"view\"", "resource": "Doc::\"d\""}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["decision"], "deny", "{answer}");
    let revoked: serde_json::Value = serde_json::from_str(
        ok(
            p,
            &[
                "revoke",
                "--key",
                "ops.key",
                "--node",
                &url,
                "--json",
                "User::\"mallory\"",
            ],
        )
        .trim(),
    )
    .unwrap();
    let update_id = revoked["id"].as_str().unwrap().to_owned();

    // A clean stop flushes the batch exporter.
    let pid = node.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = node.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never stopped");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(node.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");

    let spans = spans.lock().unwrap().clone();
    let authorize = spans
        .iter()
        .find(|s| s.attr("http.route") == Some("/v1/authorize"))
        .unwrap_or_else(|| panic!("no authorize span in {spans:#?}\n{log}"));
    assert_eq!(authorize.name, "POST /v1/authorize");
    assert_eq!(authorize.attr("http.request.method"), Some("POST"));
    assert_eq!(authorize.attr("http.response.status_code"), Some("200"));
    if let Some(id) = answer["decision_id"].as_str() {
        assert_eq!(authorize.attr("decision_id"), Some(id), "{authorize:?}");
    }
    assert_eq!(authorize.resource("service.name"), Some("weft"));
    assert_eq!(
        authorize.resource("service.instance.id"),
        Some(node_id.as_str())
    );

    let update = spans
        .iter()
        .find(|s| s.attr("update.id") == Some(update_id.as_str()))
        .unwrap_or_else(|| panic!("no span of update {update_id} in {spans:#?}"));
    assert_eq!(update.name, "update applied");
    assert_eq!(update.attr("update.kind"), Some("revocation"));
    assert_eq!(update.attr("update.outcome"), Some("applied"));
    assert_eq!(update.attr("update.source"), Some("local"));
    // The push itself is a request span too, and the update's parent: one
    // trace holds both.
    let push = spans
        .iter()
        .find(|s| {
            s.name == "POST /v1/updates" && s.attr("http.response.status_code") == Some("202")
        })
        .unwrap_or_else(|| panic!("no push span in {spans:#?}"));
    assert_eq!(update.trace_id, push.trace_id);
    assert_eq!(update.parent_span_id, push.span_id);
}

/// A node whose collector is down keeps answering, says so in its log, and
/// stops cleanly.
#[test]
fn a_collector_that_is_down_costs_spans_not_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    ok(p, &["key", "gen", "--out", "root.key"]);
    let ops = ok(p, &["key", "gen", "--out", "ops.key"]);
    let ops = ops.lines().last().unwrap();
    ok(
        p,
        &[
            "trust",
            "init",
            "--root-key",
            "root.key",
            "--operator",
            &format!("ops={ops}"),
            "--out",
            "trust.json",
        ],
    );
    ok(p, &["node", "init", "--dir", "n1", "--trust", "trust.json"]);
    let toml = p.join("n1/weft.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    // Nothing listens there.
    let down = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        &toml,
        config.replace(
            "otlp_endpoint = \"\"",
            &format!("otlp_endpoint = \"{down}\""),
        ),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{api}");
    let mut node = Node(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "node",
                "run",
                "--dir",
                "n1",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ])
            .args(["--api", &api])
            .current_dir(p)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..20 {
        let r = http
            .post(format!("{url}/v1/authorize"))
            .body(r#"{"principal": "User::\"a\"", "action": "Action::\"v\"", "resource": "Doc::\"d\""}"#)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let pid = node.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = node.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never stopped");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(node.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("ExportError"),
        "the failed export is logged: {log}"
    );
}
