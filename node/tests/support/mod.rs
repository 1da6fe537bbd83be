//! What the binary tests (API security, reloads, traces) share: running `weft`, a mesh's trust
//! root and node directories, `weft node run` processes that are killed
//! when a test ends, and test certificates made with rcgen.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `weft` in `dir`.
pub fn weft(dir: &Path, args: &[&str]) -> Output {
    weft_env(dir, args, &[])
}

/// Runs `weft` in `dir` with extra environment variables.
pub fn weft_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("WEFT_CA")
        .env_remove("WEFT_CLIENT_CERT")
        .env_remove("WEFT_CLIENT_KEY")
        .env_remove("WEFT_API_TOKEN")
        .env_remove("WEFT_API_TOKEN_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Runs `weft` and returns its stdout; fails the test if it fails.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = weft(dir, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "weft {args:?} failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Runs `weft`, expects it to fail with exit 1, and returns its stderr.
pub fn fails(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = weft_env(dir, args, env);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "weft {args:?} should fail: {err}");
    err
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp dir with a trust root (`trust.json`, operator key `ops.key`
/// holding every role) and certified node directories `n1`..=`nN`.
pub fn mesh_dirs(n: usize) -> tempfile::TempDir {
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
    for i in 1..=n {
        let d = format!("n{i}");
        ok(p, &["node", "init", "--dir", &d, "--trust", "trust.json"]);
        ok(p, &["node", "certify", "--key", "ops.key", "--dir", &d]);
    }
    dir
}

/// Appends settings to `DIR/weft.toml`, replacing a key written with its default.
pub fn configure(node_dir: &Path, settings: &[(&str, &str)]) {
    let path = node_dir.join("weft.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in settings {
        text = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{k} =")))
            .collect::<Vec<_>>()
            .join("\n");
        text.push_str(&format!("\n{k} = {v}\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// A `weft node run` process, killed when dropped.
pub struct Node {
    /// The process.
    pub child: Child,
    /// `HOST:PORT` of its API.
    pub api: String,
    /// Its libp2p port.
    pub p2p: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Sends the process a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The libp2p multiaddr peers dial.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.p2p)
    }
}

/// Starts `weft node run --dir DIR` in `base` on free loopback ports.
pub fn run(base: &Path, dir: &str, peers: &[String]) -> Node {
    run_api(base, dir, &format!("127.0.0.1:{}", free_port()), peers)
}

/// Starts `weft node run --dir DIR --api API` in `base`.
pub fn run_api(base: &Path, dir: &str, api: &str, peers: &[String]) -> Node {
    let p2p = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args([
        "node",
        "run",
        "--dir",
        dir,
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{p2p}"),
        "--api",
        api,
    ])
    .current_dir(base)
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::from(
        std::fs::File::create(base.join(format!("{dir}.log"))).unwrap(),
    ));
    for p in peers {
        cmd.args(["--peer", p]);
    }
    Node {
        child: cmd.spawn().unwrap(),
        api: api.to_owned(),
        p2p,
    }
}

/// Polls `f` every 100 ms until it gives `Some`, for at most `secs` seconds.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A test CA and what it signs.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and key (PEM) for `names`, for a server or a client.
    pub fn issue(&self, names: &[&str], client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate for loopback to `cert` and `key` under `dir`.
    pub fn write_server(&self, dir: &Path, cert: &str, key: &str) {
        let (c, k) = self.issue(&["localhost", "127.0.0.1"], false);
        std::fs::write(dir.join(cert), c).unwrap();
        std::fs::write(dir.join(key), k).unwrap();
    }
}

/// A blocking client trusting the CA files `cas` (PEM), with an optional
/// client identity (PEM certificate and key).
pub fn https_client(cas: &[&Path], identity: Option<(&Path, &Path)>) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    for ca in cas {
        for c in reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap() {
            b = b.add_root_certificate(c);
        }
    }
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// `PathBuf` of `name` under `dir`.
pub fn at(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A decision request every node answers (deny, with no policy).
pub const DECISION: &str =
    r#"{"principal":"User::\"alice\"","action":"Action::\"view\"","resource":"Doc::\"d\""}"#;
