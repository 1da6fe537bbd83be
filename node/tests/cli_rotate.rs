//! `weft trust rotate`, `weft trust sign` and `weft push` of a trust file,
//! run as a real binary: a rotation short of signatures is written for
//! the other root key holders and says what is missing, they sign it
//! offline, it is pushed to a running node, which adopts it; a rotation
//! can be written offline from a state export.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_crdt::PolicyDoc;
use weft_protocol::export::StateExport;
use weft_protocol::trust::{SignedRoot, TrustRoot, from_trust_file};

fn weft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    assert!(
        o.status.success(),
        "weft {args:?} failed: {}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// Runs and expects exit 1 with exactly one `error: ` line on stderr; returns it.
fn fails(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "weft {args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    lines[0].to_string()
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or_default().trim()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn root_in(path: &Path) -> (SignedRoot, TrustRoot) {
    let signed = from_trust_file(&std::fs::read_to_string(path).unwrap()).unwrap();
    let root = signed.root().unwrap();
    (signed, root)
}

/// Two root keys, both needed (`--root-threshold 2`); alice holds every
/// role, bob only `policy`. A node directory `n1` under that root.
fn mesh() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    ok(p, &["key", "gen", "--out", "r1.key"]);
    ok(p, &["key", "gen", "--out", "r2.key"]);
    let alice = last_line(&ok(p, &["key", "gen", "--out", "alice.key"])).to_owned();
    let bob = last_line(&ok(p, &["key", "gen", "--out", "bob.key"])).to_owned();
    ok(
        p,
        &[
            "trust",
            "init",
            "--root-key",
            "r1.key",
            "--root-key",
            "r2.key",
            "--root-threshold",
            "2",
            "--operator",
            &format!("alice={alice}"),
            "--operator",
            &format!("bob={bob}:policy"),
            "--out",
            "trust.json",
        ],
    );
    ok(p, &["node", "init", "--dir", "n1", "--trust", "trust.json"]);
    dir
}

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `weft node run` on `n1`; returns it and its API URL once ready.
fn run(p: &Path) -> (Node, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_weft"))
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
        .unwrap();
    let node = Node(child);
    let url = format!("http://{api}");
    let start = Instant::now();
    while status(&url).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (node, url)
}

fn status(url: &str) -> Option<serde_json::Value> {
    reqwest::blocking::Client::new()
        .get(format!("{url}/v1/status"))
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?
        .json()
        .ok()
}

fn root_version(url: &str) -> u64 {
    status(url).unwrap()["trust_root"]["version"]
        .as_u64()
        .unwrap()
}

#[test]
fn rotate_and_sign_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let help = ok(dir.path(), &["trust", "rotate", "--help"]);
    for needle in [
        "one version up",
        "--remove-operator",
        "accepted_heads",
        "threshold of the current root keys",
        "weft trust sign --key KEY FILE",
        "weft push --node URL FILE",
        "--no-push",
        "--state",
    ] {
        assert!(help.contains(needle), "{needle:?} not in:\n{help}");
    }
    let help = ok(dir.path(), &["trust", "sign", "--help"]);
    assert!(
        help.contains("in place") && help.contains("weft push --node URL FILE"),
        "{help}"
    );
}

/// A rotation needs both root keys here: with one, it is written to
/// `--out` (exit 0, saying what is missing), or refused without `--out`
/// (exit 1, one line); `weft trust sign` adds the second signature, and
/// `weft push` hands the file to the node, which adopts it and rewrites
/// its trust.json; bob, removed, can no longer write there.
#[test]
fn a_rotation_short_of_signatures_is_signed_offline_and_pushed() {
    let dir = mesh();
    let p = dir.path();
    let (_node, url) = run(p);
    assert_eq!(root_version(&url), 1);

    let err = fails(
        p,
        &[
            "trust",
            "rotate",
            "--node",
            &url,
            "--key",
            "r1.key",
            "--remove-operator",
            "bob",
        ],
    );
    assert!(
        err.contains("1 of 2 signatures by the current root keys")
            && err.contains("--out FILE")
            && err.contains("weft trust sign"),
        "{err}"
    );
    assert!(!p.join("trust-v2.json").exists());

    let out = ok(
        p,
        &[
            "trust",
            "rotate",
            "--node",
            &url,
            "--key",
            "r1.key",
            "--remove-operator",
            "bob",
            "--out",
            "trust-v2.json",
        ],
    );
    assert!(
        out.contains("wrote trust root version 2 to trust-v2.json")
            && out.contains("1 of 2 current root key signature(s), 1 of 2 new")
            && out.contains("weft trust sign --key KEY trust-v2.json"),
        "{out}"
    );
    assert_eq!(
        root_version(&url),
        1,
        "a rotation short of signatures was pushed"
    );
    let (signed, v2) = root_in(&p.join("trust-v2.json"));
    assert_eq!(v2.version, 2);
    assert!(v2.operator_by_name("bob").is_none());
    assert_eq!(signed.signatures.len(), 1);
    // The node refuses it too.
    let err = fails(p, &["push", "--node", &url, "trust-v2.json"]);
    assert!(
        err.contains("trust root") || err.contains("signature"),
        "{err}"
    );
    assert_eq!(root_version(&url), 1);

    let out = ok(p, &["trust", "sign", "--key", "r2.key", "trust-v2.json"]);
    assert!(
        out.contains("trust root version 2 now carries 2 signature(s)"),
        "{out}"
    );
    let out = ok(p, &["push", "--node", &url, "trust-v2.json"]);
    assert!(!out.is_empty());
    assert_eq!(root_version(&url), 2);
    let (_, on_disk) = root_in(&p.join("n1").join("trust.json"));
    assert_eq!(on_disk, v2, "the node's trust.json holds the adopted root");
    // Pushing it again changes nothing.
    ok(p, &["push", "--node", &url, "trust-v2.json"]);
    assert_eq!(root_version(&url), 2);

    // bob is no operator of version 2: his bundle is refused in one line.
    std::fs::create_dir_all(p.join("pol")).unwrap();
    std::fs::write(
        p.join("pol").join("main.cedar"),
        "permit(principal, action, resource);\n",
    )
    .unwrap();
    let err = fails(
        p,
        &[
            "bundle",
            "create",
            "--name",
            "main",
            "--dir",
            "pol",
            "--key",
            "bob.key",
            "--node",
            &url,
            "--out",
            "bob.update",
        ],
    );
    assert!(
        err.contains("not an operator in trust root version 2"),
        "{err}"
    );
    // alice still writes.
    ok(
        p,
        &[
            "bundle",
            "create",
            "--name",
            "main",
            "--dir",
            "pol",
            "--key",
            "alice.key",
            "--node",
            &url,
            "--out",
            "alice.update",
        ],
    );
    ok(p, &["push", "--node", &url, "alice.update"]);
}

/// `weft trust rotate --state FILE --no-push --out F` writes a rotation
/// offline from a state export: one version up, vouching for the export's
/// heads, verifying as a rotation from the current root.
#[test]
fn a_rotation_is_written_offline_from_a_state_export() {
    let dir = mesh();
    let p = dir.path();
    let (signed_v1, v1) = root_in(&p.join("trust.json"));
    let doc = PolicyDoc::new();
    let export = StateExport {
        signed_root: signed_v1.to_bytes(),
        doc: doc.save(),
    };
    std::fs::write(p.join("state.bin"), export.to_bytes()).unwrap();
    let carol = last_line(&ok(p, &["key", "gen", "--out", "carol.key"])).to_owned();

    let err = fails(
        p,
        &[
            "trust",
            "rotate",
            "--state",
            "state.bin",
            "--key",
            "r1.key",
            "--key",
            "r2.key",
            "--remove-operator",
            "nobody",
            "--no-push",
            "--out",
            "v2.json",
        ],
    );
    assert!(err.contains("nobody"), "{err}");

    let out = ok(
        p,
        &[
            "trust",
            "rotate",
            "--state",
            "state.bin",
            "--key",
            "r1.key",
            "--key",
            "r2.key",
            "--operator",
            &format!("carol={carol}:revoke"),
            "--expires",
            "30d",
            "--no-push",
            "--out",
            "v2.json",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(last_line(&out)).unwrap();
    assert_eq!(v["version"], 2, "{v}");
    assert_eq!(v["signed_old"], 2, "{v}");
    assert_eq!(v["need_old"], 2, "{v}");
    assert_eq!(v["pushed"], serde_json::Value::Null, "{v}");
    let (signed, v2) = root_in(&p.join("v2.json"));
    assert_eq!(v2.version, 2);
    assert!(v2.operator_by_name("carol").is_some());
    assert_eq!(v2.operators.len(), v1.operators.len() + 1);
    let heads: Vec<[u8; 32]> = doc.heads().iter().map(|h| h.0).collect();
    assert_eq!(v2.accepted_heads, heads);
    assert!(v2.expires > now() + 29 * 86_400 && v2.expires <= now() + 30 * 86_400);
    signed_v1
        .verify_initial(now())
        .unwrap()
        .verify_rotation(&signed, now())
        .expect("a rotation every node adopts");
    // It does not overwrite the file without --force.
    let err = fails(
        p,
        &[
            "trust",
            "rotate",
            "--state",
            "state.bin",
            "--key",
            "r1.key",
            "--no-push",
            "--out",
            "v2.json",
        ],
    );
    assert!(err.contains("v2.json"), "{err}");
    let shown = ok(p, &["trust", "show", "v2.json"]);
    assert!(shown.contains("carol"), "{shown}");
}
