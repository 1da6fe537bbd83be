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
//! | `GET /v1/status` | [`Status`] as JSON |
//! | `GET /metrics` | Prometheus (OpenMetrics) text: decisions by outcome and latency, updates applied and refused by reason, peers, sync rounds, bytes in and out, state age |
//! | `POST /v1/authorize` | `{"decision", "reasons", "errors", "revoked", "state"}`, decided on the current view; `"token"` may replace `"principal"`; `400` when `context` sets `token` or an entity of the request redefines a stored entity or one of its ancestors |
//! | `GET /` | the live dashboard (one self-contained HTML page, see [`crate::dashboard`]) |
//! | `GET /v1/dashboard` | [`crate::dashboard::Dashboard`] as JSON: status, bundles with signers, revocations, quarantines, decision counts, recent denies |
//! | `GET /v1/anomalies` | `{"alerts": [], "quarantines": [{"subject", "record", "reason"}]}`: no detector runs yet, so no alerts; the active quarantines, each record parsed as JSON when it is JSON |
//! | `GET /v1/report` | the evidence of a compliance report, [`crate::report::Report`] as JSON (`audit` left `null`: `weft report` fills it from the audit endpoints) |
//!
//! Every error body is `{"error": "<one sentence>"}`: 4xx for a bad request,
//! 5xx for a failure of the node's own.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cedar_policy::{Context, Entities, EntityUid, RestrictedExpression};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use weft_crdt::{Conflict, CrdtError, PolicyView};
use weft_protocol::token;
use weft_protocol::trust::TrustRoot;
use weft_protocol::update::{MAX_UPDATE_BYTES, UpdateError};

use crate::liveness::TaskState;
use crate::net::{Command, Shared, SubmitError};
use crate::util::one_line;

/// The largest request body `POST /v1/updates` reads. A little over
/// [`MAX_UPDATE_BYTES`], so that an update just over the limit is refused by
/// the decoder with a precise message, and anything larger with a 413 before
/// it is read.
pub const MAX_BODY_BYTES: usize = MAX_UPDATE_BYTES + 1024;

/// One connected peer in [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its node id.
    pub node_id: String,
    /// Its libp2p peer id (the same text as the node id).
    pub peer_id: String,
    /// Whether it presented a valid node certificate.
    pub admitted: bool,
    /// Its gossipsub peer score here, if scored.
    pub score: Option<f64>,
    /// The name on the certificate it was admitted with.
    #[serde(default)]
    pub cert_name: Option<String>,
    /// When that certificate expires (Unix seconds).
    #[serde(default)]
    pub cert_expires: Option<u64>,
}

/// One bundle in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleStatus {
    /// The bundle's name.
    pub name: String,
    /// Operator names of everyone who signed an update that touched it.
    pub signers: Vec<String>,
    /// Policies in the version in force.
    pub policies: usize,
    /// Why the merged content is not in force, if it is not.
    pub error: Option<String>,
    /// Concurrent writes in the bundle.
    pub conflicts: usize,
}

/// The trust root in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootStatus {
    /// Its version.
    pub version: u64,
    /// When it expires (Unix seconds).
    pub expires: u64,
    /// Whether it has expired (it is still enforced).
    pub expired: bool,
}

/// Replica counters in [`Status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsStatus {
    /// Updates applied since start.
    pub applied: u64,
    /// Updates refused, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Sync rounds started.
    pub sync_rounds: u64,
    /// Anti-entropy rounds skipped because a peer had just synced with
    /// this node.
    #[serde(default)]
    pub rounds_skipped: u64,
    /// Updates received by sync.
    pub synced: u64,
    /// Peers banned.
    pub bans: u64,
    /// Bytes received on every libp2p connection since start (TCP payload:
    /// Noise and Yamux framing included).
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes sent on every libp2p connection since start, counted as
    /// `bytes_in` is.
    #[serde(default)]
    pub bytes_out: u64,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node's id.
    pub node_id: String,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerStatus>,
    /// The document's heads, hex.
    pub heads: Vec<String>,
    /// The state digest (of the sorted heads).
    pub digest: String,
    /// Bundles by name.
    pub bundles: Vec<BundleStatus>,
    /// Revoked subjects.
    pub revocations: usize,
    /// Every conflict in every bundle.
    pub conflicts: Vec<Conflict>,
    /// Updates applied.
    pub updates: usize,
    /// Updates held for missing dependencies.
    pub held: usize,
    /// Bytes of the updates held (bounded, see README "The trust boundary").
    #[serde(default)]
    pub held_bytes: usize,
    /// Milliseconds since the last exchange with a peer; null if none yet.
    pub last_sync_ms_ago: Option<u64>,
    /// The trust root.
    pub trust_root: RootStatus,
    /// Counters.
    pub stats: StatsStatus,
    /// The audit trail.
    #[serde(default)]
    pub audit: crate::audit::AuditStatus,
    /// Anomaly detection and quarantines issued.
    #[serde(default)]
    pub anomalies: crate::anomaly::AnomalyStatus,
}

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
    /// Test hook: whether `POST /v1/test/panic` is served.
    #[doc(hidden)]
    pub test_panic_route: bool,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut router = Router::new();
    if state.test_panic_route {
        router = router.route("/v1/test/panic", post(post_test_panic));
    }
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/state", get(get_state))
        .route("/v1/status", get(get_status))
        .route("/v1/updates", post(post_update))
        .route("/v1/authorize", post(post_authorize))
        .route("/metrics", get(get_metrics))
        .route("/v1/audit", get(crate::audit_api::get_records))
        .route("/v1/audit/status", get(crate::audit_api::get_status))
        .route("/v1/audit/verify", get(crate::audit_api::get_verify))
        .route(
            "/v1/audit/checkpoints",
            get(crate::audit_api::get_checkpoints),
        )
        .route("/", get(get_dashboard_page))
        .route("/v1/dashboard", get(get_dashboard))
        .route("/v1/anomalies", get(get_anomalies))
        .route("/v1/report", get(get_report))
        .fallback(not_found)
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
    let (tx, rx) = oneshot::channel();
    state
        .commands
        .send(make(tx))
        .await
        .map_err(|_| node_gone(&state.shared))?;
    rx.await.map_err(|_| node_gone(&state.shared))
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

/// Test hook: makes the node task panic (served only when
/// [`ApiState::test_panic_route`] is set).
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
        Ok(status) => axum::Json(status).into_response(),
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
            let now_ms = crate::net::now_ms();
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
    let now = crate::net::now_ms() / 1000;
    let quarantines: Vec<serde_json::Value> = view
        .quarantines()
        .map(|(subject, text)| {
            let record = crate::evidence::record_value(text);
            let hit = weft_crdt::quarantine::in_force(&view, subject, now, &rules);
            json!({
                "subject": subject,
                "reason": crate::evidence::record_reason(&record),
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
            let now_ms = crate::net::now_ms();
            let (_, stale) = state.shared.freshness(now_ms);
            let root = state.shared.root.load();
            let cert = crate::evidence::cert_evidence(&state.shared.cert, &root, now_ms / 1000);
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

/// The largest `POST /v1/authorize` body.
pub const MAX_AUTHORIZE_BYTES: usize = 1024 * 1024;

/// The body of `POST /v1/authorize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Who asks: a Cedar entity uid, like `User::"alice"`.
    pub principal: Option<String>,
    /// An identity token in place of `principal` (`wtk1.…`), verified on every request.
    pub token: Option<String>,
    /// The action's uid.
    pub action: String,
    /// The resource's uid.
    pub resource: String,
    /// The request context (a JSON object).
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// Entities of the request, in Cedar's entity JSON format.
    #[serde(default)]
    pub entities: Option<serde_json::Value>,
}

/// A refused request: its status and the one sentence saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn uid(field: &str, text: &str) -> Result<EntityUid, ApiError> {
    EntityUid::from_str(text).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "\"{field}\" is not a Cedar entity uid like User::\"alice\": {}",
                one_line(e)
            ),
        )
    })
}

/// What an authorization request comes to once parsed.
#[derive(Debug)]
pub enum Authorize {
    /// A request for `decide`.
    Decide(Box<weft_crdt::Request>),
    /// A deny decided before `decide`: a token that was refused or revoked.
    Deny {
        /// The principal: the token's, when it could be read, else `token`.
        principal: String,
        /// The action asked for.
        action: String,
        /// The resource asked for.
        resource: String,
        /// Why, one sentence.
        error: String,
        /// Whether the deny is for a revocation (of the token's id).
        revoked: bool,
        /// The revoked subject, if any.
        revoked_subject: Option<String>,
    },
}

/// What a token is checked against: the trust root, the view (for the
/// revocation of the token's id) and the time (Unix seconds).
#[derive(Clone, Copy)]
pub struct TokenCheck<'a> {
    /// The node's current trust root.
    pub root: &'a TrustRoot,
    /// The view that will decide.
    pub view: &'a PolicyView,
    /// Now, in Unix seconds.
    pub now: u64,
}

/// Parses an authorization request into what `decide` takes. A `"token"` is
/// verified on every call against `check`: a refused token, a bad principal
/// in it, or a revoked token id is a deny with the reason, not an error.
///
/// Refused with a 400: a `context` with a `token` key (only a verified
/// token sets `context.token`), and request entities that redefine an
/// entity of `check.view` or define an ancestor of one
/// ([`weft_crdt::check_request_entities`]): a request may add entities,
/// never change what stored ones descend from.
pub fn parse_authorize(
    req: AuthorizeRequest,
    check: TokenCheck<'_>,
) -> Result<Authorize, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    enum Who {
        Principal(EntityUid),
        Token(String),
    }
    let who = match (req.principal, req.token) {
        (Some(p), None) => Who::Principal(uid("principal", &p)?),
        (None, Some(t)) => Who::Token(t),
        (Some(_), Some(_)) => {
            return Err(bad(
                "send either \"principal\" or \"token\", not both".into()
            ));
        }
        (None, None) => {
            return Err(bad(
                "the request has neither \"principal\" nor \"token\": send one of them".into(),
            ));
        }
    };
    let action = uid("action", &req.action)?;
    let resource = uid("resource", &req.resource)?;
    if req
        .context
        .as_ref()
        .and_then(|c| c.as_object())
        .is_some_and(|c| c.contains_key("token"))
    {
        return Err(bad(
            "\"context\" may not have a \"token\" key: the node sets context.token from a verified token's attributes".into(),
        ));
    }
    let context = match req.context {
        None => Context::empty(),
        Some(v) => Context::from_json_value(v, None)
            .map_err(|e| bad(format!("\"context\" is not valid: {}", one_line(e))))?,
    };
    let entities = match req.entities {
        None => Vec::new(),
        Some(v) => Entities::from_json_value(v, None)
            .map_err(|e| bad(format!("\"entities\" are not valid: {}", one_line(e))))?
            .into_iter()
            .collect(),
    };
    weft_crdt::check_request_entities(check.view, &entities).map_err(|e| bad(e.to_string()))?;
    let deny = |principal: &str, error: String| Authorize::Deny {
        principal: principal.to_owned(),
        action: action.to_string(),
        resource: resource.to_string(),
        error,
        revoked: false,
        revoked_subject: None,
    };
    let (principal, context) = match who {
        Who::Principal(p) => (p, context),
        Who::Token(text) => {
            let token = match token::verify(&text, check.root, &[], check.now) {
                Ok(t) => t,
                Err(e) => return Ok(deny("token", format!("token refused: {e}"))),
            };
            let subject = token.revocation_subject();
            if check.view.revocation(&subject).is_some() {
                return Ok(Authorize::Deny {
                    principal: token.principal.clone(),
                    action: action.to_string(),
                    resource: resource.to_string(),
                    error: format!("token refused: token {} is revoked", token.id_hex()),
                    revoked: true,
                    revoked_subject: Some(subject),
                });
            }
            let Ok(principal) = EntityUid::from_str(&token.principal) else {
                return Ok(deny(
                    &token.principal,
                    format!(
                        "token refused: its principal {:?} is not a Cedar entity uid",
                        token.principal
                    ),
                ));
            };
            let attrs = token
                .attrs
                .into_iter()
                .map(|(k, v)| (k, RestrictedExpression::new_string(v)));
            let merged = RestrictedExpression::new_record(attrs)
                .map_err(|e| e.to_string())
                .and_then(|record| {
                    context
                        .merge([("token".to_owned(), record)])
                        .map_err(|e| e.to_string())
                });
            match merged {
                Ok(c) => (principal, c),
                Err(e) => {
                    return Ok(deny(
                        &token.principal,
                        format!(
                            "token refused: its attributes do not make a context: {}",
                            one_line(e)
                        ),
                    ));
                }
            }
        }
    };
    weft_crdt::Request::with_context(principal, action, resource, context, entities)
        .map(|r| Authorize::Decide(Box::new(r)))
        .map_err(|e| bad(format!("the request is not valid: {e}")))
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
    let view = state.shared.view.load();
    let root = state.shared.root.load();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let check = TokenCheck {
        root: &root,
        view: &view,
        now,
    };
    let now_ms = crate::net::now_ms();
    let (age_ms, stale) = state.shared.freshness(now_ms);
    let deny_stale = stale && state.shared.stale.on_stale == crate::layout::OnStale::Deny;
    let parsed = match parse_authorize(req, check) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let d = match &parsed {
        _ if deny_stale => weft_crdt::Decision {
            allow: false,
            reasons: vec![],
            errors: vec![format!(
                "the state is stale: no sync with any peer for over {} s, and on_stale is deny",
                state.shared.stale.after_ms / 1000
            )],
            ..weft_crdt::Decision::default()
        },
        Authorize::Decide(request) => weft_crdt::decide_at(
            &view,
            request,
            now,
            &weft_protocol::quarantine::rules_of(&root),
        ),
        Authorize::Deny {
            error,
            revoked,
            revoked_subject,
            ..
        } => weft_crdt::Decision {
            allow: false,
            reasons: vec![],
            errors: vec![error.clone()],
            revoked: *revoked,
            revoked_subject: revoked_subject.clone(),
            ..weft_crdt::Decision::default()
        },
    };
    state
        .metrics
        .observe_decision(d.allow, d.revoked, started.elapsed().as_secs_f64());
    let who = || match &parsed {
        Authorize::Decide(r) => (
            r.principal().to_string(),
            r.action().to_string(),
            r.resource().to_string(),
        ),
        Authorize::Deny {
            principal,
            action,
            resource,
            ..
        } => (principal.clone(), action.clone(), resource.clone()),
    };
    state
        .audit
        .handle
        .decision(
            |sampled_one_in| {
                let (principal, action, resource) = who();
                crate::audit::AuditEvent::Decision {
                    principal,
                    action,
                    resource,
                    decision: if d.allow { "allow" } else { "deny" }.to_owned(),
                    reasons: d.reasons.clone(),
                    errors: d.errors.clone(),
                    revoked: d.revoked,
                    sampled_one_in,
                }
            },
            d.allow,
        )
        .await;
    if state.detect.is_on() {
        let (principal, action, resource) = who();
        state.detect.observe(crate::detect::DecisionEvent {
            at_ms: now_ms,
            principal,
            action,
            resource,
            allow: d.allow,
            token_failed: matches!(parsed, Authorize::Deny { revoked: false, .. }),
            site: None,
        });
    }
    if d.allow {
        state.decisions.allow();
    } else {
        // Only a deny pays for formatting the request, and for the short
        // lock of the ring.
        let (principal, action, resource) = who();
        state.decisions.deny(crate::dashboard::DenyRecord {
            at_ms: now_ms,
            principal,
            action,
            resource,
            reasons: d.reasons.clone(),
            errors: d.errors.clone(),
            revoked: d.revoked,
            revoked_subject: d.revoked_subject.clone(),
        });
    }
    axum::Json(AuthorizeResponse {
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
    })
    .into_response()
}

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
}

/// How fresh the deciding state is, in an authorize answer.
#[derive(Serialize)]
struct Freshness {
    last_sync_ms_ago: Option<u64>,
    stale: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::identity::SecretKey;
    use weft_protocol::token::Token;
    use weft_protocol::trust::{Operator, QuarantineLimits, Role};

    fn root(issuer: &SecretKey) -> TrustRoot {
        TrustRoot {
            version: 1,
            expires: u64::MAX,
            root_keys: vec![SecretKey::from_seed([9; 32]).public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "idp".into(),
                key: issuer.public(),
                roles: [Role::Issue].into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: QuarantineLimits::default(),
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: vec![],
        }
    }

    fn parse(v: serde_json::Value, r: &TrustRoot) -> Result<Authorize, ApiError> {
        let view = PolicyView::default();
        let check = TokenCheck {
            root: r,
            view: &view,
            now: 1500,
        };
        parse_authorize(serde_json::from_value(v).unwrap(), check)
    }

    fn req(v: serde_json::Value) -> Result<weft_crdt::Request, ApiError> {
        let r = root(&SecretKey::from_seed([1; 32]));
        match parse(v, &r)? {
            Authorize::Decide(r) => Ok(*r),
            Authorize::Deny { error, .. } => panic!("denied: {error}"),
        }
    }

    #[test]
    fn authorize_requests_are_checked() {
        let ok = req(json!({
            "principal": "User::\"alice\"",
            "action": "Action::\"view\"",
            "resource": "Doc::\"d\"",
            "context": {"ip": "10.0.0.1"},
            "entities": [{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}],
        }))
        .unwrap();
        assert_eq!(ok.principal().to_string(), "User::\"alice\"");
        assert_eq!(ok.entities.len(), 1);
        for (v, needle) in [
            (
                json!({"principal": "alice", "action": "Action::\"v\"", "resource": "D::\"d\""}),
                "\"principal\" is not a Cedar entity uid",
            ),
            (
                json!({"token": "t", "principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\""}),
                "not both",
            ),
            (
                json!({"token": "t", "action": "Action::\"v\"", "resource": "D::\"d\"", "context": {"token": 1}}),
                "may not have a \"token\" key",
            ),
            (
                json!({"principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\"", "context": {"token": {"team": "red"}}}),
                "may not have a \"token\" key",
            ),
            (
                json!({"action": "Action::\"v\"", "resource": "D::\"d\""}),
                "neither \"principal\" nor \"token\"",
            ),
            (
                json!({"principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\"", "context": [1]}),
                "\"context\" is not valid",
            ),
            (
                json!({"principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\"", "entities": {"x": 1}}),
                "\"entities\" are not valid",
            ),
        ] {
            let e = req(v).unwrap_err();
            assert_eq!(e.0, StatusCode::BAD_REQUEST);
            assert!(e.1.contains(needle), "{}", e.1);
            assert!(!e.1.contains('\n'), "{}", e.1);
        }
    }

    #[test]
    fn tokens_become_principal_and_context() {
        let k = SecretKey::from_seed([1; 32]);
        let r = root(&k);
        let mut t = Token {
            principal: r#"User::"alice""#.into(),
            attrs: [("team".to_string(), "red".to_string())].into(),
            issuer: k.public(),
            issued: 1000,
            expires: 1900,
            id: [7; 16],
        };
        let body = |text: &str| json!({"token": text, "action": "Action::\"v\"", "resource": "D::\"d\"", "context": {"ip": "x"}});
        let Authorize::Decide(ok) = parse(body(&token::issue(&t, &k)), &r).unwrap() else {
            panic!("denied");
        };
        assert_eq!(ok.principal().to_string(), r#"User::"alice""#);
        let ctx = ok.cedar().context().unwrap();
        assert!(ctx.get("ip").is_some());
        assert!(format!("{:?}", ctx.get("token").unwrap()).contains("red"));
        let refused = |text: &str| match parse(body(text), &r).unwrap() {
            Authorize::Deny { error, revoked, .. } => {
                assert!(!revoked);
                error
            }
            Authorize::Decide(_) => panic!("allowed"),
        };
        assert!(refused("garbage").starts_with("token refused: malformed token"));
        let forged = token::issue(&t, &SecretKey::from_seed([2; 32]));
        assert!(
            refused(&forged).contains("signature"),
            "{}",
            refused(&forged)
        );
        t.expires = 1200;
        assert!(refused(&token::issue(&t, &k)).contains("expired"));
        t.expires = 1900;
        t.principal = "alice".into();
        assert!(refused(&token::issue(&t, &k)).contains("not a Cedar entity uid"));
    }

    /// A view that stores `User::"bob"` in `Group::"interns"`, a group it
    /// does not define, and permits `Group::"admins"`.
    fn interns_doc() -> weft_crdt::PolicyDoc {
        let mut b = weft_crdt::BundleContent::default();
        b.policies.insert(
            "admins".into(),
            r#"permit (principal in Group::"admins", action, resource);"#.into(),
        );
        b.entities = Some(
            r#"[{"uid":{"type":"User","id":"bob"},"attrs":{},"parents":[{"type":"Group","id":"interns"}]}]"#
                .into(),
        );
        let mut doc = weft_crdt::PolicyDoc::new();
        doc.build_bundle(weft_crdt::ActorId::from(vec![1u8; 40]), "t", &b, 0)
            .unwrap();
        doc
    }

    #[test]
    fn request_entities_may_not_be_stored_entities_or_their_ancestors() {
        let doc = interns_doc();
        let r = root(&SecretKey::from_seed([1; 32]));
        let check = TokenCheck {
            root: &r,
            view: doc.view(),
            now: 1500,
        };
        let ask = |entities: serde_json::Value| {
            parse_authorize(
                serde_json::from_value(json!({
                    "principal": "User::\"bob\"",
                    "action": "Action::\"v\"",
                    "resource": "D::\"d\"",
                    "entities": entities,
                }))
                .unwrap(),
                check,
            )
        };
        let group = |id: &str, parent: &str| json!([{"uid": {"type": "Group", "id": id}, "attrs": {}, "parents": [{"type": "Group", "id": parent}]}]);
        for (entities, needle) in [
            (
                group("interns", "admins"),
                "Group::\"interns\" is an ancestor",
            ),
            (
                json!([{"uid": {"type": "User", "id": "bob"}, "attrs": {}, "parents": [{"type": "Group", "id": "admins"}]}]),
                "User::\"bob\" is defined by the policy bundles",
            ),
        ] {
            let e = ask(entities).unwrap_err();
            assert_eq!(e.0, StatusCode::BAD_REQUEST);
            assert!(e.1.contains(needle), "{}", e.1);
            assert!(!e.1.contains('\n'), "{}", e.1);
        }
        // A new group under a stored one is fine.
        assert!(matches!(
            ask(group("visitors", "interns")),
            Ok(Authorize::Decide(_))
        ));
    }
}
