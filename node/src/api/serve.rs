//! Serving the API's router on one runtime's copy of the listening socket,
//! in plain HTTP or over TLS.
//!
//! Plain HTTP goes through `axum::serve`. TLS goes through an accept loop
//! of its own: each accepted connection gets a task of its own, which does
//! the handshake (bounded by [`HANDSHAKE_TIMEOUT`]) and then serves
//! HTTP/1.1 with hyper, so that a slow or stalled handshake never holds up
//! accepting the next connection. Each handshake takes the server
//! configuration current at that moment from an [`ArcSwap`], so a reloaded
//! certificate is served to every new connection while open ones keep the
//! one they began with.
//!
//! Either way, every request carries a `ConnectInfo<SocketAddr>` extension
//! (the client's address), and over TLS a [`ClientCert`] extension when the
//! client presented a certificate that verified ([`Peer::of`] reads both
//! for [`super::access`]). On shutdown
//! the listener stops accepting, idle connections close, and requests in
//! flight are answered (TLS: for at most [`DRAIN_TIMEOUT`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::ListenerExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address (the TCP peer; no forwarding header is trusted).
    pub addr: SocketAddr,
    /// The label of the client certificate it presented and that verified
    /// against `api_client_ca` ([`super::tls::cert_label`]); none without.
    pub client_cert: Option<String>,
}

/// The label of a verified client certificate, as a request extension.
#[derive(Clone, Debug)]
pub struct ClientCert(pub String);

impl Peer {
    /// Who sent `request`, from its extensions; `None` when it came
    /// through no listener of the node's (a test calling the router).
    pub fn of<B>(request: &axum::http::Request<B>) -> Option<Peer> {
        let ConnectInfo(addr) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
        Some(Peer {
            addr: *addr,
            client_cert: request
                .extensions()
                .get::<ClientCert>()
                .map(|c| c.0.clone()),
        })
    }
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, on shutdown, TLS connections have to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns Nagle off on an accepted connection: answers are written in one
/// go, and must not wait for the client's delayed ACK.
pub type NoDelay = fn(&mut tokio::net::TcpStream);

fn no_delay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// Serves `router` in plain HTTP on `listener` until `stop` completes.
pub async fn plain(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let listener = listener.tap_io(no_delay as NoDelay);
    if let Err(err) = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await
    {
        tracing::error!(%err, "the API server failed");
    }
}

/// Serves `router` over TLS on `listener` until `stop` completes, each
/// handshake with the configuration `tls` holds at that moment.
pub async fn tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<ArcSwap<ServerConfig>>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (mut tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // Out of file descriptors and the like: wait, as
                    // axum::serve does, rather than spin.
                    tracing::warn!(%err, "the API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        no_delay(&mut tcp);
        let acceptor = TlsAcceptor::from(tls.load_full());
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    tracing::debug!(%addr, %err, "an API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "an API TLS handshake timed out");
                    return;
                }
            };
            let client_cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(super::tls::cert_label);
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                if let Some(c) = &client_cert {
                    req.extensions_mut().insert(ClientCert(c.clone()));
                }
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(
                        tower::ServiceExt::oneshot(router, req)
                            .await
                            .unwrap_or_else(|e| match e {}),
                    )
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(%addr, %err, "an API TLS connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API TLS connections still open after the drain timeout were dropped");
    }
}
