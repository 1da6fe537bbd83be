//! Signed updates and their authorization.
//!
//! A signed update is the bytes of exactly one automerge change plus operator
//! signatures over the change's hash. The hash is always recomputed from the
//! bytes; nothing sent alongside is trusted. Each signature covers, in the
//! `weft/update/v1` domain, the 32-byte change hash followed by the trust-root
//! version the update was signed under (8 bytes, big-endian).
//!
//! # The actor is bound to the author
//! The change's automerge actor id is 40 bytes: the author's public key (32)
//! then a nonce (8) that makes every update's actor fresh (so two updates an
//! operator writes concurrently never clash on automerge sequence numbers).
//! The author must be one of the signers.
//!
//! # Authorization
//! The paths a change touches decide what it needs:
//! - `bundles/...`: signers holding the `policy` role, at least the policy threshold;
//! - `revocations/...` and operator writes under `quarantines/...` (lifting a
//!   quarantine): signers holding the `revoke` role, at least the revocation threshold;
//! - anything else is refused by the schema before authorization is asked.
//!
//! A node's quarantine order ([`crate::quarantine`]) goes through the same
//! pipeline with its own rules ([`crate::boundary::authorize_verified`]
//! picks them).
//!
//! Signers are counted once each, however often they sign. A signature by a
//! key that is not an operator of the root is refused (`unknown signer`), and
//! so is any signature that does not verify: an update carries no dead weight.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_crdt::{ActorId, Change, ChangeHash, ChangeSummary, CrdtError, Section};

use crate::encoding::{self, DecodeError, Kind};
use crate::identity::{Domain, PublicKey, SecretKey, Signature};
use crate::trust::{Role, TrustRoot};

/// Largest signed update accepted, in bytes (envelope included). Large enough
/// for a bundle of thousands of policies, small enough to bound memory per message.
pub const MAX_UPDATE_BYTES: usize = 4 * 1024 * 1024;

/// Length of an operator actor id: public key (32) + nonce (8).
pub const ACTOR_LEN: usize = 40;

/// Most signatures one update may carry.
pub const MAX_SIGNATURES: usize = 64;

/// One operator's signature on an update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSignature {
    /// The signer.
    pub key: PublicKey,
    /// Signature over `change hash || root version` in the update domain.
    pub sig: Signature,
}

/// A signed update: one automerge change and the operators' signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedUpdate {
    /// The raw bytes of one automerge change.
    #[serde(with = "encoding::bytes")]
    pub change: Vec<u8>,
    /// The trust-root version the signers signed under.
    pub root_version: u64,
    /// The signatures, in the order they were added.
    pub signatures: Vec<UpdateSignature>,
}

/// Why an update was refused. Every message is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The bytes are not a signed update, or its change does not parse.
    #[error("malformed update: {0}")]
    Malformed(String),
    /// A signature does not verify.
    #[error("bad signature by {key}")]
    BadSignature {
        /// The key the signature claims.
        key: Box<PublicKey>,
    },
    /// A signer is not an operator of the trust root.
    #[error("unknown signer {key}: not an operator in trust root version {root_version}")]
    UnknownSigner {
        /// The signer.
        key: Box<PublicKey>,
        /// The root it was judged against.
        root_version: u64,
    },
    /// Signers lack a role the change needs.
    #[error("operator {name} lacks the {role} role needed to change {section}")]
    WrongRole {
        /// The operator's name.
        name: String,
        /// The missing role.
        role: Role,
        /// What the change touches.
        section: String,
    },
    /// Not enough distinct signers with the needed role.
    #[error(
        "too few signers: changing {section} needs {need} operator(s) with the {role} role, this update has {have}"
    )]
    TooFewSigners {
        /// What the change touches.
        section: String,
        /// The role needed.
        role: Role,
        /// Distinct qualified signers present.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// The update carries no signature at all.
    #[error("the update is not signed: it carries no signature")]
    Unsigned,
    /// Too few of the signers hold a role that could authorize any change.
    #[error(
        "too few signers: an update needs {need_policy} operator(s) with the policy role or {need_revoke} with the revoke role, this one has {policy} and {revoke}"
    )]
    NotEnoughSigners {
        /// Distinct signers with the policy role.
        policy: usize,
        /// The policy threshold.
        need_policy: usize,
        /// Distinct signers with the revoke role.
        revoke: usize,
        /// The revocation threshold.
        need_revoke: usize,
    },
    /// The change's actor is not bound to a signer.
    #[error("the change's author is not among its signers (actor {actor})")]
    ActorNotSigner {
        /// The actor id, hex.
        actor: String,
    },
    /// The update names a trust root this node does not hold.
    #[error(
        "update was signed under trust root version {named}, but this node holds version {current}"
    )]
    RootVersion {
        /// The version the update names.
        named: u64,
        /// The version this node holds.
        current: u64,
    },
    /// The change breaks the document schema or cannot be applied.
    #[error(transparent)]
    State(#[from] CrdtError),
    /// A node's quarantine order goes beyond what the trust root lets nodes do.
    #[error("quarantine order refused: {0}")]
    NodeQuarantine(String),
    /// A trust root offered as a rotation does not verify, or conflicts with
    /// the chain this node holds.
    #[error("trust root refused: {0}")]
    Rotation(#[from] crate::trust::TrustError),
    /// A quarantine order is dated further ahead of this node's clock than
    /// the skew allowed; it is refused until the clock catches up.
    #[error(
        "quarantine order refused for now: it is dated {ahead} s ahead of this node's clock, more than the {skew} s of skew allowed"
    )]
    FutureDated {
        /// How far ahead, in seconds.
        ahead: u64,
        /// The skew allowed, in seconds.
        skew: u64,
    },
}

impl From<crate::chunk::ChunkError> for UpdateError {
    fn from(e: crate::chunk::ChunkError) -> Self {
        UpdateError::Malformed(e.to_string())
    }
}

impl From<DecodeError> for UpdateError {
    fn from(e: DecodeError) -> Self {
        UpdateError::Malformed(e.to_string())
    }
}

impl UpdateError {
    /// A short, stable label for metrics (`refused_total{reason=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            UpdateError::Malformed(_) => "malformed",
            UpdateError::BadSignature { .. } => "bad_signature",
            UpdateError::UnknownSigner { .. } => "unknown_signer",
            UpdateError::WrongRole { .. } => "wrong_role",
            UpdateError::TooFewSigners { .. } | UpdateError::NotEnoughSigners { .. } => {
                "too_few_signers"
            }
            UpdateError::Unsigned => "unsigned",
            UpdateError::ActorNotSigner { .. } => "actor_not_signer",
            UpdateError::RootVersion { .. } => "root_version",
            UpdateError::State(CrdtError::MissingDeps(_)) => "missing_deps",
            UpdateError::State(CrdtError::Schema(_)) => "schema",
            UpdateError::State(CrdtError::Equivocation { .. }) => "equivocation",
            UpdateError::State(_) => "state",
            UpdateError::NodeQuarantine(_) => "node_quarantine",
            UpdateError::FutureDated { .. } => "future_dated",
            UpdateError::Rotation(_) => "rotation",
        }
    }
}

/// The actor id for a change authored by `author`: key bytes then `nonce`.
pub fn actor_for(author: &PublicKey, nonce: [u8; 8]) -> ActorId {
    let mut v = Vec::with_capacity(ACTOR_LEN);
    v.extend_from_slice(author.as_bytes());
    v.extend_from_slice(&nonce);
    ActorId::from(v)
}

/// The author a 40-byte operator actor id names, if it is one.
pub fn author_of(actor: &ActorId) -> Option<PublicKey> {
    let bytes = actor.to_bytes();
    if bytes.len() != ACTOR_LEN {
        return None;
    }
    PublicKey::from_slice(&bytes[..32]).ok()
}

/// The bytes an update signature covers (before the domain prefix).
pub fn signing_message(hash: &ChangeHash, root_version: u64) -> [u8; 40] {
    let mut m = [0u8; 40];
    m[..32].copy_from_slice(&hash.0);
    m[32..].copy_from_slice(&root_version.to_be_bytes());
    m
}

impl SignedUpdate {
    /// An unsigned update for `change`, to be signed under `root_version`.
    pub fn new(change: &Change, root_version: u64) -> Self {
        SignedUpdate {
            change: change.raw_bytes().to_vec(),
            root_version,
            signatures: Vec::new(),
        }
    }

    /// Adds `key`'s signature. Signing twice with the same key changes nothing.
    pub fn sign(&mut self, key: &SecretKey) -> Result<(), UpdateError> {
        let hash = crate::chunk::change_hash(&self.change)?;
        let public = key.public();
        if self.signatures.iter().any(|s| s.key == public) {
            return Ok(());
        }
        let sig = key.sign(Domain::Update, &signing_message(&hash, self.root_version));
        self.signatures.push(UpdateSignature { key: public, sig });
        Ok(())
    }

    /// The canonical encoding (the update file's bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::Update, self)
    }

    /// Decodes an update file's envelope, refusing anything over
    /// [`MAX_UPDATE_BYTES`] or with more than [`MAX_SIGNATURES`] signatures.
    /// Of the change, only its chunk header is looked at
    /// ([`crate::chunk::check_chunk`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UpdateError> {
        let u: SignedUpdate = encoding::decode(Kind::Update, bytes, MAX_UPDATE_BYTES)?;
        if u.signatures.len() > MAX_SIGNATURES {
            return Err(UpdateError::Malformed(format!(
                "{} signatures, over the limit of {MAX_SIGNATURES}",
                u.signatures.len()
            )));
        }
        crate::chunk::check_chunk(&u.change)?;
        Ok(u)
    }

    /// The update's id: hex of its change hash.
    pub fn id(&self) -> Result<String, UpdateError> {
        Ok(crate::chunk::change_hash(&self.change)?.to_string())
    }
}

/// The distinct signers of an update, shared between updates: a key holds
/// its decompressed point (192 bytes), so a set of them costs about two
/// kilobytes, and the same few operators sign almost every update. A state
/// of 100,000 updates kept one set each, some 200 MB.
pub type Signers = Arc<BTreeSet<PublicKey>>;

/// The shared set of `keys`: equal sets decoded on one thread are one
/// allocation (a bounded per-thread table of the sets seen last).
pub fn shared_signers(keys: impl IntoIterator<Item = PublicKey>) -> Signers {
    /// Distinct sets kept per thread (operators sign in few combinations).
    const CACHED_SETS: usize = 64;
    thread_local! {
        static SETS: RefCell<HashMap<Vec<PublicKey>, Signers>> = RefCell::new(HashMap::new());
    }
    let mut sorted: Vec<PublicKey> = keys.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    SETS.with(|sets| {
        let mut sets = sets.borrow_mut();
        if let Some(known) = sets.get(&sorted) {
            return known.clone();
        }
        if sets.len() >= CACHED_SETS {
            sets.clear();
        }
        let set: Signers = Arc::new(sorted.iter().copied().collect());
        sets.insert(sorted, set.clone());
        set
    })
}

/// One signature an update carries, to be checked.
#[derive(Clone, Debug)]
pub(crate) struct SignatureCheck {
    pub(crate) domain: Domain,
    pub(crate) key: PublicKey,
    pub(crate) msg: [u8; 40],
    pub(crate) sig: Signature,
}

impl SignatureCheck {
    /// The check on its own, with `verify_strict`'s verdict.
    pub(crate) fn verify(&self) -> Result<(), UpdateError> {
        self.key
            .verify(self.domain, &self.msg, &self.sig)
            .map_err(|_| UpdateError::BadSignature {
                key: Box::new(self.key),
            })
    }
}

/// What an authorized update was allowed to do, for the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The sections the change touches.
    pub sections: BTreeSet<Section>,
    /// The author.
    pub author: PublicKey,
    /// Names of the signing operators.
    pub signers: Vec<String>,
}

/// Checks that `signers` may make the change `summary` describes under `root`.
pub fn authorize(
    summary: &ChangeSummary,
    signers: &BTreeSet<PublicKey>,
    root: &TrustRoot,
) -> Result<Authorization, UpdateError> {
    let actor_hex = || hex::encode(summary.actor.to_bytes());
    let author = author_of(&summary.actor)
        .ok_or_else(|| UpdateError::ActorNotSigner { actor: actor_hex() })?;
    if !signers.contains(&author) {
        return Err(UpdateError::ActorNotSigner { actor: actor_hex() });
    }
    let mut names = Vec::new();
    for key in signers {
        let op = root
            .operator_by_key(key)
            .ok_or_else(|| UpdateError::UnknownSigner {
                key: Box::new(*key),
                root_version: root.version,
            })?;
        names.push(op.name.clone());
    }
    let sections = summary.sections();
    for section in &sections {
        let (role, need, label) = match section {
            Section::Bundles => (Role::Policy, root.policy_threshold, "bundles"),
            Section::Revocations => (Role::Revoke, root.revoke_threshold, "revocations"),
            Section::Quarantines => (Role::Revoke, root.revoke_threshold, "quarantines"),
        };
        let qualified = signers
            .iter()
            .filter_map(|k| root.operator_by_key(k))
            .filter(|op| op.has_role(role))
            .count();
        let need = need as usize;
        if qualified < need {
            // Name the most useful reason: a signer without the role, if any.
            if let Some(op) = signers
                .iter()
                .filter_map(|k| root.operator_by_key(k))
                .find(|op| !op.has_role(role))
            {
                return Err(UpdateError::WrongRole {
                    name: op.name.clone(),
                    role,
                    section: label.into(),
                });
            }
            return Err(UpdateError::TooFewSigners {
                section: label.into(),
                role,
                have: qualified,
                need,
            });
        }
    }
    Ok(Authorization {
        sections,
        author,
        signers: names,
    })
}

/// How many more signatures an update needs under `root`, per section it
/// touches; empty when it is fully signed. For `weft update show`.
pub fn missing_signatures(
    summary: &ChangeSummary,
    signers: &BTreeSet<PublicKey>,
    root: &TrustRoot,
) -> Vec<(Section, Role, usize)> {
    let mut out = Vec::new();
    for section in summary.sections() {
        let (role, need) = match section {
            Section::Bundles => (Role::Policy, root.policy_threshold),
            Section::Revocations | Section::Quarantines => (Role::Revoke, root.revoke_threshold),
        };
        let have = signers
            .iter()
            .filter_map(|k| root.operator_by_key(k))
            .filter(|op| op.has_role(role))
            .count();
        if have < need as usize {
            out.push((section, role, need as usize - have));
        }
    }
    out
}

impl fmt::Display for SignedUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id() {
            Ok(id) => write!(f, "update {id} ({} signature(s))", self.signatures.len()),
            Err(_) => write!(f, "update with an unparseable change"),
        }
    }
}
