//! What the operator commands share: the clock, files, trust roots, state
//! exports, and the HTTP client that talks to a node's API.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use weft_crdt::{ChangeSummary, PolicyDoc};
use weft_protocol::export::{MAX_EXPORT_BYTES, StateExport};
use weft_protocol::identity::PublicKey;
use weft_protocol::time::format_timestamp;
use weft_protocol::trust::{MAX_TRUST_ROOT_LEN, SignedRoot, TrustRoot, from_trust_file};
use weft_protocol::update::{MAX_UPDATE_BYTES, SignedUpdate, missing_signatures};

use super::{RootSource, StateSource};

/// How long to wait for a node to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request to a node may take in all (a state export of a large
/// mesh is tens of MiB; a minute covers that on any sane link).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds since the Unix epoch, from the system clock.
pub(crate) fn now() -> Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| anyhow!("the system clock is set before 1970"))?
        .as_secs())
}

/// Reads at most `max` bytes of `path`, refusing a longer file.
pub(crate) fn read_limited(path: &Path, max: usize, what: &str) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > max {
        bail!(
            "{} is too large to be {what} (over {max} bytes)",
            path.display()
        );
    }
    Ok(bytes)
}

/// Reads a trust file and returns its text and the signed root in it.
pub(crate) fn read_trust_file(path: &Path) -> Result<(String, SignedRoot)> {
    let bytes = read_limited(path, MAX_TRUST_ROOT_LEN, "a trust file")?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow!(
            "{} is not a trust file: it is not UTF-8 text",
            path.display()
        )
    })?;
    let signed = from_trust_file(&text).with_context(|| path.display().to_string())?;
    Ok((text, signed))
}

/// Verifies a root as a node accepting it with no prior trust would. An
/// expired root is accepted, with a warning on stderr.
pub(crate) fn verify_root(signed: &SignedRoot, now: u64, origin: &str) -> Result<TrustRoot> {
    let verified = signed
        .verify_initial(now)
        .with_context(|| format!("the trust root in {origin} does not verify"))?;
    if verified.expired {
        eprintln!(
            "warning: trust root version {} in {origin} expired at {}; nodes keep enforcing it, but it should be rotated",
            verified.root.version,
            format_timestamp(verified.root.expires)
        );
    }
    Ok(verified.root)
}

/// Writes `bytes` to `path`: a new file, or (with `overwrite`) replacing an
/// existing one atomically.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    if overwrite {
        return write_atomic(path, bytes);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!(
                    "refusing to overwrite {}: the file already exists (pass --force to replace it)",
                    path.display()
                )
            } else {
                anyhow!("cannot create {}: {e}", path.display())
            }
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces `path` with `bytes` atomically: writes `path.tmp`, syncs it, and
/// renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

/// Reads and decodes a signed update file.
pub(crate) fn read_update(path: &Path) -> Result<(Vec<u8>, SignedUpdate)> {
    // Read one byte past the limit so that the decoder names the real problem.
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_UPDATE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let update = SignedUpdate::from_bytes(&bytes)
        .map_err(|e| anyhow!("{} is not a signed update: {e}", path.display()))?;
    // The change must parse too, or nothing about the update can be shown.
    update
        .id()
        .map_err(|e| anyhow!("{} is not a signed update: {e}", path.display()))?;
    Ok((bytes, update))
}

/// A node's state as an authoring tool sees it.
pub(crate) struct LoadedState {
    /// The verified trust root.
    pub(crate) root: TrustRoot,
    /// The saved document, to load as many times as needed.
    pub(crate) doc: Vec<u8>,
    /// Where it came from, for messages: `the node at URL` or `FILE`.
    pub(crate) origin: String,
    /// The node URL, when it came from a node.
    pub(crate) url: Option<String>,
}

impl LoadedState {
    /// A fresh copy of the document.
    pub(crate) fn load_doc(&self) -> Result<PolicyDoc> {
        PolicyDoc::load(&self.doc)
            .with_context(|| format!("the state from {} does not load", self.origin))
    }
}

/// Normalizes a node URL: adds `http://` when no scheme is given and drops
/// trailing slashes.
pub(crate) fn node_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Loads a state from a node or a file and verifies its trust root.
pub(crate) fn load_state(source: &StateSource, now: u64) -> Result<LoadedState> {
    match (&source.node, &source.state) {
        (Some(url), _) => load_state_from_node(url, now),
        (None, Some(path)) => load_state_from_file(path, now),
        (None, None) => bail!("give --node URL or --state FILE"),
    }
}

/// Loads a state export file.
pub(crate) fn load_state_from_file(path: &Path, now: u64) -> Result<LoadedState> {
    let bytes = read_limited(path, MAX_EXPORT_BYTES, "a state export")?;
    let origin = path.display().to_string();
    decode_state(&bytes, origin, None, now)
}

/// Fetches `GET {url}/v1/state`.
pub(crate) fn load_state_from_node(url: &str, now: u64) -> Result<LoadedState> {
    let base = node_url(url);
    let endpoint = format!("{base}/v1/state");
    let resp = client()?
        .get(&endpoint)
        .send()
        .map_err(|e| anyhow!("cannot reach the node at {base}: {}", one_line(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let reason = error_reason(resp);
        bail!("the node at {base} refused GET /v1/state (HTTP {status}): {reason}");
    }
    let mut bytes = Vec::new();
    resp.take(MAX_EXPORT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            anyhow!(
                "cannot read the state from the node at {base}: {}",
                one_line(&e)
            )
        })?;
    let origin = format!("the node at {base}");
    decode_state(&bytes, origin, Some(base), now)
}

fn decode_state(
    bytes: &[u8],
    origin: String,
    url: Option<String>,
    now: u64,
) -> Result<LoadedState> {
    let export = StateExport::from_bytes(bytes)
        .map_err(|e| anyhow!("{origin} did not give a state export: {e}"))?;
    let signed = SignedRoot::from_bytes(&export.signed_root)
        .map_err(|e| anyhow!("the trust root in the state from {origin} is malformed: {e}"))?;
    let root = verify_root(&signed, now, &format!("the state from {origin}"))?;
    // Check that the document loads now, so that later failures are not about that.
    PolicyDoc::load(&export.doc)
        .with_context(|| format!("the document in the state from {origin} does not load"))?;
    Ok(LoadedState {
        root,
        doc: export.doc,
        origin,
        url,
    })
}

/// What `--trust`, `--state` or `--node` gave `weft update sign/show`.
pub(crate) enum Known {
    /// Nothing: no trust root.
    Nothing,
    /// A trust root only.
    Root(TrustRoot, String),
    /// A trust root and a state.
    State(LoadedState),
}

impl Known {
    /// The trust root, if known.
    pub(crate) fn root(&self) -> Option<&TrustRoot> {
        match self {
            Known::Nothing => None,
            Known::Root(r, _) => Some(r),
            Known::State(s) => Some(&s.root),
        }
    }

    /// Where the root came from.
    pub(crate) fn origin(&self) -> Option<&str> {
        match self {
            Known::Nothing => None,
            Known::Root(_, o) => Some(o),
            Known::State(s) => Some(&s.origin),
        }
    }
}

/// Loads whatever a [`RootSource`] names.
pub(crate) fn load_known(source: &RootSource, now: u64) -> Result<Known> {
    if let Some(path) = &source.trust {
        let (_, signed) = read_trust_file(path)?;
        let origin = path.display().to_string();
        let root = verify_root(&signed, now, &origin)?;
        return Ok(Known::Root(root, origin));
    }
    if let Some(path) = &source.state {
        return Ok(Known::State(load_state_from_file(path, now)?));
    }
    if let Some(url) = &source.node {
        return Ok(Known::State(load_state_from_node(url, now)?));
    }
    Ok(Known::Nothing)
}

/// An HTTP client for a node's API.
pub(crate) fn client() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow!("cannot set up an HTTP client: {}", one_line(&e)))
}

/// A node's answer to `POST /v1/updates`.
pub(crate) struct PushAnswer {
    /// The update id the node reports.
    pub(crate) id: String,
    /// `applied`, `duplicate` or `held`.
    pub(crate) status: String,
}

/// Why a push did not go through.
pub(crate) enum PushError {
    /// The node answered with a refusal (4xx or 5xx) and this reason.
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The node's `error` sentence.
        reason: String,
    },
    /// The node could not be reached, or its answer not read.
    Transport(String),
}

/// `POST {base}/v1/updates` with the update's bytes.
pub(crate) fn post_update(
    client: &reqwest::blocking::Client,
    base: &str,
    bytes: &[u8],
) -> Result<PushAnswer, PushError> {
    let resp = client
        .post(format!("{base}/v1/updates"))
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .map_err(|e| {
            PushError::Transport(format!("cannot reach the node at {base}: {}", one_line(&e)))
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(PushError::Refused {
            status,
            reason: error_reason(resp),
        });
    }
    let text = resp.text().map_err(|e| {
        PushError::Transport(format!(
            "cannot read the answer of the node at {base}: {}",
            one_line(&e)
        ))
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|_| {
        PushError::Transport(format!(
            "the node at {base} accepted the update (HTTP {status}) but its answer is not JSON: {}",
            shorten(&text)
        ))
    })?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    Ok(PushAnswer {
        id: field("id"),
        status: field("status"),
    })
}

/// The `error` sentence of a refusal, or what the body says otherwise.
pub(crate) fn error_reason(resp: reqwest::blocking::Response) -> String {
    let mut body = Vec::new();
    let _ = resp.take(64 << 10).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    if let Ok(v) = serde_json::from_str::<Value>(&text)
        && let Some(e) = v.get("error").and_then(Value::as_str)
    {
        return shorten(e);
    }
    if text.trim().is_empty() {
        "the node gave no reason".into()
    } else {
        shorten(&text)
    }
}

/// One line, at most 300 characters.
pub(crate) fn shorten(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= 300 {
        flat
    } else {
        let mut out: String = flat.chars().take(300).collect();
        out.push('…');
        out
    }
}

/// An error and its causes, on one line.
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    shorten(&weft_crdt::bundle::one_line(e))
}

/// `alice (ed25519.…)` when the key is an operator of `root`, else the key.
pub(crate) fn who(root: Option<&TrustRoot>, key: &PublicKey) -> String {
    match root.and_then(|r| r.operator_by_key(key)) {
        Some(op) => format!("{} ({key})", op.name),
        None => key.to_string(),
    }
}

/// The signers of an update as JSON: `[{"key", "name"}]`.
pub(crate) fn signers_json(root: Option<&TrustRoot>, signers: &BTreeSet<PublicKey>) -> Value {
    Value::Array(
        signers
            .iter()
            .map(|k| {
                json!({
                    "key": k.to_string(),
                    "name": root.and_then(|r| r.operator_by_key(k)).map(|o| o.name.clone()),
                })
            })
            .collect(),
    )
}

/// What an update still needs under `root`, as text lines and as JSON.
pub(crate) struct Missing {
    /// `(section, role, count)` for each section short of signers.
    pub(crate) items: Vec<(String, String, usize)>,
}

impl Missing {
    /// Computes what is missing.
    pub(crate) fn of(
        summary: &ChangeSummary,
        signers: &BTreeSet<PublicKey>,
        root: &TrustRoot,
    ) -> Missing {
        Missing {
            items: missing_signatures(summary, signers, root)
                .into_iter()
                .map(|(section, role, n)| (section_name(section).to_owned(), role.to_string(), n))
                .collect(),
        }
    }

    /// Whether the thresholds are all met.
    pub(crate) fn is_met(&self) -> bool {
        self.items.is_empty()
    }

    /// How many more signatures are needed: the most any one section still
    /// needs (a change normally touches one section).
    pub(crate) fn total(&self) -> usize {
        self.items.iter().map(|(_, _, n)| *n).max().unwrap_or(0)
    }

    /// `[{"section", "role", "count"}]`.
    pub(crate) fn to_json(&self) -> Value {
        Value::Array(
            self.items
                .iter()
                .map(|(s, r, n)| json!({"section": s, "role": r, "count": n}))
                .collect(),
        )
    }

    /// One line: `threshold met` or `needs 1 more signature by an operator with the policy role (for bundles)`.
    pub(crate) fn describe(&self) -> String {
        if self.items.is_empty() {
            return "threshold met: ready to push".into();
        }
        let parts: Vec<String> = self
            .items
            .iter()
            .map(|(section, role, n)| {
                format!(
                    "{n} more signature{} by {} with the {role} role (to change {section})",
                    if *n == 1 { "" } else { "s" },
                    if *n == 1 { "an operator" } else { "operators" }
                )
            })
            .collect();
        format!("needs {}", parts.join(", and "))
    }
}

/// The name of a section, as in paths.
pub(crate) fn section_name(section: weft_crdt::Section) -> &'static str {
    match section {
        weft_crdt::Section::Bundles => "bundles",
        weft_crdt::Section::Revocations => "revocations",
        weft_crdt::Section::Quarantines => "quarantines",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls() {
        assert_eq!(node_url("127.0.0.1:7100"), "http://127.0.0.1:7100");
        assert_eq!(node_url("http://h:1/"), "http://h:1");
        assert_eq!(node_url(" https://h "), "https://h");
    }

    #[test]
    fn shortens() {
        assert_eq!(shorten("a\n b"), "a b");
        assert!(shorten(&"x".repeat(400)).ends_with('…'));
    }
}
