//! Bearer JWTs resolved by [`weft_node::identity::Identities`], with real
//! parts: tokens signed by jsonwebtoken with RS256 (a committed test key),
//! ES256 and Ed25519 keys made here, key sets served by a real HTTP server
//! on loopback that the tests control (and stop), views built from real
//! bundles, and the key sets saved in a real directory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::ActorId;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use weft_crdt::{BundleContent, PolicyDoc, PolicyView};
use weft_node::identity::jwks::JwksOptions;
use weft_node::identity::{Identities, IdentityOptions};
use weft_protocol::gateway::Identity;
use weft_protocol::trust::{QuarantineLimits, TrustRoot};

/// A signing key with its public JWK.
struct Signer {
    alg: jsonwebtoken::Algorithm,
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn new(alg: jsonwebtoken::Algorithm, kid: &str) -> Signer {
        let key = match alg {
            jsonwebtoken::Algorithm::EdDSA => {
                // PKCS#8 v1 of a random seed (jsonwebtoken reads the
                // public key out of this form only).
                let mut der = vec![
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04,
                    0x22, 0x04, 0x20,
                ];
                der.extend_from_slice(&rand::random::<[u8; 32]>());
                EncodingKey::from_ed_der(&der)
            }
            jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_der(
                &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .unwrap()
                    .serialize_der(),
            ),
            jsonwebtoken::Algorithm::RS256 => {
                use rustls_pki_types::pem::PemObject as _;
                let pem = include_bytes!("fixtures/jwt-rs256.pem");
                let der = rustls_pki_types::PrivatePkcs1KeyDer::from_pem_slice(pem).unwrap();
                EncodingKey::from_rsa_der(der.secret_pkcs1_der())
            }
            other => panic!("no test key for {other:?}"),
        };
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Signer {
            alg,
            kid: kid.into(),
            key,
            jwk: serde_json::to_value(&jwk).unwrap(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).unwrap()
    }
}

fn set(signers: &[&Signer]) -> Value {
    json!({ "keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>() })
}

fn now_ms() -> u64 {
    weft_node::clock::now_ms()
}

fn claims(iss: &str, sub: &str, exp_in_secs: i64) -> Value {
    let now = (now_ms() / 1000) as i64;
    json!({
        "iss": iss, "sub": sub, "aud": ["other", "weft"],
        "exp": now + exp_in_secs, "iat": now, "email": format!("{sub}@example.com"),
    })
}

/// A key set server on loopback: serves `set`, counts requests, stops on
/// demand.
struct JwksServer {
    url: String,
    set: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JwksServer {
    async fn start(initial: Value) -> JwksServer {
        let set = Arc::new(Mutex::new(initial));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (set.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (s, h) = (s.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    axum::Json(s.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        JwksServer {
            url,
            set,
            hits,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

fn view(issuers: Option<&str>) -> PolicyView {
    let mut doc = PolicyDoc::new();
    let content = BundleContent {
        policies: [(
            "p".to_owned(),
            "permit(principal, action, resource);".to_owned(),
        )]
        .into(),
        issuers: issuers.map(str::to_owned),
        ..Default::default()
    };
    doc.build_bundle(ActorId::from(vec![1; 16]), "idp", &content, 1)
        .unwrap();
    let view = doc.view().clone();
    if issuers.is_some() {
        assert!(
            !view.gateway().issuers.is_empty(),
            "the issuers file is refused: {:?}",
            view.bundles().map(|b| &b.error).collect::<Vec<_>>()
        );
    }
    view
}

fn root() -> TrustRoot {
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: Vec::new(),
        root_threshold: 1,
        operators: Vec::new(),
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: 86_400,
        accepted_heads: Vec::new(),
    }
}

fn options(dir: Option<&std::path::Path>) -> IdentityOptions {
    IdentityOptions {
        jwks: JwksOptions {
            dir: dir.map(|d| d.join("jwks")),
            refetch_after: Duration::from_millis(400),
            ..JwksOptions::default()
        },
        ..IdentityOptions::default()
    }
}

/// The principal, or the refusal.
async fn resolve(
    ids: &Identities,
    token: &str,
    view: &PolicyView,
    at_ms: u64,
) -> Result<String, String> {
    match ids.resolve(Some(token), view, &root(), at_ms).await {
        Identity::Verified(v) => Ok(format!("{} {}", v.principal, v.source)),
        Identity::Refused(why) => Err(why),
        Identity::Missing => Err("missing".into()),
    }
}

async fn refused(ids: &Identities, token: &str, view: &PolicyView, needle: &str) {
    let why = resolve(ids, token, view, now_ms()).await.unwrap_err();
    assert!(why.starts_with("token refused: "), "{why}");
    assert!(why.contains(needle), "want {needle:?} in {why:?}");
    assert!(
        !why.contains("mallory"),
        "the refusal quotes a claim: {why}"
    );
}

#[tokio::test]
async fn jwts_of_trusted_issuers_resolve_and_bad_ones_are_refused() {
    let rs = Signer::new(jsonwebtoken::Algorithm::RS256, "rs");
    let es = Signer::new(jsonwebtoken::Algorithm::ES256, "es");
    let ed = Signer::new(jsonwebtoken::Algorithm::EdDSA, "ed");
    let unpublished = Signer::new(jsonwebtoken::Algorithm::EdDSA, "gone");
    let mut server = JwksServer::start(set(&[&rs, &es, &ed])).await;
    let iss = "https://idp.example.com";
    let strict = "https://strict.example.com";
    let view = view(Some(&format!(
        r#"
[[oidc]]
issuer = "{iss}"
audience = "weft"
jwks_url = "{url}"
claims = ["email"]

[[oidc]]
issuer = "{strict}"
audience = "weft"
jwks_url = "{url}"
algorithms = ["ES256"]
leeway_secs = 0
"#,
        url = server.url
    )));
    let ids = Identities::new(options(None));

    for s in [&rs, &es, &ed] {
        let t = s.sign(&claims(iss, "alice", 600));
        assert_eq!(
            resolve(&ids, &t, &view, now_ms()).await.unwrap(),
            format!(r#"User::"alice" oidc {iss}"#),
            "{:?}",
            s.alg
        );
    }
    assert_eq!(server.hits(), 1, "one fetch serves every key of the set");
    // The listed claims reach context.claims.
    let Identity::Verified(v) = ids
        .resolve(
            Some(&ed.sign(&claims(iss, "alice", 60))),
            &view,
            &root(),
            now_ms(),
        )
        .await
    else {
        panic!("refused")
    };
    let ctx = cedar_policy::Context::from_pairs([("claims".to_owned(), v.attrs)]).unwrap();
    assert_eq!(
        ctx.to_json_value().unwrap()["claims"]["email"],
        "alice@example.com"
    );
    assert_eq!(v.context_key, "claims");

    let mut c = claims(iss, "mallory", -120);
    refused(&ids, &ed.sign(&c), &view, "it has expired").await;
    // Within the leeway (60 s by default), an expired token still counts;
    // with none, it does not.
    c = claims(iss, "mallory", -30);
    assert!(resolve(&ids, &ed.sign(&c), &view, now_ms()).await.is_ok());
    c = claims(strict, "mallory", -30);
    refused(&ids, &es.sign(&c), &view, "it has expired").await;
    c = claims(iss, "mallory", 600);
    c["nbf"] = json!(now_ms() / 1000 + 600);
    refused(&ids, &ed.sign(&c), &view, "not valid yet").await;
    c = claims(iss, "mallory", 600);
    c["aud"] = json!("api");
    refused(&ids, &ed.sign(&c), &view, "aud holds none").await;
    c = claims("https://evil.example.com", "mallory", 600);
    refused(&ids, &ed.sign(&c), &view, "not trusted by any bundle").await;
    c = claims(iss, "mallory", 600);
    c.as_object_mut().unwrap().remove("exp");
    refused(&ids, &ed.sign(&c), &view, "no exp claim").await;
    c = claims(iss, "mallory", 600);
    c.as_object_mut().unwrap().remove("sub");
    refused(&ids, &ed.sign(&c), &view, "no sub claim").await;
    c = claims(iss, "mallory", 600);
    c["sub"] = json!(5);
    refused(&ids, &ed.sign(&c), &view, "no sub claim").await;
    // Signed by a key the issuer does not publish, under a published kid
    // and under an unknown one.
    let forged = Signer::new(jsonwebtoken::Algorithm::EdDSA, "ed");
    refused(
        &ids,
        &forged.sign(&claims(iss, "mallory", 600)),
        &view,
        "does not verify",
    )
    .await;
    refused(
        &ids,
        &unpublished.sign(&claims(iss, "mallory", 600)),
        &view,
        "does not publish",
    )
    .await;
    // A payload changed after signing.
    let good = ed.sign(&claims(iss, "alice", 600));
    let parts: Vec<&str> = good.split('.').collect();
    let other = ed.sign(&claims(iss, "mallory", 600));
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).unwrap(),
        parts[2]
    );
    refused(&ids, &swapped, &view, "does not verify").await;
    // An algorithm the issuer does not allow.
    refused(
        &ids,
        &rs.sign(&claims(strict, "mallory", 600)),
        &view,
        "alg RS256 is not allowed",
    )
    .await;
    // alg none.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "ed"})),
        b64(&claims(iss, "mallory", 600))
    );
    refused(&ids, &none, &view, "alg none is never accepted").await;
    // HS256 with the RSA public key (its JWK's modulus, and the JWK
    // text) as the shared secret.
    for secret in [
        rs.jwk["n"].as_str().unwrap().as_bytes().to_vec(),
        rs.jwk.to_string().into_bytes(),
    ] {
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("rs".into());
        let t = encode(
            &h,
            &claims(iss, "mallory", 600),
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        refused(&ids, &t, &view, "alg HS256 is not one of").await;
    }
    // Garbage and an oversized token.
    refused(&ids, "not.a.jwt", &view, "neither a wtk1 token nor").await;
    refused(&ids, "x", &view, "neither a wtk1 token nor").await;
    let mut big = claims(iss, "mallory", 600);
    big["pad"] = json!("p".repeat(9000));
    refused(&ids, &ed.sign(&big), &view, "over the limit of 8192").await;
    assert!(matches!(
        ids.resolve(None, &view, &root(), now_ms()).await,
        Identity::Missing
    ));
    server.stop().await;
}

#[tokio::test]
async fn spiffe_jwt_svids_resolve_to_workloads_of_their_trust_domain() {
    let ed = Signer::new(jsonwebtoken::Algorithm::EdDSA, "spire");
    let jwks = set(&[&ed]).to_string();
    let view = view(Some(&format!(
        "[[spiffe]]\ntrust_domain = \"prod.example.org\"\naudience = \"weft\"\njwks = '{jwks}'\n"
    )));
    let ids = Identities::new(options(None));
    let svid = |sub: &str| {
        let mut c = claims("https://spire.local", sub, 300);
        c["aud"] = json!("weft");
        ed.sign(&c)
    };
    assert_eq!(
        resolve(
            &ids,
            &svid("spiffe://prod.example.org/ns/web"),
            &view,
            now_ms()
        )
        .await
        .unwrap(),
        r#"Workload::"spiffe://prod.example.org/ns/web" spiffe://prod.example.org"#
    );
    refused(
        &ids,
        &svid("spiffe://other.example.org/ns/web"),
        &view,
        "not trusted",
    )
    .await;
    refused(
        &ids,
        &svid("spiffe://prod.example.org"),
        &view,
        "not a SPIFFE id in",
    )
    .await;
    refused(
        &ids,
        &svid("spiffe://prod.example.org/"),
        &view,
        "not a SPIFFE id in",
    )
    .await;
}

#[tokio::test]
async fn a_new_kid_is_fetched_within_the_rate_limit() {
    let k1 = Signer::new(jsonwebtoken::Algorithm::ES256, "k1");
    let k2 = Signer::new(jsonwebtoken::Algorithm::ES256, "k2");
    let k3 = Signer::new(jsonwebtoken::Algorithm::ES256, "k3");
    let mut server = JwksServer::start(set(&[&k1])).await;
    let iss = "https://idp.example.com";
    let view = view(Some(&format!(
        "[[oidc]]\nissuer = \"{iss}\"\naudience = \"weft\"\njwks_url = \"{}\"\n",
        server.url
    )));
    let ids = Identities::new(options(None));
    assert!(
        resolve(&ids, &k1.sign(&claims(iss, "a", 60)), &view, now_ms())
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 1);

    // The issuer rotates in k2. Right after a fetch, the rate limit (400 ms
    // here) holds: k2's tokens are refused, and nothing is fetched however
    // many arrive.
    *server.set.lock().unwrap() = set(&[&k1, &k2]);
    for i in 0..5 {
        let why = resolve(
            &ids,
            &k2.sign(&claims(iss, &format!("b{i}"), 60)),
            &view,
            now_ms(),
        )
        .await
        .unwrap_err();
        assert!(why.contains("fetched again less than"), "{why}");
    }
    assert_eq!(server.hits(), 1);
    assert_eq!(ids.metrics().fetches("limited"), 5);

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        resolve(&ids, &k2.sign(&claims(iss, "c", 60)), &view, now_ms())
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 2, "the unknown kid made one fetch");

    // A flood of tokens under a kid nobody publishes: at most one fetch
    // per 400 ms.
    let started = Instant::now();
    let mut tasks = Vec::new();
    let ids = Arc::new(ids);
    for i in 0..60 {
        let (ids, view, t) = (
            ids.clone(),
            view.clone(),
            k3.sign(&claims(iss, &format!("d{i}"), 60)),
        );
        tasks.push(tokio::spawn(async move {
            resolve(&ids, &t, &view, now_ms()).await
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    let allowed = 2 + (started.elapsed().as_millis() / 400) as usize + 1;
    assert!(
        server.hits() <= allowed,
        "{} fetches in {:?}",
        server.hits(),
        started.elapsed()
    );
    assert!(
        server.hits() >= 3,
        "the unknown kid was fetched at least once"
    );
    server.stop().await;
}

#[tokio::test]
async fn cached_keys_outlive_their_issuer_until_jwks_max_age_and_a_restart_uses_the_saved_set() {
    let dir = tempfile::tempdir().unwrap();
    let ed = Signer::new(jsonwebtoken::Algorithm::EdDSA, "ed");
    let mut server = JwksServer::start(set(&[&ed])).await;
    let iss = "https://idp.example.com";
    let view = view(Some(&format!(
        "[[oidc]]\nissuer = \"{iss}\"\naudience = \"weft\"\njwks_url = \"{}\"\n",
        server.url
    )));
    let ids = Identities::new(options(Some(dir.path())));
    assert!(
        resolve(&ids, &ed.sign(&claims(iss, "a", 60)), &view, now_ms())
            .await
            .is_ok()
    );
    let saved = weft_node::identity::jwks::saved_path(&dir.path().join("jwks"), &server.url);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.stop().await;

    // The issuer is down: the cached keys keep verifying.
    assert!(
        resolve(&ids, &ed.sign(&claims(iss, "b", 60)), &view, now_ms())
            .await
            .is_ok()
    );
    // A day and an hour later (jwks_max_age is a day), they do not.
    let later = now_ms() + 25 * 3600 * 1000;
    let late_token = ed.sign(&claims(iss, "c", 26 * 3600));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let why = resolve(&ids, &late_token, &view, later).await.unwrap_err();
    assert!(why.contains("over jwks_max_age (86400 s)"), "{why}");
    assert!(why.contains("fetching them again failed"), "{why}");
    let status = ids.status(&view, later);
    assert_eq!(status.len(), 1);
    assert!(status[0].stale);
    assert_eq!(status[0].keys_held, Some(1));
    assert!(status[0].last_error.is_some());
    assert!(!ids.status(&view, now_ms())[0].stale);
    assert_eq!(ids.metrics().fetches("ok"), 1);
    assert!(ids.metrics().fetches("error") >= 1);

    // A node restarted during the outage uses the saved set at once, with
    // no wait on the dead issuer.
    drop(ids);
    let restarted = Identities::new(options(Some(dir.path())));
    let started = Instant::now();
    assert!(
        resolve(&restarted, &ed.sign(&claims(iss, "d", 60)), &view, now_ms())
            .await
            .is_ok()
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        resolve(&restarted, &late_token, &view, later)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn cached_tokens_count_only_while_their_issuer_is_trusted_as_it_was() {
    let ed = Signer::new(jsonwebtoken::Algorithm::EdDSA, "ed");
    let jwks = set(&[&ed]).to_string();
    let iss = "https://idp.example.com";
    let file = |aud: &str| {
        format!("[[oidc]]\nissuer = \"{iss}\"\naudience = \"{aud}\"\njwks = '{jwks}'\n")
    };
    let trusted = view(Some(&file("weft")));
    let ids = Identities::new(options(None));
    let token = ed.sign(&claims(iss, "alice", 60));
    assert!(resolve(&ids, &token, &trusted, now_ms()).await.is_ok());
    assert!(resolve(&ids, &token, &trusted, now_ms()).await.is_ok());
    assert_eq!(ids.metrics().cache_hits(), 1);
    // Past its exp and leeway, the cached token is checked again, and
    // refused.
    let why = resolve(&ids, &token, &trusted, now_ms() + 200_000)
        .await
        .unwrap_err();
    assert!(why.contains("expired"), "{why}");
    assert_eq!(ids.metrics().cache_hits(), 1);
    assert!(resolve(&ids, &token, &trusted, now_ms()).await.is_ok());
    assert!(resolve(&ids, &token, &trusted, now_ms()).await.is_ok());
    assert_eq!(ids.metrics().cache_hits(), 2);

    // The issuer dropped from the bundles: refused, cached or not.
    let dropped = view(None);
    let why = resolve(&ids, &token, &dropped, now_ms()).await.unwrap_err();
    assert!(why.contains("not trusted by any bundle"), "{why}");
    // Changed (another audience): checked again, and refused.
    let changed = view(Some(&file("api")));
    let why = resolve(&ids, &token, &changed, now_ms()).await.unwrap_err();
    assert!(why.contains("aud holds none"), "{why}");
    assert!(resolve(&ids, &token, &trusted, now_ms()).await.is_ok());
    assert_eq!(ids.metrics().cache_hits(), 2);

    // With no cache, every request checks its token.
    let uncached = Identities::new(IdentityOptions {
        token_cache: 0,
        ..options(None)
    });
    for _ in 0..3 {
        assert!(resolve(&uncached, &token, &trusted, now_ms()).await.is_ok());
    }
    assert_eq!(uncached.metrics().cache_hits(), 0);
}

/// A node directory whose trust root has one operator, alice, with every
/// role; returns it and alice's key.
fn node_dir(base: &std::path::Path) -> (std::path::PathBuf, weft_protocol::identity::SecretKey) {
    use weft_node::keyfile;
    use weft_protocol::trust::{Operator, Role, SignedRoot, to_trust_file};
    let root_key = keyfile::generate().unwrap();
    let alice = keyfile::generate().unwrap();
    let root = TrustRoot {
        expires: now_ms() / 1000 + 86_400,
        root_keys: vec![root_key.public()],
        operators: vec![Operator {
            name: "alice".into(),
            key: alice.public(),
            roles: Role::ALL.into_iter().collect(),
        }],
        ..root()
    };
    let path = base.join("node");
    std::fs::create_dir_all(&path).unwrap();
    let dir = weft_node::layout::NodeDir::new(&path);
    keyfile::write(&dir.key(), &keyfile::generate().unwrap()).unwrap();
    std::fs::write(
        dir.trust(),
        to_trust_file(&SignedRoot::sign(&root, &[&root_key])),
    )
    .unwrap();
    (path, alice)
}

/// Signs `change` as alice and posts it; it must be applied.
async fn push(api: &str, change: &weft_crdt::Change, alice: &weft_protocol::identity::SecretKey) {
    let mut u = weft_protocol::update::SignedUpdate::new(change, 1);
    u.sign(alice).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/updates"))
        .body(u.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

/// nginx's auth subrequest for `GET /docs/1` with `token`: the status,
/// the principal header, and the body.
async fn forward(api: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = reqwest::Client::new()
        .get(format!("{api}/v1/forward-auth"))
        .header("x-original-uri", "/docs/1")
        .header("x-original-method", "GET");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let principal = r
        .headers()
        .get("x-weft-principal")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    (status, principal, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_proxies_for_jwt_holders_and_reports_its_issuers() {
    let base = tempfile::tempdir().unwrap();
    let (dir, alice) = node_dir(base.path());
    let ed = Signer::new(jsonwebtoken::Algorithm::EdDSA, "ed");
    let mut server = JwksServer::start(set(&[&ed])).await;
    let mut opts = weft_node::daemon::NodeOptions::new(&dir);
    opts.response.detect = false;
    let node = weft_node::daemon::spawn_node(opts).await.unwrap();
    let api = node.api_url();
    let iss = "https://idp.example.com";

    let mut doc = PolicyDoc::new();
    let content = BundleContent {
        policies: [(
            "p".to_owned(),
            r#"permit(principal == User::"alice", action == Action::"view", resource) when { context.claims.email like "*@example.com" };"#.to_owned(),
        )]
        .into(),
        routes: Some("[[route]]\npath = \"/docs/{id}\"\nresource = 'Doc::\"{id}\"'\nactions = { GET = 'Action::\"view\"' }\n".into()),
        issuers: Some(format!(
            "[[oidc]]\nissuer = \"{iss}\"\naudience = \"weft\"\njwks_url = \"{}\"\nclaims = [\"email\"]\n",
            server.url
        )),
        ..Default::default()
    };
    let actor = |n: u8| weft_protocol::update::actor_for(&alice.public(), [n; 8]);
    let change = doc
        .build_bundle(actor(1), "idp", &content, 0)
        .unwrap()
        .unwrap();
    push(&api, &change, &alice).await;

    let alice_token = ed.sign(&claims(iss, "alice", 600));
    let (status, principal, reasons) = forward(&api, Some(&alice_token)).await;
    assert_eq!(status, 200, "{reasons}");
    assert_eq!(principal.as_deref(), Some(r#"User::"alice""#));
    assert_eq!(
        forward(&api, Some(&ed.sign(&claims(iss, "bob", 600))))
            .await
            .0,
        403
    );
    assert_eq!(forward(&api, None).await.0, 401);
    let (status, _, reasons) = forward(&api, Some(&ed.sign(&claims(iss, "alice", -600)))).await;
    assert_eq!(status, 401);
    assert!(reasons.contains("it has expired"), "{reasons}");
    // The same token again: from the cache.
    assert_eq!(forward(&api, Some(&alice_token)).await.0, 200);

    let status: Value = reqwest::get(format!("{api}/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issuers = &status["issuers"];
    assert_eq!(issuers[0]["issuer"], format!("oidc {iss}"), "{issuers}");
    assert_eq!(issuers[0]["keys"], server.url.as_str());
    assert_eq!(issuers[0]["keys_held"], 1);
    assert_eq!(issuers[0]["stale"], false);
    assert!(issuers[0]["last_error"].is_null());
    assert!(issuers[0]["last_good_fetch_ms"].as_u64().unwrap() > 0);
    let metrics = reqwest::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "weft_jwks_fetches_total{result=\"ok\"} 1",
        "weft_jwt_verifications_total{result=\"ok\"} 2",
        "weft_jwt_verifications_total{result=\"refused\"} 1",
        "weft_jwt_cache_hits_total 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    assert!(dir.join("jwks").read_dir().unwrap().count() == 1);

    // nginx asks with HEAD (docs/proxies.md): the same decision, by the
    // original method, in the status and headers, with no body.
    let head = |token: String| {
        reqwest::Client::new()
            .head(format!("{api}/v1/forward-auth"))
            .header("x-original-uri", "/docs/1")
            .header("x-original-method", "GET")
            .bearer_auth(token)
            .send()
    };
    let r = head(alice_token.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-weft-principal"], r#"User::"alice""#);
    assert!(r.headers().contains_key("x-weft-decision-id"));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = head(ed.sign(&claims(iss, "bob", 600))).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.headers().contains_key("x-weft-principal"));
    assert!(r.bytes().await.unwrap().is_empty());

    // Revoked: denied whatever token it holds, the cached one included.
    let change = doc
        .build_revoke(actor(2), r#"User::"alice""#, "left", 0)
        .unwrap()
        .unwrap();
    push(&api, &change, &alice).await;
    let (status, _, reasons) = forward(&api, Some(&alice_token)).await;
    assert_eq!(status, 403, "{reasons}");
    server.stop().await;
    node.shutdown().await.unwrap();
}
