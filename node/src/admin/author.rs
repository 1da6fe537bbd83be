//! `weft bundle create` and `weft revoke`: build one change on top of a
//! node's state, sign it, write it (and, for a revocation, maybe push it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr as _;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use weft_crdt::schema::check_bundle_name;
use weft_crdt::{BundleContent, Change, ChangeSummary, bundle::split_policy_file};
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::trust::{Role, TrustRoot};
use weft_protocol::update::{MAX_UPDATE_BYTES, SignedUpdate};

use super::common::{LoadedState, Missing, load_state, post_update, signers_json, who};
use super::lane::Lane;
use super::{BundleCreateArgs, RevokeArgs};
use crate::client::NodeClient;
use crate::keyfile;
use crate::util::{error_line, read_limited, write_new_file};

/// The largest policy, schema, entities, links, routes or issuers file read (4 MiB: nothing
/// larger fits in an update anyway).
const MAX_SOURCE_FILE: usize = MAX_UPDATE_BYTES;

/// How many paths the human output lists before it summarizes the rest.
const MAX_PATHS_SHOWN: usize = 20;

/// Reads a policy directory into a bundle's content.
pub(crate) fn read_policy_dir(dir: &Path) -> Result<BundleContent> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the policy directory {}", dir.display()))?;
    let mut cedar_files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        // Follow symlinks; skip directories and anything else that is not a file.
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cedar") && name.len() > ".cedar".len() {
            cedar_files.push(name);
        } else if name.ends_with(".cedarschema") && name != "schema.cedarschema" {
            eprintln!(
                "warning: ignoring {}: only schema.cedarschema is read as the schema",
                path.display()
            );
        }
    }
    cedar_files.sort();
    let mut content = BundleContent::default();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for file in &cedar_files {
        let path = dir.join(file);
        let text = read_text(&path)?;
        let stem = file.trim_end_matches(".cedar");
        let policies = split_policy_file(stem, &text).map_err(|e| {
            let prefix = format!("{file}: ");
            let msg = e.strip_prefix(&prefix).unwrap_or(&e);
            if msg.starts_with("policy id") {
                anyhow!("{}: {msg}; nothing was signed", path.display())
            } else {
                anyhow!(
                    "{} does not parse: {msg}; nothing was signed",
                    path.display()
                )
            }
        })?;
        for (id, policy) in policies {
            if let Some(first) = origin.get(&id) {
                bail!(
                    "policy id `{id}` is used in both {first} and {file} (in {}); give one of them another @id; nothing was signed",
                    dir.display()
                );
            }
            origin.insert(id.clone(), file.clone());
            content.policies.insert(id, policy);
        }
    }
    for (name, slot) in [
        ("schema.cedarschema", &mut content.schema),
        ("entities.json", &mut content.entities),
        ("links.json", &mut content.links),
        ("routes.toml", &mut content.routes),
        ("issuers.toml", &mut content.issuers),
    ] {
        let path = dir.join(name);
        if path.is_file() {
            *slot = Some(read_text(&path)?);
        }
    }
    if cedar_files.is_empty() {
        eprintln!(
            "warning: {} holds no *.cedar files; the bundle will hold no policies",
            dir.display()
        );
    }
    Ok(content)
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = read_limited(path, MAX_SOURCE_FILE, "a policy source file")?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))
}

/// Checks that `key` belongs to an operator of `root`, and warns when the
/// operator lacks `role`.
fn check_operator(
    root: &TrustRoot,
    key: &SecretKey,
    key_path: &Path,
    role: Role,
    state: &LoadedState,
) -> Result<()> {
    let public = key.public();
    let Some(op) = root.operator_by_key(&public) else {
        bail!(
            "the key in {} ({public}) is not an operator in trust root version {} (from {}); nodes would refuse anything it signs",
            key_path.display(),
            root.version,
            state.origin
        );
    };
    if !op.has_role(role) {
        eprintln!(
            "warning: operator {} does not hold the {role} role; the update needs {} other operator(s) with that role to sign it",
            op.name,
            match role {
                Role::Revoke => root.revoke_threshold,
                _ => root.policy_threshold,
            }
        );
    }
    Ok(())
}

/// A signed update just built, with what it touches.
struct Built {
    update: SignedUpdate,
    bytes: Vec<u8>,
    id: String,
    summary: ChangeSummary,
    signers: BTreeSet<weft_protocol::identity::PublicKey>,
    missing: Missing,
}

impl Built {
    /// Adds the fields that every `--json` answer about a built update ends
    /// with to the object `out`.
    fn append_json(&self, out: &mut Value, root: &TrustRoot, lane: Value) {
        let tail = json!({
            "root_version": self.update.root_version,
            "lane": lane,
            "paths": paths_json(&self.summary),
            "signers": signers_json(Some(root), &self.signers),
            "missing": self.missing.to_json(),
            "missing_count": self.missing.total(),
            "threshold_met": self.missing.is_met(),
        });
        if let (Some(out), Value::Object(tail)) = (out.as_object_mut(), tail) {
            out.extend(tail);
        }
    }
}

/// Wraps and signs `change`, and works out what it touches on the original
/// state and what it still needs.
fn sign_change(change: &Change, key: &SecretKey, state: &LoadedState) -> Result<Built> {
    let mut update = SignedUpdate::new(change, state.root.version);
    update
        .sign(key)
        .map_err(|e| anyhow!("cannot sign the update: {e}"))?;
    let bytes = update.to_bytes();
    if bytes.len() > MAX_UPDATE_BYTES {
        bail!(
            "the update is {} bytes, over the limit of {MAX_UPDATE_BYTES} that nodes accept; split the content into several bundles",
            bytes.len()
        );
    }
    let summary = state
        .load_doc()?
        .summarize(change)
        .map_err(|e| anyhow!("the change just built does not fit the state: {e}"))?;
    let signers: BTreeSet<_> = update.signatures.iter().map(|s| s.key).collect();
    let missing = Missing::of(&summary, &signers, &state.root);
    Ok(Built {
        id: change.hash().to_string(),
        update,
        bytes,
        summary,
        signers,
        missing,
    })
}

fn paths_json(summary: &ChangeSummary) -> Value {
    Value::Array(
        summary
            .paths
            .iter()
            .map(|p| Value::String(p.to_string()))
            .collect(),
    )
}

fn print_paths(summary: &ChangeSummary) {
    let n = summary.paths.len();
    println!("  touches:  {n} path{}", if n == 1 { "" } else { "s" });
    for p in summary.paths.iter().take(MAX_PATHS_SHOWN) {
        println!("    {p}");
    }
    if n > MAX_PATHS_SHOWN {
        println!("    … and {} more", n - MAX_PATHS_SHOWN);
    }
}

fn print_signers(built: &Built, root: &TrustRoot) {
    println!(
        "  root:     signed under trust root version {}",
        built.update.root_version
    );
    println!("  signers:  {}", built.signers.len());
    for k in &built.signers {
        println!("    {}", who(Some(root), k));
    }
    println!("  status:   {}", built.missing.describe());
}

/// The author lane a change was written in, for `--json` output.
fn lane_json(change: &Change, continued: bool) -> Value {
    json!({
        "actor": change.actor_id().to_hex_string(),
        "seq": change.seq(),
        "continued": continued,
    })
}

/// Runs `weft bundle create`.
pub(crate) fn bundle_create(a: &BundleCreateArgs) -> Result<ExitCode> {
    check_bundle_name(&a.name).map_err(|e| anyhow!("--name: {e}"))?;
    let mut content = read_policy_dir(&a.dir)?;
    content.description = a.description.clone();
    // Validate before anything is signed, exactly as every node will.
    let parsed = content
        .parse(&a.name)
        .map_err(|e| anyhow!("{e}; nothing was signed"))?;
    let key = keyfile::read(&a.key)?;
    let now = crate::clock::unix_secs()?;
    let state = load_state(&a.source, now, &a.client)?;
    check_operator(&state.root, &key, &a.key, Role::Policy, &state)?;

    let mut doc = state.load_doc()?;
    let before = doc.view().bundle(&a.name).map(|b| b.merged.clone());
    let time = i64::try_from(now).unwrap_or(i64::MAX);
    let lane = Lane::open(&a.key, &key, &doc)?;
    let change = doc
        .build_bundle(lane.actor(), &a.name, &content, time)
        .map_err(|e| anyhow!("cannot build the update: {e}"))?
        .ok_or_else(|| {
            anyhow!(
                "bundle {} already holds exactly this content; nothing to sign",
                a.name
            )
        })?;
    let built = sign_change(&change, &key, &state)?;
    let lane_json = lane_json(&change, lane.continued());
    lane.record(&change)?;
    write_new_file(&a.out, &built.bytes, a.force)?;

    let (added, changed, removed) = policy_diff(before.as_ref(), &content);
    // Count the entities given, not the action entities a schema adds.
    let entity_count = content
        .entities
        .as_deref()
        .and_then(|e| serde_json::from_str::<Vec<Value>>(e).ok())
        .map_or(0, |v| v.len());
    let templates = parsed.policies.templates().count();
    if a.json {
        let mut out = json!({
            "id": built.id,
            "file": a.out.display().to_string(),
            "bundle": a.name,
            "new_bundle": before.is_none(),
            "policies": content.policies.len(),
            "templates": templates,
            "schema": content.schema.is_some(),
            "entities": entity_count,
            "added": added,
            "changed": changed,
            "removed": removed,
        });
        built.append_json(&mut out, &state.root, lane_json);
        println!("{out}");
    } else {
        println!("wrote update {} to {}", built.id, a.out.display());
        println!(
            "  bundle:   {} ({}; {} polic{}{}, {}, {} entit{})",
            a.name,
            if before.is_none() {
                "new"
            } else {
                "replaces the current content"
            },
            content.policies.len(),
            if content.policies.len() == 1 {
                "y"
            } else {
                "ies"
            },
            if templates > 0 {
                format!(" of which {templates} template(s)")
            } else {
                String::new()
            },
            if content.schema.is_some() {
                "validated against its schema"
            } else {
                "no schema"
            },
            entity_count,
            if entity_count == 1 { "y" } else { "ies" },
        );
        if before.is_some() {
            println!(
                "  policies: {} added, {} changed, {} removed",
                added.len(),
                changed.len(),
                removed.len()
            );
        }
        print_paths(&built.summary);
        print_signers(&built, &state.root);
        if !built.missing.is_met() {
            println!(
                "next: other operators run `weft update sign --key THEIR_KEY {}`, then `weft push --node URL {}`",
                a.out.display(),
                a.out.display()
            );
        } else {
            println!("next: `weft push --node URL {}`", a.out.display());
        }
        println!("{}", built.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Policy ids added, changed and removed relative to the bundle's current content.
fn policy_diff(
    before: Option<&BundleContent>,
    after: &BundleContent,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let empty = BundleContent::default();
    let before = before.unwrap_or(&empty);
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (id, text) in &after.policies {
        match before.policies.get(id) {
            None => added.push(id.clone()),
            Some(old) if old != text => changed.push(id.clone()),
            Some(_) => {}
        }
    }
    let removed = before
        .policies
        .keys()
        .filter(|id| !after.policies.contains_key(*id))
        .cloned()
        .collect();
    (added, changed, removed)
}

/// Parses a revocation subject: a node id, a Cedar entity uid, or an
/// identity token id (`token:` and 32 hex digits). Returns its canonical text
/// and what kind it is.
pub(crate) fn parse_subject(text: &str) -> Result<(String, &'static str)> {
    let text = text.trim();
    if let Some(id) = text.strip_prefix("token:") {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "\"{text}\" is not a token subject: expected token: and the token id's 32 hex digits"
            );
        }
        return Ok((format!("token:{}", id.to_ascii_lowercase()), "token"));
    }
    if let Ok(node) = NodeId::from_str(text) {
        return Ok((node.to_string(), "node"));
    }
    match cedar_policy::EntityUid::from_str(text) {
        Ok(uid) => Ok((uid.to_string(), "entity")),
        Err(e) => {
            let shown: String = text.chars().take(64).collect();
            let cedar = error_line(&e);
            bail!(
                "\"{shown}\" is neither a Cedar entity uid (like User::\"alice\") nor a node id (like 12D3KooW…): {cedar}"
            )
        }
    }
}

/// Runs `weft revoke`.
pub(crate) fn revoke(a: &RevokeArgs) -> Result<ExitCode> {
    let (subject, kind) = parse_subject(&a.subject)?;
    if a.out.is_none() && a.source.node.is_none() {
        bail!(
            "without --out, weft revoke pushes the update to a node, so it needs --node URL; pass --out FILE to only write it"
        );
    }
    let key = keyfile::read(&a.key)?;
    let now = crate::clock::unix_secs()?;
    let state = load_state(&a.source, now, &a.client)?;
    check_operator(&state.root, &key, &a.key, Role::Revoke, &state)?;

    let mut doc = state.load_doc()?;
    let current = doc.view().revocation(&subject).cloned();
    let time = i64::try_from(now).unwrap_or(i64::MAX);
    let action = if a.reinstate { "reinstate" } else { "revoke" };
    let lane = Lane::open(&a.key, &key, &doc)?;
    let change = if a.reinstate {
        if current.is_none() {
            bail!(
                "{subject} is not revoked in the state from {}; nothing to reinstate",
                state.origin
            );
        }
        doc.build_reinstate(lane.actor(), &subject, time)
            .map_err(|e| anyhow!("cannot build the update: {e}"))?
            .ok_or_else(|| anyhow!("{subject} has no revocation to lift; nothing to sign"))?
    } else {
        // The document writes every revocation as a fresh record, so the
        // "already revoked" check is made here, on the state built on.
        if current.as_ref().is_some_and(|r| r.reason == a.reason) {
            bail!("{subject} is already revoked with that reason");
        }
        doc.build_revoke(lane.actor(), &subject, &a.reason, time)
            .map_err(|e| anyhow!("cannot build the update: {e}"))?
            .ok_or_else(|| anyhow!("{subject} is already revoked with that reason"))?
    };
    let built = sign_change(&change, &key, &state)?;
    let lane_json = lane_json(&change, lane.continued());
    lane.record(&change)?;

    let mut pushed = None;
    match &a.out {
        Some(out) => write_new_file(out, &built.bytes, a.force)?,
        None => {
            if !built.missing.is_met() {
                bail!(
                    "this {action} update {}, so a node would refuse it alone; write it with --out FILE, have other operators co-sign it with `weft update sign`, then `weft push` it",
                    built.missing.describe()
                );
            }
            let client = NodeClient::new(state.url.as_deref().unwrap_or_default(), &a.client)?;
            let answer =
                post_update(&client, &built.bytes).map_err(|e| e.refusing("the update"))?;
            pushed = Some(answer);
        }
    }

    if a.json {
        let mut out = json!({
            "id": built.id,
            "subject": subject,
            "kind": kind,
            "action": action,
            "reason": if a.reinstate { None } else { Some(&a.reason) },
            "file": a.out.as_ref().map(|p| p.display().to_string()),
            "pushed": pushed.is_some(),
            "status": pushed.as_ref().map(|p| p.status.clone()),
        });
        built.append_json(&mut out, &state.root, lane_json);
        println!("{out}");
    } else {
        let verb = if a.reinstate { "reinstates" } else { "revokes" };
        match &a.out {
            Some(out) => println!("wrote update {} to {}", built.id, out.display()),
            None => println!("built update {}", built.id),
        }
        println!("  subject:  {subject} ({kind}); the update {verb} it");
        if !a.reinstate && !a.reason.is_empty() {
            println!("  reason:   {}", a.reason);
        }
        if let (true, Some(cur)) = (a.reinstate, &current) {
            println!(
                "  lifts:    {} revocation record(s) this state holds (reason: {})",
                cur.actors.len().max(1),
                if cur.reason.is_empty() {
                    "none given"
                } else {
                    &cur.reason
                }
            );
        }
        print_paths(&built.summary);
        print_signers(&built, &state.root);
        if let Some(p) = &pushed {
            println!(
                "pushed to {}: {} {}",
                state.url.as_deref().unwrap_or(""),
                p.id,
                p.status
            );
        }
        println!("{}", built.id);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let (s, k) = parse_subject(r#"User::"alice""#).unwrap();
        assert_eq!((s.as_str(), k), (r#"User::"alice""#, "entity"));
        let node = NodeId::new(SecretKey::from_seed([7; 32]).public()).to_string();
        assert_eq!(parse_subject(&node).unwrap(), (node.clone(), "node"));
        let err = parse_subject("alice").unwrap_err().to_string();
        assert!(err.contains("neither a Cedar entity uid"), "{err}");
        let id = "AB".repeat(16);
        assert_eq!(
            parse_subject(&format!("token:{id}")).unwrap(),
            (format!("token:{}", "ab".repeat(16)), "token")
        );
        assert!(parse_subject("token:12").is_err());
    }

    #[test]
    fn diff_of_policies() {
        let mut old = BundleContent::default();
        old.policies.insert("a".into(), "x".into());
        old.policies.insert("b".into(), "y".into());
        let mut new = BundleContent::default();
        new.policies.insert("b".into(), "z".into());
        new.policies.insert("c".into(), "w".into());
        let (added, changed, removed) = policy_diff(Some(&old), &new);
        assert_eq!(added, vec!["c"]);
        assert_eq!(changed, vec!["b"]);
        assert_eq!(removed, vec!["a"]);
    }
}
