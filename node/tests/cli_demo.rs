//! `weft demo --exit`: the whole story on a local mesh, run as a real binary.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `weft ARGS` with a 120 s limit; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "weft {} did not finish within 120 s; stdout so far:\n{}",
                args.join(" "),
                out.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

#[test]
fn demo_runs_every_step_and_exits_0() {
    let (ok, stdout, stderr) = run(&["demo", "--nodes", "3", "--exit"]);
    assert!(ok, "weft demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for i in 1..=3 {
        assert!(stdout.contains(&format!("node {i} up")), "{stdout}");
    }
    for step in 1..=5 {
        assert!(
            stdout.contains(&format!("==> step {step}:")),
            "step {step} missing:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("step {step} held")),
            "step {step} did not hold:\n{stdout}"
        );
    }
    assert!(stdout.contains("node 1 refuses it"), "{stdout}");
    assert!(stdout.contains("carol denied"), "{stdout}");
    assert!(stdout.contains("the demo held at every step"), "{stdout}");
}

#[test]
fn demo_json_reports_every_step() {
    let (ok, stdout, stderr) = run(&["demo", "--nodes", "2", "--exit", "--json"]);
    assert!(ok, "weft demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for step in 1..=5 {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "held" && e["step"] == step),
            "step {step} did not hold:\n{stdout}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "done" && e["ok"] == true)
    );
}
