//! The simulator end to end: determinism, the built-in scenarios across a
//! fixed set of seeds, and a deliberately broken configuration for each
//! checker, to show that it catches the violation.
//!
//! Bigger sweeps are `#[ignore]`d; run them with
//! `cargo test --release -p weft-simulations --test simulator -- --ignored`.

use weft_simulations::scenario::{FaultKind, Shape};
use weft_simulations::{Mode, Report, Scenario, run_scenario};

fn run(s: &Scenario, seed: u64) -> Report {
    run_scenario(s, seed, &mut |_| {}).expect("the scenario runs")
}

fn failed(r: &Report) -> Vec<String> {
    r.invariants
        .iter()
        .filter(|i| !i.pass)
        .map(|i| i.name.clone())
        .collect()
}

fn light(name: &str, nodes: usize) -> Scenario {
    let mut s = Scenario::load(name).expect("built-in");
    s.mode = Mode::Light;
    s.nodes = nodes;
    s
}

#[test]
fn same_seed_same_trace_and_report_byte_for_byte() {
    let mut s = light("lossy-wan", 60);
    s.duration = 60_000;
    s.faults[0].at = 20_000;
    s.faults[0].until = Some(40_000);
    let a = run(&s, 7);
    let b = run(&s, 7);
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(a.to_json(), b.to_json());
    assert!(
        a.events > 10_000,
        "the run did something: {} events",
        a.events
    );
    let c = run(&s, 8);
    assert_ne!(a.trace_digest, c.trace_digest, "another seed, another run");
}

#[test]
fn full_mode_is_deterministic_too() {
    let mut s = Scenario::load("split-brain").unwrap();
    s.nodes = 6;
    s.duration = 30_000;
    s.workload.interval = 4_000;
    s.faults[0].at = 8_000;
    s.faults[0].until = Some(20_000);
    let a = run(&s, 3);
    let b = run(&s, 3);
    assert_eq!(a.to_json(), b.to_json());
    assert!(a.passed, "{:?}", a.invariants);
    assert!(a.updates >= 5);
}

/// CI: every built-in scenario, light mode at moderate scale, fixed seeds.
#[test]
fn builtins_hold_their_invariants_across_seeds() {
    for s in Scenario::builtins() {
        let mut s = s;
        s.mode = Mode::Light;
        s.nodes = 40;
        for seed in [1, 2, 3] {
            let r = run(&s, seed);
            assert!(
                r.passed,
                "{} seed {seed}: {:?}\nreplay: {}",
                s.name, r.invariants, r.replay
            );
            assert!(
                r.updates > 0 && r.latency.samples > 0,
                "{}: no traffic",
                s.name
            );
            assert!(
                r.heals.iter().all(|h| h.converged_after_ms.is_some()),
                "{} seed {seed}: a heal never converged: {:?}",
                s.name,
                r.heals
            );
        }
    }
}

/// CI: every built-in scenario in full mode (real automerge, real
/// signatures), small and short because debug builds of automerge and Cedar
/// are slow.
#[test]
fn builtins_hold_in_full_mode() {
    for s in Scenario::builtins() {
        let mut s = s;
        s.mode = Mode::Full;
        s.nodes = 8;
        let scale = 40_000.0 / s.duration as f64;
        s.duration = 40_000;
        s.workload.interval = 5_000;
        for f in &mut s.faults {
            f.at = (f.at as f64 * scale) as u64;
            f.until = f.until.map(|u| (u as f64 * scale) as u64);
        }
        let r = run(&s, 11);
        assert!(
            r.passed,
            "{}: {:?}\nreplay: {}",
            s.name, r.invariants, r.replay
        );
        assert!(r.updates > 0);
    }
}

#[test]
fn byzantine_messages_are_rejected_and_their_senders_banned() {
    let mut s = light("byzantine", 40);
    s.duration = 30_000;
    let r = run(&s, 5);
    assert!(r.passed, "{:?}", r.invariants);
    assert_eq!(r.byzantine, 4);
    assert!(
        r.traffic.rejected > 0,
        "forgeries reached the replicas and were rejected"
    );
    assert!(r.traffic.bans > 0, "three strikes banned someone");
    assert!(r.traffic.oversized_refused > 0);
}

#[test]
fn authenticity_checker_catches_unchecked_signatures() {
    let mut s = light("byzantine", 30);
    s.duration = 20_000;
    s.sabotage.skip_signature_check = true;
    let r = run(&s, 1);
    assert!(
        failed(&r).contains(&"authenticity".to_string()),
        "{:?}",
        r.invariants
    );
    let detail = &r
        .invariants
        .iter()
        .find(|i| i.name == "authenticity")
        .unwrap()
        .detail;
    assert!(
        !detail.contains(" 0 of them Byzantine forgeries"),
        "{detail}"
    );
    assert!(!r.passed);
    assert!(r.replay.contains("--seed 1"), "{}", r.replay);
}

#[test]
fn revoke_wins_checker_catches_a_grant_lifting_a_revocation() {
    let mut s = light("steady", 20);
    s.duration = 30_000;
    s.workload.interval = 500;
    s.workload.subjects = 2;
    s.workload.revoke_fraction = 0.5;
    s.sabotage.grant_lifts_revocation = true;
    let r = run(&s, 1);
    assert_eq!(failed(&r), ["revoke_wins"], "{:?}", r.invariants);
    // The same run without the bug holds.
    s.sabotage.grant_lifts_revocation = false;
    assert!(run(&s, 1).passed);
}

#[test]
fn durability_checker_catches_acknowledging_before_the_flush() {
    let mut s = light("churn", 20);
    s.faults.retain(|f| f.kind == FaultKind::Churn);
    s.duration = 40_000;
    s.sabotage.ack_before_flush = true;
    let r = run(&s, 1);
    assert_eq!(failed(&r), ["durability"], "{:?}", r.invariants);
    s.sabotage.ack_before_flush = false;
    assert!(run(&s, 1).passed);
}

#[test]
fn durability_checker_catches_it_in_full_mode() {
    let mut s = Scenario::load("churn").unwrap();
    s.nodes = 6;
    s.faults.retain(|f| f.kind == FaultKind::Crash);
    s.faults[0].durable = Some(true);
    s.faults[0].at = 15_000;
    s.duration = 25_000;
    s.workload.interval = 2_000;
    s.sabotage.ack_before_flush = true;
    let r = run(&s, 2);
    assert!(
        failed(&r).contains(&"durability".to_string()),
        "{:?}",
        r.invariants
    );
}

#[test]
fn convergence_checker_catches_a_mesh_without_anti_entropy() {
    let mut s = light("split-brain", 30);
    s.duration = 40_000;
    s.faults[0].at = 5_000;
    s.faults[0].until = None; // until the end: no update after the heal
    s.faults[0].shape = Some(Shape::Halves);
    // A blackhole: connections stay open, so no Hello resyncs the halves and
    // only anti-entropy can.
    s.network.partition_closes = false;
    s.sabotage.no_anti_entropy = true;
    let r = run(&s, 1);
    assert_eq!(failed(&r), ["convergence"], "{:?}", r.invariants);
    s.sabotage.no_anti_entropy = false;
    let r = run(&s, 1);
    assert!(r.passed, "{:?}", r.invariants);
}

/// Gossipsub 1.2's IDONTWANT: Weft's updates are below libp2p's 1,000-byte
/// threshold, so the node's configuration never sends one; with the
/// threshold at 0 every first receipt sends one to the mesh, and the run
/// still holds every invariant.
#[test]
fn idontwant_only_above_its_threshold() {
    let mut s = light("split-brain", 40);
    s.duration = 30_000;
    s.faults.clear();
    let r = run(&s, 2);
    assert!(r.passed, "{:?}", r.invariants);
    assert_eq!(r.traffic.idontwant_sent, 0);
    s.gossip.idontwant_threshold = 0;
    let r = run(&s, 2);
    assert!(r.passed, "{:?}", r.invariants);
    assert!(r.traffic.idontwant_sent > 0, "{:?}", r.traffic);
}

#[test]
fn reports_and_plots_are_written() {
    let mut s = light("steady", 20);
    s.duration = 10_000;
    let r = run(&s, 1);
    let dir = tempfile::tempdir().unwrap();
    r.write_dir(dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["seed"], 1);
    assert_eq!(json["nodes"], 20);
    for key in ["latency", "reach", "heals", "traffic", "invariants"] {
        assert!(!json[key].is_null(), "{key} missing");
    }
    for svg in ["reach.svg", "latency_cdf.svg"] {
        let text = std::fs::read_to_string(dir.path().join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("polyline"),
            "{svg}"
        );
    }
}

/// The bigger sweep: every built-in at 1,000 light nodes, five seeds.
#[test]
#[ignore = "minutes; run with --release -- --ignored"]
fn sweep_builtins_at_1000_nodes() {
    for s in Scenario::builtins() {
        let mut s = s;
        s.mode = Mode::Light;
        s.nodes = 1_000;
        for seed in 1..=5 {
            let r = run(&s, seed);
            assert!(
                r.passed,
                "{} seed {seed}: {:?}\n{}",
                s.name, r.invariants, r.replay
            );
        }
    }
}

#[test]
fn random_groups_and_skewed_clocks_heal_and_converge() {
    let mut s = Scenario::from_toml(
        "name = \"groups\"\nmode = \"light\"\nnodes = 40\nduration = \"60s\"\n\
         [workload]\ninterval = \"2s\"\n\
         [[fault]]\nkind = \"partition\"\nshape = \"groups\"\ngroups = 4\nat = \"10s\"\nuntil = \"40s\"\n\
         [[fault]]\nkind = \"skew\"\nmax_skew = \"5m\"\n",
    )
    .unwrap();
    let r = run(&s, 4);
    assert!(r.passed, "{:?}", r.invariants);
    assert!(
        r.traffic.partitioned > 0,
        "the groups were cut off from each other"
    );
    let heal = &r.heals[0];
    assert!(heal.what.contains("groups"), "{heal:?}");
    assert!(heal.converged_after_ms.is_some(), "{heal:?}");
    // A blackhole instead of closed connections heals too, by anti-entropy.
    s.network.partition_closes = false;
    let r = run(&s, 4);
    assert!(r.passed, "{:?}", r.invariants);
}
