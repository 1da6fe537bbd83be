//! Helpers to run meshes of real nodes in one process: a trust root with one
//! operator, node directories with or without certificates, signed updates,
//! HTTP submits and polling.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use libp2p::Multiaddr;
use tempfile::TempDir;
use weft_crdt::{BundleContent, PolicyDoc};
use weft_node::daemon::{NodeHandle, NodeOptions, spawn_node};
use weft_node::keyfile;
use weft_node::layout::NodeDir;
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::replica::ReplicaConfig;
use weft_protocol::trust::{
    NodeCert, Operator, QuarantineLimits, Role, SignedNodeCert, SignedRoot, TrustRoot,
    to_trust_file,
};
use weft_protocol::update::{SignedUpdate, actor_for};

static NONCE: AtomicU64 = AtomicU64::new(1);

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends test logs to the test harness when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A mesh's trust: one root key, one operator (`alice`, every role), and a
/// directory for the nodes.
pub struct Fixture {
    /// Where node directories go.
    pub base: TempDir,
    /// The operator's key.
    pub alice: SecretKey,
    /// The trust root.
    pub root: TrustRoot,
    /// The signed trust root.
    pub signed: SignedRoot,
}

impl Fixture {
    /// A new trust root, valid for a day.
    pub fn new() -> Result<Self> {
        Self::with_quarantine(QuarantineLimits::default())
    }

    /// A new trust root, valid for a day, that lets nodes quarantine within
    /// `limits`.
    pub fn with_quarantine(limits: QuarantineLimits) -> Result<Self> {
        let root_key = keyfile::generate()?;
        let alice = keyfile::generate()?;
        let root = TrustRoot {
            version: 1,
            expires: now() + 86_400,
            root_keys: vec![root_key.public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "alice".into(),
                key: alice.public(),
                roles: Role::ALL.into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: limits,
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: Vec::new(),
        };
        root.validate()?;
        let signed = SignedRoot::sign(&root, &[&root_key]);
        Ok(Fixture {
            base: tempfile::tempdir()?,
            alice,
            root,
            signed,
        })
    }

    /// Makes a node directory `name` (key, trust.json, and a certificate
    /// signed by alice when `certified`). Returns its path and node id.
    pub fn node_dir(&self, name: &str, certified: bool) -> Result<(PathBuf, NodeId)> {
        let path = self.base.path().join(name);
        std::fs::create_dir_all(&path)?;
        let dir = NodeDir::new(&path);
        let key = keyfile::generate()?;
        keyfile::write(&dir.key(), &key)?;
        std::fs::write(dir.trust(), to_trust_file(&self.signed))?;
        let node = NodeId::new(key.public());
        if certified {
            let cert = NodeCert {
                node,
                name: name.into(),
                issuer: self.alice.public(),
                issued: now(),
                expires: now() + 86_400,
            };
            std::fs::write(
                dir.cert(),
                SignedNodeCert::sign(&cert, &self.alice).to_bytes(),
            )?;
        }
        Ok((path, node))
    }

    /// Options for a node in `dir` with quick timers (anti-entropy every
    /// second, two seconds to present a certificate), no limit on
    /// connections per IP address (every node is on 127.0.0.1), and these
    /// peers.
    pub fn options(&self, dir: PathBuf, peers: &[Multiaddr]) -> NodeOptions {
        let mut o = NodeOptions::new(dir);
        o.peers = peers.to_vec();
        o.connections.per_ip = 0;
        o.replica = ReplicaConfig {
            anti_entropy_interval_ms: 1_000,
            admission_timeout_ms: 2_000,
            ..ReplicaConfig::default()
        };
        o
    }

    /// Makes a node directory and starts the node.
    pub async fn spawn(
        &self,
        name: &str,
        certified: bool,
        peers: &[Multiaddr],
    ) -> Result<(NodeHandle, PathBuf)> {
        let (dir, _) = self.node_dir(name, certified)?;
        let node = spawn_node(self.options(dir.clone(), peers)).await?;
        Ok((node, dir))
    }
}

/// An operator's working copy of the document, to author updates on.
///
/// Like the CLI (`KEY.lane`), an author writes its successive changes with
/// one automerge actor, and starts a new lane (a fresh actor) only when its
/// document does not end that lane with the author's latest change (after
/// [`Author::follow`] to a state without it), so no two of its changes ever
/// share an actor and a number.
pub struct Author {
    doc: PolicyDoc,
    key: SecretKey,
    root_version: u64,
    /// The lane's actor and the hash of the latest change written in it.
    lane: Option<(weft_crdt::ActorId, weft_crdt::ChangeHash)>,
}

impl Author {
    /// An author on an empty document (genesis only).
    pub fn new(fx: &Fixture) -> Self {
        Author {
            doc: PolicyDoc::new(),
            key: fx.alice.clone_key(),
            root_version: fx.root.version,
            lane: None,
        }
    }

    /// An author on an empty document (genesis only) who signs with `key`
    /// under trust-root version `root_version`.
    pub fn with_key(key: SecretKey, root_version: u64) -> Self {
        Author {
            doc: PolicyDoc::new(),
            key,
            root_version,
            lane: None,
        }
    }

    /// Continues from `node`'s current state (as `weft bundle create` does),
    /// so the next update follows everything the node holds.
    pub async fn follow(&mut self, node: &NodeHandle) -> Result<()> {
        let bytes = reqwest::get(format!("{}/v1/state", node.api_url()))
            .await?
            .bytes()
            .await?;
        let export = weft_protocol::export::StateExport::from_bytes(&bytes)?;
        self.doc = PolicyDoc::load(&export.doc)?;
        Ok(())
    }

    fn sign(&mut self, change: &weft_crdt::Change) -> Result<Vec<u8>> {
        self.lane = Some((change.actor_id().clone(), change.hash()));
        let mut u = SignedUpdate::new(change, self.root_version);
        u.sign(&self.key)?;
        Ok(u.to_bytes())
    }

    /// The lane's actor while the document ends the lane with the author's
    /// latest change there; otherwise a new lane's.
    fn actor(&self) -> weft_crdt::ActorId {
        if let Some((actor, last)) = &self.lane
            && self.doc.lane(actor).is_some_and(|(_, hash)| hash == *last)
        {
            return actor.clone();
        }
        let n = NONCE.fetch_add(1, Ordering::Relaxed);
        actor_for(&self.key.public(), n.to_be_bytes())
    }

    /// An update that makes bundle `name` permit `principal` to do anything.
    pub fn bundle(&mut self, name: &str, principal: &str) -> Result<Vec<u8>> {
        self.bundle_policy(
            name,
            &format!("permit(principal == {principal}, action, resource);"),
        )
    }

    /// An update that makes bundle `name` hold exactly one policy, `p`.
    pub fn bundle_policy(&mut self, name: &str, policy: &str) -> Result<Vec<u8>> {
        self.bundle_policy_at(name, policy, 0)
    }

    /// An update that makes bundle `name` hold exactly one policy, `p`,
    /// stamped with the author's `time` (Unix seconds; 0 records none).
    pub fn bundle_policy_at(&mut self, name: &str, policy: &str, time: i64) -> Result<Vec<u8>> {
        let mut content = BundleContent::default();
        content.policies.insert("p".into(), policy.to_owned());
        self.bundle_content_at(name, &content, time)
    }

    /// An update that makes bundle `name` exactly `content`.
    pub fn bundle_content(&mut self, name: &str, content: &BundleContent) -> Result<Vec<u8>> {
        self.bundle_content_at(name, content, 0)
    }

    fn bundle_content_at(
        &mut self,
        name: &str,
        content: &BundleContent,
        time: i64,
    ) -> Result<Vec<u8>> {
        let actor = self.actor();
        let change = self
            .doc
            .build_bundle(actor, name, content, time)?
            .context("the bundle already holds that content")?;
        self.sign(&change)
    }

    /// An update that revokes `subject`.
    pub fn revoke(&mut self, subject: &str) -> Result<Vec<u8>> {
        self.revoke_at(subject, "test", 0)
    }

    /// An update that writes the quarantine record `record_json` for
    /// `subject`, stamped with the author's `time` (Unix seconds).
    pub fn quarantine_at(
        &mut self,
        subject: &str,
        record_json: &str,
        time: i64,
    ) -> Result<Vec<u8>> {
        let actor = self.actor();
        let change = self
            .doc
            .build_quarantine(actor, subject, record_json, time)?
            .context("the quarantine wrote nothing")?;
        self.sign(&change)
    }

    /// An update that revokes `subject` for `reason`, stamped with the
    /// author's `time` (Unix seconds; 0 records none).
    pub fn revoke_at(&mut self, subject: &str, reason: &str, time: i64) -> Result<Vec<u8>> {
        let actor = self.actor();
        let change = self
            .doc
            .build_revoke(actor, subject, reason, time)?
            .context("already revoked")?;
        self.sign(&change)
    }
}

/// Cloning a secret key for tests (through its seed-carrying PEM).
trait CloneKey {
    fn clone_key(&self) -> SecretKey;
}

impl CloneKey for SecretKey {
    fn clone_key(&self) -> SecretKey {
        SecretKey::from_pkcs8_pem(&self.to_pkcs8_pem()).expect("a key reads back")
    }
}

/// `POST /v1/updates`; returns the status code and the JSON body.
pub async fn submit(node: &NodeHandle, bytes: Vec<u8>) -> Result<(u16, serde_json::Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/updates", node.api_url()))
        .body(bytes)
        .send()
        .await?;
    let code = resp.status().as_u16();
    let body = resp.json().await?;
    Ok((code, body))
}

/// `POST /v1/updates`, which must answer 202 `applied`; returns the id.
pub async fn push(node: &NodeHandle, bytes: Vec<u8>) -> Result<String> {
    let (code, body) = submit(node, bytes).await?;
    if code != 202 || body["status"] != "applied" {
        bail!("submit answered {code} {body}");
    }
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

/// `GET /v1/status` over HTTP.
pub async fn http_status(node: &NodeHandle) -> Result<serde_json::Value> {
    Ok(reqwest::get(format!("{}/v1/status", node.api_url()))
        .await?
        .json()
        .await?)
}

/// `POST /v1/authorize` for `principal` viewing `Doc::"d"`; returns the JSON answer.
pub async fn authorize(node: &NodeHandle, principal: &str) -> Result<serde_json::Value> {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/authorize", node.api_url()))
        .json(&serde_json::json!({
            "principal": principal,
            "action": r#"Action::"view""#,
            "resource": r#"Doc::"d""#,
        }))
        .send()
        .await?;
    ensure!(resp.status() == 200, "authorize answered {}", resp.status());
    Ok(resp.json().await?)
}

/// `POST /v1/authorize` with `body`; returns the status code and the JSON answer.
pub async fn authorize_body(
    node: &NodeHandle,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/authorize", node.api_url()))
        .json(body)
        .send()
        .await?;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await?))
}

/// `POST /v1/authorize` with an identity token viewing `Doc::"d"`; returns
/// the JSON answer.
pub async fn authorize_token(node: &NodeHandle, token: &str) -> Result<serde_json::Value> {
    let (code, body) = authorize_body(
        node,
        &serde_json::json!({
            "token": token,
            "action": r#"Action::"view""#,
            "resource": r#"Doc::"d""#,
        }),
    )
    .await?;
    ensure!(code == 200, "authorize answered {code} {body}");
    Ok(body)
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node's heads, sorted.
pub async fn heads(node: &NodeHandle) -> Result<Vec<String>> {
    let mut h = node.status().await?.heads;
    h.sort();
    Ok(h)
}

/// Whether the node's heads are exactly `expected` (in any order).
pub async fn heads_are(node: &NodeHandle, expected: &[String]) -> Result<bool> {
    let mut e = expected.to_vec();
    e.sort();
    Ok(heads(node).await? == e)
}

/// How many peers `node` has admitted.
pub async fn admitted(node: &NodeHandle) -> Result<usize> {
    Ok(node
        .status()
        .await?
        .peers
        .iter()
        .filter(|p| p.admitted)
        .count())
}

/// The first listen address of a node.
pub fn addr(node: &NodeHandle) -> Multiaddr {
    node.listen_addrs()[0].clone()
}
