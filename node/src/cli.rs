//! The `weft` command line: argument definitions (clap derive) and the code
//! that carries each command out.
//!
//! Conventions (see INTERFACE.md): every command that prints data has
//! `--json`; a command that produces a key or id prints that value as the
//! last line of stdout; errors are returned to `main`, which prints one
//! `error: …` line and exits 1. Usage errors are clap's (exit 2).
//!
//! `audit` is added to [`Command`] when it is built.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use weft_node::keyfile;
use weft_node::util::{read_trust_file, write_new_file};
use weft_protocol::identity::{Domain, NodeId, SecretKey};
use weft_protocol::time::{format_duration, format_timestamp, parse_duration};
use weft_protocol::trust::{
    Operator, QuarantineLimits, Role, SignedRoot, TrustRoot, to_trust_file,
};

/// Weft: a decentralized security control plane.
#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: a decentralized security control plane",
    long_about = "Weft: a decentralized security control plane.\n\n\
        Each site runs one weft node. Operators write policy as code (Cedar), sign it \
        with their ed25519 keys and push it to any node; nodes gossip the signed state, \
        merge it as a CRDT and answer authorization requests locally, with no server \
        and no leader.\n\n\
        Start with `weft key gen` for each root key and operator, then `weft trust init`.",
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and inspect ed25519 secret keys.
    #[command(
        subcommand,
        long_about = "Create and inspect ed25519 secret keys.\n\n\
            Root keys, operator keys and node keys are all ed25519 keys, kept in \
            PKCS#8 PEM files readable by their owner only (mode 0600). A public key \
            is written as one token, `ed25519.` followed by base58."
    )]
    Key(KeyCommand),
    /// Create and inspect the mesh's trust root (trust.json).
    #[command(
        subcommand,
        long_about = "Create and inspect the mesh's trust root (trust.json).\n\n\
            The trust root names the root keys (which sign the trust root) and their \
            threshold, the operators and their roles, and how many operators must sign \
            a policy update or a revocation. It is versioned, expires, and is signed by \
            the root keys; every node is given it at setup."
    )]
    Trust(TrustCommand),
    /// Set up, certify and run a node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Author policy bundles as signed updates.
    #[command(subcommand)]
    Bundle(weft_node::admin::BundleCommand),
    /// Revoke a user, a resource or a node, as a signed update.
    #[command(long_about = weft_node::admin::REVOKE_LONG_ABOUT)]
    Revoke(weft_node::admin::RevokeArgs),
    /// Co-sign and inspect signed update files.
    #[command(subcommand)]
    Update(weft_node::admin::UpdateCommand),
    /// Submit signed updates to a node.
    #[command(long_about = weft_node::admin::PUSH_LONG_ABOUT)]
    Push(weft_node::admin::PushArgs),
    /// Show a running node's state: peers, heads, bundles, revocations, freshness.
    Status(weft_node::status::StatusArgs),
    /// Ask a node for a decision: prints allow or deny; exits 0 on allow, 3 on deny.
    #[command(long_about = weft_node::admin::CHECK_LONG_ABOUT)]
    Check(weft_node::admin::CheckArgs),
    /// Issue short-lived identity tokens that stand in for a principal.
    #[command(
        subcommand,
        long_about = "Issue short-lived identity tokens that stand in for a principal.\n\n\
            A token binds a principal and attributes to an expiry, signed by an operator \
            holding the issue role. POST /v1/authorize (and `weft check --token`) accepts it \
            in place of a principal and verifies it on every request."
    )]
    Token(weft_node::admin::TokenCommand),
    /// Bearer tokens for a node's HTTP API (api_tokens_file).
    #[command(subcommand)]
    Api(weft_node::admin::ApiCommand),
    /// Run a local mesh with demo keys and policies and walk through the Weft story.
    #[command(
        long_about = "Run a local mesh with demo keys and policies and walk through the Weft story.\n\n\
            Starts N nodes in this process on loopback (free ports, a temporary directory), \
            with embedded demo keys (a root key, operators alice and bob) and policies, then \
            checks each step: a co-signed bundle is pushed and reaches every node, a user is \
            revoked everywhere, a partition forms and each side keeps working, and the heal \
            converges the mesh. The nodes keep running until Ctrl-C, unless --exit is given: \
            then the command exits 0 when every step held and 1 otherwise."
    )]
    Demo(weft_node::demo::DemoArgs),
    /// Run a deterministic simulation of a mesh in virtual time and check its invariants.
    #[command(
        long_about = "Run a deterministic simulation of a mesh in virtual time and check its invariants.\n\n\
            Drives N real replicas (the node's protocol code) on a modelled network with the \
            scenario's faults: latency, loss, partitions, crashes, clock skew, Byzantine nodes. \
            Afterwards it checks convergence, authenticity, revoke-wins and durability. The same \
            seed and inputs give the same report, byte for byte. Exits 1 when an invariant fails, \
            and prints the command that replays the run."
    )]
    #[cfg(feature = "sim")]
    Sim(weft_node::sim::SimArgs),
    /// Verify a node's tamper-evident audit trail, or export its records.
    #[command(
        subcommand,
        long_about = "Verify a node's tamper-evident audit trail, or export its records.\n\n\
            Every node appends its decisions (all denies, sampled allows), the updates it \
            applied or refused, admissions and bans to a hash-chained log, and signs and \
            gossips checkpoints of the chain's head, which its peers keep. `verify` checks \
            a stopped node's chain offline against those checkpoints; `export` streams a \
            running node's records."
    )]
    Audit(weft_node::admin::AuditCommand),
    /// Write a compliance report (HTML or JSON) of a node's policies, trust, revocations and audit chain.
    #[command(long_about = weft_node::report::REPORT_LONG_ABOUT)]
    Report(weft_node::report::ReportArgs),
    /// Generate labeled decision traces and evaluate the anomaly detector on them.
    #[cfg_attr(
        not(feature = "sim"),
        command(about = "Evaluate the anomaly detector on labeled decision traces")
    )]
    #[command(subcommand, long_about = weft_node::detect::cli::DETECT_LONG_ABOUT)]
    Detect(weft_node::detect::cli::DetectCommand),
}

/// `weft node …`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Create a node directory: key, trust root, store and weft.toml; prints the node id.
    #[command(long_about = weft_node::admin::NODE_INIT_LONG_ABOUT)]
    Init(weft_node::admin::NodeInitArgs),
    /// Sign a node's admission certificate with an operator key holding the admit role.
    #[command(long_about = weft_node::admin::NODE_CERTIFY_LONG_ABOUT)]
    Certify(weft_node::admin::NodeCertifyArgs),
    /// Run the node in the foreground until SIGINT or SIGTERM.
    #[command(long_about = weft_node::daemon::NODE_RUN_LONG_ABOUT)]
    Run(weft_node::daemon::NodeRunArgs),
    /// Print the settings `weft node run` would use (weft.toml, WEFT_* variables, flags) and where each came from.
    #[command(long_about = weft_node::admin::NODE_CONFIG_LONG_ABOUT)]
    Config(weft_node::admin::NodeConfigArgs),
}

/// `weft key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new secret key to a file (mode 0600) and print its public key.
    #[command(
        long_about = "Write a new ed25519 secret key to FILE and print its public key.\n\n\
        The key comes from the operating system's random source and is written as \
        PKCS#8 PEM with mode 0600. An existing file is never overwritten. The public \
        key is the last line of stdout, so `PUB=$(weft key gen --out op.key)` works."
    )]
    Gen(KeyGenArgs),
    /// Print the public key of a secret key file.
    #[command(long_about = "Print the public key of a secret key file.\n\n\
        The public key is the last line of stdout. With --json, prints the public key \
        and the node id the key would have as a node. A key file that group or others \
        may access is refused, as ssh does.")]
    Show(KeyShowArgs),
}

/// Arguments of `weft key gen`.
#[derive(Debug, Args)]
pub struct KeyGenArgs {
    /// Where to write the secret key; must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print JSON: {"public_key", "node_id", "file"}.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `weft key show`.
#[derive(Debug, Args)]
pub struct KeyShowArgs {
    /// The secret key file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print JSON: {"public_key", "node_id", "file"}.
    #[arg(long)]
    pub json: bool,
}

/// `weft trust …`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Write a new trust root, signed by the root keys.
    #[command(
        long_about = "Write a new trust root (version 1), signed by every --root-key given.\n\n\
        Operators are given as NAME=PUBKEY or NAME=PUBKEY:ROLE,ROLE with PUBKEY as printed \
        by `weft key gen`. The roles are policy (sign policy bundles), revoke (sign \
        revocations), admit (certify nodes) and issue (issue identity tokens); an operator \
        given without roles has them all.\n\n\
        --max-token-ttl sets the longest lifetime of an identity token (default 24h): nodes \
        refuse a token that lives longer, from its issue time to its expiry, and \
        `weft token issue` refuses to sign one.\n\n\
        Example:\n  weft trust init --root-key r1.key --root-key r2.key --root-threshold 2 \\\n    \
        --operator alice=ed25519.5Hb…:policy,revoke --operator bob=ed25519.9Qz… \\\n    \
        --threshold 2 --out trust.json"
    )]
    Init(TrustInitArgs),
    /// Print a trust root and whether its signatures verify.
    #[command(
        long_about = "Print a trust root and whether its signatures verify.\n\n\
        Shows the version, the expiry (and whether it has passed), the root keys and \
        their threshold, the operators and their roles, the thresholds, and the longest \
        identity token lifetime. Exits 1, after printing, when the signatures do not meet \
        the root threshold. An expired \
        root is reported, not refused: nodes keep enforcing it and raise the alarm."
    )]
    Show(TrustShowArgs),
    /// Write a new trust root, one version up, signed by root keys, and push it to the mesh.
    #[command(long_about = weft_node::admin::TRUST_ROTATE_LONG_ABOUT)]
    Rotate(weft_node::admin::TrustRotateArgs),
    /// Add a root key's signature to a trust file (for a rotation signed by several holders).
    #[command(
        long_about = "Add a root key's signature to a trust file, in place.\n\n\
        A rotation written by `weft trust rotate --out FILE` without enough signatures goes \
        from one root key holder to the next; each runs `weft trust sign --key KEY FILE`. \
        Nodes adopt it once it carries signatures from a threshold of the current root keys \
        and a threshold of its own; then push it with `weft push --node URL FILE`."
    )]
    Sign(weft_node::admin::TrustSignArgs),
}

/// Arguments of `weft trust init`.
#[derive(Debug, Args)]
pub struct TrustInitArgs {
    /// A root key file; give the flag once per root key. Every key given signs.
    #[arg(long = "root-key", value_name = "FILE", required = true)]
    pub root_keys: Vec<PathBuf>,
    /// How many distinct root keys must sign a trust root [default: a majority of the root keys].
    #[arg(long, value_name = "N")]
    pub root_threshold: Option<u32>,
    /// An operator: NAME=PUBKEY or NAME=PUBKEY:ROLE,ROLE (roles: policy, revoke, admit, issue; none given = all).
    #[arg(
        long = "operator",
        value_name = "NAME=PUBKEY[:ROLE,ROLE...]",
        required = true
    )]
    pub operators: Vec<String>,
    /// How many distinct operators with the policy role must sign a policy update.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: u32,
    /// How many distinct operators with the revoke role must sign a revocation.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub revoke_threshold: u32,
    /// How long the trust root is valid, like 90s, 15m, 24h or 365d.
    #[arg(long, value_name = "DURATION", default_value = "365d")]
    pub expires: String,
    /// Let nodes quarantine misbehaving subjects on their own (at most 1h each, 5 per node per hour).
    #[arg(long)]
    pub allow_node_quarantine: bool,
    /// The longest lifetime of an identity token, like 90s, 15m, 24h or 365d: nodes
    /// refuse a longer token, and `weft token issue` refuses to sign one.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub max_token_ttl: String,
    /// Where to write the trust file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the new trust root as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `weft trust show`.
#[derive(Debug, Args)]
pub struct TrustShowArgs {
    /// The trust file (trust.json).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print JSON: the trust root's fields plus "verified", "error", "expired", "expires_at" and "signers".
    #[arg(long)]
    pub json: bool,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Key(KeyCommand::Gen(a)) => key_gen(&a),
        Command::Key(KeyCommand::Show(a)) => key_show(&a),
        Command::Trust(TrustCommand::Init(a)) => trust_init(&a),
        Command::Trust(TrustCommand::Show(a)) => trust_show(&a),
        Command::Trust(TrustCommand::Rotate(a)) => weft_node::admin::trust_rotate(a),
        Command::Trust(TrustCommand::Sign(a)) => weft_node::admin::trust_sign(a),
        Command::Node(NodeCommand::Init(a)) => weft_node::admin::node_init(a),
        Command::Node(NodeCommand::Certify(a)) => weft_node::admin::node_certify(a),
        Command::Node(NodeCommand::Run(a)) => weft_node::daemon::node_run(a),
        Command::Node(NodeCommand::Config(a)) => weft_node::admin::node_config(a),
        Command::Bundle(c) => weft_node::admin::bundle(c),
        Command::Revoke(a) => weft_node::admin::revoke(a),
        Command::Update(c) => weft_node::admin::update(c),
        Command::Push(a) => weft_node::admin::push(a),
        Command::Status(a) => weft_node::status::status(a),
        Command::Check(a) => weft_node::admin::check(a),
        Command::Token(c) => weft_node::admin::token(c),
        Command::Api(c) => weft_node::admin::api(c),
        Command::Demo(a) => weft_node::demo::demo(a),
        #[cfg(feature = "sim")]
        Command::Sim(a) => weft_node::sim::sim(a),
        Command::Audit(c) => weft_node::admin::audit(c),
        Command::Report(a) => weft_node::report::report(a),
        Command::Detect(c) => weft_node::detect::cli::detect(c),
    }
}

fn key_json(key: &SecretKey, file: &Path) -> serde_json::Value {
    json!({
        "public_key": key.public().to_string(),
        "node_id": NodeId::new(key.public()).to_string(),
        "file": file.display().to_string(),
    })
}

fn key_gen(a: &KeyGenArgs) -> Result<ExitCode> {
    let key = keyfile::generate()?;
    keyfile::write(&a.out, &key)?;
    if a.json {
        println!("{}", key_json(&key, &a.out));
    } else {
        eprintln!("wrote a new secret key to {} (mode 0600)", a.out.display());
        println!("{}", key.public());
    }
    Ok(ExitCode::SUCCESS)
}

fn key_show(a: &KeyShowArgs) -> Result<ExitCode> {
    let key = keyfile::read(&a.file)?;
    if a.json {
        println!("{}", key_json(&key, &a.file));
    } else {
        println!("{}", key.public());
    }
    Ok(ExitCode::SUCCESS)
}

/// The default root threshold: a majority of the root keys, so that losing a
/// minority of them neither blocks a rotation nor lets a minority rotate.
fn majority(n: usize) -> u32 {
    u32::try_from(n / 2 + 1).unwrap_or(u32::MAX)
}

fn trust_init(a: &TrustInitArgs) -> Result<ExitCode> {
    let lifetime = parse_duration(&a.expires).context("--expires")?;
    let max_token_ttl = parse_duration(&a.max_token_ttl).context("--max-token-ttl")?;
    let mut operators = a
        .operators
        .iter()
        .map(|spec| spec.parse::<Operator>())
        .collect::<Result<Vec<_>, _>>()?;
    operators.sort_by(|x, y| x.name.cmp(&y.name));
    let keys = a
        .root_keys
        .iter()
        .map(|p| keyfile::read(p))
        .collect::<Result<Vec<SecretKey>, _>>()?;
    let now = weft_node::clock::unix_secs()?;
    let mut root = TrustRoot {
        version: 1,
        expires: now
            .checked_add(lifetime)
            .ok_or_else(|| anyhow!("--expires {} reaches past the year 292 billion", a.expires))?,
        root_keys: keys.iter().map(SecretKey::public).collect(),
        root_threshold: a.root_threshold.unwrap_or_else(|| majority(keys.len())),
        operators,
        policy_threshold: a.threshold,
        revoke_threshold: a.revoke_threshold,
        node_quarantine: QuarantineLimits {
            allowed: a.allow_node_quarantine,
            ..QuarantineLimits::default()
        },
        max_token_ttl_secs: max_token_ttl,
        accepted_heads: Vec::new(),
    };
    root.sort_operators();
    root.validate()?;
    let refs: Vec<&SecretKey> = keys.iter().collect();
    let signed = SignedRoot::sign(&root, &refs);
    // Check what we are about to hand out, exactly as a node will.
    signed.verify_initial(now)?;
    write_new_file(&a.out, to_trust_file(&signed).as_bytes(), a.force)?;
    if a.json {
        let mut v = serde_json::to_value(&root)?;
        v["file"] = json!(a.out.display().to_string());
        v["expires_at"] = json!(format_timestamp(root.expires));
        println!("{v}");
    } else {
        println!(
            "wrote trust root version {} to {}: {} root key{} (threshold {}), {} operator{}, expires {}",
            root.version,
            a.out.display(),
            root.root_keys.len(),
            plural(root.root_keys.len()),
            root.root_threshold,
            root.operators.len(),
            plural(root.operators.len()),
            format_timestamp(root.expires),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Roughly how long `secs` is, in its largest whole unit: `364d`, `5h`, `12m`, `30s`.
fn approx(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn trust_show(a: &TrustShowArgs) -> Result<ExitCode> {
    let (_, signed) = read_trust_file(&a.file)?;
    let root = signed.root()?;
    let now = weft_node::clock::unix_secs()?;
    let verdict = signed.verify_initial(now);
    let expired = root.is_expired(now);
    let valid_by = |k| {
        signed
            .signatures
            .iter()
            .any(|s| s.key == k && k.verify(Domain::TrustRoot, &signed.body, &s.sig).is_ok())
    };
    let signers: Vec<_> = root
        .root_keys
        .iter()
        .copied()
        .filter(|k| valid_by(*k))
        .collect();

    if a.json {
        let mut v = serde_json::to_value(&root)?;
        v["file"] = json!(a.file.display().to_string());
        v["verified"] = json!(verdict.is_ok());
        v["error"] = json!(verdict.as_ref().err().map(ToString::to_string));
        v["expired"] = json!(expired);
        v["expires_at"] = json!(format_timestamp(root.expires));
        v["signers"] = json!(signers.iter().map(ToString::to_string).collect::<Vec<_>>());
        println!("{v}");
    } else {
        let mut out = String::new();
        let status = match &verdict {
            Ok(_) => format!(
                "valid ({} of {} root keys signed, threshold {})",
                signers.len(),
                root.root_keys.len(),
                root.root_threshold
            ),
            Err(e) => format!("NOT VALID: {e}"),
        };
        let expiry = if expired {
            format!(
                "{} (EXPIRED {} ago: nodes keep enforcing it, but rotate it now)",
                format_timestamp(root.expires),
                approx(now - root.expires)
            )
        } else {
            format!(
                "{} (in {})",
                format_timestamp(root.expires),
                approx(root.expires - now)
            )
        };
        out += &format!(
            "trust root version {} ({})\n",
            root.version,
            a.file.display()
        );
        out += &format!("  signatures:       {status}\n");
        out += &format!("  expires:          {expiry}\n");
        out += &format!(
            "  root keys:        {} (threshold {})\n",
            root.root_keys.len(),
            root.root_threshold
        );
        for k in &root.root_keys {
            let mark = if signers.contains(k) {
                "signed"
            } else {
                "not signed"
            };
            out += &format!("    {k}  {mark}\n");
        }
        out += &format!("  operators:        {}\n", root.operators.len());
        let width = root
            .operators
            .iter()
            .map(|o| o.name.len())
            .max()
            .unwrap_or(0);
        for o in &root.operators {
            let roles: Vec<&str> = o.roles.iter().map(|r| r.as_str()).collect();
            out += &format!("    {:width$}  {}  {}\n", o.name, o.key, roles.join(", "));
        }
        let with_role = |r| root.operators_with_role(r).count();
        out += &format!(
            "  policy threshold: {} of {} operators with the policy role\n",
            root.policy_threshold,
            with_role(Role::Policy)
        );
        out += &format!(
            "  revoke threshold: {} of {} operators with the revoke role\n",
            root.revoke_threshold,
            with_role(Role::Revoke)
        );
        let q = root.node_quarantine;
        if q.allowed {
            out += &format!(
                "  node quarantine:  allowed (at most {} each, {} per node per hour)\n",
                approx(q.max_ttl_secs),
                q.max_per_node_per_hour
            );
        } else {
            out += "  node quarantine:  not allowed\n";
        }
        out += &format!(
            "  token lifetime:   at most {}\n",
            format_duration(root.max_token_ttl_secs)
        );
        if !root.accepted_heads.is_empty() {
            out += &format!("  accepted heads:   {}\n", root.accepted_heads.len());
        }
        print!("{out}");
    }
    match verdict {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => bail!(
            "the trust root in {} does not verify: {e}",
            a.file.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn majority_threshold() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn approx_units() {
        assert_eq!(approx(30), "30s");
        assert_eq!(approx(90), "1m");
        assert_eq!(approx(7200), "2h");
        assert_eq!(approx(365 * 86_400 - 1), "364d");
    }
}
