//! What every API request leaves behind: a span, and a sample in
//! `weft_http_request_duration_seconds{route,method,status}`.
//!
//! # Layout
//! [`observe`] is a middleware on every route (and on the fallback, as route
//! `unmatched`). It opens the request span, runs the handler inside it,
//! records the status, and wraps the response body in [`Timed`], which holds
//! the span, the start instant and the route's histogram until the body is
//! done.
//!
//! # Rules
//! - The duration runs from the moment the router is handed the request
//!   (hyper has read the request head; a small request such as an
//!   authorize body arrives in the same segment) to the moment the last
//!   frame of the response body has been taken by the connection for
//!   writing, or the body is dropped because the client went away. A
//!   streamed answer (`/v1/audit`) is timed to its end, not to its headers.
//! - Labels come from a closed set: the route template (never the path a
//!   client sent), the method among the standard ones or `other`, and the
//!   status code. A client cannot make the label set grow.
//! - The span (target [`TRACE_TARGET`], name `METHOD ROUTE`) carries
//!   `http.route`, `http.request.method`, `http.response.status_code` and
//!   `decision_id`, declared empty for the decision handlers to record.
//!   Without an OTLP exporter the span is disabled at its call site and
//!   costs an atomic load; the histogram costs two clock reads and one
//!   short lock.

use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::metrics::HttpDurations;
use crate::telemetry::TRACE_TARGET;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The route templates seen so far, each leaked once, so that labels are
/// `&'static str` and a lookup allocates nothing. Templates are the
/// router's own strings: a bounded set, whatever clients send.
static ROUTES: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

/// The `'static` copy of a route template.
fn route_label(path: Option<&str>) -> &'static str {
    let Some(path) = path else {
        return UNMATCHED;
    };
    {
        let routes = ROUTES.read().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = routes.iter().find(|r| **r == path) {
            return r;
        }
    }
    let mut routes = ROUTES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = routes.iter().find(|r| **r == path) {
        return r;
    }
    let r: &'static str = Box::leak(path.to_owned().into_boxed_str());
    routes.push(r);
    r
}

/// The method label: a standard method's name, else `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The middleware: see the module doc.
pub async fn observe(
    State(durations): State<HttpDurations>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let method = method_label(request.method());
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "request",
        otel.name = Empty,
        otel.kind = "server",
        http.route = route,
        http.request.method = method,
        http.response.status_code = Empty,
        decision_id = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("{method} {route}"));
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let histogram = durations.of(route, method, status);
    response.map(|body| {
        Body::new(Timed {
            body,
            started,
            histogram,
            _span: span,
        })
    })
}

/// A response body that records the request's duration when it is done.
pub struct Timed {
    body: Body,
    started: Instant,
    histogram: prometheus_client::metrics::histogram::Histogram,
    /// Held so that the request span closes with the body.
    _span: tracing::Span,
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_interned_templates() {
        assert_eq!(route_label(None), UNMATCHED);
        let a = route_label(Some("/v1/observe-test/{id}"));
        let b = route_label(Some(&String::from("/v1/observe-test/{id}")));
        assert_eq!(a, "/v1/observe-test/{id}");
        assert!(std::ptr::eq(a, b), "one leaked copy per template");
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
