//! A lab of sites behind NAT: real `weft node run` processes in network
//! namespaces, each site's node behind its own router doing nftables
//! masquerade with no inbound rule, and reachable nodes (`relay = true`)
//! on the "internet" between them.
//!
//! # The network
//! ```text
//!                        root namespace: bridge 10.215.K.1/24 ("internet")
//!            ┌────────────────┬──────────────┴───┬──────────────────┐
//!   relay 0: 10.215.K.10   relay 1: .11     router 0: .100     router 1: .101 …
//!                                            │ masquerade          │
//!                                   10.216.K.1/28 (lan)     10.216.K.17/28
//!                                            │                     │
//!                                   site 0: 10.216.K.2      site 1: 10.216.K.18 …
//! ```
//! - A relay's namespace has one interface on the bridge and no default
//!   route: it reaches the routers and the other relays, never a site's
//!   private network.
//! - A router forwards what its site sends out (masquerade: the source
//!   becomes the router's address, the port kept when it is free) and the
//!   replies to it (conntrack), and drops everything else that arrives on
//!   its WAN side, forwarded or for itself: no port forward, no inbound
//!   rule, like a home or office NAT. The one exception is the test
//!   process: the root namespace (10.215.K.1) may reach a site node's API
//!   port (7100), through a route to each site's network, so the test
//!   reads every node's `/v1/status` and pushes updates to it.
//! - A site node's default route is its router. It listens on its private
//!   address (TCP and QUIC, port 7101), which the other sites cannot reach.
//!
//! # Cleanup
//! As [`crate::netns::Lab`]: namespaces and links carry the test process's
//! pid, [`Drop`] kills and removes everything, and a new lab first removes
//! what dead test processes left. Labs of both kinds run one at a time.
//! Without root, iproute2 or nftables, creating a lab fails: the suite
//! fails, it never skips.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use tempfile::TempDir;

use crate::netns::{
    API_PORT, LINK_PREFIX, NS_PREFIX, P2P_PORT, clean_stale, ip, last_line, next_tag, nft_load,
    serial, weft, weft_bin,
};

/// How to build a NAT lab.
#[derive(Clone, Debug)]
pub struct NatSpec {
    /// Reachable nodes on the internet segment, each with `relay = true`.
    pub relays: usize,
    /// The relay each site's node is given as its only `--peer`; its
    /// length is the number of sites.
    pub site_relay: Vec<usize>,
}

/// One node of a NAT lab: a relay or a site's node.
pub struct NatNode {
    /// `relay-J` or `site-S`.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address: on the internet for a relay, private for a site.
    pub ip: Ipv4Addr,
    /// Its directory.
    pub dir: PathBuf,
    /// Its node id.
    pub id: String,
    /// Where its process writes its logs.
    pub log: PathBuf,
    child: Option<Child>,
}

impl NatNode {
    /// The base URL of its API.
    pub fn url(&self) -> String {
        format!("http://{}:{API_PORT}", self.ip)
    }

    /// Its libp2p TCP address.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{P2P_PORT}", self.ip)
    }
}

/// A site's router.
pub struct Router {
    /// Its namespace.
    pub ns: String,
    /// Its address on the internet: what the site is seen as.
    pub wan: Ipv4Addr,
}

/// A running NAT lab. Nodes `0..relays` are the relays, then one node per
/// site; alice (every role) signs the trust root's updates. Dropping it
/// kills and removes everything.
pub struct NatLab {
    /// Relays first, then sites.
    pub nodes: Vec<NatNode>,
    /// One per site.
    pub routers: Vec<Router>,
    /// How many of `nodes` are relays.
    pub relays: usize,
    /// Files: keys, trust root, node directories, logs.
    pub dir: TempDir,
    /// alice's key file (every role).
    pub alice_key: PathBuf,
    /// The bridge's address: the test process, on the internet.
    pub bridge_ip: Ipv4Addr,
    bridge: String,
    namespaces: Vec<String>,
    veths: Vec<String>,
    http: reqwest::Client,
    _serial: MutexGuard<'static, ()>,
}

/// The router of every site drops what arrives on its WAN side unless it
/// belongs to a connection from inside (or is the test's API call):
/// masquerade, no inbound rule.
fn router_rules(test_host: Ipv4Addr) -> String {
    format!(
        "table ip nat {{\n\
           chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             oifname \"wan\" masquerade\n\
           }}\n\
         }}\n\
         table inet filter {{\n\
           chain forward {{ type filter hook forward priority filter; policy drop;\n\
             ct state established,related accept\n\
             iifname \"lan\" oifname \"wan\" accept\n\
             iifname \"wan\" ip saddr {test_host} tcp dport {API_PORT} accept\n\
           }}\n\
           chain input {{ type filter hook input priority filter; policy accept;\n\
             iifname \"wan\" ct state established,related accept\n\
             iifname \"wan\" drop\n\
           }}\n\
         }}\n"
    )
}

impl NatLab {
    /// Builds the network, the keys and the node directories (nothing runs
    /// yet: [`NatLab::start_all`]). Fails (never skips) when namespaces
    /// cannot be made.
    pub fn new(spec: NatSpec) -> Result<NatLab> {
        let serial = serial();
        let sites = spec.site_relay.len();
        ensure!(
            spec.relays >= 1 && spec.relays <= 40 && sites <= 15,
            "a NAT lab has 1 to 40 relays and at most 15 sites"
        );
        ensure!(
            spec.site_relay.iter().all(|r| *r < spec.relays),
            "each site is given one of the relays"
        );
        weft_bin()?;
        clean_stale().context(
            "network namespaces are unavailable: the NAT suite needs root, iproute2 and nftables",
        )?;
        let (tag, seq) = next_tag();
        let dir = tempfile::Builder::new().prefix("weft-nat-").tempdir()?;
        let k = free_subnet()?;
        let bridge_ip = Ipv4Addr::new(10, 215, k, 1);
        let mut lab = NatLab {
            nodes: Vec::new(),
            routers: Vec::new(),
            relays: spec.relays,
            alice_key: dir.path().join("alice.key"),
            dir,
            bridge_ip,
            bridge: format!("{LINK_PREFIX}b{tag}"),
            namespaces: Vec::new(),
            veths: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            _serial: serial,
        };
        ip(&["link", "add", &lab.bridge, "type", "bridge"]).context(
            "network namespaces are unavailable: the NAT suite needs root, iproute2 and nftables",
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
        let root_key = base.join("root.key");
        let trust = base.join("trust.json");
        weft(&["key", "gen", "--out", &s(&root_key)])?;
        let alice_pub = last_line(&weft(&["key", "gen", "--out", &s(&lab.alice_key)])?);
        weft(&[
            "trust",
            "init",
            "--root-key",
            &s(&root_key),
            "--operator",
            &format!("alice={alice_pub}"),
            "--expires",
            "1d",
            "--out",
            &s(&trust),
        ])?;

        // A namespace with one end of a veth pair on the bridge (named
        // `inner` inside), holding `addr`/24.
        let on_internet = |lab: &mut NatLab, name: &str, inner: &str, addr: Ipv4Addr| {
            let ns = format!("{NS_PREFIX}{}-{seq}-{name}", std::process::id());
            ip(&["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            let veth = format!("{LINK_PREFIX}v{tag}x{}", lab.veths.len());
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", inner, "netns", &ns,
            ])?;
            lab.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &lab.bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                inner,
            ])?;
            ip(&["-n", &ns, "link", "set", inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            anyhow::Ok(ns)
        };

        for j in 0..spec.relays {
            let addr = Ipv4Addr::new(10, 215, k, 10 + j as u8);
            let ns = on_internet(&mut lab, &format!("r{j}"), "eth0", addr)?;
            let peers = if j == 0 {
                Vec::new()
            } else {
                vec![lab.nodes[0].multiaddr()]
            };
            let node = lab.init_node(&format!("relay-{j}"), ns, addr, &peers, true, &trust)?;
            lab.nodes.push(node);
        }
        for (site, relay) in spec.site_relay.iter().enumerate() {
            let wan = Ipv4Addr::new(10, 215, k, 100 + site as u8);
            let gw_ns = on_internet(&mut lab, &format!("g{site}"), "wan", wan)?;
            let net = 16 * site as u8;
            let gw_lan = Ipv4Addr::new(10, 216, k, net + 1);
            let node_ip = Ipv4Addr::new(10, 216, k, net + 2);
            let ns = format!("{NS_PREFIX}{}-{seq}-s{site}", std::process::id());
            ip(&["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            ip(&[
                "-n", &gw_ns, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&[
                "-n",
                &gw_ns,
                "addr",
                "add",
                &format!("{gw_lan}/28"),
                "dev",
                "lan",
            ])?;
            ip(&["-n", &gw_ns, "link", "set", "lan", "up"])?;
            crate::netns::run(Command::new("ip").args([
                "netns",
                "exec",
                &gw_ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]))?;
            nft_load(&gw_ns, &router_rules(bridge_ip))?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{node_ip}/28"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &gw_lan.to_string(),
            ])?;
            // The test process reaches the site's API through its router.
            ip(&[
                "route",
                "add",
                &format!("10.216.{k}.{net}/28"),
                "via",
                &wan.to_string(),
            ])?;
            lab.routers.push(Router { ns: gw_ns, wan });
            let peers = vec![lab.nodes[*relay].multiaddr()];
            let node =
                lab.init_node(&format!("site-{site}"), ns, node_ip, &peers, false, &trust)?;
            lab.nodes.push(node);
        }
        Ok(lab)
    }

    /// `weft node init` and `weft node certify` for one node, its
    /// weft.toml set for the lab: TCP and QUIC on port 7101 of `addr`, the
    /// API on 7100 (plain HTTP on purpose: the lab's network is closed),
    /// and `relay` as given.
    fn init_node(
        &self,
        name: &str,
        ns: String,
        addr: Ipv4Addr,
        peers: &[String],
        relay: bool,
        trust: &Path,
    ) -> Result<NatNode> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let dir = self.dir.path().join(name);
        let mut args: Vec<String> = vec![
            "node".into(),
            "init".into(),
            "--dir".into(),
            s(&dir),
            "--trust".into(),
            s(trust),
            "--listen".into(),
            format!("/ip4/{addr}/tcp/{P2P_PORT}"),
            "--api".into(),
            format!("{addr}:{API_PORT}"),
        ];
        for p in peers {
            args.push("--peer".into());
            args.push(p.clone());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = last_line(&weft(&argv)?);
        let config = dir.join("weft.toml");
        let text = std::fs::read_to_string(&config)?
            .replace("api_insecure = false", "api_insecure = true")
            .replace("api_updates_per_minute = 120", "api_updates_per_minute = 0")
            .replace(
                "listen_quic = \"\"",
                &format!("listen_quic = \"/ip4/{addr}/udp/{P2P_PORT}/quic-v1\""),
            )
            .replace("relay = false", &format!("relay = {relay}"));
        ensure!(
            text.contains(&format!("relay = {relay}")) && text.contains("quic-v1\""),
            "weft.toml no longer has the keys the NAT lab sets"
        );
        std::fs::write(&config, text)?;
        weft(&[
            "node",
            "certify",
            "--key",
            &s(&self.alice_key),
            "--dir",
            &s(&dir),
        ])?;
        Ok(NatNode {
            name: name.to_owned(),
            ns,
            ip: addr,
            log: self.dir.path().join(format!("{name}.log")),
            dir,
            id,
            child: None,
        })
    }

    /// The indices of the sites' nodes.
    pub fn sites(&self) -> std::ops::Range<usize> {
        self.relays..self.nodes.len()
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

    /// Starts node `i`'s process (logs appended to its log file;
    /// `WEFT_LAB_LOG` sets its `RUST_LOG`, `info` by default).
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
            .with_context(|| format!("cannot start {}", n.name))?;
        n.child = Some(child);
        Ok(())
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
            let running = match &mut self.nodes[i].child {
                Some(c) => matches!(c.try_wait(), Ok(None)),
                None => false,
            };
            if !running {
                bail!(
                    "{} exited at start:\n{}",
                    self.nodes[i].name,
                    self.log_tail(i)
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "{} did not answer /healthz:\n{}",
                    self.nodes[i].name,
                    self.log_tail(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9 node `i` and reaps it.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Whether node `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Node `i`'s log lines that contain `needle`.
    pub fn log_lines(&self, i: usize, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.nodes[i].log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// `GET /v1/status` of node `i`.
    pub async fn status(&self, i: usize) -> Result<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/v1/status", self.nodes[i].url()))
            .send()
            .await
            .with_context(|| format!("status of {}", self.nodes[i].name))?;
        ensure!(r.status() == 200, "status answered {}", r.status());
        Ok(r.json().await?)
    }

    /// The node ids node `i` has admitted.
    pub async fn admitted(&self, i: usize) -> Result<BTreeSet<String>> {
        let s = self.status(i).await?;
        Ok(s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["admitted"] == true)
            .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Node `i`'s view of node `j` in its status (its entry in `peers`).
    pub async fn peer_entry(&self, i: usize, j: usize) -> Result<Option<serde_json::Value>> {
        let s = self.status(i).await?;
        Ok(s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["node_id"] == self.nodes[j].id.as_str())
            .cloned())
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

    /// Whether node `i` allows `principal` to view `Doc::"d"`.
    pub async fn allows(&self, i: usize, principal: &str) -> Result<bool> {
        let r = self
            .http
            .post(format!("{}/v1/authorize", self.nodes[i].url()))
            .json(&serde_json::json!({
                "principal": principal, "action": r#"Action::"view""#, "resource": r#"Doc::"d""#,
            }))
            .send()
            .await?;
        ensure!(r.status() == 200, "authorize answered {}", r.status());
        let d: serde_json::Value = r.json().await?;
        Ok(d["decision"] == "allow")
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
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
        for v in &self.veths {
            let _ = ip(&["link", "del", v]);
        }
        // The routes to the sites go with the bridge.
        let _ = ip(&["link", "del", &self.bridge]);
        if std::env::var_os("WEFT_LAB_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"));
            eprintln!("NAT lab files kept in {}", kept.keep().display());
        }
    }
}

/// A `K` such that neither `10.215.K.0/24` (the internet) nor
/// `10.216.K.0/24` (the sites) is in use on this host.
fn free_subnet() -> Result<u8> {
    let addrs = ip(&["-o", "-4", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show"])?;
    (1..=250u8)
        .find(|k| {
            !addrs.contains(&format!("10.215.{k}."))
                && !routes.contains(&format!("10.215.{k}."))
                && !routes.contains(&format!("10.216.{k}."))
        })
        .ok_or_else(|| anyhow!("no free 10.215.K.0/24 subnet for the NAT lab"))
}
