//! Trace digests and report hashes of a fixed set of runs: every built-in
//! scenario (light mode, 200 nodes, seeds 1 to 3; full mode, 12 nodes,
//! seed 1) and two larger light runs with a split and a heal. Two builds
//! that print the same lines run the same model, event for event.
//!
//! `cargo run --release -p weft-simulations --example digest [-- quick]`

use std::hash::{DefaultHasher, Hash, Hasher};

use anyhow::Result;
use weft_simulations::{Mode, Scenario, run_scenario};

fn line(label: &str, s: &Scenario, seed: u64) -> Result<()> {
    let r = run_scenario(s, seed, &mut |_| {})?;
    let mut h = DefaultHasher::new();
    r.to_json().hash(&mut h);
    println!(
        "{label:<40} seed {seed} events {:>9} trace {} report {:016x} passed {}",
        r.events,
        r.trace_digest,
        h.finish(),
        r.passed
    );
    for i in r.invariants.iter().filter(|i| !i.pass) {
        println!("    {} failed: {}", i.name, i.detail);
    }
    Ok(())
}

fn main() -> Result<()> {
    let quick = std::env::args().nth(1).as_deref() == Some("quick");
    for s in Scenario::builtins() {
        let mut light = s.clone();
        light.mode = Mode::Light;
        light.nodes = 200;
        for seed in 1..=3 {
            line(&format!("{} light 200", s.name), &light, seed)?;
        }
        let mut full = s.clone();
        full.mode = Mode::Full;
        full.nodes = 12;
        full.duration = full.duration.min(60_000);
        line(&format!("{} full 12", s.name), &full, 1)?;
    }
    if !quick {
        for (nodes, minutes) in [(2_000, 3), (10_000, 6)] {
            let mut s = Scenario::load("split-brain")?;
            s.mode = Mode::Light;
            s.nodes = nodes;
            s.duration = minutes * 60_000;
            s.workload.interval = 10_000;
            s.faults[0].at = s.duration / 3;
            s.faults[0].until = Some(s.duration / 2);
            line(&format!("split-brain light {nodes} {minutes} min"), &s, 1)?;
        }
    }
    Ok(())
}
