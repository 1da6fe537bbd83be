//! `weft api token add`: mint a bearer token for a node's HTTP API and
//! append its hash to the token file (`api_tokens_file`).
//!
//! The token is printed once, as the last line of stdout, and written
//! nowhere; the file holds its SHA-256 only ([`crate::api::tokens`] says why
//! that is enough), and is created with mode 0600. A running node picks the
//! new line up within seconds (it watches the file) or on SIGHUP.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};

use crate::api::tokens::{self, TokenSet};

/// `weft api …`
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Bearer tokens for a node's HTTP API.
    #[command(subcommand)]
    Token(ApiTokenCommand),
}

/// `weft api token …`
#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Mint a token with scopes, append its hash to the token file, print the token once.
    #[command(long_about = API_TOKEN_ADD_LONG_ABOUT)]
    Add(ApiTokenAddArgs),
}

/// The long help of `weft api token add`.
pub const API_TOKEN_ADD_LONG_ABOUT: &str = "Mint a bearer token for a node's HTTP API.\n\n\
    The token (weftapi_ and 64 hex digits, 256 random bits) is printed once, as the last \
    line of stdout; the file gets one line, `NAME SCOPES sha256:HASH`, and never the token. \
    The file is created with mode 0600 if it does not exist. Point a node at it with \
    api_tokens_file in weft.toml; a running node reloads it when it changes.\n\n\
    Scopes: read (/v1/state, /v1/status, /v1/dashboard, /v1/anomalies, /v1/report), \
    audit (/v1/audit...), metrics (/metrics).\n\n\
    Clients send it as `Authorization: Bearer TOKEN`; weft commands read it from \
    --token-file FILE or $WEFT_API_TOKEN.\n\n\
    Example:\n  weft api token add --file /etc/weft/api-tokens --name grafana --scope metrics";

/// Arguments of `weft api token add`.
#[derive(Debug, Args)]
pub struct ApiTokenAddArgs {
    /// The token file (api_tokens_file); created if missing.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// The token's name: unique in the file, no white space (shown in the audit trail).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Its scopes, comma-separated: read, audit, metrics.
    #[arg(long, value_name = "SCOPES", value_delimiter = ',', required = true)]
    pub scope: Vec<String>,
}

/// Runs `weft api …`.
pub fn api(c: ApiCommand) -> Result<ExitCode> {
    match c {
        ApiCommand::Token(ApiTokenCommand::Add(a)) => add(&a),
    }
}

fn add(a: &ApiTokenAddArgs) -> Result<ExitCode> {
    if a.name.is_empty() || a.name.chars().any(char::is_whitespace) || a.name.starts_with('#') {
        bail!(
            "--name \"{}\" must be one word, not starting with #",
            a.name
        );
    }
    let scopes = tokens::parse_scopes(&a.scope.join(",")).map_err(|e| anyhow!("--scope: {e}"))?;
    let existing = match std::fs::read_to_string(&a.file) {
        Ok(text) => Some(
            TokenSet::parse(&text)
                .map_err(|e| anyhow!("{}: {e}", a.file.display()))
                .map(|set| (set, text))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("cannot read {}: {e}", a.file.display()),
    };
    if let Some((set, _)) = &existing
        && set.has_name(&a.name)
    {
        bail!("{} already has a token named {}", a.file.display(), a.name);
    }
    let token = tokens::mint().map_err(|e| anyhow!("cannot get random bytes: {e}"))?;
    let mut line = tokens::line(&a.name, &scopes, &token);
    if existing
        .as_ref()
        .is_some_and(|(_, text)| !text.is_empty() && !text.ends_with('\n'))
    {
        line.insert(0, '\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&a.file)
        .map_err(|e| anyhow!("cannot open {}: {e}", a.file.display()))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| anyhow!("cannot write {}: {e}", a.file.display()))?;
    eprintln!(
        "added token {} ({}) to {}; it is shown once:",
        a.name,
        scopes
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        a.file.display()
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
