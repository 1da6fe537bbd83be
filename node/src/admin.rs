//! Operator tooling: node directories and certificates, and authoring,
//! co-signing, inspecting and pushing signed updates.
//!
//! Every command here is a thin layer over `crdt` and `protocol`: it reads
//! files (or a node's `GET /v1/state`), builds or checks one thing, and
//! writes one file or one HTTP request. Errors are `anyhow` errors whose
//! message is one sentence; `main` prints it as one `error: …` line.
//!
//! - [`node_init`], [`node_certify`]: a node's directory and admission certificate.
//! - [`bundle`], [`revoke`]: author a signed update on top of a node's state.
//! - [`update`]: co-sign an update file, or show what it does and who signed it.
//! - [`push`]: submit update files (and trust roots) to a node.
//! - [`trust_rotate`], [`trust_sign`]: a new trust root, carried through the mesh.
//! - [`token()`]: issue identity tokens.
//! - [`check()`]: ask a node for a decision.
//! - [`node_config`]: the settings `weft node run` would use, and their sources.
//! - [`audit()`]: verify a node's audit chain offline, export its records.

mod apitoken;
mod audit;
mod author;
mod check;
mod common;
mod inspect;
pub(crate) mod lane;
mod nodeconfig;
mod nodedir;
mod rotate;
mod token;

pub use apitoken::{API_TOKEN_ADD_LONG_ABOUT, ApiCommand, ApiTokenAddArgs, ApiTokenCommand, api};
pub use audit::{AUDIT_VERIFY_LONG_ABOUT, AuditCommand, AuditExportArgs, AuditVerifyArgs, audit};
pub use check::{CHECK_LONG_ABOUT, CheckArgs};
pub use nodeconfig::{NODE_CONFIG_LONG_ABOUT, NodeConfigArgs, node_config};
pub use rotate::{TRUST_ROTATE_LONG_ABOUT, TrustRotateArgs, TrustSignArgs};
pub use token::{TOKEN_ISSUE_LONG_ABOUT, TokenCommand, TokenIssueArgs};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

/// The long help of `weft node init` (clap takes it from the command's variant in `cli`).
pub const NODE_INIT_LONG_ABOUT: &str = "Create a node directory: a new node key, the trust root, the store and a weft.toml.\n\n\
        DIR is created with mode 0700 (an existing DIR must be empty). The node's ed25519 \
        key is written to DIR/node.key (mode 0600), the trust file is checked (its root \
        keys must meet the root threshold; an expired root is accepted with a warning) and \
        copied to DIR/trust.json, and DIR/weft.toml gets the defaults, overridden by \
        --listen, --api and --peer. `weft node run` flags override weft.toml in turn.\n\n\
        The node id (the libp2p PeerId of the node key) is the last line of stdout. \
        Next, an operator with the admit role runs `weft node certify --dir DIR`.";

/// `weft node init`
#[derive(Debug, Args)]
#[command(long_about = NODE_INIT_LONG_ABOUT)]
pub struct NodeInitArgs {
    /// The node directory to create; if it exists it must be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The mesh's trust file, as written by `weft trust init`.
    #[arg(long, value_name = "FILE")]
    pub trust: PathBuf,
    /// libp2p listen address for weft.toml, e.g. /ip4/0.0.0.0/tcp/7101 [default: /ip4/127.0.0.1/tcp/7101].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Option<String>,
    /// HTTP API address for weft.toml [default: 127.0.0.1:7100].
    #[arg(long, value_name = "HOST:PORT")]
    pub api: Option<String>,
    /// A peer to dial, as a libp2p multiaddr (no /p2p/ suffix needed); repeat for more peers.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Print JSON: {"node_id", "public_key", "dir", "key", "trust", "trust_version", "config", "store"}.
    #[arg(long)]
    pub json: bool,
}

/// The long help of `weft node certify`.
pub const NODE_CERTIFY_LONG_ABOUT: &str = "Sign a node's admission certificate and write it to DIR/node.cert.\n\n\
        The operator key must belong to an operator holding the admit role in DIR/trust.json. \
        The certificate names the node (the public key in DIR/node.key), a name (the \
        directory's name unless --name is given), the issuer, and how long it is valid. \
        Peers refuse connections from nodes without a valid certificate. Running it again \
        replaces the certificate (to renew it, or to rename the node).\n\n\
        The node id is the last line of stdout.";

/// `weft node certify`
#[derive(Debug, Args)]
#[command(long_about = NODE_CERTIFY_LONG_ABOUT)]
pub struct NodeCertifyArgs {
    /// The operator's secret key file (the operator must hold the admit role).
    #[arg(long, value_name = "OPERATOR_KEY")]
    pub key: PathBuf,
    /// The node directory (made by `weft node init`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The node's name in the certificate: letters, digits, '.', '_' and '-' [default: DIR's file name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How long the certificate is valid, like 90s, 15m, 24h or 365d.
    #[arg(long, value_name = "DURATION", default_value = "365d")]
    pub expires: String,
    /// Print JSON: {"node_id", "name", "issuer", "issuer_key", "issued", "expires", "file"}.
    #[arg(long)]
    pub json: bool,
}

/// Where a command gets the mesh state that it builds an update on.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct StateSource {
    /// A running node's API, e.g. http://127.0.0.1:7100; its state is fetched with GET /v1/state.
    #[arg(long, value_name = "URL")]
    pub node: Option<String>,
    /// A state export file (what GET /v1/state returns), instead of asking a node.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

/// Where `weft update sign` and `weft update show` may learn the trust root
/// (and, from a state, the exact paths a change touches). All optional.
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub struct RootSource {
    /// The mesh's trust file, to name the signers and check the threshold.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// A state export file (what GET /v1/state returns): trust root plus the exact paths touched.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// A running node's API, e.g. http://127.0.0.1:7100: its trust root and state.
    #[arg(long, value_name = "URL")]
    pub node: Option<String>,
}

/// `weft bundle …`
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build and sign an update that makes bundle NAME exactly what a policy directory holds.
    #[command(
        long_about = "Build and sign an update that makes bundle NAME exactly what POLICY_DIR holds.\n\n\
            POLICY_DIR holds *.cedar policy files (read in file-name order), plus, each optional, \
            schema.cedarschema (a Cedar schema), entities.json (Cedar's entity JSON format) and \
            links.json (template links: [{\"template\": ID, \"id\": LINK_ID, \"slots\": \
            {\"?principal\": UID, \"?resource\": UID}}]), routes.toml (routes from HTTP requests \
            to Cedar requests, for /v1/forward-auth and Envoy's ext_authz; docs/routes.md) and \
            issuers.toml (trusted OIDC issuers and SPIFFE trust domains; docs/identity.md). A policy's id is its @id(\"...\") \
            annotation, or FILESTEM.N (N counting from 0 within the file); an id used twice is \
            refused. Other files are ignored.\n\n\
            The content is checked before anything is signed: every policy must parse, links \
            must resolve, with a schema every policy must validate against it (strict mode) \
            and the entities must conform, and the routes and issuers files must read and check. \
            Nothing invalid is ever signed.\n\n\
            The update is built on the state of a node (--node URL, fetched with GET /v1/state) \
            or of a state export file (--state FILE), signed with --key under that state's trust \
            root, and written to --out. If the policy threshold needs more signers, pass the file \
            to other operators for `weft update sign`, then `weft push` it. The update id is the \
            last line of stdout."
    )]
    Create(BundleCreateArgs),
}

/// Arguments of `weft bundle create`.
#[derive(Debug, Args)]
pub struct BundleCreateArgs {
    /// The bundle's name: 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The policy directory: *.cedar files, optional schema.cedarschema, entities.json, links.json, routes.toml, issuers.toml.
    #[arg(long, value_name = "POLICY_DIR")]
    pub dir: PathBuf,
    /// The authoring operator's secret key file (the operator should hold the policy role).
    #[arg(long, value_name = "OPERATOR_KEY")]
    pub key: PathBuf,
    /// The state to build on.
    #[command(flatten)]
    pub source: StateSource,
    /// Where to write the signed update.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// A free-text description stored with the bundle.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Print JSON: {"id", "file", "bundle", "root_version", "paths", "signers", "missing", "threshold_met", ...}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// The long help of `weft revoke`.
pub const REVOKE_LONG_ABOUT: &str = "Revoke a user, a resource or a node, as a signed update (or lift a revocation with --reinstate).\n\n\
        SUBJECT is a Cedar entity uid, like User::\"alice\" (quote it for the shell: \
        'User::\"alice\"'), a node id (the libp2p PeerId a node prints, 12D3KooW…), or an \
        identity token as token:ID (the id `weft token issue` reports). Once a \
        node accepts the revocation, every request naming the subject, or an entity that \
        descends from it, is denied, whatever the policies say; a revoked node is \
        disconnected and banned by its peers.\n\n\
        The update is built on a node's state (--node URL) or a state export (--state FILE) \
        and signed with --key. With --out it is only written to FILE (for co-signing with \
        `weft update sign` and `weft push`); without --out it is also pushed to --node, which \
        needs the revoke threshold to be met by this one signature.\n\n\
        --reinstate lifts a revocation instead. It deletes only the revocations of SUBJECT \
        that the state it is built on has seen: a revocation made concurrently (that the \
        state did not hold yet) stays in force, because revocation wins.\n\n\
        The update id is the last line of stdout.";

/// `weft revoke`
#[derive(Debug, Args)]
#[command(long_about = REVOKE_LONG_ABOUT)]
pub struct RevokeArgs {
    /// The operator's secret key file (the operator should hold the revoke role).
    #[arg(long, value_name = "OPERATOR_KEY")]
    pub key: PathBuf,
    /// The state to build on (and, without --out, the node to push to: needs --node).
    #[command(flatten)]
    pub source: StateSource,
    /// What to revoke: a Cedar entity uid (User::"alice"), a node id (12D3KooW…) or token:ID.
    #[arg(value_name = "SUBJECT")]
    pub subject: String,
    /// Why, recorded with the revocation.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "",
        conflicts_with = "reinstate"
    )]
    pub reason: String,
    /// Lift SUBJECT's revocation instead (only the revocations the state built on has seen).
    #[arg(long)]
    pub reinstate: bool,
    /// Only write the signed update to FILE; do not push it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Overwrite FILE if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Print JSON: {"id", "subject", "action", "file", "pushed", "status", "signers", "missing", ...}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// `weft update …`
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Add one co-signature to a signed update file, in place.
    #[command(
        long_about = "Add your signature to a signed update file, in place.\n\n\
            Updates that need several operators are co-signed offline: the file goes from one \
            operator to the next, each running `weft update sign --key THEIR_KEY FILE`, and \
            anyone then pushes it with `weft push`. Read it first with `weft update show`. \
            Every signature already on the file must verify, or nothing is signed. Signing \
            twice with one key changes nothing. The file is replaced atomically (FILE.tmp, \
            then a rename).\n\n\
            With --trust, --state or --node the trust root is known: the signers are named, \
            a key that is not an operator is refused, and what is still missing is shown. \
            The update id is the last line of stdout."
    )]
    Sign(UpdateSignArgs),
    /// Show what a signed update changes, who signed it, and whether the threshold is met.
    #[command(
        long_about = "Show what a signed update changes, who signed it, and whether the threshold is met.\n\n\
            Decodes FILE, checks every signature (OK or BAD), and shows the update id, the \
            trust-root version it was signed under, its author, its message and the operations \
            of its change. Without a state, operations inside objects of the base state are \
            shown by key only; with --state or --node the exact paths are resolved against \
            that state. With --trust, --state or --node the signers are named and the missing \
            signatures, if any, are listed.\n\n\
            Exits 1 (after printing) if a signature does not verify or the file cannot be \
            decoded."
    )]
    Show(UpdateShowArgs),
}

/// Arguments of `weft update sign`.
#[derive(Debug, Args)]
pub struct UpdateSignArgs {
    /// Your operator secret key file.
    #[arg(long, value_name = "OPERATOR_KEY")]
    pub key: PathBuf,
    /// The signed update file; it is rewritten in place.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where to learn the trust root (optional).
    #[command(flatten)]
    pub root: RootSource,
    /// Print JSON: {"id", "file", "added", "signer", "signers", "missing", "threshold_met"}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Arguments of `weft update show`.
#[derive(Debug, Args)]
pub struct UpdateShowArgs {
    /// The signed update file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where to learn the trust root and the base state (optional).
    #[command(flatten)]
    pub root: RootSource,
    /// Print JSON: {"id", "root_version", "author", "message", "operations", "paths", "signatures", "missing", "threshold_met", "ready", "problems", ...}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// The long help of `weft push`.
pub const PUSH_LONG_ABOUT: &str = "Submit signed update files to a node (POST /v1/updates).\n\n\
        The files are sent in the order given. For each accepted file the node's answer is \
        printed: the update id and its status (applied, duplicate, or held while its \
        dependencies are missing). At the first file a node refuses (bad signature, too few \
        signers, unknown operator, malformed), the command stops, names the file and the \
        node's reason, and exits 1; the files after it are not sent.";

/// `weft push`
#[derive(Debug, Args)]
#[command(long_about = PUSH_LONG_ABOUT)]
pub struct PushArgs {
    /// The node's API, e.g. http://127.0.0.1:7100.
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// The signed update files to submit, in order.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON object per accepted file: {"file", "id", "status"}.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Runs `weft node init`.
pub fn node_init(args: NodeInitArgs) -> Result<ExitCode> {
    nodedir::init(&args)
}

/// Runs `weft node certify`.
pub fn node_certify(args: NodeCertifyArgs) -> Result<ExitCode> {
    nodedir::certify(&args)
}

/// Runs `weft bundle …`.
pub fn bundle(cmd: BundleCommand) -> Result<ExitCode> {
    match cmd {
        BundleCommand::Create(args) => author::bundle_create(&args),
    }
}

/// Runs `weft revoke`.
pub fn revoke(args: RevokeArgs) -> Result<ExitCode> {
    author::revoke(&args)
}

/// Runs `weft update …`.
pub fn update(cmd: UpdateCommand) -> Result<ExitCode> {
    match cmd {
        UpdateCommand::Sign(args) => inspect::sign(&args),
        UpdateCommand::Show(args) => inspect::show(&args),
    }
}

/// Runs `weft push`.
pub fn push(args: PushArgs) -> Result<ExitCode> {
    inspect::push(&args)
}

/// Runs `weft trust rotate`.
pub fn trust_rotate(args: TrustRotateArgs) -> Result<ExitCode> {
    rotate::trust_rotate(&args)
}

/// Runs `weft trust sign`.
pub fn trust_sign(args: TrustSignArgs) -> Result<ExitCode> {
    rotate::trust_sign(&args)
}

/// Runs `weft token …`.
pub fn token(cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Issue(args) => token::issue(&args),
    }
}

/// Runs `weft check`: exit 0 on allow, 3 on deny.
pub fn check(args: CheckArgs) -> Result<ExitCode> {
    check::check(&args)
}
