//! `weft update sign`, `weft update show` and `weft push`: what happens to an
//! update file after it is written.

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use automerge::{ObjType, ScalarValue, legacy};
use serde_json::json;
use weft_crdt::{ActorId, Change, ChangeSummary, CrdtError, PolicyDoc, Section, schema};
use weft_protocol::identity::{Domain, PublicKey};
use weft_protocol::time::format_timestamp;
use weft_protocol::update::{SignedUpdate, author_of, signing_message};

use super::common::{
    Known, Missing, load_known, post_update, read_update, section_name, signers_json, who,
};
use super::{PushArgs, UpdateShowArgs, UpdateSignArgs};
use crate::client::{CallError, NodeClient};
use crate::keyfile;
use crate::util::{read_trust_file, write_atomic};

/// One operation of a change, as far as it can be read without the state.
#[derive(Clone, Debug)]
pub(crate) struct OpLine {
    /// `create map`, `put`, `delete`, or automerge's name for anything else.
    pub(crate) action: String,
    /// The path, or `…/KEY` when the operation writes into an object of the base state.
    pub(crate) path: String,
    /// Whether `path` is exact.
    pub(crate) exact: bool,
    /// The section it belongs to (an object of the base state is inside a bundle:
    /// only bundles hold nested objects).
    pub(crate) section: Option<Section>,
}

/// Reads a change's operations without the base state. Objects made by the
/// genesis change (the top-level maps and revocation buckets) and by the change itself are
/// resolved; any other object is one of the base state's bundles or policy maps.
/// A change whose operations do not decode has none to show.
pub(crate) fn read_ops(change: &Change) -> Vec<OpLine> {
    let mut objects: HashMap<(u64, ActorId), String> = schema::genesis_objects()
        .into_iter()
        .map(|(id, path)| (id, path.to_string()))
        .collect();
    let Ok(expanded) = weft_crdt::PolicyDoc::expand(change) else {
        return Vec::new();
    };
    let start = expanded.start_op.get();
    let mut out = Vec::new();
    for (i, op) in expanded.operations.iter().enumerate() {
        let parent = match &op.obj {
            legacy::ObjectId::Root => Some(String::new()),
            legacy::ObjectId::Id(legacy::OpId(counter, actor)) => {
                objects.get(&(*counter, actor.clone())).cloned()
            }
        };
        let key = match &op.key {
            legacy::Key::Map(k) => k.to_string(),
            legacy::Key::Seq(_) => "(a sequence element)".to_owned(),
        };
        let (path, exact) = match &parent {
            Some(p) if p.is_empty() => (key.clone(), true),
            Some(p) => (format!("{p}/{key}"), true),
            None => (format!("…/{key}"), false),
        };
        let section = if exact {
            weft_crdt::Path(path.split('/').map(str::to_owned).collect()).section()
        } else {
            Some(Section::Bundles)
        };
        let action = match &op.action {
            legacy::OpType::Make(ObjType::Map) => {
                objects.insert((start + i as u64, expanded.actor_id.clone()), path.clone());
                "create map".to_owned()
            }
            legacy::OpType::Put(ScalarValue::Str(_)) => "put".to_owned(),
            legacy::OpType::Delete => "delete".to_owned(),
            other => format!("{other:?}"),
        };
        out.push(OpLine {
            action,
            path,
            exact,
            section,
        });
    }
    out
}

/// A summary built from the operations alone, good enough to count the
/// signatures each section needs.
fn approximate_summary(change: &Change, ops: &[OpLine]) -> ChangeSummary {
    let paths = ops
        .iter()
        .map(|op| match op.section {
            Some(s) if !op.exact => weft_crdt::Path(vec![
                section_name(s).to_owned(),
                "…".to_owned(),
                op.path.clone(),
            ]),
            _ => weft_crdt::Path(op.path.split('/').map(str::to_owned).collect()),
        })
        .collect();
    ChangeSummary {
        hash: change.hash(),
        actor: change.actor_id().clone(),
        deps: change.deps().to_vec(),
        max_op: change.max_op(),
        time: change.timestamp(),
        paths,
    }
}

/// Every signature on an update, and whether it verifies.
fn check_signatures(update: &SignedUpdate, change: &Change) -> Vec<(PublicKey, bool)> {
    let msg = signing_message(&change.hash(), update.root_version);
    update
        .signatures
        .iter()
        .map(|s| (s.key, s.key.verify(Domain::Update, &msg, &s.sig).is_ok()))
        .collect()
}

/// What the change touches: exact paths against a state when one is given and
/// holds the change's dependencies, else the operations read alone.
struct Touches {
    ops: Vec<OpLine>,
    exact: Option<ChangeSummary>,
    summary: ChangeSummary,
    note: Option<String>,
    problem: Option<String>,
    in_state: bool,
}

fn touches(change: &Change, known: &Known) -> Result<Touches> {
    let ops = read_ops(change);
    let mut t = Touches {
        summary: approximate_summary(change, &ops),
        ops,
        exact: None,
        note: None,
        problem: None,
        in_state: false,
    };
    if let Known::State(state) = known {
        let doc: PolicyDoc = state.load_doc()?;
        t.in_state = doc.contains(&change.hash());
        match doc.summarize(change) {
            Ok(s) => {
                t.summary = s.clone();
                t.exact = Some(s);
            }
            Err(CrdtError::MissingDeps(m)) => {
                t.note = Some(format!(
                    "the state from {} lacks {} of the change's dependencies; paths are read from the change alone",
                    state.origin,
                    m.len()
                ));
            }
            Err(e) => t.problem = Some(format!("against the state from {}: {e}", state.origin)),
        }
    }
    Ok(t)
}

/// Runs `weft update show`.
pub(crate) fn show(a: &UpdateShowArgs) -> Result<ExitCode> {
    let (bytes, update) = read_update(&a.file)?;
    let file = a.file.display().to_string();
    let change = PolicyDoc::parse_change(&update.change)
        .map_err(|e| anyhow!("{file} is not a signed update: {e}"))?;
    let id = change.hash().to_string();
    let now = crate::clock::unix_secs()?;
    let known = load_known(&a.root, now, &a.client)?;
    let root = known.root();
    let sigs = check_signatures(&update, &change);
    let valid: BTreeSet<PublicKey> = sigs.iter().filter(|s| s.1).map(|s| s.0).collect();
    let author = author_of(change.actor_id());
    let t = touches(&change, &known)?;

    let mut problems: Vec<String> = Vec::new();
    for (k, ok) in &sigs {
        if !ok {
            problems.push(format!("the signature by {k} does not verify"));
        }
    }
    match author {
        None => problems.push(format!(
            "the change's actor ({}) is not an operator actor, so it has no author",
            change.actor_id()
        )),
        Some(k) if !valid.contains(&k) => problems.push(format!(
            "its author {} has not signed it (nodes require the author's signature)",
            who(root, &k)
        )),
        Some(_) => {}
    }
    if let Some(p) = &t.problem {
        problems.push(p.clone());
    }
    let missing = root.map(|r| Missing::of(&t.summary, &valid, r));
    if let Some(r) = root {
        for k in &valid {
            if r.operator_by_key(k).is_none() {
                problems.push(format!(
                    "{k} is not an operator in trust root version {}; nodes refuse updates it signs",
                    r.version
                ));
            }
        }
        if r.version != update.root_version {
            problems.push(format!(
                "it was signed under trust root version {}, but {} holds version {}",
                update.root_version,
                known.origin().unwrap_or("the trust root given"),
                r.version
            ));
        }
    }

    let exact_paths: Option<Vec<String>> = t
        .exact
        .as_ref()
        .map(|s| s.paths.iter().map(ToString::to_string).collect());
    let sections: Vec<&str> = t.summary.sections().into_iter().map(section_name).collect();
    if a.json {
        let v = json!({
            "id": id,
            "file": file,
            "bytes": bytes.len(),
            "root_version": update.root_version,
            "author": author.map(|k| json!({
                "key": k.to_string(),
                "name": root.and_then(|r| r.operator_by_key(&k)).map(|o| o.name.clone()),
                "signed": valid.contains(&k),
            })),
            "message": change.message(),
            "time": change.timestamp(),
            "deps": change.deps().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "sections": sections,
            "operations": t.ops.iter().map(|o| json!({
                "action": o.action, "path": o.path, "exact": o.exact,
            })).collect::<Vec<_>>(),
            "paths": exact_paths,
            "in_state": if matches!(known, Known::State(_)) { Some(t.in_state) } else { None },
            "signatures": sigs.iter().map(|(k, ok)| json!({
                "key": k.to_string(),
                "name": root.and_then(|r| r.operator_by_key(k)).map(|o| o.name.clone()),
                "valid": ok,
            })).collect::<Vec<_>>(),
            "signers": signers_json(root, &valid),
            "signer_count": valid.len(),
            "trust_root": root.map(|r| json!({
                "version": r.version,
                "from": known.origin(),
                "policy_threshold": r.policy_threshold,
                "revoke_threshold": r.revoke_threshold,
            })),
            "missing": missing.as_ref().map(Missing::to_json),
            "missing_count": missing.as_ref().map(Missing::total),
            "threshold_met": missing.as_ref().map(Missing::is_met),
            "ready": missing.as_ref().map(|m| m.is_met() && problems.is_empty()),
            "note": t.note,
            "problems": problems,
        });
        println!("{v}");
    } else {
        let mut out = String::new();
        out += &format!("update {id} ({file})\n");
        out += &format!(
            "  root version: signed under trust root version {}\n",
            update.root_version
        );
        let author_text = match author {
            Some(k) => format!(
                "{}{}",
                who(root, &k),
                if valid.contains(&k) {
                    ""
                } else {
                    " (has NOT signed)"
                }
            ),
            None => "none (not an operator actor)".to_owned(),
        };
        out += &format!("  author:       {author_text}\n");
        out += &format!("  message:      {}\n", change.message().map_or("", |m| m));
        let time = change.timestamp();
        out += &format!(
            "  written:      {}\n",
            u64::try_from(time).map_or_else(|_| time.to_string(), format_timestamp)
        );
        match (&exact_paths, &known) {
            (Some(paths), Known::State(state)) => {
                out += &format!(
                    "  touches:      {} path(s), against the state from {}{}\n",
                    paths.len(),
                    state.origin,
                    if t.in_state {
                        " (which already holds it)"
                    } else {
                        ""
                    }
                );
                for p in paths {
                    out += &format!("    {p}\n");
                }
            }
            _ => {
                out += &format!(
                    "  operations:   {} (sections: {})\n",
                    t.ops.len(),
                    sections.join(", ")
                );
                for o in &t.ops {
                    out += &format!("    {:<10} {}\n", o.action, o.path);
                }
                if t.ops.iter().any(|o| !o.exact) {
                    out += "    (…/KEY: inside a bundle of the base state; pass --state or --node for exact paths)\n";
                }
            }
        }
        if let Some(n) = &t.note {
            out += &format!("  note:         {n}\n");
        }
        out += &format!("  signatures:   {}\n", sigs.len());
        for (k, ok) in &sigs {
            out += &format!("    {}  {}\n", who(root, k), if *ok { "OK" } else { "BAD" });
        }
        match (&missing, root) {
            (Some(m), Some(r)) => {
                out += &format!(
                    "  trust root:   version {} (from {}): policy threshold {}, revoke threshold {}\n",
                    r.version,
                    known.origin().unwrap_or("?"),
                    r.policy_threshold,
                    r.revoke_threshold
                );
                let status = if m.is_met() && !problems.is_empty() {
                    "signatures suffice, but see the problems below".to_owned()
                } else {
                    m.describe()
                };
                out += &format!("  status:       {status}\n");
            }
            _ => {
                out += "  status:       unknown (pass --trust, --state or --node to check the threshold)\n";
            }
        }
        for p in &problems {
            out += &format!("  PROBLEM:      {p}\n");
        }
        print!("{out}");
    }
    if let Some((k, _)) = sigs.iter().find(|s| !s.1) {
        bail!("{file} carries a signature by {k} that does not verify");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `weft update sign`.
pub(crate) fn sign(a: &UpdateSignArgs) -> Result<ExitCode> {
    let (_, mut update) = read_update(&a.file)?;
    let file = a.file.display().to_string();
    let change = PolicyDoc::parse_change(&update.change)
        .map_err(|e| anyhow!("{file} is not a signed update: {e}"))?;
    let id = change.hash().to_string();
    if let Some((k, _)) = check_signatures(&update, &change)
        .into_iter()
        .find(|s| !s.1)
    {
        bail!("{file} carries a signature by {k} that does not verify; refusing to co-sign it");
    }
    let key = keyfile::read(&a.key)?;
    let me = key.public();
    let now = crate::clock::unix_secs()?;
    let known = load_known(&a.root, now, &a.client)?;
    let root = known.root();
    if let Some(r) = root {
        if r.operator_by_key(&me).is_none() {
            bail!(
                "the key in {} ({me}) is not an operator in trust root version {} (from {}); nodes would refuse the update with its signature",
                a.key.display(),
                r.version,
                known.origin().unwrap_or("?")
            );
        }
        if r.version != update.root_version {
            eprintln!(
                "warning: {file} was signed under trust root version {}, but {} holds version {}; nodes judge it under the version it names",
                update.root_version,
                known.origin().unwrap_or("?"),
                r.version
            );
        }
    }
    let added = !update.signatures.iter().any(|s| s.key == me);
    if added {
        update
            .sign(&key)
            .map_err(|e| anyhow!("cannot sign {file}: {e}"))?;
        write_atomic(&a.file, &update.to_bytes())?;
    }
    let signers: BTreeSet<PublicKey> = update.signatures.iter().map(|s| s.key).collect();
    let missing = match root {
        Some(r) => {
            let t = touches(&change, &known)?;
            Some(Missing::of(&t.summary, &signers, r))
        }
        None => None,
    };
    if a.json {
        println!(
            "{}",
            json!({
                "id": id,
                "file": file,
                "added": added,
                "signer": me.to_string(),
                "signers": signers_json(root, &signers),
                "signer_count": signers.len(),
                "missing": missing.as_ref().map(Missing::to_json),
                "missing_count": missing.as_ref().map(Missing::total),
                "threshold_met": missing.as_ref().map(Missing::is_met),
            })
        );
    } else {
        if added {
            println!("signed update {id} in {file} as {}", who(root, &me));
        } else {
            println!(
                "{} has already signed {file}; nothing changed",
                who(root, &me)
            );
        }
        match (&missing, root) {
            (Some(m), Some(_)) => {
                println!("  signers:  {}", signers.len());
                for k in &signers {
                    println!("    {}", who(root, k));
                }
                println!("  status:   {}", m.describe());
            }
            _ => println!(
                "  signers:  {} (pass --trust, --state or --node to see what is still missing)",
                signers.len()
            ),
        }
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The encoded `SignedRoot` in `path`, if it is a trust file (JSON, as
/// `weft trust init` and `weft trust rotate` write); `None` for anything
/// else.
fn trust_root_bytes(path: &std::path::Path) -> Result<Option<Vec<u8>>> {
    let mut head = [0u8; 1];
    let n = std::io::Read::read(
        &mut std::fs::File::open(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        &mut head,
    )
    .with_context(|| format!("cannot read {}", path.display()))?;
    if n == 0 || head[0] != b'{' {
        return Ok(None);
    }
    let (_, signed) = read_trust_file(path)?;
    Ok(Some(signed.to_bytes()))
}

/// Runs `weft push`.
pub(crate) fn push(a: &PushArgs) -> Result<ExitCode> {
    // Read every file first, so a typo in the list pushes nothing.
    let mut files = Vec::new();
    for path in &a.files {
        let bytes = match trust_root_bytes(path)? {
            Some(root) => root,
            None => read_update(path)?.0,
        };
        files.push((path.display().to_string(), bytes, ()));
    }
    let client = NodeClient::new(&a.node, &a.client)?;
    let base = client.base();
    let total = files.len();
    for (i, (file, bytes, _)) in files.iter().enumerate() {
        let rest = total - i - 1;
        let unsent = if rest > 0 {
            format!("; the {rest} file(s) after it were not sent")
        } else {
            String::new()
        };
        match post_update(&client, bytes) {
            Ok(answer) => {
                if a.json {
                    println!(
                        "{}",
                        json!({"file": file, "id": answer.id, "status": answer.status})
                    );
                } else {
                    println!("{file}: {} {}", answer.id, answer.status);
                }
            }
            Err(CallError::Refused { status, reason, .. }) => {
                bail!("the node at {base} refused {file} (HTTP {status}): {reason}{unsent}")
            }
            Err(CallError::Transport(msg)) => bail!("{msg} (while sending {file}){unsent}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_crdt::BundleContent;
    use weft_protocol::identity::SecretKey;
    use weft_protocol::update::actor_for;

    #[test]
    fn ops_are_read_without_the_state() {
        let key = SecretKey::from_seed([1; 32]);
        let mut doc = PolicyDoc::new();
        let mut content = BundleContent::default();
        content
            .policies
            .insert("p".into(), "permit(principal, action, resource);".into());
        let first = doc
            .build_bundle(actor_for(&key.public(), [1; 8]), "web", &content, 1)
            .unwrap()
            .unwrap();
        let ops = read_ops(&first);
        assert!(ops.iter().all(|o| o.exact), "{ops:?}");
        let paths: Vec<&str> = ops.iter().map(|o| o.path.as_str()).collect();
        assert!(paths.contains(&"bundles/web"), "{paths:?}");
        assert!(paths.contains(&"bundles/web/policies/p"), "{paths:?}");

        // An edit of the existing bundle writes into objects of the base state.
        content
            .policies
            .insert("q".into(), "forbid(principal, action, resource);".into());
        let second = doc
            .build_bundle(actor_for(&key.public(), [2; 8]), "web", &content, 2)
            .unwrap()
            .unwrap();
        let ops = read_ops(&second);
        assert!(ops.iter().any(|o| !o.exact && o.path == "…/q"), "{ops:?}");
        let summary = approximate_summary(&second, &ops);
        assert_eq!(summary.sections(), [Section::Bundles].into_iter().collect());

        let revoke = doc
            .build_revoke(actor_for(&key.public(), [3; 8]), r#"User::"a""#, "", 3)
            .unwrap()
            .unwrap();
        let ops = read_ops(&revoke);
        assert_eq!(ops.len(), 1);
        let bucket = schema::revocation_bucket(r#"User::"a""#);
        assert_eq!(ops[0].path, format!(r#"revocations/{bucket}/User::"a""#));
        assert_eq!(ops[0].section, Some(Section::Revocations));
    }
}
