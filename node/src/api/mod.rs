//! The node's HTTP API (axum).
//!
//! Handlers never touch the replica: they send a [`Command`] to the node task
//! that owns it and wait for the answer on a oneshot channel. Reads that need
//! only the policy view load it from an [`arc_swap::ArcSwap`], so they never
//! wait on the network or on a write.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the node task is alive; 503 once it has ended (a node whose task died is never healthy) |
//! | `GET /readyz` | `200 ok` once the store is loaded and the node task runs; 503 otherwise |
//! | `GET /v1/state` | the encoded `StateExport` (application/octet-stream) |
//! | `POST /v1/updates` | `202 {"id", "status": "applied"\|"duplicate"\|"held"}` once the update is durable; `400` malformed, `422` refused, `413` too large |
//! | `GET /v1/status` | [`Status`] as JSON, with `reload`: per material (`api_tls`, `api_tokens`, `node_cert`) its files, last attempt, last success and last error ([`crate::reload`]); and `gateway`: the routes and trusted issuers in force ([`forward::gateway_status`]); and `issuers`: per trusted issuer its key set, keys held, last good fetch, last error and whether the keys are stale ([`crate::identity::IssuerStatus`]) |
//! | `GET /metrics` | Prometheus (OpenMetrics) text: decisions by outcome and latency, updates applied and refused by reason, peers, sync rounds, bytes in and out, state age |
//! | `POST /v1/authorize` | `{"decision", "reasons", "errors", "revoked", "state", "decision_id"}` and the header `X-Weft-Decision-Id`, decided on the current view; `"token"` may replace `"principal"`; `400` when `context` sets `token` or an entity of the request redefines a stored entity or one of its ancestors |
//! | any method `/v1/forward-auth[/…]` | a proxy's auth subrequest ([`forward`]): 200 with `X-Weft-Principal` and `X-Weft-Decision-Id`, 401, or 403, each with a JSON body |
//! | `GET /` | the live dashboard (one self-contained HTML page, see [`crate::dashboard`]) |
//! | `GET /v1/dashboard` | [`crate::dashboard::Dashboard`] as JSON: status, bundles with signers, revocations, quarantines, decision counts, recent denies |
//! | `GET /v1/anomalies` | `{"alerts", "quarantines": [{"subject", "reason", "record", "active", "until"}], "active_quarantines"}`: the detector's recent alerts; every quarantine record (parsed as JSON when it is JSON), whether it is in force now and until when; how many are |
//! | `GET /v1/report` | the evidence of a compliance report, [`crate::report::Report`] as JSON (`audit` left `null`: `weft report` fills it from the audit endpoints) |
//!
//! Every error body is `{"error": "<one sentence>"}`: 4xx for a bad request,
//! 5xx for a failure of the node's own. Which routes need a credential, and
//! which are rate-limited, is [`access::ROUTES`]; plain HTTP or TLS is
//! [`serve`].
//!
//! Every route, and the fallback, runs inside `observe.rs`'s middleware: a
//! request span (exported when `otlp_endpoint` is set) and a sample in
//! `weft_http_request_duration_seconds{route,method,status}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use weft_crdt::CrdtError;
use weft_protocol::authorize::{
    AuthorizeRequest, BadRequest, Deciding, MAX_AUTHORIZE_BYTES, decide_request,
};
use weft_protocol::update::{MAX_UPDATE_BYTES, UpdateError};

use crate::control::{Command, Shared, SubmitError};
use crate::liveness::TaskState;

pub mod access;
mod audit;
pub mod forward;
mod observe;
pub mod ratelimit;
pub mod serve;
pub mod tls;
pub mod tokens;

/// The largest request body `POST /v1/updates` reads. A little over
/// [`MAX_UPDATE_BYTES`], so that an update just over the limit is refused by
/// the decoder with a precise message, and anything larger with a 413 before
/// it is read.
pub const MAX_BODY_BYTES: usize = MAX_UPDATE_BYTES + 1024;

/// What the handlers share.
pub struct ApiState {
    /// Commands to the node task.
    pub commands: mpsc::Sender<Command>,
    /// The view and the node's id.
    pub shared: Arc<Shared>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The audit trail.
    pub audit: Arc<crate::audit::Audit>,
    /// The anomaly detector's queue.
    pub detect: crate::respond::DetectHandle,
    /// Decision counts and recent denies, for the dashboard and the report.
    pub decisions: Arc<crate::dashboard::DecisionLog>,
    /// The reload history of certificates and tokens, for `GET /v1/status`.
    pub reload: Arc<crate::control::reload::ReloadStatus>,
    /// The decision log shipped out, when `[decision_log]` sets a `url`
    /// or a `syslog` target.
    pub decision_log: Option<crate::decision_log::DecisionLogHandle>,
    /// Resolves the bearer credentials of proxies' questions.
    pub identities: Arc<crate::identity::Identities>,
    /// Test hook: whether `POST /v1/test/panic` is served.
    #[doc(hidden)]
    pub test_panic_route: bool,
}

/// The API's routes, behind the access check ([`access`]).
pub fn router(state: Arc<ApiState>, access: Arc<access::Access>) -> Router {
    let router = Router::new();
    #[cfg(feature = "test-hooks")]
    let router = if state.test_panic_route {
        router.route("/v1/test/panic", post(post_test_panic))
    } else {
        router
    };
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/state", get(get_state))
        .route("/v1/status", get(get_status))
        .route("/v1/updates", post(post_update))
        .route("/v1/authorize", post(post_authorize))
        .route("/v1/forward-auth", any(forward::forward_auth))
        .route("/v1/forward-auth/{*original}", any(forward::forward_auth))
        .route("/metrics", get(get_metrics))
        .route("/v1/audit", get(audit::get_records))
        .route("/v1/audit/status", get(audit::get_status))
        .route("/v1/audit/verify", get(audit::get_verify))
        .route("/v1/audit/checkpoints", get(audit::get_checkpoints))
        .route("/", get(get_dashboard_page))
        .route("/v1/dashboard", get(get_dashboard))
        .route("/v1/anomalies", get(get_anomalies))
        .route("/v1/report", get(get_report))
        .fallback(not_found)
        // Access control inside the observer: a refused request has its
        // span and its duration sample too.
        .layer(axum::middleware::from_fn_with_state(access, access::check))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.http().clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// `{"error": msg}` with `status`.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": msg.into() }))).into_response()
}

/// What a request that needs the node task gets when the task is gone:
/// stopping on request, or failed.
fn node_gone(shared: &Shared) -> Response {
    match shared.liveness.state() {
        TaskState::Failed => task_failed(),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is shutting down and cannot answer",
        ),
    }
}

fn task_failed() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node task has stopped after a failure: this node no longer syncs or takes updates, and must be restarted",
    )
}

async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    crate::control::ask(&state.commands, make)
        .await
        .ok_or_else(|| node_gone(&state.shared))
}

/// `200 ok` while the node task is alive (starting or running); 503 once
/// it has ended, whether it stopped on request or failed.
async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    match state.shared.liveness.state() {
        TaskState::Starting | TaskState::Running => "ok".into_response(),
        TaskState::Stopped => node_gone(&state.shared),
        TaskState::Failed => task_failed(),
    }
}

/// `200 ok` once the store is loaded and the node task runs (the API is
/// served only after the store is loaded); 503 before the task runs and
/// after it has ended.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    match state.shared.liveness.state() {
        TaskState::Running => "ok".into_response(),
        TaskState::Starting => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is starting: its task does not run yet",
        ),
        TaskState::Stopped => node_gone(&state.shared),
        TaskState::Failed => task_failed(),
    }
}

/// Test hook: makes the node task panic (served only when built with the
/// `test-hooks` feature and
/// [`ApiState::test_panic_route`] is set).
#[cfg(feature = "test-hooks")]
async fn post_test_panic(State(state): State<Arc<ApiState>>) -> Response {
    match state.commands.send(Command::PanicForTest).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "the node task will panic" })),
        )
            .into_response(),
        Err(_) => node_gone(&state.shared),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("there is no endpoint at {}", uri.path()),
    )
}

async fn get_state(State(state): State<Arc<ApiState>>) -> Response {
    match ask(&state, |reply| Command::Export { reply }).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(r) => r,
    }
}

async fn get_metrics(State(state): State<Arc<ApiState>>) -> Response {
    match ask(&state, |reply| Command::Status { reply }).await {
        Ok(status) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render(&status),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn get_status(State(state): State<Arc<ApiState>>) -> Response {
    match ask(&state, |reply| Command::Status { reply }).await {
        Ok(status) => {
            // The reload history rides along with the task's status.
            let mut value = serde_json::to_value(status).unwrap_or_default();
            if let Some(obj) = value.as_object_mut() {
                obj.insert("reload".into(), json!(state.reload.snapshot()));
                let view = state.shared.view.load();
                obj.insert("gateway".into(), forward::gateway_status(view.gateway()));
                let issuers = state.identities.status(&view, crate::clock::now_ms());
                obj.insert("issuers".into(), json!(issuers));
            }
            axum::Json(value).into_response()
        }
        Err(r) => r,
    }
}

async fn get_dashboard_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::dashboard::DASHBOARD_HTML,
    )
        .into_response()
}

async fn get_dashboard(State(state): State<Arc<ApiState>>) -> Response {
    match ask(&state, |reply| Command::Evidence { full: false, reply }).await {
        Ok(mut e) => {
            let now_ms = crate::clock::now_ms();
            let (_, stale) = state.shared.freshness(now_ms);
            // The newest first; a page lists a bounded number of them.
            e.revocations
                .sort_by_key(|r| (std::cmp::Reverse(r.time), r.subject.clone()));
            e.revocations
                .truncate(crate::dashboard::DASHBOARD_REVOCATIONS);
            axum::Json(crate::dashboard::Dashboard {
                now_ms,
                status: e.status,
                stale,
                stale_after_ms: state.shared.stale.after_ms,
                bundles: e.bundles,
                revocations: e.revocations,
                quarantines: e.quarantines,
                decisions: state.decisions.counts(),
                recent_denies: state.decisions.recent(),
            })
            .into_response()
        }
        Err(r) => r,
    }
}

async fn get_anomalies(State(state): State<Arc<ApiState>>) -> Response {
    let view = state.shared.view.load();
    let root = state.shared.root.load();
    let rules = weft_protocol::quarantine::rules_of(&root);
    let now = crate::clock::now_ms() / 1000;
    let quarantines: Vec<serde_json::Value> = view
        .quarantines()
        .map(|(subject, text)| {
            let record = crate::control::evidence::record_value(text);
            let hit = weft_crdt::quarantine::in_force(&view, subject, now, &rules);
            json!({
                "subject": subject,
                "reason": crate::control::evidence::record_reason(&record),
                "record": record,
                "active": hit.is_some(),
                "until": hit.and_then(|h| h.until),
            })
        })
        .collect();
    let alerts = state.shared.anomalies.recent();
    axum::Json(json!({
        "alerts": alerts,
        "quarantines": quarantines,
        "active_quarantines": quarantines.iter().filter(|q| q["active"] == true).count(),
    }))
    .into_response()
}

async fn get_report(State(state): State<Arc<ApiState>>) -> Response {
    match ask(&state, |reply| Command::Evidence { full: true, reply }).await {
        Ok(e) => {
            let now_ms = crate::clock::now_ms();
            let (_, stale) = state.shared.freshness(now_ms);
            let root = state.shared.root.load();
            let cert = crate::control::evidence::cert_evidence(
                &state.shared.cert.load(),
                &root,
                now_ms / 1000,
            );
            let report = crate::report::Report::from_node(
                e,
                cert,
                state.decisions.counts(),
                stale,
                now_ms / 1000,
            );
            axum::Json(report).into_response()
        }
        Err(r) => r,
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the update is larger than the limit of {MAX_UPDATE_BYTES} bytes"),
    )
}

async fn post_update(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        // Either over the limit, or the client went away (then no one reads this).
        Err(_) => return too_large(),
    };
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body is empty: send the bytes of a signed update file",
        );
    }
    match ask(&state, |reply| Command::Submit {
        bytes: bytes.to_vec(),
        reply,
        span: tracing::Span::current(),
    })
    .await
    {
        Ok(Ok(s)) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "id": s.id, "status": s.status })),
        )
            .into_response(),
        Ok(Err(SubmitError::Refused(e))) => {
            let status = match &e {
                UpdateError::Malformed(_) | UpdateError::State(CrdtError::Malformed(_)) => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, e.to_string())
        }
        Ok(Err(e @ SubmitError::Store(_))) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(r) => r,
    }
}

async fn post_authorize(State(state): State<Arc<ApiState>>, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_AUTHORIZE_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request is larger than the limit of {MAX_AUTHORIZE_BYTES} bytes"),
        );
    };
    let req: AuthorizeRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the request is not valid JSON for /v1/authorize: {e}"),
            );
        }
    };
    let started = std::time::Instant::now();
    let id = crate::decision_id::DecisionId::next();
    tracing::Span::current().record("decision_id", id.as_str());
    // The decision log keeps the context as asked; only a node that ships
    // one pays for the copy.
    let context = match &state.decision_log {
        Some(_) => req.context.clone(),
        None => None,
    };
    let view = state.shared.view.load();
    let root = state.shared.root.load();
    let now_ms = crate::clock::now_ms();
    let (age_ms, stale) = state.shared.freshness(now_ms);
    let deny_stale = stale && state.shared.stale.on_stale == crate::layout::OnStale::Deny;
    let record = match decide_request(
        req,
        Deciding {
            view: &view,
            root: &root,
            now_ms,
            stale_deny: deny_stale.then_some(state.shared.stale.after_ms / 1000),
        },
    ) {
        Ok(record) => record,
        Err(BadRequest(reason)) => return error(StatusCode::BAD_REQUEST, reason),
    };
    record_decision(&state, &record, &id, context, &view, started).await;
    let d = &record.decision;
    let body = axum::Json(AuthorizeResponse {
        decision: if d.allow { "allow" } else { "deny" },
        reasons: &d.reasons,
        errors: &d.errors,
        revoked: d.revoked,
        revoked_subject: d.revoked_subject.as_deref(),
        quarantined: d.quarantine.is_some(),
        quarantine: d.quarantine.as_ref(),
        state: view.digest(),
        freshness: Freshness {
            last_sync_ms_ago: age_ms,
            stale,
        },
        decision_id: id.as_str(),
    });
    let mut response = body.into_response();
    if let Ok(v) = header::HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(DECISION_ID_HEADER, v);
    }
    response
}

/// Writes a decision where every decision goes: its metric, the audit
/// trail, the decision log (when shipped), the detector and the
/// dashboard's counts.
pub(crate) async fn record_decision(
    state: &ApiState,
    record: &weft_protocol::authorize::DecisionRecord,
    id: &crate::decision_id::DecisionId,
    context: Option<serde_json::Value>,
    view: &weft_crdt::PolicyView,
    started: std::time::Instant,
) {
    let d = &record.decision;
    state
        .metrics
        .observe_decision(d.allow, d.revoked, started.elapsed().as_secs_f64());
    state
        .audit
        .handle
        .decision(
            |sampled_one_in| crate::audit::AuditEvent::decision(record, id, sampled_one_in),
            d.allow,
        )
        .await;
    if let Some(log) = &state.decision_log
        && let Some(sampled_one_in) = log.sample(d.allow)
    {
        log.offer(crate::decision_log::Pending::of(
            *id,
            record,
            context,
            view.digest(),
            sampled_one_in,
        ));
    }
    if state.detect.is_on() {
        state
            .detect
            .observe(crate::detect::DecisionEvent::of(record));
    }
    if d.allow {
        state.decisions.allow();
    } else {
        // Only a deny pays for formatting the request, and for the short
        // lock of the ring.
        state
            .decisions
            .deny(crate::dashboard::DenyRecord::of(record));
    }
}

/// The header that carries a decision's id in every decision answer.
pub const DECISION_ID_HEADER: header::HeaderName =
    header::HeaderName::from_static("x-weft-decision-id");

/// The body of a `POST /v1/authorize` answer, serialized straight from the
/// decision (no intermediate `serde_json::Value`, which cost a map and a
/// dozen allocations per request). The field order is the wire order.
#[derive(Serialize)]
struct AuthorizeResponse<'a> {
    decision: &'static str,
    reasons: &'a [String],
    errors: &'a [String],
    revoked: bool,
    revoked_subject: Option<&'a str>,
    quarantined: bool,
    quarantine: Option<&'a weft_crdt::QuarantineHit>,
    state: &'a str,
    freshness: Freshness,
    decision_id: &'a str,
}

/// How fresh the deciding state is, in an authorize answer.
#[derive(Serialize)]
struct Freshness {
    last_sync_ms_ago: Option<u64>,
    stale: bool,
}
