//! The audit trail's HTTP endpoints.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/audit?since=MS&from=SEQ&limit=N` | the records, one JSON object per line (`application/x-ndjson`), oldest first, from the first written at or after Unix milliseconds `since` (or from record `from`) |
//! | `GET /v1/audit/status` | [`AuditStatus`](crate::audit::AuditStatus) |
//! | `GET /v1/audit/verify` | the chain walked now, against the node's own checkpoints and head marker: `{"ok", "records", "checkpoints", "head", "first_bad", "error"}` |
//! | `GET /v1/audit/checkpoints?node=ID` | the checkpoints of node `ID` that this node holds, one JSON object per line, each with the signed bytes (hex) so that the caller can check the signature itself |

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use weft_protocol::audit::Record;
use weft_protocol::identity::NodeId;
use weft_protocol::time::format_timestamp;

use super::{ApiState, error};

/// Records read from sled per chunk of a streamed export.
const CHUNK: usize = 1024;

/// The query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// Unix milliseconds: records written at or after it.
    pub since: Option<u64>,
    /// The first record's number.
    pub from: Option<u64>,
    /// At most this many records.
    pub limit: Option<u64>,
}

/// One record as exported: its fields, hex hashes, and the event as JSON.
pub fn record_json(r: &Record) -> Value {
    let event = serde_json::from_slice::<Value>(&r.event)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.event).into_owned()));
    json!({
        "seq": r.seq,
        "at_ms": r.at_ms,
        "at": format_timestamp(r.at_ms / 1000),
        "prev": hex::encode(r.prev),
        "hash": hex::encode(r.hash),
        "event": event,
    })
}

/// `GET /v1/audit`: streams records as JSON lines.
pub async fn get_records(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query is not valid: use since=UNIX_MS, from=SEQ and limit=N, all whole numbers",
        );
    };
    let log = state.audit.log.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut next = q.from.unwrap_or(1).max(1);
        if let Some(since) = q.since {
            next = next.max(log.first_since(since));
        }
        let mut left = q.limit.unwrap_or(u64::MAX);
        while left > 0 {
            let records = log.records_from(next, CHUNK.min(left as usize));
            let Some(last) = records.last() else { break };
            next = last.seq + 1;
            left -= records.len() as u64;
            let mut chunk = Vec::with_capacity(records.len() * 256);
            for r in &records {
                serde_json::to_writer(&mut chunk, &record_json(r)).expect("JSON to a Vec");
                chunk.push(b'\n');
            }
            if tx.blocking_send(Ok(chunk)).is_err() {
                break;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /v1/audit/status`.
pub async fn get_status(State(state): State<Arc<ApiState>>) -> Response {
    axum::Json(state.audit.status()).into_response()
}

/// `GET /v1/audit/verify`.
pub async fn get_verify(State(state): State<Arc<ApiState>>) -> Response {
    let log = state.audit.log.clone();
    let node = state.shared.node_id;
    match tokio::task::spawn_blocking(move || log.verify(node, Vec::new())).await {
        Ok(v) => axum::Json(json!({
            "ok": v.ok(),
            "records": v.records,
            "checkpoints": v.checkpoints,
            "head": hex::encode(v.head),
            "first_bad": v.problem.as_ref().map(|p| p.first_bad()),
            "error": v.problem.as_ref().map(ToString::to_string),
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("verifying the audit chain failed: {e}"),
        ),
    }
}

/// The query of `GET /v1/audit/checkpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsQuery {
    /// The node whose checkpoints are asked for.
    pub node: String,
}

/// `GET /v1/audit/checkpoints?node=ID`.
pub async fn get_checkpoints(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<CheckpointsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "give the node whose checkpoints you want: /v1/audit/checkpoints?node=NODE_ID",
        );
    };
    let node: NodeId = match q.node.parse() {
        Ok(n) => n,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the node in the query: {e}"),
            );
        }
    };
    let mut body = String::new();
    for (cp, signed) in state.audit.log.peer_checkpoints_of(&node) {
        let line = json!({
            "node": cp.node.to_string(),
            "seq": cp.seq,
            "head": hex::encode(cp.head),
            "at_ms": cp.at_ms,
            "signed": hex::encode(signed.to_bytes()),
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
