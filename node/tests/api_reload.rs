//! Hot reload on a live mesh, with real `weft node run` processes: the
//! API's certificate replaced and SIGHUP sent, then served to new
//! connections while the peer stays connected and a decision loop sees no
//! error; a broken key file keeps the old certificate and shows the error
//! in `GET /v1/status`; a token file edited while running takes effect; a
//! renewed `DIR/node.cert` is adopted; a rotated client CA is adopted on
//! SIGHUP and a broken one leaves the one in force.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::*;

#[test]
fn certificates_tokens_and_the_node_cert_reload_without_dropping_anything() {
    let dir = mesh_dirs(2);
    let p = dir.path();
    let old_ca = Ca::new("old API CA");
    let new_ca = Ca::new("new API CA");
    std::fs::write(p.join("old-ca.pem"), old_ca.pem()).unwrap();
    std::fs::write(p.join("new-ca.pem"), new_ca.pem()).unwrap();
    old_ca.write_server(&p.join("n1"), "api.crt", "api.key");
    let token = ok(
        p,
        &[
            "api",
            "token",
            "add",
            "--file",
            "n1/tokens",
            "--name",
            "ops",
            "--scope",
            "read",
        ],
    );
    let token = token.lines().last().unwrap().to_owned();
    configure(
        &p.join("n1"),
        &[
            ("api_tls_cert", "\"api.crt\""),
            ("api_tls_key", "\"api.key\""),
            ("api_tokens_file", "\"tokens\""),
        ],
    );
    let a = run(p, "n1", &[]);
    let b = run(p, "n2", &[a.multiaddr()]);
    let url = format!("https://{}", a.api);
    let both = https_client(&[&p.join("old-ca.pem"), &p.join("new-ca.pem")], None);
    let status = |client: &reqwest::blocking::Client| -> Option<Value> {
        let r = client
            .get(format!("{url}/v1/status"))
            .bearer_auth(&token)
            .send()
            .ok()?;
        (r.status() == 200).then(|| r.json().unwrap())
    };
    let connected = |s: &Value| s["peers"].as_array().is_some_and(|a| !a.is_empty());
    wait_for(60, "node 2 to connect to node 1", || {
        status(&both).filter(|s| connected(s))
    });
    let _ = &b;

    // A decision loop over TLS that runs through every reload below.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let looper = {
        let (stop, served, errors) = (stop.clone(), served.clone(), errors.clone());
        let client = both.clone();
        let url = url.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = client
                    .post(format!("{url}/v1/authorize"))
                    .body(DECISION)
                    .send()
                    .is_ok_and(|r| r.status() == 200);
                if ok { &served } else { &errors }.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // The old CA verifies the node; the new one does not, yet.
    let cli_status = |ca: &str| {
        weft_env(
            p,
            &["status", "--node", &url, "--ca", ca],
            &[("WEFT_API_TOKEN", &token)],
        )
        .status
        .success()
    };
    assert!(cli_status("old-ca.pem"));
    assert!(!cli_status("new-ca.pem"));

    // Renew the certificate under the new CA, and SIGHUP.
    new_ca.write_server(&p.join("n1"), "api.crt", "api.key");
    a.signal("HUP");
    wait_for(20, "the new certificate to be served", || {
        cli_status("new-ca.pem").then_some(())
    });
    assert!(!cli_status("old-ca.pem"));
    let s = status(&both).unwrap();
    assert!(connected(&s), "the peer stayed connected: {s}");
    assert!(s["reload"]["api_tls"]["last_error"].is_null(), "{s}");

    // A broken key: the node keeps serving the certificate it has, and says why.
    std::fs::write(p.join("n1/api.key"), "not a key").unwrap();
    let s = wait_for(20, "the failed reload in /v1/status", || {
        status(&both).filter(|s| s["reload"]["api_tls"]["last_error"].is_string())
    });
    let err = s["reload"]["api_tls"]["last_error"].as_str().unwrap();
    assert!(
        err.contains("api_tls_key") && err.contains("api.key"),
        "{err}"
    );
    assert!(
        cli_status("new-ca.pem"),
        "the old certificate is still served"
    );

    // A token added while running works within seconds, with no signal.
    let second = ok(
        p,
        &[
            "api",
            "token",
            "add",
            "--file",
            "n1/tokens",
            "--name",
            "late",
            "--scope",
            "read",
        ],
    );
    let second = second.lines().last().unwrap().to_owned();
    wait_for(20, "the new token to be accepted", || {
        both.get(format!("{url}/v1/status"))
            .bearer_auth(&second)
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });

    // A renewed node certificate (30 days instead of 365) is adopted.
    let expires = |s: &Value| s["certificates"]["node"]["expires"].as_u64();
    let report = || -> Option<Value> {
        let r = both
            .get(format!("{url}/v1/report"))
            .bearer_auth(&token)
            .send()
            .ok()?;
        (r.status() == 200).then(|| r.json().unwrap())
    };
    let before = expires(&report().unwrap()).unwrap();
    ok(
        p,
        &[
            "node",
            "certify",
            "--key",
            "ops.key",
            "--dir",
            "n1",
            "--expires",
            "30d",
        ],
    );
    let after = wait_for(20, "the renewed node certificate", || {
        report().and_then(|r| expires(&r)).filter(|e| *e < before)
    });
    assert!(before - after > 300 * 24 * 3600);
    let s = status(&both).unwrap();
    assert!(s["reload"]["node_cert"]["last_error"].is_null(), "{s}");
    assert!(connected(&s), "the peer stayed connected: {s}");

    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
    let (served, errors) = (
        served.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    assert!(served > 50, "{served} decisions served");
    assert_eq!(errors, 0, "decisions failed during the reloads");
}

/// The client CA rotated while running: on SIGHUP, a client certificate
/// from the new CA reads and one from the old CA no longer does, while
/// decisions stay open to callers with no certificate; a client CA file
/// that holds no certificate keeps the CA in force and says why.
#[test]
fn a_rotated_client_ca_is_adopted_on_sighup() {
    let dir = mesh_dirs(1);
    let p = dir.path();
    let server = Ca::new("API CA");
    let (old, new) = (Ca::new("old clients CA"), Ca::new("new clients CA"));
    std::fs::write(p.join("ca.pem"), server.pem()).unwrap();
    server.write_server(&p.join("n1"), "api.crt", "api.key");
    std::fs::write(p.join("n1/clients.pem"), old.pem()).unwrap();
    for (who, issuer) in [("old", &old), ("new", &new)] {
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
    let client = |who: &str| {
        https_client(
            &[&p.join("ca.pem")],
            Some((&p.join(format!("{who}.crt")), &p.join(format!("{who}.key")))),
        )
    };
    // A read with a certificate of `who`; a refused handshake reads as no.
    let reads = |who: &str| {
        client(who)
            .get(format!("{url}/v1/status"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    };
    wait_for(30, "a read with the old CA's certificate", || {
        reads("old").then_some(())
    });
    assert!(
        !reads("new"),
        "a certificate from a CA not yet trusted reads"
    );

    std::fs::write(p.join("n1/clients.pem"), new.pem()).unwrap();
    node.signal("HUP");
    wait_for(20, "a read with the new CA's certificate", || {
        reads("new").then_some(())
    });
    assert!(!reads("old"), "the old CA's certificate still reads");
    let anon = https_client(&[&p.join("ca.pem")], None);
    let r = anon
        .post(format!("{url}/v1/authorize"))
        .body(DECISION)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "decisions stay open without a certificate");

    // A client CA file with no certificate in it: the new CA stays.
    std::fs::write(p.join("n1/clients.pem"), "no certificate here").unwrap();
    node.signal("HUP");
    let s = wait_for(20, "the failed client CA reload in /v1/status", || {
        client("new")
            .get(format!("{url}/v1/status"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
            .map(|r| r.json::<Value>().unwrap())
            .filter(|s| s["reload"]["api_tls"]["last_error"].is_string())
    });
    let err = s["reload"]["api_tls"]["last_error"].as_str().unwrap();
    assert!(err.contains("clients.pem"), "{err}");
    assert!(
        reads("new"),
        "the CA in force before the bad file still reads"
    );
    assert!(!reads("old"));
}
