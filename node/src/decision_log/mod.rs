//! Decision logs shipped out: every deny and a sample of allows, as OPA-style
//! JSON lines ([`record`]), POSTed in gzip-compressed batches to the
//! receiver that `[decision_log]` in `weft.toml` names ([`config`]).
//!
//! ```text
//! API handler ──try_send──> queue (bounded) ──intake──> buffer on disk ──sender──> POST url
//!   never waits               full: dropped, counted      full: oldest dropped,      gzip, x-ndjson;
//!                             (reason "queue_full")       counted ("buffer_full")    retried with backoff
//! ```
//!
//! - A decision never waits for the log: the handler offers its record to
//!   a bounded queue and goes on; when the queue is full the record is
//!   dropped and counted.
//! - The intake moves records from the queue to the buffer in the node's
//!   store ([`buffer`]), so they survive a receiver outage and a restart.
//! - The sender ([`shipper`]) takes the oldest records, up to
//!   `batch_max`, and POSTs them; only a 2xx answer removes them. A
//!   failure (no connection, a timeout, 5xx, 408, 429) keeps them and
//!   tries again after a wait that doubles up to `retry_max`, with
//!   jitter. Any other 4xx means the receiver will never take the batch:
//!   it is dropped, counted (reason `rejected`) and logged once per
//!   status.
//!
//! Delivery is at least once: a batch the receiver took but whose answer
//! was lost (a timeout, a crash of the node before it removed the batch)
//! is sent again, so receivers deduplicate by `decision_id`. What is never
//! lost: a record the buffer took, until the buffer's byte limit pushes it
//! out (counted), or a receiver refuses its batch with a 4xx (counted).
//!
//! Metrics: `weft_decision_log_sent_total`, `weft_decision_log_retried_total`
//! (records in batches that failed and wait to be sent again),
//! `weft_decision_log_dropped_total{reason}` (`queue_full`,
//! `buffer_full`, `rejected`, `store`, `syslog`),
//! `weft_decision_log_buffer_bytes` and `weft_decision_log_buffer_records`.
//!
//! A second sink, RFC 5424 syslog over UDP or TCP ([`syslog`]), takes
//! the same records best effort, with no buffer on disk; the log may have
//! either sink or both.

pub mod buffer;
pub mod config;
pub mod record;
pub mod shipper;
pub mod syslog;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use config::{DecisionLogConfig, DecisionLogOptions};
pub use record::Pending;
pub use shipper::{DecisionLogHandle, start};

/// Why records were dropped, as the `reason` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The queue from the API to the buffer was full.
    QueueFull,
    /// The buffer on disk was full: the oldest records made room.
    BufferFull,
    /// The receiver refused the batch with a 4xx other than 408 and 429.
    Rejected,
    /// The store failed to take the records.
    Store,
    /// The syslog sink's queue was full, or the network refused the
    /// message.
    Syslog,
}

impl DropReason {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BufferFull => "buffer_full",
            DropReason::Rejected => "rejected",
            DropReason::Store => "store",
            DropReason::Syslog => "syslog",
        }
    }
}

/// The label of dropped records.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    /// [`DropReason::label`].
    pub reason: &'static str,
}

/// The decision log's counters, shared with `/metrics`.
#[derive(Clone, Default)]
pub struct DecisionLogMetrics {
    /// Records delivered (in batches the receiver answered 2xx).
    pub sent: Counter,
    /// Records in batches that failed and wait to be sent again.
    pub retried: Counter,
    /// Records dropped, by reason.
    pub dropped: Family<DropLabel, Counter>,
    /// Bytes in the buffer on disk.
    pub buffer_bytes: Gauge,
    /// Records in the buffer on disk.
    pub buffer_records: Gauge,
}

impl DecisionLogMetrics {
    /// Counts `n` records dropped for `reason`.
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped
                .get_or_create(&DropLabel {
                    reason: reason.label(),
                })
                .inc_by(n);
        }
    }

    /// Registers the metrics in `r` (which adds the `weft_` prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "decision_log_sent",
            "Decision records delivered to the decision log's receiver",
            self.sent.clone(),
        );
        r.register(
            "decision_log_retried",
            "Decision records in batches that failed to deliver and wait to be sent again",
            self.retried.clone(),
        );
        r.register(
            "decision_log_dropped",
            "Decision records dropped, by reason: queue_full, buffer_full (the oldest made room), rejected (a 4xx), store, syslog",
            self.dropped.clone(),
        );
        r.register(
            "decision_log_buffer_bytes",
            "Bytes of decision records in the buffer on disk",
            self.buffer_bytes.clone(),
        );
        r.register(
            "decision_log_buffer_records",
            "Decision records in the buffer on disk",
            self.buffer_records.clone(),
        );
    }
}
