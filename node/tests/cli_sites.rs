//! Names, QUIC and per-peer transport through the real `weft` binary: two
//! `weft node run` processes, one listening by name on TCP and on QUIC
//! (`--listen-quic`), the other set by `WEFT_LISTEN_QUIC` and dialing the
//! first by name over QUIC; `weft status` shows the peer's transport,
//! route and address. Listen addresses the node cannot use exit 1 with
//! one line naming the setting.

mod support;

use std::process::{Command, Stdio};

use support::{Node, fails, free_port, mesh_dirs, ok, wait_for};

/// A free UDP port on loopback.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `weft node run` in `base` with these extra arguments and environment.
fn run(base: &std::path::Path, dir: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
    let api = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(["node", "run", "--dir", dir, "--api", &api])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(base)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(base.join(format!("{dir}.log"))).unwrap(),
        ));
    Node {
        child: cmd.spawn().unwrap(),
        api,
        p2p: 0,
    }
}

#[test]
fn nodes_run_by_name_over_quic_and_status_shows_the_transport() {
    let tmp = mesh_dirs(2);
    let base = tmp.path();
    let (tcp, quic) = (free_port(), free_udp_port());
    let n1 = run(
        base,
        "n1",
        &[
            "--listen",
            &format!("/dns4/localhost/tcp/{tcp}"),
            "--listen-quic",
            &format!("/ip4/127.0.0.1/udp/{quic}/quic-v1"),
        ],
        &[],
    );
    let n2_quic = free_udp_port();
    let n2 = run(
        base,
        "n2",
        &[
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{}", free_port()),
            "--peer",
            &format!("/dns4/localhost/udp/{quic}/quic-v1"),
        ],
        &[(
            "WEFT_LISTEN_QUIC",
            &format!("/ip4/127.0.0.1/udp/{n2_quic}/quic-v1"),
        )],
    );
    let url = format!("http://{}", n2.api);
    let status = wait_for(30, "n2 to admit n1 over QUIC", || {
        let o = support::weft(base, &["status", "--node", &url, "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let p = s["peers"].as_array()?.first()?.clone();
        (p["admitted"] == true).then_some(p)
    });
    assert_eq!(status["transport"], "quic", "{status}");
    assert_eq!(status["route"], "direct", "{status}");
    assert_eq!(
        status["address"],
        format!("/dns4/localhost/udp/{quic}/quic-v1"),
        "{status}"
    );
    let text = ok(base, &["status", "--node", &url]);
    assert!(
        text.contains(&format!("quic direct /dns4/localhost/udp/{quic}/quic-v1")),
        "{text}"
    );
    // n1 listens on both, its name resolved at start.
    let s1: serde_json::Value = serde_json::from_str(&ok(
        base,
        &["status", "--node", &format!("http://{}", n1.api), "--json"],
    ))
    .unwrap();
    let listen: Vec<&str> = s1["listen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        listen.contains(&format!("/ip4/127.0.0.1/tcp/{tcp}").as_str())
            && listen.contains(&format!("/ip4/127.0.0.1/udp/{quic}/quic-v1").as_str()),
        "{listen:?}"
    );
    drop((n1, n2));
}

#[test]
fn listen_addresses_the_node_cannot_use_name_their_setting() {
    let tmp = mesh_dirs(1);
    let base = tmp.path();
    let api = format!("127.0.0.1:{}", free_port());
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["node", "run", "--dir", "n1", "--api", &api];
        args.extend_from_slice(extra);
        let e = fails(base, &args, env);
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    let e = run(&["--listen-quic", "/ip4/127.0.0.1/tcp/7101"], &[]);
    assert!(
        e.contains("listen_quic (from flag --listen-quic)") && e.contains("not a QUIC address"),
        "{e}"
    );
    let e = run(&["--listen", "/ip4/127.0.0.1/udp/7101"], &[]);
    assert!(
        e.contains("listen (from flag --listen)") && e.contains("/udp/PORT/quic-v1"),
        "{e}"
    );
    let e = run(&[], &[("WEFT_LISTEN_QUIC", "/ip4/127.0.0.1/udp/1/ws")]);
    assert!(e.contains("listen_quic (from env WEFT_LISTEN_QUIC)"), "{e}");
}
