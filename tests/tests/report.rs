//! `weft report` (the real binary) against a running node holding a bundle
//! and a revocation: the JSON document's fields, and the HTML page rendered
//! by a real headless Chromium (its DOM holds the bundle, the revoked subject
//! and every control id, and no script element smuggled in by a policy or a
//! reason). The screenshot is left in `target/test-artifacts/report.png`.
//! Also the errors: an unknown extension (usage, exit 2), an unreachable
//! node and an unwritable path (one `error:` line, exit 1).
//!
//! Needs Chromium (`apt-get install chromium`); without it the test fails,
//! it does not skip.

mod browser;

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use weft_tests::mesh::{Author, Fixture, init_logs, now, push};
use weft_tests::netns::weft_bin;

const CONTROLS: [&str; 8] = [
    "CC6.1", "CC6.2", "CC6.3", "CC7.2", "CC7.3", "A.5.15", "A.8.15", "A.8.16",
];
const REASON: &str = r#"<script>alert("pwned")</script> left the company"#;

fn weft(args: &[&str]) -> Result<std::process::Output> {
    Command::new(weft_bin()?)
        .args(args)
        .output()
        .context("cannot run weft")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_report_writes_json_and_html_evidence() -> Result<()> {
    init_logs();
    browser::chromium()?;
    let fx = Fixture::new()?;
    let (node, _) = fx.spawn("n1", true, &[]).await?;
    let url = node.api_url();
    let mut author = Author::new(&fx);
    let t0 = now() as i64 - 60;
    push(
        &node,
        author.bundle_policy_at(
            "web",
            r#"permit(principal == User::"alice", action, resource) unless { context has note && context.note == "<script>alert(1)</script>" };"#,
            t0,
        )?,
    )
    .await?;
    push(
        &node,
        author.revoke_at(r#"User::"mallory""#, REASON, t0 + 30)?,
    )
    .await?;
    push(
        &node,
        author.quarantine_at(
            r#"User::"eve""#,
            r#"{"reason": "port scan", "ttl_secs": 600}"#,
            t0 + 10,
        )?,
    )
    .await?;
    // A revocation written without a time, as older tooling did.
    push(&node, author.revoke(r#"User::"trudy""#)?).await?;

    let dir = tempfile::tempdir()?;
    let json_path = dir.path().join("report.json");
    let html_path = dir.path().join("report.html");

    // The binary blocks: run it off the runtime's workers.
    let (json_out, html_out, bad_ext, unreachable, unwritable) = {
        let url = url.clone();
        let j = json_path.display().to_string();
        let h = html_path.display().to_string();
        tokio::task::spawn_blocking(move || -> Result<_> {
            Ok((
                weft(&["report", "--node", &url, "--out", &j])?,
                weft(&["report", "--node", &url, "--out", &h])?,
                weft(&["report", "--node", &url, "--out", "report.pdf"])?,
                weft(&["report", "--node", "127.0.0.1:1", "--out", &j])?,
                weft(&[
                    "report",
                    "--node",
                    &url,
                    "--out",
                    "/nonexistent-dir/report.json",
                ])?,
            ))
        })
        .await??
    };
    for (what, out) in [("json", &json_out), ("html", &html_out)] {
        ensure!(
            out.status.success(),
            "weft report ({what}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ensure!(bad_ext.status.code() == Some(2), "{bad_ext:?}");
    ensure!(
        String::from_utf8_lossy(&bad_ext.stderr).contains(".html or .json"),
        "{bad_ext:?}"
    );
    for (what, out, needle) in [
        ("unreachable", &unreachable, "cannot reach the node"),
        (
            "unwritable",
            &unwritable,
            "cannot write /nonexistent-dir/report.json",
        ),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(1), "{what}: {out:?}");
        ensure!(
            err.starts_with("error: ")
                && err.trim_end().lines().count() == 1
                && err.contains(needle),
            "{what}: {err}"
        );
    }

    // The JSON document.
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    ensure!(r["format"] == "weft-report/v1", "{r}");
    ensure!(r["node"]["node_id"] == node.node_id().to_string());
    ensure!(r["node"]["digest"].as_str().is_some_and(|d| d.len() == 64));
    let bundle = &r["bundles"][0];
    ensure!(bundle["name"] == "web", "{bundle}");
    ensure!(
        bundle["policies"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("<script>"))
    );
    ensure!(bundle["signers"][0]["name"] == "alice", "{bundle}");
    ensure!(
        bundle["signers"][0]["key"] == fx.alice.public().to_string(),
        "{bundle}"
    );
    ensure!(bundle["changes"][0]["time"] == t0, "{bundle}");
    let root = &r["trust_root"];
    ensure!(root["version"] == 1, "{root}");
    ensure!(
        root["policy_threshold"] == 1 && root["revoke_threshold"] == 1,
        "{root}"
    );
    ensure!(root["quarantine"]["max_ttl_secs"] == 3600, "{root}");
    ensure!(root["operators"][0]["name"] == "alice", "{root}");
    ensure!(
        root["operators"][0]["roles"].as_array().map(Vec::len) == Some(4),
        "{root}"
    );
    ensure!(
        r["certificates"]["node"]["valid"] == true,
        "{}",
        r["certificates"]
    );
    ensure!(r["certificates"]["node"]["name"] == "n1");
    let timeline = r["timeline"].as_array().context("no timeline")?;
    ensure!(timeline.len() == 3, "{timeline:?}");
    ensure!(timeline[0]["kind"] == "quarantine", "{timeline:?}");
    ensure!(timeline[0]["subject"] == r#"User::"eve""#, "{timeline:?}");
    ensure!(timeline[0]["reason"] == "port scan", "{timeline:?}");
    ensure!(timeline[0]["time"] == t0 + 10, "{timeline:?}");
    ensure!(timeline[0]["signers"][0] == "alice", "{timeline:?}");
    ensure!(timeline[1]["kind"] == "revocation", "{timeline:?}");
    ensure!(
        timeline[1]["subject"] == r#"User::"mallory""#,
        "{timeline:?}"
    );
    ensure!(timeline[1]["reason"] == REASON, "{timeline:?}");
    ensure!(timeline[1]["time"] == t0 + 30, "{timeline:?}");
    ensure!(timeline[1]["signers"][0] == "alice", "{timeline:?}");
    ensure!(timeline[2]["subject"] == r#"User::"trudy""#, "{timeline:?}");
    ensure!(timeline[2]["time"].is_null(), "{timeline:?}");
    ensure!(r["revocations"].as_array().map(Vec::len) == Some(2));
    ensure!(
        r["quarantines"][0]["record"]["ttl_secs"] == 600,
        "{}",
        r["quarantines"]
    );
    ensure!(r["decisions"]["updates_applied"] == 4, "{}", r["decisions"]);

    // GET /v1/anomalies: no detector yet, the active quarantines.
    let anomalies: Value = reqwest::get(format!("{url}/v1/anomalies"))
        .await?
        .json()
        .await?;
    ensure!(anomalies["alerts"] == serde_json::json!([]), "{anomalies}");
    ensure!(
        anomalies["quarantines"][0]["subject"] == r#"User::"eve""#,
        "{anomalies}"
    );
    ensure!(
        anomalies["quarantines"][0]["record"]["reason"] == "port scan",
        "{anomalies}"
    );
    // The node's audit chain, verified live by the node.
    ensure!(r["audit"]["verify"]["ok"] == true, "{}", r["audit"]);
    ensure!(
        r["audit"]["status"]["records"].as_u64() >= Some(1),
        "{}",
        r["audit"]
    );
    let controls = r["controls"].as_array().context("no controls")?;
    let ids: Vec<&str> = controls.iter().filter_map(|c| c["id"].as_str()).collect();
    ensure!(ids == CONTROLS, "{ids:?}");
    for c in controls {
        ensure!(
            ["met", "partial", "not met", "not available"]
                .contains(&c["status"].as_str().unwrap_or("")),
            "{c}"
        );
    }
    let a815 = controls
        .iter()
        .find(|c| c["id"] == "A.8.15")
        .context("A.8.15")?;
    ensure!(a815["status"] == "met", "{a815}");
    let cc61 = controls
        .iter()
        .find(|c| c["id"] == "CC6.1")
        .context("CC6.1")?;
    ensure!(cc61["status"] == "met", "{cc61}");

    // The HTML, rendered by Chromium.
    let html = std::fs::read_to_string(&html_path)?;
    ensure!(!html.contains("<script"), "the page has a script element");
    let file_url = format!("file://{}", html_path.display());
    let dom = {
        let u = file_url.clone();
        tokio::task::spawn_blocking(move || browser::dump_dom(&u)).await??
    };
    ensure!(dom.contains("<h1>Weft compliance report</h1>"), "{dom}");
    ensure!(
        dom.contains("<code>web</code>"),
        "no bundle name in the DOM"
    );
    ensure!(
        dom.contains(r#"User::"mallory""#),
        "no revoked subject in the DOM"
    );
    ensure!(
        dom.contains("time not recorded"),
        "no untimed change in the DOM"
    );
    ensure!(
        dom.contains("&lt;script&gt;alert(\"pwned\")&lt;/script&gt;"),
        "the reason is not shown as text"
    );
    ensure!(!dom.contains("<script"), "a script element reached the DOM");
    for id in CONTROLS {
        ensure!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "control {id} missing from the DOM"
        );
    }
    let png = browser::artifacts_dir()?.join("report.png");
    {
        let png = png.clone();
        tokio::task::spawn_blocking(move || browser::screenshot(&file_url, &png, 1200, 2400))
            .await??;
    }
    println!("REPORT screenshot: {}", png.display());
    node.shutdown().await?;
    Ok(())
}
