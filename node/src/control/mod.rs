//! The narrow interface to the node task: the commands the HTTP API, the
//! detector's responder and the in-process handle send it, the state it
//! shares with them without a round trip, and the status it answers.
//!
//! The task ([`crate::task`]) owns the replica, the swarm and the store;
//! nothing else touches them. Everything else reaches the task through a
//! [`Command`] on its channel, each with a `oneshot` for the answer, or
//! reads [`Shared`], which the task keeps current (the policy view and the
//! trust root behind atomic pointers, counters, liveness).

use std::sync::Arc;

use arc_swap::ArcSwap;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};
use weft_crdt::PolicyView;
use weft_protocol::identity::NodeId;
use weft_protocol::trust::TrustRoot;
use weft_protocol::update::UpdateError;

use crate::store::StoreError;

pub mod evidence;
pub mod reload;
mod status;

use crate::swarm::Traffic;
pub use status::{BundleStatus, PeerStatus, RelayStatus, RootStatus, StatsStatus, Status};

/// What a submit came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The update's id: hex of its change hash.
    pub id: String,
    /// `applied`, `duplicate` or `held`.
    pub status: &'static str,
}

/// Why a submit failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The update was refused.
    #[error(transparent)]
    Refused(#[from] UpdateError),
    /// The update was accepted but could not be stored durably.
    #[error("the node could not store the update: {0}")]
    Store(#[from] StoreError),
}

/// A request to the node task.
#[derive(Debug)]
pub enum Command {
    /// `POST /v1/updates`.
    Submit {
        /// The signed update's bytes.
        bytes: Vec<u8>,
        /// Where the outcome goes, after the update is durable.
        reply: oneshot::Sender<Result<Submitted, SubmitError>>,
        /// The request's span: the update's own span is its child, so a
        /// trace shows the push and the apply together (disabled without
        /// an OTLP exporter).
        span: tracing::Span,
    },
    /// `GET /v1/state`: the encoded [`StateExport`].
    Export {
        /// Where the bytes go.
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// `GET /v1/status`.
    Status {
        /// Where the status goes.
        reply: oneshot::Sender<Status>,
    },
    /// `GET /v1/dashboard` and `GET /v1/report`: the state with provenance.
    Evidence {
        /// Whether to include every policy's text and look up each
        /// quarantine's author (the report), or not (the dashboard).
        full: bool,
        /// Where the evidence goes.
        reply: oneshot::Sender<crate::control::evidence::NodeEvidence>,
    },
    /// Quarantine a subject on this node's own authority (the detector's
    /// response): a signed quarantine order, applied and gossiped.
    Quarantine {
        /// The subject, a Cedar uid.
        subject: String,
        /// The record (its issuer is set to this node).
        record: weft_crdt::QuarantineRecord,
        /// The order's id, or why it was not issued.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Present this node certificate from now on (a renewed
    /// `DIR/node.cert`, verified by [`crate::reload`]): peers that connect
    /// from now on are shown it; admitted peers stay admitted.
    SetCert {
        /// The encoded `SignedNodeCert`.
        bytes: Vec<u8>,
        /// Acknowledged once adopted.
        reply: oneshot::Sender<()>,
    },
    /// Cut the connections to a peer and refuse it (a simulated partition).
    Block {
        /// The peer.
        peer: PeerId,
        /// Acknowledged once done.
        reply: oneshot::Sender<()>,
    },
    /// Lift a [`Command::Block`] (not a ban).
    Unblock {
        /// The peer.
        peer: PeerId,
        /// Acknowledged once done.
        reply: oneshot::Sender<()>,
    },
    /// Test hook: publish raw bytes on the update topic, bypassing every check.
    #[cfg(feature = "test-hooks")]
    GossipRaw {
        /// The bytes.
        bytes: Vec<u8>,
        /// Whether gossipsub took the message.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Test hook: publish raw bytes on the detection summary topic,
    /// bypassing every check.
    #[cfg(feature = "test-hooks")]
    GossipSummaryRaw {
        /// The bytes.
        bytes: Vec<u8>,
        /// Whether gossipsub took the message.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Test hook: the node task panics, as a bug in it would.
    #[cfg(feature = "test-hooks")]
    PanicForTest,
}

/// What the node task shares with the API.
pub struct Shared {
    /// The current view; swapped after every applied update.
    pub view: ArcSwap<PolicyView>,
    /// The latest trust root; swapped with the view. Identity tokens are
    /// verified against it.
    pub root: ArcSwap<TrustRoot>,
    /// This node's id.
    pub node_id: NodeId,
    /// Bytes in and out on every connection.
    pub traffic: Arc<Traffic>,
    /// Unix milliseconds of the last exchange with a peer; 0 before the first.
    pub last_sync_ms: std::sync::atomic::AtomicU64,
    /// Unix milliseconds when the node started.
    pub started_ms: u64,
    /// The node certificate it presents (encoded `SignedNodeCert`; empty
    /// when it has none); swapped when a renewed one is reloaded.
    pub cert: ArcSwap<Vec<u8>>,
    /// The staleness policy: after how long without a sync the state is
    /// stale, and what decisions do then.
    pub stale: Staleness,
    /// The detector's recent alerts and counters.
    pub anomalies: Arc<crate::anomaly::AnomalyLog>,
    /// Whether the node task runs ([`NodeTask::run`] holds its guard).
    pub liveness: crate::liveness::Liveness,
}

/// When the state counts as stale, and what to do then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staleness {
    /// Milliseconds without a sync before the state is stale.
    pub after_ms: u64,
    /// What decisions do while it is stale.
    pub on_stale: crate::layout::OnStale,
}

impl Default for Staleness {
    /// Five minutes and keep: the defaults of `weft.toml`.
    fn default() -> Self {
        Staleness {
            after_ms: 5 * 60 * 1000,
            on_stale: crate::layout::OnStale::Keep,
        }
    }
}

impl Shared {
    /// Milliseconds since the last sync with a peer (since the start, if
    /// there was none yet), and whether that is longer than the limit.
    pub fn freshness(&self, now_ms: u64) -> (Option<u64>, bool) {
        let last = self.last_sync_ms.load(std::sync::atomic::Ordering::Relaxed);
        let since = if last == 0 { self.started_ms } else { last };
        let age = now_ms.saturating_sub(since);
        ((last != 0).then_some(age), age > self.stale.after_ms)
    }
}

/// Sends the command `make` builds to the node task and waits for its
/// answer; `None` when the task has ended (it dropped the command or the
/// reply).
pub async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.ok()?;
    rx.await.ok()
}
