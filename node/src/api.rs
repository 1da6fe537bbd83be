//! The node's HTTP API (axum).
//!
//! Handlers never touch the replica: they send a [`Command`] to the node task
//! that owns it and wait for the answer on a oneshot channel. Reads that need
//! only the policy view load it from an [`arc_swap::ArcSwap`], so they never
//! wait on the network or on a write.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` |
//! | `GET /v1/state` | the encoded `StateExport` (application/octet-stream) |
//! | `POST /v1/updates` | `202 {"id", "status": "applied"\|"duplicate"\|"held"}` once the update is durable; `400` malformed, `422` refused, `413` too large |
//! | `GET /v1/status` | [`Status`] as JSON |
//! | `POST /v1/authorize` | `{"decision", "reasons", "errors", "revoked", "state"}`, decided on the current view |
//!
//! Every error body is `{"error": "<one sentence>"}`: 4xx for a bad request,
//! 5xx for a failure of the node's own.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cedar_policy::{Context, Entities, EntityUid};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use weft_crdt::{Conflict, CrdtError};
use weft_protocol::update::{MAX_UPDATE_BYTES, UpdateError};

use crate::net::{Command, Shared, SubmitError};

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
    /// Milliseconds since the last exchange with a peer; null if none yet.
    pub last_sync_ms_ago: Option<u64>,
    /// The trust root.
    pub trust_root: RootStatus,
    /// Counters.
    pub stats: StatsStatus,
}

/// What the handlers share.
pub struct ApiState {
    /// Commands to the node task.
    pub commands: mpsc::Sender<Command>,
    /// The view and the node's id.
    pub shared: Arc<Shared>,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/state", get(get_state))
        .route("/v1/status", get(get_status))
        .route("/v1/updates", post(post_update))
        .route("/v1/authorize", post(post_authorize))
        .fallback(not_found)
        .with_state(state)
}

/// `{"error": msg}` with `status`.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": msg.into() }))).into_response()
}

fn node_gone() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node is shutting down and cannot answer",
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
        .map_err(|_| node_gone())?;
    rx.await.map_err(|_| node_gone())
}

async fn healthz() -> &'static str {
    "ok"
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

async fn get_status(State(state): State<Arc<ApiState>>) -> Response {
    match ask(&state, |reply| Command::Status { reply }).await {
        Ok(status) => axum::Json(status).into_response(),
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
    /// An identity token in place of `principal` (not supported yet).
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

fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
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

/// Parses an authorization request into what `decide` takes.
pub fn parse_authorize(req: AuthorizeRequest) -> Result<weft_crdt::Request, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let principal = match (&req.principal, &req.token) {
        (Some(p), None) => uid("principal", p)?,
        (None, Some(_)) => {
            return Err(bad(
                "identity tokens are not supported by this node yet: send \"principal\"".into(),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(bad(
                "send either \"principal\" or \"token\", not both".into()
            ));
        }
        (None, None) => return Err(bad("the request has no \"principal\"".into())),
    };
    let action = uid("action", &req.action)?;
    let resource = uid("resource", &req.resource)?;
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
    weft_crdt::Request::with_context(principal, action, resource, context, entities)
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
    let request = match parse_authorize(req) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let view = state.shared.view.load();
    let d = weft_crdt::decide(&view, &request);
    axum::Json(json!({
        "decision": if d.allow { "allow" } else { "deny" },
        "reasons": d.reasons,
        "errors": d.errors,
        "revoked": d.revoked,
        "revoked_subject": d.revoked_subject,
        "state": view.digest(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> Result<weft_crdt::Request, ApiError> {
        parse_authorize(serde_json::from_value(v).unwrap())
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
                json!({"token": "t", "action": "Action::\"v\"", "resource": "D::\"d\""}),
                "tokens are not supported",
            ),
            (
                json!({"action": "Action::\"v\"", "resource": "D::\"d\""}),
                "no \"principal\"",
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
}
