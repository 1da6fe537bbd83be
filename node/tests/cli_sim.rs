//! `weft sim` as a real binary: listing, a passing run with its report
//! directory, byte-identical reruns, and exit 1 with the replay command when
//! an invariant fails.

use std::process::Command;

fn weft(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn list_names_every_builtin() {
    let (code, stdout, _) = weft(&["sim", "--list"]);
    assert_eq!(code, 0);
    for name in [
        "steady",
        "split-brain",
        "isolated-site",
        "churn",
        "byzantine",
        "lossy-wan",
    ] {
        assert!(stdout.contains(name), "{name} missing:\n{stdout}");
    }
    let (code, stdout, _) = weft(&["sim", "--list", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 6);
}

#[test]
fn a_run_writes_its_report_and_replays_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    let args = [
        "sim",
        "--nodes",
        "25",
        "--seed",
        "9",
        "--scenario",
        "split-brain",
        "--mode",
        "light",
        "--duration",
        "40s",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = weft(&args);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["seed"], 9);
    assert_eq!(v["nodes"], 25);
    assert_eq!(v["passed"], true);
    assert!(v["latency"]["p50_ms"].as_u64().unwrap() > 0);
    let file = std::fs::read_to_string(report.join("report.json")).unwrap();
    assert_eq!(file.trim_end(), stdout.trim_end());
    assert!(report.join("reach.svg").exists() && report.join("latency_cdf.svg").exists());
    let (_, again, _) = weft(&args);
    assert_eq!(stdout, again, "same seed, same report");
}

#[test]
fn a_failing_invariant_exits_1_with_the_seed_and_the_replay_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "name = \"broken\"\nmode = \"light\"\nnodes = 20\nduration = \"20s\"\n\
         [workload]\ninterval = \"500ms\"\nsubjects = 2\nrevoke_fraction = 0.5\n\
         [sabotage]\ngrant_lifts_revocation = true\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        weft(&["sim", "--seed", "4", "--scenario", file.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("revoke_wins   FAIL"), "{stdout}");
    assert!(
        stderr.starts_with("error: invariant(s) failed: revoke_wins (seed 4)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "replay with: weft sim --nodes 20 --seed 4 --scenario {}",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn an_unknown_scenario_is_an_error() {
    let (code, _, stderr) = weft(&["sim", "--scenario", "no-such-scenario"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: unknown scenario"), "{stderr}");
}
