//! `weft check`: ask a node for a decision (`POST /v1/authorize`).

use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::client::NodeClient;
use crate::util::{error_line, shorten};

/// The exit code of `weft check` on a deny.
pub const DENY_EXIT: u8 = 3;

/// The long help of `weft check`.
pub const CHECK_LONG_ABOUT: &str = "Ask a node whether a request is allowed (POST /v1/authorize).\n\n\
        Prints allow or deny, then the policies that decided it (reasons), any errors met \
        while deciding, `revoked` when a revoked subject caused the deny, and the decision's \
        id (`decision id: …`, the id in the node's audit trail and decision log). The principal \
        is --principal, or the principal of an identity token given with --token (see \
        `weft token issue`); the token's attributes are then in the context as context.token.\n\n\
        Exits 0 on allow, 3 on deny, 1 on an error (the node unreachable, or the request \
        refused as malformed).\n\n\
        Example:\n  weft check --node http://127.0.0.1:7100 --principal 'User::\"alice\"' \\\n    \
        --action 'Action::\"view\"' --resource 'Doc::\"d\"' --context '{\"ip\": \"10.0.0.1\"}'";

/// `weft check`
#[derive(Debug, Args)]
#[command(long_about = CHECK_LONG_ABOUT)]
pub struct CheckArgs {
    /// The node's API, e.g. http://127.0.0.1:7100.
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// Who asks: a Cedar entity uid, like User::"alice".
    #[arg(
        long,
        value_name = "UID",
        required_unless_present = "token",
        conflicts_with = "token"
    )]
    pub principal: Option<String>,
    /// An identity token (from `weft token issue`) in place of --principal.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The action: a Cedar entity uid, like Action::"view".
    #[arg(long, value_name = "UID")]
    pub action: String,
    /// The resource: a Cedar entity uid, like Doc::"d".
    #[arg(long, value_name = "UID")]
    pub resource: String,
    /// The request context, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// Print the node's answer as JSON: {"decision", "reasons", "errors", "revoked", "state", "decision_id", ...}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Runs `weft check`.
pub(crate) fn check(a: &CheckArgs) -> Result<ExitCode> {
    let mut body = json!({ "action": a.action, "resource": a.resource });
    match (&a.principal, &a.token) {
        (Some(p), None) => body["principal"] = json!(p),
        (None, Some(t)) => body["token"] = json!(t.trim()),
        _ => bail!("give exactly one of --principal and --token"),
    }
    if let Some(c) = &a.context {
        let v: Value = serde_json::from_str(c)
            .map_err(|e| anyhow!("--context is not JSON: {}", error_line(&e)))?;
        if !v.is_object() {
            bail!("--context must be a JSON object, like {{\"ip\": \"10.0.0.1\"}}");
        }
        body["context"] = v;
    }
    let client = NodeClient::new(&a.node, &a.client)?;
    let base = client.base();
    let text = client
        .post_json("/v1/authorize", &body)
        .map_err(|e| e.refusing("the request"))?
        .text()?;
    let answer: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "the node at {base} answered with something that is not JSON: {}",
            shorten(&text)
        )
    })?;
    let allow = match answer.get("decision").and_then(Value::as_str) {
        Some("allow") => true,
        Some("deny") => false,
        _ => bail!("the node at {base} gave no decision: {}", shorten(&text)),
    };
    if a.json {
        println!("{answer}");
    } else {
        let list = |k: &str| -> Vec<String> {
            answer
                .get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        println!("{}", if allow { "allow" } else { "deny" });
        for r in list("reasons") {
            println!("reason: {r}");
        }
        for e in list("errors") {
            println!("error: {e}");
        }
        if answer.get("revoked").and_then(Value::as_bool) == Some(true) {
            match answer.get("revoked_subject").and_then(Value::as_str) {
                Some(s) => println!("revoked: {s}"),
                None => println!("revoked"),
            }
        }
        if let Some(id) = answer.get("decision_id").and_then(Value::as_str) {
            println!("decision id: {id}");
        }
    }
    Ok(if allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DENY_EXIT)
    })
}
