//! Scenarios: what a simulation runs, as TOML.
//!
//! A scenario names the payload mode, the network, the gossip and replica
//! settings, the workload (a steady stream of signed updates), and a list of
//! timed faults. Every field has a default, so a scenario only states what
//! differs. Durations are strings like `250ms`, `1.5s`, `90s`, `15m`, `1h`.
//!
//! ```toml
//! name = "split-brain"
//! nodes = 100
//! duration = "120s"
//! [network]
//! latency = "50ms"
//! loss = 0.01
//! [[fault]]
//! kind = "partition"
//! shape = "halves"
//! at = "30s"
//! until = "70s"
//! ```
//!
//! Built-in scenarios live in `simulations/scenarios/*.toml` and are compiled
//! in; `weft sim --list` lists them.

use serde::{Deserialize, Deserializer, Serialize};

use crate::SimError;

/// The payload mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Real automerge documents, real signatures, the real `SignedState`.
    #[default]
    Full,
    /// Updates as signed ids, for 10,000 nodes and more.
    Light,
}

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// One sentence on what it shows.
    #[serde(default)]
    pub description: String,
    /// Node count (the CLI's `--nodes` overrides it).
    #[serde(default = "d_nodes")]
    pub nodes: usize,
    /// Payload mode.
    #[serde(default)]
    pub mode: Mode,
    /// How long updates and faults run, in ms. Afterwards every fault is
    /// healed and the run continues, with no new updates, until the mesh has
    /// converged or `quiet` has passed.
    #[serde(default = "d_duration", deserialize_with = "de_ms")]
    pub duration: u64,
    /// The longest quiet period after `duration`, in ms.
    #[serde(default = "d_quiet", deserialize_with = "de_ms")]
    pub quiet: u64,
    /// The network.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The gossip overlay.
    #[serde(default)]
    pub gossip: GossipConfig,
    /// The replicas.
    #[serde(default)]
    pub replica: ReplicaSettings,
    /// The stream of updates.
    #[serde(default)]
    pub workload: Workload,
    /// Timed faults.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Deliberately broken configurations, so tests can show that each
    /// checker catches a violation. Never set in a real scenario.
    #[serde(default)]
    pub sabotage: Sabotage,
}

fn d_nodes() -> usize {
    50
}
fn d_duration() -> u64 {
    60_000
}
fn d_quiet() -> u64 {
    60_000
}

/// The shape of per-message latency around a link's base latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Always the base.
    Constant,
    /// Base plus uniform in `[0, jitter]`.
    #[default]
    Uniform,
    /// Base plus exponential with mean `jitter` (a long tail).
    Exponential,
}

/// Links between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Mean one-way base latency, ms. Default 50 (a WAN between sites).
    #[serde(default = "d_latency", deserialize_with = "de_ms")]
    pub latency: u64,
    /// How far each link's own base latency spreads around `latency`, as a
    /// fraction (0.2: each link's base is within ±20%). Default 0.2.
    #[serde(default = "d_spread")]
    pub link_spread: f64,
    /// Per-message jitter on top of the base, ms. Default 5.
    #[serde(default = "d_jitter", deserialize_with = "de_ms")]
    pub jitter: u64,
    /// The jitter's distribution.
    #[serde(default)]
    pub distribution: Distribution,
    /// Probability a message is lost on its way (each try). Default 0.
    #[serde(default)]
    pub loss: f64,
    /// What a loss costs: `retransmit` (default) or `drop`.
    #[serde(default)]
    pub loss_model: LossModel,
    /// The first retransmission timeout, ms; it doubles on each further
    /// loss. Default 200 (Linux's `TCP_RTO_MIN`).
    #[serde(default = "d_rto", deserialize_with = "de_ms")]
    pub rto: u64,
    /// Probability a message is delivered twice. Default 0.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability a message is held back by up to `reorder_delay`, so that
    /// it overtakes or is overtaken. Default 0.
    #[serde(default)]
    pub reorder: f64,
    /// The longest hold-back of a reordered message, ms. Default 200.
    #[serde(default = "d_reorder_delay", deserialize_with = "de_ms")]
    pub reorder_delay: u64,
    /// Whether a partition closes the connections across it. Default true:
    /// the node pings each peer every second and closes a connection whose
    /// ping goes unanswered for two, so a cut of more than about three
    /// seconds closes its connections; a closed connection is redialed
    /// after the heal and starts with `Hello`. With false, connections stay
    /// open and only the messages are dropped (a blackhole shorter than
    /// the ping timeout).
    #[serde(default = "d_true")]
    pub partition_closes: bool,
    /// The longest wait before a connection cut by a partition is dialed
    /// again after the heal, ms; each connection's wait is drawn uniformly
    /// up to it. Default 1,500: the node's redial cycle towards a peer it
    /// cannot reach (a connect that gives up after 1 s, then a backoff of
    /// at most 0.5 s), within which the heal falls anywhere.
    #[serde(default = "d_redial", deserialize_with = "de_ms")]
    pub redial: u64,
    /// Per-node processing delay before a node handles a message, ms. Default 0.
    #[serde(default, deserialize_with = "de_ms")]
    pub processing: u64,
}

fn d_redial() -> u64 {
    1_500
}

fn d_rto() -> u64 {
    200
}

/// How a lost message shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossModel {
    /// libp2p runs on TCP: a lost segment is sent again after a
    /// retransmission timeout, and later messages on the same connection wait
    /// behind it (head-of-line blocking). Loss costs time, not messages.
    #[default]
    Retransmit,
    /// The message is gone, as with datagrams. Harsher than any TCP
    /// connection that stays up; useful to stress the repair paths.
    Drop,
}

fn d_latency() -> u64 {
    50
}
fn d_spread() -> f64 {
    0.2
}
fn d_jitter() -> u64 {
    5
}
fn d_reorder_delay() -> u64 {
    200
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency: d_latency(),
            link_spread: d_spread(),
            jitter: d_jitter(),
            distribution: Distribution::default(),
            loss: 0.0,
            loss_model: LossModel::default(),
            rto: d_rto(),
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: d_reorder_delay(),
            partition_closes: true,
            redial: d_redial(),
            processing: 0,
        }
    }
}

/// The gossipsub-like overlay. Defaults are the node's own gossipsub
/// configuration (`node/src/net.rs`, `gossipsub_config`) and, where the node
/// keeps libp2p's default, libp2p's.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipConfig {
    /// `mesh_n`: the mesh degree a node aims for. Node default 3.
    #[serde(default = "d_d")]
    pub d: usize,
    /// `mesh_n_low`: below this the heartbeat grafts. Node default 1.
    #[serde(default = "d_d_low")]
    pub d_low: usize,
    /// `mesh_n_high`: above this the heartbeat prunes. Node default 12.
    #[serde(default = "d_d_high")]
    pub d_high: usize,
    /// `gossip_lazy`: peers outside the mesh that get IHAVE per heartbeat.
    /// libp2p's default (and the node's) 6.
    #[serde(default = "d_d_lazy")]
    pub d_lazy: usize,
    /// `heartbeat_interval`, ms. Node default 1,000.
    #[serde(default = "d_heartbeat", deserialize_with = "de_ms")]
    pub heartbeat: u64,
    /// `history_gossip`: heartbeats whose message ids go into IHAVE.
    /// Node default 1 (libp2p's, 3).
    #[serde(default = "d_history_gossip")]
    pub history_gossip: usize,
    /// `history_length`: heartbeats a message stays answerable to IWANT. libp2p default 5.
    #[serde(default = "d_history_length")]
    pub history_length: usize,
    /// `flood_publish`: a node's own updates go to every connected peer, not
    /// just its mesh. libp2p default (and the node's) true.
    #[serde(default = "d_true")]
    pub flood_publish: bool,
    /// Peers each node dials at start (the connection graph; a node's degree
    /// is about twice this). Default 8, the node's `discovery_peers`: a
    /// node dials peers while it holds fewer than that, and holds at most
    /// twice as many.
    #[serde(default = "d_dials")]
    pub dials: usize,
    /// Largest gossip message accepted (`max_transmit_size`), bytes. Node
    /// default 4 MiB + 64 KiB.
    #[serde(default = "d_max_transmit")]
    pub max_transmit: usize,
    /// `idontwant_message_size_threshold`: a message whose gossipsub frame
    /// is larger than this makes its receiver send IDONTWANT to its mesh,
    /// bytes. libp2p default (and the node's) 1,000.
    #[serde(default = "d_idontwant")]
    pub idontwant_threshold: usize,
    /// `MessageAuthenticity::Anonymous` with `ValidationMode::Anonymous`:
    /// messages carry no source, sequence number or envelope signature
    /// (updates are operator-signed, and ids are SHA-256 of the data), so
    /// forwarding and IDONTWANT cannot skip the publisher. Node default
    /// true; false is `MessageAuthenticity::Signed`.
    #[serde(default = "d_true")]
    pub anonymous: bool,
}

fn d_d() -> usize {
    3
}
fn d_d_low() -> usize {
    1
}
fn d_d_high() -> usize {
    12
}
fn d_d_lazy() -> usize {
    6
}
fn d_heartbeat() -> u64 {
    1_000
}
fn d_history_gossip() -> usize {
    1
}
fn d_history_length() -> usize {
    5
}
fn d_true() -> bool {
    true
}
fn d_dials() -> usize {
    8
}
fn d_idontwant() -> usize {
    1_000
}
fn d_max_transmit() -> usize {
    4 * 1024 * 1024 + 64 * 1024
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            d: d_d(),
            d_low: d_d_low(),
            d_high: d_d_high(),
            d_lazy: d_d_lazy(),
            heartbeat: d_heartbeat(),
            history_gossip: d_history_gossip(),
            history_length: d_history_length(),
            flood_publish: true,
            dials: d_dials(),
            max_transmit: d_max_transmit(),
            idontwant_threshold: d_idontwant(),
            anonymous: true,
        }
    }
}

/// Replica settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSettings {
    /// `anti_entropy_interval_ms`. Replica default 5,000.
    #[serde(default = "d_ae", deserialize_with = "de_ms")]
    pub anti_entropy: u64,
    /// How long a sync request may take before it fails. Node default
    /// (`SYNC_REQUEST_TIMEOUT`) 30,000.
    #[serde(default = "d_req_timeout", deserialize_with = "de_ms")]
    pub request_timeout: u64,
}

fn d_ae() -> u64 {
    5_000
}
fn d_req_timeout() -> u64 {
    30_000
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            anti_entropy: d_ae(),
            request_timeout: d_req_timeout(),
        }
    }
}

/// The stream of operator updates, each submitted at a random live node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Time between updates, ms. Default 5,000.
    #[serde(default = "d_interval", deserialize_with = "de_ms")]
    pub interval: u64,
    /// First update at, ms. Default 2,000 (after the mesh formed).
    #[serde(default = "d_start", deserialize_with = "de_ms")]
    pub start: u64,
    /// Fraction of updates that revoke a subject; the rest grant one. Default 0.2.
    #[serde(default = "d_revoke_fraction")]
    pub revoke_fraction: f64,
    /// How many subjects (`User::"uK"`) updates grant and revoke. Default 16.
    #[serde(default = "d_subjects")]
    pub subjects: u32,
}

fn d_interval() -> u64 {
    5_000
}
fn d_start() -> u64 {
    2_000
}
fn d_revoke_fraction() -> f64 {
    0.2
}
fn d_subjects() -> u32 {
    16
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            interval: d_interval(),
            start: d_start(),
            revoke_fraction: d_revoke_fraction(),
            subjects: d_subjects(),
        }
    }
}

/// How a partition splits the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Two halves (by node index).
    Halves,
    /// One node alone (`node`, or a random one).
    Isolate,
    /// `groups` random groups.
    Groups,
    /// Two halves; messages from the first half to the second are lost, the
    /// other direction works.
    OneWay,
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A partition from `at` until `until`.
    Partition,
    /// `count` random nodes crash at `at` and restart `down` later.
    Crash,
    /// From `at` until `until`, every `every` one random node crashes for `down`.
    Churn,
    /// `count` nodes are Byzantine from `at` until `until`: every `every` each
    /// sends forged, unauthorized, replayed, malformed and oversized messages.
    Byzantine,
    /// Every node's clock is off by up to `max_skew` either way, for the whole run.
    Skew,
}

/// A timed fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// When it starts, ms.
    #[serde(default, deserialize_with = "de_ms")]
    pub at: u64,
    /// When it ends (partition, churn, Byzantine), ms; default the end of `duration`.
    #[serde(default, deserialize_with = "de_ms_opt")]
    pub until: Option<u64>,
    /// Partition shape.
    #[serde(default)]
    pub shape: Option<Shape>,
    /// Groups for `shape = "groups"`. Default 3.
    #[serde(default)]
    pub groups: Option<usize>,
    /// The node for `shape = "isolate"`.
    #[serde(default)]
    pub node: Option<usize>,
    /// Nodes affected (crash, Byzantine): a count if ≥ 1, else a fraction of
    /// the nodes. Default 1.
    #[serde(default)]
    pub count: Option<f64>,
    /// How long a crashed node stays down, ms. Default 10,000.
    #[serde(default, deserialize_with = "de_ms_opt")]
    pub down: Option<u64>,
    /// Whether a crashed node keeps its store. Default true.
    #[serde(default)]
    pub durable: Option<bool>,
    /// Period (churn, Byzantine), ms. Default 5,000.
    #[serde(default, deserialize_with = "de_ms_opt")]
    pub every: Option<u64>,
    /// Largest clock skew, ms. Default 30,000.
    #[serde(default, deserialize_with = "de_ms_opt")]
    pub max_skew: Option<u64>,
}

/// Deliberately broken configurations (tests only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sabotage {
    /// Light mode: accept updates without checking signatures or signers.
    #[serde(default)]
    pub skip_signature_check: bool,
    /// Light mode: a grant applied after a revocation lifts it (last writer wins).
    #[serde(default)]
    pub grant_lifts_revocation: bool,
    /// The driver acknowledges before the store flushes: the last few
    /// persisted updates are lost in a crash.
    #[serde(default)]
    pub ack_before_flush: bool,
    /// Replicas never run anti-entropy (sync only on connect).
    #[serde(default)]
    pub no_anti_entropy: bool,
}

impl Scenario {
    /// Parses a scenario from TOML and checks it.
    pub fn from_toml(text: &str) -> Result<Scenario, SimError> {
        let s: Scenario = toml::from_str(text).map_err(|e| SimError::Scenario(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Scenario(m));
        if self.nodes < 2 {
            return bad(format!("{} node(s): a mesh needs at least 2", self.nodes));
        }
        for (name, p) in [
            ("loss", self.network.loss),
            ("duplicate", self.network.duplicate),
            ("reorder", self.network.reorder),
            ("revoke_fraction", self.workload.revoke_fraction),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} = {p}: a probability is between 0 and 1"));
            }
        }
        if self.network.loss >= 1.0 {
            return bad("loss = 1 loses every message".into());
        }
        let g = &self.gossip;
        if !(g.d_low <= g.d && g.d <= g.d_high) || g.d == 0 {
            return bad(format!(
                "gossip needs 0 < d_low <= d <= d_high (got {}, {}, {})",
                g.d_low, g.d, g.d_high
            ));
        }
        if g.heartbeat == 0 || g.history_gossip == 0 || g.history_length < g.history_gossip {
            return bad(
                "gossip needs heartbeat > 0 and 0 < history_gossip <= history_length".into(),
            );
        }
        if self.workload.interval == 0 || self.workload.subjects == 0 {
            return bad("workload needs interval > 0 and subjects > 0".into());
        }
        if self.replica.anti_entropy == 0 || self.replica.request_timeout == 0 {
            return bad("replica intervals must be > 0".into());
        }
        for f in &self.faults {
            if let Some(u) = f.until
                && u < f.at
            {
                return bad(format!("a {:?} fault ends before it starts", f.kind));
            }
            if f.kind == FaultKind::Partition && f.shape.is_none() {
                return bad("a partition needs a shape".into());
            }
            if matches!(f.every, Some(0)) {
                return bad("every = 0".into());
            }
        }
        Ok(())
    }

    /// A built-in scenario by name, or a TOML file by path.
    pub fn load(name_or_file: &str) -> Result<Scenario, SimError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_file) {
            return Scenario::from_toml(text);
        }
        match std::fs::read_to_string(name_or_file) {
            Ok(text) => Scenario::from_toml(&text),
            Err(_) => Err(SimError::UnknownScenario(name_or_file.to_owned())),
        }
    }

    /// Every built-in scenario, by name.
    pub fn builtins() -> Vec<Scenario> {
        BUILTIN
            .iter()
            .map(|(_, t)| Scenario::from_toml(t).expect("built-in scenarios parse"))
            .collect()
    }
}

/// The built-in scenarios: (name, TOML).
pub const BUILTIN: [(&str, &str); 6] = [
    ("steady", include_str!("../scenarios/steady.toml")),
    ("split-brain", include_str!("../scenarios/split-brain.toml")),
    (
        "isolated-site",
        include_str!("../scenarios/isolated-site.toml"),
    ),
    ("churn", include_str!("../scenarios/churn.toml")),
    ("byzantine", include_str!("../scenarios/byzantine.toml")),
    ("lossy-wan", include_str!("../scenarios/lossy-wan.toml")),
];

/// Parses `250ms`, `1.5s`, `90s`, `15m`, `2h` into milliseconds.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "ms"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 250ms, 1.5s, 90s, 15m or 2h"))?;
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok((n * scale).round() as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MsOrText {
    Ms(u64),
    Text(String),
}

fn de_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match MsOrText::deserialize(d)? {
        MsOrText::Ms(n) => Ok(n),
        MsOrText::Text(t) => parse_ms(&t).map_err(serde::de::Error::custom),
    }
}

fn de_ms_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_ms(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_ms("250ms").unwrap(), 250);
        assert_eq!(parse_ms("1.5s").unwrap(), 1_500);
        assert_eq!(parse_ms("2h").unwrap(), 7_200_000);
        assert_eq!(parse_ms("40").unwrap(), 40);
        assert!(parse_ms("5 parsecs").is_err());
    }

    #[test]
    fn builtins_parse_and_bad_ones_do_not() {
        assert_eq!(Scenario::builtins().len(), BUILTIN.len());
        assert!(Scenario::from_toml("name = \"x\"\nnodes = 1").is_err());
        assert!(Scenario::from_toml("name = \"x\"\n[network]\nloss = 1.5").is_err());
        assert!(Scenario::from_toml("name = \"x\"\nbogus = 1").is_err());
    }
}
