//! The demo's service behind a proxy: an upstream service, a proxy in
//! front of it that asks a node at `/v1/forward-auth` for every request
//! exactly as nginx's `auth_request` does (the original method and URI in
//! `X-Original-Method` and `X-Original-URI`, the caller's
//! `Authorization` passed on; a 200 lets the request through with
//! `X-Weft-Principal`, a 401 or 403 is the answer), and an identity
//! provider whose JWTs the demo bundle trusts through an inline JWKS.
//!
//! The nginx configuration that does the same is in docs/proxies.md; the
//! test suite runs it against a real nginx (tests/tests/proxy.rs).

use std::net::SocketAddr;

use anyhow::{Context as _, Result, anyhow};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The demo bundle's routes: reading a document is `Action::"read"` on it.
pub const ROUTES: &str = r#"[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"read"' }
"#;

/// The demo identity provider's issuer URL.
pub const ISSUER: &str = "https://idp.weft-demo.example";
/// The audience of its tokens.
pub const AUDIENCE: &str = "weft-demo";

/// The demo's identity provider: an Ed25519 key derived from a fixed
/// label (for this demo only).
pub struct DemoIdp {
    key: jsonwebtoken::EncodingKey,
    x: String,
}

impl DemoIdp {
    /// The demo's identity provider.
    pub fn new() -> Result<DemoIdp> {
        let seed: [u8; 32] = Sha256::digest(b"weft demo key: idp").into();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = key
            .to_pkcs8_der()
            .map_err(|e| anyhow!("cannot encode the demo IdP key: {e}"))?;
        Ok(DemoIdp {
            key: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
        })
    }

    /// The bundle's issuers file: this provider, its key inline.
    pub fn issuers_toml(&self) -> String {
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "demo", "x": self.x}]});
        format!(
            "[[oidc]]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks = '{jwks}'\nalgorithms = [\"EdDSA\"]\nprincipal = 'User::\"{{sub}}\"'\n"
        )
    }

    /// An ID token for `sub`, valid for ten minutes.
    pub fn token(&self, sub: &str) -> Result<String> {
        let now = crate::clock::now_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("demo".into());
        let claims =
            json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600});
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

#[derive(Clone)]
struct Proxy {
    client: reqwest::Client,
    node: String,
    upstream: SocketAddr,
}

/// Starts the service and the proxy in front of it, asking the node at
/// `node_api`; returns the proxy's address.
pub async fn start(node_api: String) -> Result<SocketAddr> {
    let upstream = serve(axum::Router::new().fallback(service)).await?;
    let proxy = Proxy {
        client: reqwest::Client::new(),
        node: node_api,
        upstream,
    };
    serve(
        axum::Router::new()
            .fallback(ask_then_forward)
            .with_state(proxy),
    )
    .await
}

async fn serve(app: axum::Router) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen for the demo's proxy")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// The service: it trusts the proxy to tell it who is calling.
async fn service(req: Request) -> String {
    let who = req
        .headers()
        .get("x-weft-principal")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody");
    format!("the document {} for {who}", req.uri().path())
}

/// What nginx's `auth_request` does: ask, then forward or refuse.
async fn ask_then_forward(State(p): State<Proxy>, req: Request) -> Response {
    let uri = req.uri().to_string();
    let mut ask = p
        .client
        .get(format!("{}/v1/forward-auth", p.node))
        .header("x-original-uri", &uri)
        .header("x-original-method", req.method().as_str());
    if let Some(auth) = req.headers().get("authorization") {
        ask = ask.header("authorization", auth);
    }
    let answer = match ask.send().await {
        Ok(a) => a,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match answer.status().as_u16() {
        200 => {}
        401 => return StatusCode::UNAUTHORIZED.into_response(),
        403 => return StatusCode::FORBIDDEN.into_response(),
        _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
    let principal = answer
        .headers()
        .get("x-weft-principal")
        .cloned()
        .unwrap_or_else(|| axum::http::HeaderValue::from_static(""));
    let forwarded = p
        .client
        .get(format!("http://{}{uri}", p.upstream))
        .header("x-weft-principal", principal)
        .send()
        .await;
    match forwarded {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = r.bytes().await.unwrap_or_default();
            (status, Body::from(body)).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// `GET path` through the proxy at `proxy` with `token`: the status and
/// the body.
pub async fn get(
    client: &reqwest::Client,
    proxy: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut req = client.get(format!("http://{proxy}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}
