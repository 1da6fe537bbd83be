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

/// The keys of settings whose values are secret: `weft node config` prints
/// them (and every value in a table listed here) as `"<redacted>"`. A
/// dotted path names a key in a table.
pub const SECRET_KEYS: &[&str] = &["decision_log.headers"];

/// `POST /v1/updates` a client address may send per minute by default:
/// two a second, far above what operators push by hand or by script, far
/// below what would keep a node busy verifying signatures.
pub const DEFAULT_API_UPDATES_PER_MINUTE: u32 = 120;

/// The burst of `POST /v1/updates` a client address may send by default:
/// a rotation or a batch pushed at once.
pub const DEFAULT_API_UPDATES_BURST: u32 = 60;

/// The settings in `weft.toml`. Every field has a default, so an empty file
/// is a valid configuration. Each can also come from a `WEFT_*`
/// environment variable ([`crate::settings`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// libp2p listen address: `/ip4`, `/ip6`, `/dns4`, `/dns6` or `/dns`
    /// (a name is resolved once, at start), then `/tcp/PORT` or
    /// `/udp/PORT/quic-v1`. Default `/ip4/127.0.0.1/tcp/7101`: loopback, so a
    /// fresh node exposes nothing until told to.
    pub listen: String,
    /// A QUIC listen address beside `listen`, like
    /// `/ip4/0.0.0.0/udp/7101/quic-v1` (UDP). Default empty: no QUIC
    /// listener (the node still dials peers' QUIC addresses).
    pub listen_quic: String,
    /// HTTP API address. Default `127.0.0.1:7100`, loopback for the same reason.
    pub api: String,
    /// Peers to dial and keep dialing (libp2p multiaddrs, `/p2p/` suffix
    /// optional; `/dns4`, `/dns6` and `/dns` names are resolved at every dial).
    pub peers: Vec<String>,
    /// Whether the node finds peers beyond `peers` by Kademlia among
    /// admitted peers (docs/sites.md). Default true: a node given any one
    /// admitted node's address finds the rest of the mesh.
    pub discovery: bool,
    /// Dial discovered peers while the node holds fewer connections than
    /// this (0: none). Default 8 ([`crate::discovery::DEFAULT_DISCOVERY_PEERS`]
    /// says why).
    pub discovery_peers: u32,
    /// Whether the node also finds peers on its local network by mDNS.
    /// Default false: multicast announces the node to everyone on the LAN.
    pub mdns: bool,
    /// Whether the node relays for admitted peers behind NAT (circuit
    /// relay v2; docs/sites.md). Default false: only a node others can
    /// dial should relay. Every node uses relays whatever this says.
    pub relay: bool,
    /// Reservations a relay holds at once (nodes listening through it).
    /// Default 128 ([`crate::relay::DEFAULT_RELAY_MAX_RESERVATIONS`]).
    pub relay_max_reservations: u32,
    /// Circuits (relayed connections) open through a relay at once.
    /// Default 64 ([`crate::relay::DEFAULT_RELAY_MAX_CIRCUITS`] says why).
    pub relay_max_circuits: u32,
    /// Bytes one circuit may carry, both directions together, before the
    /// relay closes it (0: no limit). Default 64 MiB
    /// ([`crate::relay::DEFAULT_RELAY_MAX_CIRCUIT_BYTES`] says why).
    pub relay_max_circuit_bytes: u64,
    /// How long one circuit may stay open (a duration). Default `30m`.
    pub relay_max_circuit_duration: String,
    /// Envoy's ext_authz gRPC service (`envoy.service.auth.v3.Authorization`)
    /// address, `HOST:PORT`, plain HTTP/2. Default none: not served. A
    /// non-loopback address needs `api_insecure` ([`crate::extauthz`]).
    pub ext_authz_listen: Option<String>,
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
    /// Whether, with `detect` on, the node shares signed summaries of its
    /// decisions with the mesh and scores principals on what the whole
    /// mesh saw (docs/detection-mesh.md). Default true.
    pub detect_mesh: bool,
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
    /// Default 3: a node needs one, two nodes that dial each other at once
    /// briefly hold two, and a hole punch between two such connections
    /// through a relay adds the direct one
    /// ([`crate::limits::DEFAULT_MAX_CONNECTIONS_PER_PEER`]).
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
    /// The API's TLS certificate chain (PEM; relative paths are in the node
    /// directory). With `api_tls_key`, the API serves HTTPS only. Default
    /// none: plain HTTP, allowed on loopback only unless `api_insecure`.
    pub api_tls_cert: Option<PathBuf>,
    /// The private key of `api_tls_cert` (PEM).
    pub api_tls_key: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates the API accepts
    /// (mTLS); a verified client certificate may read everything. Needs
    /// `api_tls_cert`.
    pub api_client_ca: Option<PathBuf>,
    /// The API token file (`weft api token add` writes it): bearer tokens,
    /// hashed, each with its scopes.
    pub api_tokens_file: Option<PathBuf>,
    /// Whether the API may serve plain HTTP, and reads without a
    /// credential, on an address that is not loopback. Default false:
    /// such a node refuses to start.
    pub api_insecure: bool,
    /// `POST /v1/updates` per client IP address: requests per minute
    /// (0: no limit). Default [`DEFAULT_API_UPDATES_PER_MINUTE`].
    pub api_updates_per_minute: u32,
    /// `POST /v1/updates` per client IP address: the burst. Default
    /// [`DEFAULT_API_UPDATES_BURST`].
    pub api_updates_burst: u32,
    /// Decision records shipped to an HTTP receiver, the `[decision_log]`
    /// table (absent: none shipped). Its `headers` are secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_log: Option<crate::decision_log::DecisionLogConfig>,
    /// Where spans are exported over OTLP/HTTP (protobuf): the collector's
    /// base URL, like `http://127.0.0.1:4318`, to which `/v1/traces` is
    /// appended. Default empty: no exporter, and the trace spans cost
    /// nothing.
    pub otlp_endpoint: String,
    /// How long an issuer's cached key set (JWKS) keeps verifying tokens
    /// after its last good fetch, while the issuer cannot be reached (a
    /// duration). Default `24h`: a partition of a day does not lock
    /// everyone out; past it the issuer's tokens are refused until a fetch
    /// succeeds (docs/identity.md).
    pub jwks_max_age: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "/ip4/127.0.0.1/tcp/7101".into(),
            listen_quic: String::new(),
            api: "127.0.0.1:7100".into(),
            peers: Vec::new(),
            discovery: true,
            discovery_peers: crate::discovery::DEFAULT_DISCOVERY_PEERS,
            mdns: false,
            relay: false,
            relay_max_reservations: crate::relay::DEFAULT_RELAY_MAX_RESERVATIONS,
            relay_max_circuits: crate::relay::DEFAULT_RELAY_MAX_CIRCUITS,
            relay_max_circuit_bytes: crate::relay::DEFAULT_RELAY_MAX_CIRCUIT_BYTES,
            relay_max_circuit_duration: "30m".into(),
            ext_authz_listen: None,
            stale_after: "5m".into(),
            on_stale: OnStale::Keep,
            log_format: "pretty".into(),
            audit_allow_one_in: 100,
            audit_checkpoint_every: "30s".into(),
            detect: true,
            detect_mesh: true,
            quarantine_on_alert: true,
            quarantine_ttl: "15m".into(),
            api_threads: 0,
            max_connections: crate::limits::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: crate::limits::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_connections_per_ip: crate::limits::DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_pending_incoming: crate::limits::DEFAULT_MAX_PENDING_INCOMING,
            api_tls_cert: None,
            api_tls_key: None,
            api_client_ca: None,
            api_tokens_file: None,
            api_insecure: false,
            api_updates_per_minute: DEFAULT_API_UPDATES_PER_MINUTE,
            api_updates_burst: DEFAULT_API_UPDATES_BURST,
            decision_log: None,
            otlp_endpoint: String::new(),
            jwks_max_age: "24h".into(),
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
            "# weft node settings. WEFT_<KEY> environment variables override them, and\n\
             # `weft node run` flags override both; `weft node config` shows the result.\n\
             # libp2p listen address (TCP /tcp/PORT or QUIC /udp/PORT/quic-v1; /dns4/NAME resolved at start)\n\
             listen = {:?}\n\
             # QUIC listen address beside it, like \"/ip4/0.0.0.0/udp/7101/quic-v1\" (empty: none)\n\
             listen_quic = {:?}\n\
             # HTTP API address\n\
             api = {:?}\n\
             # peers to dial and keep dialing (/dns4/NAME/tcp/PORT names are resolved at every dial)\n\
             peers = [{peers}]\n\
             # find the rest of the mesh from any one admitted peer (Kademlia among admitted peers)\n\
             discovery = {}\n\
             # dial discovered peers while holding fewer connections than this (0: none)\n\
             discovery_peers = {}\n\
             # also find peers on the local network by mDNS\n\
             mdns = {}\n\
             # relay for admitted nodes behind NAT (circuit relay v2; only on a node others can dial)\n\
             relay = {}\n\
             # relay bounds: reservations and circuits at once, bytes (both ways; 0: no limit)\n\
             # and time per circuit\n\
             relay_max_reservations = {}\n\
             relay_max_circuits = {}\n\
             relay_max_circuit_bytes = {}\n\
             relay_max_circuit_duration = {:?}\n\
             # Envoy ext_authz gRPC service (envoy.service.auth.v3.Authorization), plain HTTP/2;\n\
             # loopback unless api_insecure (unset: not served)\n\
             {}\n\
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
             # with detect: share signed summaries of this node's decisions with the mesh,\n\
             # and flag principals on what the whole mesh saw (gossip topic weft/summaries/v1)\n\
             detect_mesh = {}\n\
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
             # HTTPS on the API: certificate chain and key (PEM; relative to the node directory)\n\
             {}\n\
             {}\n\
             # mTLS: CA certificates (PEM) whose client certificates may read everything\n\
             {}\n\
             # bearer tokens with scopes (read, audit, metrics), hashed; `weft api token add` writes it\n\
             {}\n\
             # allow plain HTTP and reads without a credential on a non-loopback API address\n\
             api_insecure = {}\n\
             # POST /v1/updates per client address: per minute (0: no limit) and burst\n\
             api_updates_per_minute = {}\n\
             api_updates_burst = {}\n\
             # OTLP/HTTP collector to export traces to, like \"http://127.0.0.1:4318\" (empty: none)\n\
             otlp_endpoint = {:?}\n\
             # how long an issuer's cached keys (JWKS) keep working while it cannot be reached\n\
             jwks_max_age = {:?}\n\
             {}",
            self.listen,
            self.listen_quic,
            self.api,
            self.discovery,
            self.discovery_peers,
            self.mdns,
            self.relay,
            self.relay_max_reservations,
            self.relay_max_circuits,
            self.relay_max_circuit_bytes,
            self.relay_max_circuit_duration,
            match &self.ext_authz_listen {
                Some(a) => format!("ext_authz_listen = {a:?}"),
                None => "# ext_authz_listen = \"127.0.0.1:7102\"".to_owned(),
            },
            self.stale_after,
            match self.on_stale {
                OnStale::Keep => "keep",
                OnStale::Deny => "deny",
            },
            self.log_format,
            self.audit_allow_one_in,
            self.audit_checkpoint_every,
            self.detect,
            self.detect_mesh,
            self.quarantine_on_alert,
            self.quarantine_ttl,
            self.api_threads,
            self.max_connections,
            self.max_connections_per_peer,
            self.max_connections_per_ip,
            self.max_pending_incoming,
            path_line("api_tls_cert", &self.api_tls_cert, "api.crt"),
            path_line("api_tls_key", &self.api_tls_key, "api.key"),
            path_line("api_client_ca", &self.api_client_ca, "clients-ca.crt"),
            path_line("api_tokens_file", &self.api_tokens_file, "api-tokens"),
            self.api_insecure,
            self.api_updates_per_minute,
            self.api_updates_burst,
            self.otlp_endpoint,
            self.jwks_max_age,
            // A table ends the top-level keys: it stays last.
            match &self.decision_log {
                Some(d) => format!("\n{}", d.to_toml()),
                None =>
                    "\n# decision records shipped to an HTTP receiver (docs/decision-logs.md):\n\
                         # [decision_log]\n\
                         # url = \"https://siem.example/ingest\"\n\
                         # headers = { Authorization = \"Bearer …\" }   # SECRET\n"
                        .to_owned(),
            }
        )
    }
}

/// `KEY = "PATH"`, or the line commented out with an example when unset.
fn path_line(key: &str, value: &Option<PathBuf>, example: &str) -> String {
    match value {
        Some(p) => format!("{key} = {:?}", p.display().to_string()),
        None => format!("# {key} = {example:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_reads_back() {
        let mut c = Config::default();
        c.peers.push("/ip4/127.0.0.1/tcp/7201".into());
        c.peers.push("/dns4/site-b.example/udp/7101/quic-v1".into());
        c.listen_quic = "/ip4/0.0.0.0/udp/7101/quic-v1".into();
        c.discovery = false;
        c.discovery_peers = 3;
        c.mdns = true;
        c.relay = true;
        c.relay_max_circuits = 3;
        c.relay_max_circuit_bytes = 0;
        c.relay_max_circuit_duration = "2m".into();
        c.on_stale = OnStale::Deny;
        c.api_threads = 3;
        c.max_connections_per_ip = 0;
        c.max_pending_incoming = 5;
        c.api_tls_cert = Some("tls/api.crt".into());
        c.api_tokens_file = Some("/etc/weft/tokens".into());
        c.api_insecure = true;
        c.api_updates_burst = 7;
        c.ext_authz_listen = Some("127.0.0.1:7102".into());
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let mut d = crate::decision_log::DecisionLogConfig {
            url: "http://127.0.0.1:9/ingest".into(),
            batch_max: 7,
            ..Default::default()
        };
        d.headers.insert("Authorization".into(), "Bearer x".into());
        c.decision_log = Some(d);
        c.otlp_endpoint = "http://127.0.0.1:4318".into();
        c.jwks_max_age = "2h".into();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty, Config::default());
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }

    /// The packaged example (`/etc/weft/weft.toml.example`) is the default
    /// weft.toml, so it cannot drift from the settings. `UPDATE_EXPECT=1`
    /// rewrites it.
    #[test]
    fn packaged_example_is_the_default_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/weft.toml.example");
        let want = Config::default().to_toml();
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} differs from Config::default().to_toml(): run `UPDATE_EXPECT=1 cargo test -p weft-node --lib packaged_example` to rewrite it",
            path.display()
        );
        let back: Config = toml::from_str(&have).unwrap();
        assert_eq!(back, Config::default());
    }
}
