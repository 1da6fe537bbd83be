//! The spans the node task opens for traces: one per update it applies,
//! holds or refuses (target [`crate::telemetry::TRACE_TARGET`], exported
//! when `otlp_endpoint` is set, disabled at the call site otherwise).
//!
//! Fields: `update.id` (the change hash, or `trust-root-vN`),
//! `update.kind` (`bundle`, `revocation`, `quarantine`, `trust_root`,
//! `mixed` for a change touching several sections, `other`), `update.outcome`
//! (`applied`, `held`, `refused`), `update.source` (`gossip`, `sync` for any
//! other update from a peer, `local` for an API submit or this node's own
//! order) and, for a refusal, `update.reason` (the refusal's label). The
//! span covers the driver's work on that outcome (audit record, indexing);
//! the verification and the merge happened just before, in the replica.

use tracing::Span;
use tracing::field::Empty;
use weft_crdt::ChangeSummary;

use crate::telemetry::TRACE_TARGET;

/// The span of one update's outcome (`id` is unknown for a refusal).
pub(super) fn update(
    id: Option<&dyn std::fmt::Display>,
    kind: &'static str,
    outcome: &'static str,
    source: &'static str,
) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "update",
        otel.name = Empty,
        update.id = id.map(tracing::field::display),
        update.kind = kind,
        update.outcome = outcome,
        update.source = source,
        update.reason = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("update {outcome}"));
    }
    span
}

/// What a change is about, from the sections it touches.
pub(super) fn kind(summary: &ChangeSummary) -> &'static str {
    let bundles = !summary.bundles().is_empty();
    let revocations = !summary.revocations().is_empty();
    let quarantines = !summary.quarantines().is_empty();
    match (bundles, revocations, quarantines) {
        (true, false, false) => "bundle",
        (false, true, false) => "revocation",
        (false, false, true) => "quarantine",
        (false, false, false) => "other",
        _ => "mixed",
    }
}
