//! Propagation across real processes (issue #25): how long a revocation
//! pushed to one `weft node run` process takes to be in force at every
//! other one, each a process of its own on loopback, as sites run them.
//!
//! N processes start from certified node directories, each given the
//! addresses of up to 3 random earlier nodes (seeded) and finding the rest
//! by discovery. Once every node has an admitted peer and the admitted
//! connections add up to at least the dialed ones, the meshes have had six
//! heartbeats, and no node has opened a connection for 5 s
//! (`WEFT_BENCH_QUIET_MS`: a new mesh's discovery lookups, peer trims and
//! autonat dial-backs are over, and the mesh runs as it will), K
//! revocations are pushed one at a time to a random node:
//!
//! - the clock starts (wall clock, microseconds) just before the POST to
//!   `/v1/updates`;
//! - every node is asked `POST /v1/authorize` for the revoked principal
//!   100 ms after the push, then every 100 ms, until each answers
//!   `"revoked": true`, so that every HTTP answer is seen to change;
//! - each node's audit record of the update (`update_applied`, read from
//!   `/v1/audit`) gives `in_force_us`, the time its decisions started
//!   seeing the update: the node's own clock, which is the machine's. The
//!   time to the last node is one sample.
//!
//! Reading the time from the nodes, not from the polling, keeps the poll
//! slow and out of the way: asking 50 nodes while the update spreads would
//! take the cores from the 50 processes being measured.
//!
//! - `cargo bench -p weft-tests --bench propagation_processes`: N = 50
//!   (`WEFT_BENCH_NODES`), K = 30 (`WEFT_BENCH_UPDATES`), 200 ms between
//!   updates (`WEFT_BENCH_GAP_MS`), seed 1 (`WEFT_BENCH_SEED`). Prints one
//!   JSON line (`"system": "weft-processes"`). `scripts/bench-propagation.sh`
//!   runs it beside the in-process bench and Serf.
//! - `WEFT_BENCH_TRACE=1` prints, for each update, when it was in force at
//!   its origin, at the first other node and at the median node, and its
//!   five slowest nodes, with where in the 10 s detection slot it was
//!   pushed (and when, in µs since the Unix epoch, to line it up with
//!   a profile); and, before and after the updates, the shape of
//!   the update topic's gossip meshes (connected parts, mesh degrees, and
//!   the nodes in no other node's mesh, which no peer sends an update at
//!   once).
//! - `WEFT_BENCH_NODE_LOG` is the nodes' `RUST_LOG` (default `warn`), and
//!   `WEFT_BENCH_KEEP_LOGS=DIR` copies each node's log to `DIR/n<i>.log`
//!   at the end (e.g. `libp2p_gossipsub=debug` to follow one message
//!   from node to node).
//! - Run without `--bench` (as `cargo test --all-targets` does), it is a
//!   check: 3 processes, 2 updates, every node must deny both principals.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use weft_tests::mesh::{Author, Fixture};
use weft_tests::netns::weft_bin;
use weft_tests::proxy::free_port;

/// Peers each node is given (fewer for the first nodes).
const DIALS: usize = 3;
/// How long gossipsub gets to form its meshes once the peers are admitted:
/// six heartbeats, as in the in-process bench.
const MESH_WAIT: Duration = Duration::from_secs(6);
/// How often each node not yet denying is asked again.
const POLL: Duration = Duration::from_millis(100);
/// How long the mesh must go without a new connection before the first
/// update (`WEFT_BENCH_QUIET_MS`; 0: no wait).
const QUIET: Duration = Duration::from_secs(5);
/// The longest the bench waits for that.
const QUIET_MAX: Duration = Duration::from_secs(180);
/// The longest one update may take to reach everyone.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// SplitMix64: a seeded generator, enough to pick peers and targets.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
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

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A `weft node run` process, killed on drop.
struct Node {
    child: Child,
    api: String,
    /// Where its standard error goes (`stderr.log` in its directory).
    log: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// N processes, each given up to [`DIALS`] earlier nodes' addresses.
/// Returns the nodes and how many dials they were given.
fn start(fx: &Fixture, n: usize, rng: &mut Rng) -> Result<(Vec<Node>, usize)> {
    let bin = weft_bin()?;
    let mut p2p: Vec<u16> = Vec::with_capacity(n);
    let mut nodes = Vec::with_capacity(n);
    let mut edges = 0;
    for i in 0..n {
        let (dir, _) = fx.node_dir(&format!("n{i}"), true)?;
        let port = free_port()?;
        let api = format!("127.0.0.1:{}", free_port()?);
        let mut earlier: Vec<usize> = (0..i).collect();
        let mut cmd = Command::new(bin);
        cmd.args(["node", "run", "--dir"])
            .arg(&dir)
            .args(["--api", &api])
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")])
            // Every node is on 127.0.0.1: the per-address limit would cap
            // a loopback mesh, never a mesh of sites.
            .env("WEFT_MAX_CONNECTIONS_PER_IP", "0")
            .env(
                "RUST_LOG",
                std::env::var("WEFT_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?);
        for _ in 0..DIALS.min(i) {
            let j = earlier.swap_remove(rng.below(earlier.len()));
            cmd.args(["--peer", &format!("/ip4/127.0.0.1/tcp/{}", p2p[j])]);
            edges += 1;
        }
        p2p.push(port);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        nodes.push(Node {
            child,
            api,
            log: dir.join("stderr.log"),
        });
    }
    Ok((nodes, edges))
}

async fn json(resp: reqwest::Response) -> Result<serde_json::Value> {
    let code = resp.status();
    let text = resp.text().await?;
    ensure!(code.is_success(), "{code}: {text}");
    Ok(serde_json::from_str(&text)?)
}

/// Waits until every node is healthy, has an admitted peer, and the
/// admitted peer entries add up to both ends of every dial.
async fn wait_mesh(http: &reqwest::Client, nodes: &mut [Node], edges: usize) -> Result<()> {
    let began = Instant::now();
    loop {
        let (mut total, mut lonely) = (0, 0);
        for (i, node) in nodes.iter_mut().enumerate() {
            if let Ok(Some(status)) = node.child.try_wait() {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "node {i} exited: {status}; the end of its log: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            let admitted = match http
                .get(format!("http://{}/v1/status", node.api))
                .send()
                .await
            {
                Ok(resp) => json(resp).await.map_or(0, |s| {
                    s["peers"]
                        .as_array()
                        .map_or(0, |p| p.iter().filter(|p| p["admitted"] == true).count())
                }),
                Err(_) => 0,
            };
            total += admitted;
            lonely += usize::from(admitted == 0);
        }
        if lonely == 0 && total >= 2 * edges {
            return Ok(());
        }
        if began.elapsed() > Duration::from_secs(120) {
            bail!(
                "the mesh did not form: {lonely} node(s) without an admitted peer, {total} of {} admitted peer entries",
                2 * edges
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until no node has established a connection for `quiet` (see the
/// in-process bench's `Pace::quiet`: a new mesh's lookups, trims and
/// autonat dial-backs are over); returns how long that took.
async fn wait_quiet(http: &reqwest::Client, nodes: &[Node], quiet: Duration) -> Result<Duration> {
    let began = Instant::now();
    if quiet.is_zero() {
        return Ok(Duration::ZERO);
    }
    let mut last = None;
    loop {
        let mut established = 0.0;
        for node in nodes {
            let resp = http
                .get(format!("http://{}/metrics", node.api))
                .send()
                .await?;
            let text = resp.error_for_status()?.text().await?;
            established +=
                weft_tests::metrics::sum(&text, "libp2p_swarm_connections_established_total");
        }
        if last == Some(established) {
            return Ok(began.elapsed());
        }
        ensure!(
            began.elapsed() < QUIET_MAX,
            "the mesh did not go {quiet:?} without a new connection in {QUIET_MAX:?}"
        );
        last = Some(established);
        tokio::time::sleep(quiet).await;
    }
}

/// The shape of the update topic's gossipsub meshes, from every node's
/// `update_mesh` peers (an edge where either side has the other): the
/// connected parts and their sizes, and each node's mesh degree. A part
/// that holds no peer of an update's origin hears of it only by IHAVE.
async fn mesh_shape(http: &reqwest::Client, nodes: &[Node]) -> Result<String> {
    let mut ids = Vec::with_capacity(nodes.len());
    let mut meshes = Vec::with_capacity(nodes.len());
    for node in nodes {
        let resp = http
            .get(format!("http://{}/v1/status", node.api))
            .send()
            .await?;
        let status = json(resp).await?;
        ids.push(status["node_id"].as_str().unwrap_or_default().to_owned());
        let peers: Vec<String> = status["peers"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["update_mesh"] == true)
                    .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        meshes.push(peers);
    }
    let index: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut part: Vec<usize> = (0..nodes.len()).collect();
    fn root(part: &mut [usize], mut i: usize) -> usize {
        while part[i] != i {
            part[i] = part[part[i]];
            i = part[i];
        }
        i
    }
    let mut degree = vec![0usize; nodes.len()];
    // In how many other nodes' meshes each node is: the peers that send it
    // every update at once.
    let mut fed_by = vec![0usize; nodes.len()];
    for (i, peers) in meshes.iter().enumerate() {
        degree[i] = peers.len();
        for j in peers.iter().filter_map(|p| index.get(p.as_str())) {
            fed_by[*j] += 1;
            let (a, b) = (root(&mut part, i), root(&mut part, *j));
            part[a] = b;
        }
    }
    let unfed: Vec<usize> = (0..nodes.len()).filter(|i| fed_by[*i] == 0).collect();
    let mut parts: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in 0..nodes.len() {
        let r = root(&mut part, i);
        parts.entry(r).or_default().push(i);
    }
    let mut sizes: Vec<&Vec<usize>> = parts.values().collect();
    sizes.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let small: Vec<String> = sizes.iter().skip(1).map(|p| format!("{p:?}")).collect();
    let mut by_degree = std::collections::BTreeMap::<usize, usize>::new();
    for d in &degree {
        *by_degree.entry(*d).or_default() += 1;
    }
    Ok(format!(
        "update mesh in {} part(s), largest {}, others {}; nodes by mesh degree {:?}; \
         in no other node's mesh: {unfed:?}",
        sizes.len(),
        sizes[0].len(),
        if small.is_empty() {
            "none".to_owned()
        } else {
            small.join(" ")
        },
        by_degree
    ))
}

/// Whether `node` answers a request by `subject` with `"revoked": true`.
async fn denies(http: &reqwest::Client, node: &Node, subject: &str) -> Result<bool> {
    let body = serde_json::json!({
        "principal": subject,
        "action": r#"Action::"view""#,
        "resource": r#"Doc::"bench""#,
    });
    let resp = http
        .post(format!("http://{}/v1/authorize", node.api))
        .json(&body)
        .send()
        .await?;
    Ok(json(resp).await?["revoked"] == true)
}

/// When `node` put update `id` in force, from its audit trail (the record
/// is written just after; it is waited for).
async fn in_force_us(http: &reqwest::Client, node: &Node, id: &str, since_ms: u64) -> Result<u64> {
    let began = Instant::now();
    loop {
        let text = http
            .get(format!("http://{}/v1/audit?since={since_ms}", node.api))
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines() {
            let r: serde_json::Value = serde_json::from_str(line)?;
            let e = &r["event"];
            if e["kind"] == "update_applied" && e["id"] == id {
                return e["in_force_us"]
                    .as_u64()
                    .context("update_applied has no in_force_us");
            }
        }
        if began.elapsed() > Duration::from_secs(10) {
            bail!("node {} has no audit record of {id}", node.api);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One revocation pushed to a random node and followed to every node:
/// the time to the last one and to the one it was pushed to, in ms.
async fn propagate(
    http: &reqwest::Client,
    nodes: &[Node],
    author: &mut Author,
    rng: &mut Rng,
    subject: &str,
) -> Result<(f64, f64)> {
    let bytes = author.revoke(subject)?;
    let target = rng.below(nodes.len());
    let t0 = now_us();
    let answer = json(
        http.post(format!("http://{}/v1/updates", nodes[target].api))
            .body(bytes)
            .send()
            .await?,
    )
    .await?;
    ensure!(answer["status"] == "applied", "submit answered {answer}");
    let id = answer["id"].as_str().context("no id")?.to_owned();
    let began = Instant::now();
    let mut missing: Vec<usize> = (0..nodes.len()).collect();
    while !missing.is_empty() {
        // First after a pause: requests from the bench would compete with
        // the update for the same two cores while it spreads.
        tokio::time::sleep(POLL).await;
        let answers =
            futures::future::join_all(missing.iter().map(|&i| denies(http, &nodes[i], subject)))
                .await;
        let mut still = Vec::new();
        for (i, a) in missing.iter().zip(answers) {
            if !a? {
                still.push(*i);
            }
        }
        missing = still;
        if began.elapsed() > UPDATE_TIMEOUT {
            bail!(
                "{subject} was in force at {} of {} nodes after {UPDATE_TIMEOUT:?}",
                nodes.len() - missing.len(),
                nodes.len()
            );
        }
    }
    let since_ms = t0 / 1000 - 1000;
    let times = futures::future::join_all(
        nodes
            .iter()
            .map(|node| in_force_us(http, node, &id, since_ms)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<u64>>>()?;
    let ms = |t: u64| t.saturating_sub(t0) as f64 / 1000.0;
    let last = times.iter().copied().max().unwrap_or(t0);
    if std::env::var_os("WEFT_BENCH_TRACE").is_some() {
        // Where the time went, in ms: the origin, the first other node,
        // the median and the five slowest nodes.
        let mut slow: Vec<(f64, usize)> = times.iter().map(|t| ms(*t)).zip(0..).collect();
        slow.sort_by(|a, b| b.0.total_cmp(&a.0));
        let first = slow
            .iter()
            .rev()
            .find(|(_, i)| *i != target)
            .map_or(0.0, |s| s.0);
        let median = slow[slow.len() / 2].0;
        let shown: Vec<String> = slow
            .iter()
            .take(5)
            .map(|(t, i)| format!("node {i} {t:.1}"))
            .collect();
        eprintln!(
            "{subject} from node {target} at {:.1} s of the 10 s slot, pushed at {t0} µs (origin {:.1}, first other {first:.1}, median {median:.1}): {}",
            (t0 / 1000 % 10_000) as f64 / 1000.0,
            ms(times[target]),
            shown.join(", ")
        );
    }
    Ok((ms(last), ms(times[target])))
}

fn percentile(sorted: &[f64], q: usize) -> f64 {
    sorted[(sorted.len() - 1) * q / 100]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn run(
    n: usize,
    k: usize,
    gap: Duration,
    mesh_wait: Duration,
    quiet: Duration,
    seed: u64,
) -> Result<serde_json::Value> {
    let fx = Fixture::new()?;
    let mut rng = Rng(seed);
    let (mut nodes, edges) = start(&fx, n, &mut rng)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    wait_mesh(&http, &mut nodes, edges).await?;
    tokio::time::sleep(mesh_wait).await;
    let quiet_after = wait_quiet(&http, &nodes, quiet).await?;
    let trace = std::env::var_os("WEFT_BENCH_TRACE").is_some();
    if trace {
        eprintln!("before the updates: {}", mesh_shape(&http, &nodes).await?);
    }
    let mut author = Author::new(&fx);
    let (mut samples, mut origins) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for u in 0..k {
        let subject = format!(r#"User::"bench-{u}""#);
        let (last, origin) = propagate(&http, &nodes, &mut author, &mut rng, &subject).await?;
        samples.push(last);
        origins.push(origin);
        tokio::time::sleep(gap).await;
    }
    if trace {
        eprintln!("after the updates: {}", mesh_shape(&http, &nodes).await?);
    }
    if let Some(keep) = std::env::var_os("WEFT_BENCH_KEEP_LOGS") {
        let keep = std::path::PathBuf::from(keep);
        std::fs::create_dir_all(&keep)?;
        for (i, node) in nodes.iter().enumerate() {
            std::fs::copy(&node.log, keep.join(format!("n{i}.log")))?;
        }
    }
    samples.sort_by(f64::total_cmp);
    origins.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "system": "weft-processes",
        "nodes": n,
        "updates": k,
        "p50_ms": round2(percentile(&samples, 50)),
        "p99_ms": round2(percentile(&samples, 99)),
        "max_ms": round2(samples[samples.len() - 1]),
        "origin_p50_ms": round2(percentile(&origins, 50)),
        "quiet_after_s": round2(quiet_after.as_secs_f64()),
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        let r = run(
            3,
            2,
            Duration::from_millis(10),
            Duration::from_millis(500),
            Duration::ZERO,
            1,
        )
        .await?;
        ensure!(r["max_ms"].as_f64().is_some_and(|m| m > 0.0), "{r}");
        println!(
            "propagation check: 3 processes put 2 revocations in force, slowest {} ms",
            r["max_ms"]
        );
        return Ok(());
    }
    let n: usize = env_or("WEFT_BENCH_NODES", 50)?;
    let k: usize = env_or("WEFT_BENCH_UPDATES", 30)?;
    let gap = Duration::from_millis(env_or("WEFT_BENCH_GAP_MS", 200)?);
    let seed: u64 = env_or("WEFT_BENCH_SEED", 1)?;
    let quiet = Duration::from_millis(env_or("WEFT_BENCH_QUIET_MS", QUIET.as_millis() as u64)?);
    ensure!(n >= 2 && k >= 1, "at least 2 nodes and 1 update");
    eprintln!("propagation across processes: {n} nodes, {k} updates ...");
    let line = run(n, k, gap, MESH_WAIT, quiet, seed).await?;
    println!("{line}");
    Ok(())
}
