//! The light replica state: updates as signed ids, for 10,000 nodes and more.
//!
//! # Why a second state and not a second replica
//! The protocol logic (admission by certificate, gossip verdicts, strikes and
//! bans, anti-entropy in bounded batches) lives in
//! [`weft_protocol::replica::Replica`], which is generic over
//! [`ReplicaState`]. Light mode runs that same `Replica` over [`LightState`]
//! instead of the automerge-backed `SignedState`, so every protocol decision
//! in a light run is made by the code the node runs. Only what an update *is*
//! changes: here it is a small record (author, sequence number, a grant or a
//! revocation of one subject, the ids it depends on) whose id is the SHA-256
//! of its body, signed with a real ed25519 operator key in the update
//! domain. Updates form a DAG through their dependencies exactly like
//! automerge changes do, so heads, missing-dependency holds and
//! `missing_for` behave the same way.
//!
//! # What is shared between nodes, and why that is sound
//! Decoding and verifying an update is a pure function of its bytes (and the
//! trust root, which every node shares). [`LightShared`] memoizes it, so
//! 10,000 nodes verify each distinct update once instead of 10,000 times.
//! Forged bytes are distinct bytes, so they are verified for real. Node
//! certificates are real `SignedNodeCert`s, memoized the same way; only the
//! expiry comparison, which depends on each node's clock, runs every time.
//!
//! Light mode has no node revocations: `is_node_revoked` is always false.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use weft_crdt::{ActorId, ChangeHash, ChangeSummary, Path, Section};
use weft_protocol::identity::{Domain, NodeId, PublicKey, SecretKey, Signature};
use weft_protocol::replica::ReplicaState;
use weft_protocol::state::Ingested;
use weft_protocol::trust::{NodeCert, Role, SignedNodeCert, TrustRoot};
use weft_protocol::update::{Authorization, UpdateError};

use crate::gossip::Det;

const MAGIC: &[u8; 4] = b"WLU1";
const SIG_LEN: usize = 64;
/// Most dependencies one light update may name.
pub const MAX_DEPS: usize = 64;
/// Largest light update.
pub const MAX_LIGHT_BYTES: usize = 4 + 32 + 8 + 1 + 4 + 2 + MAX_DEPS * 32 + SIG_LEN;
/// Most updates held for missing dependencies (as `SignedState`).
pub const MAX_HELD: usize = 4096;

/// What a light update does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LightKind {
    /// Grants subject `User::"uK"` (like a bundle permitting it).
    Grant,
    /// Revokes subject `User::"uK"`.
    Revoke,
}

/// A decoded, verified light update.
#[derive(Debug)]
pub struct LightEntry {
    /// Its id: SHA-256 of its body.
    pub id: ChangeHash,
    /// Its bytes.
    pub bytes: Arc<[u8]>,
    /// The signing operator.
    pub author: PublicKey,
    /// Grant or revoke.
    pub kind: LightKind,
    /// The subject index.
    pub subject: u32,
    /// The author's sequence number.
    pub seq: u64,
    /// Dependencies.
    pub deps: Vec<ChangeHash>,
    /// What applying it touches (computed once, at verification).
    pub summary: ChangeSummary,
}

#[derive(Clone, Debug)]
enum Refusal {
    Malformed(String),
    BadSignature(Box<PublicKey>),
    UnknownSigner(Box<PublicKey>),
    WrongRole(String, Role),
}

impl Refusal {
    fn to_error(&self, root_version: u64) -> UpdateError {
        match self {
            Refusal::Malformed(m) => UpdateError::Malformed(m.clone()),
            Refusal::BadSignature(k) => UpdateError::BadSignature { key: k.clone() },
            Refusal::UnknownSigner(k) => UpdateError::UnknownSigner {
                key: k.clone(),
                root_version,
            },
            Refusal::WrongRole(name, role) => UpdateError::WrongRole {
                name: name.clone(),
                role: *role,
                section: "light updates".into(),
            },
        }
    }
}

/// The subject text of subject index `k`, as crdt writes it.
pub fn subject_text(k: u32) -> String {
    format!("User::\"u{k}\"")
}

/// The subject index in a subject text, if it is one of ours.
pub fn subject_index(text: &str) -> Option<u32> {
    text.strip_prefix("User::\"u")?
        .strip_suffix('"')?
        .parse()
        .ok()
}

/// Encodes and signs a light update.
pub fn encode(
    key: &SecretKey,
    seq: u64,
    kind: LightKind,
    subject: u32,
    deps: &[ChangeHash],
) -> Vec<u8> {
    let mut b = body(&key.public(), seq, kind, subject, deps);
    let id: [u8; 32] = Sha256::digest(&b).into();
    let sig = key.sign(Domain::Update, &id);
    b.extend_from_slice(sig.as_bytes());
    b
}

/// The unsigned body of a light update (what its id hashes).
pub fn body(
    author: &PublicKey,
    seq: u64,
    kind: LightKind,
    subject: u32,
    deps: &[ChangeHash],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(51 + deps.len() * 32 + SIG_LEN);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(author.as_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.push(match kind {
        LightKind::Grant => 1,
        LightKind::Revoke => 2,
    });
    b.extend_from_slice(&subject.to_be_bytes());
    b.extend_from_slice(&(deps.len() as u16).to_be_bytes());
    for d in deps {
        b.extend_from_slice(&d.0);
    }
    b
}

/// The id a light update's bytes claim (SHA-256 of the body), if they are
/// long enough to have one. Used to name forgeries.
pub fn claimed_id(bytes: &[u8]) -> Option<ChangeHash> {
    (bytes.len() > SIG_LEN)
        .then(|| ChangeHash(Sha256::digest(&bytes[..bytes.len() - SIG_LEN]).into()))
}

fn decode(bytes: &[u8]) -> Result<(Vec<u8>, LightEntry, Signature), Refusal> {
    let m = |s: &str| Refusal::Malformed(s.to_owned());
    if bytes.len() > MAX_LIGHT_BYTES {
        return Err(m("light update over its size limit"));
    }
    if bytes.len() < 51 + SIG_LEN || &bytes[..4] != MAGIC {
        return Err(m("not a light update"));
    }
    let author =
        PublicKey::from_slice(&bytes[4..36]).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let seq = u64::from_be_bytes(bytes[36..44].try_into().expect("8 bytes"));
    let kind = match bytes[44] {
        1 => LightKind::Grant,
        2 => LightKind::Revoke,
        _ => return Err(m("unknown light update kind")),
    };
    let subject = u32::from_be_bytes(bytes[45..49].try_into().expect("4 bytes"));
    let n = u16::from_be_bytes(bytes[49..51].try_into().expect("2 bytes")) as usize;
    if n > MAX_DEPS || bytes.len() != 51 + n * 32 + SIG_LEN {
        return Err(m("light update length does not match its dependencies"));
    }
    let deps: Vec<ChangeHash> = (0..n)
        .map(|i| {
            ChangeHash(
                bytes[51 + i * 32..83 + i * 32]
                    .try_into()
                    .expect("32 bytes"),
            )
        })
        .collect();
    let body = bytes[..bytes.len() - SIG_LEN].to_vec();
    let sig = Signature::from_bytes(bytes[bytes.len() - SIG_LEN..].try_into().expect("64 bytes"));
    let id = ChangeHash(Sha256::digest(&body).into());
    let summary = summary_of(id, &author, seq, kind, subject, &deps);
    Ok((
        body,
        LightEntry {
            id,
            bytes: Arc::from(bytes),
            author,
            kind,
            subject,
            seq,
            deps,
            summary,
        },
        sig,
    ))
}

type Verdict = Result<Arc<LightEntry>, Refusal>;

/// What all light states of one simulation share: the trust root, the
/// memoized verification of updates and certificates, and the sabotage knobs.
pub struct LightShared {
    root: TrustRoot,
    genesis: ChangeHash,
    updates: RefCell<HashMap<Arc<[u8]>, Verdict, Det>>,
    certs: RefCell<HashMap<Vec<u8>, Result<NodeCert, String>, Det>>,
    skip_signature_check: bool,
    grant_lifts_revocation: bool,
}

impl LightShared {
    /// Shared state under `root`. The two flags are sabotage for tests.
    pub fn new(root: TrustRoot, skip_signature_check: bool, grant_lifts_revocation: bool) -> Self {
        LightShared {
            root,
            genesis: weft_crdt::schema::genesis_hash(),
            updates: RefCell::default(),
            certs: RefCell::default(),
            skip_signature_check,
            grant_lifts_revocation,
        }
    }

    /// The genesis id every light state starts from.
    pub fn genesis(&self) -> ChangeHash {
        self.genesis
    }

    fn verify(&self, bytes: &[u8]) -> Verdict {
        if let Some(v) = self.updates.borrow().get(bytes) {
            return v.clone();
        }
        let v = self.verify_uncached(bytes);
        // Oversized garbage is not worth remembering.
        if bytes.len() <= MAX_LIGHT_BYTES {
            self.updates
                .borrow_mut()
                .insert(Arc::from(bytes), v.clone());
        }
        v
    }

    fn verify_uncached(&self, bytes: &[u8]) -> Verdict {
        let (body, entry, sig) = decode(bytes)?;
        if self.skip_signature_check {
            return Ok(Arc::new(entry));
        }
        let op = self
            .root
            .operator_by_key(&entry.author)
            .ok_or_else(|| Refusal::UnknownSigner(Box::new(entry.author)))?;
        let role = match entry.kind {
            LightKind::Grant => Role::Policy,
            LightKind::Revoke => Role::Revoke,
        };
        if !op.has_role(role) {
            return Err(Refusal::WrongRole(op.name.clone(), role));
        }
        let id: [u8; 32] = Sha256::digest(&body).into();
        entry
            .author
            .verify(Domain::Update, &id, &sig)
            .map_err(|_| Refusal::BadSignature(Box::new(entry.author)))?;
        Ok(Arc::new(entry))
    }

    fn check_cert(&self, now_ms: u64, node: &NodeId, cert: &[u8]) -> Result<(), String> {
        let cached = self.certs.borrow().get(cert).cloned();
        let verdict = match cached {
            Some(v) => v,
            None => {
                // Everything but the expiry is a function of the bytes: check
                // at time 0 once, and compare the expiry below on every call.
                let v = SignedNodeCert::from_bytes(cert)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.verify(&self.root, 0).map_err(|e| e.to_string()));
                self.certs.borrow_mut().insert(cert.to_vec(), v.clone());
                v
            }
        };
        let c = verdict?;
        if now_ms / 1000 >= c.expires {
            return Err(format!("the node certificate for {} has expired", c.name));
        }
        if &c.node != node {
            return Err(format!(
                "certificate is for node {}, not for the connected node {node}",
                c.node
            ));
        }
        Ok(())
    }
}

/// One node's light state.
pub struct LightState {
    shared: Rc<LightShared>,
    applied: HashMap<ChangeHash, Arc<LightEntry>, Det>,
    order: Vec<Arc<LightEntry>>,
    heads: BTreeSet<ChangeHash>,
    held: BTreeMap<ChangeHash, (Arc<LightEntry>, u64)>,
    held_seq: u64,
    granted: BTreeSet<u32>,
    revoked: BTreeSet<u32>,
}

impl LightState {
    /// An empty state (genesis only).
    pub fn new(shared: Rc<LightShared>) -> Self {
        let mut heads = BTreeSet::new();
        heads.insert(shared.genesis);
        LightState {
            shared,
            applied: HashMap::default(),
            order: Vec::new(),
            heads,
            held: BTreeMap::new(),
            held_seq: 0,
            granted: BTreeSet::new(),
            revoked: BTreeSet::new(),
        }
    }

    /// Whether subject `k` is allowed here: granted and not revoked.
    pub fn allows(&self, k: u32) -> bool {
        self.granted.contains(&k) && !self.revoked.contains(&k)
    }

    /// Subjects whose revocation this state holds.
    pub fn revoked(&self) -> &BTreeSet<u32> {
        &self.revoked
    }

    /// How many updates are applied.
    pub fn len(&self) -> usize {
        self.applied.len()
    }

    /// Whether no update is applied.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }

    /// Whether an update is applied.
    pub fn contains(&self, id: &ChangeHash) -> bool {
        self.applied.contains_key(id)
    }

    fn deps_present(&self, e: &LightEntry) -> Vec<ChangeHash> {
        e.deps
            .iter()
            .filter(|d| **d != self.shared.genesis && !self.applied.contains_key(d))
            .copied()
            .collect()
    }

    fn apply(&mut self, e: Arc<LightEntry>) -> (ChangeHash, ChangeSummary) {
        // An update held earlier may arrive again with its dependencies
        // present; it must not stay held, or its release would apply it twice.
        self.held.remove(&e.id);
        for d in &e.deps {
            self.heads.remove(d);
        }
        self.heads.insert(e.id);
        match e.kind {
            LightKind::Grant => {
                self.granted.insert(e.subject);
                if self.shared.grant_lifts_revocation {
                    self.revoked.remove(&e.subject);
                }
            }
            LightKind::Revoke => {
                self.revoked.insert(e.subject);
            }
        }
        let summary = e.summary.clone();
        self.applied.insert(e.id, e.clone());
        self.order.push(e);
        (summary.hash, summary)
    }

    fn release(&mut self) -> Vec<(ChangeHash, ChangeSummary)> {
        let mut out = Vec::new();
        loop {
            let ready: Vec<ChangeHash> = self
                .held
                .iter()
                .filter(|(_, (e, _))| self.deps_present(e).is_empty())
                .map(|(k, _)| *k)
                .collect();
            if ready.is_empty() {
                return out;
            }
            for id in ready {
                if let Some((e, _)) = self.held.remove(&id)
                    && !self.applied.contains_key(&id)
                {
                    out.push(self.apply(e));
                }
            }
        }
    }
}

fn summary_of(
    id: ChangeHash,
    author: &PublicKey,
    seq: u64,
    kind: LightKind,
    subject: u32,
    deps: &[ChangeHash],
) -> ChangeSummary {
    let mut actor = author.as_bytes().to_vec();
    actor.extend_from_slice(&seq.to_be_bytes());
    let path = match kind {
        LightKind::Grant => Path(vec![
            "bundles".into(),
            format!("g{subject}"),
            "policies".into(),
            "p".into(),
        ]),
        LightKind::Revoke => {
            let subject = subject_text(subject);
            Path(vec![
                weft_crdt::schema::REVOCATIONS.into(),
                // Simulated subjects are canonical already.
                weft_crdt::schema::bucket_of_canonical(&subject),
                subject,
            ])
        }
    };
    ChangeSummary {
        hash: id,
        actor: ActorId::from(actor),
        deps: deps.to_vec(),
        max_op: seq,
        time: 0,
        paths: [path].into_iter().collect(),
    }
}

impl LightState {
    /// One update of a batch, without releasing held updates.
    fn ingest_one(&mut self, bytes: &[u8]) -> Result<Ingested, UpdateError> {
        let entry = self
            .shared
            .verify(bytes)
            .map_err(|r| r.to_error(self.shared.root.version))?;
        if self.applied.contains_key(&entry.id) {
            return Ok(Ingested::Duplicate(entry.id));
        }
        let missing = self.deps_present(&entry);
        if !missing.is_empty() {
            if self.held.len() >= MAX_HELD
                && let Some(oldest) = self
                    .held
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| *k)
            {
                self.held.remove(&oldest);
            }
            self.held_seq += 1;
            let id = entry.id;
            self.held.insert(id, (entry, self.held_seq));
            return Ok(Ingested::Held {
                hash: id,
                missing,
                released: Vec::new(),
            });
        }
        let author = entry.author;
        let (hash, summary) = self.apply(entry);
        Ok(Ingested::Applied {
            hash,
            authorization: Authorization {
                sections: summary
                    .paths
                    .iter()
                    .filter_map(Path::section)
                    .collect::<BTreeSet<Section>>(),
                author,
                signers: vec![],
            },
            summary,
            released: Vec::new(),
        })
    }
}

impl ReplicaState for LightState {
    fn ingest_batch(&mut self, items: Vec<Arc<[u8]>>) -> Vec<Result<Ingested, UpdateError>> {
        let mut results = Vec::with_capacity(items.len());
        let mut last_applied = None;
        for bytes in items {
            let r = self.ingest_one(&bytes);
            if let Ok(Ingested::Applied { .. }) = r {
                last_applied = Some(results.len());
            }
            results.push(r);
        }
        if let Some(i) = last_applied
            && !self.held.is_empty()
        {
            let released = self.release();
            if let Some(Ok(Ingested::Applied { released: r, .. })) = results.get_mut(i) {
                *r = released;
            }
        }
        results
    }

    fn ingest(&mut self, bytes: &[u8]) -> Result<Ingested, UpdateError> {
        // A batch of one, without the batch (gossip comes one at a time).
        let mut r = self.ingest_one(bytes);
        if let Ok(Ingested::Applied { released, .. }) = &mut r
            && !self.held.is_empty()
        {
            *released = self.release();
        }
        r
    }

    fn heads(&self) -> Vec<ChangeHash> {
        self.heads.iter().copied().collect()
    }

    fn knows(&self, hash: &ChangeHash) -> bool {
        // Heads first: a peer's heads are most often ours.
        self.heads.contains(hash)
            || *hash == self.shared.genesis
            || self.applied.contains_key(hash)
            || self.held.contains_key(hash)
    }

    fn missing_for(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        if heads.len() == self.heads.len() && heads.iter().all(|h| self.heads.contains(h)) {
            return Vec::new();
        }
        let mut seen: BTreeSet<ChangeHash> = BTreeSet::new();
        let mut stack: Vec<ChangeHash> = heads
            .iter()
            .filter(|h| self.applied.contains_key(h))
            .copied()
            .collect();
        while let Some(h) = stack.pop() {
            if seen.insert(h)
                && let Some(e) = self.applied.get(&h)
            {
                stack.extend(e.deps.iter().filter(|d| !seen.contains(d)).copied());
            }
        }
        self.order
            .iter()
            .filter(|e| !seen.contains(&e.id))
            .map(|e| e.id)
            .collect()
    }

    fn update_bytes(&self, hash: &ChangeHash) -> Option<Arc<[u8]>> {
        self.applied.get(hash).map(|e| e.bytes.clone())
    }

    fn wanted(&self) -> BTreeSet<ChangeHash> {
        self.held
            .values()
            .flat_map(|(e, _)| e.deps.iter())
            .filter(|d| !self.knows(d))
            .copied()
            .collect()
    }

    fn is_node_revoked(&self, _node: &NodeId) -> bool {
        false
    }

    fn check_node_cert(&self, now_ms: u64, node: &NodeId, cert: &[u8]) -> Result<(), String> {
        self.shared.check_cert(now_ms, node, cert)
    }
}
