//! `weft token issue` and `weft check`, run as a real binary: an issued token
//! verifies under the trust root with the right principal and attributes, bad
//! input fails with one error line, and `weft check` against a running node
//! exits 0 on allow, 3 on deny and 1 on an error.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use weft_protocol::token;
use weft_protocol::trust::{TrustRoot, from_trust_file};

fn weft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    assert!(
        o.status.success(),
        "weft {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and expects exit 1 with exactly one `error: ` line on stderr; returns it.
fn fails(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "weft {args:?}: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "not one line: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    assert!(!err.contains("backtrace"), "{err:?}");
    lines[0].to_string()
}

fn last_line(s: &str) -> &str {
    assert!(s.ends_with('\n'), "{s:?}");
    s.lines().last().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A trust root with `idp` (issue role only) and `ops` (every role but issue).
fn mesh() -> (tempfile::TempDir, TrustRoot) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let key = |name: &str| last_line(&ok(p, &["key", "gen", "--out", name])).to_string();
    key("root.key");
    let idp = key("idp.key");
    let ops = key("ops.key");
    ok(
        p,
        &[
            "trust",
            "init",
            "--root-key",
            "root.key",
            "--operator",
            &format!("idp={idp}:issue"),
            "--operator",
            &format!("ops={ops}:policy,revoke,admit"),
            "--out",
            "trust.json",
        ],
    );
    let text = std::fs::read_to_string(p.join("trust.json")).unwrap();
    let root = from_trust_file(&text).unwrap().root().unwrap();
    (dir, root)
}

#[test]
fn token_issue_prints_a_token_that_verifies() {
    let (dir, root) = mesh();
    let p = dir.path();
    let out = ok(
        p,
        &[
            "token",
            "issue",
            "--key",
            "idp.key",
            "--principal",
            r#"User::"alice""#,
            "--ttl",
            "15m",
            "--attr",
            "team=red",
            "--attr",
            "level=a=b",
        ],
    );
    let t = token::verify(last_line(&out), &root, &[], now()).unwrap();
    assert_eq!(t.principal, r#"User::"alice""#);
    assert_eq!(t.attrs.get("team").unwrap(), "red");
    assert_eq!(t.attrs.get("level").unwrap(), "a=b");
    assert!(t.expires >= now() + 890 && t.expires <= now() + 900);
    // Expired after the ttl.
    assert!(token::verify(last_line(&out), &root, &[], t.expires).is_err());

    // --json: one object with the token and its facts.
    let out = ok(
        p,
        &[
            "token",
            "issue",
            "--key",
            "idp.key",
            "--principal",
            r#"User::"bob""#,
            "--ttl",
            "1h",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(last_line(&out)).unwrap();
    let t = token::verify(v["token"].as_str().unwrap(), &root, &[], now()).unwrap();
    assert_eq!(v["id"], t.id_hex());
    assert_eq!(v["principal"], r#"User::"bob""#);
    assert_eq!(v["expires"], t.expires);

    // A key without the issue role signs a token that nodes refuse.
    let out = ok(
        p,
        &[
            "token",
            "issue",
            "--key",
            "ops.key",
            "--principal",
            r#"User::"bob""#,
            "--ttl",
            "1h",
        ],
    );
    assert!(matches!(
        token::verify(last_line(&out), &root, &[], now()),
        Err(token::TokenError::UnknownIssuer(_))
    ));
}

#[test]
fn token_issue_refuses_bad_input() {
    let (dir, _) = mesh();
    let p = dir.path();
    let base = |principal: &'static str, ttl: &'static str| {
        vec![
            "token",
            "issue",
            "--key",
            "idp.key",
            "--principal",
            principal,
            "--ttl",
            ttl,
        ]
    };
    let e = fails(p, &base("alice", "15m"));
    assert!(
        e.contains("--principal") && e.contains("Cedar entity uid"),
        "{e}"
    );
    let e = fails(p, &base(r#"User::"alice""#, "15"));
    assert!(e.contains("--ttl"), "{e}");
    let e = fails(p, &base(r#"User::"alice""#, "0s"));
    assert!(e.contains("--ttl"), "{e}");
    let mut args = base(r#"User::"alice""#, "15m");
    args.extend(["--attr", "novalue"]);
    let e = fails(p, &args);
    assert!(e.contains("KEY=VALUE"), "{e}");
    let mut args = base(r#"User::"alice""#, "15m");
    args[3] = "missing.key";
    fails(p, &args);
}

#[test]
fn token_issue_refuses_a_ttl_over_the_maximum() {
    let (dir, _) = mesh();
    let p = dir.path();
    let issue = |ttl: &str, extra: &[&str]| {
        let mut args = vec![
            "token",
            "issue",
            "--key",
            "idp.key",
            "--principal",
            r#"User::"alice""#,
            "--ttl",
            ttl,
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run_ok = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(p, &args)
    };
    let run_fails = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(p, &args)
    };
    // Without a trust root: the default maximum of a day.
    run_ok(issue("24h", &[]));
    let e = run_fails(issue("25h", &[]));
    assert_eq!(
        e,
        "error: --ttl 25h is longer than the default maximum token lifetime of 1d; give --trust FILE or --node URL to apply the mesh's own maximum"
    );
    let e = run_fails(issue("36500d", &[]));
    assert!(e.contains("--ttl 36500d is longer than"), "{e}");

    // With --trust: that root's maximum, shorter or longer than the default.
    let idp = ok(p, &["key", "show", "idp.key"]);
    let ops = ok(p, &["key", "show", "ops.key"]);
    let with_max = |file: &str, max: &str| {
        ok(
            p,
            &[
                "trust",
                "init",
                "--root-key",
                "root.key",
                "--operator",
                &format!("idp={}:issue", idp.trim()),
                "--operator",
                &format!("ops={}:policy,revoke,admit", ops.trim()),
                "--max-token-ttl",
                max,
                "--out",
                file,
            ],
        );
        let text = std::fs::read_to_string(p.join(file)).unwrap();
        from_trust_file(&text).unwrap().root().unwrap()
    };
    with_max("short.json", "10m");
    run_ok(issue("10m", &["--trust", "short.json"]));
    let e = run_fails(issue("11m", &["--trust", "short.json"]));
    assert_eq!(
        e,
        "error: --ttl 11m is longer than the maximum token lifetime of 10m that the trust root in short.json allows"
    );
    let long = with_max("long.json", "30d");
    let out = run_ok(issue("7d", &["--trust", "long.json"]));
    let t = token::verify(last_line(&out), &long, &[], now()).unwrap();
    assert_eq!(t.expires - t.issued, 7 * 86_400);
    run_fails(issue("31d", &["--trust", "long.json"]));

    // A trust file that is not one: one line.
    std::fs::write(p.join("bad.json"), "{}").unwrap();
    let e = run_fails(issue("1m", &["--trust", "bad.json"]));
    assert!(e.contains("bad.json"), "{e}");
    // --trust and --node together are a usage error.
    let args = issue(
        "1m",
        &["--trust", "short.json", "--node", "http://127.0.0.1:1"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(weft(p, &args).status.code(), Some(2));
    // --help says what applies without either.
    let help = ok(p, &["token", "issue", "--help"]);
    assert!(help.contains("default maximum of 24h"), "{help}");
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

#[test]
fn check_exits_0_on_allow_3_on_deny_1_on_error() {
    let (dir, _) = mesh();
    let p = dir.path();
    ok(p, &["node", "init", "--dir", "n1", "--trust", "trust.json"]);
    let api = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{api}");
    let _node = Node(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while weft(p, &["status", "--node", &url]).status.code() != Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::create_dir_all(p.join("pol")).unwrap();
    std::fs::write(
        p.join("pol/p.cedar"),
        r#"permit(principal == User::"alice", action, resource) when { context.token.team == "red" };"#,
    )
    .unwrap();
    ok(
        p,
        &[
            "bundle", "create", "--name", "b", "--dir", "pol", "--key", "ops.key", "--node", &url,
            "--out", "b.update",
        ],
    );
    ok(p, &["push", "--node", &url, "b.update"]);

    let issue = |team: &str| {
        let attr = format!("team={team}");
        let out = ok(
            p,
            &[
                "token",
                "issue",
                "--key",
                "idp.key",
                "--principal",
                r#"User::"alice""#,
                "--ttl",
                "5m",
                "--attr",
                &attr,
            ],
        );
        last_line(&out).to_string()
    };
    let check = |who: &[&str]| {
        let mut args = vec!["check", "--node", &url];
        args.extend_from_slice(who);
        args.extend(["--action", r#"Action::"view""#, "--resource", r#"Doc::"d""#]);
        weft(p, &args)
    };
    // --node: the node's trust root sets the maximum (a day here).
    let e = fails(
        p,
        &[
            "token",
            "issue",
            "--key",
            "idp.key",
            "--principal",
            r#"User::"alice""#,
            "--ttl",
            "2d",
            "--node",
            &url,
        ],
    );
    assert_eq!(
        e,
        format!(
            "error: --ttl 2d is longer than the maximum token lifetime of 1d that the trust root of the node at {url} allows"
        )
    );
    ok(
        p,
        &[
            "token",
            "issue",
            "--key",
            "idp.key",
            "--principal",
            r#"User::"alice""#,
            "--ttl",
            "1d",
            "--node",
            &url,
        ],
    );
    let red = issue("red");
    let o = check(&["--token", &red]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("allow\n"), "{}", stdout(&o));
    assert!(stdout(&o).contains("reason: b/p"), "{}", stdout(&o));
    // The decision's id, as the node's audit trail and decision log have it.
    let id = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("decision id: ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no decision id in {}", stdout(&o)));
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    let blue = issue("blue");
    let o = check(&["--token", &blue]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("deny\n"), "{}", stdout(&o));
    // Without a token, context.token is missing: deny.
    let o = check(&["--principal", r#"User::"alice""#]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    // A garbled token is a deny with the reason.
    let o = check(&["--token", "wtk1.AAAA", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_str(last_line(&stdout(&o))).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["decision_id"].as_str().map(str::len), Some(32), "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("token refused"),
        "{v}"
    );
    // A request the node refuses (bad uid) is an error: exit 1, one line.
    let mut args = vec!["check", "--node", &url, "--principal", "alice"];
    args.extend(["--action", r#"Action::"view""#, "--resource", r#"Doc::"d""#]);
    let e = fails(p, &args);
    assert!(e.contains("HTTP 400"), "{e}");
    // An unreachable node is an error too.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut args = vec!["check", "--node", &dead, "--principal", r#"User::"a""#];
    args.extend(["--action", r#"Action::"view""#, "--resource", r#"Doc::"d""#]);
    fails(p, &args);
}
