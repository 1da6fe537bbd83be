//! `weft node run` as a real process is never half alive: `/readyz` and
//! `/healthz` answer 200 once it runs, and when its node task dies (the
//! test hook `WEFT_TEST_PANIC_HOOK=1` serves `POST /v1/test/panic`) the
//! process exits non-zero with one `error:` line, so a supervisor restarts
//! it. Without the variable, the hook's route does not exist.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn weft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "weft {args:?} failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node directory `n1` under a new trust root; returns the temp dir.
fn node_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    ok(p, &["key", "gen", "--out", "root.key"]);
    let ops = ok(p, &["key", "gen", "--out", "ops.key"]);
    let ops = ops.lines().last().unwrap();
    ok(
        p,
        &[
            "trust",
            "init",
            "--root-key",
            "root.key",
            "--operator",
            &format!("ops={ops}"),
            "--out",
            "trust.json",
        ],
    );
    ok(p, &["node", "init", "--dir", "n1", "--trust", "trust.json"]);
    dir
}

/// Starts `weft node run` on `n1` with `env`; returns it and its API URL.
fn run(p: &Path, env: &[(&str, &str)]) -> (Node, String) {
    let api = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args([
        "node",
        "run",
        "--dir",
        "n1",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        &api,
    ])
    .current_dir(p)
    .env_remove("WEFT_TEST_PANIC_HOOK")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Node(cmd.spawn().unwrap()), format!("http://{api}"))
}

fn get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    Some((resp.status().as_u16(), resp.text().ok()?))
}

fn post(url: &str) -> (u16, String) {
    let resp = reqwest::blocking::Client::new()
        .post(url)
        .timeout(Duration::from_secs(5))
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// Waits until `GET url/readyz` answers 200.
fn wait_ready(url: &str) {
    let start = Instant::now();
    loop {
        if let Some((200, body)) = get(&format!("{url}/readyz")) {
            assert_eq!(body, "ok");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_whose_task_panics_exits_non_zero() {
    let dir = node_dir();
    let p = dir.path();
    let (mut node, url) = run(p, &[("WEFT_TEST_PANIC_HOOK", "1")]);
    wait_ready(&url);
    assert_eq!(get(&format!("{url}/healthz")), Some((200, "ok".into())));

    let (code, body) = post(&format!("{url}/v1/test/panic"));
    assert_eq!(code, 202, "{body}");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the node is still running 10 s after its task panicked"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(node.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("panicked"),
        "{stderr}"
    );
    assert!(
        get(&format!("{url}/healthz")).is_none(),
        "the API still answers"
    );
}

#[test]
fn the_panic_route_needs_the_test_variable() {
    let dir = node_dir();
    let p = dir.path();
    let (mut node, url) = run(p, &[]);
    wait_ready(&url);
    let (code, body) = post(&format!("{url}/v1/test/panic"));
    assert_eq!(code, 404, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(node.0.try_wait().unwrap().is_none(), "the node exited");
    assert_eq!(get(&format!("{url}/readyz")), Some((200, "ok".into())));
}
