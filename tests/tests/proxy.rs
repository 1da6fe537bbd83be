//! A real nginx in front of a service asks a Weft mesh (`auth_request` to
//! `/v1/forward-auth`), with identities from an OIDC issuer whose JWKS the
//! test serves: valid, missing, expired, foreign and unknown-key tokens,
//! a forbidden route, a revocation made at the other node, a key
//! rotation, and the issuer down.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use weft_crdt::BundleContent;
use weft_tests::mesh::{Author, Fixture, addr, admitted, eventually, heads, heads_are, push};
use weft_tests::proxy::{IdpKey, JwksServer, Nginx, NodeProcess, claims, upstream};

const ISS: &str = "http://idp.weft.test";
const AUD: &str = "weft-demo";

const ALICE_VIEWS: &str =
    r#"permit(principal == User::"alice", action == Action::"view", resource);"#;
const ANYONE_VIEWS_PUBLIC: &str =
    r#"permit(principal, action == Action::"view", resource == Doc::"public");"#;

fn policies() -> std::collections::BTreeMap<String, String> {
    [
        ("alice".to_owned(), ALICE_VIEWS.to_owned()),
        ("public".to_owned(), ANYONE_VIEWS_PUBLIC.to_owned()),
    ]
    .into()
}

const ROUTES: &str = r#"
[[route]]
host = "admin.weft.test"
path = "/docs/{id}"
resource = 'Admin::"{id}"'
actions = { GET = 'Action::"view"' }

[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"view"', DELETE = 'Action::"delete"' }
"#;

fn issuers(jwks_url: &str) -> String {
    format!(
        "[[oidc]]\nissuer = \"{ISS}\"\naudience = \"{AUD}\"\njwks_url = \"{jwks_url}\"\nalgorithms = [\"EdDSA\"]\n"
    )
}

async fn get(url: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

async fn delete(url: &str, token: &str) -> Result<u16> {
    Ok(reqwest::Client::new()
        .delete(url)
        .bearer_auth(token)
        .send()
        .await?
        .status()
        .as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_asks_the_mesh_with_identities_from_an_oidc_issuer() -> Result<()> {
    weft_tests::mesh::init_logs();
    let fx = Fixture::new()?;
    let (a, _) = fx.spawn("a", true, &[]).await?;
    let (b, _) = fx.spawn("b", true, &[addr(&a)]).await?;
    eventually(
        Duration::from_secs(10),
        "a and b admit each other",
        || async { Ok(admitted(&a).await? == 1 && admitted(&b).await? == 1) },
    )
    .await?;

    let jwks = JwksServer::start().await?;
    let k1 = IdpKey::new("k1")?;
    jwks.add(&k1);
    let mut author = Author::new(&fx);
    let content = BundleContent {
        policies: policies(),
        routes: Some(ROUTES.to_owned()),
        issuers: Some(issuers(&jwks.url())),
        ..Default::default()
    };
    push(&a, author.bundle_content("web", &content)?).await?;
    let expected = heads(&a).await?;
    eventually(Duration::from_secs(10), "b has the bundle", || {
        heads_are(&b, &expected)
    })
    .await?;

    let status = weft_tests::mesh::http_status(&a).await?;
    let gateway = &status["gateway"];
    ensure!(
        gateway["routes"] == 2 && gateway["issuers"] == serde_json::json!([format!("oidc {ISS}")]),
        "status shows the routes and issuers in force: {gateway}; bundles: {}",
        status["bundles"]
    );

    let app = upstream().await?;
    let nginx = Nginx::start(app, &a.api_url().replace("http://", ""), true)?;
    let doc = nginx.url("/docs/1");
    let alice = k1.sign(&claims(ISS, "alice", AUD, 600))?;

    // An allowed route with a valid token reaches the upstream, which is
    // told who the principal is.
    let (code, body) = get(&doc, Some(&alice)).await?;
    ensure!(
        code == 200,
        "alice: {code} {body}; nginx: {}",
        nginx.error_log()
    );
    ensure!(body == r#"upstream saw User::"alice""#, "{body}");

    // Weft's own tokens are bearer credentials too.
    let now = weft_tests::mesh::now();
    let wtk = weft_protocol::token::issue(
        &weft_protocol::token::Token {
            principal: r#"User::"alice""#.into(),
            attrs: Default::default(),
            issuer: fx.alice.public(),
            issued: now - 10,
            expires: now + 600,
            id: [5; 16],
        },
        &fx.alice,
    );
    let (code, body) = get(&doc, Some(&wtk)).await?;
    ensure!(code == 200, "a wtk1 token: {code} {body}");
    ensure!(body == r#"upstream saw User::"alice""#, "{body}");

    // No identity, or one that does not stand: 401.
    let rogue = IdpKey::new("rogue")?;
    let refused = [
        ("no token", None),
        ("expired", Some(k1.sign(&claims(ISS, "alice", AUD, -120))?)),
        (
            "untrusted issuer",
            Some(k1.sign(&claims("http://evil.test", "alice", AUD, 600))?),
        ),
        (
            "wrong audience",
            Some(k1.sign(&claims(ISS, "alice", "other", 600))?),
        ),
        (
            "unknown key",
            Some(rogue.sign(&claims(ISS, "alice", AUD, 600))?),
        ),
        ("not a token", Some("abc".to_owned())),
    ];
    for (what, token) in &refused {
        let (code, body) = get(&doc, token.as_deref()).await?;
        ensure!(code == 401, "{what}: {code} {body}");
        ensure!(
            !body.contains("upstream saw"),
            "{what} reached the upstream"
        );
    }

    // A route the policies forbid: 403.
    ensure!(delete(&doc, &alice).await? == 403, "alice may not delete");
    let bob = k1.sign(&claims(ISS, "bob", AUD, 600))?;
    let (code, _) = get(&doc, Some(&bob)).await?;
    ensure!(code == 403, "bob on docs/1: {code}");
    let (code, body) = get(&nginx.url("/docs/public"), Some(&bob)).await?;
    ensure!(
        code == 200 && body.contains(r#"User::"bob""#),
        "bob on public: {code} {body}"
    );
    let (code, _) = get(&nginx.url("/elsewhere"), Some(&alice)).await?;
    ensure!(code == 403, "an unrouted path: {code}");
    // The original host picks the host's own routes: there, /docs/public
    // is Admin::"public", which bob may not view.
    let code = reqwest::Client::new()
        .get(nginx.url("/docs/public"))
        .header("host", "admin.weft.test")
        .bearer_auth(&bob)
        .send()
        .await?
        .status()
        .as_u16();
    ensure!(code == 403, "bob on admin.weft.test: {code}");

    // The issuer rotates to a key with a new kid: picked up.
    let k2 = IdpKey::new("k2")?;
    jwks.add(&k2);
    // The node fetches the keys again for an unknown kid, at most once per
    // issuer in 10 s (the unknown-key token above may just have used
    // that turn), so the new key is picked up within that time.
    let alice2 = k2.sign(&claims(ISS, "alice", AUD, 600))?;
    let took = eventually(
        Duration::from_secs(15),
        "a token under the new key",
        || async { Ok(get(&doc, Some(&alice2)).await?.0 == 200) },
    )
    .await?;
    eprintln!("the rotated key was picked up after {took:?}");

    // The issuer goes down: the cached keys keep working, for tokens the
    // node has not seen too.
    jwks.stop();
    let hits = jwks.hits();
    for key in [&k1, &k2] {
        let fresh = key.sign(&claims(ISS, "alice", AUD, 300))?;
        let (code, body) = get(&doc, Some(&fresh)).await?;
        ensure!(
            code == 200,
            "{} with the issuer down: {code} {body}",
            key.kid
        );
    }
    ensure!(jwks.hits() == hits, "the stopped server was reached");

    // Alice is revoked at the other node: nginx refuses her within 1 s.
    let started = Instant::now();
    push(&b, author.revoke(r#"User::"alice""#)?).await?;
    loop {
        let (code, _) = get(&doc, Some(&alice)).await?;
        if code == 403 {
            break;
        }
        ensure!(code == 200, "alice during the revocation: {code}");
        ensure!(
            started.elapsed() < Duration::from_secs(1),
            "alice was still allowed through nginx 1 s after her revocation at b"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "revocation at b refused through nginx at a after {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Requests through nginx to the upstream, with and without
/// `auth_request` to the node, side by side in one run, at 1 and 16
/// connections: the latency Weft adds (wrk's p50 and p99, with minus
/// without), the throughput ratio, and the node's own server-side p50 and
/// p99 of `/v1/forward-auth`. Each setting runs `WEFT_BENCH_ROUNDS` times
/// (default 2), alternating. Run in release: scripts/bench-proxy.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-proxy.sh runs it"]
async fn proxy_bench() -> Result<()> {
    let secs: u64 = std::env::var("WEFT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rounds: usize = std::env::var("WEFT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let fx = Fixture::new()?;
    let (a, dir) = fx.spawn("a", true, &[]).await?;
    let jwks = JwksServer::start().await?;
    let k1 = IdpKey::new("k1")?;
    jwks.add(&k1);
    let mut author = Author::new(&fx);
    let content = BundleContent {
        policies: policies(),
        routes: Some(ROUTES.to_owned()),
        issuers: Some(issuers(&jwks.url())),
        ..Default::default()
    };
    push(&a, author.bundle_content("web", &content)?).await?;
    // The node that answers nginx is a `weft node run` process on the
    // same store, served as a site serves it.
    a.shutdown().await?;
    let node = NodeProcess::start(&dir).await?;
    let api = node.api.clone();
    let app = upstream().await?;
    let with = Nginx::start(app, &api, true)?;
    let without = Nginx::start(app, &api, false)?;
    let alice = k1.sign(&claims(ISS, "alice", AUD, 3600))?;
    let header = vec![format!("Authorization: Bearer {alice}")];
    let (code, body) = get(&with.url("/docs/1"), Some(&alice)).await?;
    ensure!(
        code == 200,
        "the benchmark's request is not allowed: {code} {body}"
    );
    let metrics = || async {
        Ok::<_, anyhow::Error>(
            reqwest::get(format!("http://{api}/metrics"))
                .await?
                .text()
                .await?,
        )
    };
    for conns in [1usize, 16] {
        let (mut base, mut auth) = (Vec::new(), Vec::new());
        let (mut server50, mut server99) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let url = without.url("/docs/1");
            let h = header.clone();
            base.push(
                tokio::task::spawn_blocking(move || weft_tests::proxy::wrk(&url, conns, secs, &h))
                    .await??,
            );
            let before = metrics().await?;
            let url = with.url("/docs/1");
            let h = header.clone();
            let run =
                tokio::task::spawn_blocking(move || weft_tests::proxy::wrk(&url, conns, secs, &h))
                    .await??;
            ensure!(run.non_2xx == 0, "{} requests were refused", run.non_2xx);
            auth.push(run);
            let after = metrics().await?;
            let q = |q| weft_tests::proxy::server_quantile(&before, &after, "/v1/forward-auth", q);
            server50.push(q(0.5).unwrap_or(f64::NAN));
            server99.push(q(0.99).unwrap_or(f64::NAN));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let pick = |runs: &[weft_tests::proxy::WrkRun],
                    f: fn(&weft_tests::proxy::WrkRun) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            median(&mut v)
        };
        let (b50, b99, brps) = (
            pick(&base, |r| r.p50_us),
            pick(&base, |r| r.p99_us),
            pick(&base, |r| r.rps),
        );
        let (a50, a99, arps) = (
            pick(&auth, |r| r.p50_us),
            pick(&auth, |r| r.p99_us),
            pick(&auth, |r| r.rps),
        );
        println!(
            "PROXY connections={conns} rounds={rounds} secs={secs} | without: p50 {b50:.0} µs p99 {b99:.0} µs {brps:.0} req/s | with auth_request: p50 {a50:.0} µs p99 {a99:.0} µs {arps:.0} req/s | Weft adds p50 {:.0} µs p99 {:.0} µs | throughput ratio {:.2} | node's forward-auth p50 {:.0} µs p99 {:.0} µs",
            a50 - b50,
            a99 - b99,
            arps / brps,
            median(&mut server50),
            median(&mut server99),
        );
    }
    Ok(())
}
