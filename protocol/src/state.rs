//! [`SignedState`]: the replicated document behind a wall of signature checks.
//!
//! Every update goes through the same pipeline, whatever its source (a local
//! submit, gossip, or sync): the trust boundary ([`crate::boundary::check`]:
//! envelope, hash, signers known to the root it names, every signature),
//! then the parse, then the paths its change touches are summarized and
//! authorized against that root, and only then is it applied. A refused
//! update leaves the state unchanged.
//!
//! # Held updates
//! An update whose dependencies are missing is held until they arrive, once
//! it has passed the boundary (so only what a threshold of known signers
//! signed is ever held). What is held is bounded ([`HeldLimits`]): in count,
//! in bytes in all and in bytes per source (a peer, or the local API), and
//! in time. Past a bound the oldest held update goes (of that source, for
//! its own bound); one held longer than the time bound is dropped when the
//! clock passes it ([`SignedState::advance`]). Whatever is dropped is
//! reported ([`SignedState::take_dropped`]) so the driver can remove it from
//! its store; sync fetches it again if it still matters.
//!
//! # Time
//! The state reads no clock: the driver moves it forward with
//! [`SignedState::advance`] (milliseconds since the Unix epoch). It dates
//! held updates and judges quarantine orders dated ahead of it.
//!
//! # Trust-root rotations and older updates
//! An update is judged against the trust-root version it names, which must be
//! in this node's chain of roots. An update that names the latest version is
//! judged by that root alone. An update that names an older version `v` must
//! also lie in the causal past of the heads that root `v + 1` recorded as
//! accepted (`accepted_heads`): the operators who rotated the root vouch for
//! the work done before it, and for nothing else. So an operator removed at
//! version `v + 1` cannot keep writing by claiming version `v`.
//!
//! The verdict is a function of the update, the document's change graph and
//! the chain alone, so every node reaches the same one whatever order it
//! learns of updates and rotations in. The vouched heads usually arrive after
//! the updates beneath them (sync, a store and the re-judging below all go
//! in causal order), so the causal past of the heads is walked through held
//! updates too (a change's hash commits to its dependencies, whoever holds
//! it), and an update that waits for the walk to reach it is tried again as
//! soon as any change the walk lacks is applied or held. The walk is kept
//! (`Vouched`), so each change is visited once, not once per update.
//!
//! When a node adopts a new root, it re-judges its stored updates against
//! the new chain ([`SignedState::adopt_root`]); anything that no longer
//! qualifies, and everything built on it, is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use weft_crdt::{
    Applied, ChangeHash, ChangeSummary, CrdtError, FastHash, PolicyDoc, PolicyView, Refusal,
};

use crate::boundary::{VerifiedUpdate, authorize_verified};
use crate::identity::{NodeId, PublicKey};
use crate::trust::TrustRoot;
use crate::update::{Authorization, Signers, UpdateError};

/// Default bound on updates held for missing dependencies.
///
/// Sync fetches in batches of at most a few hundred changes, so a few
/// thousand held updates cover several rounds in flight; beyond that the
/// oldest are dropped and fetched again later.
pub const DEFAULT_MAX_HELD: usize = 4096;

/// How much a state holds for missing dependencies, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLimits {
    /// Most updates held. Default [`DEFAULT_MAX_HELD`].
    pub max_updates: usize,
    /// Most bytes held in all. Default 64 MiB: sixteen updates of the
    /// largest size, or tens of thousands of ordinary revocations and
    /// bundles (hundreds of bytes to a few kilobytes each).
    pub max_bytes: usize,
    /// Most bytes held from one source (one peer, or the local API).
    /// Default 16 MiB: one peer can never take more than a quarter.
    pub max_bytes_per_source: usize,
    /// How long an update is held, in milliseconds. Default ten minutes:
    /// sync asks every few seconds for what held updates wait for, so a
    /// dependency that has not come in a hundred rounds is not coming.
    pub ttl_ms: u64,
}

impl Default for HeldLimits {
    fn default() -> Self {
        HeldLimits {
            max_updates: DEFAULT_MAX_HELD,
            max_bytes: 64 << 20,
            max_bytes_per_source: 16 << 20,
            ttl_ms: 10 * 60 * 1000,
        }
    }
}

/// Where updates came from, for the bound on what one source may have held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// This node: its API, its own orders, its store.
    Local,
    /// A peer, by node id.
    Peer(NodeId),
}

/// The outcome of ingesting one update.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// The update is now part of the state. `released` lists held updates that
    /// it unblocked and that were applied after it.
    Applied {
        /// The update's change hash.
        hash: ChangeHash,
        /// What the change touched.
        summary: ChangeSummary,
        /// Who signed it and what they were allowed.
        authorization: Authorization,
        /// Held updates applied as a consequence, in order, with what they touched.
        released: Vec<(ChangeHash, ChangeSummary)>,
    },
    /// The update was already part of the state.
    Duplicate(ChangeHash),
    /// The update verified but waits for these dependencies.
    Held {
        /// The update's change hash.
        hash: ChangeHash,
        /// Dependencies this node lacks.
        missing: Vec<ChangeHash>,
        /// Held updates its arrival let apply, in order, with what they
        /// touched (the walk of a rotation's vouched past can complete with
        /// an update that itself still waits), when no update of its batch
        /// applied to carry them.
        released: Vec<(ChangeHash, ChangeSummary)>,
    },
}

#[derive(Clone)]
struct Held {
    update: VerifiedUpdate,
    bytes: Arc<[u8]>,
    missing: Vec<ChangeHash>,
    /// Whether `missing` is what the walk of a rotation's vouched past
    /// lacks (tried again once any of it is applied or held), rather than
    /// the change's dependencies (tried again once all are applied).
    vouching: bool,
    seq: u64,
    /// When it was held (the state's clock, ms).
    since_ms: u64,
    source: Source,
}

/// An applied update as the state keeps it: its signed bytes and its signers.
type Stored = (Arc<[u8]>, Signers);

/// The verified replicated state of one node.
#[derive(Clone)]
pub struct SignedState {
    doc: PolicyDoc,
    roots: BTreeMap<u64, TrustRoot>,
    /// The encoded `SignedRoot` of every root in the chain whose bytes this
    /// state was given or adopted, by version: what a peer that missed a
    /// rotation is sent.
    signed_roots: BTreeMap<u64, Arc<[u8]>>,
    /// The signed bytes and the signers of every applied update, by change
    /// hash (looked up for every update that arrives, so hashed, not sorted).
    updates: HashMap<ChangeHash, Stored, FastHash>,
    held: BTreeMap<ChangeHash, Held>,
    held_seq: u64,
    held_limits: HeldLimits,
    /// Bytes held, in all and by source.
    held_bytes: usize,
    held_by_source: BTreeMap<Source, usize>,
    /// Held updates dropped unapplied since the last [`SignedState::take_dropped`].
    dropped: Vec<ChangeHash>,
    /// The driver's clock (ms since the Unix epoch), as last advanced.
    clock_ms: u64,
    /// Changes refused as equivocations: they can never apply here (the
    /// other change in their place is permanent), so sync stops fetching them.
    equivocations: BTreeSet<ChangeHash>,
    /// For each root version `v` that updates named, what is known so far of
    /// the causal past of the heads root `v + 1` vouched for.
    vouched: BTreeMap<u64, Vouched>,
}

/// The causal past of the heads a rotation vouched for
/// ([`TrustRoot::accepted_heads`]), as far as this state has walked it: the
/// hashes reached, and those of them whose changes it has not seen yet
/// (neither applied nor held), past which the walk cannot go until they come.
#[derive(Clone, Debug, Default)]
struct Vouched {
    past: BTreeSet<ChangeHash>,
    unseen: BTreeSet<ChangeHash>,
}

/// How many equivocating changes a state remembers not to fetch again.
const MAX_EQUIVOCATIONS: usize = 4096;

impl SignedState {
    /// An empty state trusting `root`.
    pub fn new(root: TrustRoot) -> Self {
        let mut roots = BTreeMap::new();
        roots.insert(root.version, root);
        SignedState {
            doc: PolicyDoc::new(),
            roots,
            signed_roots: BTreeMap::new(),
            updates: HashMap::default(),
            held: BTreeMap::new(),
            held_seq: 0,
            held_limits: HeldLimits::default(),
            held_bytes: 0,
            held_by_source: BTreeMap::new(),
            dropped: Vec::new(),
            clock_ms: 0,
            equivocations: BTreeSet::new(),
            vouched: BTreeMap::new(),
        }
    }

    /// Restores a state from a snapshot that this node wrote of its own
    /// state: `load` yields the document it saved with [`PolicyDoc::save`],
    /// and `covered` holds the signed bytes of every update the document
    /// holds, each under the hash the snapshot lists.
    ///
    /// What is checked here, so that the snapshot is trusted for nothing a
    /// signature can vouch for:
    /// - every update's signatures, again (in batches, see
    ///   [`crate::boundary::decode_batch_verified`]), and its change is the
    ///   one its hash names;
    /// - every update's change is in the document, and the document holds no
    ///   change without an update (the genesis change aside), so every op in
    ///   it is covered by a signature over its change's hash;
    /// - every update that names the current trust root is authorized again
    ///   under it: its author signed it, its signers hold the roles its paths
    ///   need, as many as the thresholds say.
    ///
    /// An update that names an older root was judged, when it was accepted,
    /// against the chain of roots the node held then (a rotation's
    /// `accepted_heads`); that chain is not kept across restarts, so such an
    /// update is kept on its signatures alone.
    ///
    /// Checking the signatures and loading the document run side by side;
    /// once the document is there, each update is authorized as soon as its
    /// signatures are checked, so that few of them are ever held parsed at
    /// once. Fails, changing nothing, with the first update that does not
    /// hold or, when it fails, with `load`'s error.
    pub fn restore<L>(
        root: TrustRoot,
        load: L,
        covered: &[(ChangeHash, Arc<[u8]>)],
    ) -> Result<Self, RestoreError>
    where
        L: FnOnce() -> Result<PolicyDoc, String> + Send,
    {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::restore_on(cores, root, load, covered)
    }

    /// [`SignedState::restore`] on at most `threads` threads (at least one).
    /// The one that runs `load` checks signatures too once the document is
    /// in; with one thread, the document comes first and every update is
    /// judged right after its signatures.
    pub fn restore_on<L>(
        threads: usize,
        root: TrustRoot,
        load: L,
        covered: &[(ChangeHash, Arc<[u8]>)],
    ) -> Result<Self, RestoreError>
    where
        L: FnOnce() -> Result<PolicyDoc, String> + Send,
    {
        let state = SignedState::new(root);
        let latest = state.root();
        let groups: Vec<_> = covered.chunks(crate::boundary::VERIFY_BATCH).collect();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let loaded: OnceLock<PolicyDoc> = OnceLock::new();
        // Takes groups until none is left, each checked in one batch, and
        // keeps only the hash and the signers of what the loaded document
        // already vouches for.
        let work = || -> Result<Vec<Restored>, RestoreError> {
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Some(group) = groups.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let bytes: Vec<&[u8]> = group.iter().map(|(_, b)| &b[..]).collect();
                let doc = loaded.get();
                let checked = crate::boundary::decode_batch_verified(&bytes);
                for ((hash, bytes), checked) in group.iter().zip(checked) {
                    let fail = |e| {
                        stop.store(true, Ordering::Relaxed);
                        Err(e)
                    };
                    let mut v = match checked {
                        Ok(v) if v.hash == *hash => v,
                        Ok(v) => {
                            return fail(RestoreError::Damaged {
                                hash: *hash,
                                actual: v.hash,
                            });
                        }
                        Err(err) => {
                            return fail(RestoreError::Unverified {
                                hash: *hash,
                                err: Box::new(err),
                            });
                        }
                    };
                    match doc {
                        Some(doc) if judge_restored(doc, &v, latest).is_ok() => {
                            done.push(Restored::Kept(v.hash, v.signers, bytes.clone()));
                        }
                        _ => {
                            // Judging needs the parsed change and the root
                            // version, not a second copy of the change's bytes
                            // nor the signatures, already checked.
                            v.update.change = Vec::new();
                            v.update.signatures = Vec::new();
                            done.push(Restored::Pending(Box::new(v), bytes.clone()));
                        }
                    }
                }
            }
            Ok(done)
        };
        let threads = threads.min(groups.len()).max(1);
        let (load_error, parts) = std::thread::scope(|scope| {
            let work = &work;
            // The loading thread takes groups too, once the document is in.
            let loader = scope.spawn(|| match load() {
                Ok(doc) => {
                    let _ = loaded.set(doc);
                    (None, work())
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    (Some(e), Ok(Vec::new()))
                }
            });
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut parts = Vec::new();
            for h in helpers {
                parts.push(h.join().expect("a verifying thread does not panic"));
            }
            let (load_error, own) = loader.join().expect("the loading thread does not panic");
            parts.push(own);
            (load_error, parts)
        });
        if let Some(e) = load_error {
            return Err(RestoreError::Load(e));
        }
        let mut kept = Vec::with_capacity(covered.len());
        let mut pending = Vec::new();
        for part in parts {
            for r in part? {
                match r {
                    Restored::Kept(h, signers, bytes) => kept.push((h, signers, bytes)),
                    Restored::Pending(v, bytes) => pending.push((*v, bytes)),
                }
            }
        }
        let doc = loaded
            .into_inner()
            .ok_or_else(|| RestoreError::Load("no document".into()))?;
        Ok(state.assemble(doc, kept, pending)?)
    }

    /// The state of a snapshot: `doc` and its updates, `kept` already judged
    /// against it, `pending` judged here.
    fn assemble(
        mut self,
        mut doc: PolicyDoc,
        kept: Vec<(ChangeHash, Signers, Arc<[u8]>)>,
        pending: Vec<(VerifiedUpdate, Arc<[u8]>)>,
    ) -> Result<Self, UpdateError> {
        let latest = self.root();
        let failed: Vec<usize> = on_all_cores(&pending, |part, offset| {
            part.iter()
                .enumerate()
                .filter(|(_, (v, _))| judge_restored(&doc, v, latest).is_err())
                .map(|(i, _)| offset + i)
                .collect()
        });
        if !failed.is_empty() {
            // Some may write into objects the loaded document no longer
            // shows; learn every object's path and judge those again.
            if !doc.tables_complete() {
                doc.complete_tables();
            }
            for i in failed {
                judge_restored(&doc, &pending[i].0, latest)?;
            }
        }
        self.updates.reserve(kept.len() + pending.len());
        for (hash, signers, bytes) in kept {
            self.updates.insert(hash, (bytes, signers));
        }
        for (v, bytes) in pending {
            self.updates.insert(v.hash, (bytes, v.signers));
        }
        // The genesis change is the one change of the document without an update.
        let changes = doc.change_count();
        if changes != self.updates.len() + 1 {
            return Err(UpdateError::Malformed(format!(
                "the snapshot holds {} change(s) but {} update(s) were given",
                changes.saturating_sub(1),
                self.updates.len()
            )));
        }
        self.doc = doc;
        Ok(self)
    }

    /// Sets the bound on how many updates are held.
    pub fn with_max_held(mut self, max: usize) -> Self {
        self.held_limits.max_updates = max.max(1);
        self
    }

    /// Sets every bound on held updates.
    pub fn with_held_limits(mut self, limits: HeldLimits) -> Self {
        self.held_limits = HeldLimits {
            max_updates: limits.max_updates.max(1),
            ..limits
        };
        self
    }

    /// The bounds on held updates.
    pub fn held_limits(&self) -> HeldLimits {
        self.held_limits
    }

    /// Moves the state's clock to `now_ms` (never backwards) and drops held
    /// updates held longer than [`HeldLimits::ttl_ms`]. Returns how many
    /// were dropped; their hashes wait in [`SignedState::take_dropped`].
    /// Updates held before the clock was first set (a start, loading the
    /// store) are dated at the first advance.
    pub fn advance(&mut self, now_ms: u64) -> usize {
        if self.clock_ms == 0 {
            for h in self.held.values_mut() {
                h.since_ms = now_ms;
            }
        }
        self.clock_ms = self.clock_ms.max(now_ms);
        let Some(deadline) = self.clock_ms.checked_sub(self.held_limits.ttl_ms) else {
            return 0;
        };
        let expired: Vec<ChangeHash> = self
            .held
            .iter()
            .filter(|(_, h)| h.since_ms < deadline)
            .map(|(k, _)| *k)
            .collect();
        for hash in &expired {
            self.unhold(hash, true);
        }
        expired.len()
    }

    /// The state's clock (ms since the Unix epoch), as last advanced.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Held updates dropped without being applied (over a bound, too old, or
    /// found invalid once their dependencies came) since the last call.
    pub fn take_dropped(&mut self) -> Vec<ChangeHash> {
        std::mem::take(&mut self.dropped)
    }

    /// Bytes of the updates held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The latest trust root.
    pub fn root(&self) -> &TrustRoot {
        self.roots
            .values()
            .next_back()
            .expect("a state always holds at least one root")
    }

    /// Every root in the chain, oldest first.
    pub fn roots(&self) -> impl Iterator<Item = &TrustRoot> {
        self.roots.values()
    }

    /// Adds a chain of roots with their encoded `SignedRoot`s, oldest first
    /// (one the caller has verified, rotation by rotation, as a node's store
    /// keeps it; it may end with the latest root, whose encoding is then
    /// kept too). Updates that name an older root are judged against the
    /// rotation after it (see the module doc). Roots newer than the latest
    /// are ignored: those are adopted ([`SignedState::adopt_signed_root`]).
    pub fn with_chain(mut self, chain: Vec<(TrustRoot, Arc<[u8]>)>) -> Self {
        let latest = self.root().version;
        for (root, signed) in chain {
            if root.version > latest {
                continue;
            }
            self.signed_roots.insert(root.version, signed);
            self.roots.entry(root.version).or_insert(root);
        }
        self
    }

    /// The encoded `SignedRoot`s this state holds of versions after `after`,
    /// oldest first.
    pub fn signed_roots_after(&self, after: u64) -> Vec<Arc<[u8]>> {
        self.signed_roots
            .range(after.saturating_add(1)..)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Verifies the encoded `SignedRoot` in `bytes` as a rotation from the
    /// latest root at `now` (Unix seconds: its signatures by a threshold of
    /// the latest root's keys and of its own, its version higher) and
    /// adopts it ([`SignedState::adopt_root`]). A root this state already
    /// holds, the same body again, is [`RootAdoption::Known`].
    pub fn adopt_signed_root(
        &mut self,
        bytes: &[u8],
        now: u64,
    ) -> Result<RootAdoption, crate::trust::TrustError> {
        let signed = crate::trust::SignedRoot::from_bytes(bytes)?;
        let offered = signed.root()?;
        if let Some(held) = self.roots.get(&offered.version) {
            if *held == offered {
                return Ok(RootAdoption::Known);
            }
            return Err(crate::trust::TrustError::Invalid(format!(
                "trust root version {} differs from the version {} this node holds",
                offered.version, offered.version
            )));
        }
        let current = crate::trust::VerifiedRoot {
            root: self.root().clone(),
            expired: false,
        };
        let next = current.verify_rotation(&signed, now)?;
        let version = next.root.version;
        let dropped = self.adopt_root(next.root);
        let bytes: Arc<[u8]> = Arc::from(bytes);
        self.signed_roots.insert(version, bytes.clone());
        Ok(RootAdoption::Adopted {
            version,
            signed: bytes,
            dropped,
        })
    }

    /// The document.
    pub fn doc(&self) -> &PolicyDoc {
        &self.doc
    }

    /// The current view.
    pub fn view(&self) -> &PolicyView {
        self.doc.view()
    }

    /// The document's heads.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.heads()
    }

    /// Whether the update with this hash is applied.
    pub fn contains(&self, hash: &ChangeHash) -> bool {
        self.updates.contains_key(hash)
    }

    /// Whether the update with this hash is applied or held, or was refused
    /// as an equivocation (and so is not worth fetching), or is the genesis
    /// change every state starts from (the heads of a state with no update).
    pub fn knows(&self, hash: &ChangeHash) -> bool {
        self.updates.contains_key(hash)
            || *hash == weft_crdt::schema::genesis_hash()
            || self.held.contains_key(hash)
            || self.equivocations.contains(hash)
    }

    fn note_equivocation(&mut self, hash: ChangeHash) {
        if self.equivocations.len() >= MAX_EQUIVOCATIONS {
            self.equivocations.pop_first();
        }
        self.equivocations.insert(hash);
    }

    /// The signed bytes of an applied update.
    pub fn update_bytes(&self, hash: &ChangeHash) -> Option<Arc<[u8]>> {
        self.updates.get(hash).map(|(bytes, _)| bytes.clone())
    }

    /// Every applied update's hash, in no particular order.
    pub fn update_hashes(&self) -> impl Iterator<Item = &ChangeHash> {
        self.updates.keys()
    }

    /// How many updates are applied.
    pub fn update_count(&self) -> usize {
        self.updates.len()
    }

    /// How many updates are held for missing dependencies.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Signers of an applied update.
    pub fn signers_of(&self, hash: &ChangeHash) -> Option<&BTreeSet<PublicKey>> {
        self.updates.get(hash).map(|(_, signers)| &**signers)
    }

    /// Dependencies that held updates wait for and no one has supplied yet.
    pub fn wanted(&self) -> BTreeSet<ChangeHash> {
        self.held
            .values()
            .flat_map(|h| h.missing.iter())
            .filter(|d| !self.knows(d))
            .copied()
            .collect()
    }

    /// Hashes of applied updates that are not in the causal past of `heads`
    /// (what a peer with those heads lacks), in causal order.
    pub fn missing_for(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        let known: Vec<ChangeHash> = heads
            .iter()
            .filter(|h| self.doc.contains(h))
            .copied()
            .collect();
        self.doc
            .hashes_since(&known)
            .into_iter()
            .filter(|h| self.updates.contains_key(h))
            .collect()
    }

    /// Checks ([`crate::boundary::check`]), authorizes and applies one update
    /// from the local API, at the state's clock.
    pub fn ingest(&mut self, bytes: &[u8]) -> Result<Ingested, UpdateError> {
        self.ingest_batch(vec![Arc::from(bytes)])
            .pop()
            .expect("one result per update")
    }

    /// [`SignedState::ingest_from`] for updates from the local API.
    pub fn ingest_batch(&mut self, items: Vec<Arc<[u8]>>) -> Vec<Result<Ingested, UpdateError>> {
        self.ingest_from(items, Source::Local)
    }

    /// Checks each update at the trust boundary ([`crate::boundary::check`]),
    /// then authorizes and applies the batch, in one automerge step where it
    /// can. Each update gets its own result; a refused update does not hold
    /// back the others. Updates arriving together (a sync response, a burst
    /// of gossip) should come through here: automerge's cost is per call,
    /// not per change. What is held is counted against `source`.
    pub fn ingest_from(
        &mut self,
        items: Vec<Arc<[u8]>>,
        source: Source,
    ) -> Vec<Result<Ingested, UpdateError>> {
        let mut results: Vec<Option<Result<Ingested, UpdateError>>> = Vec::new();
        let mut verified = Vec::new();
        let mut slots = Vec::new();
        for bytes in items {
            match crate::boundary::check(&bytes, &self.roots) {
                Ok(v) => {
                    slots.push(results.len());
                    results.push(None);
                    verified.push((v, bytes));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let out = self.ingest_checked(verified, source);
        for (slot, r) in slots.into_iter().zip(out) {
            results[slot] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.expect("every slot is filled"))
            .collect()
    }

    /// [`SignedState::ingest_batch`] for updates that passed
    /// [`crate::boundary::check`] (or, for this node's own store,
    /// [`crate::boundary::decode_verified`]), from the local source.
    pub fn ingest_verified_batch(
        &mut self,
        items: Vec<(VerifiedUpdate, Arc<[u8]>)>,
    ) -> Vec<Result<Ingested, UpdateError>> {
        self.ingest_checked(items, Source::Local)
    }

    fn ingest_checked(
        &mut self,
        items: Vec<(VerifiedUpdate, Arc<[u8]>)>,
        source: Source,
    ) -> Vec<Result<Ingested, UpdateError>> {
        let latest = self.root().version;
        let now = self.clock_ms / 1000;
        let mut results: Vec<Option<Result<Ingested, UpdateError>>> =
            items.iter().map(|_| None).collect();
        // Updates under the latest root go through one automerge step; those
        // naming an older root need the rotation's vouching, which reads the
        // change graph, so they go one by one afterwards.
        let mut batch = Vec::new();
        let mut older = Vec::new();
        for (i, (v, bytes)) in items.into_iter().enumerate() {
            if self.updates.contains_key(&v.hash) {
                results[i] = Some(Ok(Ingested::Duplicate(v.hash)));
            } else if v.update.root_version == latest {
                batch.push((i, v, bytes));
            } else {
                older.push((i, v, bytes));
            }
        }
        let mut auths: Vec<Option<Authorization>> = batch.iter().map(|_| None).collect();
        let root = self
            .roots
            .get(&latest)
            .expect("the latest root is in the chain");
        let outcome = self.doc.apply_checked(
            batch.iter().map(|(_, v, _)| v.change.clone()),
            |j, summary| {
                auths[j] = Some(authorize_verified(summary, &batch[j].1, root, now)?);
                Ok::<(), UpdateError>(())
            },
        );
        let mut any_applied = false;
        let mut any_held = false;
        for (j, ((i, v, bytes), r)) in batch.into_iter().zip(outcome).enumerate() {
            results[i] = Some(match r {
                Ok(Applied::New(summary)) => {
                    any_applied = true;
                    // It may have been held, and arrived again with its deps.
                    self.unhold(&v.hash, false);
                    self.updates.insert(v.hash, (bytes, v.signers));
                    Ok(Ingested::Applied {
                        hash: v.hash,
                        summary,
                        authorization: auths[j].take().expect("authorized before applied"),
                        released: Vec::new(),
                    })
                }
                Ok(Applied::Duplicate) => Ok(Ingested::Duplicate(v.hash)),
                Err(Refusal::State(CrdtError::MissingDeps(missing))) => {
                    let hash = v.hash;
                    any_held = true;
                    self.hold(v, bytes, missing.clone(), false, source);
                    Ok(Ingested::Held {
                        hash,
                        missing,
                        released: Vec::new(),
                    })
                }
                Err(Refusal::State(e)) => {
                    if matches!(e, CrdtError::Equivocation { .. }) {
                        self.note_equivocation(v.hash);
                    }
                    Err(e.into())
                }
                Err(Refusal::Check(e)) => Err(e),
            });
        }
        for (i, v, bytes) in older {
            if self.updates.contains_key(&v.hash) {
                // A second copy of an update that applied earlier in the batch.
                results[i] = Some(Ok(Ingested::Duplicate(v.hash)));
                continue;
            }
            results[i] = Some(match self.try_apply(&v, &bytes) {
                Ok(Step::Applied(summary, authorization)) => {
                    any_applied = true;
                    Ok(Ingested::Applied {
                        hash: v.hash,
                        summary,
                        authorization,
                        released: Vec::new(),
                    })
                }
                Ok(Step::Missing(missing, vouching)) => {
                    let hash = v.hash;
                    any_held = true;
                    self.hold(v, bytes, missing.clone(), vouching, source);
                    Ok(Ingested::Held {
                        hash,
                        missing,
                        released: Vec::new(),
                    })
                }
                Err(e) => {
                    if matches!(e, UpdateError::State(CrdtError::Equivocation { .. })) {
                        self.note_equivocation(v.hash);
                    }
                    Err(e)
                }
            });
        }
        // Held updates wait for applied dependencies; those waiting for the
        // walk of a rotation's vouched past wait for held changes as well.
        let retry = any_applied || (any_held && self.held.values().any(|h| h.vouching));
        if retry && !self.held.is_empty() {
            let released = self.release_held();
            report_released(&mut results, released);
        }
        results
            .into_iter()
            .map(|r| r.expect("every update has a result"))
            .collect()
    }

    fn try_apply(
        &mut self,
        update: &VerifiedUpdate,
        bytes: &Arc<[u8]>,
    ) -> Result<Step, UpdateError> {
        let summary = match self.doc.summarize(&update.change) {
            Ok(s) => s,
            Err(CrdtError::MissingDeps(missing)) => return Ok(Step::Missing(missing, false)),
            Err(e) => return Err(e.into()),
        };
        let named = update.update.root_version;
        let latest = self.root().version;
        let root = self.roots.get(&named).ok_or(UpdateError::RootVersion {
            named,
            current: latest,
        })?;
        let authorization = authorize_verified(&summary, update, root, self.clock_ms / 1000)?;
        if named < latest {
            match self.vouched_by_rotation(&update.hash, named) {
                Vouch::Yes => {}
                Vouch::No => {
                    return Err(UpdateError::RootVersion {
                        named,
                        current: latest,
                    });
                }
                Vouch::Missing(m) => return Ok(Step::Missing(m, true)),
            }
        }
        match self.doc.apply(update.change.clone())? {
            Applied::New(s) => {
                debug_assert_eq!(s, summary);
            }
            Applied::Duplicate => {}
        }
        self.updates
            .insert(update.hash, (bytes.clone(), update.signers.clone()));
        self.unhold(&update.hash, false);
        Ok(Step::Applied(summary, authorization))
    }

    /// Whether the root after `named` recorded `hash` as accepted before the
    /// rotation: whether it lies in the causal past of that root's
    /// `accepted_heads`. The walk down from the heads goes through applied
    /// and held changes and is kept ([`Vouched`]); `Missing` names the
    /// changes it still lacks when it has not reached `hash` yet.
    fn vouched_by_rotation(&mut self, hash: &ChangeHash, named: u64) -> Vouch {
        let Some(next) = self.roots.range(named + 1..).next().map(|(_, r)| r) else {
            return Vouch::Yes;
        };
        let walk = self.vouched.entry(named).or_insert_with(|| {
            let heads: BTreeSet<ChangeHash> =
                next.accepted_heads.iter().map(|h| ChangeHash(*h)).collect();
            Vouched {
                unseen: heads.clone(),
                past: heads,
            }
        });
        let mut seen: Vec<ChangeHash> = walk
            .unseen
            .iter()
            .filter(|h| self.doc.contains(h) || self.held.contains_key(h))
            .copied()
            .collect();
        while let Some(h) = seen.pop() {
            walk.unseen.remove(&h);
            let deps = match self.held.get(&h) {
                Some(held) => held.update.change.deps().to_vec(),
                None => self
                    .doc
                    .automerge()
                    .get_change_meta_by_hash(&h)
                    .map(|m| m.deps.clone())
                    .unwrap_or_default(),
            };
            for d in deps {
                if walk.past.insert(d) {
                    if self.doc.contains(&d) || self.held.contains_key(&d) {
                        seen.push(d);
                    } else {
                        walk.unseen.insert(d);
                    }
                }
            }
        }
        if walk.past.contains(hash) {
            Vouch::Yes
        } else if walk.unseen.is_empty() {
            Vouch::No
        } else {
            Vouch::Missing(walk.unseen.iter().copied().collect())
        }
    }

    /// Holds `update` for `missing`, within [`HeldLimits`]: the oldest held
    /// updates make room, of `source` first when its own bound is reached.
    /// An update larger than a bound on its own is not held.
    fn hold(
        &mut self,
        update: VerifiedUpdate,
        bytes: Arc<[u8]>,
        missing: Vec<ChangeHash>,
        vouching: bool,
        source: Source,
    ) {
        let size = bytes.len();
        let limits = self.held_limits;
        self.unhold(&update.hash, false);
        if size > limits.max_bytes_per_source || size > limits.max_bytes {
            self.dropped.push(update.hash);
            return;
        }
        while self
            .held_by_source
            .get(&source)
            .is_some_and(|b| b + size > limits.max_bytes_per_source)
        {
            let Some(oldest) = self.oldest_held(Some(source)) else {
                break;
            };
            self.unhold(&oldest, true);
        }
        while self.held.len() >= limits.max_updates || self.held_bytes + size > limits.max_bytes {
            let Some(oldest) = self.oldest_held(None) else {
                break;
            };
            self.unhold(&oldest, true);
        }
        self.held_seq += 1;
        self.held_bytes += size;
        *self.held_by_source.entry(source).or_default() += size;
        self.held.insert(
            update.hash,
            Held {
                update,
                bytes,
                missing,
                vouching,
                seq: self.held_seq,
                since_ms: self.clock_ms,
                source,
            },
        );
    }

    /// The hash of the update held longest (of `source`, if given).
    fn oldest_held(&self, source: Option<Source>) -> Option<ChangeHash> {
        self.held
            .iter()
            .filter(|(_, h)| source.is_none_or(|s| h.source == s))
            .min_by_key(|(_, h)| h.seq)
            .map(|(k, _)| *k)
    }

    /// Takes `hash` out of the held updates, if it is there, keeping the
    /// byte counts; `dropped` records it as dropped unapplied.
    fn unhold(&mut self, hash: &ChangeHash, dropped: bool) -> Option<Held> {
        let held = self.held.remove(hash)?;
        self.held_bytes -= held.bytes.len();
        if let Some(b) = self.held_by_source.get_mut(&held.source) {
            *b -= held.bytes.len();
            if *b == 0 {
                self.held_by_source.remove(&held.source);
            }
        }
        if dropped {
            self.dropped.push(*hash);
        }
        Some(held)
    }

    /// Applies held updates whose dependencies are now all present, until no
    /// more can go. Held updates that turn out to be invalid are dropped.
    fn release_held(&mut self) -> Vec<(ChangeHash, ChangeSummary, Authorization)> {
        let mut released = Vec::new();
        loop {
            let here = |d: &ChangeHash| self.doc.contains(d) || self.held.contains_key(d);
            let ready: Vec<ChangeHash> = self
                .held
                .iter()
                .filter(|(_, h)| {
                    if h.vouching {
                        h.missing.iter().any(here)
                    } else {
                        h.missing.iter().all(|d| self.doc.contains(d))
                    }
                })
                .map(|(k, _)| *k)
                .collect();
            // A round that applies nothing leaves nothing new to wait for.
            let mut applied = false;
            for hash in ready {
                let Some(held) = self.unhold(&hash, false) else {
                    continue;
                };
                if self.updates.contains_key(&hash) {
                    continue;
                }
                match self.try_apply(&held.update, &held.bytes) {
                    Ok(Step::Applied(summary, authorization)) => {
                        applied = true;
                        released.push((hash, summary, authorization));
                    }
                    Ok(Step::Missing(missing, vouching)) => {
                        let size = held.bytes.len();
                        self.held_bytes += size;
                        *self.held_by_source.entry(held.source).or_default() += size;
                        self.held.insert(
                            hash,
                            Held {
                                missing,
                                vouching,
                                ..held
                            },
                        );
                    }
                    Err(_) => self.dropped.push(hash),
                }
            }
            if !applied {
                return released;
            }
        }
    }

    /// Adds a newer trust root to the chain (its signatures must already have
    /// been checked with [`crate::trust::VerifiedRoot::verify_rotation`]) and
    /// re-judges every stored update against the new chain. Returns the hashes
    /// of updates dropped because they no longer qualify.
    pub fn adopt_root(&mut self, root: TrustRoot) -> Vec<ChangeHash> {
        self.roots.insert(root.version, root);
        let stored: Vec<Arc<[u8]>> = self
            .doc
            .changes()
            .iter()
            .filter_map(|c| self.updates.get(&c.hash()).map(|(bytes, _)| bytes.clone()))
            .collect();
        let before: BTreeSet<ChangeHash> = self.updates.keys().copied().collect();
        let mut fresh = SignedState::new(self.root().clone()).with_held_limits(self.held_limits);
        fresh.roots = self.roots.clone();
        fresh.signed_roots = std::mem::take(&mut self.signed_roots);
        fresh.clock_ms = self.clock_ms;
        for bytes in stored {
            // Refusals are the point here: they are what the new chain drops.
            let _ = fresh.ingest(&bytes);
        }
        *self = fresh;
        before
            .into_iter()
            .filter(|h| !self.updates.contains_key(h))
            .collect()
    }
}

/// Reports the held updates that an ingest released (`released`, in the
/// order they applied) in the ingest's `results`, so that every update the
/// ingest applied is reported applied exactly once (the replica persists
/// and announces what the results report): an update of the batch itself,
/// held earlier in the batch, is reported applied (and a second copy of it
/// in the batch a duplicate); the others go with the last update of the
/// batch that applied or, when none did, with the last one held (its
/// arrival completed the walk of a rotation's vouched past).
fn report_released(
    results: &mut [Option<Result<Ingested, UpdateError>>],
    released: Vec<(ChangeHash, ChangeSummary, Authorization)>,
) {
    let in_batch: BTreeSet<ChangeHash> = results
        .iter()
        .filter_map(|r| match r {
            Some(Ok(Ingested::Held { hash, .. })) => Some(*hash),
            _ => None,
        })
        .collect();
    let mut ours: HashMap<ChangeHash, (ChangeSummary, Authorization), FastHash> =
        HashMap::default();
    let mut rest = Vec::with_capacity(released.len());
    for (hash, summary, authorization) in released {
        if in_batch.contains(&hash) {
            ours.insert(hash, (summary, authorization));
        } else {
            rest.push((hash, summary));
        }
    }
    let mut reported = BTreeSet::new();
    for r in results.iter_mut() {
        let Some(Ok(Ingested::Held { hash, .. })) = r else {
            continue;
        };
        let hash = *hash;
        if let Some((summary, authorization)) = ours.remove(&hash) {
            reported.insert(hash);
            *r = Some(Ok(Ingested::Applied {
                hash,
                summary,
                authorization,
                released: Vec::new(),
            }));
        } else if reported.contains(&hash) {
            *r = Some(Ok(Ingested::Duplicate(hash)));
        }
    }
    if rest.is_empty() {
        return;
    }
    let last = |applied: bool| {
        results.iter().rposition(|r| match r {
            Some(Ok(Ingested::Applied { .. })) => applied,
            Some(Ok(Ingested::Held { .. })) => !applied,
            _ => false,
        })
    };
    // A held update is released only after an update of the batch applied
    // or was held, so a carrier exists.
    let carrier = last(true).or_else(|| last(false));
    match carrier.and_then(|i| results[i].as_mut()) {
        Some(Ok(Ingested::Applied { released, .. } | Ingested::Held { released, .. })) => {
            *released = rest;
        }
        _ => debug_assert!(false, "released updates without a carrier"),
    }
}

/// What [`SignedState::adopt_signed_root`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootAdoption {
    /// The root is now the latest.
    Adopted {
        /// Its version.
        version: u64,
        /// Its encoded `SignedRoot`.
        signed: Arc<[u8]>,
        /// Applied updates dropped because they no longer qualify.
        dropped: Vec<ChangeHash>,
    },
    /// The state already holds this root.
    Known,
}

/// An update of a snapshot being restored ([`SignedState::restore`]).
enum Restored {
    /// Verified and judged: what the state keeps of it.
    Kept(ChangeHash, Signers, Arc<[u8]>),
    /// Verified before the document was there (or refused by it before its
    /// tables were complete): judged at the end.
    Pending(Box<VerifiedUpdate>, Arc<[u8]>),
}

/// Whether `doc`, loaded from a snapshot, vouches for `v`: its change is in
/// the document and, when `v` names the current root, `latest` authorizes
/// it again. An update that names an older root was judged against the
/// chain of roots held when it came, which a restart does not keep.
fn judge_restored(
    doc: &PolicyDoc,
    v: &VerifiedUpdate,
    latest: &TrustRoot,
) -> Result<(), UpdateError> {
    if !doc.contains(&v.hash) {
        return Err(UpdateError::Malformed(format!(
            "the snapshot does not hold update {}",
            v.hash
        )));
    }
    if v.update.root_version == latest.version {
        // Judged when it came; a restart does not judge its date again.
        authorize_verified(&doc.summarize_applied(&v.change)?, v, latest, u64::MAX)?;
    }
    Ok(())
}

/// Why [`SignedState::restore`] refused a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The document did not load.
    #[error("the snapshot's document does not load: {0}")]
    Load(String),
    /// A record's change is not the one its snapshot lists.
    #[error("the stored record of update {hash} it covers is damaged: it hashes to {actual}")]
    Damaged {
        /// The hash the snapshot lists.
        hash: ChangeHash,
        /// The hash of the record's change.
        actual: ChangeHash,
    },
    /// A record does not verify.
    #[error("the stored record of update {hash} it covers does not verify: {err}")]
    Unverified {
        /// The hash the snapshot lists.
        hash: ChangeHash,
        /// Why.
        err: Box<UpdateError>,
    },
    /// An update is not in the document, or not authorized, or the document
    /// holds a change without an update.
    #[error(transparent)]
    Refused(#[from] UpdateError),
}

/// `work` on every part of `items`, one part per core the process may run
/// on (given the part and the index of its first item), the parts' results
/// concatenated in order.
fn on_all_cores<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&[T], usize) -> Vec<R> + Sync,
) -> Vec<R> {
    /// Below this, starting threads costs more than it saves.
    const PER_THREAD: usize = 256;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(items.len() / PER_THREAD)
        .max(1);
    if threads == 1 {
        return work(items, 0);
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let work = &work;
        let workers: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| scope.spawn(move || work(part, n * chunk)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker thread does not panic"))
            .collect()
    })
}

#[allow(clippy::large_enum_variant)]
enum Step {
    Applied(ChangeSummary, Authorization),
    /// Not yet: these are missing, and whether they are what the walk of a
    /// rotation's vouched past lacks (else dependencies).
    Missing(Vec<ChangeHash>, bool),
}

enum Vouch {
    Yes,
    No,
    Missing(Vec<ChangeHash>),
}
