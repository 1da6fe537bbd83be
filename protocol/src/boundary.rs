//! The trust boundary: the one way in for the bytes of a signed update or a
//! quarantine order, whether they come from `POST /v1/updates`, gossip, sync
//! or the node's own store.
//!
//! Every such byte string is hostile until its signatures and its signers
//! are checked. [`check`] makes those checks first, on the envelope and the
//! change's hash alone, and only then lets automerge parse the change. What
//! it returns is a [`VerifiedUpdate`]: signed by keys the trust root knows,
//! in the numbers that some change could need. [`SignedState`] takes it from
//! there, and only it holds, stores or applies anything.
//!
//! # Before anything is decoded
//! 1. **The envelope** ([`crate::encoding`]): magic, kind (a signed update
//!    or a quarantine order), format version, size (at most
//!    [`MAX_UPDATE_BYTES`] or [`MAX_ORDER_BYTES`]), canonical postcard, at
//!    most [`MAX_SIGNATURES`] signatures and at least one.
//! 2. **The change's hash**, computed without automerge
//!    ([`crate::chunk::change_hash`]): the bytes must
//!    be exactly one uncompressed automerge change chunk (magic, checksum,
//!    chunk type 1, a canonical length that covers the rest), and the hash is
//!    SHA-256 over the chunk's type, length and contents, as automerge
//!    computes it. automerge's parser is not run yet.
//! 3. **The trust root it names** is one this node holds (else
//!    [`UpdateError::RootVersion`], a matter of timing, not a fault).
//! 4. **The signers**: every key that signed an update is an operator of
//!    that root, and enough of them hold a role that could authorize any
//!    change at all (the policy threshold of `policy` operators or the
//!    revocation threshold of `revoke` operators). A quarantine order needs a
//!    root that lets nodes quarantine and a node certificate that this root's
//!    operators signed (its validity in time is judged against the record's
//!    date once the record is read, below).
//! 5. **Every signature** verifies (`verify_strict`) over the change hash and
//!    the root version, in its domain.
//!
//! # After
//! 6. automerge parses the change (its panics contained and refused,
//!    [`PolicyDoc::parse_change`]); its hash must be the one computed in 2.
//! 7. Its author (the actor id's key) is one of the signers, or, for an
//!    order, the certified node.
//!
//! Then [`SignedState`] decides: dependencies here (else held, bounded in
//! count, bytes and time), the actor's sequence and the operation counters
//! ([`PolicyDoc`]'s lane check), the operations decoded (panics contained,
//! [`PolicyDoc::expand`]) and checked against the schema, the path-by-path
//! authorization ([`crate::update::authorize`],
//! [`authorize_order`], picked by [`authorize_verified`]), and only then
//! the apply.
//!
//! A refusal is an [`UpdateError`]: one sentence, a label for metrics, and
//! [`UpdateError::is_misbehaviour`] says whether the peer that sent it is to
//! blame.
//!
//! [`SignedState`]: crate::state::SignedState
//! [`MAX_UPDATE_BYTES`]: crate::update::MAX_UPDATE_BYTES
//! [`MAX_ORDER_BYTES`]: crate::quarantine::MAX_ORDER_BYTES
//! [`MAX_SIGNATURES`]: crate::update::MAX_SIGNATURES

use std::collections::BTreeMap;

use weft_crdt::{Change, ChangeHash, ChangeSummary, PolicyDoc};

use crate::chunk::change_hash;
use crate::encoding::{self, Kind};
use crate::identity::Domain;
use crate::quarantine::{NodeIssuer, QuarantineOrder, authorize_order, certified_by};
use crate::trust::{Role, SignedNodeCert, TrustRoot};
use crate::update::{
    Authorization, SignatureCheck, SignedUpdate, Signers, UpdateError, author_of, authorize,
    shared_signers, signing_message,
};

/// Checks a verified update or quarantine order against `root`, at `now`
/// (Unix seconds, the node's clock): operators' updates by [`authorize`],
/// nodes' orders by [`crate::quarantine::authorize_order`].
pub fn authorize_verified(
    summary: &ChangeSummary,
    update: &VerifiedUpdate,
    root: &TrustRoot,
    now: u64,
) -> Result<Authorization, UpdateError> {
    match &update.issuer {
        Some(issuer) => authorize_order(summary, &update.change, issuer, root, now),
        None => authorize(summary, &update.signers, root),
    }
}

/// An update whose signatures all verified, with its change parsed.
#[derive(Clone, Debug)]
pub struct VerifiedUpdate {
    /// The update as received.
    pub update: SignedUpdate,
    /// The parsed change.
    pub change: Change,
    /// The change hash, recomputed from the bytes.
    pub hash: ChangeHash,
    /// The distinct signers (operators; empty for a node's quarantine order).
    pub signers: Signers,
    /// The node that issued it, for a quarantine order (boxed: almost every
    /// update has none, and updates are moved by the thousand at a start).
    pub issuer: Option<Box<NodeIssuer>>,
}

/// Checks `bytes` at the trust boundary against the chain of trust roots
/// this node holds (by version), as the module doc lists, and returns the
/// update with its change parsed. Nothing is decoded past the envelope and
/// the change's hash until its signers and signatures have passed.
pub fn check(
    bytes: &[u8],
    roots: &BTreeMap<u64, TrustRoot>,
) -> Result<VerifiedUpdate, UpdateError> {
    let opened = open(bytes)?;
    opened.vouch(roots)?;
    for c in &opened.checks {
        c.verify()?;
    }
    opened.parse()
}

/// [`check`] for every item, on as many threads as the process may run on
/// (each item is still checked on its own, with `verify_strict`). Results
/// are in the order of `items`. For checking many stored updates at once,
/// such as a node's start without a usable snapshot.
pub fn check_all<B: AsRef<[u8]> + Sync>(
    items: &[B],
    roots: &BTreeMap<u64, TrustRoot>,
) -> Vec<Result<VerifiedUpdate, UpdateError>> {
    on_threads(items, |b| check(b, roots))
}

/// Decodes and verifies a signed update or a quarantine order, by the kind
/// its envelope names: the envelope, the change's hash and every signature,
/// then the parse. Whether the signers may sign at all is not asked (no
/// trust root is given): for tools that show an update, and for the checks
/// of updates this node accepted before. Bytes from outside go through
/// [`check`].
pub fn decode_verified(bytes: &[u8]) -> Result<VerifiedUpdate, UpdateError> {
    let opened = open(bytes)?;
    for c in &opened.checks {
        c.verify()?;
    }
    opened.parse()
}

/// [`decode_verified`] for every item, on as many threads as the process
/// may run on.
pub fn decode_verified_all<B: AsRef<[u8]> + Sync>(
    items: &[B],
) -> Vec<Result<VerifiedUpdate, UpdateError>> {
    on_threads(items, decode_verified)
}

/// Signatures per batch in [`decode_batch_verified`]: larger batches gain
/// little and cost more to redo.
pub const VERIFY_BATCH: usize = 128;

/// [`decode_verified`] for each of `group` (best at most [`VERIFY_BATCH`]
/// items), with their signatures checked in one batch, on this thread
/// (`identity::verify_batch`, about half the cost of one check at a time).
/// A batch that fails is checked again item by item, so each damaged record
/// gets its own error, and every result is `Ok` only where the item
/// verifies on its own as well.
///
/// Only for re-checking updates this node already accepted one at a time
/// (its store, at a start: [`crate::state::SignedState::restore`]): the
/// batch equation can accept a signature that `verify_strict` refuses, if
/// its *signer* (never a third party) built it to, so nodes that batched
/// differently could judge such an update differently. A store rewritten by
/// someone holding an operator's secret key is not something a signature
/// check can catch anyway.
pub fn decode_batch_verified<B: AsRef<[u8]>>(
    group: &[B],
) -> Vec<Result<VerifiedUpdate, UpdateError>> {
    let opened: Vec<_> = group.iter().map(|b| open(b.as_ref())).collect();
    let checks: Vec<&SignatureCheck> = opened
        .iter()
        .filter_map(|d| d.as_ref().ok())
        .flat_map(|o| &o.checks)
        .collect();
    let batch_holds = [Domain::Update, Domain::Quarantine]
        .into_iter()
        .all(|domain| {
            let items: Vec<_> = checks
                .iter()
                .filter(|c| c.domain == domain)
                .map(|c| (&c.key, c.msg.as_slice(), &c.sig))
                .collect();
            crate::identity::verify_batch(domain, &items).is_ok()
        });
    if batch_holds {
        opened.into_iter().map(|o| o?.parse()).collect()
    } else {
        group.iter().map(|b| decode_verified(b.as_ref())).collect()
    }
}

/// The raw change bytes of a signed update or a quarantine order.
pub fn change_bytes(bytes: &[u8]) -> Result<Vec<u8>, UpdateError> {
    Ok(open(bytes)?.update.change)
}

/// An update or an order opened at the boundary: decoded as far as its
/// envelope, its change hashed, its signature checks listed but not made.
struct Opened {
    /// The update (for an order: its change and root version, no signatures).
    update: SignedUpdate,
    /// The change hash, from [`crate::chunk::change_hash`].
    hash: ChangeHash,
    /// The signature checks to make.
    checks: Vec<SignatureCheck>,
    /// For an order: the node and its certificate (not yet checked).
    issuer: Option<NodeIssuer>,
}

/// Decodes the envelope of `bytes` (by the kind it names) and hashes the
/// change; nothing else.
fn open(bytes: &[u8]) -> Result<Opened, UpdateError> {
    if encoding::kind_of(bytes) == Some(Kind::Quarantine) {
        let order = QuarantineOrder::from_bytes(bytes)?;
        let hash = change_hash(&order.change)?;
        let cert = SignedNodeCert::from_bytes(&order.cert).map_err(|e| {
            UpdateError::Malformed(format!("the quarantine order's certificate: {e}"))
        })?;
        let node = cert
            .cert()
            .map_err(|e| {
                UpdateError::Malformed(format!("the quarantine order's certificate: {e}"))
            })?
            .node;
        let checks = vec![SignatureCheck {
            domain: Domain::Quarantine,
            key: node.public_key(),
            msg: signing_message(&hash, order.root_version),
            sig: order.sig,
        }];
        Ok(Opened {
            update: SignedUpdate {
                change: order.change,
                root_version: order.root_version,
                signatures: Vec::new(),
            },
            hash,
            checks,
            issuer: Some(NodeIssuer { node, cert }),
        })
    } else {
        let update = SignedUpdate::from_bytes(bytes)?;
        let hash = change_hash(&update.change)?;
        let msg = signing_message(&hash, update.root_version);
        let checks = update
            .signatures
            .iter()
            .map(|s| SignatureCheck {
                domain: Domain::Update,
                key: s.key,
                msg,
                sig: s.sig,
            })
            .collect();
        Ok(Opened {
            update,
            hash,
            checks,
            issuer: None,
        })
    }
}

impl Opened {
    /// Steps 3 and 4 of the module doc: the root it names is held, and its
    /// signers are ones that root knows, enough of them to authorize some
    /// change.
    fn vouch(&self, roots: &BTreeMap<u64, TrustRoot>) -> Result<(), UpdateError> {
        let named = self.update.root_version;
        let root = roots.get(&named).ok_or_else(|| UpdateError::RootVersion {
            named,
            current: roots.keys().next_back().copied().unwrap_or(0),
        })?;
        match &self.issuer {
            Some(issuer) => vouch_for_node(issuer, root),
            None => vouch_for_operators(&self.update, root),
        }
    }

    /// Steps 6 and 7: automerge parses the change, to the same hash, and its
    /// author signed it.
    fn parse(self) -> Result<VerifiedUpdate, UpdateError> {
        let change = PolicyDoc::parse_change(&self.update.change)?;
        if change.hash() != self.hash {
            return Err(UpdateError::Malformed(format!(
                "automerge reads the change as {}, not as {}",
                change.hash(),
                self.hash
            )));
        }
        let author = author_of(change.actor_id());
        let signed_by_author = match &self.issuer {
            Some(issuer) => author == Some(issuer.node.public_key()),
            None => author.is_some_and(|a| self.checks.iter().any(|c| c.key == a)),
        };
        if !signed_by_author {
            return Err(UpdateError::ActorNotSigner {
                actor: change.actor_id().to_hex_string(),
            });
        }
        let signers = shared_signers(self.update.signatures.iter().map(|s| s.key));
        Ok(VerifiedUpdate {
            update: self.update,
            change,
            hash: self.hash,
            signers,
            issuer: self.issuer.map(Box::new),
        })
    }
}

/// Every signer of `update` is an operator of `root`, and there are enough
/// of them with the policy or the revoke role for some change.
fn vouch_for_operators(update: &SignedUpdate, root: &TrustRoot) -> Result<(), UpdateError> {
    if update.signatures.is_empty() {
        return Err(UpdateError::Unsigned);
    }
    let mut policy = Vec::new();
    let mut revoke = Vec::new();
    for s in &update.signatures {
        let op = root
            .operator_by_key(&s.key)
            .ok_or_else(|| UpdateError::UnknownSigner {
                key: Box::new(s.key),
                root_version: root.version,
            })?;
        if op.has_role(Role::Policy) && !policy.contains(&s.key) {
            policy.push(s.key);
        }
        if op.has_role(Role::Revoke) && !revoke.contains(&s.key) {
            revoke.push(s.key);
        }
    }
    let (need_policy, need_revoke) = (
        root.policy_threshold as usize,
        root.revoke_threshold as usize,
    );
    if policy.len() < need_policy && revoke.len() < need_revoke {
        return Err(UpdateError::NotEnoughSigners {
            policy: policy.len(),
            need_policy,
            revoke: revoke.len(),
            need_revoke,
        });
    }
    Ok(())
}

/// The root lets nodes quarantine, and the order's certificate was signed
/// by an operator of `root` with the admit role for the node that signs.
fn vouch_for_node(issuer: &NodeIssuer, root: &TrustRoot) -> Result<(), UpdateError> {
    if !root.node_quarantine.allowed {
        return Err(UpdateError::NodeQuarantine(format!(
            "trust root version {} does not let nodes quarantine",
            root.version
        )));
    }
    certified_by(issuer, root).map(|_| ())
}

/// `work` on every item, on as many threads as the process may run on,
/// results in the order of `items`.
fn on_threads<B, R, F>(items: &[B], work: F) -> Vec<R>
where
    B: AsRef<[u8]> + Sync,
    R: Send,
    F: Fn(&[u8]) -> R + Sync,
{
    /// Below this, starting threads costs more than it saves.
    const PER_THREAD: usize = 256;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(items.len() / PER_THREAD)
        .max(1);
    if threads == 1 {
        return items.iter().map(|b| work(b.as_ref())).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|b| work(b.as_ref())).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a verifying thread does not panic"))
            .collect()
    })
}
