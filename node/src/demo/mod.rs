//! `weft demo`: a local mesh on loopback, in this process, with embedded demo
//! keys and policies, that walks through the Weft story and checks every step:
//!
//! 1. alice and bob co-sign a policy bundle (one signature alone is refused)
//!    and it is pushed to node 1;
//! 2. it reaches every node; alice is allowed everywhere, carol is not;
//!    through a proxy in front of a service, asking the last node, alice's
//!    JWT from the demo identity provider reaches the service, carol's is
//!    refused, and no token is a 401;
//! 3. alice is revoked at node 2 and is denied at every node, and by the
//!    proxy;
//! 4. a partition splits the mesh in two halves; each half accepts its own
//!    revocation and keeps enforcing;
//! 5. the partition heals and every node ends with the same heads.
//!
//! The keys are derived from fixed seeds: they are for this demo only.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use clap::Args;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use weft_crdt::bundle::split_policy_file;
use weft_crdt::{BundleContent, Change, PolicyDoc};
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::replica::ReplicaConfig;
use weft_protocol::trust::{
    NodeCert, Operator, QuarantineLimits, Role, SignedNodeCert, SignedRoot, TrustRoot,
    to_trust_file,
};
use weft_protocol::update::SignedUpdate;

use crate::daemon::{NodeHandle, NodeOptions, spawn_node};
use crate::keyfile;
use crate::layout::{Config, NodeDir};

mod proxy;

/// `weft demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many nodes to run (2 to 16).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(2..=16))]
    pub nodes: u8,
    /// Run the story once and exit: 0 when every step held, 1 otherwise.
    #[arg(long)]
    pub exit: bool,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The policies of the demo bundle, as in scripts/demo.sh.
const POLICIES: &str = r#"@id("staff-read")
permit (principal in Group::"staff", action == Action::"read", resource);
@id("no-contractors")
forbid (principal in Group::"contractors", action, resource);
"#;

/// The entities of the demo bundle: scripts/demo.sh's alice (staff) and carol
/// (staff and contractors), plus dave and erin (staff), revoked on either
/// side of the partition.
const ENTITIES: &str = r#"[
 {"uid":{"type":"User","id":"alice"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},
 {"uid":{"type":"User","id":"carol"},"attrs":{},"parents":[{"type":"Group","id":"staff"},{"type":"Group","id":"contractors"}]},
 {"uid":{"type":"User","id":"dave"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},
 {"uid":{"type":"User","id":"erin"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},
 {"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]},
 {"uid":{"type":"Group","id":"contractors"},"attrs":{},"parents":[]}
]"#;

/// How long a step may wait for the mesh.
const STEP_TIMEOUT: Duration = Duration::from_secs(45);

/// Runs `weft demo`.
pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(args))
}

/// A key derived from a fixed label: the same on every run.
fn demo_key(label: &str) -> SecretKey {
    let seed: [u8; 32] = Sha256::digest(format!("weft demo key: {label}").as_bytes()).into();
    SecretKey::from_seed(seed)
}

/// Text or JSON lines on stdout.
struct Out {
    json: bool,
}

impl Out {
    fn say(&self, event: Value, text: impl AsRef<str>) {
        if self.json {
            println!("{event}");
        } else {
            println!("{}", text.as_ref());
        }
    }
}

/// The demo's trust: a root key and two operators.
struct Trust {
    alice: SecretKey,
    bob: SecretKey,
    root: TrustRoot,
    signed: SignedRoot,
}

impl Trust {
    fn new() -> Result<Self> {
        let root_key = demo_key("root");
        let alice = demo_key("alice");
        let bob = demo_key("bob");
        let mut root = TrustRoot {
            version: 1,
            expires: crate::clock::now_secs() + 86_400,
            root_keys: vec![root_key.public()],
            root_threshold: 1,
            operators: vec![
                Operator {
                    name: "alice".into(),
                    key: alice.public(),
                    roles: [Role::Policy, Role::Revoke, Role::Admit, Role::Issue]
                        .into_iter()
                        .collect(),
                },
                Operator {
                    name: "bob".into(),
                    key: bob.public(),
                    roles: [Role::Policy].into_iter().collect(),
                },
            ],
            policy_threshold: 2,
            revoke_threshold: 1,
            node_quarantine: QuarantineLimits::default(),
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: Vec::new(),
        };
        root.sort_operators();
        root.validate()?;
        let signed = SignedRoot::sign(&root, &[&root_key]);
        Ok(Trust {
            alice,
            bob,
            root,
            signed,
        })
    }

    /// Writes node directory `name` under `base`, certified by alice.
    fn node_dir(&self, base: &Path, name: &str) -> Result<std::path::PathBuf> {
        let path = base.join(name);
        std::fs::create_dir_all(&path)?;
        let dir = NodeDir::new(&path);
        let key = demo_key(&format!("node {name}"));
        keyfile::write(&dir.key(), &key)?;
        std::fs::write(dir.trust(), to_trust_file(&self.signed))?;
        let cert = NodeCert {
            node: NodeId::new(key.public()),
            name: name.into(),
            issuer: self.alice.public(),
            issued: crate::clock::now_secs(),
            expires: crate::clock::now_secs() + 86_400,
        };
        std::fs::write(
            dir.cert(),
            SignedNodeCert::sign(&cert, &self.alice).to_bytes(),
        )?;
        let config = Config {
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            api: "127.0.0.1:0".into(),
            ..Config::default()
        };
        std::fs::write(dir.config(), config.to_toml())?;
        Ok(path)
    }
}

/// Signs `change` with each key.
fn signed(change: &Change, root_version: u64, keys: &[&SecretKey]) -> Result<SignedUpdate> {
    let mut u = SignedUpdate::new(change, root_version);
    for k in keys {
        u.sign(k).map_err(|e| anyhow!("cannot sign: {e}"))?;
    }
    Ok(u)
}

/// A fresh actor for `key` (the demo writes each change in a new lane).
fn actor(key: &SecretKey) -> Result<weft_crdt::ActorId> {
    crate::admin::lane::fresh_actor(key)
}

fn revoke_change(doc: &mut PolicyDoc, key: &SecretKey, subject: &str) -> Result<Change> {
    let time = i64::try_from(crate::clock::now_secs()).unwrap_or(i64::MAX);
    doc.build_revoke(actor(key)?, subject, "weft demo", time)?
        .ok_or_else(|| anyhow!("{subject} is already revoked"))
}

/// `POST /v1/updates`: the status code and the JSON body.
async fn submit(
    client: &reqwest::Client,
    node: &NodeHandle,
    bytes: Vec<u8>,
) -> Result<(u16, Value)> {
    let resp = client
        .post(format!("{}/v1/updates", node.api_url()))
        .body(bytes)
        .send()
        .await?;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await?))
}

/// Submits an update that must be applied.
async fn push(client: &reqwest::Client, node: &NodeHandle, bytes: Vec<u8>) -> Result<()> {
    let (code, body) = submit(client, node, bytes).await?;
    ensure!(
        code == 202 && body["status"] == "applied",
        "node answered {code} {body}"
    );
    Ok(())
}

/// Whether `node` allows `user` to read `Doc::"plan"`.
async fn allows(client: &reqwest::Client, node: &NodeHandle, user: &str) -> Result<bool> {
    let resp = client
        .post(format!("{}/v1/authorize", node.api_url()))
        .json(&json!({
            "principal": format!("User::\"{user}\""),
            "action": "Action::\"read\"",
            "resource": "Doc::\"plan\"",
        }))
        .send()
        .await?;
    let code = resp.status().as_u16();
    let body: Value = resp.json().await?;
    ensure!(code == 200, "authorize answered {code} {body}");
    match body["decision"].as_str() {
        Some("allow") => Ok(true),
        Some("deny") => Ok(false),
        _ => bail!("authorize answered {body}"),
    }
}

/// Waits until every node in `nodes` gives `user` the decision `allow`;
/// returns how long it took.
async fn wait_decision(
    client: &reqwest::Client,
    nodes: &[&NodeHandle],
    user: &str,
    allow: bool,
    start: Instant,
) -> Result<Duration> {
    for (i, n) in nodes.iter().enumerate() {
        loop {
            if allows(client, n, user).await? == allow {
                break;
            }
            if start.elapsed() > STEP_TIMEOUT {
                let word = if allow { "allow" } else { "deny" };
                bail!(
                    "node at {} did not {word} {user} within {STEP_TIMEOUT:?} (node {} of the group)",
                    n.api_url(),
                    i + 1
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    Ok(start.elapsed())
}

/// Checks that every node in `nodes` gives `user` the decision `allow` now.
async fn check_decision(
    client: &reqwest::Client,
    nodes: &[&NodeHandle],
    user: &str,
    allow: bool,
) -> Result<()> {
    for n in nodes {
        let got = allows(client, n, user).await?;
        ensure!(
            got == allow,
            "node at {} {} {user}",
            n.api_url(),
            if got { "allows" } else { "denies" }
        );
    }
    Ok(())
}

fn heads(node: &NodeHandle) -> Vec<String> {
    let mut h: Vec<String> = node
        .view()
        .heads()
        .iter()
        .map(ToString::to_string)
        .collect();
    h.sort();
    h
}

/// `node 3` or `nodes 1-2`.
fn span(first: usize, last: usize) -> String {
    if first == last {
        format!("node {first}")
    } else {
        format!("nodes {first}-{last}")
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

async fn run(args: DemoArgs) -> Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let out = Out { json: args.json };
    let base = tempfile::Builder::new()
        .prefix("weft-demo.")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let trust = Trust::new()?;
    let n = usize::from(args.nodes);
    out.say(
        json!({"event": "start", "nodes": n, "dir": base.path().display().to_string(),
               "alice": trust.alice.public().to_string(), "bob": trust.bob.public().to_string()}),
        format!(
            "==> weft demo: {n} nodes on loopback in {}\n    alice (policy, revoke, admit, issue): {}\n    bob   (policy):                       {}\n    trust root: policy updates need 2 signatures, revocations 1",
            base.path().display(),
            trust.alice.public(),
            trust.bob.public()
        ),
    );

    let mut nodes: Vec<NodeHandle> = Vec::new();
    let result = async {
        start_nodes(&out, &trust, base.path(), n, &mut nodes).await?;
        tokio::select! {
            r = story(&out, &trust, &nodes) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    }
    .await;

    if result.is_ok() {
        out.say(
            json!({"event": "done", "ok": true}),
            "==> the demo held at every step",
        );
        if !args.exit {
            let urls: Vec<String> = nodes.iter().map(NodeHandle::api_url).collect();
            out.say(
                json!({"event": "running", "apis": urls}),
                format!(
                    "the mesh keeps running; try:\n    open {}/ in a browser (each node's live dashboard)\n    curl -s {}/v1/status\n    weft check --node {} --principal 'User::\"carol\"' --action 'Action::\"read\"' --resource 'Doc::\"plan\"'\n    weft report --node {} --out report.html\npress Ctrl-C to stop",
                    urls[0], urls[0], urls[0], urls[0]
                ),
            );
            tokio::signal::ctrl_c()
                .await
                .context("cannot wait for Ctrl-C")?;
        }
    }
    out.say(json!({"event": "stopping"}), "==> stopping the nodes");
    for node in nodes {
        node.shutdown().await?;
    }
    drop(base);
    result.map(|()| ExitCode::SUCCESS)
}

/// Sets up and starts `n` nodes, each dialing the ones before it, and waits
/// until each has admitted every other.
async fn start_nodes(
    out: &Out,
    trust: &Trust,
    base: &Path,
    n: usize,
    nodes: &mut Vec<NodeHandle>,
) -> Result<()> {
    for i in 1..=n {
        let name = format!("n{i}");
        let dir = trust
            .node_dir(base, &name)
            .with_context(|| format!("cannot set up node {i}"))?;
        let mut opts = NodeOptions::new(dir);
        opts.peers = nodes.iter().map(|h| h.listen_addrs()[0].clone()).collect();
        // Every node of the demo is on 127.0.0.1: one address for all.
        opts.connections.per_ip = 0;
        opts.replica = ReplicaConfig {
            anti_entropy_interval_ms: 1_000,
            admission_timeout_ms: 2_000,
            ..ReplicaConfig::default()
        };
        let node = spawn_node(opts)
            .await
            .with_context(|| format!("node {i} did not start"))?;
        out.say(
            json!({"event": "node", "node": i, "id": node.node_id().to_string(),
                   "api": node.api_url(), "listen": node.listen_addrs()[0].to_string()}),
            format!(
                "    node {i} up: {}  {}  {}",
                node.node_id(),
                node.api_url(),
                node.listen_addrs()[0]
            ),
        );
        nodes.push(node);
    }
    let start = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        loop {
            let admitted = node
                .status()
                .await?
                .peers
                .iter()
                .filter(|p| p.admitted)
                .count();
            if admitted + 1 >= n {
                break;
            }
            if start.elapsed() > STEP_TIMEOUT {
                bail!(
                    "node {} admitted only {admitted} of its {} peers",
                    i + 1,
                    n - 1
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out.say(
        json!({"event": "mesh", "ms": ms(start.elapsed())}),
        format!(
            "    mesh formed: every node admitted its {} peers ({} ms)",
            n - 1,
            ms(start.elapsed())
        ),
    );
    Ok(())
}

/// Reports step `n`: runs `body`, names the step in the error.
async fn step<F>(out: &Out, n: u8, title: &str, body: F) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    out.say(
        json!({"event": "step", "step": n, "title": title}),
        format!("==> step {n}: {title}"),
    );
    body.await.map_err(|e| anyhow!("step {n} failed: {e:#}"))?;
    out.say(
        json!({"event": "held", "step": n}),
        format!("    step {n} held"),
    );
    Ok(())
}

async fn story(out: &Out, trust: &Trust, nodes: &[NodeHandle]) -> Result<()> {
    let client = reqwest::Client::new();
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    let version = trust.root.version;
    let mut doc = PolicyDoc::new();
    let mut pushed_at = Instant::now();
    let idp = proxy::DemoIdp::new()?;
    let last = nodes.len();
    let front = proxy::start(nodes[last - 1].api_url()).await?;
    let alice_jwt = idp.token("alice")?;

    step(
        out,
        1,
        "alice and bob co-sign the policy bundle and push it to node 1",
        async {
            let mut content = BundleContent::default();
            for (id, policy) in split_policy_file("main", POLICIES).map_err(|e| anyhow!(e))? {
                content.policies.insert(id, policy);
            }
            content.entities = Some(ENTITIES.to_owned());
            content.routes = Some(proxy::ROUTES.to_owned());
            content.issuers = Some(idp.issuers_toml());
            let time = i64::try_from(crate::clock::now_secs()).unwrap_or(i64::MAX);
            let change = doc
                .build_bundle(actor(&trust.alice)?, "main", &content, time)?
                .ok_or_else(|| anyhow!("the bundle is empty"))?;
            let alone = signed(&change, version, &[&trust.alice])?;
            let (code, body) = submit(&client, &nodes[0], alone.to_bytes()).await?;
            ensure!(
                code >= 400,
                "node 1 accepted the bundle with alice's signature alone ({code} {body})"
            );
            let reason = body["error"].as_str().unwrap_or_default().to_owned();
            out.say(
                json!({"event": "refused", "step": 1, "code": code, "reason": reason}),
                format!("    alice's signature alone: node 1 refuses it ({code}): {reason}"),
            );
            let both = signed(&change, version, &[&trust.alice, &trust.bob])?;
            pushed_at = Instant::now();
            push(&client, &nodes[0], both.to_bytes()).await?;
            out.say(
                json!({"event": "pushed", "step": 1, "id": change.hash().to_string()}),
                format!(
                    "    co-signed by alice and bob: node 1 applied {}",
                    change.hash()
                ),
            );
            Ok(())
        },
    )
    .await?;

    step(
        out,
        2,
        "the bundle reaches every node: alice allowed, carol (a contractor) denied",
        async {
            let took = wait_decision(&client, &all, "alice", true, pushed_at).await?;
            out.say(
                json!({"event": "reached", "step": 2, "ms": ms(took)}),
                format!(
                    "    alice allowed at all {} nodes {} ms after the push",
                    all.len(),
                    ms(took)
                ),
            );
            check_decision(&client, &all, "carol", false).await?;
            out.say(
                json!({"event": "checked", "step": 2}),
                "    carol denied at every node (forbid wins)",
            );
            let (code, body) =
                proxy::get(&client, front, "/docs/plan", Some(&alice_jwt)).await?;
            ensure!(code == 200, "the proxy answered alice {code} {body}");
            let carol = idp.token("carol")?;
            let (carol_code, _) = proxy::get(&client, front, "/docs/plan", Some(&carol)).await?;
            ensure!(carol_code == 403, "the proxy answered carol {carol_code}");
            let (anon_code, _) = proxy::get(&client, front, "/docs/plan", None).await?;
            ensure!(anon_code == 401, "the proxy answered no token {anon_code}");
            out.say(
                json!({"event": "proxy", "step": 2, "alice": code, "carol": carol_code, "anonymous": anon_code, "body": body}),
                format!(
                    "    through a proxy asking node {last} (GET /docs/plan, JWTs from the demo identity provider):\n      alice {code}: \"{body}\"; carol {carol_code}; no token {anon_code}"
                ),
            );
            Ok(())
        },
    )
    .await?;

    step(
        out,
        3,
        "alice is revoked at node 2 (one revoke signature is enough)",
        async {
            let change = revoke_change(&mut doc, &trust.alice, "User::\"alice\"")?;
            let start = Instant::now();
            push(
                &client,
                &nodes[1],
                signed(&change, version, &[&trust.alice])?.to_bytes(),
            )
            .await?;
            let took = wait_decision(&client, &all, "alice", false, start).await?;
            out.say(
                json!({"event": "revoked", "step": 3, "ms": ms(took)}),
                format!(
                    "    alice denied at all {} nodes {} ms after the revocation",
                    all.len(),
                    ms(took)
                ),
            );
            let (code, _) = proxy::get(&client, front, "/docs/plan", Some(&alice_jwt)).await?;
            ensure!(
                code == 403,
                "the proxy answered alice {code} after her revocation"
            );
            out.say(
                json!({"event": "proxy", "step": 3, "alice": code}),
                format!("    through the proxy, alice's JWT (still valid) now gets {code}"),
            );
            Ok(())
        },
    )
    .await?;

    let half = all.len().div_ceil(2);
    let (left, right) = all.split_at(half);
    step(
        out,
        4,
        "a partition splits the mesh; each side accepts its own update and keeps enforcing",
        async {
            for a in left {
                for b in right {
                    a.block(b.peer_id()).await?;
                    b.block(a.peer_id()).await?;
                }
            }
            out.say(
                json!({"event": "partition", "step": 4, "left": (1..=half).collect::<Vec<_>>(),
                       "right": (half + 1..=all.len()).collect::<Vec<_>>()}),
                format!(
                    "    partition: {} | {}",
                    span(1, half),
                    span(half + 1, all.len())
                ),
            );
            // Each side builds on the state before the partition.
            let mut left_doc = PolicyDoc::load(&doc.save())?;
            let mut right_doc = PolicyDoc::load(&doc.save())?;
            let l = revoke_change(&mut left_doc, &trust.alice, "User::\"dave\"")?;
            let r = revoke_change(&mut right_doc, &trust.alice, "User::\"erin\"")?;
            let start = Instant::now();
            push(&client, left[0], signed(&l, version, &[&trust.alice])?.to_bytes()).await?;
            let tl = wait_decision(&client, left, "dave", false, start).await?;
            let start = Instant::now();
            push(&client, right[0], signed(&r, version, &[&trust.alice])?.to_bytes()).await?;
            let tr = wait_decision(&client, right, "erin", false, start).await?;
            out.say(
                json!({"event": "sides", "step": 4, "left_ms": ms(tl), "right_ms": ms(tr)}),
                format!(
                    "    left side revoked dave ({} ms), right side revoked erin ({} ms)",
                    ms(tl),
                    ms(tr)
                ),
            );
            check_decision(&client, right, "dave", true).await?;
            check_decision(&client, left, "erin", true).await?;
            check_decision(&client, &all, "alice", false).await?;
            check_decision(&client, &all, "carol", false).await?;
            out.say(
                json!({"event": "enforcing", "step": 4}),
                "    each side enforces its own state: dave still allowed on the right, erin on the left; alice and carol denied everywhere",
            );
            Ok(())
        },
    )
    .await?;

    step(
        out,
        5,
        "the partition heals and the mesh converges",
        async {
            let start = Instant::now();
            for a in left {
                for b in right {
                    a.unblock(b.peer_id()).await?;
                    b.unblock(a.peer_id()).await?;
                }
            }
            loop {
                let first = heads(all[0]);
                if all.iter().all(|n| heads(n) == first) && first.len() == 2 {
                    break;
                }
                if start.elapsed() > STEP_TIMEOUT {
                    let per: Vec<usize> = all.iter().map(|n| heads(n).len()).collect();
                    bail!(
                        "the nodes did not converge within {STEP_TIMEOUT:?} (head counts per node: {per:?})"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let took = start.elapsed();
            check_decision(&client, &all, "dave", false).await?;
            check_decision(&client, &all, "erin", false).await?;
            check_decision(&client, &all, "alice", false).await?;
            out.say(
                json!({"event": "converged", "step": 5, "ms": ms(took), "heads": heads(all[0])}),
                format!(
                    "    all {} nodes hold the same heads {} ms after the heal; dave and erin denied everywhere",
                    all.len(),
                    ms(took)
                ),
            );
            Ok(())
        },
    )
    .await?;

    let urls: Vec<String> = nodes.iter().map(NodeHandle::api_url).collect();
    out.say(
        json!({"event": "apis", "apis": urls}),
        format!("    node APIs: {}", urls.join("  ")),
    );
    Ok(())
}
