//! `weft audit verify` and `weft audit export`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use weft_protocol::audit::{HeldCheckpoint, SignedCheckpoint, Verification};
use weft_protocol::identity::NodeId;

use crate::audit::AuditLog;
use crate::client::NodeClient;
use crate::keyfile;
use crate::layout::NodeDir;
use crate::util::error_line;

/// The long help of `weft audit verify`.
pub const AUDIT_VERIFY_LONG_ABOUT: &str = "Check a node's hash-chained audit log offline.\n\n\
    Walks every record in DIR/store: each record's hash must match its contents, the \
    numbering must have no gap, and each record must link to the one before it. Then the \
    chain is checked against the checkpoints the node signed of its own head, against its \
    head marker, and against the copies of its checkpoints that peers hold (--peer-dir for \
    a stopped peer's directory, --peer for a running peer's API): a log that was cut short, \
    or rewritten and re-hashed, disagrees with them. Prints the first record that was \
    changed, removed or reordered, and exits 1 if there is one.\n\n\
    The node must be stopped (sled locks its store); for a running node use \
    GET /v1/audit/verify, or `weft audit export`.";

/// `weft audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a node's audit chain offline, against its own and its peers' checkpoints.
    #[command(long_about = AUDIT_VERIFY_LONG_ABOUT)]
    Verify(AuditVerifyArgs),
    /// Stream a running node's audit records as JSON lines.
    #[command(
        long_about = "Stream a running node's audit records as JSON lines.\n\n\
            Each line is one record: seq, at_ms, at, prev and hash (hex), and the event \
            (kind: decision, update_applied, update_refused, admitted, disconnected, banned, \
            dropped, started). Denies are always recorded, allows one in audit_allow_one_in \
            (weft.toml). --since takes a time (RFC 3339 like 2026-11-26T10:00:00Z, or Unix \
            seconds) or a duration meaning that long ago (15m, 24h)."
    )]
    Export(AuditExportArgs),
}

/// `weft audit verify`
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The node directory (the node must be stopped).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A stopped peer's node directory, whose copies of this node's checkpoints to check against; repeat for more.
    #[arg(long = "peer-dir", value_name = "DIR")]
    pub peer_dirs: Vec<PathBuf>,
    /// A running peer's API, whose copies of this node's checkpoints to check against; repeat for more.
    #[arg(long = "peer", value_name = "URL")]
    pub peers: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// `weft audit export`
#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// The node's API, like http://127.0.0.1:7100.
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// Only records written at or after this time: RFC 3339, Unix seconds, or a duration ago (15m, 24h).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Output format (JSON lines).
    #[arg(long, value_name = "FORMAT", default_value = "jsonl", value_parser = ["jsonl"])]
    pub format: String,
    /// At most this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Runs `weft audit …`.
pub fn audit(c: AuditCommand) -> Result<ExitCode> {
    match c {
        AuditCommand::Verify(a) => verify(&a),
        AuditCommand::Export(a) => export(&a),
    }
}

fn open_db(dir: &Path) -> Result<sled::Db> {
    let store = NodeDir::new(dir).store();
    if !store.is_dir() {
        bail!(
            "{} has no store: it is not a node directory (made by `weft node init`)",
            dir.display()
        );
    }
    sled::Config::new().path(&store).open().map_err(|e| {
        let text = e.to_string();
        if text.contains("lock") || text.contains("WouldBlock") || text.contains("temporarily") {
            anyhow!(
                "the store in {} is in use by a running node: stop it first, or use GET /v1/audit/verify",
                dir.display()
            )
        } else {
            anyhow!("cannot open the store in {}: {}", dir.display(), error_line(&e))
        }
    })
}

fn node_of(dir: &Path) -> Result<NodeId> {
    let key = keyfile::read(&NodeDir::new(dir).key())
        .with_context(|| format!("cannot tell which node {} belongs to", dir.display()))?;
    Ok(NodeId::new(key.public()))
}

/// The checkpoints of `node` held by a running peer.
fn fetch_checkpoints(
    url: &str,
    node: &NodeId,
    auth: &crate::client::ClientArgs,
) -> Result<Vec<HeldCheckpoint>> {
    let client = NodeClient::new(url, auth)?;
    let base = client.base();
    let body = client
        .get(&format!("/v1/audit/checkpoints?node={node}"))?
        .text()?;
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("{base} sent a checkpoint line that is not JSON: {e}"))?;
        let bytes = hex::decode(v["signed"].as_str().unwrap_or_default())
            .map_err(|e| anyhow!("{base} sent a checkpoint that is not hex: {e}"))?;
        // The peer's word is not trusted: the node's signature is.
        let cp = SignedCheckpoint::from_bytes(&bytes)
            .and_then(|s| s.verify())
            .map_err(|e| anyhow!("{base} holds a checkpoint that does not verify: {e}"))?;
        if cp.node == *node {
            out.push(HeldCheckpoint {
                checkpoint: cp,
                holder: format!("peer at {base}"),
            });
        }
    }
    Ok(out)
}

fn verify(a: &AuditVerifyArgs) -> Result<ExitCode> {
    let node = node_of(&a.dir)?;
    let mut extra = Vec::new();
    let mut from_peers = 0usize;
    for dir in &a.peer_dirs {
        let peer = node_of(dir).unwrap_or(node);
        let db = open_db(dir)?;
        let log = AuditLog::open(&db)
            .with_context(|| format!("cannot open the audit log in {}", dir.display()))?;
        for (cp, _) in log.peer_checkpoints_of(&node) {
            extra.push(HeldCheckpoint {
                checkpoint: cp,
                holder: format!("peer {peer} ({})", dir.display()),
            });
            from_peers += 1;
        }
    }
    for url in &a.peers {
        let got = fetch_checkpoints(url, &node, &a.client)?;
        from_peers += got.len();
        extra.extend(got);
    }
    let db = open_db(&a.dir)?;
    let log = AuditLog::open(&db)
        .with_context(|| format!("cannot open the audit log in {}", a.dir.display()))?;
    let v = log.verify(node, extra);
    report(&node, &v, from_peers, a.json)
}

fn report(node: &NodeId, v: &Verification, from_peers: usize, as_json: bool) -> Result<ExitCode> {
    if as_json {
        let out = json!({
            "node": node.to_string(),
            "ok": v.ok(),
            "records": v.records,
            "head": hex::encode(v.head),
            "checkpoints": v.checkpoints,
            "peer_checkpoints": from_peers,
            "first_bad": v.problem.as_ref().map(|p| p.first_bad()),
            "error": v.problem.as_ref().map(ToString::to_string),
        });
        println!("{out}");
        return Ok(if v.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match &v.problem {
        None => {
            println!(
                "audit chain of {node}: intact, {} records, head {}, agrees with {} checkpoints ({from_peers} held by peers)",
                v.records,
                hex::encode(v.head),
                v.checkpoints
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => bail!("the audit chain of {node} is not intact: {p}"),
    }
}

/// Parses `--since`: RFC 3339, Unix seconds, or a duration ago. Unix ms.
fn parse_since(text: &str, now_ms: u64) -> Result<u64> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    if let Ok(d) = weft_protocol::time::parse_duration(t) {
        return Ok(now_ms.saturating_sub(d.saturating_mul(1000)));
    }
    if let Some(secs) = weft_protocol::time::parse_timestamp(t) {
        return Ok(secs.saturating_mul(1000));
    }
    bail!(
        "--since {t:?} is not a time: give RFC 3339 (2026-11-26T10:00:00Z), Unix seconds, or a duration ago (15m, 24h)"
    )
}

fn export(a: &AuditExportArgs) -> Result<ExitCode> {
    let mut query = Vec::new();
    if let Some(s) = &a.since {
        query.push(format!("since={}", parse_since(s, crate::clock::now_ms())?));
    }
    if let Some(n) = a.limit {
        query.push(format!("limit={n}"));
    }
    let path = if query.is_empty() {
        "/v1/audit".to_owned()
    } else {
        format!("/v1/audit?{}", query.join("&"))
    };
    // No overall timeout: an export of a long log takes as long as it takes.
    let client = NodeClient::streaming(&a.node, &a.client)?;
    let answer = client.get(&path)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    answer.copy_to(&mut out)?;
    out.flush().ok();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("1700000000", now).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_since("15m", now).unwrap(), now - 900_000);
        assert_eq!(
            parse_since("2026-11-26T00:00:00Z", now).unwrap(),
            1_795_651_200_000
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
