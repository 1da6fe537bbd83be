//! A node's directory and its `weft.toml`.
//!
//! ```text
//! DIR/
//! ├── weft.toml    settings (flags of `weft node run` override them)
//! ├── node.key     the node's ed25519 secret key (PKCS#8 PEM, mode 0600)
//! ├── trust.json   the mesh's trust root, as given to `weft node init`
//! ├── node.cert    the node's admission certificate (written by `weft node certify`)
//! └── store/       the sled database
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Paths inside a node directory.
#[derive(Clone, Debug)]
pub struct NodeDir {
    root: PathBuf,
}

impl NodeDir {
    /// The node directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NodeDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `weft.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("weft.toml")
    }

    /// The node's secret key.
    pub fn key(&self) -> PathBuf {
        self.root.join("node.key")
    }

    /// The trust root.
    pub fn trust(&self) -> PathBuf {
        self.root.join("trust.json")
    }

    /// The node's admission certificate.
    pub fn cert(&self) -> PathBuf {
        self.root.join("node.cert")
    }

    /// The sled database.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// The anomaly detector's saved state (baselines, trees).
    pub fn detector_state(&self) -> PathBuf {
        self.root.join("detector.state")
    }
}

/// What a node does when its state is stale (no sync with any peer for
/// `stale_after`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Keep enforcing the last known state (the default: a partitioned site
    /// keeps working).
    #[default]
    Keep,
    /// Deny every request until the node syncs again.
    Deny,
}

/// The settings in `weft.toml`. Every field has a default, so an empty file
/// is a valid configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// libp2p listen address. Default `/ip4/127.0.0.1/tcp/7101`: loopback, so a
    /// fresh node exposes nothing until told to.
    pub listen: String,
    /// HTTP API address. Default `127.0.0.1:7100`, loopback for the same reason.
    pub api: String,
    /// Peers to dial and keep dialing (libp2p multiaddrs, `/p2p/` suffix optional).
    pub peers: Vec<String>,
    /// How long without a sync before the state counts as stale (a duration
    /// like `90s`). Default `5m`: sixty anti-entropy rounds.
    pub stale_after: String,
    /// What to do when stale.
    pub on_stale: OnStale,
    /// Log format: `pretty` or `json`.
    pub log_format: String,
    /// Allows written to the audit trail: one in this many (denies are
    /// always written; 0 writes no allows). Default 100.
    pub audit_allow_one_in: u64,
    /// How often the node signs and gossips a checkpoint of its audit chain
    /// (a duration). Default `30s`.
    pub audit_checkpoint_every: String,
    /// Whether the node watches its decisions for anomalies. Default true.
    pub detect: bool,
    /// Whether an anomaly quarantines its principal (only if the trust
    /// root lets nodes quarantine). Default true.
    pub quarantine_on_alert: bool,
    /// How long a quarantine this node issues lasts, at most the trust
    /// root's maximum (a duration). Default `15m`.
    pub quarantine_ttl: String,
    /// How many threads serve the HTTP API, each with its own event loop
    /// and its share of the connections. Default 0: one per core the
    /// process may run on.
    pub api_threads: usize,
    /// Established libp2p connections in all, inbound and outbound (0: no
    /// limit). Default 256 ([`crate::limits::DEFAULT_MAX_CONNECTIONS`]
    /// says why).
    pub max_connections: u32,
    /// Established libp2p connections with one peer (0: no limit).
    /// Default 2: a node needs one, and two nodes that dial each other at
    /// once briefly hold two.
    pub max_connections_per_peer: u32,
    /// Inbound libp2p connections, established or in their handshake, from
    /// one remote IP address (0: no limit). Default 8: room for a few nodes
    /// behind one NAT address, while one host minting peer ids holds at
    /// most 8 of the 256 slots. Meshes run on one host need more.
    pub max_connections_per_ip: u32,
    /// Inbound libp2p connections in their handshake at once (0: no
    /// limit). Default 64: an honest mesh has a few; it bounds the CPU a
    /// flood of handshakes takes.
    pub max_pending_incoming: u32,
    /// Where spans are exported over OTLP/HTTP (protobuf): the collector's
    /// base URL, like `http://127.0.0.1:4318`, to which `/v1/traces` is
    /// appended. Default empty: no exporter, and the trace spans cost
    /// nothing.
    pub otlp_endpoint: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "/ip4/127.0.0.1/tcp/7101".into(),
            api: "127.0.0.1:7100".into(),
            peers: Vec::new(),
            stale_after: "5m".into(),
            on_stale: OnStale::Keep,
            log_format: "pretty".into(),
            audit_allow_one_in: 100,
            audit_checkpoint_every: "30s".into(),
            detect: true,
            quarantine_on_alert: true,
            quarantine_ttl: "15m".into(),
            api_threads: 0,
            max_connections: crate::limits::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: crate::limits::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_connections_per_ip: crate::limits::DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_pending_incoming: crate::limits::DEFAULT_MAX_PENDING_INCOMING,
            otlp_endpoint: String::new(),
        }
    }
}

impl Config {
    /// Reads `weft.toml`, naming the file and the problem on error.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not a valid weft.toml: {}",
                path.display(),
                e.message()
            )
        })
    }

    /// The file's text, with a comment per setting.
    pub fn to_toml(&self) -> String {
        let peers = self
            .peers
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "# weft node settings; `weft node run` flags override them.\n\
             # libp2p listen address\n\
             listen = {:?}\n\
             # HTTP API address\n\
             api = {:?}\n\
             # peers to dial and keep dialing\n\
             peers = [{peers}]\n\
             # time without a sync before the state counts as stale\n\
             stale_after = {:?}\n\
             # when stale: \"keep\" enforcing the last state, or \"deny\" everything\n\
             on_stale = {:?}\n\
             # log format: \"pretty\" or \"json\"\n\
             log_format = {:?}\n\
             # audit trail: write one allow in this many (denies are always written; 0: no allows)\n\
             audit_allow_one_in = {}\n\
             # audit trail: how often to sign and gossip a checkpoint of the chain\n\
             audit_checkpoint_every = {:?}\n\
             # watch this node's decisions for anomalies\n\
             detect = {}\n\
             # quarantine a principal on an anomaly (if the trust root lets nodes quarantine)\n\
             quarantine_on_alert = {}\n\
             # how long such a quarantine lasts (at most the trust root's maximum)\n\
             quarantine_ttl = {:?}\n\
             # threads serving the HTTP API (0: one per core)\n\
             api_threads = {}\n\
             # libp2p connections: in all, per peer, per remote IP address (inbound),\n\
             # and inbound ones still in their handshake (0 turns a limit off)\n\
             max_connections = {}\n\
             max_connections_per_peer = {}\n\
             max_connections_per_ip = {}\n\
             max_pending_incoming = {}\n\
             # OTLP/HTTP collector to export traces to, like \"http://127.0.0.1:4318\" (empty: none)\n\
             otlp_endpoint = {:?}\n",
            self.listen,
            self.api,
            self.stale_after,
            match self.on_stale {
                OnStale::Keep => "keep",
                OnStale::Deny => "deny",
            },
            self.log_format,
            self.audit_allow_one_in,
            self.audit_checkpoint_every,
            self.detect,
            self.quarantine_on_alert,
            self.quarantine_ttl,
            self.api_threads,
            self.max_connections,
            self.max_connections_per_peer,
            self.max_connections_per_ip,
            self.max_pending_incoming,
            self.otlp_endpoint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_reads_back() {
        let mut c = Config::default();
        c.peers.push("/ip4/127.0.0.1/tcp/7201".into());
        c.on_stale = OnStale::Deny;
        c.api_threads = 3;
        c.max_connections_per_ip = 0;
        c.max_pending_incoming = 5;
        c.otlp_endpoint = "http://127.0.0.1:4318".into();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty, Config::default());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}
