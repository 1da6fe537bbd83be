//! `weft sim`: runs a scenario of the deterministic simulator
//! (`weft-simulations`) and reports on it.
//!
//! This module only parses arguments, shows progress and prints; the
//! simulation itself is the simulations crate's.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::json;
use weft_simulations::scenario::{BUILTIN, parse_ms};
use weft_simulations::{Mode, Progress, Report, Scenario, run_scenario};

/// Arguments of `weft sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// How many nodes to simulate (default: the scenario's).
    #[arg(long, value_name = "N")]
    pub nodes: Option<usize>,
    /// The seed of every random choice in the run.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// A built-in scenario (see --list) or a scenario TOML file.
    #[arg(long, value_name = "NAME|FILE", required_unless_present = "list")]
    pub scenario: Option<String>,
    /// How long updates and faults run, like 90s or 1h (default: the scenario's).
    #[arg(long, value_name = "D")]
    pub duration: Option<String>,
    /// Payload mode: full (real automerge and signatures) or light (signed ids, for 10,000+ nodes).
    #[arg(long, value_name = "MODE", value_parser = ["full", "light"])]
    pub mode: Option<String>,
    /// Write report.json, reach.svg and latency_cdf.svg into DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// List the built-in scenarios.
    #[arg(long, conflicts_with_all = ["scenario", "nodes", "duration", "report", "mode"])]
    pub list: bool,
}

/// Runs `weft sim`.
pub fn sim(args: SimArgs) -> Result<ExitCode> {
    if args.list {
        return list(args.json);
    }
    let name = args.scenario.clone().context("--scenario is required")?;
    let mut scenario = Scenario::load(&name)?;
    if let Some(n) = args.nodes {
        scenario.nodes = n;
    }
    if let Some(d) = &args.duration {
        scenario.duration = parse_ms(d).map_err(anyhow::Error::msg)?;
    }
    if let Some(m) = &args.mode {
        scenario.mode = if m == "light" {
            Mode::Light
        } else {
            Mode::Full
        };
    }
    scenario.validate()?;
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(scenario.duration + scenario.quiet);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} simulated {msg} [{bar:40}] {percent}% ({elapsed} wall)",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let started = Instant::now();
    let mut on_progress = |p: Progress| {
        if let Some(bar) = &bar {
            bar.set_length(p.end_ms);
            bar.set_position(p.now_ms);
            bar.set_message(format!("{:.1} s", p.now_ms as f64 / 1000.0));
        }
    };
    let mut report = run_scenario(&scenario, args.seed, &mut on_progress)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let wall = started.elapsed();
    report.replay = replay_command(&args, &name, &scenario);
    if let Some(dir) = &args.report {
        report.write_dir(dir)?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print_text(&report, wall.as_secs_f64(), args.report.as_ref());
    }
    if report.passed {
        return Ok(ExitCode::SUCCESS);
    }
    let failed: Vec<&str> = report
        .invariants
        .iter()
        .filter(|i| !i.pass)
        .map(|i| i.name.as_str())
        .collect();
    eprintln!(
        "error: invariant(s) failed: {} (seed {}); replay with: {}",
        failed.join(", "),
        report.seed,
        report.replay
    );
    Ok(ExitCode::from(1))
}

fn replay_command(args: &SimArgs, name: &str, scenario: &Scenario) -> String {
    let mut cmd = format!(
        "weft sim --nodes {} --seed {} --scenario {}",
        scenario.nodes, args.seed, name
    );
    if let Some(d) = &args.duration {
        cmd.push_str(&format!(" --duration {d}"));
    }
    if let Some(m) = &args.mode {
        cmd.push_str(&format!(" --mode {m}"));
    }
    cmd
}

fn list(as_json: bool) -> Result<ExitCode> {
    let all = Scenario::builtins();
    if as_json {
        let v: Vec<_> = all
            .iter()
            .map(|s| {
                json!({"name": s.name, "description": s.description, "nodes": s.nodes,
                       "mode": s.mode, "duration_ms": s.duration})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for s in &all {
            println!("{:<14} {}", s.name, s.description);
        }
    }
    debug_assert_eq!(all.len(), BUILTIN.len());
    Ok(ExitCode::SUCCESS)
}

fn print_text(r: &Report, wall_s: f64, dir: Option<&PathBuf>) {
    let mode = match r.mode {
        Mode::Full => "full",
        Mode::Light => "light",
    };
    println!(
        "scenario {} ({mode} mode, {} nodes, {} Byzantine, seed {}): {} updates, {} events, {:.1} s simulated in {:.1} s",
        r.scenario,
        r.nodes,
        r.byzantine,
        r.seed,
        r.updates,
        r.events,
        r.simulated_ms as f64 / 1000.0,
        wall_s
    );
    println!(
        "propagation: p50 {} ms, p99 {} ms, p99.99 {} ms, max {} ms; reached within 1.5 s: {:.4}%",
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p9999_ms,
        r.latency.max_ms,
        r.reach_within_1500ms * 100.0
    );
    for h in &r.heals {
        match h.converged_after_ms {
            Some(ms) => println!(
                "heal at {:.1} s ({}): converged after {:.2} s",
                h.at_ms as f64 / 1000.0,
                h.what,
                ms as f64 / 1000.0
            ),
            None => println!(
                "heal at {:.1} s ({}): did not converge",
                h.at_ms as f64 / 1000.0,
                h.what
            ),
        }
    }
    println!(
        "traffic: {} bytes per node, amplification {:.2}x, {} rejected, {} bans",
        r.traffic.bytes_per_node, r.traffic.amplification, r.traffic.rejected, r.traffic.bans
    );
    for i in &r.invariants {
        println!(
            "  {:<13} {}  {}",
            i.name,
            if i.pass { "pass" } else { "FAIL" },
            i.detail
        );
    }
    if let Some(d) = dir {
        println!("report: {}", d.join("report.json").display());
    }
    println!("trace digest {}; replay: {}", r.trace_digest, r.replay);
}
