//! Access control on the HTTP API: which route needs what, and the
//! middleware that checks it before a handler runs.
//!
//! [`ROUTES`] is the one table of routes and what they need:
//!
//! - open: decisions (`/v1/authorize`, `/v1/forward-auth`), health
//!   (`/healthz`, `/readyz`), and the dashboard's page `/` (static HTML
//!   with no data in it: it reads its data from `/v1/dashboard` with the
//!   token it is given, see docs/http-api.md);
//! - `POST /v1/updates`: open (updates are signed), rate-limited per client
//!   address ([`super::ratelimit`]), 429 beyond the rate;
//! - scope `read`: `/v1/state`, `/v1/status`, `/v1/dashboard`,
//!   `/v1/anomalies`, `/v1/report`; scope `audit`: `/v1/audit` and under it;
//!   scope `metrics`: `/metrics`. Any other path needs `read` too, so that a
//!   route missing from the table is closed, not open.
//!
//! How reads are guarded ([`Reads`]): with `api_client_ca` or
//! `api_tokens_file` set, a read needs a client certificate that verified
//! against the CA (it holds every scope) or `Authorization: Bearer TOKEN`
//! with a token of the file that holds the scope. With neither set, reads
//! are open when the API listens on loopback, or when `api_insecure` says
//! so; otherwise they are refused, since nothing could grant them.
//!
//! Every refusal is `401` (no credential, or one the node does not know)
//! or `403` (a known token without the scope), or `429` for the rate, with
//! `{"error": "<one line>"}`, and an [`AuditEvent::ApiRefused`] record
//! naming the client address and the credential (a token's name, or the
//! first 8 hex digits of an unknown token's hash; never the token).

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use super::ratelimit::RateLimiter;
use super::serve::Peer;
use super::tokens::TokenSet;
use crate::audit::{AuditEvent, AuditHandle};

/// A read scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The mesh state, status, dashboard data, anomalies, report.
    Read,
    /// The audit trail.
    Audit,
    /// Prometheus metrics.
    Metrics,
}

impl Scope {
    /// Its name in token files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Audit => "audit",
            Scope::Metrics => "metrics",
        }
    }

    /// The scope named `s`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "audit" => Some(Scope::Audit),
            "metrics" => Some(Scope::Metrics),
            _ => None,
        }
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing.
    Open,
    /// Nothing but the update rate.
    RateLimited,
    /// A credential with this scope (when reads are guarded).
    Scope(Scope),
}

/// The routes and what each needs (paths match exactly, except the audit
/// prefix).
pub const ROUTES: &[(&str, Need)] = &[
    ("/healthz", Need::Open),
    ("/readyz", Need::Open),
    ("/v1/authorize", Need::Open),
    ("/v1/forward-auth", Need::Open),
    ("/", Need::Open),
    ("/v1/test/panic", Need::Open),
    ("/v1/updates", Need::RateLimited),
    ("/v1/state", Need::Scope(Scope::Read)),
    ("/v1/status", Need::Scope(Scope::Read)),
    ("/v1/dashboard", Need::Scope(Scope::Read)),
    ("/v1/anomalies", Need::Scope(Scope::Read)),
    ("/v1/report", Need::Scope(Scope::Read)),
    ("/v1/audit", Need::Scope(Scope::Audit)),
    ("/metrics", Need::Scope(Scope::Metrics)),
];

/// What `path` needs.
pub fn need_of(method: &Method, path: &str) -> Need {
    if let Some((_, need)) = ROUTES.iter().find(|(p, _)| *p == path) {
        if *need == Need::RateLimited && method != Method::POST {
            return Need::Scope(Scope::Read);
        }
        return *need;
    }
    if path.starts_with("/v1/audit/") {
        return Need::Scope(Scope::Audit);
    }
    // Envoy's HTTP ext_authz appends the original path to the prefix.
    if path.starts_with("/v1/forward-auth/") {
        return Need::Open;
    }
    Need::Scope(Scope::Read)
}

/// How reads are guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Open to anyone who reaches the API (loopback, or `api_insecure`).
    Open,
    /// A client certificate or a token is needed.
    Guarded {
        /// Whether a client certificate can be a credential (`api_client_ca`).
        client_ca: bool,
        /// Whether a token can be (`api_tokens_file`).
        tokens: bool,
    },
    /// Refused: the API is not on loopback, and no credential is configured.
    Closed,
}

/// The middleware's state.
pub struct Access {
    /// How reads are guarded.
    pub reads: Reads,
    /// The token file's tokens (swapped on reload).
    pub tokens: Arc<ArcSwap<TokenSet>>,
    /// The update rate limit.
    pub updates: RateLimiter,
    /// Where refusals are recorded.
    pub audit: AuditHandle,
}

/// The middleware: lets the request through, or refuses it.
pub async fn check(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let need = need_of(request.method(), request.uri().path());
    if need == Need::Open {
        return next.run(request).await;
    }
    let peer = Peer::of(&request);
    match access.judge(need, peer.as_ref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            access.audit.record(AuditEvent::ApiRefused {
                method: request.method().to_string(),
                path: crate::util::shorten(request.uri().path()),
                client: peer.map_or_else(|| "unknown".to_owned(), |p| p.addr.ip().to_string()),
                status: refusal.status.as_u16(),
                reason: refusal.reason.clone(),
                credential: refusal.credential.clone(),
            });
            let mut r = super::error(refusal.status, refusal.reason);
            if refusal.status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"weft\""),
                );
            }
            r
        }
    }
}

/// Why a request is refused.
#[derive(Debug)]
pub struct Refusal {
    /// 401, 403 or 429.
    pub status: StatusCode,
    /// The one-line reason.
    pub reason: String,
    /// The credential it came with, as the audit trail names it.
    pub credential: Option<String>,
}

fn refuse(status: StatusCode, reason: String, credential: Option<String>) -> Refusal {
    Refusal {
        status,
        reason,
        credential,
    }
}

impl Access {
    /// Judges a request that needs `need`, from `peer` with `headers`.
    pub fn judge(
        &self,
        need: Need,
        peer: Option<&Peer>,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let scope = match need {
            Need::Open => return Ok(()),
            Need::RateLimited => {
                let Some(p) = peer else { return Ok(()) };
                if self.updates.allow(p.addr.ip(), Instant::now()) {
                    return Ok(());
                }
                let rate = self.updates.rate();
                return Err(refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many updates from {}: at most {} in a burst and {} a minute (api_updates_burst, api_updates_per_minute)",
                        p.addr.ip(),
                        rate.burst,
                        rate.per_minute
                    ),
                    None,
                ));
            }
            Need::Scope(s) => s,
        };
        let (client_ca, tokens) = match self.reads {
            Reads::Open => return Ok(()),
            Reads::Closed => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "reads on this node need a credential, and it has neither api_client_ca nor api_tokens_file set".into(),
                    None,
                ));
            }
            Reads::Guarded { client_ca, tokens } => (client_ca, tokens),
        };
        // A certificate that verified against api_client_ca holds every scope.
        if peer.is_some_and(|p| p.client_cert.is_some()) {
            return Ok(());
        }
        let ways = match (client_ca, tokens) {
            (true, true) => "a client certificate from api_client_ca or a bearer token",
            (true, false) => "a client certificate from api_client_ca",
            _ => "a bearer token",
        };
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("this needs {ways} with scope {}", scope.name()),
                None,
            ));
        };
        let bearer = auth
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = bearer.filter(|t| !t.is_empty()) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "the Authorization header is not `Bearer TOKEN`".into(),
                None,
            ));
        };
        if !tokens {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("this node takes no tokens (no api_tokens_file): this needs {ways}"),
                Some(super::tokens::unknown_label(token)),
            ));
        }
        let set = self.tokens.load();
        match set.find(token) {
            None => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "the bearer token is not in this node's api_tokens_file".into(),
                Some(super::tokens::unknown_label(token)),
            )),
            Some(e) if e.scopes.contains(&scope) => Ok(()),
            Some(e) => Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "token {} lacks scope {} (it has {})",
                    e.name,
                    scope.name(),
                    e.scopes
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Some(format!("token {}", e.name)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_closes_what_it_does_not_open() {
        assert_eq!(need_of(&Method::POST, "/v1/authorize"), Need::Open);
        assert_eq!(need_of(&Method::POST, "/v1/updates"), Need::RateLimited);
        assert_eq!(
            need_of(&Method::GET, "/v1/updates"),
            Need::Scope(Scope::Read)
        );
        assert_eq!(
            need_of(&Method::GET, "/v1/audit/verify"),
            Need::Scope(Scope::Audit)
        );
        assert_eq!(
            need_of(&Method::GET, "/metrics"),
            Need::Scope(Scope::Metrics)
        );
        assert_eq!(
            need_of(&Method::GET, "/v1/whatever"),
            Need::Scope(Scope::Read)
        );
    }
}
