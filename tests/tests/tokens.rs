//! Identity tokens at `POST /v1/authorize` of a real node: a valid token is
//! decided for its principal (with its attributes in `context.token`); an
//! expired, forged or revoked token, or one that lives longer than the trust
//! root allows, is denied with the reason; a token whose principal is revoked
//! is denied with `revoked: true`.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::json;
use weft_protocol::identity::SecretKey;
use weft_protocol::token::{self, Token};
use weft_tests::mesh::{Author, Fixture, authorize_body, authorize_token, init_logs, now, push};

fn token(fx: &Fixture, principal: &str, id: u8) -> Token {
    Token {
        principal: principal.into(),
        attrs: [("team".to_string(), "red".to_string())].into(),
        issuer: fx.alice.public(),
        issued: now(),
        expires: now() + 600,
        id: [id; 16],
    }
}

fn errors(v: &serde_json::Value) -> String {
    v["errors"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_on_every_request() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (node, _) = fx.spawn("n1", true, &[]).await?;
    let mut author = Author::new(&fx);
    push(&node, author.bundle("b", r#"User::"alice""#)?).await?;
    push(
        &node,
        author.bundle_policy(
            "teams",
            r#"permit(principal == User::"bob", action, resource) when { context.token.team == "red" && context.ip == "10.0.0.1" };"#,
        )?,
    )
    .await?;

    // A valid token is decided for its principal.
    let alice = token(&fx, r#"User::"alice""#, 1);
    let valid = token::issue(&alice, &fx.alice);
    let v = authorize_token(&node, &valid).await?;
    ensure!(v["decision"] == "allow", "{v}");
    ensure!(v["revoked"] == false, "{v}");
    // Again: nothing is cached, and it still holds.
    let v = authorize_token(&node, &valid).await?;
    ensure!(v["decision"] == "allow", "{v}");

    // The attributes are in context.token, merged with the request's context.
    let bob = token::issue(&token(&fx, r#"User::"bob""#, 2), &fx.alice);
    let ask_bob = |ip: &str| json!({"token": bob, "action": r#"Action::"view""#, "resource": r#"Doc::"d""#, "context": {"ip": ip}});
    let (code, v) = authorize_body(&node, &ask_bob("10.0.0.1")).await?;
    ensure!(code == 200 && v["decision"] == "allow", "{code} {v}");
    let (code, v) = authorize_body(&node, &ask_bob("10.0.0.2")).await?;
    ensure!(code == 200 && v["decision"] == "deny", "{code} {v}");
    // A request context may not bring its own `token`.
    let (code, v) = authorize_body(
        &node,
        &json!({"token": bob, "action": r#"Action::"view""#, "resource": r#"Doc::"d""#, "context": {"token": {"team": "red"}}}),
    )
    .await?;
    ensure!(code == 400, "{code} {v}");
    // Both principal and token, or neither: 400.
    let (code, v) = authorize_body(
        &node,
        &json!({"token": bob, "principal": r#"User::"bob""#, "action": r#"Action::"view""#, "resource": r#"Doc::"d""#}),
    )
    .await?;
    ensure!(code == 400 && v["error"].as_str().is_some(), "{code} {v}");
    let (code, v) = authorize_body(
        &node,
        &json!({"action": r#"Action::"view""#, "resource": r#"Doc::"d""#}),
    )
    .await?;
    ensure!(code == 400 && v["error"].as_str().is_some(), "{code} {v}");

    // Expired.
    let mut old = token(&fx, r#"User::"alice""#, 3);
    old.issued = now() - 1000;
    old.expires = now() - 10;
    let v = authorize_token(&node, &token::issue(&old, &fx.alice)).await?;
    ensure!(v["decision"] == "deny", "{v}");
    ensure!(errors(&v).contains("token refused: token expired"), "{v}");

    // Signed by an issuer, in its validity window, but meant to live longer
    // than the trust root allows (a day): denied with the reason.
    let mut long = token(&fx, r#"User::"alice""#, 6);
    long.expires = long.issued + 86_400 + 1;
    let v = authorize_token(&node, &token::issue(&long, &fx.alice)).await?;
    ensure!(v["decision"] == "deny" && v["revoked"] == false, "{v}");
    ensure!(
        errors(&v).contains(
            "token refused: token lifetime of 86401s is longer than the trust root's maximum of 1d"
        ),
        "{v}"
    );
    // A ten-year token, the same.
    long.expires = long.issued + 3650 * 86_400;
    let v = authorize_token(&node, &token::issue(&long, &fx.alice)).await?;
    ensure!(v["decision"] == "deny", "{v}");
    ensure!(errors(&v).contains("token lifetime of 3650d"), "{v}");
    // Exactly the maximum is fine.
    long.expires = long.issued + 86_400;
    let v = authorize_token(&node, &token::issue(&long, &fx.alice)).await?;
    ensure!(v["decision"] == "allow", "{v}");

    // Forged: claims alice as issuer, signed by another key.
    let mallory = SecretKey::from_seed([42; 32]);
    let v = authorize_token(&node, &token::issue(&alice, &mallory)).await?;
    ensure!(v["decision"] == "deny", "{v}");
    ensure!(errors(&v).contains("signature does not verify"), "{v}");
    // Signed by a key that is not an issuer.
    let mut own = token(&fx, r#"User::"alice""#, 4);
    own.issuer = mallory.public();
    let v = authorize_token(&node, &token::issue(&own, &mallory)).await?;
    ensure!(v["decision"] == "deny", "{v}");
    ensure!(
        errors(&v).contains("is not an operator with the issue role"),
        "{v}"
    );

    // Revoking the token's id denies it, with revoked = true.
    push(&node, author.revoke(&alice.revocation_subject())?).await?;
    let v = authorize_token(&node, &valid).await?;
    ensure!(v["decision"] == "deny", "{v}");
    ensure!(v["revoked"] == true, "{v}");
    ensure!(errors(&v).contains("is revoked"), "{v}");
    // Another token for the same principal is still fine.
    let again = token::issue(&token(&fx, r#"User::"alice""#, 5), &fx.alice);
    let v = authorize_token(&node, &again).await?;
    ensure!(v["decision"] == "allow", "{v}");

    // Revoking the principal denies every token for it.
    push(&node, author.revoke(r#"User::"alice""#)?).await?;
    let v = authorize_token(&node, &again).await?;
    ensure!(v["decision"] == "deny" && v["revoked"] == true, "{v}");
    ensure!(v["revoked_subject"] == r#"User::"alice""#, "{v}");

    tokio::time::timeout(Duration::from_secs(30), node.shutdown()).await??;
    Ok(())
}
