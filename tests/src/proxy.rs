//! Helpers for tests with a real proxy in front of a service: a real nginx
//! (Debian's package, `auth_request` module) asking a node's
//! `/v1/forward-auth`, an upstream that echoes what nginx passed it, and
//! an identity provider's JWKS endpoint that the test controls (keys
//! added, the server stopped), with JWTs signed by its keys.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use tempfile::TempDir;

/// Where Debian's nginx is.
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx, stopped on drop.
pub struct Nginx {
    child: Child,
    dir: TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx on a free loopback port in front of `upstream`, asking
    /// `weft_api` (`host:port`) at `/v1/forward-auth` for every request
    /// (when `auth` is true; without it, nginx only proxies, the
    /// benchmark's baseline). The allowed principal reaches the upstream
    /// in `X-Weft-Principal`. Fails (never skips) when nginx is missing.
    pub fn start(upstream: SocketAddr, weft_api: &str, auth: bool) -> Result<Nginx> {
        if !Path::new(NGINX).exists() {
            bail!("{NGINX} is missing: install Debian's nginx package (apt-get install nginx)");
        }
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), addr, upstream, weft_api, auth))?;
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {NGINX}"))?;
        let mut nginx = Nginx { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                bail!(
                    "nginx exited with {status} before it listened: {}",
                    nginx.error_log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not listen on {addr} within 10 s: {}",
                    nginx.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// The URL of `path` through nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// nginx's error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT would wait for keep-alive connections; SIGTERM is a fast
        // shutdown of the master and its workers.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The nginx configuration: one server in front of `upstream`, with an
/// `auth_request` subrequest to Weft's `/v1/forward-auth` (docs/proxies.md
/// shows the same snippet).
fn config(dir: &Path, addr: SocketAddr, upstream: SocketAddr, weft: &str, auth: bool) -> String {
    let d = dir.display();
    let auth_lines = if auth {
        "        auth_request /_weft;\n        \
         auth_request_set $weft_principal $upstream_http_x_weft_principal;\n        \
         auth_request_set $weft_decision $upstream_http_x_weft_decision_id;\n        \
         proxy_set_header X-Weft-Principal $weft_principal;\n        \
         proxy_set_header X-Weft-Decision-Id $weft_decision;\n"
    } else {
        ""
    };
    format!(
        "worker_processes 1;
daemon off;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream weft {{ server {weft}; keepalive 32; }}
    upstream app {{ server {upstream}; keepalive 32; }}
    server {{
        listen {addr};
        location / {{
{auth_lines}        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_pass http://app;
        }}
        location = /_weft {{
            internal;
            proxy_pass http://weft/v1/forward-auth;
            proxy_method HEAD;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_pass_request_body off;
            proxy_set_header Content-Length \"\";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"
    )
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The upstream service: answers every request with 200 and
/// `upstream saw <X-Weft-Principal>`.
pub async fn upstream() -> Result<SocketAddr> {
    use axum::http::HeaderMap;
    let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
        let who = headers
            .get("x-weft-principal")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned();
        format!("upstream saw {who}")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// An Ed25519 signing key of the identity provider, with its key id.
pub struct IdpKey {
    /// The `kid`.
    pub kid: String,
    encoding: jsonwebtoken::EncodingKey,
    /// The public key as a JWK.
    pub jwk: serde_json::Value,
}

impl IdpKey {
    /// A fresh key.
    pub fn new(kid: &str) -> Result<IdpKey> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = key
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("cannot encode the key: {e}"))?;
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        Ok(IdpKey {
            kid: kid.to_owned(),
            encoding: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            jwk: serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x,
            }),
        })
    }

    /// A JWT with these claims, signed by this key (EdDSA, with its kid).
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// Claims of an ID token: `iss`, `sub`, `aud`, valid from a minute ago for
/// `ttl_secs` (negative: expired).
pub fn claims(iss: &str, sub: &str, aud: &str, ttl_secs: i64) -> serde_json::Value {
    let now = crate::mesh::now() as i64;
    serde_json::json!({"iss": iss, "sub": sub, "aud": aud, "iat": now - 60, "nbf": now - 60, "exp": now + ttl_secs})
}

/// A JWKS endpoint the test controls.
pub struct JwksServer {
    keys: Arc<Mutex<Vec<serde_json::Value>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl JwksServer {
    /// Serves `GET /jwks` with the keys added so far.
    pub async fn start() -> Result<JwksServer> {
        let keys: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let hits: Arc<AtomicUsize> = Arc::default();
        let (k, h) = (keys.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (k, h) = (k.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let keys = k.lock().map(|k| k.clone()).unwrap_or_default();
                    axum::Json(serde_json::json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(JwksServer {
            keys,
            hits,
            task,
            addr,
        })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// Publishes a key.
    pub fn add(&self, key: &IdpKey) {
        if let Ok(mut k) = self.keys.lock() {
            k.push(key.jwk.clone());
        }
    }

    /// How many times the keys were fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops serving: connections are refused from now on.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// What wrk measured in one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Responses other than 2xx or 3xx.
    pub non_2xx: u64,
}

/// Runs wrk (Debian's package) against `url` with `connections` for
/// `secs`, sending `headers`.
pub fn wrk(url: &str, connections: usize, secs: u64, headers: &[String]) -> Result<WrkRun> {
    let threads = connections.clamp(1, 2);
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output: {text}"))
}

fn parse_wrk(text: &str) -> Result<WrkRun> {
    let mut run = WrkRun::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => run.p50_us = micros(v)?,
            ["99%", v] => run.p99_us = micros(v)?,
            ["Requests/sec:", v] => run.rps = v.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.non_2xx = n.parse()?,
            _ => {}
        }
    }
    if run.rps == 0.0 {
        bail!("no Requests/sec line");
    }
    Ok(run)
}

fn micros(v: &str) -> Result<f64> {
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .context("a latency without a unit")?;
    let n: f64 = num.parse()?;
    Ok(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        u => bail!("unknown unit {u}"),
    })
}

/// The `q` quantile (0 to 1), in µs, of the requests to `route` between
/// two scrapes of a node's `/metrics`, from the
/// `weft_http_request_duration_seconds` buckets, interpolated within a
/// bucket as Prometheus' `histogram_quantile` does.
pub fn server_quantile(before: &str, after: &str, route: &str, q: f64) -> Option<f64> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let mut sums: std::collections::BTreeMap<u64, f64> = Default::default();
        let needle = format!("route=\"{route}\"");
        for line in text.lines() {
            if !line.starts_with("weft_http_request_duration_seconds_bucket")
                || !line.contains(&needle)
            {
                continue;
            }
            let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
                continue;
            };
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            let n: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            *sums.entry(le.to_bits()).or_default() += n;
        }
        let mut v: Vec<(f64, f64)> = sums
            .into_iter()
            .map(|(k, n)| (f64::from_bits(k), n))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let (b, a) = (buckets(before), buckets(after));
    let counts: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - b.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1),
            )
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, n) in counts {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0 * 1e6);
            }
            let within = if n > prev.1 {
                (rank - prev.1) / (n - prev.1)
            } else {
                0.0
            };
            return Some((prev.0 + (le - prev.0) * within) * 1e6);
        }
        prev = (le, n);
    }
    None
}

/// A `weft node run` process on loopback, as a site runs it (its API on
/// its own `weft-api` threads), killed on drop.
pub struct NodeProcess {
    child: Child,
    /// Where its HTTP API listens (`host:port`).
    pub api: String,
}

impl NodeProcess {
    /// Starts `weft node run` on `dir` (a node directory with its key,
    /// trust file and certificate, and the store of an earlier run), with
    /// the API and libp2p on free loopback ports, and waits until
    /// `/healthz` answers 200.
    pub async fn start(dir: &Path) -> Result<NodeProcess> {
        let bin = crate::netns::weft_bin()?;
        let api = format!("127.0.0.1:{}", free_port()?);
        let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port()?);
        let child = Command::new(bin)
            .args(["node", "run", "--dir"])
            .arg(dir)
            .args(["--api", &api, "--listen", &listen])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let node = NodeProcess { child, api };
        let url = format!("http://{}/healthz", node.api);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return Ok(node);
            }
            if Instant::now() > deadline {
                bail!("weft node run on {} was not healthy within 30 s", node.api);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
