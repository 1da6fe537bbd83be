//! The trust root and node certificates.
//!
//! The trust root plays the part of TUF's root role. It names the root keys
//! (which sign the trust root itself and any successor) with their threshold,
//! the operators with their roles, the thresholds operators must meet, and the
//! limits on what nodes may do on their own. It is versioned and expires.
//!
//! - A node first accepts a root with [`SignedRoot::verify_initial`]: at least
//!   `root_threshold` distinct root keys of that root must have signed its
//!   body.
//! - A node then only moves forward with [`VerifiedRoot::verify_rotation`]:
//!   the next root must have a higher version and be signed by a threshold of
//!   the current root keys *and* a threshold of its own root keys.
//! - An expired root is reported (`expired: true`), not refused: a node keeps
//!   enforcing the last root it trusts and raises the alarm, rather than
//!   failing open or shutting down.
//!
//! Signatures by keys that are not root keys of the root being checked are
//! ignored: they are neither verified nor counted. This is what lets a rotated
//! root carry the signatures of the previous root's keys, and a new node
//! bootstrap from such a root. A signature by a root key that does not verify
//! is an error, even when the threshold is met without it.
//!
//! Node certificates ([`SignedNodeCert`]) are signed by an operator holding
//! the [`Role::Admit`] role; peers refuse nodes without a valid one.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::encoding::{self, DecodeError, Kind};
use crate::identity::{Domain, NodeId, PublicKey, SecretKey, Signature};
use crate::time::format_timestamp;

/// The largest trust root body, signed root or trust file accepted (1 MiB).
/// A root with hundreds of operators is a few tens of KiB; the limit only
/// keeps hostile input from costing memory.
pub const MAX_TRUST_ROOT_LEN: usize = 1 << 20;

/// The largest node certificate accepted (64 KiB; a real one is ~150 bytes).
pub const MAX_NODE_CERT_LEN: usize = 64 << 10;

/// The value of the `format` field of a trust file.
pub const TRUST_FILE_FORMAT: &str = "weft-trust-root";

/// The longest operator or node name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a trust root, a rotation, a trust file or a node certificate was
/// refused. Each message is one sentence.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrustError {
    /// A signature by a key that matters does not verify.
    #[error("the signature by {who} does not verify")]
    BadSignature {
        /// Who made the signature, e.g. `root key ed25519.…`.
        who: String,
    },
    /// Too few distinct keys made valid signatures.
    #[error("not enough valid signatures from {what}: {have} of the {need} required")]
    ThresholdNotMet {
        /// Distinct keys with a valid signature.
        have: usize,
        /// The threshold.
        need: usize,
        /// Whose signatures were counted.
        what: String,
    },
    /// The signer is not an operator of the trust root.
    #[error("{key} is not an operator of this trust root")]
    UnknownSigner {
        /// The signer's key (boxed: a key is 192 bytes).
        key: Box<PublicKey>,
    },
    /// The signer is an operator without the role the act needs.
    #[error("operator {who} does not hold the {role} role")]
    WrongRole {
        /// The operator's name.
        who: String,
        /// The role that was needed.
        role: Role,
    },
    /// The thing has expired.
    #[error("{what} expired at {}", format_timestamp(*.expires))]
    Expired {
        /// What expired, e.g. `node certificate for edge-1`.
        what: String,
        /// When it expired (Unix seconds).
        expires: u64,
    },
    /// A rotation offered a version that is not newer than the current one.
    #[error("refusing trust root version {offered}: this node already trusts version {current}")]
    Rollback {
        /// The version this node trusts.
        current: u64,
        /// The version offered.
        offered: u64,
    },
    /// The bytes could not be decoded.
    #[error("{0}")]
    Malformed(#[from] DecodeError),
    /// The content is not acceptable (explained in the message, which is
    /// shown on one line: it may quote what was sent).
    #[error("{}", weft_crdt::bundle::one_line_text(.0))]
    Invalid(String),
}

// ---------------------------------------------------------------------------
// Roles and operators

/// What an operator may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sign policy bundle updates.
    Policy,
    /// Sign revocations.
    Revoke,
    /// Sign node admission certificates.
    Admit,
    /// Issue identity tokens.
    Issue,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Policy, Role::Revoke, Role::Admit, Role::Issue];

    /// The text form: `policy`, `revoke`, `admit` or `issue`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Policy => "policy",
            Role::Revoke => "revoke",
            Role::Admit => "admit",
            Role::Issue => "issue",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for text that is not a role.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown role \"{0}\" (the roles are policy, revoke, admit and issue)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(32).collect()))
    }
}

/// A person (or team) who signs updates, revocations, certificates or
/// tokens, with the roles they hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// A short unique name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// The operator's signing key.
    pub key: PublicKey,
    /// What the operator may sign; never empty.
    pub roles: BTreeSet<Role>,
}

impl Operator {
    /// Whether the operator holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Checks a name for an operator or a node.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        let start: String = name.chars().take(MAX_NAME_LEN).collect();
        return Err(format!(
            "the name {start:?}… is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "the name {name:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Parses the command-line form `NAME=PUBKEY[:ROLE,ROLE...]`. An operator
/// given without roles holds all of them.
impl FromStr for Operator {
    type Err = TrustError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = |msg: String| TrustError::Invalid(msg);
        let Some((name, rest)) = spec.split_once('=') else {
            return Err(invalid(format!(
                "operator \"{spec}\" must be written NAME=PUBKEY or NAME=PUBKEY:ROLE,ROLE"
            )));
        };
        validate_name(name).map_err(|e| invalid(format!("operator \"{spec}\": {e}")))?;
        let (key_text, roles_text) = match rest.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (rest, None),
        };
        let key: PublicKey = key_text
            .parse()
            .map_err(|e| invalid(format!("operator {name}: {e}")))?;
        let roles = match roles_text {
            None => Role::ALL.into_iter().collect(),
            Some(text) => {
                if text.is_empty() {
                    return Err(invalid(format!(
                        "operator {name}: no roles after ':' (leave out ':' to give all roles)"
                    )));
                }
                text.split(',')
                    .map(|r| {
                        r.parse::<Role>()
                            .map_err(|e| invalid(format!("operator {name}: {e}")))
                    })
                    .collect::<Result<BTreeSet<Role>, _>>()?
            }
        };
        Ok(Operator {
            name: name.to_string(),
            key,
            roles,
        })
    }
}

/// Renders the command-line form `NAME=PUBKEY:ROLE,ROLE`.
impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.key)?;
        let mut sep = ':';
        for r in &self.roles {
            write!(f, "{sep}{r}")?;
            sep = ',';
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The trust root

/// What nodes may do on their own to quarantine a misbehaving subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineLimits {
    /// Whether nodes may quarantine at all. Default: no.
    pub allowed: bool,
    /// The longest quarantine a node may order. Default: 3600 s (one hour,
    /// long enough for an operator to be paged and to revoke for good).
    pub max_ttl_secs: u64,
    /// How many quarantines one node may order per hour. Default: 5 (a
    /// compromised node can annoy, not shut the mesh down).
    pub max_per_node_per_hour: u32,
}

impl Default for QuarantineLimits {
    fn default() -> Self {
        QuarantineLimits {
            allowed: false,
            max_ttl_secs: 3600,
            max_per_node_per_hour: 5,
        }
    }
}

/// The longest identity token lifetime a trust root allows by default, in
/// seconds: 86,400 (24 h). A token is a bearer credential that is checked
/// but never refreshed, so a stolen one is good until it expires or is
/// revoked by id; a day covers a working session and keeps that window short.
pub const DEFAULT_MAX_TOKEN_TTL_SECS: u64 = 86_400;

/// The mesh's root of trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRoot {
    /// Version, from 1; a node only ever moves to a higher version.
    pub version: u64,
    /// When the root expires (Unix seconds).
    pub expires: u64,
    /// The keys that sign trust roots.
    pub root_keys: Vec<PublicKey>,
    /// How many distinct root keys must sign.
    pub root_threshold: u32,
    /// The operators, sorted by name; names and keys are unique.
    pub operators: Vec<Operator>,
    /// How many distinct operators with the policy role must sign a policy update.
    pub policy_threshold: u32,
    /// How many distinct operators with the revoke role must sign a revocation.
    pub revoke_threshold: u32,
    /// What nodes may do on their own.
    pub node_quarantine: QuarantineLimits,
    /// The longest lifetime of an identity token, in seconds (at least 1):
    /// nodes refuse a token whose `expires - issued` is longer
    /// ([`crate::token::verify`]), and `weft token issue` refuses to sign
    /// one. Default: [`DEFAULT_MAX_TOKEN_TTL_SECS`] (24 h).
    pub max_token_ttl_secs: u64,
    /// The heads of the replicated state (automerge change hashes) that the
    /// signers of this root vouch for as accepted under the previous version.
    /// Updates naming an older root version are only valid in the causal past
    /// of these heads. Empty for a first root. Hex strings in JSON.
    #[serde(with = "hashes")]
    pub accepted_heads: Vec<[u8; 32]>,
}

/// Serde for a list of 32-byte hashes: hex strings in human-readable formats,
/// raw 32-byte arrays in binary ones.
mod hashes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let hex: Vec<String> = v.iter().map(hex::encode).collect();
            hex.serialize(s)
        } else {
            v.serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        if d.is_human_readable() {
            let hex: Vec<String> = Vec::deserialize(d)?;
            hex.iter()
                .map(|h| {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(h, &mut out).map_err(|e| {
                        D::Error::custom(format!("accepted head {h:?} is not 64 hex digits: {e}"))
                    })?;
                    Ok(out)
                })
                .collect()
        } else {
            Vec::deserialize(d)
        }
    }
}

impl TrustRoot {
    /// Checks that the root is well-formed: version at least 1; at least one
    /// root key; thresholds at least 1 and achievable (`root_threshold` at
    /// most the number of root keys, `policy_threshold` at most the number of
    /// operators holding the policy role, the same for revoke); operators
    /// sorted by name with valid unique names and at least one role each; no
    /// key used twice, whether as a root key or an operator key (a root key
    /// doubling as an operator key would let one stolen key both sign policy
    /// and rotate the root); and a maximum token lifetime of at least 1 second.
    pub fn validate(&self) -> Result<(), TrustError> {
        let invalid = |m: String| Err(TrustError::Invalid(m));
        let v = self.version;
        if v == 0 {
            return invalid("trust root version 0 is not allowed; versions start at 1".into());
        }
        if self.root_keys.is_empty() {
            return invalid(format!("trust root version {v} has no root keys"));
        }
        let mut seen = BTreeSet::new();
        for k in &self.root_keys {
            if !seen.insert(*k) {
                return invalid(format!("trust root version {v} lists root key {k} twice"));
            }
        }
        check_threshold(
            v,
            "root threshold",
            self.root_threshold,
            self.root_keys.len(),
            "root keys",
        )?;
        for pair in self.operators.windows(2) {
            if pair[0].name >= pair[1].name {
                return invalid(if pair[0].name == pair[1].name {
                    format!(
                        "trust root version {v} has two operators named {}",
                        pair[0].name
                    )
                } else {
                    format!("trust root version {v} does not list its operators sorted by name")
                });
            }
        }
        for op in &self.operators {
            validate_name(&op.name)
                .map_err(|e| TrustError::Invalid(format!("trust root version {v}: {e}")))?;
            if op.roles.is_empty() {
                return invalid(format!(
                    "trust root version {v}: operator {} has no roles",
                    op.name
                ));
            }
            if !seen.insert(op.key) {
                return invalid(format!(
                    "trust root version {v}: the key of operator {} is already used by another operator or as a root key",
                    op.name
                ));
            }
        }
        let count = |role| self.operators.iter().filter(|o| o.has_role(role)).count();
        check_threshold(
            v,
            "policy threshold",
            self.policy_threshold,
            count(Role::Policy),
            "operators with the policy role",
        )?;
        check_threshold(
            v,
            "revoke threshold",
            self.revoke_threshold,
            count(Role::Revoke),
            "operators with the revoke role",
        )?;
        let mut heads = BTreeSet::new();
        for h in &self.accepted_heads {
            if !heads.insert(h) {
                return invalid(format!(
                    "trust root version {v} lists accepted head {} twice",
                    hex::encode(h)
                ));
            }
        }
        if self.node_quarantine.allowed && self.node_quarantine.max_ttl_secs == 0 {
            return invalid(format!(
                "trust root version {v} allows node quarantine with a maximum duration of zero"
            ));
        }
        if self.max_token_ttl_secs == 0 {
            return invalid(format!(
                "trust root version {v}: the maximum token lifetime must be at least 1 second"
            ));
        }
        Ok(())
    }

    /// Whether the root has expired at `now` (Unix seconds): true from the
    /// `expires` second on.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires
    }

    /// The operator with this key, if any.
    pub fn operator_by_key(&self, key: &PublicKey) -> Option<&Operator> {
        self.operators.iter().find(|o| o.key == *key)
    }

    /// The operator with this name, if any.
    pub fn operator_by_name(&self, name: &str) -> Option<&Operator> {
        self.operators
            .binary_search_by(|o| o.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.operators[i])
    }

    /// The operators holding `role`, in name order.
    pub fn operators_with_role(&self, role: Role) -> impl Iterator<Item = &Operator> {
        self.operators.iter().filter(move |o| o.has_role(role))
    }

    /// Whether `key` is one of the root keys.
    pub fn is_root_key(&self, key: &PublicKey) -> bool {
        self.root_keys.contains(key)
    }

    /// Sorts the operators by name, as [`TrustRoot::validate`] requires.
    pub fn sort_operators(&mut self) {
        self.operators.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The canonical encoding of this root: the bytes root keys sign.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(Kind::TrustRoot, self)
    }
}

fn check_threshold(
    version: u64,
    name: &str,
    threshold: u32,
    available: usize,
    of: &str,
) -> Result<(), TrustError> {
    if threshold == 0 {
        return Err(TrustError::Invalid(format!(
            "trust root version {version}: the {name} must be at least 1"
        )));
    }
    if threshold as usize > available {
        return Err(TrustError::Invalid(format!(
            "trust root version {version}: the {name} of {threshold} cannot be met, as the number of {of} is only {available}"
        )));
    }
    Ok(())
}

/// One root key's signature over a trust root body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RootSignature {
    /// The signing key.
    pub key: PublicKey,
    /// The signature over the body, in [`Domain::TrustRoot`].
    pub sig: Signature,
}

/// A trust root as distributed: the encoded body and the signatures over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRoot {
    /// `encode(Kind::TrustRoot, &TrustRoot)`, exactly the bytes signed.
    #[serde(with = "encoding::bytes")]
    pub body: Vec<u8>,
    /// Signatures over `body` in [`Domain::TrustRoot`].
    pub signatures: Vec<RootSignature>,
}

/// A trust root whose signatures have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRoot {
    /// The root.
    pub root: TrustRoot,
    /// Whether it had expired at the time it was verified. An expired root is
    /// still enforced; the node reports it loudly.
    pub expired: bool,
}

impl SignedRoot {
    /// Encodes `root` and signs it with each of `keys`. The root is not
    /// validated here; verification does that.
    pub fn sign(root: &TrustRoot, keys: &[&SecretKey]) -> SignedRoot {
        let mut signed = SignedRoot {
            body: root.encode(),
            signatures: Vec::new(),
        };
        for k in keys {
            signed.add_signature(k);
        }
        signed
    }

    /// Adds `key`'s signature over the body. A key that has already signed is
    /// not added again.
    pub fn add_signature(&mut self, key: &SecretKey) {
        let public = key.public();
        if self.signatures.iter().any(|s| s.key == public) {
            return;
        }
        self.signatures.push(RootSignature {
            key: public,
            sig: key.sign(Domain::TrustRoot, &self.body),
        });
    }

    /// Decodes the body without checking any signature (for display).
    pub fn root(&self) -> Result<TrustRoot, TrustError> {
        Ok(encoding::decode(
            Kind::TrustRoot,
            &self.body,
            MAX_TRUST_ROOT_LEN,
        )?)
    }

    /// The canonical encoding of the signed root.
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::SignedRoot, self)
    }

    /// Decodes a signed root (signatures are not checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRoot, TrustError> {
        Ok(encoding::decode(
            Kind::SignedRoot,
            bytes,
            MAX_TRUST_ROOT_LEN,
        )?)
    }

    /// Verifies every signature made by a key in `keys` and returns the set of
    /// keys with a valid signature. Signatures by other keys are ignored; a
    /// bad signature by a key in `keys` is an error.
    fn valid_signers(&self, keys: &BTreeSet<PublicKey>) -> Result<BTreeSet<PublicKey>, TrustError> {
        let mut valid = BTreeSet::new();
        let mut checked = BTreeSet::new();
        for s in &self.signatures {
            if !keys.contains(&s.key) || !checked.insert((s.key, s.sig)) {
                continue;
            }
            s.key
                .verify(Domain::TrustRoot, &self.body, &s.sig)
                .map_err(|_| TrustError::BadSignature {
                    who: format!("root key {}", s.key),
                })?;
            valid.insert(s.key);
        }
        Ok(valid)
    }

    /// Accepts a root with no prior trust: the body must decode and validate,
    /// and at least `root_threshold` distinct root keys of this very root must
    /// have signed it. A key that signs twice counts once. Signatures by keys
    /// that are not root keys of this root are ignored. An expired root
    /// verifies, with `expired: true`.
    pub fn verify_initial(&self, now: u64) -> Result<VerifiedRoot, TrustError> {
        let root = self.root()?;
        root.validate()?;
        let keys: BTreeSet<PublicKey> = root.root_keys.iter().copied().collect();
        let valid = self.valid_signers(&keys)?;
        let need = root.root_threshold as usize;
        if valid.len() < need {
            return Err(TrustError::ThresholdNotMet {
                have: valid.len(),
                need,
                what: format!("the root keys of trust root version {}", root.version),
            });
        }
        Ok(VerifiedRoot {
            expired: root.is_expired(now),
            root,
        })
    }
}

impl VerifiedRoot {
    /// Moves to `next`: its version must be higher than this one, and it must
    /// carry valid signatures from a threshold of this root's root keys and a
    /// threshold of its own root keys (one key in both sets counts for both).
    pub fn verify_rotation(&self, next: &SignedRoot, now: u64) -> Result<VerifiedRoot, TrustError> {
        let new = next.root()?;
        let current = self.root.version;
        if new.version <= current {
            return Err(TrustError::Rollback {
                current,
                offered: new.version,
            });
        }
        new.validate()?;
        let old_keys: BTreeSet<PublicKey> = self.root.root_keys.iter().copied().collect();
        let new_keys: BTreeSet<PublicKey> = new.root_keys.iter().copied().collect();
        let all: BTreeSet<PublicKey> = old_keys.union(&new_keys).copied().collect();
        let valid = next.valid_signers(&all)?;
        let have_old = valid.intersection(&old_keys).count();
        let need_old = self.root.root_threshold as usize;
        if have_old < need_old {
            return Err(TrustError::ThresholdNotMet {
                have: have_old,
                need: need_old,
                what: format!("the root keys of the current trust root (version {current})"),
            });
        }
        let have_new = valid.intersection(&new_keys).count();
        let need_new = new.root_threshold as usize;
        if have_new < need_new {
            return Err(TrustError::ThresholdNotMet {
                have: have_new,
                need: need_new,
                what: format!("the root keys of trust root version {}", new.version),
            });
        }
        Ok(VerifiedRoot {
            expired: new.is_expired(now),
            root: new,
        })
    }
}

// ---------------------------------------------------------------------------
// The trust file

#[derive(Serialize)]
struct TrustFileOut<'a> {
    format: &'a str,
    signed: String,
    root: Option<TrustRoot>,
}

#[derive(Deserialize)]
struct TrustFileIn {
    format: String,
    signed: String,
    root: serde_json::Value,
}

/// Writes a trust file (`trust.json`):
/// `{"format": "weft-trust-root", "signed": "<base64 of the encoded SignedRoot>", "root": {…}}`.
/// `root` is a readable copy of the body for people; it is never trusted.
pub fn to_trust_file(signed: &SignedRoot) -> String {
    let file = TrustFileOut {
        format: TRUST_FILE_FORMAT,
        signed: BASE64.encode(signed.to_bytes()),
        root: signed.root().ok(),
    };
    let mut s = serde_json::to_string_pretty(&file).expect("a trust file always serializes");
    s.push('\n');
    s
}

/// Reads a trust file. Only `signed` is used; the file is refused if the
/// readable `root` copy disagrees with the signed body. Signatures are not
/// checked here: call [`SignedRoot::verify_initial`] or
/// [`VerifiedRoot::verify_rotation`].
pub fn from_trust_file(text: &str) -> Result<SignedRoot, TrustError> {
    if text.len() > MAX_TRUST_ROOT_LEN {
        return Err(TrustError::Invalid(format!(
            "the trust file is {} bytes, over the limit of {MAX_TRUST_ROOT_LEN}",
            text.len()
        )));
    }
    let file: TrustFileIn = serde_json::from_str(text)
        .map_err(|e| TrustError::Invalid(format!("the trust file is not valid: {e}")))?;
    if file.format != TRUST_FILE_FORMAT {
        return Err(TrustError::Invalid(format!(
            "the file is not a Weft trust file (its format is {:?}, not \"{TRUST_FILE_FORMAT}\")",
            file.format.chars().take(64).collect::<String>()
        )));
    }
    let bytes = BASE64.decode(file.signed.trim()).map_err(|e| {
        TrustError::Invalid(format!(
            "the \"signed\" field of the trust file is not base64: {e}"
        ))
    })?;
    let signed = SignedRoot::from_bytes(&bytes).map_err(|e| {
        TrustError::Invalid(format!(
            "the \"signed\" field of the trust file is not a signed trust root: {e}"
        ))
    })?;
    let root = signed.root().map_err(|e| {
        TrustError::Invalid(format!(
            "the signed body in the trust file is not a trust root: {e}"
        ))
    })?;
    let copy: TrustRoot = serde_json::from_value(file.root).map_err(|e| {
        TrustError::Invalid(format!(
            "the readable \"root\" copy in the trust file is not valid: {e}"
        ))
    })?;
    if copy != root {
        return Err(TrustError::Invalid(
            "the readable \"root\" copy in the trust file disagrees with the signed body; refusing the file".into(),
        ));
    }
    Ok(signed)
}

// ---------------------------------------------------------------------------
// Node certificates

/// A node's admission certificate: an operator with the admit role vouches
/// that `node` belongs to the mesh under `name` until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCert {
    /// The node admitted.
    pub node: NodeId,
    /// The node's name (same rules as operator names).
    pub name: String,
    /// The operator who signs the certificate.
    pub issuer: PublicKey,
    /// When it was issued (Unix seconds).
    pub issued: u64,
    /// When it expires (Unix seconds).
    pub expires: u64,
}

/// A node certificate as distributed: the encoded body and the issuer's
/// signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNodeCert {
    /// `encode(Kind::NodeCert, &NodeCert)`, exactly the bytes signed.
    #[serde(with = "encoding::bytes")]
    pub body: Vec<u8>,
    /// The issuer's signature over `body`, in [`Domain::NodeCert`].
    pub sig: Signature,
}

impl SignedNodeCert {
    /// Encodes and signs `cert` with `key`, which should be the key of
    /// `cert.issuer` (otherwise the certificate will not verify).
    pub fn sign(cert: &NodeCert, key: &SecretKey) -> SignedNodeCert {
        let body = encoding::encode(Kind::NodeCert, cert);
        let sig = key.sign(Domain::NodeCert, &body);
        SignedNodeCert { body, sig }
    }

    /// Decodes the body without checking the signature (for display).
    pub fn cert(&self) -> Result<NodeCert, TrustError> {
        Ok(encoding::decode(
            Kind::NodeCert,
            &self.body,
            MAX_NODE_CERT_LEN,
        )?)
    }

    /// The canonical encoding of the signed certificate.
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::SignedNodeCert, self)
    }

    /// Decodes a signed certificate (the signature is not checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedNodeCert, TrustError> {
        Ok(encoding::decode(
            Kind::SignedNodeCert,
            bytes,
            MAX_NODE_CERT_LEN,
        )?)
    }

    /// Checks the certificate against `root` at `now`: the issuer must be an
    /// operator of `root` holding [`Role::Admit`], the signature must verify
    /// (strictly, in [`Domain::NodeCert`]), and it must not have expired.
    pub fn verify(&self, root: &TrustRoot, now: u64) -> Result<NodeCert, TrustError> {
        let cert = self.cert()?;
        validate_name(&cert.name)
            .map_err(|e| TrustError::Invalid(format!("node certificate: {e}")))?;
        if cert.issued > cert.expires {
            return Err(TrustError::Invalid(format!(
                "the node certificate for {} expires before it was issued",
                cert.name
            )));
        }
        let issuer =
            root.operator_by_key(&cert.issuer)
                .ok_or_else(|| TrustError::UnknownSigner {
                    key: Box::new(cert.issuer),
                })?;
        if !issuer.has_role(Role::Admit) {
            return Err(TrustError::WrongRole {
                who: issuer.name.clone(),
                role: Role::Admit,
            });
        }
        cert.issuer
            .verify(Domain::NodeCert, &self.body, &self.sig)
            .map_err(|_| TrustError::BadSignature {
                who: format!("operator {}", issuer.name),
            })?;
        if now >= cert.expires {
            return Err(TrustError::Expired {
                what: format!("the node certificate for {} ({})", cert.name, cert.node),
                expires: cert.expires,
            });
        }
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    /// A name comes from the network inside node certificates, so its
    /// error must stay one line whatever the name holds.
    #[test]
    fn name_errors_are_one_line() {
        let long = format!("a\n{}", "b".repeat(MAX_NAME_LEN + 10));
        for bad in ["n\n", "x\r\ny", "\u{1b}[31m", long.as_str()] {
            let err = validate_name(bad).unwrap_err();
            assert!(
                !err.contains('\n') && !err.contains('\r') && !err.contains('\u{1b}'),
                "{err:?}"
            );
        }
        assert!(validate_name("n\n").unwrap_err().contains(r#""n\n""#));
    }

    #[test]
    fn operator_spec_roundtrip() {
        let pk = key(1).public();
        let op: Operator = format!("alice={pk}:policy,revoke").parse().unwrap();
        assert_eq!(op.name, "alice");
        assert_eq!(op.roles, [Role::Policy, Role::Revoke].into_iter().collect());
        assert_eq!(op.to_string().parse::<Operator>().unwrap(), op);
        let all: Operator = format!("bob={pk}").parse().unwrap();
        assert_eq!(all.roles.len(), 4);
    }

    #[test]
    fn operator_spec_errors() {
        let pk = key(1).public();
        for (spec, needle) in [
            ("alice".to_string(), "must be written NAME=PUBKEY"),
            (format!("={pk}"), "must not be empty"),
            (format!("a b={pk}"), "contains ' '"),
            ("alice=nope".to_string(), "not a public key"),
            (format!("alice={pk}:"), "no roles after ':'"),
            (format!("alice={pk}:policy,root"), "unknown role \"root\""),
        ] {
            let e = spec.parse::<Operator>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn role_text() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
    }

    #[test]
    fn quarantine_defaults() {
        let q = QuarantineLimits::default();
        assert!(!q.allowed);
        assert_eq!(q.max_ttl_secs, 3600);
        assert_eq!(q.max_per_node_per_hour, 5);
    }
}
