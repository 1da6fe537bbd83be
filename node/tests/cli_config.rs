//! Settings from the environment, through the real `weft` binary:
//! `weft node config` shows flag > env > weft.toml > default and where
//! each value came from, and `weft node run` runs with what the
//! environment says, or exits 1 with one line naming the variable.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `weft` with no WEFT_* variable from this process's environment.
fn weft(envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WEFT_") {
            c.env_remove(k);
        }
    }
    c.envs(envs.iter().copied());
    c
}

fn run(envs: &[(&str, &str)], args: &[&str]) -> Output {
    weft(envs).args(args).output().unwrap()
}

fn ok(envs: &[(&str, &str)], args: &[&str]) -> String {
    let o = run(envs, args);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success(),
        "weft {args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Expects exit 1 and one `error: ` line; returns it.
fn fails(envs: &[(&str, &str)], args: &[&str]) -> String {
    let o = run(envs, args);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1), "weft {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A node directory made by the CLI.
fn node_dir(tmp: &Path) -> String {
    let p = |f: &str| tmp.join(f).display().to_string();
    ok(&[], &["key", "gen", "--out", &p("root.key")]);
    let alice = ok(&[], &["key", "gen", "--out", &p("alice.key")]);
    let op = format!("alice={}", alice.trim());
    ok(
        &[],
        &[
            "trust",
            "init",
            "--root-key",
            &p("root.key"),
            "--operator",
            &op,
            "--out",
            &p("trust.json"),
        ],
    );
    ok(
        &[],
        &[
            "node",
            "init",
            "--dir",
            &p("node"),
            "--trust",
            &p("trust.json"),
        ],
    );
    p("node")
}

/// The line of `weft node config` output that sets `key`.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn node_config_shows_each_level_and_where_it_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node_dir(tmp.path());
    let toml = Path::new(&dir).join("weft.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("api = \"127.0.0.1:7100\"", "api = \"127.0.0.1:7201\""),
    )
    .unwrap();

    // The file over the default.
    let out = ok(&[], &["node", "config", "--dir", &dir]);
    assert_eq!(
        line(&out, "api"),
        format!("api = \"127.0.0.1:7201\"  # file {dir}/weft.toml")
    );
    // weft.toml written by `weft node init` sets every key; an absent one is the default.
    std::fs::write(&toml, "api = \"127.0.0.1:7201\"\n").unwrap();
    let out = ok(&[], &["node", "config", "--dir", &dir]);
    assert_eq!(line(&out, "detect"), "detect = true  # default");
    // The environment over the file, the directory from WEFT_DIR.
    let env = [
        ("WEFT_DIR", dir.as_str()),
        ("WEFT_API", "127.0.0.1:7202"),
        ("WEFT_DETECT", "false"),
        (
            "WEFT_PEERS",
            "/ip4/10.0.0.2/tcp/7101,/ip4/10.0.0.3/tcp/7101",
        ),
    ];
    let out = ok(&env, &["node", "config"]);
    assert_eq!(
        line(&out, "api"),
        "api = \"127.0.0.1:7202\"  # env WEFT_API"
    );
    assert_eq!(line(&out, "detect"), "detect = false  # env WEFT_DETECT");
    assert_eq!(
        line(&out, "peers"),
        "peers = [\"/ip4/10.0.0.2/tcp/7101\", \"/ip4/10.0.0.3/tcp/7101\"]  # env WEFT_PEERS"
    );
    // A flag over the environment.
    let out = ok(
        &env,
        &[
            "node",
            "config",
            "--api",
            "127.0.0.1:7203",
            "--peer",
            "/ip4/10.0.0.4/tcp/1",
        ],
    );
    assert_eq!(line(&out, "api"), "api = \"127.0.0.1:7203\"  # flag --api");
    assert_eq!(
        line(&out, "peers"),
        "peers = [\"/ip4/10.0.0.4/tcp/1\"]  # flag --peer"
    );
    // What it prints is a weft.toml.
    let back: weft_node::layout::Config = toml::from_str(&out).unwrap();
    assert_eq!(back.api, "127.0.0.1:7203");
    assert!(!back.detect);

    let json: serde_json::Value =
        serde_json::from_str(&ok(&env, &["node", "config", "--json"])).unwrap();
    assert_eq!(json["config"]["api"], "127.0.0.1:7202");
    assert_eq!(json["sources"]["api"], "env WEFT_API");
    assert_eq!(json["sources"]["stale_after"], "default");

    // Errors name the variable.
    let e = fails(
        &[("WEFT_AUDIT_ALLOW_ONE_IN", "lots")],
        &["node", "config", "--dir", &dir],
    );
    assert!(
        e.starts_with(
            "error: environment variable WEFT_AUDIT_ALLOW_ONE_IN: not an unsigned integer"
        ),
        "{e}"
    );
    let e = fails(&[("WEFT_APII", "x")], &["node", "config", "--dir", &dir]);
    assert!(
        e.starts_with("error: environment variable WEFT_APII: unknown field `apii`"),
        "{e}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthz(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn node_run_takes_its_settings_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = node_dir(tmp.path());
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let env = [
        ("WEFT_DIR", dir.as_str()),
        ("WEFT_API", api.as_str()),
        ("WEFT_LISTEN", "/ip4/127.0.0.1/tcp/0"),
        ("WEFT_LOG_FORMAT", "json"),
        // Not settings: ignored.
        ("WEFT_BENCH_NODES", "3"),
        ("WEFT_API_TOKEN", "not-a-setting"),
    ];
    let mut child = weft(&env)
        .args(["node", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Some(a) = healthz(port) {
            break a;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("weft node run exited {status}: {err}");
        }
        assert!(Instant::now() < deadline, "no API on {api}");
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // WEFT_LOG_FORMAT=json: the log lines are JSON.
    assert!(
        err.lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\"")),
        "{err}"
    );

    // A bad value or an unknown variable stops the start with one line.
    let e = fails(
        &[("WEFT_DIR", dir.as_str()), ("WEFT_MAX_CONNECTIONS", "many")],
        &["node", "run"],
    );
    assert!(
        e.starts_with("error: environment variable WEFT_MAX_CONNECTIONS: "),
        "{e}"
    );
    let e = fails(
        &[("WEFT_DIR", dir.as_str()), ("WEFT_STALE_AFTER", "soon")],
        &["node", "run"],
    );
    assert!(e.contains("stale_after (from env WEFT_STALE_AFTER)"), "{e}");
    let e = fails(
        &[
            ("WEFT_DIR", dir.as_str()),
            ("WEFT_LISTENN", "/ip4/127.0.0.1/tcp/0"),
        ],
        &["node", "run"],
    );
    assert!(e.contains("WEFT_LISTENN"), "{e}");
}
