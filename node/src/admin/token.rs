//! `weft token issue`: sign a short-lived identity token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr as _;

use anyhow::{Context as _, Result, anyhow, bail};
use cedar_policy::EntityUid;
use clap::{Args, Subcommand};
use serde_json::json;
use weft_protocol::time::{format_duration, format_timestamp, parse_duration};
use weft_protocol::token::{self, Token};
use weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS;

use super::common::{load_state_from_node, verify_root};
use crate::keyfile;
use crate::util::{read_trust_file, shorten};

/// `weft token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a short-lived identity token for a principal; prints the token.
    #[command(long_about = TOKEN_ISSUE_LONG_ABOUT)]
    Issue(TokenIssueArgs),
}

/// The long help of `weft token issue`.
pub const TOKEN_ISSUE_LONG_ABOUT: &str = "Sign a short-lived identity token for a principal and print it.\n\n\
        The token binds PRINCIPAL (a Cedar entity uid, like User::\"alice\") and the \
        --attr attributes to an expiry (now + --ttl) and a random token id, signed with \
        --key. Nodes accept it only when the key belongs to an operator holding the issue \
        role in their trust root. Send it to POST /v1/authorize as \"token\" in place of \
        \"principal\" (or use `weft check --token`): the principal is the token's, and the \
        attributes are in the request context as context.token (e.g. context.token.team). \
        Each request verifies the token again; `weft revoke token:<ID>` revokes it.\n\n\
        A token may live at most the trust root's maximum token lifetime (`weft trust init \
        --max-token-ttl`); nodes refuse a longer one. --ttl is checked against the root \
        given by --trust FILE or read from --node URL; without either, against the \
        default maximum of 24h.\n\n\
        The token is the last line of stdout, so `TOKEN=$(weft token issue ...)` works.\n\n\
        Example:\n  weft token issue --key idp.key --principal 'User::\"alice\"' --ttl 15m --attr team=red";

/// Arguments of `weft token issue`.
#[derive(Debug, Args)]
#[command(long_about = TOKEN_ISSUE_LONG_ABOUT)]
pub struct TokenIssueArgs {
    /// The issuer's secret key file (an operator holding the issue role).
    #[arg(long, value_name = "ISSUER_KEY")]
    pub key: PathBuf,
    /// Whom the token names: a Cedar entity uid, like User::"alice".
    #[arg(long, value_name = "UID")]
    pub principal: String,
    /// How long the token is valid, like 90s, 15m or 24h; at most the trust root's
    /// maximum token lifetime (24h by default).
    #[arg(long, value_name = "DURATION")]
    pub ttl: String,
    /// The mesh's trust file, whose maximum token lifetime --ttl must not exceed.
    #[arg(long, value_name = "FILE", conflicts_with = "node")]
    pub trust: Option<PathBuf>,
    /// A running node's API, e.g. http://127.0.0.1:7100, whose trust root's maximum
    /// token lifetime --ttl must not exceed.
    #[arg(long, value_name = "URL")]
    pub node: Option<String>,
    /// An attribute the issuer vouches for, as KEY=VALUE (a string); repeat for more.
    #[arg(long = "attr", value_name = "K=V")]
    pub attrs: Vec<String>,
    /// Print JSON: {"token", "id", "principal", "expires", "expires_at", "attrs"}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Runs `weft token issue`.
pub(crate) fn issue(a: &TokenIssueArgs) -> Result<ExitCode> {
    let principal = EntityUid::from_str(a.principal.trim())
        .map_err(|e| {
            anyhow!(
                "--principal {:?} is not a Cedar entity uid like User::\"alice\": {}",
                a.principal,
                shorten(&e.to_string())
            )
        })?
        .to_string();
    let ttl = parse_duration(&a.ttl).context("--ttl")?;
    check_ttl(a, ttl)?;
    let mut attrs = BTreeMap::new();
    for spec in &a.attrs {
        let Some((k, v)) = spec.split_once('=') else {
            bail!("--attr {spec:?} is not KEY=VALUE");
        };
        let k = k.trim();
        if k.is_empty() {
            bail!("--attr {spec:?} has an empty key");
        }
        if attrs.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("--attr {k:?} is given twice");
        }
    }
    let key = keyfile::read(&a.key)?;
    let issued = crate::clock::unix_secs()?;
    let expires = issued
        .checked_add(ttl)
        .ok_or_else(|| anyhow!("--ttl {} reaches past the end of time", a.ttl))?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| anyhow!("cannot get random bytes for the token id: {e}"))?;
    let t = Token {
        principal,
        attrs,
        issuer: key.public(),
        issued,
        expires,
        id,
    };
    let text = token::issue(&t, &key);
    if a.json {
        println!(
            "{}",
            json!({
                "token": text,
                "id": t.id_hex(),
                "principal": t.principal,
                "attrs": t.attrs,
                "issuer": t.issuer.to_string(),
                "issued": t.issued,
                "expires": t.expires,
                "expires_at": format_timestamp(t.expires),
            })
        );
    } else {
        eprintln!(
            "token {} for {} expires {} (revoke it with `weft revoke {}`)",
            t.id_hex(),
            t.principal,
            format_timestamp(t.expires),
            t.revocation_subject()
        );
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a `--ttl` longer than the maximum token lifetime of the trust root
/// given by `--trust` or read from `--node`, or, without either, than
/// [`DEFAULT_MAX_TOKEN_TTL_SECS`].
fn check_ttl(a: &TokenIssueArgs, ttl: u64) -> Result<()> {
    let (max, origin) = if let Some(path) = &a.trust {
        let (_, signed) = read_trust_file(path)?;
        let origin = path.display().to_string();
        let root = verify_root(&signed, crate::clock::unix_secs()?, &origin)?;
        (
            root.max_token_ttl_secs,
            Some(format!("the trust root in {origin}")),
        )
    } else if let Some(url) = &a.node {
        let state = load_state_from_node(url, crate::clock::unix_secs()?, &a.client)?;
        (
            state.root.max_token_ttl_secs,
            Some(format!("the trust root of {}", state.origin)),
        )
    } else {
        (DEFAULT_MAX_TOKEN_TTL_SECS, None)
    };
    if ttl <= max {
        return Ok(());
    }
    let max = format_duration(max);
    match origin {
        Some(origin) => bail!(
            "--ttl {} is longer than the maximum token lifetime of {max} that {origin} allows",
            a.ttl.trim()
        ),
        None => bail!(
            "--ttl {} is longer than the default maximum token lifetime of {max}; give --trust FILE or --node URL to apply the mesh's own maximum",
            a.ttl.trim()
        ),
    }
}
