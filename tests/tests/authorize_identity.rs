//! `POST /v1/authorize` of a real node cannot be talked into a forged
//! identity: a request's `context` may not set `token` (only a verified
//! token does), and a request's own entities may add new entities but never
//! redefine a stored one or define a stored entity's ancestor. Each is
//! refused with a 400 and one sentence; new entities are still decided.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::json;
use weft_crdt::BundleContent;
use weft_tests::mesh::{Author, Fixture, authorize_body, init_logs, push};

/// A request for `Doc::"d"` by `principal` with these extra fields.
fn ask(principal: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "principal": principal,
        "action": r#"Action::"view""#,
        "resource": r#"Doc::"d""#,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

/// A 400 with a one-line error containing `needle`.
fn refused(code: u16, v: &serde_json::Value, needle: &str) -> Result<()> {
    let e = v["error"].as_str().unwrap_or_default();
    ensure!(code == 400, "{code} {v}");
    ensure!(e.contains(needle) && !e.contains('\n'), "{v}");
    ensure!(v.as_object().is_some_and(|o| o.len() == 1), "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cannot_forge_identity() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (node, _) = fx.spawn("n1", true, &[]).await?;
    let mut author = Author::new(&fx);
    push(
        &node,
        author.bundle_policy(
            "teams",
            r#"permit(principal, action, resource) when { context.token.team == "red" };"#,
        )?,
    )
    .await?;
    let mut groups = BundleContent::default();
    groups.policies.insert(
        "admins".into(),
        r#"permit(principal in Group::"admins", action, resource);"#.into(),
    );
    // bob is in interns, a group the bundle names but does not define.
    groups.entities = Some(
        r#"[{"uid":{"type":"User","id":"bob"},"attrs":{},"parents":[{"type":"Group","id":"interns"}]},
            {"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]}]"#
            .into(),
    );
    push(&node, author.bundle_content("groups", &groups)?).await?;

    // context.token is the node's to set, from a verified token: a request
    // naming a principal may not claim a token's attributes.
    let (code, v) = authorize_body(
        &node,
        &ask(
            r#"User::"mallory""#,
            json!({"context": {"token": {"team": "red"}}}),
        ),
    )
    .await?;
    refused(code, &v, "\"token\"")?;
    let (code, v) = authorize_body(&node, &ask(r#"User::"mallory""#, json!({}))).await?;
    ensure!(code == 200 && v["decision"] == "deny", "{code} {v}");

    // A request may not make bob an admin by defining his group...
    let interns_in_admins = json!({"entities": [{
        "uid": {"type": "Group", "id": "interns"}, "attrs": {},
        "parents": [{"type": "Group", "id": "admins"}],
    }]});
    let (code, v) = authorize_body(&node, &ask(r#"User::"bob""#, interns_in_admins)).await?;
    refused(code, &v, r#"Group::"interns""#)?;
    // ...nor by redefining bob, nor a stored group.
    for uid in [
        json!({"type": "User", "id": "bob"}),
        json!({"type": "Group", "id": "staff"}),
    ] {
        let redefined = json!({"entities": [{
            "uid": uid, "attrs": {}, "parents": [{"type": "Group", "id": "admins"}],
        }]});
        let (code, v) = authorize_body(&node, &ask(r#"User::"bob""#, redefined)).await?;
        refused(code, &v, "is defined by the policy bundles")?;
    }
    let (code, v) = authorize_body(&node, &ask(r#"User::"bob""#, json!({}))).await?;
    ensure!(code == 200 && v["decision"] == "deny", "{code} {v}");

    // New entities, under stored ones or not, are decided as before.
    let visitor = json!({"entities": [
        {"uid": {"type": "User", "id": "visitor"}, "attrs": {}, "parents": [{"type": "Group", "id": "guests"}]},
        {"uid": {"type": "Group", "id": "guests"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]},
    ]});
    let (code, v) = authorize_body(&node, &ask(r#"User::"visitor""#, visitor)).await?;
    ensure!(code == 200 && v["decision"] == "deny", "{code} {v}");
    let visitor_admin = json!({"entities": [
        {"uid": {"type": "User", "id": "visitor"}, "attrs": {}, "parents": [{"type": "Group", "id": "admins"}]},
    ]});
    let (code, v) = authorize_body(&node, &ask(r#"User::"visitor""#, visitor_admin)).await?;
    ensure!(code == 200 && v["decision"] == "allow", "{code} {v}");

    tokio::time::timeout(Duration::from_secs(30), node.shutdown()).await??;
    Ok(())
}
