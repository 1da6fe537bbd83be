//! `weft trust rotate` and `weft trust sign`: a new trust root that a
//! threshold of the current root keys and of its own sign, carried through
//! the mesh like a signed update.
//!
//! The new root starts as a copy of the root a node runs under (from
//! `--node` or `--state`), one version higher, vouching for the node's
//! current heads as accepted under the old root (`accepted_heads`: updates
//! that name the old root stay valid only in their causal past, so an
//! operator the rotation removes can write nothing more). Flags change what
//! they name. The keys given sign it; once a threshold of the old and of
//! the new root keys have (checked here as every node will check it), it is
//! pushed to the node, which adopts it, stores it, rewrites its
//! `trust.json` and gossips it. Short of that, it is written to `--out` for
//! the other root key holders to add their signatures with `weft trust
//! sign`, and pushed with `weft push`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use serde_json::json;
use weft_protocol::identity::{PublicKey, SecretKey};
use weft_protocol::time::{format_timestamp, parse_duration};
use weft_protocol::trust::{Operator, SignedRoot, VerifiedRoot, to_trust_file};

use super::StateSource;
use super::common::{load_state, post_update};
use crate::client::NodeClient;
use crate::keyfile;
use crate::util::{read_trust_file, write_atomic, write_new_file};

/// The long help of `weft trust rotate`.
pub const TRUST_ROTATE_LONG_ABOUT: &str = "Write a new trust root, one version up, signed by the root keys given, and push it.\n\n\
        The new root starts as a copy of the root the node runs under (--node, or a state \
        export with --state), with its heads as `accepted_heads`: updates signed under the \
        old root stay valid only if they are part of that state, so an operator the rotation \
        removes can write nothing more on any node. --operator adds or replaces an operator \
        (NAME=PUBKEY[:ROLE,...]), --remove-operator removes one; --root-key (a public key, \
        repeat it) replaces the root keys; the thresholds, expiry and node quarantine are \
        kept unless given.\n\n\
        Every --key (a root key's secret key file, old or new) signs. Nodes adopt the new \
        root only if it carries signatures from a threshold of the current root keys and a \
        threshold of its own. When the keys given meet both, the root is pushed to --node \
        (unless --no-push), which gossips it to the mesh; a node that misses the gossip gets \
        it from any peer at their next sync. Otherwise write it with --out and have the other \
        root key holders run `weft trust sign --key KEY FILE`, then `weft push --node URL FILE`.\n\n\
        Example:\n  weft trust rotate --node http://127.0.0.1:7100 --key r1.key --key r2.key \\\n    \
        --remove-operator bob --out trust-v2.json";

/// Arguments of `weft trust rotate`.
#[derive(Debug, Args)]
pub struct TrustRotateArgs {
    /// The node (or state export) whose root and heads the new root builds on.
    #[command(flatten)]
    pub source: StateSource,
    /// A root key's secret key file that signs the new root (current or new root key); repeat it.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The new root's root keys (public keys); given, they replace the current ones.
    #[arg(long = "root-key", value_name = "PUBKEY")]
    pub root_keys: Vec<String>,
    /// How many distinct root keys must sign the root after this one [default: as now, or a majority of new root keys].
    #[arg(long, value_name = "N")]
    pub root_threshold: Option<u32>,
    /// Adds an operator, or replaces the one of that name: NAME=PUBKEY[:ROLE,ROLE...].
    #[arg(long = "operator", value_name = "NAME=PUBKEY[:ROLE,ROLE...]")]
    pub operators: Vec<String>,
    /// Removes the operator of that name.
    #[arg(long = "remove-operator", value_name = "NAME")]
    pub remove: Vec<String>,
    /// How many distinct operators with the policy role must sign a policy update [default: as now].
    #[arg(long, value_name = "N")]
    pub threshold: Option<u32>,
    /// How many distinct operators with the revoke role must sign a revocation [default: as now].
    #[arg(long, value_name = "N")]
    pub revoke_threshold: Option<u32>,
    /// How long the new root is valid from now, like 90s, 15m, 24h or 365d.
    #[arg(long, value_name = "DURATION", default_value = "365d")]
    pub expires: String,
    /// Let nodes quarantine on their own (true) or not (false) [default: as now].
    #[arg(long, value_name = "BOOL")]
    pub allow_node_quarantine: Option<bool>,
    /// Also write the new root to this trust file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// Do not push the root, even when it is fully signed.
    #[arg(long)]
    pub no_push: bool,
    /// Print JSON: {"version", "file", "signed_old", "need_old", "signed_new", "need_new", "pushed"}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Arguments of `weft trust sign`.
#[derive(Debug, Args)]
pub struct TrustSignArgs {
    /// A root key's secret key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The trust file to add the signature to, in place.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// How far a rotation's signatures go: distinct valid signatures by the
/// current root keys and by the new root's, against each threshold.
struct Tally {
    old: usize,
    need_old: usize,
    new: usize,
    need_new: usize,
}

impl Tally {
    fn of(current: &weft_protocol::trust::TrustRoot, signed: &SignedRoot) -> Result<Tally> {
        let next = signed.root()?;
        let valid = |keys: &[PublicKey]| {
            keys.iter()
                .filter(|k| {
                    signed.signatures.iter().any(|s| {
                        s.key == **k
                            && k.verify(
                                weft_protocol::identity::Domain::TrustRoot,
                                &signed.body,
                                &s.sig,
                            )
                            .is_ok()
                    })
                })
                .count()
        };
        Ok(Tally {
            old: valid(&current.root_keys),
            need_old: current.root_threshold as usize,
            new: valid(&next.root_keys),
            need_new: next.root_threshold as usize,
        })
    }

    fn met(&self) -> bool {
        self.old >= self.need_old && self.new >= self.need_new
    }
}

/// Runs `weft trust rotate`.
pub(crate) fn trust_rotate(a: &TrustRotateArgs) -> Result<ExitCode> {
    let now = crate::clock::unix_secs()?;
    let state = load_state(&a.source, now, &a.client)?;
    let current = state.root.clone();
    let doc = state.load_doc()?;
    let keys = a
        .keys
        .iter()
        .map(|p| keyfile::read(p))
        .collect::<Result<Vec<SecretKey>, _>>()?;
    let lifetime = parse_duration(&a.expires).context("--expires")?;

    let mut next = current.clone();
    next.version = current
        .version
        .checked_add(1)
        .ok_or_else(|| anyhow!("the trust root's version cannot grow further"))?;
    next.expires = now
        .checked_add(lifetime)
        .ok_or_else(|| anyhow!("--expires {} reaches past the end of time", a.expires))?;
    next.accepted_heads = doc.heads().iter().map(|h| h.0).collect();
    for name in &a.remove {
        let before = next.operators.len();
        next.operators.retain(|o| &o.name != name);
        if next.operators.len() == before {
            bail!(
                "--remove-operator {name}: trust root version {} has no operator of that name",
                current.version
            );
        }
    }
    for spec in &a.operators {
        let op: Operator = spec.parse()?;
        next.operators.retain(|o| o.name != op.name);
        next.operators.push(op);
    }
    if !a.root_keys.is_empty() {
        next.root_keys = a
            .root_keys
            .iter()
            .map(|k| {
                k.parse::<PublicKey>()
                    .map_err(|e| anyhow!("--root-key {k}: {e}"))
            })
            .collect::<Result<_>>()?;
        if a.root_threshold.is_none() {
            next.root_threshold = u32::try_from(next.root_keys.len() / 2 + 1).unwrap_or(u32::MAX);
        }
    }
    if let Some(t) = a.root_threshold {
        next.root_threshold = t;
    }
    if let Some(t) = a.threshold {
        next.policy_threshold = t;
    }
    if let Some(t) = a.revoke_threshold {
        next.revoke_threshold = t;
    }
    if let Some(allowed) = a.allow_node_quarantine {
        next.node_quarantine.allowed = allowed;
    }
    next.sort_operators();
    next.validate()?;
    let refs: Vec<&SecretKey> = keys.iter().collect();
    let signed = SignedRoot::sign(&next, &refs);
    let tally = Tally::of(&current, &signed)?;
    if let Some(out) = &a.out {
        write_new_file(out, to_trust_file(&signed).as_bytes(), a.force)?;
    }
    let mut pushed = None;
    if tally.met() {
        // Exactly the check every node makes.
        VerifiedRoot {
            root: current.clone(),
            expired: false,
        }
        .verify_rotation(&signed, now)?;
        if !a.no_push
            && let Some(base) = &state.url
        {
            let answer = post_update(&NodeClient::new(base, &a.client)?, &signed.to_bytes())
                .map_err(|e| e.refusing(&format!("trust root version {}", next.version)))?;
            pushed = Some(answer.status);
        }
    } else if a.out.is_none() {
        bail!(
            "trust root version {} has {} of {} signatures by the current root keys and {} of {} by its own: give more --key, or --out FILE for the others to sign with `weft trust sign`",
            next.version,
            tally.old,
            tally.need_old,
            tally.new,
            tally.need_new
        );
    }
    if a.json {
        println!(
            "{}",
            json!({
                "version": next.version,
                "file": a.out.as_ref().map(|p| p.display().to_string()),
                "signed_old": tally.old, "need_old": tally.need_old,
                "signed_new": tally.new, "need_new": tally.need_new,
                "pushed": pushed,
                "expires_at": format_timestamp(next.expires),
            })
        );
    } else {
        let signatures = format!(
            "{} of {} current root key signature(s), {} of {} new",
            tally.old, tally.need_old, tally.new, tally.need_new
        );
        match (&pushed, &a.out) {
            (Some(status), _) => println!(
                "trust root version {} pushed to {} ({status}); {signatures}",
                next.version, state.origin
            ),
            (None, Some(out)) if tally.met() => println!(
                "wrote trust root version {} to {}; {signatures}; push it with `weft push --node URL {}`",
                next.version,
                out.display(),
                out.display()
            ),
            (None, Some(out)) => println!(
                "wrote trust root version {} to {}; {signatures}: the other root key holders sign it with `weft trust sign --key KEY {}`",
                next.version,
                out.display(),
                out.display()
            ),
            (None, None) => println!(
                "trust root version {} is signed ({signatures}) but was not pushed",
                next.version
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `weft trust sign`.
pub(crate) fn trust_sign(a: &TrustSignArgs) -> Result<ExitCode> {
    let (_, mut signed) = read_trust_file(&a.file)?;
    let root = signed.root()?;
    let key = keyfile::read(&a.key)?;
    signed.add_signature(&key);
    write_atomic(&a.file, to_trust_file(&signed).as_bytes())?;
    println!(
        "{}: trust root version {} now carries {} signature(s)",
        a.file.display(),
        root.version,
        signed.signatures.len()
    );
    Ok(ExitCode::SUCCESS)
}
