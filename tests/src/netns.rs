//! A lab of real `weft node run` processes, each in its own Linux network
//! namespace, wired to one bridge, with faults injected at the network.
//!
//! # The network
//! A [`Lab`] makes a bridge in the root namespace holding `10.214.K.1/24`
//! (K is picked free for each lab), and for node `i` a namespace with a veth
//! pair: one end on the bridge, the other (`eth0`) inside the namespace with
//! `10.214.K.(10+i)`. Every node listens on `IP:7101` (libp2p) and `IP:7100`
//! (HTTP); the test process, in the root namespace, reaches every API
//! through the bridge, and an in-process node there can dial them too.
//!
//! # Faults
//! Each namespace holds an nftables table `inet weft` with a set of cut
//! sources and a chain for loss, hooked on input, so a dropped packet
//! simply vanishes (no error reaches the sender, as on a real partition):
//! - [`Lab::cut`] drops what `from` sends to `to`: a one-way (asymmetric)
//!   partition; [`Lab::partition`] cuts both ways between groups
//!   (symmetric); [`Lab::heal_all`] lifts every cut. Flapping is cut and heal
//!   in a loop.
//! - [`Lab::set_loss`] drops a share of the packets a node receives from
//!   its peers (`numgen random`), never the test's own API calls.
//! - [`Lab::set_delay`] delays what a node sends to its peers: with
//!   `tc netem` when the kernel has it, otherwise with an NFQUEUE rule and
//!   a thread that holds each packet ([`crate::delay`]); kernels built
//!   without netem are common on CI machines.
//!
//! # Cleanup
//! The lab owns its processes, namespaces and bridge, and [`Drop`] kills
//! (SIGKILL) and removes all of them, also when a test panics. Names carry
//! the test process's pid, so a new lab first removes what a killed
//! earlier run left behind (its pid no longer alive). Labs run one at a
//! time in a process: they share two cores, and timing-sensitive scenarios
//! must not compete with each other.
//!
//! When namespaces cannot be made (not root, no iproute2 or nft), creating
//! a lab fails with the reason: the suite fails, it never skips.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use tempfile::TempDir;
use weft_protocol::identity::SecretKey;

/// Prefix of every namespace a lab makes.
pub(crate) const NS_PREFIX: &str = "weftlab-";
/// Prefix of the bridge and of the root-side veth ends.
pub(crate) const LINK_PREFIX: &str = "wl";
/// The libp2p port of every node (each has its own network stack).
pub const P2P_PORT: u16 = 7101;
/// The HTTP API port of every node.
pub const API_PORT: u16 = 7100;

static SERIAL: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Holds every other lab of this process off (labs of both kinds, this
/// module's and [`crate::nat`]'s, run one at a time).
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A lab's tag (`PID36xSEQ36`, for link names) and its sequence number.
pub(crate) fn next_tag() -> (String, u32) {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    (
        format!("{}x{}", base36(std::process::id()), base36(seq)),
        seq,
    )
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS`.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// The `weft` binary: `WEFT_BIN` when set, else `target/<profile>/weft`
/// beside the test executable. When that is missing or older than a source
/// file of crdt, protocol or node, it is built first with `cargo build`, so
/// a test never runs a stale binary (`cargo test --workspace` builds it
/// already, and then nothing is rebuilt).
pub fn weft_bin() -> Result<&'static Path> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("WEFT_BIN") {
            return Ok(PathBuf::from(bin));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/<test exe>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("the test executable is not in target/<profile>/deps")?;
        let bin = profile_dir.join("weft");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("no workspace root")?;
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let sources = ["crdt", "protocol", "node", "Cargo.toml", "Cargo.lock"]
            .iter()
            .filter_map(|p| newest_mtime(&root.join(p)))
            .max();
        if built.is_none() || sources.is_some_and(|s| Some(s) > built) {
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(root)
                .args(["build", "--quiet", "-p", "weft-node", "--bin", "weft"]);
            if release {
                cmd.arg("--release");
            }
            if let Some(target) = profile_dir.parent() {
                cmd.env("CARGO_TARGET_DIR", target);
            }
            run(&mut cmd).map_err(|e| format!("cannot build the weft binary: {e:#}"))?;
        }
        if !bin.exists() {
            return Err(format!("{} does not exist after the build", bin.display()));
        }
        Ok(bin)
    })
    .as_deref()
    .map_err(|e| anyhow!("{e}"))
}

/// The newest modification time under `path` (skipping `target`).
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "target")
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// Runs `weft ARGS` and returns its stdout.
pub fn weft(args: &[&str]) -> Result<String> {
    run(Command::new(weft_bin()?).args(args))
}

/// Runs `weft ARGS` and returns its exit code, stdout and stderr.
pub fn weft_status(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(weft_bin()?)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The last line of a command's output, trimmed.
pub(crate) fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_owned()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Removes what labs of dead test processes left: their processes,
/// namespaces and links.
pub fn clean_stale() -> Result<()> {
    let me = std::process::id();
    let list = ip(&["netns", "list"])?;
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: u32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid == me || pid_alive(pid) {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", name]) {
            for p in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", p]).status();
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
    let links = ip(&["-o", "link", "show"])?;
    for line in links.lines() {
        // "12: wlbXXXXXxN: <...>" or "13: wlvXXXXXxNxI@if2: <...>"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(LINK_PREFIX) else {
            continue;
        };
        let Some(pid36) = rest.get(1..).and_then(|r| r.split('x').next()) else {
            continue;
        };
        let pid = u32::from_str_radix(pid36, 36).unwrap_or(0);
        if pid == me || pid_alive(pid) {
            continue;
        }
        let _ = ip(&["link", "del", name]);
    }
    Ok(())
}

/// One node of a lab.
pub struct LabNode {
    /// Its namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    /// Its directory.
    pub dir: PathBuf,
    /// Its node id (libp2p peer id).
    pub id: String,
    /// Where its process writes its logs (appended across restarts).
    pub log: PathBuf,
    child: Option<Child>,
}

impl LabNode {
    /// The base URL of its API.
    pub fn url(&self) -> String {
        format!("http://{}:{API_PORT}", self.ip)
    }

    /// Its libp2p address.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{P2P_PORT}", self.ip)
    }

    /// Whether its process is running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// How to build a lab.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// How many nodes.
    pub nodes: usize,
    /// Which nodes get no certificate.
    pub uncertified: Vec<usize>,
    /// Who dials whom: `peers[i]` are the nodes `i` dials. Default: every
    /// node dials every node before it.
    pub peers: Option<Vec<Vec<usize>>>,
    /// Whether the trust root lets nodes quarantine on their own
    /// (`weft trust init --allow-node-quarantine`: at most 1 h each, 5 per
    /// node per hour). Default: no.
    pub node_quarantine: bool,
}

impl LabSpec {
    /// `n` certified nodes, each dialing every node before it.
    pub fn new(n: usize) -> Self {
        LabSpec {
            nodes: n,
            uncertified: Vec::new(),
            peers: None,
            node_quarantine: false,
        }
    }
}

/// A running lab: a bridge, one namespace and one `weft` process per node,
/// a trust root (one root key, version 1) with two operators (`alice` holds
/// every role, `bob` only `policy`), and HTTP helpers. Dropping it kills
/// and removes everything.
pub struct Lab {
    /// The nodes.
    pub nodes: Vec<LabNode>,
    /// The bridge's address (the root namespace's side).
    pub bridge_ip: Ipv4Addr,
    /// Files: keys, trust root, node directories, logs.
    pub dir: TempDir,
    /// alice's key file (every role).
    pub alice_key: PathBuf,
    /// bob's key file (`policy` only).
    pub bob_key: PathBuf,
    /// A key no trust root names.
    pub mallory_key: PathBuf,
    /// The trust file (version 1, as `weft trust init` wrote it).
    pub trust: PathBuf,
    /// The root key's file, which signed the trust root.
    pub root_key: PathBuf,
    /// alice's key, for authoring updates in-process.
    pub alice: SecretKey,
    bridge: String,
    namespaces: Vec<String>,
    veths: Vec<String>,
    delays: Mutex<std::collections::HashMap<usize, crate::delay::Delay>>,
    http: reqwest::Client,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds the network, the keys and the node directories, and starts
    /// every node. Fails (never skips) when namespaces cannot be made.
    pub fn new(spec: LabSpec) -> Result<Lab> {
        let serial = serial();
        ensure!(
            spec.nodes <= 40,
            "a lab has at most 40 nodes (interface names are short)"
        );
        let bin = weft_bin()?;
        clean_stale().context(
            "network namespaces are unavailable: the netns suite needs root, iproute2 and nftables",
        )?;
        let (tag, seq) = next_tag();
        let dir = tempfile::Builder::new().prefix("weft-lab-").tempdir()?;
        let k = free_subnet()?;
        let bridge_ip = Ipv4Addr::new(10, 214, k, 1);
        let mut lab = Lab {
            nodes: Vec::new(),
            bridge_ip,
            alice_key: dir.path().join("alice.key"),
            bob_key: dir.path().join("bob.key"),
            mallory_key: dir.path().join("mallory.key"),
            trust: dir.path().join("trust.json"),
            root_key: dir.path().join("root.key"),
            alice: SecretKey::from_seed([0; 32]),
            dir,
            bridge: format!("{LINK_PREFIX}b{tag}"),
            namespaces: Vec::new(),
            veths: Vec::new(),
            delays: Mutex::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            _serial: serial,
        };
        // From here on, Drop removes whatever was made.
        ip(&["link", "add", &lab.bridge, "type", "bridge"]).context(
            "network namespaces are unavailable: the netns suite needs root, iproute2 and nftables",
        )?;
        ip(&[
            "addr",
            "add",
            &format!("{bridge_ip}/24"),
            "dev",
            &lab.bridge,
        ])?;
        ip(&["link", "set", &lab.bridge, "up"])?;

        let base = lab.dir.path().to_path_buf();
        let s = |p: &Path| p.to_string_lossy().into_owned();
        weft(&["key", "gen", "--out", &s(&lab.root_key)])?;
        let alice_pub = last_line(&weft(&["key", "gen", "--out", &s(&lab.alice_key)])?);
        let bob_pub = last_line(&weft(&["key", "gen", "--out", &s(&lab.bob_key)])?);
        weft(&["key", "gen", "--out", &s(&lab.mallory_key)])?;
        let mut init = vec![
            "trust".to_owned(),
            "init".into(),
            "--root-key".into(),
            s(&lab.root_key),
            "--operator".into(),
            format!("alice={alice_pub}"),
            "--operator".into(),
            format!("bob={bob_pub}:policy"),
            "--expires".into(),
            "1d".into(),
            "--out".into(),
            s(&lab.trust),
        ];
        if spec.node_quarantine {
            init.push("--allow-node-quarantine".into());
        }
        weft(&init.iter().map(String::as_str).collect::<Vec<_>>())?;
        lab.alice = weft_node::keyfile::read(&lab.alice_key)
            .map_err(|e| anyhow!("cannot read alice's key: {e}"))?;

        for i in 0..spec.nodes {
            let ns = format!("{NS_PREFIX}{}-{seq}-{i}", std::process::id());
            ip(&["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            let veth = format!("{LINK_PREFIX}v{tag}x{i}");
            let node_ip = Ipv4Addr::new(10, 214, k, 10 + i as u8);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            lab.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &lab.bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{node_ip}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            nft_load(
                &ns,
                "table inet weft {\n\
                   set cut { type ipv4_addr; }\n\
                   chain loss { }\n\
                   chain input { type filter hook input priority 0; policy accept;\n\
                     ip saddr @cut drop\n\
                     jump loss\n\
                   }\n\
                 }\n",
            )?;
            let node_dir = base.join(format!("n{i}"));
            let peers: Vec<usize> = match &spec.peers {
                Some(p) => p.get(i).cloned().unwrap_or_default(),
                None => (0..i).collect(),
            };
            let mut args: Vec<String> = vec![
                "node".into(),
                "init".into(),
                "--dir".into(),
                s(&node_dir),
                "--trust".into(),
                s(&lab.trust),
                "--listen".into(),
                format!("/ip4/{node_ip}/tcp/{P2P_PORT}"),
                "--api".into(),
                format!("{node_ip}:{API_PORT}"),
            ];
            for p in peers {
                args.push("--peer".into());
                args.push(format!(
                    "/ip4/{}/tcp/{P2P_PORT}",
                    Ipv4Addr::new(10, 214, k, 10 + p as u8)
                ));
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let id = last_line(&weft(&argv)?);
            // The lab's addresses are not loopback, and its network is
            // closed: its nodes serve plain HTTP on purpose.
            let config = node_dir.join("weft.toml");
            // The suite posts its hostile corpus to one node's API from one
            // address: no update rate limit.
            let text = std::fs::read_to_string(&config)?
                .replace("api_insecure = false", "api_insecure = true")
                .replace("api_updates_per_minute = 120", "api_updates_per_minute = 0");
            std::fs::write(&config, text)?;
            if !spec.uncertified.contains(&i) {
                weft(&[
                    "node",
                    "certify",
                    "--key",
                    &s(&lab.alice_key),
                    "--dir",
                    &s(&node_dir),
                ])?;
            }
            lab.nodes.push(LabNode {
                ns,
                ip: node_ip,
                log: base.join(format!("n{i}.log")),
                dir: node_dir,
                id,
                child: None,
            });
        }
        let _ = bin;
        Ok(lab)
    }

    /// Starts every node and waits until each answers `/healthz`.
    pub async fn start_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.spawn(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_healthy(i).await?;
        }
        Ok(())
    }

    /// Starts node `i`'s process (its logs are appended to its log file).
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let bin = weft_bin()?;
        let n = &mut self.nodes[i];
        ensure!(n.child.is_none(), "node {i} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &n.ns])
            .arg(bin)
            .args(["node", "run", "--dir"])
            .arg(&n.dir)
            .env(
                "RUST_LOG",
                std::env::var("WEFT_LAB_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        n.child = Some(child);
        Ok(())
    }

    /// Runs `weft node run` for node `i` in its namespace, in the
    /// foreground, and waits for it to exit (`timeout` at most, then it is
    /// killed and this fails): its exit code and stderr. For starts that
    /// must be refused; node `i` must not be running.
    pub fn run_foreground(&mut self, i: usize, timeout: Duration) -> Result<(i32, String)> {
        ensure!(!self.nodes[i].running(), "node {i} is running");
        let n = &self.nodes[i];
        let mut child = Command::new("ip")
            .args(["netns", "exec", &n.ns])
            .arg(weft_bin()?)
            .args(["node", "run", "--dir"])
            .arg(&n.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        let start = Instant::now();
        while child.try_wait()?.is_none() {
            if start.elapsed() > timeout {
                let _ = child.kill();
                let out = child.wait_with_output()?;
                bail!(
                    "node {i} did not exit within {timeout:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// A certified node identity outside the lab's nodes, made with the
    /// CLI (`weft node init`, then `weft node certify` by alice, valid for
    /// `expires` when given, like `5s`): its key and certificate bytes.
    pub fn identity(&self, name: &str, expires: Option<&str>) -> Result<(SecretKey, Vec<u8>)> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let dir = self.dir.path().join(name);
        weft(&[
            "node",
            "init",
            "--dir",
            &s(&dir),
            "--trust",
            &s(&self.trust),
        ])?;
        let mut certify = vec![
            "node".to_owned(),
            "certify".into(),
            "--key".into(),
            s(&self.alice_key),
            "--dir".into(),
            s(&dir),
        ];
        if let Some(e) = expires {
            certify.extend(["--expires".into(), e.to_owned()]);
        }
        weft(&certify.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok((
            weft_node::keyfile::read(&dir.join("node.key"))
                .map_err(|e| anyhow!("cannot read {name}'s key: {e}"))?,
            std::fs::read(dir.join("node.cert"))?,
        ))
    }

    /// Waits until node `i` answers `/healthz` (20 s at most).
    pub async fn wait_healthy(&mut self, i: usize) -> Result<()> {
        let url = format!("{}/healthz", self.nodes[i].url());
        let start = Instant::now();
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if !self.nodes[i].running() {
                bail!("node {i} exited at start:\n{}", self.log_tail(i));
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("node {i} did not answer /healthz:\n{}", self.log_tail(i));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// kill -9 node `i` and reaps it.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM to node `i`; waits for it to exit (10 s, then kill -9).
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while c.try_wait()?.is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    c.kill()?;
                    c.wait()?;
                    bail!("node {i} did not stop on SIGTERM within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    // -- faults ------------------------------------------------------------

    fn nft(&self, i: usize, cmd: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "exec", &self.nodes[i].ns, "nft", cmd]))?;
        Ok(())
    }

    /// Drops every packet `from` sends to `to` (one way).
    pub fn cut(&self, from: usize, to: usize) -> Result<()> {
        self.nft(
            to,
            &format!("add element inet weft cut {{ {} }}", self.nodes[from].ip),
        )
    }

    /// Lifts a [`Lab::cut`].
    pub fn uncut(&self, from: usize, to: usize) -> Result<()> {
        self.nft(
            to,
            &format!("delete element inet weft cut {{ {} }}", self.nodes[from].ip),
        )
    }

    /// Cuts every link between nodes of different groups, both ways.
    pub fn partition(&self, groups: &[&[usize]]) -> Result<()> {
        for (gi, g) in groups.iter().enumerate() {
            for (hi, h) in groups.iter().enumerate() {
                if gi == hi {
                    continue;
                }
                for &a in *g {
                    for &b in *h {
                        self.cut(a, b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Cuts node `i` off from every other node, both ways.
    pub fn isolate(&self, i: usize) -> Result<()> {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != i).collect();
        self.partition(&[&[i], &others])
    }

    /// Lifts every cut in the lab.
    pub fn heal_all(&self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.nft(i, "flush set inet weft cut")?;
        }
        Ok(())
    }

    /// Drops `permille`/1000 of the packets node `i` receives from other
    /// nodes (0 lifts it). The test's own API calls are never dropped.
    pub fn set_loss(&self, i: usize, permille: u32) -> Result<()> {
        self.nft(i, "flush chain inet weft loss")?;
        if permille > 0 {
            self.nft(
                i,
                &format!(
                    "add rule inet weft loss ip saddr != {} numgen random mod 1000 < {permille} drop",
                    self.bridge_ip
                ),
            )?;
        }
        Ok(())
    }

    /// Delays what node `i` sends to its peers by `ms` (`0` removes the
    /// delay): with `tc netem` when the kernel has it, otherwise with an
    /// NFQUEUE rule and a holding thread ([`crate::delay`]). Returns which.
    pub fn set_delay(&self, i: usize, ms: u32) -> Result<&'static str> {
        let mut delays = self.delays.lock().unwrap_or_else(|e| e.into_inner());
        delays.remove(&i);
        if ms == 0 {
            let _ = self.netem(i, 0);
            return Ok("none");
        }
        if self.netem(i, ms).is_ok() {
            return Ok("netem");
        }
        let d = crate::delay::Delay::start(
            &self.nodes[i].ns,
            Duration::from_millis(u64::from(ms)),
            self.bridge_ip,
        )?;
        delays.insert(i, d);
        Ok("nfqueue")
    }

    /// Packets node `i`'s NFQUEUE delay has let through so far (0 under
    /// netem or without a delay).
    pub fn delayed_packets(&self, i: usize) -> u64 {
        let delays = self.delays.lock().unwrap_or_else(|e| e.into_inner());
        delays.get(&i).map_or(0, crate::delay::Delay::delayed)
    }

    fn netem(&self, i: usize, ms: u32) -> Result<()> {
        let ns = &self.nodes[i].ns;
        if ms == 0 {
            let _ = run(Command::new("ip").args([
                "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
            ]));
            return Ok(());
        }
        run(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "netem",
            "delay",
            &format!("{ms}ms"),
        ]))
        .context("tc netem is unavailable in this kernel")?;
        Ok(())
    }

    /// Whether this kernel has `tc netem`.
    pub fn has_netem(&self) -> bool {
        let ok = self.netem(0, 1).is_ok();
        let _ = self.netem(0, 0);
        ok
    }

    // -- HTTP --------------------------------------------------------------

    /// The HTTP client the lab uses.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET /v1/status` of node `i`.
    pub async fn status(&self, i: usize) -> Result<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/v1/status", self.nodes[i].url()))
            .send()
            .await?;
        ensure!(r.status() == 200, "status answered {}", r.status());
        Ok(r.json().await?)
    }

    /// Node `i`'s heads, sorted.
    pub async fn heads(&self, i: usize) -> Result<Vec<String>> {
        let s = self.status(i).await?;
        let mut h: Vec<String> = s["heads"]
            .as_array()
            .context("no heads")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        h.sort();
        Ok(h)
    }

    /// How many peers node `i` has admitted.
    pub async fn admitted(&self, i: usize) -> Result<usize> {
        let s = self.status(i).await?;
        Ok(s["peers"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["admitted"] == true).count())
            .unwrap_or(0))
    }

    /// Waits until every node has admitted at least `min` peers.
    pub async fn wait_admitted(&self, min: usize, timeout: Duration) -> Result<Duration> {
        let n = self.nodes.len();
        eventually(timeout, "every node to admit its peers", || async move {
            for i in 0..n {
                if self.admitted(i).await? < min {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }

    /// `POST /v1/updates` of `bytes` to node `i`: status code and body.
    pub async fn submit(&self, i: usize, bytes: Vec<u8>) -> Result<(u16, serde_json::Value)> {
        let r = self
            .http
            .post(format!("{}/v1/updates", self.nodes[i].url()))
            .body(bytes)
            .send()
            .await?;
        let code = r.status().as_u16();
        let text = r.text().await?;
        let body = serde_json::from_str(&text)
            .with_context(|| format!("the answer ({code}) is not JSON: {text:?}"))?;
        Ok((code, body))
    }

    /// `POST /v1/authorize` on node `i` for `principal` doing `action` on
    /// `resource`; the decision's JSON.
    pub async fn authorize(
        &self,
        i: usize,
        principal: &str,
        action: &str,
        resource: &str,
    ) -> Result<serde_json::Value> {
        let r = self
            .http
            .post(format!("{}/v1/authorize", self.nodes[i].url()))
            .json(&serde_json::json!({
                "principal": principal, "action": action, "resource": resource,
            }))
            .send()
            .await?;
        ensure!(r.status() == 200, "authorize answered {}", r.status());
        Ok(r.json().await?)
    }

    /// Whether node `i` allows `principal` to view `Doc::"d"`.
    pub async fn allows(&self, i: usize, principal: &str) -> Result<bool> {
        let d = self
            .authorize(i, principal, r#"Action::"view""#, r#"Doc::"d""#)
            .await?;
        Ok(d["decision"] == "allow")
    }

    /// `GET /v1/state` of node `i`, raw.
    pub async fn state(&self, i: usize) -> Result<Vec<u8>> {
        let r = self
            .http
            .get(format!("{}/v1/state", self.nodes[i].url()))
            .send()
            .await?;
        ensure!(r.status() == 200, "state answered {}", r.status());
        Ok(r.bytes().await?.to_vec())
    }

    /// Which of `ids` node `i`'s document does not hold.
    pub async fn holds(&self, i: usize, ids: &[String]) -> Result<Vec<String>> {
        let export = weft_protocol::export::StateExport::from_bytes(&self.state(i).await?)?;
        let doc = weft_crdt::PolicyDoc::load(&export.doc)?;
        let held: std::collections::BTreeSet<String> = doc
            .automerge()
            .get_changes_meta(&[])
            .iter()
            .map(|m| m.hash.to_string())
            .collect();
        Ok(ids
            .iter()
            .filter(|id| !held.contains(*id))
            .cloned()
            .collect())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.delays
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for ns in &self.namespaces {
            if let Ok(pids) = ip(&["netns", "pids", ns]) {
                for p in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", p]).status();
                }
            }
            let _ = ip(&["netns", "del", ns]);
        }
        // Deleting a namespace does not always take its veth pair with it
        // at once (sockets of the killed nodes can hold it for a while).
        for v in &self.veths {
            let _ = ip(&["link", "del", v]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        if std::env::var_os("WEFT_LAB_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"));
            eprintln!("lab files kept in {}", kept.keep().display());
        }
    }
}

/// Loads an nftables script into namespace `ns`.
pub(crate) fn nft_load(ns: &str, script: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (install nftables)")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "nft failed in {ns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A free `10.214.K.0/24` for a new lab's bridge.
fn free_subnet() -> Result<u8> {
    let addrs = ip(&["-o", "-4", "addr", "show"])?;
    (1..=250u8)
        .find(|k| !addrs.contains(&format!("10.214.{k}.")))
        .context("no free 10.214.K.0/24 subnet for the lab")
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns
/// how long it took.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what} (last error: {e:#})")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
