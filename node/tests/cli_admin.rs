//! The operator commands (`weft node init/certify`, `weft bundle create`,
//! `weft revoke`, `weft update sign/show`, `weft push`), run as a real binary.
//!
//! No daemon is needed: updates are built on a state export made here in
//! Rust (`--state FILE`), written with `--out`, and then fed to a
//! `SignedState` built from the same trust root, as a node would.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weft_crdt::PolicyDoc;
use weft_protocol::export::StateExport;
use weft_protocol::identity::NodeId;
use weft_protocol::state::{Ingested, SignedState};
use weft_protocol::trust::{SignedNodeCert, SignedRoot, TrustRoot, from_trust_file};
use weft_protocol::update::UpdateError;

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

/// A mesh made with the real CLI: a root key, operators and a trust file.
struct Mesh {
    dir: tempfile::TempDir,
}

impl Mesh {
    /// Operators: alice (policy, revoke), bob (policy, revoke), carol (admit),
    /// dave (all roles). `threshold` is the policy threshold.
    fn new(threshold: u32) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let key = |name: &str| last_line(&ok(p, &["key", "gen", "--out", name])).to_string();
        key("root.key");
        let alice = key("alice.key");
        let bob = key("bob.key");
        let carol = key("carol.key");
        let dave = key("dave.key");
        let ops = [
            format!("alice={alice}:policy,revoke"),
            format!("bob={bob}:policy,revoke"),
            format!("carol={carol}:admit"),
            format!("dave={dave}"),
        ];
        let t = threshold.to_string();
        let mut args = vec!["trust", "init", "--root-key", "root.key"];
        for o in &ops {
            args.extend(["--operator", o.as_str()]);
        }
        args.extend(["--threshold", &t, "--out", "trust.json"]);
        ok(p, &args);
        let mesh = Mesh { dir };
        mesh.write_state("state.bin", &PolicyDoc::new());
        mesh
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn signed_root(&self) -> SignedRoot {
        let text = std::fs::read_to_string(self.path().join("trust.json")).unwrap();
        from_trust_file(&text).unwrap()
    }

    fn root(&self) -> TrustRoot {
        self.signed_root().root().unwrap()
    }

    /// Writes a state export of `doc` under this mesh's trust root.
    fn write_state(&self, name: &str, doc: &PolicyDoc) {
        let export = StateExport {
            signed_root: self.signed_root().to_bytes(),
            doc: doc.save(),
        };
        std::fs::write(self.path().join(name), export.to_bytes()).unwrap();
    }

    /// A fresh node state, as a node trusting this mesh's root holds it.
    fn node_state(&self) -> SignedState {
        SignedState::new(self.root())
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.path(), args)
    }

    fn fails(&self, args: &[&str]) -> String {
        fails(self.path(), args)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path().join(name)).unwrap()
    }

    /// Writes files into a subdirectory.
    fn policy_dir(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, text) in files {
            std::fs::write(d.join(f), text).unwrap();
        }
        d
    }
}

const SCHEMA: &str = r#"
entity User;
entity Doc;
action view appliesTo { principal: User, resource: Doc };
action edit appliesTo { principal: User, resource: Doc };
"#;

const VIEW: &str = r#"
permit(principal, action == Action::"view", resource);
@id("alice-edits") permit(principal == User::"alice", action == Action::"edit", resource);
"#;

const DENY: &str = r#"forbid(principal == User::"mallory", action, resource);"#;

// ---------------------------------------------------------------------------
// node init and certify

#[test]
fn node_init_creates_the_layout() {
    let mesh = Mesh::new(1);
    let out = mesh.ok(&[
        "node",
        "init",
        "--dir",
        "n1",
        "--trust",
        "trust.json",
        "--api",
        "127.0.0.1:7300",
        "--peer",
        "/ip4/127.0.0.1/tcp/7401",
    ]);
    let id: NodeId = last_line(&out).parse().unwrap();
    let dir = mesh.path().join("n1");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("node.key")), 0o600);
    assert!(dir.join("store").is_dir());
    // The key in the directory is the node id printed.
    let shown = mesh.ok(&["key", "show", "n1/node.key"]);
    let pk: weft_protocol::identity::PublicKey = last_line(&shown).parse().unwrap();
    assert_eq!(NodeId::new(pk), id);
    // The trust file is a verbatim copy and weft.toml holds the flags.
    assert_eq!(mesh.read("trust.json"), mesh.read("n1/trust.json"));
    let config = weft_node::layout::Config::load(&dir.join("weft.toml")).unwrap();
    assert_eq!(config.api, "127.0.0.1:7300");
    assert_eq!(config.peers, vec!["/ip4/127.0.0.1/tcp/7401".to_string()]);
    assert_eq!(
        config.listen,
        weft_node::layout::Config::default().listen,
        "defaults stay"
    );

    // --json carries the same id.
    let json: serde_json::Value = serde_json::from_str(&mesh.ok(&[
        "node",
        "init",
        "--dir",
        "n2",
        "--trust",
        "trust.json",
        "--json",
    ]))
    .unwrap();
    assert!(json["node_id"].as_str().unwrap().parse::<NodeId>().is_ok());
}

#[test]
fn node_init_refuses_a_non_empty_dir_and_bad_input() {
    let mesh = Mesh::new(1);
    std::fs::create_dir(mesh.path().join("full")).unwrap();
    std::fs::write(mesh.path().join("full/something"), "x").unwrap();
    let err = mesh.fails(&["node", "init", "--dir", "full", "--trust", "trust.json"]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_dir(mesh.path().join("full")).unwrap().count(),
        1
    );

    // An empty existing directory is fine.
    std::fs::create_dir(mesh.path().join("empty")).unwrap();
    mesh.ok(&["node", "init", "--dir", "empty", "--trust", "trust.json"]);

    // A bad trust file or flag creates nothing.
    std::fs::write(mesh.path().join("bogus.json"), "{}").unwrap();
    let err = mesh.fails(&["node", "init", "--dir", "n3", "--trust", "bogus.json"]);
    assert!(err.contains("bogus.json"), "{err}");
    let err = mesh.fails(&[
        "node",
        "init",
        "--dir",
        "n3",
        "--trust",
        "trust.json",
        "--listen",
        "nonsense",
    ]);
    assert!(err.contains("--listen"), "{err}");
    assert!(!mesh.path().join("n3").exists());
}

#[test]
fn node_certify_writes_a_cert_peers_accept() {
    let mesh = Mesh::new(1);
    let id: NodeId =
        last_line(&mesh.ok(&["node", "init", "--dir", "edge-1", "--trust", "trust.json"]))
            .parse()
            .unwrap();
    let out = mesh.ok(&["node", "certify", "--key", "carol.key", "--dir", "edge-1"]);
    assert_eq!(last_line(&out).parse::<NodeId>().unwrap(), id);
    let cert = SignedNodeCert::from_bytes(&mesh.read("edge-1/node.cert")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = cert.verify(&mesh.root(), now).unwrap();
    assert_eq!(c.node, id);
    assert_eq!(c.name, "edge-1");
    assert!(c.expires >= now + 364 * 86_400);

    // A name and a lifetime can be given; re-certifying replaces the cert.
    mesh.ok(&[
        "node",
        "certify",
        "--key",
        "dave.key",
        "--dir",
        "edge-1",
        "--name",
        "gw",
        "--expires",
        "1h",
    ]);
    let c = SignedNodeCert::from_bytes(&mesh.read("edge-1/node.cert"))
        .unwrap()
        .verify(&mesh.root(), now)
        .unwrap();
    assert_eq!(c.name, "gw");
    assert!(c.expires <= now + 3600 + 60);
}

#[test]
fn node_certify_refuses_an_operator_without_admit() {
    let mesh = Mesh::new(1);
    mesh.ok(&["node", "init", "--dir", "n1", "--trust", "trust.json"]);
    let err = mesh.fails(&["node", "certify", "--key", "alice.key", "--dir", "n1"]);
    assert!(
        err.contains("operator alice does not hold the admit role"),
        "{err}"
    );
    assert!(!mesh.path().join("n1/node.cert").exists());
    // A key that is no operator at all.
    let err = mesh.fails(&["node", "certify", "--key", "root.key", "--dir", "n1"]);
    assert!(err.contains("is not an operator"), "{err}");
}

// ---------------------------------------------------------------------------
// bundle create, update sign, update show

#[test]
fn bundle_needs_two_signers_and_applies_after_cosigning() {
    let mesh = Mesh::new(2);
    mesh.policy_dir(
        "pol",
        &[
            ("view.cedar", VIEW),
            ("deny.cedar", DENY),
            ("schema.cedarschema", SCHEMA),
            ("README.md", "ignored"),
        ],
    );
    let out = mesh.ok(&[
        "bundle",
        "create",
        "--name",
        "docs",
        "--dir",
        "pol",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        "--out",
        "docs.update",
    ]);
    let id = last_line(&out).to_string();
    assert_eq!(id.len(), 64, "{out}");
    assert!(out.contains("1 more signature"), "{out}");

    // A node holding the same trust root refuses it: one signer of two.
    let bytes = mesh.read("docs.update");
    let mut node = mesh.node_state();
    match node.ingest(&bytes) {
        Err(UpdateError::TooFewSigners { have, need, .. }) => assert_eq!((have, need), (1, 2)),
        other => panic!("expected TooFewSigners, got {other:?}"),
    }

    // show --json, before and after the second signature.
    let show = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["update", "show", "docs.update", "--json"];
        args.extend(extra);
        serde_json::from_str(&mesh.ok(&args)).unwrap()
    };
    let v = show(&["--trust", "trust.json"]);
    assert_eq!(v["id"], id);
    assert_eq!(v["root_version"], 1);
    assert_eq!(v["author"]["name"], "alice");
    assert_eq!(v["signatures"].as_array().unwrap().len(), 1);
    assert_eq!(v["signatures"][0]["name"], "alice");
    assert_eq!(v["signatures"][0]["valid"], true);
    assert_eq!(v["missing_count"], 1);
    assert_eq!(v["missing"][0]["role"], "policy");
    assert_eq!(v["threshold_met"], false);
    // With the state, the exact paths are listed.
    let v = show(&["--state", "state.bin"]);
    let paths: Vec<&str> = v["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [
        "bundles/docs",
        "bundles/docs/schema",
        "bundles/docs/policies/alice-edits",
        "bundles/docs/policies/view.0",
        "bundles/docs/policies/deny.0",
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }

    // bob co-signs in place; signing again is a no-op.
    let out = mesh.ok(&[
        "update",
        "sign",
        "--key",
        "bob.key",
        "docs.update",
        "--trust",
        "trust.json",
    ]);
    assert_eq!(last_line(&out), id);
    assert!(out.contains("threshold met"), "{out}");
    let signed_once = mesh.read("docs.update");
    let out = mesh.ok(&["update", "sign", "--key", "bob.key", "docs.update"]);
    assert!(out.contains("already signed"), "{out}");
    assert_eq!(mesh.read("docs.update"), signed_once);
    assert!(!mesh.path().join("docs.update.tmp").exists());

    let v = show(&["--trust", "trust.json"]);
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(v["missing_count"], 0);
    assert_eq!(v["threshold_met"], true);

    match node.ingest(&mesh.read("docs.update")).unwrap() {
        Ingested::Applied { hash, .. } => assert_eq!(hash.to_string(), id),
        other => panic!("expected Applied, got {other:?}"),
    }
    let bundle = node.view().bundle("docs").expect("the bundle is in force");
    assert!(bundle.error.is_none());
    assert_eq!(bundle.merged.policies.len(), 3);
    assert!(bundle.merged.schema.is_some());

    // The same content again on the new state: nothing to sign.
    mesh.write_state("state2.bin", node.doc());
    let err = mesh.fails(&[
        "bundle",
        "create",
        "--name",
        "docs",
        "--dir",
        "pol",
        "--key",
        "alice.key",
        "--state",
        "state2.bin",
        "--out",
        "again.update",
    ]);
    assert!(
        err.contains("bundle docs already holds exactly this content; nothing to sign"),
        "{err}"
    );
    assert!(!mesh.path().join("again.update").exists());

    // An edit of the existing bundle, shown without a state, lists its operations.
    std::fs::remove_file(mesh.path().join("pol/deny.cedar")).unwrap();
    mesh.ok(&[
        "bundle",
        "create",
        "--name",
        "docs",
        "--dir",
        "pol",
        "--key",
        "alice.key",
        "--state",
        "state2.bin",
        "--out",
        "edit.update",
    ]);
    let out = mesh.ok(&["update", "show", "edit.update"]);
    assert!(out.contains("delete"), "{out}");
    assert!(out.contains("deny.0"), "{out}");
}

#[test]
fn invalid_policies_are_refused_before_signing() {
    let mesh = Mesh::new(1);
    // A parse error names the file.
    mesh.policy_dir("bad", &[("main.cedar", "permit(principal, action")]);
    let err = mesh.fails(&[
        "bundle",
        "create",
        "--name",
        "b",
        "--dir",
        "bad",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        "--out",
        "b.update",
    ]);
    assert!(err.contains("main.cedar"), "{err}");
    assert!(!mesh.path().join("b.update").exists());

    // A schema violation names the policy.
    mesh.policy_dir(
        "violates",
        &[
            ("schema.cedarschema", SCHEMA),
            (
                "robots.cedar",
                r#"@id("robot-rule") permit(principal == Robot::"r2", action == Action::"view", resource);"#,
            ),
        ],
    );
    let err = mesh.fails(&[
        "bundle",
        "create",
        "--name",
        "v",
        "--dir",
        "violates",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        "--out",
        "v.update",
    ]);
    assert!(err.contains("robot-rule"), "{err}");
    assert!(err.contains("schema"), "{err}");
    assert!(!mesh.path().join("v.update").exists());

    // The same id in two files.
    mesh.policy_dir(
        "dup",
        &[
            (
                "a.cedar",
                r#"@id("x") permit(principal, action, resource);"#,
            ),
            (
                "b.cedar",
                r#"@id("x") forbid(principal, action, resource);"#,
            ),
        ],
    );
    let err = mesh.fails(&[
        "bundle",
        "create",
        "--name",
        "d",
        "--dir",
        "dup",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        "--out",
        "d.update",
    ]);
    assert!(
        err.contains("`x`") && err.contains("a.cedar") && err.contains("b.cedar"),
        "{err}"
    );

    // A key that is not an operator cannot author.
    mesh.policy_dir("good", &[("p.cedar", DENY)]);
    let err = mesh.fails(&[
        "bundle",
        "create",
        "--name",
        "g",
        "--dir",
        "good",
        "--key",
        "root.key",
        "--state",
        "state.bin",
        "--out",
        "g.update",
    ]);
    assert!(err.contains("is not an operator"), "{err}");

    // An existing output file is not overwritten without --force.
    std::fs::write(mesh.path().join("exists.update"), "keep").unwrap();
    let err = mesh.fails(&[
        "bundle",
        "create",
        "--name",
        "g",
        "--dir",
        "good",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        "--out",
        "exists.update",
    ]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(mesh.read("exists.update"), b"keep");
}

// ---------------------------------------------------------------------------
// revoke

#[test]
fn revocations_of_a_uid_and_a_node_apply() {
    let mesh = Mesh::new(1);
    let node_id: NodeId =
        last_line(&mesh.ok(&["node", "init", "--dir", "n1", "--trust", "trust.json"]))
            .parse()
            .unwrap();
    let node_text = node_id.to_string();
    let mut node = mesh.node_state();

    let out = mesh.ok(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        r#"User::"alice""#,
        "--reason",
        "left the company",
        "--out",
        "alice.update",
    ]);
    let id = last_line(&out).to_string();
    match node.ingest(&mesh.read("alice.update")).unwrap() {
        Ingested::Applied { hash, .. } => assert_eq!(hash.to_string(), id),
        other => panic!("{other:?}"),
    }
    let r = node.view().revocation(r#"User::"alice""#).expect("revoked");
    assert_eq!(r.reason, "left the company");

    // The node id, built on the state that now holds alice's revocation.
    mesh.write_state("state2.bin", node.doc());
    mesh.ok(&[
        "revoke",
        "--key",
        "bob.key",
        "--state",
        "state2.bin",
        &node_text,
        "--out",
        "node.update",
        "--json",
    ]);
    assert!(matches!(
        node.ingest(&mesh.read("node.update")).unwrap(),
        Ingested::Applied { .. }
    ));
    assert!(node.view().revocation(&node_text).is_some());
    assert!(node.view().revocation(r#"User::"alice""#).is_some());

    // Revoking again with the same reason has nothing to sign.
    mesh.write_state("state3.bin", node.doc());
    let err = mesh.fails(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state3.bin",
        &node_text,
        "--out",
        "x.update",
    ]);
    assert!(err.contains("is already revoked with that reason"), "{err}");

    // Reinstating lifts it.
    mesh.ok(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state3.bin",
        "--reinstate",
        r#"User::"alice""#,
        "--out",
        "lift.update",
    ]);
    assert!(matches!(
        node.ingest(&mesh.read("lift.update")).unwrap(),
        Ingested::Applied { .. }
    ));
    assert!(node.view().revocation(r#"User::"alice""#).is_none());
    assert!(node.view().revocation(&node_text).is_some());

    // update show reads a revocation without any state.
    let v: serde_json::Value =
        serde_json::from_str(&mesh.ok(&["update", "show", "alice.update", "--json"])).unwrap();
    let bucket = weft_crdt::schema::revocation_bucket(r#"User::"alice""#);
    assert_eq!(
        v["operations"][0]["path"],
        format!(r#"revocations/{bucket}/User::"alice""#)
    );
    assert_eq!(v["signatures"].as_array().unwrap().len(), 1);
    assert!(v["threshold_met"].is_null());
}

/// `weft revoke --json` for `subject`, built on `state`; returns the lane.
fn revoke_lane(mesh: &Mesh, state: &str, subject: &str, out: &str) -> serde_json::Value {
    let json = mesh.ok(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        state,
        subject,
        "--out",
        out,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(last_line(&json)).unwrap();
    v["lane"].clone()
}

#[test]
fn an_operator_continues_one_lane_and_starts_a_new_one_when_unsure() {
    let mesh = Mesh::new(1);
    let mut node = mesh.node_state();
    let apply = |node: &mut SignedState, file: &str| match node.ingest(&mesh.read(file)) {
        Ok(Ingested::Applied { .. }) => {}
        other => panic!("{file}: {other:?}"),
    };

    let first = revoke_lane(&mesh, "state.bin", r#"User::"u1""#, "u1.update");
    assert_eq!(
        (first["seq"].as_u64(), first["continued"].as_bool()),
        (Some(1), Some(false))
    );
    apply(&mut node, "u1.update");
    let lane_file = mesh.path().join("alice.key.lane");
    let mode = std::fs::metadata(&lane_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "lane file mode {mode:o}");

    // Built on a state that holds the lane's latest change: the lane goes on.
    mesh.write_state("state2.bin", node.doc());
    let second = revoke_lane(&mesh, "state2.bin", r#"User::"u2""#, "u2.update");
    assert_eq!(second["actor"], first["actor"]);
    assert_eq!(
        (second["seq"].as_u64(), second["continued"].as_bool()),
        (Some(2), Some(true))
    );
    apply(&mut node, "u2.update");

    // Built on an older state (one without number 2): a new lane, which
    // cannot collide with anything already signed.
    let stale = revoke_lane(&mesh, "state.bin", r#"User::"u3""#, "u3.update");
    assert_ne!(stale["actor"], first["actor"]);
    assert_eq!(
        (stale["seq"].as_u64(), stale["continued"].as_bool()),
        (Some(1), Some(false))
    );
    apply(&mut node, "u3.update");

    // A lane file that does not parse starts a new lane, with a warning.
    std::fs::write(&lane_file, "not a lane").unwrap();
    mesh.write_state("state3.bin", node.doc());
    let o = weft(
        mesh.path(),
        &[
            "revoke",
            "--key",
            "alice.key",
            "--state",
            "state3.bin",
            r#"User::"u4""#,
            "--out",
            "u4.update",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not hold an author lane"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_str(last_line(&stdout(&o))).unwrap();
    assert_eq!(v["lane"]["continued"], false);
    apply(&mut node, "u4.update");

    // Every update the lanes produced applied: four revocations in force.
    for u in ["u1", "u2", "u3", "u4"] {
        assert!(node.view().revocation(&format!(r#"User::"{u}""#)).is_some());
    }
}

#[test]
fn revoke_refuses_garbage_and_a_push_without_a_node() {
    let mesh = Mesh::new(1);
    let err = mesh.fails(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        "not a subject",
        "--out",
        "x.update",
    ]);
    assert!(err.contains("neither a Cedar entity uid"), "{err}");
    assert!(!mesh.path().join("x.update").exists());

    let err = mesh.fails(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        r#"User::"a""#,
    ]);
    assert!(err.contains("--node"), "{err}");

    let err = mesh.fails(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        "--reinstate",
        r#"User::"a""#,
        "--out",
        "x.update",
    ]);
    assert!(err.contains("not revoked"), "{err}");
}

// ---------------------------------------------------------------------------
// garbage and unreachable nodes

#[test]
fn update_show_of_garbage_fails_in_one_line() {
    let mesh = Mesh::new(1);
    let mut junk = vec![0u8; 300];
    getrandom::fill(&mut junk).unwrap();
    std::fs::write(mesh.path().join("junk.update"), &junk).unwrap();
    let err = mesh.fails(&["update", "show", "junk.update"]);
    assert!(err.contains("junk.update is not a signed update"), "{err}");
    let err = mesh.fails(&["update", "sign", "--key", "alice.key", "junk.update"]);
    assert!(err.contains("is not a signed update"), "{err}");
    let err = mesh.fails(&["update", "show", "missing.update"]);
    assert!(err.contains("missing.update"), "{err}");
}

#[test]
fn update_show_flags_a_bad_signature() {
    let mesh = Mesh::new(1);
    mesh.ok(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        r#"User::"x""#,
        "--out",
        "r.update",
    ]);
    let mut bytes = mesh.read("r.update");
    // The last byte belongs to the last signature.
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(mesh.path().join("r.update"), &bytes).unwrap();
    let o = weft(mesh.path(), &["update", "show", "r.update"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("BAD"), "{}", stdout(&o));
    let err = mesh.fails(&["update", "sign", "--key", "bob.key", "r.update"]);
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn push_to_an_unreachable_node_fails_in_one_line() {
    let mesh = Mesh::new(1);
    mesh.ok(&[
        "revoke",
        "--key",
        "alice.key",
        "--state",
        "state.bin",
        r#"User::"x""#,
        "--out",
        "r.update",
    ]);
    // Port 1 on loopback: nothing listens there.
    let err = mesh.fails(&["push", "--node", "http://127.0.0.1:1", "r.update"]);
    assert!(
        err.contains("cannot reach the node at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("r.update"), "{err}");
    // A bad file is caught before anything is sent.
    std::fs::write(mesh.path().join("junk"), "junk").unwrap();
    let err = mesh.fails(&["push", "--node", "http://127.0.0.1:1", "r.update", "junk"]);
    assert!(err.contains("junk is not a signed update"), "{err}");
    // So is an unreachable node for --node as a state source.
    let err = mesh.fails(&[
        "revoke",
        "--key",
        "alice.key",
        "--node",
        "127.0.0.1:1",
        r#"User::"x""#,
    ]);
    assert!(err.contains("cannot reach the node"), "{err}");
}
