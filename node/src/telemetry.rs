//! Logs and traces of `weft node run`: the subscriber that writes log lines
//! to stderr and, when `otlp_endpoint` is set, exports spans over OTLP.
//!
//! # Layout
//! One `tracing` registry with up to two layers, each with its own filter:
//! - the log writer (pretty or JSON lines on stderr), filtered by `RUST_LOG`
//!   or, without it, [`DEFAULT_LOG_FILTER`], which leaves out the spans of
//!   [`TRACE_TARGET`];
//! - with `otlp_endpoint`, the OpenTelemetry layer, which takes only the
//!   spans of [`TRACE_TARGET`] (one per API request, one per update the node
//!   task applies, holds or refuses) and hands them to a batch exporter that
//!   posts them as OTLP/HTTP protobuf to `<otlp_endpoint>/v1/traces` from a
//!   thread of its own.
//!
//! # Rules
//! - Without `otlp_endpoint` no layer wants a [`TRACE_TARGET`] span, so
//!   `tracing` marks those call sites as never enabled: making such a span
//!   costs one relaxed atomic load, and its fields are never evaluated.
//! - The resource carries `service.name = "weft"`, `service.version`, and
//!   the node id as `service.instance.id`.
//! - Export never blocks a request or the node task: the batch processor
//!   queues up to 2,048 spans and drops what does not fit (the SDK's
//!   defaults); a collector that is down costs dropped spans and an error
//!   line per failed export (the SDK's `internal-logs`, through the log
//!   layer), never a decision.
//!
//! # What is never lost
//! Spans still queued when the node stops cleanly are flushed by
//! [`Telemetry::shutdown`] (waiting at most [`FLUSH_TIMEOUT`]). Spans are a
//! sample of the node's work, not a record: the audit log is the record.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer as _, Registry};

/// The target of every span meant for traces (API requests and updates).
pub const TRACE_TARGET: &str = "weft::trace";

/// The log filter when `RUST_LOG` is unset: info and up, gossipsub's
/// chatter left out, Kademlia's warning that it cannot bootstrap before
/// it knows a peer left out (every node starts so; discovery's lookups are
/// the node task's, `crate::discovery`), and the trace spans left out
/// (they are for the OTLP exporter; formatting them into every log line
/// would cost each request).
pub const DEFAULT_LOG_FILTER: &str =
    "info,libp2p_gossipsub=warn,libp2p_kad::behaviour=error,weft::trace=off";

/// The path OTLP/HTTP collectors take traces on, appended to `otlp_endpoint`.
pub const TRACES_PATH: &str = "/v1/traces";

/// How long [`Telemetry::shutdown`] waits for queued spans to be sent.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What `weft node run` keeps until it exits: the span exporter, if any.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The URL spans are posted to: `endpoint` with [`TRACES_PATH`] appended,
/// unless it already ends with it. `endpoint` must be an `http://` or
/// `https://` URL.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "otlp_endpoint \"{endpoint}\" is not an http:// or https:// URL (like http://127.0.0.1:4318)"
        ));
    }
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        Ok(base.to_owned())
    } else {
        Ok(format!("{base}{TRACES_PATH}"))
    }
}

/// Installs the global subscriber: logs in `format` (`pretty` or `json`) on
/// stderr, and spans exported to `otlp_endpoint` when it is not empty, with
/// `node_id` as the resource's `service.instance.id`. Call it outside any
/// async runtime (the exporter's HTTP client runs one of its own). An
/// endpoint that is not a URL, or an exporter that cannot be built, is an
/// error naming `otlp_endpoint`; a subscriber already installed (tests) is
/// left as it is.
pub fn init(format: &str, otlp_endpoint: &str, node_id: &str) -> Result<Telemetry, String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let provider = if otlp_endpoint.trim().is_empty() {
        None
    } else {
        Some(provider(&traces_url(otlp_endpoint)?, node_id)?)
    };
    let _ = tracing::subscriber::set_global_default(subscriber(
        format,
        filter,
        provider.as_ref().map(|p| p.tracer("weft")),
    ));
    Ok(Telemetry { provider })
}

/// The subscriber [`init`] installs: the log writer, and the trace exporter
/// when there is a `tracer`. Without one the registry has the log layer
/// only, so a span no filter wants is disabled at its call site.
pub fn subscriber(
    format: &str,
    filter: EnvFilter,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if format == "json" {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    match tracer {
        None => Box::new(Registry::default().with(logs)),
        Some(tracer) => Box::new(
            Registry::default().with(logs).with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(Targets::new().with_target(TRACE_TARGET, tracing::Level::TRACE)),
            ),
        ),
    }
}

/// A tracer provider with a batch exporter posting OTLP/HTTP protobuf to
/// `url`.
fn provider(url: &str, node_id: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("otlp_endpoint \"{url}\": cannot set up the span exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name("weft")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", node_id.to_owned()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued and stops the exporter. Call it outside
    /// any async runtime, once the node has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(%err, "the span exporter did not flush every span at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c/otlp/v1/traces").unwrap(),
            "https://c/otlp/v1/traces"
        );
        let err = traces_url("127.0.0.1:4318").unwrap_err();
        assert!(err.contains("otlp_endpoint"), "{err}");
    }

    /// A span of [`TRACE_TARGET`], as the API and the node task make them.
    fn trace_span() -> tracing::Span {
        tracing::info_span!(target: TRACE_TARGET, "request", http.route = "/v1/authorize")
    }

    #[test]
    fn trace_spans_go_to_the_exporter_only() {
        let logs_only = subscriber("pretty", EnvFilter::new(DEFAULT_LOG_FILTER), None);
        tracing::subscriber::with_default(logs_only, || {
            assert!(trace_span().is_disabled(), "no exporter, no span");
            assert!(!tracing::info_span!("a_log_span").is_disabled());
        });
        let provider = SdkTracerProvider::builder().build();
        let with_otel = subscriber(
            "json",
            EnvFilter::new(DEFAULT_LOG_FILTER),
            Some(provider.tracer("test")),
        );
        tracing::subscriber::with_default(with_otel, || {
            assert!(!trace_span().is_disabled(), "the exporter takes it");
        });
        // The log filter still leaves ordinary targets to the log layer only.
        let provider2 = SdkTracerProvider::builder().build();
        let with_otel = subscriber(
            "pretty",
            EnvFilter::new("warn"),
            Some(provider2.tracer("test")),
        );
        tracing::subscriber::with_default(with_otel, || {
            assert!(tracing::info_span!("not_a_trace_span").is_disabled());
        });
    }
}
