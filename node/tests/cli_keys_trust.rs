//! The `weft key` and `weft trust` commands, run as a real binary.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use weft_protocol::identity::PublicKey;

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

/// Runs and expects success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    assert!(o.status.success(), "weft {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// Runs and expects exit 1 with exactly one `error: ` line on stderr; returns it.
fn fails(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    assert_eq!(o.status.code(), Some(1), "weft {args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    assert!(!err.contains("backtrace"), "{err:?}");
    err.trim_end().to_string()
}

fn last_line(s: &str) -> &str {
    assert!(s.ends_with('\n'));
    s.lines().last().unwrap()
}

fn gen_key(dir: &Path, file: &str) -> String {
    let out = ok(dir, &["key", "gen", "--out", file]);
    last_line(&out).to_string()
}

#[test]
fn key_gen_writes_0600_and_prints_parseable_key_last() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["key", "gen", "--out", "op.key"]);
    let pk: PublicKey = last_line(&out).parse().unwrap();
    let mode = std::fs::metadata(dir.path().join("op.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // key show agrees, and its last line is the key too.
    let shown = ok(dir.path(), &["key", "show", "op.key"]);
    assert_eq!(last_line(&shown).parse::<PublicKey>().unwrap(), pk);
    let json: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["key", "show", "op.key", "--json"])).unwrap();
    assert_eq!(json["public_key"], pk.to_string());
    assert!(json["node_id"].as_str().unwrap().starts_with("12D3KooW"));
}

#[test]
fn key_gen_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    gen_key(dir.path(), "op.key");
    let before = std::fs::read(dir.path().join("op.key")).unwrap();
    let err = fails(dir.path(), &["key", "gen", "--out", "op.key"]);
    assert_eq!(
        err,
        "error: refusing to overwrite op.key: the file already exists"
    );
    assert_eq!(std::fs::read(dir.path().join("op.key")).unwrap(), before);
}

#[test]
fn key_show_refuses_a_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    gen_key(dir.path(), "op.key");
    let path = dir.path().join("op.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(dir.path(), &["key", "show", "op.key"]);
    assert_eq!(
        err,
        "error: key file op.key is readable by others (mode 0644); run chmod 600 op.key"
    );
}

#[test]
fn key_show_of_a_missing_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(dir.path(), &["key", "show", "nope.key"]);
    assert!(
        err.starts_with("error: cannot read key file nope.key: "),
        "{err}"
    );
}

struct Mesh {
    dir: tempfile::TempDir,
    alice: String,
    bob: String,
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    gen_key(dir.path(), "root1.key");
    gen_key(dir.path(), "root2.key");
    let alice = gen_key(dir.path(), "alice.key");
    let bob = gen_key(dir.path(), "bob.key");
    Mesh { dir, alice, bob }
}

#[test]
fn trust_init_then_show_reports_everything() {
    let m = mesh();
    let d = m.dir.path();
    let alice = format!("alice={}:policy,revoke", m.alice);
    let bob = format!("bob={}", m.bob);
    let out = ok(
        d,
        &[
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--root-key",
            "root2.key",
            "--root-threshold",
            "2",
            "--operator",
            &bob,
            "--operator",
            &alice,
            "--threshold",
            "2",
            "--revoke-threshold",
            "1",
            "--expires",
            "30d",
            "--max-token-ttl",
            "8h",
            "--out",
            "trust.json",
        ],
    );
    assert!(
        out.starts_with("wrote trust root version 1 to trust.json"),
        "{out}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(d, &["trust", "show", "trust.json", "--json"])).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["verified"], true);
    assert_eq!(json["error"], serde_json::Value::Null);
    assert_eq!(json["expired"], false);
    assert_eq!(json["root_threshold"], 2);
    assert_eq!(json["root_keys"].as_array().unwrap().len(), 2);
    assert_eq!(json["signers"].as_array().unwrap().len(), 2);
    assert_eq!(json["policy_threshold"], 2);
    assert_eq!(json["revoke_threshold"], 1);
    assert_eq!(json["node_quarantine"]["allowed"], false);
    assert_eq!(json["max_token_ttl_secs"], 8 * 3600);
    let ops = json["operators"].as_array().unwrap();
    assert_eq!(ops.len(), 2);
    // Sorted by name, whatever the order on the command line.
    assert_eq!(ops[0]["name"], "alice");
    assert_eq!(ops[0]["key"], m.alice.as_str());
    assert_eq!(ops[0]["roles"], serde_json::json!(["policy", "revoke"]));
    assert_eq!(ops[1]["name"], "bob");
    // Without roles, bob holds them all.
    assert_eq!(
        ops[1]["roles"],
        serde_json::json!(["policy", "revoke", "admit", "issue"])
    );
    let expires = json["expires"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expires > now + 29 * 86_400 && expires <= now + 30 * 86_400);

    let text = ok(d, &["trust", "show", "trust.json"]);
    assert!(
        text.contains("signatures:       valid (2 of 2 root keys signed, threshold 2)"),
        "{text}"
    );
    assert!(
        text.contains("policy threshold: 2 of 2 operators"),
        "{text}"
    );
    assert!(text.contains(&m.alice), "{text}");
    assert!(text.contains("  token lifetime:   at most 8h\n"), "{text}");
}

#[test]
fn trust_init_sets_the_maximum_token_lifetime() {
    let m = mesh();
    let d = m.dir.path();
    let alice = format!("alice={}", m.alice);
    let init = |extra: &[&str]| {
        let mut args = vec![
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--operator",
            &alice,
            "--force",
            "--out",
            "trust.json",
        ];
        args.extend_from_slice(extra);
        weft(d, &args)
    };
    // Without the flag: 24 hours.
    assert!(init(&[]).status.success());
    let json: serde_json::Value =
        serde_json::from_str(&ok(d, &["trust", "show", "trust.json", "--json"])).unwrap();
    assert_eq!(json["max_token_ttl_secs"], 86_400);
    let text = ok(d, &["trust", "show", "trust.json"]);
    assert!(text.contains("  token lifetime:   at most 1d\n"), "{text}");
    // --json of init names it too.
    let o = init(&["--max-token-ttl", "90s", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(last_line(&stdout(&o))).unwrap();
    assert_eq!(json["max_token_ttl_secs"], 90);
    // Bad durations are one clear line naming the flag.
    for bad in ["0s", "forever", "24"] {
        let mut args = vec![
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--operator",
            &alice,
            "--force",
            "--out",
            "trust.json",
            "--max-token-ttl",
        ];
        args.push(bad);
        let err = fails(d, &args);
        assert!(err.contains("--max-token-ttl"), "{err}");
    }
}

#[test]
fn trust_show_fails_on_a_tampered_file() {
    let m = mesh();
    let d = m.dir.path();
    let alice = format!("alice={}", m.alice);
    ok(
        d,
        &[
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--operator",
            &alice,
            "--out",
            "trust.json",
        ],
    );
    let path = d.join("trust.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["root"]["policy_threshold"] = serde_json::json!(5);
    std::fs::write(&path, json.to_string()).unwrap();
    let err = fails(d, &["trust", "show", "trust.json"]);
    assert_eq!(
        err,
        "error: trust.json: the readable \"root\" copy in the trust file disagrees with the signed body; refusing the file"
    );
}

#[test]
fn trust_init_bad_operator_spec() {
    let m = mesh();
    let d = m.dir.path();
    let err = fails(
        d,
        &[
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--operator",
            "alice",
            "--out",
            "t.json",
        ],
    );
    assert_eq!(
        err,
        "error: operator \"alice\" must be written NAME=PUBKEY or NAME=PUBKEY:ROLE,ROLE"
    );
    let err = fails(
        d,
        &[
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--operator",
            "alice=ed25519.xyz",
            "--out",
            "t.json",
        ],
    );
    assert!(
        err.starts_with("error: operator alice: \"ed25519.xyz\" is not a usable public key"),
        "{err}"
    );
    assert!(!d.join("t.json").exists());
}

#[test]
fn trust_init_unknown_role() {
    let m = mesh();
    let d = m.dir.path();
    let spec = format!("alice={}:policy,superuser", m.alice);
    let err = fails(
        d,
        &[
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--operator",
            &spec,
            "--out",
            "t.json",
        ],
    );
    assert_eq!(
        err,
        "error: operator alice: unknown role \"superuser\" (the roles are policy, revoke, admit and issue)"
    );
}

#[test]
fn trust_init_unachievable_thresholds() {
    let m = mesh();
    let d = m.dir.path();
    let alice = format!("alice={}:policy", m.alice);
    let bob = format!("bob={}:revoke", m.bob);
    let base = [
        "trust",
        "init",
        "--root-key",
        "root1.key",
        "--operator",
        &alice,
        "--operator",
        &bob,
        "--out",
        "t.json",
    ];
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        fails(d, &args)
    };
    assert_eq!(
        with(&["--threshold", "2"]),
        "error: trust root version 1: the policy threshold of 2 cannot be met, as the number of operators with the policy role is only 1"
    );
    assert_eq!(
        with(&["--revoke-threshold", "3"]),
        "error: trust root version 1: the revoke threshold of 3 cannot be met, as the number of operators with the revoke role is only 1"
    );
    assert_eq!(
        with(&["--root-threshold", "2"]),
        "error: trust root version 1: the root threshold of 2 cannot be met, as the number of root keys is only 1"
    );
    assert_eq!(
        with(&["--threshold", "0"]),
        "error: trust root version 1: the policy threshold must be at least 1"
    );
    assert!(
        with(&["--expires", "soon"]).starts_with("error: --expires: \"soon\" is not a duration")
    );
    assert!(!d.join("t.json").exists());
}

#[test]
fn trust_init_refuses_duplicate_root_keys_and_operator_as_root() {
    let m = mesh();
    let d = m.dir.path();
    let alice = format!("alice={}", m.alice);
    let err = fails(
        d,
        &[
            "trust",
            "init",
            "--root-key",
            "root1.key",
            "--root-key",
            "root1.key",
            "--operator",
            &alice,
            "--out",
            "t.json",
        ],
    );
    assert!(err.contains("lists root key ed25519."), "{err}");
    let err = fails(
        d,
        &[
            "trust",
            "init",
            "--root-key",
            "alice.key",
            "--operator",
            &alice,
            "--out",
            "t.json",
        ],
    );
    assert!(
        err.contains("the key of operator alice is already used"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = weft(dir.path(), &["trust", "init", "--out", "t.json"]);
    assert_eq!(o.status.code(), Some(2));
    let o = weft(dir.path(), &["key", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = weft(
        dir.path(),
        &[
            "trust",
            "init",
            "--root-key",
            "r",
            "--operator",
            "a",
            "--threshold",
            "x",
            "--out",
            "t",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_describes_each_command() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (&["--help"][..], "decentralized security control plane"),
        (&["key", "gen", "--help"][..], "mode 0600"),
        (&["key", "show", "--help"][..], "public key"),
        (
            &["trust", "init", "--help"][..],
            "an operator given without roles has them all",
        ),
        (
            &["trust", "init", "--help"][..],
            "the longest lifetime of an identity token",
        ),
        (
            &["trust", "show", "--help"][..],
            "whether its signatures verify",
        ),
    ] {
        let o = weft(dir.path(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(stdout(&o).contains(needle), "{args:?}: {}", stdout(&o));
    }
}
