//! What the operator commands share: trust roots, update files, state
//! exports (from a file or a node), pushing an update, and naming signers
//! and what an update still needs.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use weft_crdt::{ChangeSummary, PolicyDoc};
use weft_protocol::export::{MAX_EXPORT_BYTES, StateExport};
use weft_protocol::identity::PublicKey;
use weft_protocol::time::format_timestamp;
use weft_protocol::trust::{SignedRoot, TrustRoot};
use weft_protocol::update::{MAX_UPDATE_BYTES, SignedUpdate, missing_signatures};

use super::{RootSource, StateSource};
use crate::client::{CallError, NodeClient};
use crate::util::{read_limited, read_trust_file, shorten};

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

/// Loads a state from a node or a file and verifies its trust root.
pub(crate) fn load_state(
    source: &StateSource,
    now: u64,
    auth: &crate::client::ClientArgs,
) -> Result<LoadedState> {
    match (&source.node, &source.state) {
        (Some(url), _) => load_state_from_node(url, now, auth),
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
pub(crate) fn load_state_from_node(
    url: &str,
    now: u64,
    auth: &crate::client::ClientArgs,
) -> Result<LoadedState> {
    let client = NodeClient::new(url, auth)?;
    let bytes = client
        .get("/v1/state")
        .map_err(|e| e.refusing("GET /v1/state"))?
        .bytes(MAX_EXPORT_BYTES)?;
    let base = client.base().to_owned();
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
pub(crate) fn load_known(
    source: &RootSource,
    now: u64,
    auth: &crate::client::ClientArgs,
) -> Result<Known> {
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
        return Ok(Known::State(load_state_from_node(url, now, auth)?));
    }
    Ok(Known::Nothing)
}

/// A node's answer to `POST /v1/updates`.
pub(crate) struct PushAnswer {
    /// The update id the node reports.
    pub(crate) id: String,
    /// `applied`, `duplicate` or `held`.
    pub(crate) status: String,
}

/// `POST /v1/updates` with the update's bytes.
pub(crate) fn post_update(client: &NodeClient, bytes: &[u8]) -> Result<PushAnswer, CallError> {
    let answer = client.post_bytes("/v1/updates", bytes)?;
    let status = answer.status();
    let text = answer.text()?;
    let v: Value = serde_json::from_str(&text).map_err(|_| {
        CallError::Transport(format!(
            "the node at {} accepted the update (HTTP {status}) but its answer is not JSON: {}",
            client.base(),
            shorten(&text)
        ))
    })?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    Ok(PushAnswer {
        id: field("id"),
        status: field("status"),
    })
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
