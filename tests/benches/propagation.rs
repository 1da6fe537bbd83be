//! Propagation benchmark (issue #4): how long a revocation pushed to one node
//! takes to be in force at every node, what it costs in bytes, and how much
//! memory a node takes.
//!
//! N real nodes run in this one process ([`spawn_node`], loopback TCP, port
//! 0, each with its own sled store), each dialing up to 3 random earlier
//! nodes (seeded) and finding the rest by discovery. Once every connection
//! is admitted, gossipsub has had a few heartbeats to form its meshes, and
//! no node has opened a connection for 5 s (`WEFT_BENCH_QUIET_MS`: a new
//! mesh's discovery lookups, peer trims and autonat dial-backs are over),
//! K revocations are pushed one at a time:
//! each is signed first, then the clock starts, the update is POSTed to a
//! random node's `/v1/updates`, and every node's view is polled in-process
//! (every 150 µs, on a thread of its own) until all of them hold the
//! revocation. The time to the last node is one sample; the time to the node
//! it was pushed to (HTTP, verification and the sled flush before the 202)
//! is reported alongside, as `origin_p50_ms`.
//!
//! Cost: the bytes every node's connections sent during the K updates (and
//! 3 s after, for trailing gossip), minus what they sent over an idle window
//! of the same length (anti-entropy rounds), divided by N·K and by the
//! update's size. Audit checkpoints (every 30 s per node while its audit
//! chain grows, in whichever window the tick falls) are left out of both
//! windows and reported apart (`audit_bytes_per_node`); the gossip among
//! the bytes is broken down by topic from each node's metrics
//! (`per_node_per_update`, [`Mesh::counters`]). CPU: the process's user and system time over the same
//! two windows, less the polling thread's, divided by K. Memory: the
//! process's VmRSS after the nodes are up, minus before, divided by N.
//!
//! - `cargo bench -p weft-tests --bench propagation`: N = 10, 50, 100
//!   (`WEFT_BENCH_NODES="10,50"`), K = 30 (`WEFT_BENCH_UPDATES`), 200 ms
//!   between updates (`WEFT_BENCH_GAP_MS`), seed 1 (`WEFT_BENCH_SEED`), 6 s
//!   for the meshes to settle (`WEFT_BENCH_MESH_WAIT_MS`).
//!   Each N runs in a process of its own (the bench runs itself again), so
//!   that one run's memory does not skew the next one's RSS. Prints one JSON
//!   line per N, then a table.
//! - `WEFT_BENCH_KIND=quarantine` measures a node's own quarantine order
//!   instead (issue #8's "time to contain"): the clock starts when the node
//!   is asked to quarantine (as its detector does on an alert) and stops
//!   when every node holds the order, so every node denies the principal.
//! - Run without `--bench` (as `cargo test --all-targets` does), it is a
//!   check: 3 nodes, 2 updates, every node must apply both.

/// Whether the run measures quarantine orders rather than revocations.
fn quarantines() -> bool {
    std::env::var("WEFT_BENCH_KIND").is_ok_and(|k| k == "quarantine")
}

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

/// The allocator the `weft` binary runs with (node/src/main.rs), so that the
/// CPU and memory figures are the node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context as _, Result, bail, ensure};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::runtime::Runtime;
use weft_crdt::view::canonical_subject;
use weft_node::daemon::{NodeHandle, spawn_node};
use weft_protocol::replica::ReplicaConfig;
use weft_tests::mesh::{Author, Fixture, addr, init_logs};

/// Peers each node dials (fewer for the first nodes).
const DIALS: usize = 3;
/// How long gossipsub gets to form its meshes once every peer is admitted:
/// six heartbeats. What is timed is a settled mesh. The node's sparse meshes
/// (a node grafts only when its mesh is empty) take a few heartbeats to
/// settle at 100 nodes on 2 cores: the best-connected nodes collect grafts,
/// prune past `mesh_n_high`, and their pruned peers graft again. After 3 s,
/// in 2 of 5 runs the first update took 1.7-1.9 s (IHAVE and anti-entropy
/// reached the nodes the meshes did not yet); after 6 s, none in 4 runs
/// (BENCHMARKS.md). `WEFT_BENCH_MESH_WAIT_MS` sets it.
const MESH_WAIT: Duration = Duration::from_secs(6);
/// Trailing gossip (IHAVE, IWANT answers) counted after the last update.
const SETTLE: Duration = Duration::from_secs(3);
/// How often the views are polled.
const POLL: Duration = Duration::from_micros(150);
/// The longest one update may take to reach everyone.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// SplitMix64: a seeded generator, enough to pick peers and targets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not valid")),
        Err(_) => Ok(default),
    }
}

/// The process's resident memory, in bytes.
fn rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS has no value")?
        .parse()?;
    Ok(kib * 1024)
}

/// CPU time (user + system) of the process, less that of this thread (which
/// only polls), in milliseconds. Linux counts it in ticks of 10 ms (USER_HZ
/// 100), so it is only meaningful over windows of seconds.
fn nodes_cpu_ms() -> Result<u64> {
    fn ticks(path: &str) -> Result<u64> {
        let stat = std::fs::read_to_string(path)?;
        // Fields after the command name, which may hold spaces: utime and
        // stime are the 14th and 15th fields of the line, so the 12th and
        // 13th after the closing parenthesis.
        let rest = &stat[stat.rfind(')').context("odd stat")? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        ensure!(f.len() > 13, "odd stat: {stat}");
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    }
    // The two reads are not atomic: the main thread may gain a tick in
    // between, so a quiet window can read a tick lower than the one before
    // (callers subtract with saturation).
    let all = ticks("/proc/self/stat")?;
    let mine = ticks("/proc/thread-self/stat")?;
    Ok(all.saturating_sub(mine) * 10)
}

/// The `q`-th percentile of sorted samples: the same rank as
/// `scripts/bench-serf.sh` takes (index ⌊(n−1)·q/100⌋).
fn percentile(sorted: &[f64], q: usize) -> f64 {
    sorted[(sorted.len() - 1) * q / 100]
}

/// A mesh of `n` nodes, connected and admitted.
struct Mesh {
    fx: Fixture,
    nodes: Vec<NodeHandle>,
    /// Bytes of RSS the nodes added, divided by `n`.
    rss_per_node: f64,
    rng: Rng,
}

impl Mesh {
    fn sent(&self) -> u64 {
        self.nodes.iter().map(|n| n.traffic().1).sum()
    }

    /// Counters summed over every node's `/metrics`, to break the bytes
    /// down, by topic: gossip message bytes sent (gossipsub's
    /// `topic_msg_sent_bytes`: each copy published or forwarded, the
    /// message's own bytes without control messages, framing or
    /// encryption), messages published, copies received (duplicates
    /// included), IWANT requests; and connections established, sync rounds
    /// started, and (a gauge) the gossipsub mesh peers by topic.
    fn counters(&self, rt: &Runtime, client: &reqwest::Client) -> Result<BTreeMap<String, u64>> {
        const WANTED: [(&str, &str); 7] = [
            ("libp2p_gossipsub_topic_msg_sent_bytes_total", "sent bytes"),
            ("libp2p_gossipsub_topic_msg_published_total", "published"),
            (
                "libp2p_gossipsub_topic_msg_recv_counts_unfiltered_total",
                "received",
            ),
            ("libp2p_gossipsub_topic_iwant_msgs_total", "iwant"),
            ("libp2p_gossipsub_mesh_peer_counts", "mesh peers"),
            ("libp2p_swarm_connections_established_total", "connections"),
            ("weft_sync_rounds_total", "sync rounds"),
        ];
        rt.block_on(async {
            let mut sums = BTreeMap::new();
            for node in &self.nodes {
                let url = format!("{}/metrics", node.api_url());
                let text = client
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?;
                for (name, labels, value) in weft_tests::metrics::samples(&text) {
                    let Some((_, key)) = WANTED.iter().find(|(n, _)| *n == name) else {
                        continue;
                    };
                    // `hash="T"` or `topic_hash="T"`, among other labels.
                    let topic = weft_tests::metrics::label(labels, "hash")
                        .or_else(|| weft_tests::metrics::label(labels, "topic_hash"));
                    let key = match topic {
                        Some(t) => format!("{key} {t}"),
                        None => key.to_string(),
                    };
                    *sums.entry(key).or_insert(0) += value as u64;
                }
            }
            Ok(sums)
        })
    }
}

/// `after − before`, by key (0 where a count went backwards).
fn minus(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

async fn start_mesh(n: usize, seed: u64, mesh_wait: Duration) -> Result<Mesh> {
    let fx = if quarantines() {
        Fixture::with_quarantine(weft_protocol::trust::QuarantineLimits {
            allowed: true,
            max_ttl_secs: 3600,
            max_per_node_per_hour: 100_000,
        })?
    } else {
        Fixture::new()?
    };
    let mut rng = Rng(seed);
    let rss_before = rss_bytes()?;
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    let mut edges = 0usize;
    for i in 0..n {
        let mut earlier: Vec<usize> = (0..i).collect();
        let mut peers: Vec<Multiaddr> = Vec::new();
        while peers.len() < DIALS && !earlier.is_empty() {
            let j = earlier.swap_remove(rng.below(earlier.len()));
            peers.push(addr(&nodes[j]).with(Protocol::P2p(nodes[j].peer_id())));
        }
        edges += peers.len();
        let (dir, _) = fx.node_dir(&format!("n{i}"), true)?;
        let mut opts = fx.options(dir, &peers);
        // What a deployed node runs with: anti-entropy every 5 s, so that
        // what is measured is gossip.
        opts.replica = ReplicaConfig::default();
        nodes.push(spawn_node(opts).await?);
    }
    // Every connection up and admitted at both ends.
    let start = Instant::now();
    loop {
        let mut total = 0;
        let mut lonely = 0;
        for node in &nodes {
            let a = node
                .status()
                .await?
                .peers
                .iter()
                .filter(|p| p.admitted)
                .count();
            total += a;
            lonely += usize::from(a == 0);
        }
        if lonely == 0 && total >= 2 * edges {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the mesh did not form: {lonely} node(s) without an admitted peer, {total} of {} admitted peer entries",
                2 * edges
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(mesh_wait).await;
    let rss_after = rss_bytes()?;
    Ok(Mesh {
        fx,
        nodes,
        rss_per_node: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        rng,
    })
}

/// One update pushed and followed: returns the time until the last node had
/// it, the time until the node it was pushed to had it (HTTP, verification,
/// the sled flush), and the update's size.
fn propagate(
    rt: &Runtime,
    client: &reqwest::Client,
    mesh: &mut Mesh,
    author: &mut Author,
    subject: &str,
) -> Result<(Duration, Duration, usize)> {
    if quarantines() {
        return contain(rt, mesh, subject);
    }
    let bytes = author.revoke(subject)?;
    let size = bytes.len();
    let target = mesh.rng.below(mesh.nodes.len());
    let url = format!("{}/v1/updates", mesh.nodes[target].api_url());
    let client = client.clone();
    let t0 = Instant::now();
    let post = rt.spawn(async move {
        let resp = client.post(url).body(bytes).send().await?;
        let code = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await?;
        Ok::<_, anyhow::Error>((code, body))
    });
    // Parsed once: a Cedar parse per node per sweep would keep a core busy.
    let canonical = canonical_subject(subject);
    let mut missing: Vec<usize> = (0..mesh.nodes.len()).collect();
    let mut origin = None;
    loop {
        missing.retain(|&i| !mesh.nodes[i].view().is_revoked_canonical(&canonical));
        if origin.is_none() && !missing.contains(&target) {
            origin = Some(t0.elapsed());
        }
        if missing.is_empty() {
            break;
        }
        if t0.elapsed() > UPDATE_TIMEOUT {
            bail!(
                "{subject} reached {} of {} nodes in {UPDATE_TIMEOUT:?} (missing: {missing:?})",
                mesh.nodes.len() - missing.len(),
                mesh.nodes.len()
            );
        }
        std::thread::sleep(POLL);
    }
    let elapsed = t0.elapsed();
    let origin = origin.unwrap_or(elapsed);
    let (code, body) = rt.block_on(post)??;
    ensure!(
        code == 202 && body["status"] == "applied",
        "submit answered {code} {body}"
    );
    Ok((elapsed, origin, size))
}

/// One quarantine ordered by a random node and followed until every node
/// holds it: returns the time to the last node, to the issuing node, and
/// the order's size.
fn contain(rt: &Runtime, mesh: &mut Mesh, subject: &str) -> Result<(Duration, Duration, usize)> {
    let target = mesh.rng.below(mesh.nodes.len());
    let now = weft_tests::mesh::now();
    let record = weft_crdt::QuarantineRecord {
        reason: "bench".into(),
        issuer: None,
        issued_at: now,
        expires_at: Some(now + 3000),
        score: Some(0.9),
        evidence: vec![],
        lifted: false,
    };
    let canonical = canonical_subject(subject);
    let record_for_size = record.clone();
    let t0 = Instant::now();
    rt.block_on(mesh.nodes[target].quarantine(subject, record))?;
    let origin = t0.elapsed();
    let mut missing: Vec<usize> = (0..mesh.nodes.len()).collect();
    loop {
        missing.retain(|&i| mesh.nodes[i].view().quarantine_record(&canonical).is_none());
        if missing.is_empty() {
            break;
        }
        if t0.elapsed() > UPDATE_TIMEOUT {
            bail!(
                "{subject} reached {} of {} nodes",
                mesh.nodes.len() - missing.len(),
                mesh.nodes.len()
            );
        }
        std::thread::sleep(POLL);
    }
    let elapsed = t0.elapsed();
    // The size of an equivalent order (same subject and record, one
    // dependency), built here: the node does not hand its bytes out.
    let key = weft_protocol::identity::SecretKey::from_seed([7; 32]);
    let node = weft_protocol::identity::NodeId::new(key.public());
    let cert = weft_protocol::trust::SignedNodeCert::sign(
        &weft_protocol::trust::NodeCert {
            node,
            name: "bench".into(),
            issuer: mesh.fx.alice.public(),
            issued: now,
            expires: now + 86_400,
        },
        &mesh.fx.alice,
    );
    let size = weft_protocol::quarantine::QuarantineOrder::issue(
        &mut weft_crdt::PolicyDoc::new(),
        &key,
        &cert,
        mesh.fx.root.version,
        subject,
        record_for_size,
        [0; 8],
    )?
    .to_bytes()
    .len();
    Ok((elapsed, origin, size))
}

/// What one run measured.
struct Report {
    nodes: usize,
    updates: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    origin_p50_ms: f64,
    bytes_out_per_node_per_update: f64,
    update_bytes: f64,
    amplification: f64,
    rss_mib_per_node: f64,
    idle_bytes_out_per_node_per_s: f64,
    /// Audit checkpoint bytes per node over both windows.
    audit_bytes_per_node: f64,
    /// How long the mesh took to go quiet before the first update.
    quiet_after_s: f64,
    cpu_ms_per_update: f64,
    /// Per node per update (busy window less idle window, as for the
    /// bytes): gossip bytes and IWANTs by topic, connections established,
    /// sync rounds; and per node, before the first update, the gossipsub
    /// mesh peers by topic ([`Mesh::counters`]).
    breakdown: BTreeMap<String, f64>,
}

/// How a run is paced.
struct Pace {
    /// Between two updates.
    gap: Duration,
    /// For gossipsub to form its meshes once every peer is admitted.
    mesh_wait: Duration,
    /// Counted after the last update, for trailing gossip.
    settle: Duration,
    /// How long the mesh must go without a new connection before the
    /// first update (zero: no wait). A new mesh is busy for a while:
    /// Kademlia lookups connect to the peers they ask, the peer bound
    /// closes what is above it, autonat dials back; the updates are
    /// measured on the mesh as it runs once that is over.
    quiet: Duration,
}

/// The longest the bench waits for the mesh to go quiet.
const QUIET_MAX: Duration = Duration::from_secs(180);

/// Waits until no node has established a connection for `quiet`; returns
/// how long that took.
fn wait_quiet(
    rt: &Runtime,
    mesh: &Mesh,
    client: &reqwest::Client,
    quiet: Duration,
) -> Result<Duration> {
    let began = Instant::now();
    if quiet.is_zero() {
        return Ok(Duration::ZERO);
    }
    let connections = |c: &BTreeMap<String, u64>| c.get("connections").copied().unwrap_or(0);
    let mut last = connections(&mesh.counters(rt, client)?);
    loop {
        std::thread::sleep(quiet);
        let now = connections(&mesh.counters(rt, client)?);
        if now == last {
            return Ok(began.elapsed());
        }
        ensure!(
            began.elapsed() < QUIET_MAX,
            "the mesh did not go {quiet:?} without a new connection in {QUIET_MAX:?}"
        );
        last = now;
    }
}

fn run(rt: &Runtime, n: usize, k: usize, pace: &Pace, seed: u64) -> Result<Report> {
    let mut mesh = rt.block_on(start_mesh(n, seed, pace.mesh_wait))?;
    let mut author = Author::new(&mesh.fx);
    let client = reqwest::Client::new();
    let quiet_after = wait_quiet(rt, &mesh, &client, pace.quiet)?;

    let sent_before = mesh.sent();
    let counters_before = mesh.counters(rt, &client)?;
    let cpu_before = nodes_cpu_ms()?;
    let began = Instant::now();
    let mut samples = Vec::with_capacity(k);
    let mut origins = Vec::with_capacity(k);
    let mut sizes = 0usize;
    for u in 0..k {
        let subject = format!(r#"User::"bench-{u}""#);
        let (t, origin, size) = propagate(rt, &client, &mut mesh, &mut author, &subject)?;
        samples.push(t.as_secs_f64() * 1000.0);
        origins.push(origin.as_secs_f64() * 1000.0);
        sizes += size;
        std::thread::sleep(pace.gap);
    }
    std::thread::sleep(pace.settle);
    let busy_bytes = mesh.sent() - sent_before;
    let busy_cpu = nodes_cpu_ms()?.saturating_sub(cpu_before);
    let busy_counters = minus(&mesh.counters(rt, &client)?, &counters_before);
    let window = began.elapsed();

    // The same window with nothing pushed: heartbeats and anti-entropy.
    let idle_before = mesh.sent();
    let idle_counters_before = mesh.counters(rt, &client)?;
    let idle_cpu_before = nodes_cpu_ms()?;
    std::thread::sleep(window);
    let idle_bytes = mesh.sent() - idle_before;
    let idle_cpu = nodes_cpu_ms()?.saturating_sub(idle_cpu_before);
    let idle_counters = minus(&mesh.counters(rt, &client)?, &idle_counters_before);

    // Every node holds every update.
    for (i, node) in mesh.nodes.iter().enumerate() {
        let held = if quarantines() {
            node.view().quarantines().count()
        } else {
            node.view().revocation_count()
        };
        ensure!(held == k, "node {i} holds {held} of {k} updates");
    }
    let nodes = std::mem::take(&mut mesh.nodes);
    rt.block_on(async {
        for node in nodes {
            node.shutdown().await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;

    samples.sort_by(f64::total_cmp);
    origins.sort_by(f64::total_cmp);
    let update_bytes = sizes as f64 / k as f64;
    // Audit checkpoints go out every 30 s per node while its audit chain
    // grows, in whichever window the tick falls: counted apart (their
    // messages' bytes), so that the per-update figure does not swing by
    // where the ticks fell.
    let audit = |c: &BTreeMap<String, u64>| {
        c.get(&format!("sent bytes {}", weft_node::audit::AUDIT_TOPIC))
            .copied()
            .unwrap_or(0)
    };
    let (busy_audit, idle_audit) = (audit(&busy_counters), audit(&idle_counters));
    let per_node_per_update = busy_bytes
        .saturating_sub(busy_audit)
        .saturating_sub(idle_bytes.saturating_sub(idle_audit)) as f64
        / (n as f64 * k as f64);
    // The mesh sizes are a gauge: read before the first update.
    let breakdown = minus(&busy_counters, &idle_counters)
        .into_iter()
        .filter(|(key, _)| !key.starts_with("mesh peers"))
        .map(|(key, c)| (key, c as f64 / (n as f64 * k as f64)))
        .chain(
            counters_before
                .iter()
                .filter(|(key, _)| key.starts_with("mesh peers"))
                .map(|(key, m)| (key.clone(), *m as f64 / n as f64)),
        )
        .collect();
    Ok(Report {
        nodes: n,
        updates: k,
        p50_ms: percentile(&samples, 50),
        p99_ms: percentile(&samples, 99),
        max_ms: samples[samples.len() - 1],
        origin_p50_ms: percentile(&origins, 50),
        bytes_out_per_node_per_update: per_node_per_update,
        update_bytes,
        amplification: per_node_per_update / update_bytes,
        rss_mib_per_node: mesh.rss_per_node / (1024.0 * 1024.0),
        idle_bytes_out_per_node_per_s: idle_bytes.saturating_sub(idle_audit) as f64
            / n as f64
            / window.as_secs_f64(),
        audit_bytes_per_node: (busy_audit + idle_audit) as f64 / n as f64,
        quiet_after_s: quiet_after.as_secs_f64(),
        cpu_ms_per_update: busy_cpu.saturating_sub(idle_cpu) as f64 / k as f64,
        breakdown,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Report {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "system": "weft",
            "nodes": self.nodes,
            "updates": self.updates,
            "p50_ms": round2(self.p50_ms),
            "p99_ms": round2(self.p99_ms),
            "max_ms": round2(self.max_ms),
            "origin_p50_ms": round2(self.origin_p50_ms),
            "bytes_out_per_node_per_update": self.bytes_out_per_node_per_update.round() as u64,
            "update_bytes": self.update_bytes.round() as u64,
            "amplification": round2(self.amplification),
            "rss_mib_per_node": round2(self.rss_mib_per_node),
            "idle_bytes_out_per_node_per_s": self.idle_bytes_out_per_node_per_s.round() as u64,
            "audit_bytes_per_node": self.audit_bytes_per_node.round() as u64,
            "quiet_after_s": round2(self.quiet_after_s),
            "cpu_ms_per_update": round2(self.cpu_ms_per_update),
            "per_node_per_update": self
                .breakdown
                .iter()
                .map(|(key, v)| (key.clone(), serde_json::json!(round2(*v))))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The check `cargo test --all-targets` runs: 3 nodes, 2 updates.
fn check(rt: &Runtime) -> Result<()> {
    let pace = Pace {
        gap: Duration::from_millis(10),
        mesh_wait: Duration::from_millis(500),
        settle: Duration::ZERO,
        quiet: Duration::ZERO,
    };
    let r = run(rt, 3, 2, &pace, 1)?;
    ensure!(r.max_ms > 0.0 && r.update_bytes > 0.0);
    println!(
        "propagation check: 3 nodes applied 2 updates, slowest {:.1} ms",
        r.max_ms
    );
    Ok(())
}

/// The table of the JSON lines.
fn print_table(lines: &[serde_json::Value]) {
    println!();
    println!(
        "| nodes | updates | p50 ms | p99 ms | max ms | origin p50 ms | update B | out B/node/update | × update | RSS MiB/node | CPU ms/update |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in lines {
        let keys = [
            "nodes",
            "updates",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "origin_p50_ms",
            "update_bytes",
            "bytes_out_per_node_per_update",
            "amplification",
            "rss_mib_per_node",
            "cpu_ms_per_update",
        ];
        let cells: Vec<String> = keys.iter().map(|k| r[*k].to_string()).collect();
        println!("| {} |", cells.join(" | "));
    }
}

fn main() -> Result<()> {
    init_logs();
    if !std::env::args().any(|a| a == "--bench") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return check(&rt);
    }
    let counts: Vec<usize> = std::env::var("WEFT_BENCH_NODES")
        .unwrap_or_else(|_| "10,50,100".into())
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| usize::from_str(s.trim()).with_context(|| format!("WEFT_BENCH_NODES: {s:?}")))
        .collect::<Result<_>>()?;
    let k: usize = env_or("WEFT_BENCH_UPDATES", 30)?;
    let pace = Pace {
        gap: Duration::from_millis(env_or("WEFT_BENCH_GAP_MS", 200)?),
        mesh_wait: env_or("WEFT_BENCH_MESH_WAIT_MS", MESH_WAIT.as_millis() as u64)
            .map(Duration::from_millis)?,
        settle: SETTLE,
        quiet: Duration::from_millis(env_or("WEFT_BENCH_QUIET_MS", 5_000)?),
    };
    let seed: u64 = env_or("WEFT_BENCH_SEED", 1)?;
    ensure!(k > 0, "WEFT_BENCH_UPDATES must be at least 1");
    ensure!(
        counts.iter().all(|&n| n >= 2),
        "a mesh needs at least 2 nodes"
    );

    let mut lines = Vec::new();
    if let [n] = counts[..] {
        eprintln!("propagation: {n} nodes, {k} updates ...");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let line = run(&rt, n, k, &pace, seed)?.json();
        println!("{line}");
        lines.push(line);
    } else {
        // One process per node count: memory a run has freed is not always
        // given back to the system, so a later run in the same process would
        // read a skewed RSS.
        let exe = std::env::current_exe()?;
        for n in counts {
            let out = std::process::Command::new(&exe)
                .arg("--bench")
                .env("WEFT_BENCH_NODES", n.to_string())
                .stderr(std::process::Stdio::inherit())
                .output()?;
            ensure!(out.status.success(), "the run with {n} nodes failed");
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if l.starts_with(r#"{"system""#) {
                    println!("{l}");
                    lines.push(serde_json::from_str(l)?);
                }
            }
        }
    }
    print_table(&lines);
    Ok(())
}
