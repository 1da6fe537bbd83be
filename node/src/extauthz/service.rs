//! The `envoy.service.auth.v3.Authorization` service: one `Check` is one
//! decision, made and recorded as `/v1/forward-auth` makes and records
//! one ([`crate::api::forward`]): the request mapped ([`super::map`]), the
//! caller's identity resolved, [`decide_http`] on the current view, the
//! record written everywhere a decision goes
//! (`crate::api::record_decision`), and the answer.
//!
//! Each `Check` runs in a span (target [`crate::telemetry::TRACE_TARGET`],
//! exported when `otlp_endpoint` is set) carrying its decision id.
//!
//! `Check` never fails at the gRPC level: every request, even one that is
//! not an HTTP request, gets a `CheckResponse` (a malformed one is a 403).

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tracing::Instrument as _;
use weft_protocol::gateway::Identity;

use super::map::{self, Credential};
use crate::api::ApiState;

/// The service, sharing the HTTP API's state (view, identities, audit,
/// metrics, decision log, detector, dashboard).
pub struct CheckService {
    state: Arc<ApiState>,
}

impl CheckService {
    /// The service over the API's state.
    pub fn new(state: Arc<ApiState>) -> Self {
        CheckService { state }
    }

    /// Decides one `CheckRequest`.
    pub async fn decide(&self, check: &CheckRequest) -> CheckResponse {
        let started = std::time::Instant::now();
        let state = &self.state;
        let http = match map::http_request(check) {
            Ok(h) => h,
            Err(why) => {
                tracing::debug!(%why, "ext_authz: a CheckRequest with no HTTP request");
                return map::malformed(&why);
            }
        };
        let view = state.shared.view.load();
        let root = state.shared.root.load();
        let now_ms = crate::clock::now_ms();
        let identity = match map::credential(&http, check) {
            Credential::Bearer(Ok(text)) => {
                state
                    .identities
                    .resolve(Some(text), &view, &root, now_ms)
                    .await
            }
            Credential::Bearer(Err(why)) => Identity::Refused(why),
            Credential::Spiffe(id) => map::spiffe_identity(id, &view.gateway().issuers),
            Credential::None => state.identities.resolve(None, &view, &root, now_ms).await,
        };
        let (decided, id) = crate::api::forward::decide_and_record(
            state, &http, identity, &view, &root, now_ms, started,
        )
        .await;
        map::answer(&decided, id.as_str(), view.digest())
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let check = request.into_inner();
        // The request span, exported when `otlp_endpoint` is set (as the
        // HTTP API's are); disabled at its call site otherwise.
        let span = tracing::info_span!(
            target: crate::telemetry::TRACE_TARGET,
            "check",
            otel.name = "envoy.service.auth.v3.Authorization/Check",
            otel.kind = "server",
            rpc.system = "grpc",
            decision_id = tracing::field::Empty,
        );
        let answer = self.decide(&check).instrument(span).await;
        Ok(tonic::Response::new(answer))
    }
}
