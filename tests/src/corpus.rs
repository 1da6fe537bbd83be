//! Hostile inputs for the trust boundary, built the way an attacker would
//! build them: on top of a node's real state (its `GET /v1/state` export),
//! with real keys, and then damaged where it matters.
//!
//! Each builder makes the bytes of one signed update or quarantine order
//! (what `POST /v1/updates`, gossip and sync carry). They follow the
//! regression tests in `protocol/tests/boundary.rs` and
//! `protocol/tests/quarantine.rs`, which show each input against a bare
//! `SignedState`; the suites here send the same inputs to running nodes.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};
use weft_crdt::legacy::{Key, OpId};
use weft_crdt::{BundleContent, Change, PolicyDoc, QuarantineRecord};
use weft_protocol::export::StateExport;
use weft_protocol::identity::SecretKey;
use weft_protocol::quarantine::QuarantineOrder;
use weft_protocol::token::Token;
use weft_protocol::trust::SignedNodeCert;
use weft_protocol::update::{SignedUpdate, actor_for};

static NONCE: AtomicU64 = AtomicU64::new(1);

/// A fresh actor nonce: the time in nanoseconds plus a counter, so no two
/// inputs of one run, or of two runs on one state, share an actor.
fn nonce() -> [u8; 8] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t.wrapping_add(NONCE.fetch_add(1, Ordering::Relaxed))
        .to_be_bytes()
}

/// The document of a node's state export (the bytes of `GET /v1/state`).
pub fn doc_of(export: &[u8]) -> Result<PolicyDoc> {
    let export = StateExport::from_bytes(export)?;
    Ok(PolicyDoc::load(&export.doc)?)
}

/// The trust-root version a node's state export runs under.
pub fn root_version_of(export: &[u8]) -> Result<u64> {
    let export = StateExport::from_bytes(export)?;
    Ok(
        weft_protocol::trust::SignedRoot::from_bytes(&export.signed_root)?
            .root()?
            .version,
    )
}

/// `change` signed by each of `signers` under `root_version`.
pub fn signed(change: &Change, root_version: u64, signers: &[&SecretKey]) -> Result<Vec<u8>> {
    let mut u = SignedUpdate::new(change, root_version);
    for k in signers {
        u.sign(k)?;
    }
    Ok(u.to_bytes())
}

/// The update in `bytes` with every signature removed.
pub fn unsigned(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut u = SignedUpdate::from_bytes(bytes)?;
    u.signatures.clear();
    Ok(u.to_bytes())
}

/// A revocation of `subject` that `key` authors on top of `doc` (a copy of
/// it: `doc` is left as it is).
pub fn revocation_change(doc: &PolicyDoc, key: &SecretKey, subject: &str) -> Result<Change> {
    revocation_with_reason(doc, key, subject, "test")
}

fn revocation_with_reason(
    doc: &PolicyDoc,
    key: &SecretKey,
    subject: &str,
    reason: &str,
) -> Result<Change> {
    let mut doc = doc.clone();
    doc.build_revoke(actor_for(&key.public(), nonce()), subject, reason, 0)?
        .context("the revocation wrote nothing")
}

/// A bundle update: bundle `name` holding exactly `policy`, authored on top
/// of `doc` by `key` and signed by it under `root_version`.
pub fn bundle(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    name: &str,
    policy: &str,
) -> Result<Vec<u8>> {
    let mut doc = doc.clone();
    let mut content = BundleContent::default();
    content.policies.insert("p".into(), policy.to_owned());
    let change = doc
        .build_bundle(actor_for(&key.public(), nonce()), name, &content, 0)?
        .context("the bundle already holds that content")?;
    signed(&change, root_version, &[key])
}

/// Change bytes with their checksum set to match their contents again, as
/// an attacker who edits a change fixes it up.
pub fn fix_checksum(mut change: Vec<u8>) -> Vec<u8> {
    let hash = Sha256::digest(&change[8..]);
    change[4..8].copy_from_slice(&hash[..4]);
    change
}

/// Finding 1: a revocation of `subject` on top of `doc` in which one
/// literal run `7f 01` of an actor column names actor 5 instead, past the
/// change's actor table, checksum fixed so that automerge still parses it
/// (its decoder then panicked inside the node task). Returned unsigned and
/// signed by `key` (under `root_version`): the first is refused before the
/// change is parsed, the second once automerge's panic is contained.
pub fn corrupted_actor(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    subject: &str,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let good = revocation_change(doc, key, subject)?;
    let raw = good.raw_bytes();
    let change = (9..raw.len() - 1)
        .filter(|&i| raw[i] == 0x7f && raw[i + 1] == 0x01)
        .map(|i| {
            let mut c = raw.to_vec();
            c[i + 1] = 0x05;
            fix_checksum(c)
        })
        .find(|c| PolicyDoc::parse_change(c).is_ok())
        .context("the revocation has no actor column to corrupt")?;
    let unsigned = SignedUpdate {
        change,
        root_version,
        signatures: Vec::new(),
    };
    let mut signed = unsigned.clone();
    signed.sign(key)?;
    Ok((unsigned.to_bytes(), signed.to_bytes()))
}

/// Finding 2: an unsigned revocation of `subject` that depends on another
/// change `key` authored on `doc` and never sent (so no node has it): it
/// was held, stored and gossiped, unsigned.
pub fn unsigned_with_missing_dependency(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    subject: &str,
) -> Result<Vec<u8>> {
    let mut doc = doc.clone();
    let actor = actor_for(&key.public(), nonce());
    doc.build_revoke(actor.clone(), &format!("{subject}-hidden"), "hidden", 0)?
        .context("the hidden revocation wrote nothing")?;
    let later = doc
        .build_revoke(actor, subject, "depends on a change no one has", 0)?
        .context("the revocation wrote nothing")?;
    let u = SignedUpdate {
        change: later.raw_bytes().to_vec(),
        root_version,
        signatures: Vec::new(),
    };
    Ok(u.to_bytes())
}

/// Finding 2: an unsigned revocation on top of `doc` padded (with a long
/// reason) to about `size` bytes, under the update size limit, naming
/// `root_version`: held updates were unbounded in bytes.
pub fn large_unsigned(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    size: usize,
) -> Result<Vec<u8>> {
    let reason = "x".repeat(size.saturating_sub(600));
    let change = revocation_with_reason(doc, key, r#"User::"large""#, &reason)?;
    let u = SignedUpdate {
        change: change.raw_bytes().to_vec(),
        root_version,
        signatures: Vec::new(),
    };
    let bytes = u.to_bytes();
    if bytes.len() > weft_protocol::update::MAX_UPDATE_BYTES {
        bail!(
            "the large update is {} bytes, over the update size limit",
            bytes.len()
        );
    }
    Ok(bytes)
}

/// Finding 3: a revocation of `subject` on top of `doc`, signed by `key`
/// under `root_version`, re-encoded with its first operation counter moved
/// back to `start` (below the dependencies' largest): it applied, and from
/// then on the saved document no longer loaded.
pub fn counter_backwards(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    subject: &str,
    start: u64,
) -> Result<Vec<u8>> {
    edited_revocation(doc, key, root_version, subject, |change| {
        if change.start_op.get() <= start {
            bail!(
                "the change starts at operation {}, not above {start}",
                change.start_op
            );
        }
        change.start_op = NonZeroU64::new(start).context("operation counters start at 1")?;
        Ok(())
    })
}

/// Found by fuzzing (`fuzz/` target `ingest`), of finding 1's kind: a
/// revocation of `subject` on top of `doc`, signed by `key` under
/// `root_version`, whose operation names as the one it replaces an
/// operation by an actor with no change anywhere. automerge 0.12 panics
/// while applying a change that names an actor it has never seen.
pub fn stranger_actor(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    subject: &str,
) -> Result<Vec<u8>> {
    let stranger = actor_for(&SecretKey::from_seed([0x5a; 32]).public(), nonce());
    edited_revocation(doc, key, root_version, subject, |change| {
        first_op(change)?.pred = vec![OpId(1, stranger)].into();
        Ok(())
    })
}

/// Found by fuzzing (`fuzz/` target `ingest`), of finding 3's kind: a
/// revocation of `subject`, which `doc` already revokes, signed by `key`
/// under `root_version`, re-encoded under another spelling of the subject
/// (the same bucket, another key) while its operation still names the
/// revocation it replaces under the first spelling. automerge 0.12 applies
/// it, and the document then panics whenever it gives its changes back
/// (sync, snapshots, `GET /v1/state`).
pub fn replaces_another_key(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    subject: &str,
) -> Result<Vec<u8>> {
    edited_revocation(doc, key, root_version, subject, |change| {
        let op = first_op(change)?;
        if op.pred.is_empty() {
            bail!("{subject} is not revoked in the state, so nothing is replaced");
        }
        op.key = Key::Map(format!(" {subject}").into());
        Ok(())
    })
}

/// A revocation of `subject` on top of `doc`, expanded, changed by `edit`,
/// encoded again and signed by `key` under `root_version`.
fn edited_revocation(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    subject: &str,
    edit: impl FnOnce(&mut weft_crdt::legacy::Change) -> Result<()>,
) -> Result<Vec<u8>> {
    let change = revocation_change(doc, key, subject)?;
    let mut expanded = PolicyDoc::expand(&change)?;
    edit(&mut expanded)?;
    expanded.hash = None;
    signed(&Change::from(expanded), root_version, &[key])
}

/// The first operation of a revocation's change.
fn first_op(change: &mut weft_crdt::legacy::Change) -> Result<&mut weft_crdt::legacy::Op> {
    change
        .operations
        .first_mut()
        .context("the revocation has no operation")
}

/// A node's quarantine record of `ttl` seconds dated `issued_at`.
pub fn record(issued_at: u64, ttl: u64) -> QuarantineRecord {
    QuarantineRecord {
        reason: "deny burst".into(),
        issuer: None,
        issued_at,
        expires_at: Some(issued_at + ttl),
        score: Some(0.97),
        evidence: vec!["deny ratio 0.96 (baseline 0.02)".into()],
        lifted: false,
    }
}

/// Findings 4, 5 and 6: a quarantine order of `subject` that the node of
/// `key` (certified by `cert`, its bytes) signs on top of `doc`, with
/// `record` as its record, under `root_version`.
pub fn order(
    doc: &PolicyDoc,
    key: &SecretKey,
    cert: &[u8],
    root_version: u64,
    subject: &str,
    record: QuarantineRecord,
) -> Result<Vec<u8>> {
    let mut doc = doc.clone();
    let cert = SignedNodeCert::from_bytes(cert)?;
    Ok(
        QuarantineOrder::issue(&mut doc, key, &cert, root_version, subject, record, nonce())?
            .to_bytes(),
    )
}

/// An operator's quarantine record of `subject` (no issuer, lasting
/// `ttl` seconds from `now`), written on top of `doc` by `key` with the
/// revoke role and signed under `root_version`.
pub fn operator_quarantine(
    doc: &PolicyDoc,
    key: &SecretKey,
    root_version: u64,
    subject: &str,
    now: u64,
    ttl: u64,
) -> Result<Vec<u8>> {
    let mut doc = doc.clone();
    let mut rec = record(now, ttl);
    rec.reason = "quarantined by an operator".into();
    rec.score = None;
    rec.evidence.clear();
    let json = serde_json::to_string(&rec)?;
    let change = doc
        .build_quarantine(actor_for(&key.public(), nonce()), subject, &json, 0)?
        .context("the quarantine wrote nothing")?;
    signed(&change, root_version, &[key])
}

/// Finding 9: an identity token for `principal` that `issuer` signs,
/// issued at `issued` and valid for `ttl` seconds, however long that is.
pub fn token(issuer: &SecretKey, principal: &str, issued: u64, ttl: u64) -> String {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&nonce());
    weft_protocol::token::issue(
        &Token {
            principal: principal.into(),
            attrs: Default::default(),
            issuer: issuer.public(),
            issued,
            expires: issued + ttl,
            id,
        },
        issuer,
    )
}
