//! The HTTP API's transport security and access control, on real `weft
//! node run` processes: HTTPS with rustls (a decision over TLS, `weft
//! status --ca`), mTLS for reads (a client certificate from
//! `api_client_ca` accepted, none or another CA's refused), bearer tokens
//! and their scopes (401, 403, 200, the audit record, no plaintext token at
//! rest), the update rate limit (429), the refusal of plain HTTP on a
//! non-loopback address without `api_insecure`, and reads closed on a
//! non-loopback TLS address with no credential configured.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use serde_json::Value;
use support::*;

#[test]
fn https_with_mtls_guards_reads_and_leaves_decisions_open() {
    let dir = mesh_dirs(1);
    let p = dir.path();
    let ca = Ca::new("api CA");
    let clients = Ca::new("clients CA");
    let other = Ca::new("someone else's CA");
    std::fs::write(p.join("ca.pem"), ca.pem()).unwrap();
    ca.write_server(&p.join("n1"), "api.crt", "api.key");
    std::fs::write(p.join("n1/clients.pem"), clients.pem()).unwrap();
    for (who, issuer) in [("good", &clients), ("bad", &other)] {
        let (c, k) = issuer.issue(&["ops"], true);
        std::fs::write(p.join(format!("{who}.crt")), c).unwrap();
        std::fs::write(p.join(format!("{who}.key")), k).unwrap();
    }
    configure(
        &p.join("n1"),
        &[
            ("api_tls_cert", "\"api.crt\""),
            ("api_tls_key", "\"api.key\""),
            ("api_client_ca", "\"clients.pem\""),
        ],
    );
    let node = run(p, "n1", &[]);
    let url = format!("https://{}", node.api);
    let anon = https_client(&[&p.join("ca.pem")], None);
    wait_for(30, "the node over https", || {
        anon.get(format!("{url}/readyz"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });

    // A decision over TLS, with no client certificate.
    let r = anon
        .post(format!("{url}/v1/authorize"))
        .header("content-type", "application/json")
        .body(DECISION)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().unwrap();
    assert_eq!(d["decision"], "deny");

    // Reads need the client certificate.
    let r = anon.get(format!("{url}/v1/status")).send().unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("client certificate"),
        "{e}"
    );
    let good = https_client(
        &[&p.join("ca.pem")],
        Some((&p.join("good.crt"), &p.join("good.key"))),
    );
    assert_eq!(
        good.get(format!("{url}/v1/status"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        good.get(format!("{url}/metrics")).send().unwrap().status(),
        200
    );

    // The CLI: --ca and a client certificate work; each missing piece fails clearly.
    let out = ok(
        p,
        &[
            "status",
            "--node",
            &url,
            "--ca",
            "ca.pem",
            "--client-cert",
            "good.crt",
            "--client-key",
            "good.key",
            "--json",
        ],
    );
    let status: Value = serde_json::from_str(&out).unwrap();
    assert!(status["node_id"].is_string(), "{out}");
    let env = [
        ("WEFT_CA", "ca.pem"),
        ("WEFT_CLIENT_CERT", "good.crt"),
        ("WEFT_CLIENT_KEY", "good.key"),
    ];
    assert!(
        weft_env(p, &["status", "--node", &url], &env)
            .status
            .success()
    );
    let err = fails(p, &["status", "--node", &url], &[]);
    assert!(err.contains("--ca FILE"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = fails(p, &["status", "--node", &url, "--ca", "ca.pem"], &[]);
    assert!(
        err.contains("401") && err.contains("client certificate"),
        "{err}"
    );
    // A certificate from a CA the node does not trust fails the handshake.
    fails(
        p,
        &[
            "status",
            "--node",
            &url,
            "--ca",
            "ca.pem",
            "--client-cert",
            "bad.crt",
            "--client-key",
            "bad.key",
        ],
        &[],
    );
    let other_client = https_client(
        &[&p.join("ca.pem")],
        Some((&p.join("bad.crt"), &p.join("bad.key"))),
    );
    assert!(other_client.get(format!("{url}/v1/status")).send().is_err());
    // Plain HTTP to the TLS port gets nowhere.
    assert!(
        reqwest::blocking::get(format!("http://{}/healthz", node.api))
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );
}

#[test]
fn tokens_have_scopes_are_hashed_at_rest_and_refusals_are_audited() {
    let dir = mesh_dirs(1);
    let p = dir.path();
    let mut tokens = Vec::new();
    for (name, scope) in [
        ("ci", "read"),
        ("prom", "metrics"),
        ("auditor", "audit,read"),
    ] {
        let out = ok(
            p,
            &[
                "api",
                "token",
                "add",
                "--file",
                "n1/tokens",
                "--name",
                name,
                "--scope",
                scope,
            ],
        );
        tokens.push(out.lines().last().unwrap().to_owned());
    }
    let file = std::fs::read_to_string(p.join("n1/tokens")).unwrap();
    for t in &tokens {
        assert!(
            t.starts_with("weftapi_") && !file.contains(t.as_str()),
            "{file}"
        );
    }
    let mode = std::fs::metadata(p.join("n1/tokens"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = fails(
        p,
        &[
            "api",
            "token",
            "add",
            "--file",
            "n1/tokens",
            "--name",
            "ci",
            "--scope",
            "read",
        ],
        &[],
    );
    assert!(err.contains("already has a token named ci"), "{err}");

    configure(
        &p.join("n1"),
        &[
            ("api_tokens_file", "\"tokens\""),
            ("api_updates_per_minute", "1"),
            ("api_updates_burst", "3"),
        ],
    );
    let node = run(p, "n1", &[]);
    let url = format!("http://{}", node.api);
    let http = reqwest::blocking::Client::new();
    wait_for(30, "the node", || {
        http.get(format!("{url}/readyz"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{url}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (ci, prom, auditor) = (&tokens[0], &tokens[1], &tokens[2]);
    let (code, body) = get("/v1/status", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token with scope read"), "{body}");
    let (code, body) = get("/v1/status", Some(prom));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("token prom lacks scope read"), "{body}");
    assert_eq!(get("/v1/status", Some(ci)).0, 200);
    assert_eq!(get("/v1/dashboard", Some(ci)).0, 200);
    assert_eq!(get("/metrics", Some(prom)).0, 200);
    assert_eq!(get("/metrics", Some(ci)).0, 403);
    assert_eq!(get("/v1/audit/status", Some(ci)).0, 403);
    assert_eq!(get("/v1/status", Some("weftapi_0123")).0, 401);
    // Open: health, the dashboard page, decisions.
    assert_eq!(get("/healthz", None).0, 200);
    assert_eq!(get("/", None).0, 200);
    let r = http
        .post(format!("{url}/v1/authorize"))
        .body(DECISION)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // The CLI sends a token from --token-file or $WEFT_API_TOKEN.
    std::fs::write(p.join("ci.token"), format!("{ci}\n")).unwrap();
    ok(p, &["status", "--node", &url, "--token-file", "ci.token"]);
    assert!(
        weft_env(p, &["status", "--node", &url], &[("WEFT_API_TOKEN", ci)])
            .status
            .success()
    );
    let err = fails(p, &["status", "--node", &url], &[("WEFT_API_TOKEN", prom)]);
    assert!(
        err.contains("403") && err.contains("lacks scope read"),
        "{err}"
    );

    // POST /v1/updates: open, but 3 in a burst per client, then 429.
    let codes: Vec<u16> = (0..5)
        .map(|_| {
            http.post(format!("{url}/v1/updates"))
                .body(vec![1u8, 2, 3])
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(codes[..3].iter().all(|c| *c == 400), "{codes:?}");
    assert_eq!(&codes[3..], &[429, 429]);
    let body = http
        .post(format!("{url}/v1/updates"))
        .body(vec![1u8])
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("api_updates_burst"), "{body}");

    // Each refusal is in the audit trail, naming the credential but never a token.
    let records = wait_for(10, "the refusals in the audit trail", || {
        let (code, body) = get("/v1/audit", Some(auditor));
        assert_eq!(code, 200, "{body}");
        let refused: Vec<Value> = body
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r.to_string().contains("api_refused"))
            .collect();
        (refused.len() >= 6).then_some((refused, body))
    });
    let (refused, all) = records;
    for t in &tokens {
        assert!(!all.contains(t.as_str()));
    }
    let text = serde_json::to_string(&refused).unwrap();
    assert!(
        text.contains("token prom") && text.contains("\"status\":403"),
        "{text}"
    );
    assert!(
        text.contains("\"status\":401") && text.contains("\"status\":429"),
        "{text}"
    );
    assert!(text.contains("token sha256:"), "{text}");

    // Nor does the node's log (at info) hold any token it was shown.
    let log = std::fs::read_to_string(p.join("n1.log")).unwrap();
    assert!(log.contains("api"), "the node's log is empty: {log}");
    for t in &tokens {
        assert!(!log.contains(t.as_str()), "a token in the node's log");
    }
}

#[test]
fn plain_http_off_loopback_needs_api_insecure() {
    let dir = mesh_dirs(1);
    let p = dir.path();
    let port = free_port();
    let mut node = run_api(p, "n1", &format!("0.0.0.0:{port}"), &[]);
    let status = wait_for(30, "the refusal", || node.child.try_wait().unwrap());
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(p.join("n1.log")).unwrap();
    assert!(
        log.contains("not a loopback address") && log.contains("api_insecure"),
        "{log}"
    );
    drop(node);

    configure(&p.join("n1"), &[("api_insecure", "true")]);
    let node = run_api(p, "n1", &format!("0.0.0.0:{port}"), &[]);
    let url = format!("http://127.0.0.1:{port}");
    wait_for(30, "the insecure node", || {
        reqwest::blocking::get(format!("{url}/readyz"))
            .ok()
            .filter(|r| r.status() == 200)
    });
    // No credential configured, api_insecure: reads are open, with a warning.
    assert_eq!(
        reqwest::blocking::get(format!("{url}/v1/status"))
            .unwrap()
            .status(),
        200
    );
    let log = std::fs::read_to_string(p.join("n1.log")).unwrap();
    assert!(log.contains("api_insecure"), "{log}");
    drop(node);

    // TLS off loopback with no credential configured: the node starts,
    // decisions are served, reads are refused (nothing could grant them).
    let ca = Ca::new("api CA");
    std::fs::write(p.join("ca.pem"), ca.pem()).unwrap();
    ca.write_server(&p.join("n1"), "api.crt", "api.key");
    configure(
        &p.join("n1"),
        &[
            ("api_insecure", "false"),
            ("api_tls_cert", "\"api.crt\""),
            ("api_tls_key", "\"api.key\""),
        ],
    );
    let _node = run_api(p, "n1", &format!("0.0.0.0:{port}"), &[]);
    let url = format!("https://127.0.0.1:{port}");
    let https = https_client(&[&p.join("ca.pem")], None);
    wait_for(30, "the TLS node", || {
        https
            .get(format!("{url}/readyz"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
    let r = https.get(format!("{url}/v1/status")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .unwrap()
            .contains("neither api_client_ca nor api_tokens_file")
    );
    let r = https
        .post(format!("{url}/v1/authorize"))
        .body(DECISION)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
