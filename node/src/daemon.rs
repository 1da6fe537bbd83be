//! The node daemon: `weft node run`, and [`spawn_node`], the library entry
//! point that tests and `weft demo` use to run nodes in one process.
//!
//! Start-up, in order: the key (`DIR/node.key`), the trust root
//! (`DIR/trust.json`, verified; an expired root is still enforced and
//! reported every minute), the certificate (`DIR/node.cert`; without a valid
//! one the node still starts and answers decisions from local state, but its
//! peers refuse it, which it says loudly), the store (every update verified,
//! or loaded from the node's own snapshot), then the swarm and the HTTP API.
//! On SIGINT or SIGTERM the API stops accepting, the node task stops, and the
//! store is flushed before the process exits 0. If the node task ends
//! without being asked to (a panic), `weft node run` logs it and exits 1,
//! so that a supervisor restarts the node, which reloads its store; until
//! then `GET /healthz` and `GET /readyz` answer 503.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use arc_swap::ArcSwap;
use clap::Args;
use futures::StreamExt as _;
use libp2p::gossipsub::IdentTopic;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use weft_crdt::PolicyView;
use weft_protocol::identity::NodeId;
use weft_protocol::replica::{Replica, ReplicaConfig};
use weft_protocol::time::format_timestamp;

use crate::api::{self, ApiState};
use crate::audit::{Audit, AuditConfig, AuditEvent, AuditLog};
use crate::control::{Command, Shared, Staleness, Status};
use crate::keyfile;
use crate::layout::NodeDir;
use crate::liveness::TaskState;
use crate::store::{DEFAULT_SNAPSHOT_EVERY, Store};
use crate::swarm::{self, TOPIC};
use crate::task::{NodeTask, NodeTaskParts};
use crate::util::read_trust_file;

/// `weft node run`
#[derive(Debug, Args)]
pub struct NodeRunArgs {
    /// The node directory (made by `weft node init`).
    #[arg(long, value_name = "DIR", env = "WEFT_DIR")]
    pub dir: PathBuf,
    /// Read the settings from FILE instead of DIR/weft.toml; FILE must exist (the packaged service uses /etc/weft/weft.toml).
    #[arg(long, value_name = "FILE", env = "WEFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// libp2p listen address, like /ip4/0.0.0.0/tcp/7101 or /dns4/site-a.example/tcp/7101 (a name is resolved at start) [default: WEFT_LISTEN, else from DIR/weft.toml].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Option<String>,
    /// QUIC listen address beside --listen, like /ip4/0.0.0.0/udp/7101/quic-v1 (UDP) [default: WEFT_LISTEN_QUIC, else from DIR/weft.toml, else none].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen_quic: Option<String>,
    /// HTTP API address, like 127.0.0.1:7100 [default: WEFT_API, else from DIR/weft.toml]; the live dashboard is at http://HOST:PORT/.
    #[arg(long, value_name = "HOST:PORT")]
    pub api: Option<String>,
    /// Serve Envoy's ext_authz gRPC service (envoy.service.auth.v3.Authorization/Check) on HOST:PORT, plain HTTP/2, loopback unless api_insecure [default: WEFT_EXT_AUTHZ_LISTEN, else from DIR/weft.toml, else off].
    #[arg(long, value_name = "HOST:PORT")]
    pub ext_authz_listen: Option<String>,
    /// A peer to dial and keep dialing, like /dns4/site-b.example/tcp/7101 or /ip4/10.0.0.2/udp/7101/quic-v1; give the flag once per peer (replaces WEFT_PEERS and the peers in weft.toml). The /p2p/ suffix is optional.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Log format [default: WEFT_LOG_FORMAT, else from DIR/weft.toml, else pretty].
    #[arg(long, value_name = "FORMAT", value_parser = ["pretty", "json"])]
    pub log_format: Option<String>,
}

/// The long help of `weft node run`: where settings come from, the API's
/// security and reloads.
pub const NODE_RUN_LONG_ABOUT: &str = "Run the node in the foreground until SIGINT or SIGTERM.\n\n\
    Every setting of DIR/weft.toml can also come from an environment variable: WEFT_ and the key \
    in capitals (WEFT_API, WEFT_AUDIT_ALLOW_ONE_IN), with a double underscore for a key in a table \
    (WEFT_DECISION_LOG__URL). A flag beats the environment, which beats weft.toml, which beats the \
    default. Lists are comma-separated (WEFT_PEERS=/ip4/10.0.0.2/tcp/7101,/ip4/10.0.0.3/tcp/7101) or \
    a TOML array; tables a TOML inline table. A WEFT_ variable that names no setting is an error. \
    `weft node config --dir DIR` prints the settings a run would use and where each came from.\n\n\
    The HTTP API: plain HTTP by default, allowed only on a loopback address; elsewhere set \
    api_tls_cert and api_tls_key (PEM) for HTTPS, or api_insecure = true to accept plain HTTP. \
    api_client_ca (PEM) lets clients present certificates (mTLS), and api_tokens_file holds \
    bearer tokens (`weft api token add`). With either, reads (/v1/state, /v1/status, the \
    dashboard data, /v1/anomalies, /v1/report, /v1/audit, /metrics) need a client certificate \
    or a token with the scope; decisions, /healthz, /readyz and POST /v1/updates (rate-limited \
    per client: api_updates_per_minute, api_updates_burst) stay open.\n\n\
    Reload: on SIGHUP, and within seconds of a change to the files, the node reloads its API \
    certificate, key and client CA, its token file and DIR/node.cert (a renewed `weft node \
    certify`) without dropping connections; a file that fails to load keeps the old one in use, \
    and GET /v1/status shows why under `reload`.";

impl NodeRunArgs {
    /// The settings the flags given set, as weft.toml keys.
    pub fn flag_values(&self) -> Vec<crate::settings::FlagValue> {
        use crate::settings::FlagValue;
        let string = |key, flag, v: &Option<String>| {
            v.as_ref().map(|v| FlagValue {
                key,
                flag,
                value: toml::Value::String(v.clone()),
            })
        };
        let mut out: Vec<FlagValue> = [
            string("listen", "--listen", &self.listen),
            string("listen_quic", "--listen-quic", &self.listen_quic),
            string("api", "--api", &self.api),
            string(
                "ext_authz_listen",
                "--ext-authz-listen",
                &self.ext_authz_listen,
            ),
            string("log_format", "--log-format", &self.log_format),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !self.peers.is_empty() {
            out.push(FlagValue {
                key: "peers",
                flag: "--peer",
                value: toml::Value::Array(
                    self.peers
                        .iter()
                        .map(|p| toml::Value::String(p.clone()))
                        .collect(),
                ),
            });
        }
        out
    }
}

/// How to run one node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node directory.
    pub dir: PathBuf,
    /// libp2p listen addresses (port 0 picks a free one).
    pub listen: Vec<Multiaddr>,
    /// HTTP API address, `HOST:PORT` (port 0 picks a free one).
    pub api: String,
    /// Peers to dial and keep dialing.
    pub peers: Vec<Multiaddr>,
    /// Envoy's ext_authz gRPC service address, `HOST:PORT` (port 0 picks a
    /// free one); none serves no such service.
    pub ext_authz: Option<String>,
    /// Replica settings.
    pub replica: ReplicaConfig,
    /// Applied updates between two snapshots.
    pub snapshot_every: u64,
    /// When the state counts as stale and what decisions do then.
    pub stale: Staleness,
    /// The audit trail's settings.
    pub audit: AuditConfig,
    /// Anomaly detection and the quarantines it may issue.
    pub response: crate::respond::ResponseConfig,
    /// How many libp2p connections the node accepts.
    pub connections: crate::limits::ConnectionLimits,
    /// How the node finds peers beyond `peers` (Kademlia among admitted
    /// peers, mDNS) and how many it keeps.
    pub discovery: crate::discovery::DiscoveryOptions,
    /// Where decision records are shipped (`None`: nowhere).
    pub decision_log: Option<crate::decision_log::DecisionLogOptions>,
    /// The runtimes that serve the HTTP API, when it should not be the one
    /// `spawn_node` is called on; each serves the same listening socket.
    /// `weft node run` gives the API single-threaded runtimes of its own,
    /// one per core, so that a decision never waits behind gossip,
    /// automerge, sled or the audit writer, and a connection's requests
    /// stay on one thread (no hand-off between workers). Empty (the
    /// default, for tests and the demo) serves it on the caller's runtime.
    pub api_runtimes: Vec<tokio::runtime::Handle>,
    /// TLS on the API (`api_tls_cert`, `api_tls_key`, `api_client_ca`);
    /// none serves plain HTTP.
    pub api_tls: Option<crate::api::tls::TlsFiles>,
    /// The API token file (`api_tokens_file`).
    pub api_tokens_file: Option<PathBuf>,
    /// Whether plain HTTP, or reads without a credential, may be served on
    /// an address that is not loopback (`api_insecure`).
    pub api_insecure: bool,
    /// The per-client rate of `POST /v1/updates`; off in
    /// [`NodeOptions::new`] (in-process nodes), weft.toml's for `weft node run`.
    pub api_updates: crate::api::ratelimit::UpdateRate,
    /// How often the certificate and token files are checked for changes.
    pub reload_every: Duration,
    /// Whether SIGHUP reloads them (`weft node run`; off in-process, where
    /// the signal is the host process's).
    pub reload_on_sighup: bool,
    /// Bearer JWTs: key set fetching, `jwks_max_age`, the token cache.
    /// Key sets are saved in `DIR/jwks` unless this names another place.
    pub identity: crate::identity::IdentityOptions,
    /// Test hook: serves `POST /v1/test/panic`, which makes the node task
    /// panic. Off unless a test asks for it (`weft node run` turns it on
    /// only when the environment sets [`TEST_PANIC_HOOK_ENV`] to `1`).
    #[doc(hidden)]
    pub test_panic_route: bool,
}

/// Test hook: when this environment variable is `1`, `weft node run`
/// serves `POST /v1/test/panic`, which makes the node task panic, so a
/// test can watch the process exit. Never set it on a real node.
#[doc(hidden)]
pub const TEST_PANIC_HOOK_ENV: &str = "WEFT_TEST_PANIC_HOOK";

impl NodeOptions {
    /// Options for the node in `dir`, listening on loopback with free ports,
    /// with no peers and the default settings.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NodeOptions {
            dir: dir.into(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
            api: "127.0.0.1:0".into(),
            peers: Vec::new(),
            ext_authz: None,
            replica: ReplicaConfig::default(),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            stale: Staleness::default(),
            audit: AuditConfig::default(),
            response: crate::respond::ResponseConfig::default(),
            connections: crate::limits::ConnectionLimits::default(),
            discovery: crate::discovery::DiscoveryOptions::default(),
            decision_log: None,
            api_runtimes: Vec::new(),
            api_tls: None,
            api_tokens_file: None,
            api_insecure: false,
            // In-process nodes (tests, benchmarks, the demo) push as fast
            // as they like; `weft node run` takes weft.toml's rate.
            api_updates: crate::api::ratelimit::UpdateRate {
                per_minute: 0,
                burst: 0,
            },
            reload_every: crate::reload::DEFAULT_POLL,
            reload_on_sighup: false,
            identity: crate::identity::IdentityOptions::default(),
            test_panic_route: false,
        }
    }
}

/// A running node.
pub struct NodeHandle {
    api_addr: SocketAddr,
    ext_authz_addr: Option<SocketAddr>,
    api_tls: bool,
    reload: mpsc::Sender<oneshot::Sender<()>>,
    reload_task: JoinHandle<()>,
    peer_id: PeerId,
    node_id: NodeId,
    listen_addrs: Vec<Multiaddr>,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    node_task: JoinHandle<()>,
    api_tasks: Vec<JoinHandle<()>>,
    audit_task: JoinHandle<()>,
    detect_task: JoinHandle<()>,
    decision_log_task: Option<JoinHandle<()>>,
    audit: Arc<Audit>,
    loaded: crate::store::LoadReport,
}

impl NodeHandle {
    /// What the node found in its store when it started.
    pub fn load_report(&self) -> &crate::store::LoadReport {
        &self.loaded
    }

    /// The address the HTTP API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The address Envoy's ext_authz gRPC service listens on, when it is
    /// served.
    pub fn ext_authz_addr(&self) -> Option<SocketAddr> {
        self.ext_authz_addr
    }

    /// The API's base URL, `http://HOST:PORT`, or `https://` with TLS.
    pub fn api_url(&self) -> String {
        let scheme = if self.api_tls { "https" } else { "http" };
        format!("{scheme}://{}", self.api_addr)
    }

    /// Reloads the API's TLS files, its token file and the node
    /// certificate now, as SIGHUP does; returns once done (what failed is
    /// in the log and in `GET /v1/status`).
    pub async fn reload(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.reload
            .send(reply)
            .await
            .map_err(|_| anyhow!("the node has stopped"))?;
        done.await.map_err(|_| anyhow!("the node has stopped"))
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node's id (the same text as its peer id).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The libp2p addresses the node listens on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The current policy view.
    pub fn view(&self) -> Arc<PolicyView> {
        self.shared.view.load_full()
    }

    /// Quarantines `subject` on this node's own authority, as the detector
    /// does: returns the order's id, or why the node would not issue it.
    pub async fn quarantine(
        &self,
        subject: &str,
        record: weft_crdt::QuarantineRecord,
    ) -> Result<String> {
        let subject = subject.to_owned();
        self.ask(|reply| Command::Quarantine {
            subject,
            record,
            reply,
        })
        .await?
        .map_err(|e| anyhow!(e))
    }

    /// The node's audit trail.
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Bytes `(in, out)` on every libp2p connection since the node started
    /// (read in-process, without a round trip through the node task).
    pub fn traffic(&self) -> (u64, u64) {
        let t = &self.shared.traffic;
        (t.bytes_in(), t.bytes_out())
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        crate::control::ask(&self.commands, make)
            .await
            .ok_or_else(|| anyhow!("the node has stopped"))
    }

    /// The node's status, as `GET /v1/status` gives it.
    pub async fn status(&self) -> Result<Status> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Cuts the connections to `peer` and refuses it until [`NodeHandle::unblock`]
    /// (a partition at the transport, for tests and the demo).
    pub async fn block(&self, peer: PeerId) -> Result<()> {
        self.ask(|reply| Command::Block { peer, reply }).await
    }

    /// Lifts a [`NodeHandle::block`]. A banned peer stays banned.
    pub async fn unblock(&self, peer: PeerId) -> Result<()> {
        self.ask(|reply| Command::Unblock { peer, reply }).await
    }

    #[cfg(feature = "test-hooks")]
    /// Test hook: publishes `bytes` on the update topic as they are, with no
    /// check at all, as a compromised or buggy node would.
    #[doc(hidden)]
    pub async fn gossip_raw(&self, bytes: Vec<u8>) -> Result<()> {
        self.ask(|reply| Command::GossipRaw { bytes, reply })
            .await?
            .map_err(|e| anyhow!("gossipsub refused the message: {e}"))
    }

    #[cfg(feature = "test-hooks")]
    /// Test hook: publishes `bytes` on the detection summary topic as they
    /// are, with no check at all, as a compromised or buggy node would.
    #[doc(hidden)]
    pub async fn gossip_raw_summary(&self, bytes: Vec<u8>) -> Result<()> {
        self.ask(|reply| Command::GossipSummaryRaw { bytes, reply })
            .await?
            .map_err(|e| anyhow!("gossipsub refused the message: {e}"))
    }

    #[cfg(feature = "test-hooks")]
    /// Test hook: makes the node task panic, as a bug in it would.
    #[doc(hidden)]
    pub async fn panic_node_task(&self) -> Result<()> {
        self.commands
            .send(Command::PanicForTest)
            .await
            .map_err(|_| anyhow!("the node has stopped"))
    }

    /// Waits until the node task has ended, and says how: after
    /// [`NodeHandle::shutdown`], or because it failed (a panic).
    pub async fn task_ended(&self) -> TaskState {
        self.shared.liveness.ended().await
    }

    /// Stops the node: the API stops accepting, the node task stops, the
    /// store is flushed. Returns once everything has stopped; an error says
    /// which task failed (the first, if several did), after every task has
    /// been waited for.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        drop(self.commands);
        let mut failed = None;
        for task in self.api_tasks {
            note_failure(&mut failed, "the API task", task.await);
        }
        note_failure(&mut failed, "the node task", self.node_task.await);
        note_failure(&mut failed, "the detector task", self.detect_task.await);
        note_failure(&mut failed, "the reload task", self.reload_task.await);
        if let Some(task) = self.decision_log_task {
            note_failure(&mut failed, "the decision log", task.await);
        }
        drop(self.audit);
        note_failure(&mut failed, "the audit writer", self.audit_task.await);
        failed.map_or(Ok(()), Err)
    }
}

/// Keeps the first failure among the tasks a shutdown waits for.
fn note_failure(
    failed: &mut Option<anyhow::Error>,
    task: &str,
    joined: Result<(), tokio::task::JoinError>,
) {
    if let Err(e) = joined {
        tracing::error!(%e, "{task} failed");
        failed.get_or_insert_with(|| anyhow!("{task} failed: {e}"));
    }
}

/// Reads `DIR/node.cert` and checks it here, as peers will. Returns the
/// bytes to present (empty when there is no usable certificate: peers refuse
/// such a node, and the reason is logged as an error).
fn read_cert(dir: &NodeDir, node: &NodeId, root: &weft_protocol::trust::TrustRoot) -> Vec<u8> {
    let path = dir.cert();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(
                path = %path.display(),
                "this node has no certificate: peers will refuse it until an operator runs `weft node certify`; it still answers decisions from its local state"
            );
            return Vec::new();
        }
        Err(err) => {
            tracing::error!(path = %path.display(), %err, "cannot read the node certificate: peers will refuse this node");
            return Vec::new();
        }
    };
    match crate::reload::verify_node_cert(&bytes, node, root, crate::clock::now_secs()) {
        Ok((name, expires)) => {
            tracing::info!(%name, expires = %format_timestamp(expires), "node certificate is valid");
        }
        Err(err) => {
            tracing::error!(path = %path.display(), %err, "the node certificate is not valid: peers will refuse this node");
        }
    }
    bytes
}

/// Starts a node from its directory and returns once it listens on every
/// address and its API is up.
pub async fn spawn_node(opts: NodeOptions) -> Result<NodeHandle> {
    // The API's certificates and tokens: a bad file stops the start here,
    // before anything runs.
    let tls = match &opts.api_tls {
        Some(files) => Some(Arc::new(ArcSwap::new(
            crate::api::tls::server_config(files).map_err(|e| anyhow!(e))?,
        ))),
        None => None,
    };
    let tokens = Arc::new(ArcSwap::from_pointee(match &opts.api_tokens_file {
        Some(path) => crate::api::tokens::TokenSet::load(path).map_err(|e| anyhow!(e))?,
        None => crate::api::tokens::TokenSet::default(),
    }));
    // Envoy's ext_authz service: an address it may not use, or cannot
    // bind, stops the start before the store is opened.
    let ext_authz = match &opts.ext_authz {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .and_then(|l| l.into_std())
                .with_context(|| format!("ext_authz_listen {addr}: cannot listen"))?;
            let bound = listener.local_addr()?;
            crate::extauthz::check_listen(bound, opts.api_insecure).map_err(|e| anyhow!(e))?;
            Some((listener, bound))
        }
    };
    let dir = NodeDir::new(&opts.dir);
    let key = keyfile::read(&dir.key())?;
    let node_id = NodeId::new(key.public());
    let span = tracing::info_span!("node", id = %short_id(&node_id));

    let (_, file_root) = read_trust_file(&dir.trust())?;
    let store = Store::open(&dir.store())?;
    let chain = crate::rootchain::resolve(&file_root, &store.roots()?, crate::clock::now_secs())
        .with_context(|| format!("the trust root of {}", dir.root().display()))?;
    for (version, bytes) in &chain.new {
        store.put_root(*version, bytes)?;
    }
    store.flush()?;
    let root = chain.latest().clone();
    let signed_root = chain.latest_signed().clone();
    if chain.expired {
        span.in_scope(|| {
            tracing::error!(
                version = root.version,
                expires = %format_timestamp(root.expires),
                "the trust root has expired: this node keeps enforcing it, but operators must rotate it now"
            )
        });
    }
    let cert = span.in_scope(|| read_cert(&dir, &node_id, &root));

    // Loading verifies signatures: keep it off the async workers.
    let load_span = span.clone();
    let load_root = root.clone();
    let load_chain = chain.roots.clone();
    let (store, loaded) = tokio::task::spawn_blocking(move || {
        let loaded = load_span.in_scope(|| store.load_state_chain(load_root, load_chain));
        (store, loaded)
    })
    .await
    .map_err(|e| anyhow!("loading the store failed: {e}"))?;
    let (state, report) = loaded?;
    span.in_scope(|| {
        tracing::info!(
            applied = report.applied,
            from_snapshot = report.from_snapshot,
            verified = report.verified,
            held = report.held,
            damaged = report.damaged,
            refused = report.refused,
            elapsed_ms = report.elapsed_ms,
            "store loaded"
        )
    });
    let audit_log = Arc::new(
        AuditLog::open(store.db())
            .with_context(|| format!("cannot open the audit log in {}", dir.store().display()))?,
    );
    let store = Arc::new(store);
    let shared = Arc::new(Shared {
        view: ArcSwap::from_pointee(state.view().clone()),
        root: ArcSwap::from_pointee(state.root().clone()),
        node_id,
        traffic: Arc::default(),
        last_sync_ms: Default::default(),
        started_ms: crate::clock::now_ms(),
        cert: ArcSwap::from_pointee(cert.clone()),
        stale: opts.stale,
        anomalies: Arc::default(),
        liveness: Default::default(),
    });
    let replica = Replica::new(state, node_id, cert, opts.replica.clone());

    let keypair = swarm::libp2p_keypair(&key).map_err(|e| anyhow!(e))?;
    let peer_id = keypair.public().to_peer_id();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let admitted = crate::relay::Admitted::default();
    let (mut swarm, p2p_metrics) = metrics
        .with_registry(|registry| {
            let p2p_metrics = libp2p::metrics::Metrics::new(registry);
            swarm::build_swarm(
                keypair,
                &IdentTopic::new(TOPIC),
                shared.traffic.clone(),
                &opts.connections,
                &opts.discovery,
                &admitted,
                registry,
            )
            .map(|swarm| (swarm, p2p_metrics))
        })
        .map_err(|e| anyhow!(e))?;
    let mut listeners = Vec::new();
    for addr in &opts.listen {
        crate::transport::check_listen(addr).map_err(|e| anyhow!(e))?;
        let resolved = crate::transport::resolve_listen(addr)
            .await
            .map_err(|e| anyhow!(e))?;
        let id = swarm
            .listen_on(resolved.clone())
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(id);
    }
    // Wait until every listener has an address (port 0 is resolved then).
    let mut listen_addrs = Vec::new();
    let mut early = Vec::new();
    let mut waiting = listeners;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !waiting.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| anyhow!("the node did not start listening within 10 seconds"))?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                waiting.retain(|l| *l != listener_id);
                listen_addrs.push(address);
            }
            SwarmEvent::ListenerClosed { reason: Err(e), .. }
            | SwarmEvent::ListenerError { error: e, .. } => {
                bail!("cannot listen: {e}");
            }
            other => early.push(other),
        }
    }

    let (commands_tx, commands_rx) = mpsc::channel(256);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (checkpoints_tx, checkpoints_rx) = mpsc::channel(16);
    let (audit, audit_writer) = crate::audit::start(
        audit_log.clone(),
        &opts.audit,
        node_id,
        key,
        checkpoints_tx,
        shutdown_rx.clone(),
    );
    let audit = Arc::new(audit);
    audit.handle.record(AuditEvent::Started {
        node: node_id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    let audit_task = tokio::spawn(audit_writer.instrument(span.clone()));
    let mut response = opts.response.clone();
    if response.state_file.is_none() {
        response.state_file = Some(dir.detector_state());
    }
    // Detection across sites: the mesh view, shared by the detector task
    // and the node task, and this node's summaries from the one to the other.
    let mesh = (response.detect && response.mesh).then(|| {
        Arc::new(crate::mesh_detect::MeshDetect::new(
            crate::mesh_detect::mesh_config(&response.detector),
        ))
    });
    let (summaries_tx, summaries_rx) = mpsc::channel(8);
    let wiring = mesh.clone().map(|detect| crate::respond::MeshWiring {
        detect,
        node: node_id,
        publish: summaries_tx,
    });
    let (detect, detector) = crate::respond::start(
        response,
        getrandom::u64().unwrap_or(0),
        shared.anomalies.clone(),
        commands_tx.clone(),
        audit.handle.clone(),
        shutdown_rx.clone(),
        wiring,
    );
    let detect_task = tokio::spawn(detector.instrument(span.clone()));
    let (decision_log, decision_log_task) = match opts.decision_log.clone() {
        None => (None, None),
        Some(dlog) => {
            let dlog_metrics = crate::decision_log::DecisionLogMetrics::default();
            metrics.register_with(|r| dlog_metrics.register(r));
            let (handle, run) = span
                .in_scope(|| {
                    crate::decision_log::start(
                        dlog,
                        store.db(),
                        node_id.to_string(),
                        dlog_metrics,
                        shutdown_rx.clone(),
                    )
                })
                .map_err(|e| anyhow!(e))?;
            (
                Some(handle),
                Some(tokio::spawn(run.instrument(span.clone()))),
            )
        }
    };
    let applied_since_snapshot = report.verified as u64;
    let mut task = NodeTask::new(
        NodeTaskParts {
            swarm,
            replica,
            store,
            shared: shared.clone(),
            signed_root: signed_root.to_vec(),
            trust_file: dir.trust(),
            peers: opts.peers.clone(),
            discovery: opts.discovery.clone(),
            admitted,
            snapshot_every: opts.snapshot_every,
            commands: commands_rx,
            shutdown: shutdown_rx.clone(),
            audit_log,
            audit: audit.handle.clone(),
            checkpoints: checkpoints_rx,
            node_key: keyfile::read(&dir.key())?,
            p2p_metrics,
            mesh,
            summaries: summaries_rx,
        },
        applied_since_snapshot,
    );
    task.replay(early);

    // One listening socket, bound here; each API runtime serves its own
    // duplicate of it. A connection is accepted by whichever runtime gets to
    // it first (an idle one, as a rule) and stays there.
    let api_runtimes = if opts.api_runtimes.is_empty() {
        vec![tokio::runtime::Handle::current()]
    } else {
        opts.api_runtimes.clone()
    };
    let listener = tokio::net::TcpListener::bind(&opts.api)
        .await
        .and_then(|l| l.into_std())
        .with_context(|| format!("cannot listen for the API on {}", opts.api))?;
    let api_addr = listener.local_addr()?;
    let loopback = api_addr.ip().is_loopback();
    if opts.api_tls.is_none() && !loopback && !opts.api_insecure {
        bail!(
            "the API would serve plain HTTP on {api_addr}, which is not a loopback address: set api_tls_cert and api_tls_key, or api_insecure = true to let anyone on the network read and submit in the clear"
        );
    }
    let client_ca = opts.api_tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let reads = if client_ca || opts.api_tokens_file.is_some() {
        crate::api::access::Reads::Guarded {
            client_ca,
            tokens: opts.api_tokens_file.is_some(),
        }
    } else if loopback || opts.api_insecure {
        if !loopback {
            span.in_scope(|| tracing::warn!(api = %api_addr, "api_insecure: anyone who reaches the API can read the mesh state, the audit trail and the metrics"));
        }
        crate::api::access::Reads::Open
    } else {
        span.in_scope(|| tracing::warn!(api = %api_addr, "reads on the API are refused: set api_client_ca or api_tokens_file to grant them"));
        crate::api::access::Reads::Closed
    };
    span.in_scope(|| {
        tracing::info!(
            node_id = %node_id,
            api = %api_addr,
            ext_authz = ?ext_authz.as_ref().map(|(_, a)| *a),
            listen = ?listen_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "node started"
        )
    });

    let node_task = tokio::spawn(task.run().instrument(span.clone()));
    let reload_status = Arc::new(crate::control::reload::ReloadStatus::default());
    let reloader = crate::reload::Reloader::new(
        crate::reload::Targets {
            tls: opts.api_tls.clone().zip(tls.clone()),
            tokens: opts.api_tokens_file.clone().map(|p| (p, tokens.clone())),
            node_cert: dir.cert(),
            shared: shared.clone(),
            commands: commands_tx.clone(),
        },
        reload_status.clone(),
    );
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let reload_task = tokio::spawn(
        reloader
            .run(
                opts.reload_every,
                opts.reload_on_sighup,
                reload_rx,
                shutdown_rx.clone(),
            )
            .instrument(span.clone()),
    );
    let access = Arc::new(crate::api::access::Access {
        reads,
        tokens,
        updates: crate::api::ratelimit::RateLimiter::new(opts.api_updates),
        audit: audit.handle.clone(),
    });
    let mut identity = opts.identity.clone();
    identity
        .jwks
        .dir
        .get_or_insert_with(|| dir.root().join("jwks"));
    let identities = Arc::new(crate::identity::Identities::new(identity));
    metrics.register_with(|r| identities.metrics().register(r));
    let api_state = Arc::new(ApiState {
        commands: commands_tx.clone(),
        shared: shared.clone(),
        metrics,
        audit: audit.clone(),
        detect,
        decisions: Arc::new(crate::dashboard::DecisionLog::new()),
        reload: reload_status,
        decision_log,
        identities,
        test_panic_route: opts.test_panic_route,
    });
    let check_service = Arc::new(crate::extauthz::CheckService::new(api_state.clone()));
    let router = api::router(api_state, access);
    let mut api_tasks = Vec::with_capacity(api_runtimes.len());
    for rt in &api_runtimes {
        let listener = {
            // A listener registers with the reactor of the runtime it is
            // made in.
            let _in = rt.enter();
            tokio::net::TcpListener::from_std(listener.try_clone()?)
                .context("cannot serve the API on its runtime")?
        };
        let mut api_shutdown = shutdown_rx.clone();
        let router = router.clone();
        let tls = tls.clone();
        api_tasks.push(
            rt.spawn(
                async move {
                    let stop = async move {
                        while !*api_shutdown.borrow() {
                            if api_shutdown.changed().await.is_err() {
                                break;
                            }
                        }
                    };
                    match tls {
                        Some(tls) => api::serve::tls(listener, router, tls, stop).await,
                        None => api::serve::plain(listener, router, stop).await,
                    }
                }
                .instrument(span.clone()),
            ),
        );
    }
    drop(listener);
    let ext_authz_addr = ext_authz.as_ref().map(|(_, a)| *a);
    if let Some((listener, _)) = ext_authz {
        for rt in &api_runtimes {
            let listener = {
                let _in = rt.enter();
                tokio::net::TcpListener::from_std(listener.try_clone()?)
                    .context("cannot serve ext_authz on its runtime")?
            };
            let mut stop_rx = shutdown_rx.clone();
            let stop = async move {
                while !*stop_rx.borrow() {
                    if stop_rx.changed().await.is_err() {
                        break;
                    }
                }
            };
            api_tasks.push(
                rt.spawn(
                    crate::extauthz::serve(listener, check_service.clone(), stop)
                        .instrument(span.clone()),
                ),
            );
        }
    }

    Ok(NodeHandle {
        api_addr,
        ext_authz_addr,
        api_tls: tls.is_some(),
        reload: reload_tx,
        reload_task,
        peer_id,
        node_id,
        listen_addrs,
        commands: commands_tx,
        shared,
        shutdown: shutdown_tx,
        node_task,
        api_tasks,
        audit_task,
        detect_task,
        decision_log_task,
        audit,
        loaded: report,
    })
}

/// The last 8 characters of a node id, for log spans.
fn short_id(id: &NodeId) -> String {
    let s = id.to_string();
    s[s.len().saturating_sub(8)..].to_owned()
}

fn parse_addr(text: &str, what: &str) -> Result<Multiaddr> {
    text.parse().map_err(|e| {
        anyhow!("{what} \"{text}\" is not a libp2p multiaddr (like /ip4/127.0.0.1/tcp/7101): {e}")
    })
}

/// A listen address from the settings: a multiaddr the node can listen on
/// ([`crate::transport::check_listen`]); the error names the setting.
fn parse_listen(text: &str, what: &str) -> Result<Multiaddr> {
    let addr = parse_addr(text, what)?;
    crate::transport::check_listen(&addr).map_err(|e| anyhow!("{what}: {e}"))?;
    Ok(addr)
}

/// Runs `weft node run` until SIGINT or SIGTERM.
pub fn node_run(args: NodeRunArgs) -> Result<ExitCode> {
    if !args.dir.is_dir() {
        bail!(
            "{} is not a node directory: run `weft node init --dir {}` first",
            args.dir.display(),
            args.dir.display()
        );
    }
    let resolved = crate::settings::resolve_from_process(
        &args.dir,
        args.config.as_deref(),
        &args.flag_values(),
    )
    .map_err(|e| anyhow!(e))?;
    let config = resolved.config.clone();
    let config_file = args
        .config
        .clone()
        .unwrap_or_else(|| NodeDir::new(&args.dir).config());
    if config.log_format != "pretty" && config.log_format != "json" {
        bail!(
            "{}: \"{}\" is neither \"pretty\" nor \"json\"",
            resolved.describe("log_format"),
            config.log_format
        );
    }
    let mut opts = NodeOptions::new(&args.dir);
    opts.listen = vec![parse_listen(&config.listen, &resolved.describe("listen"))?];
    if !config.listen_quic.is_empty() {
        let quic = parse_listen(&config.listen_quic, &resolved.describe("listen_quic"))?;
        if crate::transport::Kind::of(&quic) != crate::transport::Kind::Quic {
            bail!(
                "{}: \"{}\" is not a QUIC address (like /ip4/0.0.0.0/udp/7101/quic-v1)",
                resolved.describe("listen_quic"),
                config.listen_quic
            );
        }
        opts.listen.push(quic);
    }
    opts.discovery = crate::discovery::DiscoveryOptions {
        kademlia: config.discovery,
        peers: config.discovery_peers as usize,
        mdns: config.mdns,
        relay: crate::relay::RelayOptions {
            server: config.relay,
            max_reservations: config.relay_max_reservations,
            max_circuits: config.relay_max_circuits,
            max_circuit_bytes: config.relay_max_circuit_bytes,
            max_circuit_duration: Duration::from_secs(
                weft_protocol::time::parse_duration(&config.relay_max_circuit_duration).map_err(
                    |e| anyhow!("{}: {e}", resolved.describe("relay_max_circuit_duration")),
                )?,
            ),
            probe_reachability: true,
        },
    };
    opts.api = config.api.clone();
    opts.ext_authz = config.ext_authz_listen.clone();
    opts.stale = Staleness {
        after_ms: weft_protocol::time::parse_duration(&config.stale_after)
            .map_err(|e| anyhow!("{}: {e}", resolved.describe("stale_after")))?
            .saturating_mul(1000),
        on_stale: config.on_stale,
    };
    opts.audit.allow_one_in = config.audit_allow_one_in;
    opts.response.detect = config.detect;
    opts.response.mesh = config.detect_mesh;
    opts.response.quarantine = config.quarantine_on_alert;
    opts.response.quarantine_ttl = Duration::from_secs(
        weft_protocol::time::parse_duration(&config.quarantine_ttl)
            .map_err(|e| anyhow!("{}: {e}", resolved.describe("quarantine_ttl")))?,
    );
    opts.audit.checkpoint_every = Duration::from_secs(
        weft_protocol::time::parse_duration(&config.audit_checkpoint_every)
            .map_err(|e| anyhow!("{}: {e}", resolved.describe("audit_checkpoint_every")))?,
    );
    opts.connections = crate::limits::ConnectionLimits {
        max_connections: config.max_connections,
        per_peer: config.max_connections_per_peer,
        per_ip: config.max_connections_per_ip,
        pending_incoming: config.max_pending_incoming,
    };
    let in_dir = |p: &PathBuf| args.dir.join(p);
    opts.api_tls = match (&config.api_tls_cert, &config.api_tls_key) {
        (Some(cert), Some(key)) => Some(crate::api::tls::TlsFiles {
            cert: in_dir(cert),
            key: in_dir(key),
            client_ca: config.api_client_ca.as_ref().map(in_dir),
        }),
        (None, None) if config.api_client_ca.is_none() => None,
        _ => bail!(
            "{}, {}, {}: api_tls_cert and api_tls_key go together, and api_client_ca needs both",
            resolved.describe("api_tls_cert"),
            resolved.describe("api_tls_key"),
            resolved.describe("api_client_ca")
        ),
    };
    opts.api_tokens_file = config.api_tokens_file.as_ref().map(in_dir);
    opts.api_insecure = config.api_insecure;
    opts.api_updates = crate::api::ratelimit::UpdateRate {
        per_minute: config.api_updates_per_minute,
        burst: config.api_updates_burst,
    };
    opts.reload_on_sighup = true;
    opts.identity.jwks.max_age = Duration::from_secs(
        weft_protocol::time::parse_duration(&config.jwks_max_age)
            .map_err(|e| anyhow!("{}: {e}", resolved.describe("jwks_max_age")))?,
    );
    opts.decision_log = config
        .decision_log
        .as_ref()
        .map(|d| d.options())
        .transpose()
        .map_err(|e| anyhow!("{e} ({})", resolved.describe("decision_log")))?
        .flatten();
    opts.test_panic_route = std::env::var(TEST_PANIC_HOOK_ENV).is_ok_and(|v| v == "1");
    opts.peers = config
        .peers
        .iter()
        .map(|p| parse_addr(p, &resolved.describe("peers")))
        .collect::<Result<_>>()?;

    let node_id = NodeId::new(keyfile::read(&NodeDir::new(&args.dir).key())?.public());
    let telemetry = crate::telemetry::init(
        &config.log_format,
        &config.otlp_endpoint,
        &node_id.to_string(),
    )
    .map_err(|e| anyhow!("{}: {e}", resolved.describe("otlp_endpoint")))?;
    if telemetry.exporting() {
        tracing::info!(endpoint = %config.otlp_endpoint, "exporting traces over OTLP");
    }
    if config
        .decision_log
        .as_ref()
        .is_some_and(|d| !d.headers.is_empty())
        && crate::decision_log::config::readable_by_others(&config_file)
    {
        tracing::warn!(
            path = %config_file.display(),
            "weft.toml holds the decision log's headers (the receiver's credentials) and its group or others can read it: chmod 600 it"
        );
    }
    crate::memory::small_pages();
    // The node's own work (the swarm, gossip and sync, automerge apply,
    // sled flushes, the audit writer, the detector) runs on this thread;
    // CPU-heavy loading goes to its blocking pool. Decisions are served by
    // `weft-api` threads, one per core this process may run on unless
    // `api_threads` says otherwise, which run nothing else: a decision never
    // queues behind an apply.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("weft-node")
        .build()
        .context("cannot start the async runtime")?;
    let threads = match config.api_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let api = ApiThreads::start(threads)?;
    opts.api_runtimes = api.handles.clone();
    let served = runtime.block_on(async move {
        let node = spawn_node(opts).await?;
        eprintln!(
            "weft node {} running: API {}{}, libp2p {}",
            node.node_id(),
            node.api_url(),
            node.ext_authz_addr()
                .map(|a| format!(", ext_authz {a}"))
                .unwrap_or_default(),
            node.listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        // A node whose task has died must not go on answering as if it
        // were whole: it exits, and a supervisor starts it again from its
        // store.
        let task_ended = tokio::select! {
            signal = wait_for_signal() => {
                signal?;
                false
            }
            _ = node.task_ended() => true,
        };
        if task_ended {
            tracing::error!(
                "the node task ended without being asked to: exiting so that a supervisor restarts the node"
            );
            let why = match node.shutdown().await {
                Err(e) => format!("{e:#}"),
                Ok(()) => "it returned".to_owned(),
            };
            bail!(
                "the node task ended without being asked to ({why}): exiting so that a supervisor can restart the node, which reloads its store"
            );
        }
        tracing::info!("shutting down");
        node.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    });
    // The API has stopped by now (or never started); nothing of it may
    // outlive the process.
    api.stop();
    drop(runtime);
    telemetry.shutdown();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The threads that serve the HTTP API: each runs a single-threaded tokio
/// runtime, so a connection's requests are read, decided and answered on
/// one thread with no hand-off between workers (a work-stealing runtime
/// woke a second worker for about every request at low concurrency: a
/// quarter more CPU per decision).
struct ApiThreads {
    handles: Vec<tokio::runtime::Handle>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ApiThreads {
    fn start(n: usize) -> Result<ApiThreads> {
        let mut api = ApiThreads {
            handles: Vec::with_capacity(n),
            stop: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start an async runtime for the API")?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            api.handles.push(runtime.handle().clone());
            api.stop.push(stop);
            let thread = std::thread::Builder::new()
                .name("weft-api".into())
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_timeout(Duration::from_secs(1));
                });
            match thread {
                Ok(t) => api.threads.push(t),
                Err(e) => {
                    api.stop();
                    return Err(anyhow!("cannot start an API thread: {e}"));
                }
            }
        }
        Ok(api)
    }

    /// Stops every thread, once what it serves has finished or after a
    /// second.
    fn stop(self) {
        drop(self.stop);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
