//! Envoy's ext_authz over gRPC against a real node: a node run in-process
//! with `ext_authz` on a loopback port, a signed bundle with routes, a
//! policy and a SPIFFE trust domain pushed over its API, and `Check`
//! driven by the `AuthorizationClient` of the same Envoy types an Envoy
//! build speaks. Also: `weft node run --ext-authz-listen` refusing a port
//! it cannot bind, and a non-loopback address without `api_insecure`.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use tonic::transport::Channel;
use weft_crdt::{BundleContent, PolicyDoc};
use weft_node::daemon::{NodeHandle, NodeOptions, spawn_node};
use weft_protocol::identity::SecretKey;
use weft_protocol::token::Token;
use weft_protocol::update::{SignedUpdate, actor_for};

const ROUTES: &str = r#"
headers = ["x-tenant"]
[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"view"', DELETE = 'Action::"delete"' }
"#;

const ISSUERS: &str = r#"
[[spiffe]]
trust_domain = "prod.example.org"
audience = ["weft"]
jwks = '{"keys": []}'
"#;

const ALICE: &str = r#"permit(principal == User::"alice", action == Action::"view", resource)
    when { context.http.headers["x-tenant"] == "red" };"#;

const WEB: &str = r#"permit(principal == Workload::"spiffe://prod.example.org/ns/web", action == Action::"view", resource);"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `change` with the operator's key and pushes it.
async fn push(node: &NodeHandle, ops: &SecretKey, change: &weft_crdt::Change) {
    let mut update = SignedUpdate::new(change, 1);
    update.sign(ops).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/updates", node.api_url()))
        .body(update.to_bytes())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"applied\""), "{body}");
}

/// A `CheckRequest` as Envoy sends one for `method path` on
/// docs.example.com from 10.1.2.3.
fn check(method: &str, path: &str, headers: &[(&str, &str)], peer: &str) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([(":path".to_owned(), path.to_owned())])
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "10.1.2.3".into(),
                        ..Default::default()
                    })),
                }),
                principal: peer.into(),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "docs.example.com".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The gRPC code, the HTTP status Envoy answers with (200 for an allow),
/// the headers, and the JSON body of a denied answer.
fn read(r: &CheckResponse) -> (i32, i32, HashMap<String, String>, serde_json::Value) {
    let code = r.status.as_ref().map_or(-1, |s| s.code);
    let headers = |h: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        h.iter()
            .filter_map(|o| o.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    match r.http_response.as_ref() {
        Some(HttpResponse::OkResponse(ok)) => {
            (code, 200, headers(&ok.headers), serde_json::Value::Null)
        }
        Some(HttpResponse::DeniedResponse(d)) => (
            code,
            d.status.as_ref().map_or(0, |s| s.code),
            headers(&d.headers),
            serde_json::from_str(&d.body).unwrap(),
        ),
        other => panic!("no HTTP response: {other:?}"),
    }
}

async fn ask(client: &mut AuthorizationClient<Channel>, req: CheckRequest) -> CheckResponse {
    client.check(req).await.expect("Check answers").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_allows_denies_and_follows_revocations() {
    let mesh = support::mesh_dirs(1);
    let ops = weft_node::keyfile::read(&mesh.path().join("ops.key")).unwrap();
    let mut opts = NodeOptions::new(mesh.path().join("n1"));
    opts.ext_authz = Some("127.0.0.1:0".into());
    let node = spawn_node(opts).await.unwrap();
    let addr = node.ext_authz_addr().expect("ext_authz is served");

    let mut doc = PolicyDoc::new();
    let mut content = BundleContent::default();
    content.policies.insert("alice".into(), ALICE.into());
    content.policies.insert("web".into(), WEB.into());
    content.routes = Some(ROUTES.into());
    content.issuers = Some(ISSUERS.into());
    let bundle = doc
        .build_bundle(actor_for(&ops.public(), [1; 8]), "web", &content, 0)
        .unwrap()
        .unwrap();
    push(&node, &ops, &bundle).await;
    {
        // The bundle is in force: its routes and its trust domain.
        let v = node.view();
        let g = v.gateway();
        assert!(g.routes.headers.contains("x-tenant") && !g.issuers.is_empty());
    }

    let token = weft_protocol::token::issue(
        &Token {
            principal: r#"User::"alice""#.into(),
            attrs: Default::default(),
            issuer: ops.public(),
            issued: now() - 10,
            expires: now() + 3600,
            id: [7; 16],
        },
        &ops,
    );
    let bearer = format!("Bearer {token}");
    let alice = [("authorization", bearer.as_str()), ("x-tenant", "red")];
    let mut client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("the ext_authz listener accepts");

    // An allowed route: OK, with the principal and the decision id for
    // the upstream, overwriting whatever the client sent.
    let mut forged = alice.to_vec();
    forged.push(("x-weft-principal", "User::\"root\""));
    let answer = ask(&mut client, check("GET", "/docs/7?v=2", &forged, "")).await;
    let (code, http, headers, _) = read(&answer);
    assert_eq!((code, http), (0, 200), "{answer:?}");
    assert_eq!(headers["x-weft-principal"], r#"User::"alice""#);
    let allowed_id = headers["x-weft-decision-id"].clone();
    assert_eq!(allowed_id.len(), 32, "{allowed_id}");

    // The context decides: another tenant is a 403.
    let blue = [("authorization", bearer.as_str()), ("x-tenant", "blue")];
    let (code, http, _, body) = read(&ask(&mut client, check("GET", "/docs/7", &blue, "")).await);
    assert_eq!((code, http), (7, 403), "{body}");

    // No credential: 401 with a challenge, the body of /v1/forward-auth.
    let (code, http, headers, body) =
        read(&ask(&mut client, check("GET", "/docs/7", &[], "")).await);
    assert_eq!((code, http), (16, 401), "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["decision_id"], headers["x-weft-decision-id"].as_str());
    for field in [
        "principal",
        "route",
        "reasons",
        "errors",
        "revoked",
        "state",
    ] {
        assert!(body.get(field).is_some(), "{field} missing from {body}");
    }
    // A credential that is not a bearer one, or a forged token: 401.
    for bad in ["Basic YWxpY2U6eA==", "Bearer wtk1.forged"] {
        let (code, http, _, body) = read(
            &ask(
                &mut client,
                check("GET", "/docs/7", &[("authorization", bad)], ""),
            )
            .await,
        );
        assert_eq!((code, http), (16, 401), "{bad}: {body}");
    }

    // A route alice may not take: 403, naming the route.
    let (code, http, headers, body) =
        read(&ask(&mut client, check("DELETE", "/docs/7", &alice, "")).await);
    assert_eq!((code, http), (7, 403), "{body}");
    assert_eq!(body["route"], "web: /docs/{id}");
    assert_eq!(body["principal"], r#"User::"alice""#);
    let denied_id = headers["x-weft-decision-id"].clone();
    // No route at all: 403 (unmatched is deny).
    let (_, http, _, _) = read(&ask(&mut client, check("GET", "/other", &alice, "")).await);
    assert_eq!(http, 403);

    // The mTLS peer's SPIFFE id, of a trust domain the bundle trusts.
    let web = "spiffe://prod.example.org/ns/web";
    let (code, http, headers, _) = read(&ask(&mut client, check("GET", "/docs/1", &[], web)).await);
    assert_eq!((code, http), (0, 200));
    assert_eq!(headers["x-weft-principal"], format!("Workload::\"{web}\""));
    // Trusted, but not allowed by the policies: 403.
    let (_, http, _, _) = read(
        &ask(
            &mut client,
            check("GET", "/docs/1", &[], "spiffe://prod.example.org/ns/db"),
        )
        .await,
    );
    assert_eq!(http, 403);
    // Of a domain no bundle trusts, or not a workload id: 401.
    for peer in [
        "spiffe://evil.example.org/ns/web",
        "spiffe://PROD.example.org/ns/web",
        "spiffe://prod.example.org",
    ] {
        let (code, http, _, body) =
            read(&ask(&mut client, check("GET", "/docs/1", &[], peer)).await);
        assert_eq!((code, http), (16, 401), "{peer}: {body}");
    }

    // Requests that hold no HTTP request: 403 with the reason, and the
    // node still answers.
    let mut no_method = check("", "/docs/1", &alice, "");
    if let Some(http) = no_method
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.headers.remove(":path");
    }
    for (req, needle) in [
        (CheckRequest::default(), "no attributes"),
        (
            CheckRequest {
                attributes: Some(AttributeContext::default()),
            },
            "attributes.request.http",
        ),
        (no_method, "no method"),
    ] {
        let (code, http, _, body) = read(&ask(&mut client, req).await);
        assert_eq!((code, http), (7, 403), "{body}");
        assert!(
            body["errors"][0].as_str().unwrap().contains(needle),
            "{body}"
        );
    }

    // Every decision is recorded: the deny is in the audit trail.
    let audit_url = format!("{}/v1/audit", node.api_url());
    let mut found = false;
    for _ in 0..50 {
        let text = reqwest::get(&audit_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(&denied_id) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the deny {denied_id} is not in the audit trail");

    // alice revoked: the route she was allowed is a 403, `revoked`.
    let revoke = doc
        .build_revoke(
            actor_for(&ops.public(), [2; 8]),
            r#"User::"alice""#,
            "left",
            0,
        )
        .unwrap()
        .unwrap();
    push(&node, &ops, &revoke).await;
    let (code, http, _, body) = read(&ask(&mut client, check("GET", "/docs/7", &alice, "")).await);
    assert_eq!((code, http), (7, 403), "{body}");
    assert_eq!(body["revoked"], true);

    node.shutdown().await.unwrap();
    assert!(
        AuthorizationClient::connect(format!("http://{addr}"))
            .await
            .is_err(),
        "the ext_authz listener outlived the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_needs_api_insecure() {
    let mesh = support::mesh_dirs(1);
    let mut opts = NodeOptions::new(mesh.path().join("n1"));
    opts.ext_authz = Some("0.0.0.0:0".into());
    let err = spawn_node(opts.clone()).await.err().expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("ext_authz_listen") && msg.contains("api_insecure"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    opts.api_insecure = true;
    let node = spawn_node(opts).await.unwrap();
    assert!(node.ext_authz_addr().is_some());
    node.shutdown().await.unwrap();
}

#[test]
fn weft_node_run_stops_when_it_cannot_bind_ext_authz() {
    let mesh = support::mesh_dirs(1);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = support::weft(
        mesh.path(),
        &[
            "node",
            "run",
            "--dir",
            "n1",
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{}", support::free_port()),
            "--api",
            &format!("127.0.0.1:{}", support::free_port()),
            "--ext-authz-listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("ext_authz_listen 127.0.0.1:{port}: cannot listen")),
        "{err}"
    );
}
