//! Envoy's external authorization over gRPC:
//! `envoy.service.auth.v3.Authorization/Check`, served on `ext_authz_listen`
//! (a weft.toml setting, `HOST:PORT`; off when unset) beside the HTTP API.
//!
//! Layout:
//! - [`map`]: `CheckRequest` to the request Weft decides on, the caller's
//!   credential, a SPIFFE peer's identity, and the decision to a
//!   `CheckResponse` (pure; the `check` fuzz target runs it);
//! - [`service`]: the tonic service: one `Check`, one recorded decision;
//! - here: serving it, and the rules on where it may listen.
//!
//! Rules:
//! - The service speaks plain HTTP/2 (h2c): on a loopback address only
//!   (Envoy beside the node), unless `api_insecure = true`
//!   ([`check_listen`]). A node that cannot bind it does not start.
//! - Each of the API's runtimes serves its own copy of the listening
//!   socket, as the HTTP API does, and stops with it.
//! - A `CheckRequest` larger than [`MAX_CHECK_BYTES`] is refused by tonic
//!   (`OUT_OF_RANGE`; Envoy then applies its `failure_mode_allow`, deny by
//!   default); every other request gets an answer, never a gRPC error.
//! - Every decision goes where the API's go: metrics, audit trail,
//!   decision log, detector, dashboard.

pub mod map;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tonic::transport::server::TcpIncoming;

pub use service::CheckService;

/// The largest `CheckRequest` decoded: 1 MiB, room for every header of a
/// request and a buffered body Envoy may forward (`with_request_body`),
/// a quarter of tonic's default.
pub const MAX_CHECK_BYTES: usize = 1 << 20;

/// How often an idle HTTP/2 connection from Envoy is pinged, so that a
/// peer gone without a word is noticed.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// Refuses a listening address that is not loopback unless `insecure`
/// (`api_insecure`): the service has no TLS and no access control of its
/// own, and its answers say who is allowed.
pub fn check_listen(addr: SocketAddr, insecure: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || insecure {
        Ok(())
    } else {
        Err(format!(
            "ext_authz_listen {addr} is not a loopback address, and the ext_authz service speaks plain HTTP/2: run Envoy beside the node and listen on 127.0.0.1, or set api_insecure = true to let anyone on the network ask"
        ))
    }
}

/// Serves `service` on `listener` until `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<CheckService>,
    stop: impl Future<Output = ()>,
) {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .add_service(
            AuthorizationServer::from_arc(service).max_decoding_message_size(MAX_CHECK_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    if let Err(err) = served {
        tracing::error!(%err, "the ext_authz server failed");
    }
}
