//! Envoy's ext_authz `Check` against `POST /v1/authorize`, in one run, on
//! one in-process node over loopback: the same allowed decision (a Weft
//! token for alice, a route to `Doc::"7"`, a permit) asked by 1 and by 16
//! concurrent clients, each client on its own connection (an HTTP/2
//! channel for gRPC, a keep-alive HTTP/1.1 connection for the API), each
//! asking as fast as it is answered.
//!
//! Prints the rate, p50 and p99 of each, and the ratio of the rates.
//! `WEFT_BENCH_SECS` sets how long each case runs (default 3). The
//! clients run in the node's process, on the same cores: the figures are
//! what one machine does with both ends, not a node's ceiling.
//!
//! `cargo bench -p weft-node --bench ext_authz`

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use weft_crdt::{BundleContent, PolicyDoc};
use weft_node::daemon::{NodeOptions, spawn_node};
use weft_protocol::token::Token;
use weft_protocol::update::{SignedUpdate, actor_for};

const ROUTES: &str = r#"
[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"view"' }
"#;

/// One case's figures.
struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `clients` loops of `one` for `secs`, each with its own state made
/// by `make`.
async fn run<C, M, MF, F, FF>(clients: usize, secs: u64, make: M, one: F) -> Figures
where
    C: Send + 'static,
    M: Fn() -> MF,
    MF: std::future::Future<Output = C>,
    F: Fn(C) -> FF + Send + Sync + Copy + 'static,
    FF: std::future::Future<Output = C> + Send,
{
    let mut tasks = Vec::new();
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(secs);
    for _ in 0..clients {
        let mut c = make().await;
        tasks.push(tokio::spawn(async move {
            // Warm the connection, then wait for the common start.
            c = one(c).await;
            tokio::time::sleep_until(start.into()).await;
            let mut samples = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                c = one(c).await;
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        rate: all.len() as f64 / secs as f64,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn main() {
    let secs: u64 = std::env::var("WEFT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mesh = support::mesh_dirs(1);
    let ops = weft_node::keyfile::read(&mesh.path().join("ops.key")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut opts = NodeOptions::new(mesh.path().join("n1"));
        opts.ext_authz = Some("127.0.0.1:0".into());
        let node = spawn_node(opts).await.unwrap();
        let grpc = format!("http://{}", node.ext_authz_addr().unwrap());
        let api = node.api_url();

        let mut doc = PolicyDoc::new();
        let mut content = BundleContent::default();
        content.policies.insert(
            "p".into(),
            r#"permit(principal == User::"alice", action == Action::"view", resource);"#.into(),
        );
        content.routes = Some(ROUTES.into());
        let change = doc
            .build_bundle(actor_for(&ops.public(), [1; 8]), "web", &content, 0)
            .unwrap()
            .unwrap();
        let mut update = SignedUpdate::new(&change, 1);
        update.sign(&ops).unwrap();
        let pushed = reqwest::Client::new()
            .post(format!("{api}/v1/updates"))
            .body(update.to_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(pushed.status(), 202);

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = weft_protocol::token::issue(
            &Token {
                principal: r#"User::"alice""#.into(),
                attrs: Default::default(),
                issuer: ops.public(),
                issued: now - 10,
                expires: now + 3600,
                id: [7; 16],
            },
            &ops,
        );
        let headers: HashMap<String, String> =
            [("authorization".to_owned(), format!("Bearer {token}"))].into();
        let check = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/docs/7".into(),
                        host: "docs.example.com".into(),
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let authorize = serde_json::json!({
            "token": token,
            "action": r#"Action::"view""#,
            "resource": r#"Doc::"7""#,
        })
        .to_string();

        println!(
            "ext_authz Check against POST /v1/authorize: one allowed decision, {secs} s per case"
        );
        println!("| clients | Check/s | p50 | p99 | authorize/s | p50 | p99 | Check / authorize |");
        println!("|---|---|---|---|---|---|---|---|");
        for clients in [1usize, 16] {
            let g = {
                let grpc = grpc.clone();
                let check = check.clone();
                run(
                    clients,
                    secs,
                    || {
                        let grpc = grpc.clone();
                        let check = check.clone();
                        async move { (AuthorizationClient::connect(grpc).await.unwrap(), check) }
                    },
                    |(mut client, check)| async move {
                        let r = client.check(check.clone()).await.unwrap().into_inner();
                        assert_eq!(r.status.map(|s| s.code), Some(0), "Check did not allow");
                        (client, check)
                    },
                )
                .await
            };
            let h = {
                let url = format!("{api}/v1/authorize");
                let body = authorize.clone();
                run(
                    clients,
                    secs,
                    || {
                        let url = url.clone();
                        let body = body.clone();
                        async move {
                            let client = reqwest::Client::builder()
                                .pool_max_idle_per_host(1)
                                .build()
                                .unwrap();
                            (client, url, body)
                        }
                    },
                    |(client, url, body)| async move {
                        let r = client.post(&url).body(body.clone()).send().await.unwrap();
                        let text = r.text().await.unwrap();
                        assert!(text.contains(r#""decision":"allow""#), "{text}");
                        (client, url, body)
                    },
                )
                .await
            };
            println!(
                "| {clients} | {:.0} | {:.0} µs | {:.0} µs | {:.0} | {:.0} µs | {:.0} µs | {:.2} |",
                g.rate,
                g.p50.as_secs_f64() * 1e6,
                g.p99.as_secs_f64() * 1e6,
                h.rate,
                h.p50.as_secs_f64() * 1e6,
                h.p99.as_secs_f64() * 1e6,
                g.rate / h.rate,
            );
        }
        node.shutdown().await.unwrap();
    });
}
