//! `/v1/forward-auth`: the auth subrequest of a proxy in front of a
//! service (nginx `auth_request`, Traefik ForwardAuth, Caddy
//! `forward_auth`, Envoy's HTTP ext_authz).
//!
//! Any method is served: a proxy may forward the original one. The
//! original request is read from the headers the proxies send, the first
//! present of each:
//!
//! | part | headers, in order | else |
//! |---|---|---|
//! | method | `X-Original-Method` (nginx), `X-Forwarded-Method` (Traefik, Caddy) | the subrequest's method (Envoy) |
//! | path and query | `X-Original-URI` (nginx), `X-Forwarded-Uri` (Traefik, Caddy) | the subrequest's path after `/v1/forward-auth` (Envoy appends it) |
//! | host | `X-Forwarded-Host`, `X-Original-Host` | `Host` |
//! | client | the first address of `X-Forwarded-For`, `X-Real-IP` | none |
//!
//! The identity is `Authorization: Bearer <JWT or wtk1 token>`
//! ([`crate::identity`]). The answer ([`weft_protocol::gateway::decide_http`]):
//! - 200, with `X-Weft-Principal` and `X-Weft-Decision-Id`, for an allow;
//! - 401, with `WWW-Authenticate: Bearer`, for no identity or one refused;
//! - 403 for a deny;
//!
//! each with the body `{"decision", "principal", "route", "reasons",
//! "errors", "revoked", "state", "decision_id"}`, except to a `HEAD`,
//! whose answer has the same status and headers and no body (nginx asks
//! with `HEAD` so that its connection to the node is reused:
//! docs/proxies.md). A proxy passes the 200's headers upstream (nginx:
//! `auth_request_set`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use weft_crdt::routes::HttpRequest;
use weft_protocol::authorize::Deciding;
use weft_protocol::gateway::{HttpDecision, Outcome, decide_http};

use super::{ApiState, DECISION_ID_HEADER};

/// The header that names the allowed principal.
pub const PRINCIPAL_HEADER: header::HeaderName =
    header::HeaderName::from_static("x-weft-principal");

/// The path prefix Envoy's HTTP ext_authz sends the original path under.
pub const PREFIX: &str = "/v1/forward-auth";

/// Serves `/v1/forward-auth` and `/v1/forward-auth/*`.
pub async fn forward_auth(State(state): State<Arc<ApiState>>, req: Request<Body>) -> Response {
    let started = std::time::Instant::now();
    let (parts, _body) = req.into_parts();
    let http = original_request(&parts.method, &parts.uri, &parts.headers);
    let view = state.shared.view.load();
    let root = state.shared.root.load();
    let now_ms = crate::clock::now_ms();
    let identity = match bearer(&parts.headers) {
        Some(Err(why)) => weft_protocol::gateway::Identity::Refused(why),
        Some(Ok(text)) => {
            state
                .identities
                .resolve(Some(text), &view, &root, now_ms)
                .await
        }
        None => state.identities.resolve(None, &view, &root, now_ms).await,
    };
    let (decided, id) =
        decide_and_record(&state, &http, identity, &view, &root, now_ms, started).await;
    answer(&decided, id.as_str(), view.digest())
}

/// A proxy's question decided once the caller's identity is resolved,
/// whichever door it came in by (`/v1/forward-auth`, ext_authz): the
/// staleness rule, [`decide_http`], a decision id, and the decision
/// recorded where every decision goes ([`super::record_decision`]).
pub(crate) async fn decide_and_record(
    state: &ApiState,
    http: &HttpRequest,
    identity: weft_protocol::gateway::Identity,
    view: &weft_crdt::PolicyView,
    root: &weft_protocol::trust::TrustRoot,
    now_ms: u64,
    started: std::time::Instant,
) -> (HttpDecision, crate::decision_id::DecisionId) {
    let (_age_ms, stale) = state.shared.freshness(now_ms);
    let deny_stale = stale && state.shared.stale.on_stale == crate::layout::OnStale::Deny;
    let decided = decide_http(
        http,
        identity,
        Deciding {
            view,
            root,
            now_ms,
            stale_deny: deny_stale.then_some(state.shared.stale.after_ms / 1000),
        },
    );
    let id = crate::decision_id::DecisionId::next();
    tracing::Span::current().record("decision_id", id.as_str());
    let context = state.decision_log.as_ref().map(|_| http_json(http));
    super::record_decision(state, &decided.record, &id, context, view, started).await;
    (decided, id)
}

/// The answer to a proxy, from a decision.
pub fn answer(decided: &HttpDecision, id: &str, state_digest: &str) -> Response {
    let d = &decided.record.decision;
    let status = match decided.outcome {
        Outcome::Allow => StatusCode::OK,
        Outcome::Unauthenticated => StatusCode::UNAUTHORIZED,
        Outcome::Forbidden => StatusCode::FORBIDDEN,
    };
    let body = axum::Json(ForwardResponse {
        decision: if d.allow { "allow" } else { "deny" },
        principal: decided.principal.as_deref(),
        route: decided.route.as_deref(),
        reasons: &d.reasons,
        errors: &d.errors,
        revoked: d.revoked,
        state: state_digest,
        decision_id: id,
    });
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(DECISION_ID_HEADER, v);
    }
    match decided.outcome {
        Outcome::Allow => {
            if let Some(p) = &decided.principal
                && let Ok(v) = HeaderValue::from_str(p)
            {
                headers.insert(PRINCIPAL_HEADER, v);
            }
        }
        Outcome::Unauthenticated => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Outcome::Forbidden => {}
    }
    response
}

#[derive(Serialize)]
struct ForwardResponse<'a> {
    decision: &'static str,
    principal: Option<&'a str>,
    route: Option<&'a str>,
    reasons: &'a [String],
    errors: &'a [String],
    revoked: bool,
    state: &'a str,
    decision_id: &'a str,
}

/// The original request, from the proxy's headers (the table in the
/// module doc).
pub fn original_request(
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> HttpRequest {
    let first = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
            .map(str::to_owned)
    };
    let method = first(&["x-original-method", "x-forwarded-method"])
        .unwrap_or_else(|| method.as_str().to_owned());
    let target = first(&["x-original-uri", "x-forwarded-uri"]).unwrap_or_else(|| {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        match path_and_query.strip_prefix(PREFIX) {
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            Some(rest) => format!("/{rest}"),
            None => path_and_query.to_owned(),
        }
    });
    let host = first(&["x-forwarded-host", "x-original-host", "host"]).unwrap_or_default();
    let client = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .or_else(|| first(&["x-real-ip"]));
    let headers = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    HttpRequest {
        method,
        target,
        host,
        client,
        headers,
    }
}

/// The bearer credential: none when there is no `Authorization` header,
/// `Err` when there is one that is not `Bearer <credential>`.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, String>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(text) = value.to_str() else {
        return Some(Err("the Authorization header is not text".to_owned()));
    };
    Some(crate::bearer::credential(text))
}

/// `gateway` in `GET /v1/status`: `{"routes": N, "unmatched": "deny" |
/// "allow", "headers": [...], "issuers": ["oidc https://…", "spiffe://…"],
/// "conflicts": [...]}`, the conflicts being routes and issuers left out
/// because an earlier bundle has them.
pub fn gateway_status(g: &weft_crdt::Gateway) -> serde_json::Value {
    let conflicts: Vec<&String> = g
        .routes
        .conflicts
        .iter()
        .chain(&g.issuers.conflicts)
        .collect();
    serde_json::json!({
        "routes": g.routes.len(),
        "unmatched": match g.routes.unmatched {
            weft_crdt::routes::Unmatched::Deny => "deny",
            weft_crdt::routes::Unmatched::Allow => "allow",
        },
        "headers": g.routes.headers,
        "issuers": g.issuers.issuers.iter().map(|i| i.kind.to_string()).collect::<Vec<_>>(),
        "conflicts": conflicts,
    })
}

/// The request as the decision log keeps it: `{"http": {...}}`.
pub(crate) fn http_json(r: &HttpRequest) -> serde_json::Value {
    serde_json::json!({"http": {
        "method": r.method,
        "target": r.target,
        "host": r.host,
        "client": r.client,
    }})
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, Uri};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_original_request_is_read_from_each_proxys_headers() {
        let uri: Uri = "/v1/forward-auth".parse().unwrap();
        let nginx = original_request(
            &Method::GET,
            &uri,
            &headers(&[
                ("x-original-uri", "/docs/1?a=b"),
                ("x-original-method", "DELETE"),
                ("host", "docs.example.com"),
                ("x-real-ip", "10.0.0.2"),
            ]),
        );
        assert_eq!(
            (
                nginx.method.as_str(),
                nginx.target.as_str(),
                nginx.host.as_str()
            ),
            ("DELETE", "/docs/1?a=b", "docs.example.com")
        );
        assert_eq!(nginx.client.as_deref(), Some("10.0.0.2"));
        let traefik = original_request(
            &Method::GET,
            &uri,
            &headers(&[
                ("x-forwarded-method", "PUT"),
                ("x-forwarded-uri", "/docs/2"),
                ("x-forwarded-host", "app.example.com"),
                ("host", "weft:7000"),
                ("x-forwarded-for", "192.0.2.1, 10.0.0.1"),
            ]),
        );
        assert_eq!(
            (
                traefik.method.as_str(),
                traefik.target.as_str(),
                traefik.host.as_str()
            ),
            ("PUT", "/docs/2", "app.example.com")
        );
        assert_eq!(traefik.client.as_deref(), Some("192.0.2.1"));
        let envoy = original_request(
            &Method::POST,
            &"/v1/forward-auth/docs/3?x=1".parse().unwrap(),
            &headers(&[("host", "svc.local")]),
        );
        assert_eq!(
            (
                envoy.method.as_str(),
                envoy.target.as_str(),
                envoy.host.as_str()
            ),
            ("POST", "/docs/3?x=1", "svc.local")
        );
    }

    #[test]
    fn only_a_bearer_credential_is_taken() {
        assert_eq!(bearer(&headers(&[])), None);
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc.def")])),
            Some(Ok("abc.def"))
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  wtk1.x ")])),
            Some(Ok("wtk1.x"))
        );
        for bad in ["Basic dTpw", "Bearer", "Bearer   "] {
            assert!(
                matches!(bearer(&headers(&[("authorization", bad)])), Some(Err(_))),
                "{bad}"
            );
        }
    }
}
