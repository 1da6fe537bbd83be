//! The status the node task answers (`GET /v1/status`, `weft status`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_crdt::Conflict;

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
    /// The name on the certificate it was admitted with.
    #[serde(default)]
    pub cert_name: Option<String>,
    /// When that certificate expires (Unix seconds).
    #[serde(default)]
    pub cert_expires: Option<u64>,
    /// The latest ping round trip, in milliseconds (none before the first
    /// answer).
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// The transport of its connection: `tcp`, `quic`, or `relayed` for a
    /// circuit through a relay (of the oldest direct one when it has
    /// several, else of the oldest).
    #[serde(default)]
    pub transport: Option<String>,
    /// The connection's remote address, as a multiaddr: the address
    /// dialed (a name stays a name), or where an inbound one came from.
    #[serde(default)]
    pub address: Option<String>,
    /// Whether the connection is `direct`, `relayed` (through a relay's
    /// `/p2p-circuit`), or `direct after hole punch` (a direct connection
    /// DCUtR made from a relayed one).
    #[serde(default)]
    pub route: Option<String>,
    /// Whether that connection was made by hole punching (DCUtR).
    #[serde(default)]
    pub hole_punched: bool,
    /// Whether it is in this node's gossipsub mesh of the update topic:
    /// this node sends it every update it takes in at once, and a peer in
    /// no node's mesh hears of an update only at a heartbeat (IHAVE).
    #[serde(default)]
    pub update_mesh: bool,
}

/// NAT traversal in [`Status`]: what autonat found, the relays this node
/// listens through, what it relays for others, and its hole punches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// Whether this node relays for admitted peers (`relay = true`).
    pub serving: bool,
    /// Reservations it holds for others now (as a relay).
    pub reservations: u64,
    /// Circuits open through it now (as a relay).
    pub circuits: u64,
    /// Reservations it refused since start: a peer not admitted, or a
    /// bound reached.
    pub refused_reservations: u64,
    /// Circuits it refused since start, for the same reasons or a
    /// destination with no reservation.
    pub refused_circuits: u64,
    /// The relayed addresses this node is reachable at
    /// (`/…/p2p/RELAY/p2p-circuit/p2p/ME`), one per relay that accepted
    /// its reservation.
    pub via: Vec<String>,
    /// Direct connections made by hole punching since start (as DCUtR
    /// reported them, or as they came in through the NAT).
    pub hole_punches: u64,
    /// Hole punches that failed since start (each after DCUtR's attempts).
    pub hole_punch_failures: u64,
    /// Why the last hole punch failed, if one has.
    pub last_hole_punch_error: Option<String>,
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
    /// Anti-entropy rounds skipped because a peer had just synced with
    /// this node.
    #[serde(default)]
    pub rounds_skipped: u64,
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
    /// Bytes of the updates held (bounded, see docs/security.md, "The trust boundary").
    #[serde(default)]
    pub held_bytes: usize,
    /// Milliseconds since the last exchange with a peer; null if none yet.
    pub last_sync_ms_ago: Option<u64>,
    /// The trust root.
    pub trust_root: RootStatus,
    /// Counters.
    pub stats: StatsStatus,
    /// The audit trail.
    #[serde(default)]
    pub audit: crate::audit::AuditStatus,
    /// Anomaly detection and quarantines issued.
    #[serde(default)]
    pub anomalies: crate::anomaly::AnomalyStatus,
    /// Whether the node can be dialed from outside, as autonat found:
    /// `public`, `private` or `unknown`.
    #[serde(default)]
    pub reachability: String,
    /// NAT traversal: relays, circuits, hole punches.
    #[serde(default)]
    pub relay: RelayStatus,
}
