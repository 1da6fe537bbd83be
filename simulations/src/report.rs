//! The report of a run: `report.json` and two SVG plots beside it.
//!
//! Everything in the report is a function of the scenario and the seed (no
//! wall-clock times), so two runs give the same bytes.
//!
//! Definitions:
//! - **Propagation latency**: for each operator update and each honest node
//!   other than the one it was submitted to, the virtual time from the submit
//!   to the node's first `Applied` of it (by gossip or by sync). Nodes that
//!   never applied it are not samples; they show in the reach.
//! - **Reach at t**: the fraction of (update, honest node other than its
//!   origin) pairs applied within t of the submit.
//! - **Amplification**: payload copies sent on the wire (gossip messages,
//!   IWANT answers and updates in sync responses) per first delivery. 1 is
//!   the floor: every node got each update exactly once.
//! - **Converged after a heal**: the first sample (every 50 ms) at which every
//!   live honest node holds the same heads.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::SimError;
use crate::check::Invariant;
use crate::scenario::Mode;

/// Propagation latency percentiles, ms.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// 99.99th percentile.
    pub p9999_ms: u64,
    /// Maximum.
    pub max_ms: u64,
    /// Samples.
    pub samples: u64,
}

/// A heal and how long convergence took after it.
#[derive(Clone, Debug, Serialize)]
pub struct Heal {
    /// When, ms.
    pub at_ms: u64,
    /// What healed.
    pub what: String,
    /// Time from the heal to every live honest node holding the same heads,
    /// ms; `null` if that never happened.
    pub converged_after_ms: Option<u64>,
}

/// Traffic figures.
#[derive(Clone, Debug, Serialize)]
pub struct Traffic {
    /// Bytes sent by all nodes.
    pub bytes_total: u64,
    /// Bytes sent per node.
    pub bytes_per_node: u64,
    /// Messages sent.
    pub messages: u64,
    /// Lost to `loss`.
    pub lost: u64,
    /// Dropped by a partition.
    pub partitioned: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Payload copies sent (gossip, IWANT answers, sync).
    pub payload_copies: u64,
    /// Of which gossip: eager pushes to mesh peers and a publisher's own
    /// updates to its peers.
    pub copies_gossip: u64,
    /// Of which answers to IWANT.
    pub copies_iwant: u64,
    /// Of which updates in sync responses.
    pub copies_sync: u64,
    /// First deliveries of updates to honest nodes.
    pub first_deliveries: u64,
    /// `payload_copies / first_deliveries`.
    pub amplification: f64,
    /// Gossip duplicates dropped by the receiver's seen cache.
    pub duplicates_dropped: u64,
    /// IDONTWANT messages sent (gossipsub 1.2; only for messages above
    /// `idontwant_threshold`).
    pub idontwant_sent: u64,
    /// Gossip messages the replicas rejected (forged or malformed).
    pub rejected: u64,
    /// Oversized frames refused by the transport.
    pub oversized_refused: u64,
    /// Strikes against peers short of a ban.
    pub penalties: u64,
    /// Bans.
    pub bans: u64,
    /// Crashes.
    pub crashes: u64,
    /// Bad messages Byzantine nodes sent (each to all their peers).
    pub forged_sent: u64,
}

/// The report of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Payload mode.
    pub mode: Mode,
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Of which Byzantine.
    pub byzantine: usize,
    /// The scenario's duration, ms.
    pub duration_ms: u64,
    /// Virtual time at the end (after the quiet period), ms.
    pub simulated_ms: u64,
    /// Events handled.
    pub events: u64,
    /// A digest of every event handled, in order, and every update applied.
    pub trace_digest: String,
    /// Operator updates submitted.
    pub updates: u64,
    /// Propagation latency.
    pub latency: Latency,
    /// Time from an update's submit until every honest node had applied it,
    /// across the updates that got there (rank ⌊(n−1)·q⌋, as the loopback
    /// benchmark of BENCHMARKS.md's Propagation section).
    pub to_all: Latency,
    /// Reach within 1.5 s.
    pub reach_within_1500ms: f64,
    /// Reach within 1.5 s of the updates submitted while no partition was
    /// active and every honest node was up (what the network can do, not
    /// what a partition prevents).
    pub reach_within_1500ms_connected: f64,
    /// Reach over time since submit: (ms, fraction), every 50 ms up to 10 s.
    pub reach: Vec<(u64, f64)>,
    /// The latency CDF: (ms, fraction), by percentile.
    pub latency_cdf: Vec<(u64, f64)>,
    /// Heals, with the time to converge after each.
    pub heals: Vec<Heal>,
    /// Traffic.
    pub traffic: Traffic,
    /// Pass or fail per invariant.
    pub invariants: Vec<Invariant>,
    /// Whether every invariant held.
    pub passed: bool,
    /// The command that replays this run.
    pub replay: String,
}

impl Report {
    pub(crate) fn with_replay(mut self) -> Self {
        self.replay = format!(
            "weft sim --nodes {} --seed {} --scenario {}",
            self.nodes, self.seed, self.scenario
        );
        self
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// Writes `report.json`, `reach.svg` and `latency_cdf.svg` into `dir`.
    pub fn write_dir(&self, dir: &Path) -> Result<(), SimError> {
        let err = |p: &Path, e: &dyn std::fmt::Display| SimError::Report {
            path: p.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
        let json = dir.join("report.json");
        std::fs::write(&json, self.to_json() + "\n").map_err(|e| err(&json, &e))?;
        let reach = dir.join("reach.svg");
        plot(
            &reach,
            &format!(
                "Reach over time ({}, {} nodes, seed {})",
                self.scenario, self.nodes, self.seed
            ),
            "ms since submit",
            "fraction of nodes reached",
            &self.reach,
        )
        .map_err(|e| err(&reach, &e))?;
        let cdf = dir.join("latency_cdf.svg");
        plot(
            &cdf,
            &format!(
                "Propagation latency CDF ({}, {} nodes)",
                self.scenario, self.nodes
            ),
            "latency, ms",
            "fraction of deliveries",
            &self.latency_cdf,
        )
        .map_err(|e| err(&cdf, &e))?;
        Ok(())
    }
}

fn plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(u64, f64)],
) -> Result<(), String> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let x_max = points.iter().map(|p| p.0).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0u64..x_max, 0f64..1.02f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
