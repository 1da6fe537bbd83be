//! The simulator's goals from issue #6, measured: wall time and peak memory
//! of a 10,000-node light hour, reach, amplification and convergence at a
//! 50 ms delay with 10% loss, and the 50-node model check against the
//! loopback measurement.
//!
//! `cargo run --release -p weft-simulations --example goals -- [hour|wan|model|all] [SEED] [ROW]`

use std::time::Instant;

/// The allocator the `weft` binary uses, so the figures are the CLI's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use weft_simulations::scenario::{Fault, FaultKind, GossipConfig, LossModel, Shape};
use weft_simulations::{Mode, Report, Scenario, run_scenario};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn partition(at: u64, until: u64) -> Fault {
    Scenario::from_toml(&format!(
        "name = \"x\"\n[[fault]]\nkind = \"partition\"\nshape = \"halves\"\nat = {at}\nuntil = {until}\n"
    ))
    .expect("a partition parses")
    .faults
    .remove(0)
}

/// User + system CPU time of this process so far, s (`/proc/self/stat`,
/// in clock ticks of 1/100 s). On a shared machine this is steadier than
/// the wall time.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn show(label: &str, r: &Report, wall: f64, cpu: f64) {
    println!("== {label}");
    println!(
        "   nodes {} mode {:?} seed {} updates {} events {} simulated {:.0} s wall {:.1} s CPU {:.1} s peak RSS {:.0} MiB",
        r.nodes,
        r.mode,
        r.seed,
        r.updates,
        r.events,
        r.simulated_ms as f64 / 1000.0,
        wall,
        cpu,
        peak_rss_mib()
    );
    println!(
        "   per node: p50 {} p99 {} p99.99 {} max {} ms; to all nodes: p50 {} p99 {} max {} ms ({} of {} updates reached all)",
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p9999_ms,
        r.latency.max_ms,
        r.to_all.p50_ms,
        r.to_all.p99_ms,
        r.to_all.max_ms,
        r.to_all.samples,
        r.updates
    );
    println!(
        "   reach within 1.5 s {:.6} (of updates submitted while connected: {:.6}); amplification {:.2}x; bytes/node {}; IDONTWANT sent {}",
        r.reach_within_1500ms,
        r.reach_within_1500ms_connected,
        r.traffic.amplification,
        r.traffic.bytes_per_node,
        r.traffic.idontwant_sent
    );
    println!(
        "   payload copies {}: gossip {}, IWANT answers {}, sync {}; first deliveries {}",
        r.traffic.payload_copies,
        r.traffic.copies_gossip,
        r.traffic.copies_iwant,
        r.traffic.copies_sync,
        r.traffic.first_deliveries
    );
    for h in &r.heals {
        println!(
            "   heal at {} ms ({}): converged after {:?} ms",
            h.at_ms, h.what, h.converged_after_ms
        );
    }
    let inv: Vec<String> = r
        .invariants
        .iter()
        .map(|i| format!("{} {}", i.name, if i.pass { "pass" } else { "FAIL" }))
        .collect();
    println!("   {}", inv.join(", "));
}

fn run(label: &str, s: &Scenario, seed: u64) -> Result<Report> {
    let (t, cpu) = (Instant::now(), cpu_s());
    let r = run_scenario(s, seed, &mut |_| {})?;
    show(label, &r, t.elapsed().as_secs_f64(), cpu_s() - cpu);
    Ok(r)
}

fn base(name: &str, nodes: usize) -> Scenario {
    let mut s = Scenario::from_toml(&format!("name = \"{name}\"")).expect("defaults parse");
    s.nodes = nodes;
    s.mode = Mode::Light;
    s
}

fn hour(seed: u64) -> Result<()> {
    let mut s = base("goal-hour", 10_000);
    s.duration = 3_600_000;
    s.workload.interval = 10_000;
    s.network.latency = 50;
    s.network.jitter = 10;
    s.faults = vec![partition(1_200_000, 1_800_000)];
    run(
        "10,000 nodes, light, one simulated hour, an update every 10 s, split-brain 20-30 min",
        &s,
        seed,
    )?;
    Ok(())
}

fn wan(seed: u64, only: Option<usize>) -> Result<()> {
    /// One row: loss model, D / D_low / D_high, IDONTWANT threshold,
    /// anonymous envelope, `history_gossip` / `gossip_lazy`.
    type Row = (
        LossModel,
        (usize, usize, usize),
        usize,
        bool,
        (usize, usize),
    );
    let node = GossipConfig::default();
    let d = (node.d, node.d_low, node.d_high);
    let lazy = (node.history_gossip, node.d_lazy);
    let rows: [Row; 10] = [
        // The node's configuration.
        (LossModel::Retransmit, d, 1_000, true, lazy),
        (LossModel::Drop, d, 1_000, true, lazy),
        // The node's configuration before: D = 4/2/8, libp2p's lazy gossip.
        (LossModel::Retransmit, (4, 2, 8), 1_000, true, (3, 6)),
        (LossModel::Drop, (4, 2, 8), 1_000, true, (3, 6)),
        // The first: D = 6/2/12, a signed envelope, libp2p's lazy gossip.
        (LossModel::Retransmit, (6, 2, 12), 1_000, false, (3, 6)),
        // D_high 8: hubs prune more often.
        (LossModel::Retransmit, (3, 1, 8), 1_000, true, lazy),
        // IHAVE for three heartbeats.
        (LossModel::Retransmit, d, 1_000, true, (3, 6)),
        // A smaller mesh still.
        (LossModel::Retransmit, (2, 1, 8), 1_000, true, lazy),
        // Grafting while below 2 peers.
        (LossModel::Retransmit, (3, 2, 12), 1_000, true, lazy),
        // IDONTWANT for every message, which the node's configuration never
        // sends for updates this small.
        (LossModel::Retransmit, d, 0, true, lazy),
    ];
    for (row, (model, d, idontwant, anonymous, (history, d_lazy))) in rows.into_iter().enumerate() {
        if only.is_some_and(|o| o != row + 1) {
            continue;
        }
        let mut s = base("goal-wan", 10_000);
        s.duration = 300_000;
        s.workload.interval = 5_000;
        s.network.latency = 50;
        s.network.jitter = 0;
        s.network.link_spread = 0.0;
        s.network.loss = 0.10;
        s.network.loss_model = model;
        (s.gossip.d, s.gossip.d_low, s.gossip.d_high) = d;
        s.gossip.idontwant_threshold = idontwant;
        s.gossip.anonymous = anonymous;
        (s.gossip.history_gossip, s.gossip.d_lazy) = (history, d_lazy);
        s.faults = vec![partition(100_000, 200_000)];
        run(
            &format!(
                "50 ms one-way, 10% loss ({model:?}), D={}/{}/{}, IDONTWANT above {idontwant} bytes, {} envelope, history_gossip {history}, gossip_lazy {d_lazy}, split-brain 100-200 s",
                d.0,
                d.1,
                d.2,
                if anonymous { "anonymous" } else { "signed" }
            ),
            &s,
            seed,
        )?;
    }
    Ok(())
}

fn model(seed: u64) -> Result<()> {
    // BENCHMARKS.md, Propagation: 50 nodes on loopback, each holding about
    // `discovery_peers` (8) peers, 30 revocations 200 ms apart, timed until
    // every node holds it.
    for processing in [0, 1] {
        let mut s = base("model-check", 50);
        s.mode = Mode::Full;
        s.duration = 9_000;
        s.workload.start = 3_000;
        s.workload.interval = 200;
        s.workload.revoke_fraction = 1.0;
        s.workload.subjects = 1_000;
        s.network.latency = 0;
        s.network.jitter = 0;
        s.network.processing = processing;
        // The bench gives each node 3 earlier nodes and discovery finds
        // more, up to `discovery_peers` (8): the scenario's default.
        run(
            &format!(
                "model check: 50 nodes, full mode, loopback (1 ms resolution), processing {processing} ms per message"
            ),
            &s,
            seed,
        )?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("all");
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    // `wan SEED ROW` runs one row of the table (1 to 10).
    let row = args.get(3).and_then(|s| s.parse().ok());
    let _ = (FaultKind::Partition, Shape::Halves);
    match which {
        "hour" => hour(seed),
        "wan" => wan(seed, row),
        "model" => model(seed),
        _ => {
            model(seed)?;
            wan(seed, None)?;
            hour(seed)
        }
    }
}
