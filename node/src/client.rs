//! The HTTP client of every `weft` command that talks to a running node:
//! `status`, `report`, `check`, `push`, `revoke`, `bundle create`,
//! `update sign|show --node`, `token issue --node`, `trust rotate`,
//! `audit verify --peer` and `audit export`.
//!
//! A node is named by its API URL (`--node URL`); [`base_url`] adds
//! `http://` when no scheme is given. Requests block (the CLI runs no async
//! runtime), connect within [`CONNECT_TIMEOUT`] and finish within
//! [`REQUEST_TIMEOUT`], except on a [`NodeClient::streaming`] client. An
//! answer other than 2xx is a [`CallError::Refused`] carrying the node's
//! `{"error": "…"}` sentence on one line; a node that cannot be reached, or
//! whose answer cannot be read, is a [`CallError::Transport`] sentence.
//!
//! Every such command flattens [`ClientArgs`]: `https://` URLs are verified
//! against the system's trusted roots, or, with `--ca FILE`, against the
//! CAs in that file only (a private mesh CA is then the one authority the
//! CLI believes for the node). `--client-cert FILE --client-key FILE`
//! present a client certificate (mTLS). A bearer token for a node's
//! `api_tokens_file` comes from `--token-file FILE` or the environment
//! variable `WEFT_API_TOKEN`, never from the command line, where other
//! users of the host could read it.

use std::fmt;
use std::io::{Read as _, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use anyhow::{Result, anyhow};
use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::util::{error_line, shorten};

/// How long to wait for a node to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request to a node may take in all (a state export of a large
/// mesh is tens of MiB; a minute covers that on any sane link).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of a refusal's body read for its reason.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// The API base URL from `--node`: `http://` is added when no scheme is
/// given, surrounding white space and trailing slashes are removed.
pub fn base_url(node: &str) -> String {
    let node = node.trim().trim_end_matches('/');
    if node.contains("://") {
        node.to_owned()
    } else {
        format!("http://{node}")
    }
}

/// How the CLI authenticates the node's API and itself to it: flattened
/// into every command that takes `--node`.
#[derive(Args, Clone, Debug, Default)]
pub struct ClientArgs {
    /// For https:// nodes: trust the CA certificates in this PEM file instead of the system's roots.
    #[arg(long, value_name = "FILE", env = "WEFT_CA")]
    pub ca: Option<PathBuf>,
    /// For mTLS: a client certificate (PEM) signed by a CA in the node's api_client_ca; needs --client-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "WEFT_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "WEFT_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// A file holding a bearer token of the node's api_tokens_file (else $WEFT_API_TOKEN, if set).
    #[arg(long, value_name = "FILE", env = "WEFT_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// The environment variable a bearer token may come from.
pub const TOKEN_ENV: &str = "WEFT_API_TOKEN";

impl ClientArgs {
    /// The bearer token to send, if any: `--token-file`, else `$WEFT_API_TOKEN`.
    fn token(&self) -> Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("--token-file {}: cannot read it: {e}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(anyhow!("--token-file {} is empty", path.display()));
            }
            return Ok(Some(token.to_owned()));
        }
        Ok(std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }

    fn configure(
        &self,
        mut b: reqwest::blocking::ClientBuilder,
    ) -> Result<reqwest::blocking::ClientBuilder> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| anyhow!("{flag} {}: cannot read it: {e}", path.display()))
        };
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&read("--ca", ca)?).map_err(|e| {
                anyhow!(
                    "--ca {}: not PEM certificates: {}",
                    ca.display(),
                    error_line(&e)
                )
            })?;
            if certs.is_empty() {
                return Err(anyhow!("--ca {} holds no PEM certificate", ca.display()));
            }
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let mut pem = read("--client-cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("--client-key", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                anyhow!(
                    "--client-cert {} with --client-key {}: {}",
                    cert.display(),
                    key.display(),
                    error_line(&e)
                )
            })?;
            b = b.identity(id);
        }
        Ok(b)
    }
}

/// Why a request to a node did not give a 2xx answer.
#[derive(Debug)]
pub enum CallError {
    /// The node answered with a refusal (4xx or 5xx).
    Refused {
        /// The node's base URL.
        base: String,
        /// The HTTP status.
        status: StatusCode,
        /// The node's `error` sentence (or what its body says), on one line.
        reason: String,
    },
    /// The node could not be reached, or its answer not read: the sentence.
    Transport(String),
}

impl CallError {
    /// This error, a refusal phrased as `the node at BASE refused WHAT
    /// (HTTP STATUS): REASON`.
    pub fn refusing(self, what: &str) -> anyhow::Error {
        match self {
            CallError::Refused {
                base,
                status,
                reason,
            } => anyhow!("the node at {base} refused {what} (HTTP {status}): {reason}"),
            other => anyhow!(other),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused {
                base,
                status,
                reason,
            } => write!(f, "the node at {base} answered {status}: {reason}"),
            CallError::Transport(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CallError {}

/// A client for one node's API.
pub struct NodeClient {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
}

impl NodeClient {
    /// A client for the node at `node` (as given to `--node`), whose
    /// requests finish within [`REQUEST_TIMEOUT`].
    pub fn new(node: &str, auth: &ClientArgs) -> Result<NodeClient> {
        NodeClient::build(node, auth, Some(REQUEST_TIMEOUT))
    }

    /// A client whose requests take as long as they take once connected:
    /// for answers streamed for as long as there is data (an audit export).
    pub fn streaming(node: &str, auth: &ClientArgs) -> Result<NodeClient> {
        NodeClient::build(node, auth, None)
    }

    fn build(node: &str, auth: &ClientArgs, timeout: Option<Duration>) -> Result<NodeClient> {
        let builder = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")));
        let http = auth
            .configure(builder)?
            .build()
            .map_err(|e| anyhow!("cannot set up an HTTP client: {}", error_line(&e)))?;
        Ok(NodeClient {
            base: base_url(node),
            http,
            token: auth.token()?,
        })
    }

    /// The node's base URL, `http://HOST:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET {base}{path}` (`path` starts with `/` and may hold a query).
    pub fn get(&self, path: &str) -> Result<Answer<'_>, CallError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    /// `POST {base}{path}` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Answer<'_>, CallError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    /// `POST {base}{path}` with raw bytes (`application/octet-stream`).
    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> Result<Answer<'_>, CallError> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec()),
        )
    }

    fn send(&self, request: RequestBuilder) -> Result<Answer<'_>, CallError> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let resp = request.send().map_err(|e| {
            let line = error_line(&e);
            let hint = if line.contains("invalid peer certificate") {
                " (is the node's API certificate signed by a CA given with --ca FILE?)"
            } else {
                ""
            };
            CallError::Transport(format!(
                "cannot reach the node at {}: {line}{hint}",
                self.base
            ))
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(CallError::Refused {
                base: self.base.clone(),
                status,
                reason: error_reason(resp),
            });
        }
        Ok(Answer {
            base: &self.base,
            resp,
        })
    }
}

/// A node's 2xx answer, not read yet.
pub struct Answer<'a> {
    base: &'a str,
    resp: Response,
}

impl Answer<'_> {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.resp.status()
    }

    /// The body as text.
    pub fn text(self) -> Result<String, CallError> {
        let base = self.base;
        self.resp.text().map_err(|e| unreadable(base, &e))
    }

    /// The body's first `max + 1` bytes at most: a caller that gets more
    /// than `max` knows the answer is too large without reading all of it.
    pub fn bytes(mut self, max: usize) -> Result<Vec<u8>, CallError> {
        let mut bytes = Vec::new();
        match (&mut self.resp)
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
        {
            Ok(_) => Ok(bytes),
            Err(e) => Err(unreadable(self.base, &e)),
        }
    }

    /// The body as JSON of type `T`; `what` names it for the error, like
    /// `a status`.
    pub fn json<T: DeserializeOwned>(self, what: &str) -> Result<T> {
        let base = self.base;
        let text = self.text()?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow!("the node at {base} sent {what} this weft does not understand: {e}")
        })
    }

    /// Copies the body to `out` as it arrives; returns the bytes copied.
    pub fn copy_to(mut self, out: &mut impl Write) -> Result<u64, CallError> {
        match self.resp.copy_to(out) {
            Ok(n) => Ok(n),
            Err(e) => Err(CallError::Transport(format!(
                "the answer of the node at {} broke off: {}",
                self.base,
                error_line(&e)
            ))),
        }
    }
}

fn unreadable(base: &str, e: &dyn std::error::Error) -> CallError {
    CallError::Transport(format!(
        "cannot read the answer of the node at {base}: {}",
        error_line(e)
    ))
}

/// The `error` sentence of a refusal, or what its body says otherwise, on
/// one line.
fn error_reason(resp: Response) -> String {
    let mut body = Vec::new();
    let _ = resp.take(MAX_ERROR_BODY).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    if let Ok(v) = serde_json::from_str::<Value>(&text)
        && let Some(e) = v.get("error").and_then(Value::as_str)
    {
        return shorten(e);
    }
    if text.trim().is_empty() {
        "the node gave no reason".into()
    } else {
        shorten(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(base_url("127.0.0.1:7100"), "http://127.0.0.1:7100");
        assert_eq!(base_url("http://h:1/"), "http://h:1");
        assert_eq!(base_url(" https://h "), "https://h");
    }

    #[test]
    fn a_refusal_names_the_node_and_the_reason() {
        let e = CallError::Refused {
            base: "http://h:1".into(),
            status: StatusCode::BAD_REQUEST,
            reason: "no".into(),
        };
        assert_eq!(
            e.to_string(),
            "the node at http://h:1 answered 400 Bad Request: no"
        );
        assert_eq!(
            e.refusing("GET /v1/state").to_string(),
            "the node at http://h:1 refused GET /v1/state (HTTP 400 Bad Request): no"
        );
        let t = CallError::Transport("cannot reach the node at http://h:1: x".into());
        assert_eq!(
            t.refusing("it").to_string(),
            "cannot reach the node at http://h:1: x"
        );
    }
}
