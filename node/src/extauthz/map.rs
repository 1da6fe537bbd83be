//! From Envoy's `CheckRequest` to the request Weft decides on, and from
//! the decision to the `CheckResponse`: pure functions, no I/O.
//!
//! | Weft's [`HttpRequest`] | from `attributes.request.http` | else |
//! |---|---|---|
//! | method | `method` | the `:method` header; none: malformed |
//! | target (path and query) | `path` | the `:path` header; none: malformed |
//! | host | `host` | the `:authority`, then the `host` header; else empty |
//! | client | `attributes.source.address` (a socket address's IP) | none |
//! | headers | `headers` (Envoy lowercases the names), or `header_map` with `encode_raw_headers` | none |
//!
//! Pseudo-headers (`:path`, …) are left out of the headers; names are
//! lowercased; the list is sorted by name, so one request always maps to
//! the same context.
//!
//! The caller's credential ([`credential`]), the first present of:
//! 1. the `authorization` header: `Bearer <JWT or wtk1 token>`
//!    ([`crate::bearer`]), resolved by [`crate::identity`];
//! 2. `attributes.source.principal` when it is a SPIFFE id: the peer
//!    certificate Envoy verified (mTLS), trusted when a signed bundle names
//!    its trust domain ([`spiffe_identity`]), refused (401) otherwise;
//! 3. none: 401.
//!
//! The answer ([`answer`]): an allow is `OK` with an `OkHttpResponse` whose
//! headers Envoy sets on the request it sends upstream, overwriting any the
//! client sent: `x-weft-principal` and `x-weft-decision-id`. A deny is
//! `UNAUTHENTICATED` (HTTP 401, `www-authenticate: Bearer`) or
//! `PERMISSION_DENIED` (HTTP 403) with a `DeniedHttpResponse` carrying
//! `x-weft-decision-id` and the JSON body of `/v1/forward-auth`:
//! `{"decision", "principal", "route", "reasons", "errors", "revoked",
//! "state", "decision_id"}`. A `CheckRequest` with no HTTP attributes is
//! answered 403 ([`malformed`]) with the reason in `errors`.
//!
//! This file names nothing of the node but [`crate::bearer`], so the
//! `check` fuzz target compiles it as it is.

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as HttpStatusCode};
use envoy_types::pb::google::rpc::{Code, Status};
use weft_crdt::issuers::Issuers;
use weft_crdt::routes::HttpRequest;
use weft_protocol::gateway::{HttpDecision, Identity, Outcome, Verified};

/// The header naming the allowed principal, set on the upstream request.
pub const PRINCIPAL_HEADER: &str = "x-weft-principal";

/// The header carrying the decision's id, in every answer.
pub const DECISION_ID_HEADER: &str = "x-weft-decision-id";

/// The longest SPIFFE id taken (the SPIFFE spec's limit on a URI SAN is
/// 2048 bytes).
pub const MAX_SPIFFE_ID: usize = 2048;

/// The request Envoy asks about, or why the `CheckRequest` holds none.
pub fn http_request(check: &CheckRequest) -> Result<HttpRequest, String> {
    let attributes = check
        .attributes
        .as_ref()
        .ok_or("the CheckRequest has no attributes")?;
    let http = attributes
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or(
            "the CheckRequest has no attributes.request.http: Weft answers HTTP requests only",
        )?;
    let mut headers: Vec<(String, String)> = if http.headers.is_empty() {
        http.header_map
            .iter()
            .flat_map(|m| m.headers.iter())
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.clone()
                } else {
                    String::from_utf8_lossy(&h.raw_value).into_owned()
                };
                (h.key.to_ascii_lowercase(), value)
            })
            .collect()
    } else {
        http.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let pseudo = |name: &str| {
        headers
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let method = non_empty(&http.method)
        .or_else(|| pseudo(":method"))
        .ok_or("attributes.request.http has no method")?;
    let target = non_empty(&http.path)
        .or_else(|| pseudo(":path"))
        .ok_or("attributes.request.http has no path")?;
    let host = non_empty(&http.host)
        .or_else(|| pseudo(":authority"))
        .or_else(|| pseudo("host"))
        .unwrap_or_default();
    let client = attributes
        .source
        .as_ref()
        .and_then(|p| p.address.as_ref())
        .and_then(|a| match a.address.as_ref()? {
            Address::SocketAddress(s) => non_empty(&s.address),
            _ => None,
        });
    headers.retain(|(k, _)| !k.starts_with(':'));
    Ok(HttpRequest {
        method,
        target,
        host,
        client,
        headers,
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// What the caller presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// An `authorization` header: its bearer credential, or why it is not one.
    Bearer(Result<&'a str, String>),
    /// No `authorization` header, and the mTLS peer's SPIFFE id.
    Spiffe(&'a str),
    /// Neither.
    None,
}

/// The caller's credential (the order in the module doc).
pub fn credential<'a>(http: &'a HttpRequest, check: &'a CheckRequest) -> Credential<'a> {
    if let Some((_, value)) = http.headers.iter().find(|(k, _)| k == "authorization") {
        return Credential::Bearer(crate::bearer::credential(value));
    }
    let principal = check
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .map_or("", |p| p.principal.as_str());
    if principal.starts_with("spiffe://") {
        Credential::Spiffe(principal)
    } else {
        Credential::None
    }
}

/// The identity of an mTLS peer whose certificate Envoy verified and whose
/// SPIFFE id is `id`: the principal of the trust domain's template with
/// `sub` = `id`, and `context.claims` the template's listed claims (at most
/// `sub`). Refused when no bundle trusts the domain, or when `id` is not a
/// workload's SPIFFE id (a lowercase trust domain of letters, digits, `.`,
/// `-` and `_`, then a path).
pub fn spiffe_identity(id: &str, issuers: &Issuers) -> Identity {
    let shown: String = id.chars().take(120).collect();
    let Some(rest) = id
        .strip_prefix("spiffe://")
        .filter(|_| id.len() <= MAX_SPIFFE_ID)
    else {
        return Identity::Refused(format!("the mTLS peer {shown:?} is not a SPIFFE id"));
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if !domain_ok || path.is_empty() || id.chars().any(char::is_control) {
        return Identity::Refused(format!(
            "the mTLS peer {shown:?} is not a workload's SPIFFE id (spiffe://DOMAIN/PATH, the domain in lowercase)"
        ));
    }
    let Some(issuer) = issuers.spiffe(id) else {
        return Identity::Refused(format!(
            "the mTLS peer {shown:?} is of no SPIFFE trust domain a bundle trusts"
        ));
    };
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), serde_json::Value::String(id.to_owned()));
    match issuer.identity(&claims) {
        Ok(who) => Identity::Verified(Box::new(Verified {
            principal: who.principal,
            context_key: "claims",
            attrs: who.claims,
            source: format!("envoy mTLS {}", issuer.kind),
            credential_subject: None,
        })),
        Err(why) => Identity::Refused(format!("the mTLS peer {shown:?}: {why}")),
    }
}

/// The answer to Envoy, from a decision with id `id` on the state whose
/// digest is `state`.
pub fn answer(decided: &HttpDecision, id: &str, state: &str) -> CheckResponse {
    let d = &decided.record.decision;
    let body = serde_json::json!({
        "decision": if d.allow { "allow" } else { "deny" },
        "principal": decided.principal,
        "route": decided.route,
        "reasons": d.reasons,
        "errors": d.errors,
        "revoked": d.revoked,
        "state": state,
        "decision_id": id,
    });
    match decided.outcome {
        Outcome::Allow => {
            let mut headers = vec![header(DECISION_ID_HEADER, id)];
            if let Some(p) = decided.principal.as_deref().filter(|p| header_safe(p)) {
                headers.push(header(PRINCIPAL_HEADER, p));
            }
            CheckResponse {
                status: Some(Status {
                    code: Code::Ok as i32,
                    message: String::new(),
                    details: Vec::new(),
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    ..Default::default()
                })),
                ..Default::default()
            }
        }
        Outcome::Unauthenticated => denied(
            Code::Unauthenticated,
            HttpStatusCode::Unauthorized,
            id,
            body,
        ),
        Outcome::Forbidden => denied(Code::PermissionDenied, HttpStatusCode::Forbidden, id, body),
    }
}

/// The answer to a `CheckRequest` that holds no request to decide on: 403,
/// with `reason` in `errors`. No decision was made, so it has no id.
pub fn malformed(reason: &str) -> CheckResponse {
    let body = serde_json::json!({
        "decision": "deny",
        "principal": null,
        "route": null,
        "reasons": [],
        "errors": [reason],
        "revoked": false,
        "state": null,
        "decision_id": null,
    });
    denied(Code::PermissionDenied, HttpStatusCode::Forbidden, "", body)
}

fn denied(code: Code, status: HttpStatusCode, id: &str, body: serde_json::Value) -> CheckResponse {
    let mut headers = vec![header("content-type", "application/json")];
    if !id.is_empty() {
        headers.push(header(DECISION_ID_HEADER, id));
    }
    if status == HttpStatusCode::Unauthorized {
        headers.push(header("www-authenticate", "Bearer"));
    }
    let message = body["errors"]
        .get(0)
        .and_then(|e| e.as_str())
        .unwrap_or("denied")
        .to_owned();
    CheckResponse {
        status: Some(Status {
            code: code as i32,
            message,
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers,
            body: body.to_string(),
        })),
        ..Default::default()
    }
}

/// A header that replaces any of the same name.
fn header(key: &str, value: &str) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

/// Whether `value` may go in a header as it is (no control characters).
fn header_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        Address as EnvoyAddress, HeaderMap, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest as EnvoyHttp, Peer, Request,
    };

    use super::*;

    fn check(http: EnvoyHttp, principal: &str) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(EnvoyAddress {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: "192.0.2.7".into(),
                            ..Default::default()
                        })),
                    }),
                    principal: principal.into(),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_request_comes_from_the_http_attributes_or_the_pseudo_headers() {
        let http = EnvoyHttp {
            method: "GET".into(),
            path: "/docs/1?a=b".into(),
            host: "docs.example.com".into(),
            headers: [
                ("X-Tenant", "red"),
                (":path", "/ignored"),
                ("authorization", "Bearer t"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..Default::default()
        };
        let req = http_request(&check(http, "")).unwrap();
        assert_eq!(
            (req.method.as_str(), req.target.as_str(), req.host.as_str()),
            ("GET", "/docs/1?a=b", "docs.example.com")
        );
        assert_eq!(req.client.as_deref(), Some("192.0.2.7"));
        assert_eq!(
            req.headers,
            [
                ("authorization".to_owned(), "Bearer t".to_owned()),
                ("x-tenant".to_owned(), "red".to_owned())
            ]
        );

        // encode_raw_headers: the header map, and the pseudo-headers.
        let raw = |k: &str, v: &str| HeaderValue {
            key: k.into(),
            value: String::new(),
            raw_value: v.as_bytes().to_vec(),
        };
        let http = EnvoyHttp {
            header_map: Some(HeaderMap {
                headers: vec![
                    raw(":method", "DELETE"),
                    raw(":path", "/docs/2"),
                    raw(":authority", "svc.local"),
                    raw("x-a", "1"),
                    raw("x-a", "2"),
                ],
            }),
            ..Default::default()
        };
        let req = http_request(&check(http, "")).unwrap();
        assert_eq!(
            (req.method.as_str(), req.target.as_str(), req.host.as_str()),
            ("DELETE", "/docs/2", "svc.local")
        );
        assert_eq!(req.headers.len(), 2);

        assert!(http_request(&CheckRequest::default()).is_err());
        let no_path = EnvoyHttp {
            method: "GET".into(),
            ..Default::default()
        };
        let e = http_request(&check(no_path, "")).unwrap_err();
        assert!(e.contains("no path"), "{e}");
    }

    #[test]
    fn a_bearer_header_comes_before_the_mtls_peer() {
        let spiffe = "spiffe://prod.example.org/ns/web";
        let with = EnvoyHttp {
            method: "GET".into(),
            path: "/".into(),
            headers: [("authorization".to_owned(), "Bearer abc".to_owned())].into(),
            ..Default::default()
        };
        let c = check(with, spiffe);
        let req = http_request(&c).unwrap();
        assert_eq!(credential(&req, &c), Credential::Bearer(Ok("abc")));
        let without = EnvoyHttp {
            method: "GET".into(),
            path: "/".into(),
            ..Default::default()
        };
        let c = check(without.clone(), spiffe);
        let req = http_request(&c).unwrap();
        assert_eq!(credential(&req, &c), Credential::Spiffe(spiffe));
        let c = check(without, "CN=not-spiffe");
        let req = http_request(&c).unwrap();
        assert_eq!(credential(&req, &c), Credential::None);
    }

    #[test]
    fn a_spiffe_peer_needs_a_trusted_domain_and_a_workload_path() {
        let bundle = weft_crdt::issuers::BundleIssuers::parse(
            "[[spiffe]]\ntrust_domain = \"prod.example.org\"\naudience = \"weft\"\njwks = '{\"keys\": []}'",
        )
        .unwrap();
        let issuers = Issuers::build([("idp", &bundle)]);
        let Identity::Verified(v) = spiffe_identity("spiffe://prod.example.org/ns/web", &issuers)
        else {
            panic!("refused")
        };
        assert_eq!(
            v.principal.to_string(),
            r#"Workload::"spiffe://prod.example.org/ns/web""#
        );
        assert_eq!(v.source, "envoy mTLS spiffe://prod.example.org");
        assert_eq!(v.context_key, "claims");
        for bad in [
            "spiffe://other.org/ns/web",
            "spiffe://Prod.example.org/ns/web",
            "spiffe://prod.example.org",
            "spiffe://prod.example.org/\n",
            "spiffe:///x",
        ] {
            assert!(
                matches!(spiffe_identity(bad, &issuers), Identity::Refused(e) if !e.contains('\n')),
                "{bad:?}"
            );
        }
        let long = format!("spiffe://prod.example.org/{}", "a".repeat(MAX_SPIFFE_ID));
        assert!(matches!(
            spiffe_identity(&long, &issuers),
            Identity::Refused(_)
        ));
    }

    #[test]
    fn a_malformed_request_is_a_403_with_its_reason() {
        let r = malformed("the CheckRequest has no attributes");
        assert_eq!(
            r.status.as_ref().unwrap().code,
            Code::PermissionDenied as i32
        );
        let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
            panic!("not denied")
        };
        assert_eq!(d.status.unwrap().code, HttpStatusCode::Forbidden as i32);
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["errors"][0], "the CheckRequest has no attributes");
        assert!(header_safe("User::\"a\"\tb") && !header_safe("a\r\nb"));
    }
}
