//! Hot reload of the files a running node reads: the API's TLS
//! certificate, key and client CA, the API token file, and the node
//! certificate (`DIR/node.cert`, e.g. a renewed `weft node certify`).
//!
//! A reload happens on SIGHUP (`weft node run`), on
//! [`crate::daemon::NodeHandle::reload`], and whenever a file's contents
//! change: every [`DEFAULT_POLL`] the files are read and hashed, and a
//! material whose hash differs from the last one seen is loaded again
//! (contents, not modification times, so a rewrite within the same second
//! is seen). A SIGHUP reloads every material whether it changed or not.
//!
//! Rules:
//! - A material is loaded whole and checked before it is swapped in: the
//!   TLS certificate, key and CA must build a server configuration; the
//!   token file must parse; the node certificate must verify against the
//!   current trust root, be for this node and be unexpired.
//! - A reload that fails keeps the old material in use, logs why at warn,
//!   and is shown in `GET /v1/status` under `reload` (per material: its
//!   files, the last attempt, the last success, the last error). The same
//!   broken contents are not retried every poll; a change or a SIGHUP is.
//! - Nothing is dropped: open API connections keep the TLS session they
//!   began with; new ones get the new certificate. The mesh keeps its
//!   connections; peers that connect later are shown the new node
//!   certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use weft_protocol::identity::NodeId;
use weft_protocol::trust::{SignedNodeCert, TrustRoot};

use crate::api::tls::TlsFiles;
use crate::api::tokens::TokenSet;
use crate::control::reload::ReloadStatus;
use crate::control::{Command, Shared};

/// How often the files are checked for changes. Default 2 s: a renewed
/// file is in use within a couple of seconds, for one small read and hash
/// per file.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// Checks an encoded node certificate as peers will: it verifies against
/// `root` at `now_secs` and is for `node`. Returns its name and expiry.
pub fn verify_node_cert(
    bytes: &[u8],
    node: &NodeId,
    root: &TrustRoot,
    now_secs: u64,
) -> Result<(String, u64), String> {
    let c = SignedNodeCert::from_bytes(bytes)
        .and_then(|c| c.verify(root, now_secs))
        .map_err(|e| e.to_string())?;
    if &c.node != node {
        return Err(format!(
            "it is for node {}, not for this node {node}",
            c.node
        ));
    }
    Ok((c.name.clone(), c.expires))
}

/// What the reloader swaps.
pub struct Targets {
    /// The API's TLS files and the configuration new handshakes use.
    pub tls: Option<(TlsFiles, Arc<ArcSwap<rustls::ServerConfig>>)>,
    /// The token file and the tokens the API checks.
    pub tokens: Option<(PathBuf, Arc<ArcSwap<TokenSet>>)>,
    /// `DIR/node.cert`.
    pub node_cert: PathBuf,
    /// The node's shared state (its id, trust root, current certificate).
    pub shared: Arc<Shared>,
    /// The node task, which adopts a node certificate.
    pub commands: mpsc::Sender<Command>,
}

/// Reloads materials whose files changed, or all of them when asked.
pub struct Reloader {
    targets: Targets,
    seen: BTreeMap<&'static str, [u8; 32]>,
    status: Arc<ReloadStatus>,
}

/// The hash of a material's files (a file that cannot be read hashes as
/// its error, so that it counts as changed once it can).
fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        match std::fs::read(f) {
            Ok(b) => {
                h.update(b"ok");
                h.update((b.len() as u64).to_be_bytes());
                h.update(&b);
            }
            Err(e) => {
                h.update(b"err");
                h.update(e.kind().to_string().as_bytes());
            }
        }
    }
    h.finalize().into()
}

impl Reloader {
    /// A reloader for `targets`, which were loaded at start as they are
    /// now on disk.
    pub fn new(targets: Targets, status: Arc<ReloadStatus>) -> Reloader {
        let mut r = Reloader {
            targets,
            seen: BTreeMap::new(),
            status,
        };
        for (name, files) in r.materials() {
            r.seen.insert(name, fingerprint(&files));
            let start = if name == "node_cert" {
                r.start_cert()
            } else {
                Ok(())
            };
            r.status.note(name, &files, &start);
        }
        r
    }

    /// Whether the certificate the node started with is usable, as the
    /// reload status shows it.
    fn start_cert(&self) -> Result<(), String> {
        let shared = &self.targets.shared;
        let cert = shared.cert.load();
        if cert.is_empty() {
            return Err(format!(
                "node certificate {}: none; peers refuse this node until `weft node certify`",
                self.targets.node_cert.display()
            ));
        }
        verify_node_cert(
            &cert,
            &shared.node_id,
            &shared.root.load(),
            crate::clock::now_secs(),
        )
        .map(|_| ())
        .map_err(|e| format!("node certificate {}: {e}", self.targets.node_cert.display()))
    }

    fn materials(&self) -> Vec<(&'static str, Vec<PathBuf>)> {
        let mut m = Vec::new();
        if let Some((files, _)) = &self.targets.tls {
            m.push(("api_tls", files.paths()));
        }
        if let Some((path, _)) = &self.targets.tokens {
            m.push(("api_tokens", vec![path.clone()]));
        }
        m.push(("node_cert", vec![self.targets.node_cert.clone()]));
        m
    }

    /// Loads every material whose files changed since the last look (every
    /// one when `all`), swapping in what loads and keeping the old
    /// material for what does not.
    pub async fn check(&mut self, all: bool) {
        for (name, files) in self.materials() {
            let print = fingerprint(&files);
            if !all && self.seen.get(name) == Some(&print) {
                continue;
            }
            self.seen.insert(name, print);
            let result = self.load(name).await;
            match &result {
                Ok(()) => tracing::info!(material = name, "reloaded"),
                Err(err) => tracing::warn!(
                    material = name,
                    %err,
                    "reload failed: the node keeps using what it had"
                ),
            }
            self.status.note(name, &files, &result);
        }
    }

    async fn load(&self, name: &'static str) -> Result<(), String> {
        match name {
            "api_tls" => {
                let Some((files, current)) = &self.targets.tls else {
                    return Ok(());
                };
                let config = crate::api::tls::server_config(files).map_err(|e| e.to_string())?;
                current.store(config);
                Ok(())
            }
            "api_tokens" => {
                let Some((path, current)) = &self.targets.tokens else {
                    return Ok(());
                };
                current.store(Arc::new(TokenSet::load(path)?));
                Ok(())
            }
            _ => self.load_node_cert().await,
        }
    }

    async fn load_node_cert(&self) -> Result<(), String> {
        let path = &self.targets.node_cert;
        let bytes = std::fs::read(path)
            .map_err(|e| format!("node certificate {}: cannot read it: {e}", path.display()))?;
        let shared = &self.targets.shared;
        if **shared.cert.load() == bytes {
            return Ok(());
        }
        let root = shared.root.load();
        let (name, expires) =
            verify_node_cert(&bytes, &shared.node_id, &root, crate::clock::now_secs())
                .map_err(|e| format!("node certificate {}: {e}", path.display()))?;
        crate::control::ask(&self.targets.commands, |reply| Command::SetCert {
            bytes,
            reply,
        })
        .await
        .ok_or_else(|| "the node task has stopped".to_owned())?;
        tracing::info!(
            %name,
            expires = %weft_protocol::time::format_timestamp(expires),
            "the node presents its reloaded certificate"
        );
        Ok(())
    }

    /// Runs until `shutdown`: polls every `every`, reloads everything on
    /// SIGHUP when `sighup`, and on each request from `asked` (answered
    /// once done).
    pub async fn run(
        mut self,
        every: Duration,
        sighup: bool,
        mut asked: mpsc::Receiver<oneshot::Sender<()>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut hup = if sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::warn!(%err, "cannot watch for SIGHUP: files are reloaded when they change only");
                    None
                }
            }
        } else {
            None
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.check(false).await,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading certificates and tokens");
                    self.check(true).await;
                }
                Some(reply) = asked.recv() => {
                    self.check(true).await;
                    let _ = reply.send(());
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    }
}
