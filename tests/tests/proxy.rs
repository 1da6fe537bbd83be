//! A real nginx in front of a service asks a Weft mesh (`auth_request` to
//! `/v1/forward-auth`), with identities from an OIDC issuer whose JWKS the
//! test serves: valid, missing, expired, foreign and unknown-key tokens,
//! a forbidden route, a revocation made at the other node, a key
//! rotation, and the issuer down.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use weft_crdt::BundleContent;
use weft_tests::mesh::{Author, Fixture, addr, admitted, eventually, heads, heads_are, push};
use weft_tests::proxy::{IdpKey, JwksServer, Nginx, claims, upstream};

const ISS: &str = "http://idp.weft.test";
const AUD: &str = "weft-demo";

const POLICIES: &str = r#"
permit(principal == User::"alice", action == Action::"view", resource);
permit(principal, action == Action::"view", resource == Doc::"public");
"#;

const ROUTES: &str = r#"
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
        policies: [("docs".to_owned(), POLICIES.to_owned())].into(),
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
        gateway["routes"] == 1 && gateway["issuers"] == serde_json::json!([format!("oidc {ISS}")]),
        "status shows the routes and issuers in force: {gateway}"
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

    // The issuer rotates to a key with a new kid: picked up.
    let k2 = IdpKey::new("k2")?;
    jwks.add(&k2);
    let alice2 = k2.sign(&claims(ISS, "alice", AUD, 600))?;
    let (code, body) = get(&doc, Some(&alice2)).await?;
    ensure!(code == 200, "a token under the new key: {code} {body}");

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
