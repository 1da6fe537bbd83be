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
//! 2. **The change's hash**, computed here ([`change_hash`]): the bytes must
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
//! [`crate::quarantine::authorize_order`]), and only then the apply.
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

use sha2::{Digest as _, Sha256};
use weft_crdt::{ChangeHash, PolicyDoc};

use crate::encoding::{self, Kind};
use crate::identity::Domain;
use crate::quarantine::{NodeIssuer, QuarantineOrder};
use crate::trust::{Role, SignedNodeCert, TrustRoot};
use crate::update::{
    SignatureCheck, SignedUpdate, UpdateError, VerifiedUpdate, author_of, shared_signers,
    signing_message,
};

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

/// automerge's magic bytes, which every chunk starts with.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Where a chunk keeps its type: after the magic bytes and the checksum.
const CHUNK_TYPE_AT: usize = 8;

/// The chunk type of an uncompressed change.
const CHUNK_TYPE_CHANGE: u8 = 1;

/// The hash automerge gives the change in `change`, computed without
/// automerge's parser: SHA-256 over the chunk's type, length and contents,
/// once [`check_chunk`] has passed. The chunk's checksum (the hash's first
/// four bytes, which the hash does not cover) must match, so one change has
/// exactly one byte string, and its hash is known before anything reads its
/// contents.
pub fn change_hash(change: &[u8]) -> Result<ChangeHash, UpdateError> {
    check_chunk(change)?;
    let hash: [u8; 32] = Sha256::digest(&change[CHUNK_TYPE_AT..]).into();
    if change[4..8] != hash[..4] {
        return Err(chunk_refused("its checksum does not match its contents"));
    }
    Ok(ChangeHash(hash))
}

/// Refuses anything but exactly one uncompressed change chunk, by its
/// header alone: wrong magic bytes, another chunk type (automerge parses a
/// compressed change or a document chunk as a change too, and those expand
/// while parsed: a few hundred bytes can ask for gigabytes), or a length
/// that is not canonical LEB128 or does not cover exactly the rest.
pub fn check_chunk(change: &[u8]) -> Result<(), UpdateError> {
    if change.get(..4) != Some(&CHUNK_MAGIC[..]) {
        return Err(chunk_refused(
            "it does not start with automerge's magic bytes",
        ));
    }
    match change.get(CHUNK_TYPE_AT) {
        Some(&CHUNK_TYPE_CHANGE) => {}
        Some(_) => {
            return Err(chunk_refused(
                "its chunk type is not an uncompressed change",
            ));
        }
        None => return Err(chunk_refused("it ends inside its header")),
    }
    let mut len: u64 = 0;
    let mut at = CHUNK_TYPE_AT + 1;
    for shift in (0..64).step_by(7) {
        let Some(&b) = change.get(at) else {
            return Err(chunk_refused("it ends inside its length"));
        };
        at += 1;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(chunk_refused("its length overflows"));
        }
        len |= bits << shift;
        if b & 0x80 == 0 {
            if b == 0 && shift > 0 {
                return Err(chunk_refused("its length is not canonically encoded"));
            }
            let rest = (change.len() - at) as u64;
            if rest != len {
                return Err(chunk_refused(&format!(
                    "its length says {len} bytes, but {rest} follow"
                )));
            }
            return Ok(());
        }
    }
    Err(chunk_refused("its length overflows"))
}

fn chunk_refused(why: &str) -> UpdateError {
    UpdateError::Malformed(format!(
        "the change is not an uncompressed automerge change chunk: {why}"
    ))
}

/// An update or an order opened at the boundary: decoded as far as its
/// envelope, its change hashed, its signature checks listed but not made.
struct Opened {
    /// The update (for an order: its change and root version, no signatures).
    update: SignedUpdate,
    /// The change hash, from [`change_hash`].
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

/// The certificate of `issuer`, checked against `root` for everything but
/// its validity in time: issuer an operator with the admit role, signature,
/// and the node it names.
pub(crate) fn certified_by(
    issuer: &NodeIssuer,
    root: &TrustRoot,
) -> Result<crate::trust::NodeCert, UpdateError> {
    let refuse = |e: String| UpdateError::NodeQuarantine(format!("the issuer's certificate: {e}"));
    let issued = issuer
        .cert
        .cert()
        .map_err(|e| refuse(e.to_string()))?
        .issued;
    // Checked as of its own start: everything but its window in time.
    let cert = issuer
        .cert
        .verify(root, issued)
        .map_err(|e| refuse(e.to_string()))?;
    if cert.node != issuer.node {
        return Err(refuse(format!(
            "it is for node {}, not for {}",
            cert.node, issuer.node
        )));
    }
    Ok(cert)
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
