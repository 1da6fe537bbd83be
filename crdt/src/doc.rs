//! [`PolicyDoc`]: the automerge document, the typed builders that write it,
//! and the incremental upkeep of its [`PolicyView`].
//!
//! # Applying changes
//! [`PolicyDoc::summarize`] reads a change's operations, resolves the path of
//! each one and checks it against the schema, *before* anything is applied, so
//! that the caller can authorize the change on the paths it touches.
//! [`PolicyDoc::apply`] then applies it. Applying is idempotent; a change
//! whose dependencies are missing is refused with
//! [`CrdtError::MissingDeps`], and the caller holds it until they arrive.
//!
//! # The view is kept incrementally
//! A change's summary names the bundles and subjects it touches. Only those
//! are read back from the document. A bundle whose content changed is parsed
//! again, and its policies replace its old ones in the scope index
//! ([`crate::index`]); the merged entities are rebuilt only when a bundle's
//! entities changed, and the merged policy set only when someone asks for it.
//!
//! # Revoke wins
//! A revocation is a put at `revocations/BUCKET/SUBJECT` (the bucket is fixed by
//! the subject, see [`crate::schema::revocation_bucket`]); a reinstatement is a delete
//! of that key. An automerge delete removes only the values its author had
//! seen, so a concurrent reinstatement never lifts a revocation, and
//! concurrent revocations of one subject each stay until a reinstatement that
//! followed all of them. No other operation may write under `revocations/`.
//!
//! # The last good version of a bundle
//! If a bundle's merged content fails to parse or validate (two valid
//! concurrent edits can merge into an invalid one), the bundle's version in
//! force is the state of the bundle as of one of the changes that touched it:
//! the one with the greatest `(max_op, hash)` whose state is valid. `max_op` is
//! a Lamport clock, so this prefers later versions, and because the rule reads
//! only the set of changes it gives the same answer on every replica, however
//! the changes arrived. If no version is valid, the bundle contributes nothing
//! and its error is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Automerge, AutomergeError, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc,
    ScalarValue, Value, legacy,
};

use cedar_policy::Entities;
use sha2::{Digest, Sha256};

use crate::bundle::{BundleContent, one_line};
use crate::index::IndexedPolicy;
use crate::schema::{
    self, BUNDLE_FIELDS, BUNDLES, ChangeSummary, POLICIES, Path, QUARANTINES, REVOCATIONS,
    SchemaViolation, Slot,
};
use crate::view::{
    BundleState, Conflict, ConflictSide, OpRef, PolicyView, Revocation, RevocationRecord,
    canonical_subject, digest_of, uid_of_canonical,
};

/// Errors of the replicated state.
#[derive(Debug, thiserror::Error)]
pub enum CrdtError {
    /// The bytes are not an automerge change.
    #[error("malformed change: {0}")]
    Malformed(String),
    /// The change's dependencies are not all here yet.
    #[error("change depends on {} change(s) this replica does not have yet", .0.len())]
    MissingDeps(Vec<ChangeHash>),
    /// The change writes outside the schema.
    #[error(transparent)]
    Schema(#[from] SchemaViolation),
    /// automerge refused the change.
    #[error("the document refused the change: {0}")]
    Automerge(String),
    /// A saved document does not load.
    #[error("saved document does not load: {0}")]
    Load(String),
    /// The saved document does not start from this crate's genesis change.
    #[error("saved document is not a weft state (it lacks the genesis change)")]
    NotWeftState,
    /// The change's actor already has a different change with this number:
    /// its author signed two different changes in one lane. The first one a
    /// replica holds stays; the other is refused wherever the first is held.
    #[error(
        "equivocation: actor {actor} already has a different change number {seq} here (its latest is number {latest}, {latest_hash}); an author must never sign two changes with one actor and number"
    )]
    Equivocation {
        /// The actor, in hex.
        actor: String,
        /// The refused change's number in its actor's sequence.
        seq: u64,
        /// The actor's latest change number here.
        latest: u64,
        /// The hash of that change.
        latest_hash: ChangeHash,
    },
}

impl From<AutomergeError> for CrdtError {
    fn from(e: AutomergeError) -> Self {
        CrdtError::Automerge(one_line(&e))
    }
}

/// Why a change in a checked batch was not applied.
#[derive(Debug)]
pub enum Refusal<E> {
    /// The state refused it (schema, missing dependencies, automerge).
    State(CrdtError),
    /// The caller's check refused it.
    Check(E),
}

/// What applying a change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The change was new and is now part of the state.
    New(ChangeSummary),
    /// The change was already part of the state; nothing changed.
    Duplicate,
}

/// Above this many changed subjects (and a quarter of those revoked), the
/// view reads the revocations map in one pass instead of one lookup per
/// subject (a load, a large first sync).
const BULK_REVOCATIONS: usize = 64;

/// The latest time a change may carry (its time is in seconds since the
/// Unix epoch by convention; no change is dated before it). automerge 0.12
/// stores the times of a document's changes as differences and panics when
/// one overflows, so a change dated outside `0..=MAX_CHANGE_TIME` is never
/// written and never applied.
pub const MAX_CHANGE_TIME: i64 = 1 << 53;

/// The refusal of a change dated outside `0..=MAX_CHANGE_TIME`, if it is.
fn check_time(time: i64) -> Result<(), CrdtError> {
    if (0..=MAX_CHANGE_TIME).contains(&time) {
        return Ok(());
    }
    Err(CrdtError::Malformed(format!(
        "the change is dated {time}, outside 0 to {MAX_CHANGE_TIME}"
    )))
}

/// What a batch being applied has admitted so far ([`PolicyDoc::apply_checked`]).
#[derive(Default)]
struct Admitted {
    /// Each actor's latest admitted change: its number and hash.
    lanes: FastMap<ActorId, (u64, ChangeHash)>,
    /// Each admitted change's largest operation counter.
    max_ops: FastMap<ChangeHash, u64>,
    /// The operations of the admitted changes, by the object and key
    /// they write.
    ops_at: OpsAt,
}

/// Operations by the object (`None` for the root) and the key they write.
type OpsAt = FastMap<(Option<ObjKey>, String), Vec<ObjKey>>;

/// Whether [`PolicyDoc::resolve_ops_into`] checks each operation's
/// predecessors.
#[derive(Clone, Copy)]
enum Preds<'a> {
    /// The change is already in the document: they were checked then.
    Applied,
    /// Check them against the document and what was admitted earlier in
    /// the batch.
    Check(Option<&'a Admitted>),
}

/// The refusal of a change that names an actor with no change here.
fn unknown_actor(actor: &ActorId) -> CrdtError {
    CrdtError::Malformed(format!(
        "the change names actor {}, which has no change here",
        actor.to_hex_string()
    ))
}

/// Key of an object in the path table: the op id that created it.
type ObjKey = (u64, ActorId);

/// Every key here (change hashes, actors, op ids) is written only by changes
/// that passed their signers' check, so a fixed fast hash is enough.
type FastMap<K, V> = HashMap<K, V, crate::FastHash>;

/// A revocation bucket key that one operation of an applied change wrote:
/// the key, the string it put (`None` for a delete or another value), and
/// the operation.
type BucketWrite = (String, Option<String>, OpRef);

/// The replicated policy document and its materialized view.
#[derive(Clone)]
pub struct PolicyDoc {
    doc: Automerge,
    /// Path of every map object created by an applied change.
    objects: FastMap<ObjKey, Path>,
    /// Every applied change by hash, with its largest operation counter
    /// (`max_op`): a change's first counter must follow the largest of its
    /// dependencies' (automerge's own lookup builds metadata).
    applied: FastMap<ChangeHash, u64>,
    /// Each actor's latest change here: its number and hash.
    lanes: FastMap<ActorId, (u64, ChangeHash)>,
    /// Whether `objects` and `bundle_history` cover every change (false after
    /// a load, until `complete_tables` runs).
    complete: bool,
    /// For each bundle, the changes that touched it, by `(max_op, hash)`.
    bundle_history: BTreeMap<String, BTreeSet<(u64, ChangeHash)>>,
    bundles_obj: ObjId,
    /// The revocation buckets, by number.
    revocation_buckets: Vec<ObjId>,
    /// Every other spelling of a subject that a change has written a key
    /// under, by canonical subject (the builders write canonical keys only,
    /// so this is almost always empty). A subject's revocation is read from
    /// all of its spellings.
    aliases: FastMap<String, BTreeSet<String>>,
    quarantines_obj: ObjId,
    view: PolicyView,
    dirty: Dirty,
}

#[derive(Clone, Default)]
struct Dirty {
    bundles: BTreeSet<String>,
    revocations: BTreeSet<String>,
    /// What the changes applied since the last refresh wrote under each
    /// revocation key, when exactly one operation wrote it: the string put
    /// and the operation (`None` when it was written more than once, or
    /// deleted). See [`PolicyDoc::fresh_revocations`].
    written: FastMap<String, Option<(String, OpRef)>>,
    quarantines: BTreeSet<String>,
    heads: bool,
}

impl Default for PolicyDoc {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyDoc {
    /// A document holding only the genesis change.
    pub fn new() -> Self {
        // Built once per process: genesis holds every revocation bucket.
        static EMPTY: std::sync::OnceLock<PolicyDoc> = std::sync::OnceLock::new();
        EMPTY.get_or_init(Self::from_genesis).clone()
    }

    fn from_genesis() -> Self {
        let mut doc = Automerge::new().with_actor(ActorId::from(schema::GENESIS_ACTOR));
        let genesis = schema::genesis();
        let mut objects = FastMap::default();
        objects.extend(schema::genesis_objects());
        doc.apply_changes([genesis])
            .expect("the genesis change applies to an empty document");
        let mut d = Self::from_parts(doc, objects);
        d.dirty.heads = true;
        d.refresh_view();
        d
    }

    fn from_parts(doc: Automerge, objects: FastMap<ObjKey, Path>) -> Self {
        let obj = |key: &str| match doc.get(ROOT, key) {
            Ok(Some((Value::Object(ObjType::Map), id))) => id,
            _ => unreachable!("genesis creates the top-level maps"),
        };
        let mut applied = FastMap::default();
        let mut lanes: FastMap<ActorId, (u64, ChangeHash)> = FastMap::default();
        for m in doc.get_changes_meta(&[]) {
            applied.insert(m.hash, m.max_op);
            let lane = lanes.entry(m.actor.into_owned()).or_insert((0, m.hash));
            if m.seq > lane.0 {
                *lane = (m.seq, m.hash);
            }
        }
        PolicyDoc {
            applied,
            lanes,
            complete: true,
            bundles_obj: obj(BUNDLES),
            revocation_buckets: {
                let revocations = obj(REVOCATIONS);
                (0..schema::REVOCATION_BUCKETS as u16)
                    .map(|n| match doc.get(&revocations, schema::bucket_name(n)) {
                        Ok(Some((Value::Object(ObjType::Map), id))) => id,
                        _ => unreachable!("genesis creates every revocation bucket"),
                    })
                    .collect()
            },
            quarantines_obj: obj(QUARANTINES),
            aliases: FastMap::default(),
            doc,
            objects,
            bundle_history: BTreeMap::new(),
            view: PolicyView::default(),
            dirty: Dirty::default(),
        }
    }

    /// Loads a saved document (from [`PolicyDoc::save`]) and rebuilds the view
    /// from scratch. The caller is responsible for having verified every change.
    pub fn load(bytes: &[u8]) -> Result<Self, CrdtError> {
        let doc = Automerge::load(bytes).map_err(|e| CrdtError::Load(one_line(&e)))?;
        if doc
            .get_change_meta_by_hash(&schema::genesis_hash())
            .is_none_or(|g| !g.deps.is_empty())
        {
            return Err(CrdtError::NotWeftState);
        }
        let mut objects = FastMap::default();
        objects.extend(schema::genesis_objects());
        let mut fresh = Self::from_parts(doc, objects);
        // The path table is rebuilt from the objects visible in the document,
        // which is cheap; objects that are no longer visible (a deleted
        // bundle, say) are learned from the full change history the first time
        // a change refers to one (see `complete_tables`).
        fresh.complete = false;
        fresh.walk_objects();
        let keys = |obj: &ObjId| -> BTreeSet<String> { fresh.doc.keys(obj).collect() };
        fresh.dirty.bundles = keys(&fresh.bundles_obj);
        fresh.dirty.revocations = fresh
            .revocation_buckets
            .iter()
            .flat_map(|b| fresh.doc.keys(b))
            .collect();
        for key in &fresh.dirty.revocations {
            note_alias(&mut fresh.aliases, key);
        }
        fresh.dirty.quarantines = keys(&fresh.quarantines_obj);
        fresh.dirty.heads = true;
        fresh.refresh_view();
        Ok(fresh)
    }

    /// Registers the path of every map object visible in the document.
    fn walk_objects(&mut self) {
        let names: Vec<String> = self.doc.keys(&self.bundles_obj).collect();
        for name in names {
            let bundle_path = Path(vec![BUNDLES.into(), name.clone()]);
            let sides = self
                .doc
                .get_all(&self.bundles_obj, name.as_str())
                .unwrap_or_default();
            for (value, id) in sides {
                let (Value::Object(ObjType::Map), ObjId::Id(counter, actor, _)) = (value, &id)
                else {
                    continue;
                };
                self.objects
                    .insert((*counter, actor.clone()), bundle_path.clone());
                for (v, pid) in self.doc.get_all(&id, POLICIES).unwrap_or_default() {
                    if let (Value::Object(ObjType::Map), ObjId::Id(c, a, _)) = (v, &pid) {
                        self.objects
                            .insert((*c, a.clone()), bundle_path.child(POLICIES));
                    }
                }
            }
        }
    }

    /// Rebuilds the path table and the bundle history from every change, once.
    /// Needed after [`PolicyDoc::load`] only when a change writes into an object
    /// that is no longer visible, or a bundle needs its last good version.
    pub fn complete_tables(&mut self) {
        if self.complete {
            return;
        }
        let changes = self.doc.get_changes(&[]);
        for change in changes.iter().skip(1) {
            let mut created = Vec::new();
            if let Ok(summary) = self.resolve_ops(change, Some(&mut created), Preds::Applied) {
                self.objects.extend(created);
                for b in summary.bundles() {
                    self.bundle_history
                        .entry(b.to_owned())
                        .or_default()
                        .insert((summary.max_op, summary.hash));
                }
            }
        }
        self.complete = true;
    }

    /// Rebuilds a document from scratch out of the same changes, with a view
    /// computed without any incremental step. Used to check the incremental view.
    pub fn rebuild(&self) -> Result<Self, CrdtError> {
        Self::load(&self.save())
    }

    /// The document, saved in automerge's compressed format.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// The underlying automerge document, read-only.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// The current heads.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Whether the change with this hash is part of the state.
    pub fn contains(&self, hash: &ChangeHash) -> bool {
        self.applied.contains_key(hash)
    }

    /// The change with this hash, if it is part of the state.
    pub fn change(&self, hash: &ChangeHash) -> Option<Change> {
        self.doc.get_change_by_hash(hash)
    }

    /// Every change after the genesis change, in causal order.
    pub fn changes(&self) -> Vec<Change> {
        self.doc.get_changes(&[]).into_iter().skip(1).collect()
    }

    /// The changes that are not in the causal past of `have`, in causal order.
    pub fn changes_since(&self, have: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(have)
    }

    /// Hashes of the changes that are not in the causal past of `have`, in
    /// causal order. Much cheaper than [`PolicyDoc::changes_since`].
    pub fn hashes_since(&self, have: &[ChangeHash]) -> Vec<ChangeHash> {
        self.doc
            .get_changes_meta(have)
            .iter()
            .map(|m| m.hash)
            .collect()
    }

    /// How many changes the state holds (the genesis change included).
    pub fn change_count(&self) -> usize {
        self.applied.len()
    }

    /// The current view. Cloning it is cheap.
    pub fn view(&self) -> &PolicyView {
        &self.view
    }

    /// Reads a change's operations and computes the paths it touches, checking
    /// each against the schema. Applies nothing.
    pub fn summarize(&self, change: &Change) -> Result<ChangeSummary, CrdtError> {
        self.summarize_inner(change, None)
    }

    /// What a change already in this document touched, as
    /// [`PolicyDoc::summarize`] reported it before it was applied: for
    /// checking a saved document's changes against their signers again.
    /// A loaded document knows only the objects it still shows; a change that
    /// wrote into one it no longer shows (a deleted bundle, say) fails here
    /// until [`PolicyDoc::complete_tables`] has run.
    pub fn summarize_applied(&self, change: &Change) -> Result<ChangeSummary, CrdtError> {
        if !self.contains(&change.hash()) {
            return Err(CrdtError::Malformed(format!(
                "change {} is not in this document",
                change.hash()
            )));
        }
        self.resolve_ops(change, None, Preds::Applied)
    }

    /// Whether every object's path is known (see [`PolicyDoc::complete_tables`]).
    pub fn tables_complete(&self) -> bool {
        self.complete
    }

    fn summarize_inner(
        &self,
        change: &Change,
        created: Option<&mut Vec<(ObjKey, Path)>>,
    ) -> Result<ChangeSummary, CrdtError> {
        let missing: Vec<ChangeHash> = change
            .deps()
            .iter()
            .filter(|d| !self.contains(d))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(CrdtError::MissingDeps(missing));
        }
        self.check_lane(change, None)?;
        self.resolve_ops(change, created, Preds::Check(None))
    }

    /// Checks a change's place, once its dependencies are known to be here
    /// (`batch` holds what was admitted earlier in the same batch):
    ///
    /// 1. **Its number in its actor's sequence.** The next number is the
    ///    only one that fits: an honest author's previous change in the lane
    ///    is always in the causal past of its dependencies, so a lower number
    ///    is a second change signed in the same place (equivocation) and a
    ///    higher one cannot come from an honest author.
    /// 2. **Its operation counters.** Its first counter (`start_op`) must be
    ///    one above the largest counter among its dependencies, as automerge
    ///    numbers a change made on top of them. A change whose counters go
    ///    backwards applies, but the saved document then no longer loads
    ///    (automerge derives each change's operation count from the counters
    ///    of its dependencies); one that skips counters loads as a different
    ///    change. Either would poison every later save.
    /// 3. **Its time**, within `0..=MAX_CHANGE_TIME`.
    /// 4. **The actors it names.** Besides its own, a change names the
    ///    actors whose operations it refers to, and each of them has a
    ///    change in the causal past of an honest change: each must have a
    ///    change here (or earlier in the batch). automerge assumes so, and
    ///    panics while applying a change that names an actor it has never
    ///    seen.
    fn check_lane(&self, change: &Change, batch: Option<&Admitted>) -> Result<(), CrdtError> {
        if self.contains(&change.hash()) {
            // Already here: summarizing it is not admitting it again.
            return Ok(());
        }
        let actor = change.actor_id();
        let (latest, latest_hash) = batch
            .and_then(|b| b.lanes.get(actor))
            .or_else(|| self.lanes.get(actor))
            .copied()
            .unwrap_or((0, ChangeHash([0; 32])));
        let seq = change.seq();
        if seq <= latest {
            return Err(CrdtError::Equivocation {
                actor: actor.to_hex_string(),
                seq,
                latest,
                latest_hash,
            });
        }
        if seq != latest + 1 {
            return Err(CrdtError::Malformed(format!(
                "the change is number {seq} of actor {}, whose latest change here is number {latest}, though all its dependencies are here",
                actor.to_hex_string()
            )));
        }
        let deps_max = change
            .deps()
            .iter()
            .filter_map(|d| {
                self.applied
                    .get(d)
                    .or_else(|| batch.and_then(|b| b.max_ops.get(d)))
            })
            .copied()
            .max()
            .unwrap_or(0);
        let start = change.start_op().get();
        if start <= deps_max {
            return Err(CrdtError::Malformed(format!(
                "the change's operation counters go backwards: it starts at {start}, but its dependencies reach {deps_max}"
            )));
        }
        if start != deps_max + 1 {
            return Err(CrdtError::Malformed(format!(
                "the change's operation counters skip: it starts at {start}, but its dependencies end at {deps_max}"
            )));
        }
        check_time(change.timestamp())?;
        let known = |a: &ActorId| {
            self.lanes.contains_key(a) || batch.is_some_and(|b| b.lanes.contains_key(a))
        };
        if let Some(stranger) = change.other_actor_ids().iter().find(|a| !known(a)) {
            return Err(unknown_actor(stranger));
        }
        Ok(())
    }

    /// Whether operation `id` of the document writes key `at.1` of object
    /// `at.0`: visible there now, or right after its own change.
    fn is_op_at(&self, at: &(Option<ObjKey>, String), id: &ObjKey) -> bool {
        let object = match &at.0 {
            None => ROOT,
            Some((counter, actor)) => ObjId::Id(*counter, actor.clone(), 0),
        };
        let op = ObjId::Id(id.0, id.1.clone(), 0);
        let named = |found: Result<Vec<(automerge::Value<'_>, ObjId)>, AutomergeError>| {
            found.is_ok_and(|v| v.iter().any(|(_, o)| *o == op))
        };
        if named(self.doc.get_all(&object, at.1.as_str())) {
            return true;
        }
        let Some(change) = self.doc.hash_for_opid(&op) else {
            return false;
        };
        named(self.doc.get_all_at(&object, at.1.as_str(), &[change]))
    }

    /// An actor's latest change here: its number in the actor's sequence and
    /// its hash (`None` for an actor with no change here).
    pub fn lane(&self, actor: &ActorId) -> Option<(u64, ChangeHash)> {
        self.lanes.get(actor).copied()
    }

    /// Resolves the path of every operation against the path table (which
    /// must already know every object the change's dependencies created).
    fn resolve_ops(
        &self,
        change: &Change,
        created: Option<&mut Vec<(ObjKey, Path)>>,
        preds: Preds<'_>,
    ) -> Result<ChangeSummary, CrdtError> {
        self.resolve_ops_into(change, created, None, preds, None)
    }

    /// [`PolicyDoc::resolve_ops`], also listing in `written` what each
    /// operation writes into a revocation bucket and in `ops_at` each
    /// operation by the object and key it writes.
    ///
    /// With [`Preds::Check`], each operation's predecessors (the operations
    /// it overwrites or deletes) must be operations at the same object and
    /// key, each named once: earlier in the change, earlier in the batch, or
    /// in the document; and a deletion names at least one. automerge 0.12
    /// applies a change whose operation names a predecessor elsewhere, or
    /// deletes nothing, and the document can then no longer give its
    /// changes back (it panics, or rebuilds a different change), which
    /// would poison every later save and sync.
    fn resolve_ops_into(
        &self,
        change: &Change,
        mut created: Option<&mut Vec<(ObjKey, Path)>>,
        mut written: Option<&mut Vec<BucketWrite>>,
        preds: Preds<'_>,
        ops_at: Option<&mut OpsAt>,
    ) -> Result<ChangeSummary, CrdtError> {
        let expanded = Self::expand(change)?;
        let mut local: FastMap<ObjKey, Path> = FastMap::default();
        let mut local_ops: OpsAt = FastMap::default();
        let mut actor_hex: Option<String> = None;
        let mut paths = BTreeSet::new();
        let start = expanded.start_op.get();
        for (i, op) in expanded.operations.iter().enumerate() {
            let parent = match &op.obj {
                legacy::ObjectId::Root => Path(vec![]),
                legacy::ObjectId::Id(legacy::OpId(counter, actor)) => {
                    let key = (*counter, actor.clone());
                    match self.objects.get(&key).or_else(|| local.get(&key)) {
                        Some(p) => p.clone(),
                        None => {
                            return Err(SchemaViolation(format!(
                                "an operation writes into object {counter}@{actor}, which is not part of this state"
                            ))
                            .into());
                        }
                    }
                }
            };
            let key = match &op.key {
                legacy::Key::Map(k) if !op.insert => k.to_string(),
                _ => {
                    return Err(SchemaViolation(format!(
                        "sequence operations are not allowed (under {parent})"
                    ))
                    .into());
                }
            };
            let slot = schema::slot_at(&parent, &key)?;
            let object = match &op.obj {
                legacy::ObjectId::Root => None,
                legacy::ObjectId::Id(legacy::OpId(counter, actor)) => {
                    Some((*counter, actor.clone()))
                }
            };
            let at = (object, key.clone());
            if let Preds::Check(batch) = preds {
                if op.pred.is_empty() && matches!(op.action, legacy::OpType::Delete) {
                    return Err(CrdtError::Malformed(format!(
                        "operation {}@{} deletes {} but names no operation it replaces",
                        start + i as u64,
                        expanded.actor_id,
                        parent.child(&key)
                    )));
                }
                let mut named = BTreeSet::new();
                for p in op.pred.iter() {
                    let id = (p.0, p.1.clone());
                    let here = local_ops.get(&at).is_some_and(|v| v.contains(&id))
                        || batch
                            .and_then(|b| b.ops_at.get(&at))
                            .is_some_and(|v| v.contains(&id))
                        || self.is_op_at(&at, &id);
                    if !here || !named.insert(id) {
                        return Err(CrdtError::Malformed(format!(
                            "operation {}@{} names {}@{} as the operation it replaces, which is not an operation at {} (or is named twice)",
                            start + i as u64,
                            expanded.actor_id,
                            p.0,
                            p.1,
                            parent.child(&key)
                        )));
                    }
                }
            }
            local_ops
                .entry(at)
                .or_default()
                .push((start + i as u64, expanded.actor_id.clone()));
            let path = parent.child(&key);
            match (&op.action, slot) {
                (legacy::OpType::Make(ObjType::Map), Slot::Map) => {
                    let k = (start + i as u64, expanded.actor_id.clone());
                    if let Some(c) = created.as_deref_mut() {
                        c.push((k.clone(), path.clone()));
                    }
                    local.insert(k, path.clone());
                }
                (legacy::OpType::Put(ScalarValue::Str(_)), Slot::Str)
                | (legacy::OpType::Delete, _) => {
                    if let Some(w) = written.as_deref_mut()
                        && parent.0.first().map(String::as_str) == Some(REVOCATIONS)
                    {
                        let value = match &op.action {
                            legacy::OpType::Put(ScalarValue::Str(v)) => Some(v.to_string()),
                            _ => None,
                        };
                        let actor = actor_hex
                            .get_or_insert_with(|| hex::encode(expanded.actor_id.to_bytes()));
                        w.push((
                            key.clone(),
                            value,
                            OpRef {
                                actor: actor.clone(),
                                counter: start + i as u64,
                            },
                        ));
                    }
                }
                (action, slot) => {
                    return Err(SchemaViolation(format!(
                        "operation {action:?} is not allowed at {path} (expected {})",
                        match slot {
                            Slot::Map => "a map",
                            Slot::Str => "a string",
                        }
                    ))
                    .into());
                }
            }
            paths.insert(path);
        }
        if paths.is_empty() {
            return Err(SchemaViolation("the change has no operations".into()).into());
        }
        if let Preds::Check(_) = preds {
            Self::check_canonical(change, expanded)?;
        }
        if let Some(out) = ops_at {
            *out = local_ops;
        }
        Ok(ChangeSummary {
            hash: change.hash(),
            actor: change.actor_id().clone(),
            deps: change.deps().to_vec(),
            max_op: change.max_op(),
            time: change.timestamp(),
            paths,
        })
    }

    /// Checks that `change` is encoded the one way automerge encodes what it
    /// holds (`expanded` is its decoding). automerge's columns allow other
    /// encodings of the same operations (a run longer than the operations,
    /// say), which it parses and applies; but a document gives its changes
    /// back re-encoded, under another hash, so such a change would be lost
    /// from every save and sync and split the document's history from its
    /// peers'.
    fn check_canonical(
        change: &Change,
        expanded: automerge::ExpandedChange,
    ) -> Result<(), CrdtError> {
        let again = std::panic::catch_unwind(move || Change::from(expanded)).map_err(|_| {
            CrdtError::Malformed("automerge could not encode the change's operations again".into())
        })?;
        if again.raw_bytes() != change.raw_bytes() {
            return Err(CrdtError::Malformed(
                "the change is not encoded the one way automerge encodes its operations".into(),
            ));
        }
        Ok(())
    }

    /// Parses change bytes. The hash is always recomputed from the bytes, and
    /// the chunk's checksum (the one header field the hash does not cover)
    /// must match it, so one change has exactly one valid byte string.
    pub fn parse_change(bytes: &[u8]) -> Result<Change, CrdtError> {
        // automerge 0.12 panics on some malformed op columns (an object id
        // whose counter overflows u32, found by fuzzing) instead of
        // returning an error. Such bytes come from peers, so the panic is
        // caught and the change refused like any other malformed one.
        let parsed = std::panic::catch_unwind(|| Change::try_from(bytes)).map_err(|_| {
            CrdtError::Malformed(
                "automerge could not parse the change (malformed op columns)".into(),
            )
        })?;
        let change = parsed.map_err(|e| CrdtError::Malformed(one_line(&e)))?;
        if bytes.get(4..8) != Some(&change.hash().0[..4]) {
            return Err(CrdtError::Malformed(
                "the change's checksum does not match its contents".into(),
            ));
        }
        Ok(change)
    }

    /// Decodes a parsed change's operations, naming every object, key and
    /// predecessor by actor id.
    ///
    /// automerge 0.12 parses some changes that it then cannot decode, and
    /// panics there instead of refusing them: an operation that names an
    /// actor past the change's actor table, for one. Such bytes come from
    /// outside (signed, but the signer may be hostile or broken), so the
    /// panic is contained here and the change refused as malformed; nothing
    /// is shared with the code that panicked, so nothing is left half done.
    pub fn expand(change: &Change) -> Result<automerge::ExpandedChange, CrdtError> {
        std::panic::catch_unwind(|| change.decode()).map_err(|_| {
            CrdtError::Malformed(
                "automerge could not decode the change's operations (an actor, object or key it names is not in the change)".into(),
            )
        })
    }

    /// Applies one change and updates the view.
    pub fn apply(&mut self, change: Change) -> Result<Applied, CrdtError> {
        self.apply_batch([change])
            .pop()
            .expect("one result per change")
    }

    /// Applies changes in order (each one's dependencies must be present or
    /// earlier in the batch) and updates the view once at the end. Each change
    /// gets its own result; a refused change does not stop the others.
    pub fn apply_batch(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
    ) -> Vec<Result<Applied, CrdtError>> {
        self.apply_checked(changes, |_, _| Ok::<(), CrdtError>(()))
            .into_iter()
            .map(|r| {
                r.map_err(|e| match e {
                    Refusal::State(e) | Refusal::Check(e) => e,
                })
            })
            .collect()
    }

    /// Applies a batch of changes in one automerge step, asking `check` about
    /// each change's summary before it is admitted (this is where signatures
    /// and roles are enforced). A change is refused, with the others going on,
    /// when it is a schema violation, when its dependencies are neither in the
    /// state nor admitted earlier in the batch, or when `check` says no.
    ///
    /// Applying a batch costs about as much as applying one change (automerge
    /// pays per call, in proportion to the document), so callers should
    /// batch whatever arrives together.
    pub fn apply_checked<E>(
        &mut self,
        changes: impl IntoIterator<Item = Change>,
        mut check: impl FnMut(usize, &ChangeSummary) -> Result<(), E>,
    ) -> Vec<Result<Applied, Refusal<E>>> {
        let mut results: Vec<Result<Applied, Refusal<E>>> = Vec::new();
        let mut admitted: Vec<(usize, Change, Vec<ObjKey>, Vec<BucketWrite>)> = Vec::new();
        let mut batch = Admitted::default();
        for (i, change) in changes.into_iter().enumerate() {
            let hash = change.hash();
            if self.contains(&hash) || batch.max_ops.contains_key(&hash) {
                results.push(Ok(Applied::Duplicate));
                continue;
            }
            let missing: Vec<ChangeHash> = change
                .deps()
                .iter()
                .filter(|d| !self.contains(d) && !batch.max_ops.contains_key(d))
                .copied()
                .collect();
            if !missing.is_empty() {
                results.push(Err(Refusal::State(CrdtError::MissingDeps(missing))));
                continue;
            }
            if let Err(e) = self.check_lane(&change, Some(&batch)) {
                results.push(Err(Refusal::State(e)));
                continue;
            }
            let mut created = Vec::new();
            let mut written = Vec::new();
            let mut ops_at = OpsAt::default();
            let mut resolved = self.resolve_ops_into(
                &change,
                Some(&mut created),
                Some(&mut written),
                Preds::Check(Some(&batch)),
                Some(&mut ops_at),
            );
            if resolved.is_err() && !self.complete {
                // The change may write into an object the loaded document no
                // longer shows; learn every object's path and try again.
                self.complete_tables();
                created.clear();
                written.clear();
                resolved = self.resolve_ops_into(
                    &change,
                    Some(&mut created),
                    Some(&mut written),
                    Preds::Check(Some(&batch)),
                    Some(&mut ops_at),
                );
            }
            let summary = match resolved {
                Ok(s) => s,
                Err(e) => {
                    results.push(Err(Refusal::State(e)));
                    continue;
                }
            };
            if let Err(e) = check(i, &summary) {
                results.push(Err(Refusal::Check(e)));
                continue;
            }
            let keys = created.iter().map(|(k, _)| k.clone()).collect();
            self.objects.extend(created);
            batch.max_ops.insert(hash, change.max_op());
            for (at, ids) in ops_at {
                batch.ops_at.entry(at).or_default().extend(ids);
            }
            batch
                .lanes
                .insert(change.actor_id().clone(), (change.seq(), hash));
            admitted.push((results.len(), change, keys, written));
            results.push(Ok(Applied::New(summary)));
        }
        if admitted.is_empty() {
            return results;
        }
        let batch: Vec<Change> = admitted.iter().map(|(_, c, _, _)| c.clone()).collect();
        if self.doc.apply_changes(batch).is_err() {
            // automerge refused the batch as a whole (for instance a duplicate
            // sequence number); apply one by one to keep the good ones.
            // A change may name the actor of one refused here: that actor
            // is then unknown to automerge (see `check_lane`).
            let mut known: BTreeSet<ActorId> = BTreeSet::new();
            for (idx, change, keys, _) in &admitted {
                let stranger = change
                    .other_actor_ids()
                    .iter()
                    .find(|a| !self.lanes.contains_key(*a) && !known.contains(*a));
                let applied = match stranger {
                    Some(a) => Err(unknown_actor(a)),
                    None => self.doc.apply_changes([change.clone()]).map_err(Into::into),
                };
                match applied {
                    Ok(()) => {
                        known.insert(change.actor_id().clone());
                    }
                    Err(e) => {
                        for k in keys {
                            self.objects.remove(k);
                        }
                        results[*idx] = Err(Refusal::State(e));
                    }
                }
            }
        }
        for (idx, change, _, written) in admitted {
            if let Ok(Applied::New(summary)) = &results[idx] {
                self.applied.insert(change.hash(), change.max_op());
                self.lanes
                    .insert(change.actor_id().clone(), (change.seq(), change.hash()));
                self.note_summary(summary);
                for (key, value, op) in written {
                    self.dirty
                        .written
                        .entry(key)
                        // Written twice since the last refresh: read back.
                        .and_modify(|once| *once = None)
                        .or_insert_with(|| value.map(|v| (v, op)));
                }
            }
        }
        self.refresh_view();
        results
    }

    fn note_summary(&mut self, summary: &ChangeSummary) {
        for b in summary.bundles() {
            self.bundle_history
                .entry(b.to_owned())
                .or_default()
                .insert((summary.max_op, summary.hash));
            self.dirty.bundles.insert(b.to_owned());
        }
        for key in summary.revocations() {
            note_alias(&mut self.aliases, key);
            self.dirty.revocations.insert(key.to_owned());
        }
        self.dirty
            .quarantines
            .extend(summary.quarantines().into_iter().map(str::to_owned));
        self.dirty.heads = true;
    }

    /// Brings the view up to date with everything applied since the last refresh.
    pub fn refresh_view(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        if !dirty.heads {
            return;
        }
        let written = std::mem::take(&mut dirty.written);
        if !written.is_empty() {
            self.fresh_revocations(&mut dirty.revocations, written);
        }
        // One pass over every bucket pays off only when a good part of the
        // revocations changed (a load); otherwise one lookup per subject.
        let changed = dirty.revocations.len();
        let bulk = if changed > BULK_REVOCATIONS && changed * 4 > self.view.revoked.len() {
            self.read_revocations_bulk()
        } else {
            Vec::new()
        };
        // Both sorted by subject, walked together; in the subjects' order,
        // which the view's map takes much faster than scattered keys.
        let mut bulk = bulk.into_iter().peekable();
        for subject in &dirty.revocations {
            while bulk.next_if(|r| r.subject < *subject).is_some() {}
            match bulk.next_if(|r| r.subject == *subject) {
                Some(r) => self.put_revocation(r),
                None => self.refresh_revocation(subject),
            }
        }
        for subject in &dirty.quarantines {
            let sides: Vec<String> = self
                .doc
                .get_all(&self.quarantines_obj, subject.as_str())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(v, _)| match v {
                    Value::Scalar(v) => match v.as_ref() {
                        ScalarValue::Str(s) => Some(s.to_string()),
                        _ => None,
                    },
                    Value::Object(_) => None,
                })
                .collect();
            let canonical = canonical_subject(subject);
            match crate::quarantine::merge_sides(sides) {
                Some((shown, others)) => {
                    self.view.quarantines.insert(canonical.clone(), shown);
                    if others.is_empty() {
                        self.view.quarantine_others.remove(&canonical);
                    } else {
                        self.view
                            .quarantine_others
                            .insert(canonical, Arc::new(others));
                    }
                }
                None => {
                    self.view.quarantines.remove(&canonical);
                    self.view.quarantine_others.remove(&canonical);
                }
            }
        }
        if !dirty.bundles.is_empty() {
            // Routes and issuers are rebuilt on first use after any bundle
            // changed (a routes file may change without a policy).
            self.view.gateway = Arc::new(std::sync::OnceLock::new());
            let mut entities_changed = false;
            let mut policies_changed = false;
            for name in &dirty.bundles {
                let old = self.view.bundles.get(name.as_str()).cloned();
                self.refresh_bundle(name, old.as_deref());
                let new = self.view.bundles.get(name.as_str()).cloned();
                let old_indexed = old.as_ref().map(|b| b.indexed.clone());
                let new_indexed = new.as_ref().map(|b| b.indexed.clone());
                let same_policies = match (&old_indexed, &new_indexed) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same_policies {
                    policies_changed = true;
                    if let Some(old) = &old_indexed {
                        self.view.index.remove_all(old.iter());
                    }
                    if let Some(new) = &new_indexed {
                        self.view.index.insert_all(new.iter());
                    }
                }
                // A bundle's entities come from its entities file and, for
                // actions, from its schema.
                fn entities_of(
                    b: &Option<Arc<BundleState>>,
                ) -> Option<(Option<&str>, Option<&str>)> {
                    let c = b.as_ref()?.effective_content.as_ref()?;
                    Some((c.entities.as_deref(), c.schema.as_deref()))
                }
                if entities_of(&old) != entities_of(&new) {
                    entities_changed = true;
                }
            }
            if policies_changed {
                self.view.policies = Arc::new(std::sync::OnceLock::new());
            }
            if entities_changed {
                self.reassemble_entities();
            }
        }
        let heads = self.doc.get_heads();
        self.view.digest = digest_of(&heads);
        self.view.heads = Arc::new(heads);
    }

    /// Puts in the view, without reading the document back, each changed
    /// subject whose record is known from the one operation that wrote it,
    /// and takes it out of `dirty`. That is the case when the key is the
    /// subject's canonical form, the subject has no other spelling in the
    /// document, no revocation of it was in the view (so its key held no
    /// value), and exactly one operation since the last refresh wrote the
    /// key, a put: the put is then the subject's only value, which is what
    /// [`PolicyDoc::refresh_revocation`] would read. Every other subject is
    /// left in `dirty` to be read back.
    fn fresh_revocations(
        &mut self,
        dirty: &mut BTreeSet<String>,
        written: FastMap<String, Option<(String, OpRef)>>,
    ) {
        for (key, once) in written {
            let Some((value, op)) = once else { continue };
            if self.aliases.contains_key(&key)
                || self.view.revoked.contains_key(&key)
                || canonical_subject(&key) != key
                || !dirty.remove(&key)
            {
                continue;
            }
            self.put_revocation(Revocation {
                reason: reason_of_str(&value),
                subject: key,
                actors: vec![op.actor.clone()],
                writes: vec![op],
            });
        }
    }

    /// Reads, in one pass over the revocations map, the record of every
    /// subject that has exactly one value under its canonical key (what
    /// [`PolicyDoc::refresh_revocation`] would find for it, without one
    /// lookup per subject), sorted by subject. Conflicted and non-canonical
    /// keys, and subjects with other spellings, are left out, for the
    /// per-subject path.
    fn read_revocations_bulk(&self) -> Vec<Revocation> {
        let mut out = Vec::new();
        for item in self
            .revocation_buckets
            .iter()
            .flat_map(|b| self.doc.map_range(b, ..))
        {
            if item.conflict {
                continue;
            }
            let canonical = canonical_subject(&item.key);
            if canonical != item.key || self.aliases.contains_key(&canonical) {
                continue;
            }
            let reason = reason_of(&item.value.clone().into_value());
            let writes: Vec<OpRef> = OpRef::of(&item.id()).into_iter().collect();
            out.push(Revocation {
                subject: canonical,
                reason,
                actors: OpRef::actors(&writes),
                writes,
            });
        }
        out.sort_unstable_by(|a, b| a.subject.cmp(&b.subject));
        out
    }

    /// The bucket object that holds `subject`'s revocation.
    fn bucket_of(&self, subject: &str) -> &ObjId {
        let name = schema::revocation_bucket(subject);
        let n = schema::bucket_number(&name).expect("revocation_bucket names a bucket");
        &self.revocation_buckets[usize::from(n)]
    }

    fn put_revocation(&mut self, r: Revocation) {
        if let Some(uid) = uid_of_canonical(&r.subject) {
            self.view.revoked_uids.insert(uid);
        }
        self.view.revoked.insert(r.subject.clone(), r);
    }

    fn refresh_revocation(&mut self, subject: &str) {
        let canonical = canonical_subject(subject);
        // Several raw keys may canonicalize to the same subject; gather them all.
        let mut reasons: Vec<String> = Vec::new();
        let mut writes: Vec<OpRef> = Vec::new();
        let mut keys: BTreeSet<&str> = [canonical.as_str(), subject].into_iter().collect();
        if let Some(aliases) = self.aliases.get(&canonical) {
            keys.extend(aliases.iter().map(String::as_str));
        }
        for raw in keys {
            if let Ok(values) = self.doc.get_all(self.bucket_of(raw), raw) {
                for (value, id) in values {
                    reasons.push(reason_of(&value));
                    writes.extend(OpRef::of(&id));
                }
            }
        }
        let uid = uid_of_canonical(&canonical);
        if reasons.is_empty() {
            self.view.revoked.remove(&canonical);
            if let Some(uid) = uid {
                self.view.revoked_uids.remove(&uid);
            }
        } else {
            if let Some(uid) = uid {
                self.view.revoked_uids.insert(uid);
            }
            let reason = reasons.pop().unwrap_or_default();
            writes.sort();
            writes.dedup();
            self.view.revoked.insert(
                canonical.clone(),
                Revocation {
                    subject: canonical,
                    reason,
                    actors: OpRef::actors(&writes),
                    writes,
                },
            );
        }
    }

    fn refresh_bundle(&mut self, name: &str, old: Option<&BundleState>) {
        let Some((merged, conflicts, writes)) =
            read_bundle(&self.doc, &self.bundles_obj, name, None)
        else {
            self.view.bundles.remove(name);
            return;
        };
        if merged.parse(name).is_err() {
            // The fallback below needs the bundle's full history.
            self.complete_tables();
        }
        let history = self.bundle_history.get(name);
        let mut state = BundleState {
            name: name.to_owned(),
            merged: merged.clone(),
            effective: None,
            effective_content: None,
            fallback_from: None,
            error: None,
            conflicts,
            authors: OpRef::actors(&writes),
            writes,
            indexed: Arc::new(Vec::new()),
        };
        // The same content as the version in force: keep its parse and index.
        if let Some(old) = old
            && old.effective.is_some()
            && old.fallback_from.is_none()
            && old.effective_content.as_ref() == Some(&merged)
        {
            state.effective = old.effective.clone();
            state.effective_content = old.effective_content.clone();
            state.indexed = old.indexed.clone();
            self.view.bundles.insert(name.to_owned(), Arc::new(state));
            return;
        }
        match merged.parse(name) {
            Ok(parsed) => {
                state.effective = Some(Arc::new(parsed));
                state.effective_content = Some(merged);
            }
            Err(err) => {
                state.error = Some(err);
                // The last good version: the latest change's state that is valid.
                if let Some(history) = history {
                    for (_, hash) in history.iter().rev() {
                        let at = [*hash];
                        let Some((content, _, _)) =
                            read_bundle(&self.doc, &self.bundles_obj, name, Some(&at))
                        else {
                            continue;
                        };
                        if let Ok(parsed) = content.parse(name) {
                            state.effective = Some(Arc::new(parsed));
                            state.effective_content = Some(content);
                            state.fallback_from = Some(*hash);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(parsed) = &state.effective {
            state.indexed = Arc::new(IndexedPolicy::all_of(parsed));
        }
        self.view.bundles.insert(name.to_owned(), Arc::new(state));
    }

    /// Re-assembles the merged entities from the bundles' parsed versions
    /// (no parsing happens here), and recomputes their ancestors.
    fn reassemble_entities(&mut self) {
        let mut entities = Vec::new();
        let mut seen = BTreeSet::new();
        let mut entity_errors = Vec::new();
        for (name, b) in self.view.bundles.iter() {
            let Some(parsed) = &b.effective else { continue };
            for e in &parsed.entities {
                if seen.insert(e.uid().to_string()) {
                    entities.push(e.clone());
                } else {
                    entity_errors.push(format!(
                        "entity {} is defined by more than one bundle; `{name}`'s copy is ignored",
                        e.uid()
                    ));
                }
            }
        }
        let entities = match Entities::from_entities(entities, None) {
            Ok(e) => e,
            Err(e) => {
                entity_errors.push(one_line(&e));
                Entities::empty()
            }
        };
        self.view.entity_ancestors = Arc::new(crate::view::ancestors_of_all(&entities));
        self.view.entities = Arc::new(entities);
        self.view.entity_errors = Arc::new(entity_errors);
    }

    // ---- builders -------------------------------------------------------

    /// Writes one change that makes bundle `name` exactly `content`, as actor
    /// `actor`, on top of the current state, applies it here, and returns it.
    /// Returns `None` when the bundle already holds exactly that content.
    pub fn build_bundle(
        &mut self,
        actor: ActorId,
        name: &str,
        content: &BundleContent,
        time: i64,
    ) -> Result<Option<Change>, CrdtError> {
        schema::check_bundle_name(name).map_err(SchemaViolation)?;
        if let Some((current, conflicts, _)) = read_bundle(&self.doc, &self.bundles_obj, name, None)
            && current == *content
            && conflicts.is_empty()
        {
            return Ok(None);
        }
        let bundles_obj = self.bundles_obj.clone();
        self.transact(actor, time, &format!("bundle {name}"), |tx| {
            let bundle = match tx.get(&bundles_obj, name)? {
                Some((Value::Object(ObjType::Map), id)) => id,
                _ => tx.put_object(&bundles_obj, name, ObjType::Map)?,
            };
            let policies = match tx.get(&bundle, POLICIES)? {
                Some((Value::Object(ObjType::Map), id)) => id,
                _ => tx.put_object(&bundle, POLICIES, ObjType::Map)?,
            };
            let existing: Vec<String> = tx.keys(&policies).collect();
            for id in existing {
                if !content.policies.contains_key(&id) {
                    tx.delete(&policies, id.as_str())?;
                }
            }
            for (id, text) in &content.policies {
                let (current, n) = read_str_all(tx, &policies, id);
                if current.as_deref() != Some(text.as_str()) || n > 1 {
                    tx.put(&policies, id.as_str(), text.as_str())?;
                }
            }
            for (field, value) in BUNDLE_FIELDS.iter().zip([
                &content.schema,
                &content.entities,
                &content.links,
                &content.description,
                &content.routes,
                &content.issuers,
            ]) {
                let (current, n) = read_str_all(tx, &bundle, field);
                match value {
                    Some(v) if current.as_deref() != Some(v.as_str()) || n > 1 => {
                        tx.put(&bundle, *field, v.as_str())?
                    }
                    None if n > 0 => tx.delete(&bundle, *field)?,
                    _ => {}
                }
            }
            Ok(())
        })
    }

    /// Writes one change that revokes `subject`: always a fresh put, which a
    /// concurrent reinstatement cannot have seen. Returns `None` only if
    /// automerge wrote nothing.
    pub fn build_revoke(
        &mut self,
        actor: ActorId,
        subject: &str,
        reason: &str,
        time: i64,
    ) -> Result<Option<Change>, CrdtError> {
        let subject = canonical_subject(subject);
        let record = serde_json::to_string(&RevocationRecord {
            reason: reason.to_owned(),
            after: self.view.digest.clone(),
        })
        .expect("a revocation record serializes");
        let obj = self.bucket_of(&subject).clone();
        self.transact(actor, time, &format!("revoke {subject}"), |tx| {
            tx.put(&obj, subject.as_str(), record.as_str())?;
            Ok(())
        })
    }

    /// Writes one change that reinstates `subject`: it deletes every revocation
    /// of `subject` this replica has seen, and only those.
    pub fn build_reinstate(
        &mut self,
        actor: ActorId,
        subject: &str,
        time: i64,
    ) -> Result<Option<Change>, CrdtError> {
        let canonical = canonical_subject(subject);
        let obj = self.bucket_of(&canonical).clone();
        let keys = raw_keys_for(&self.doc, &obj, &canonical, subject);
        if keys.is_empty() {
            return Err(SchemaViolation(format!("{canonical} is not revoked here")).into());
        }
        self.transact(actor, time, &format!("reinstate {canonical}"), |tx| {
            for k in &keys {
                tx.delete(&obj, k.as_str())?;
            }
            Ok(())
        })
    }

    /// Writes one change that puts a quarantine record for `subject`.
    pub fn build_quarantine(
        &mut self,
        actor: ActorId,
        subject: &str,
        record_json: &str,
        time: i64,
    ) -> Result<Option<Change>, CrdtError> {
        let subject = canonical_subject(subject);
        let obj = self.quarantines_obj.clone();
        self.transact(actor, time, &format!("quarantine {subject}"), |tx| {
            tx.put(&obj, subject.as_str(), record_json)?;
            Ok(())
        })
    }

    fn transact(
        &mut self,
        actor: ActorId,
        time: i64,
        message: &str,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), AutomergeError>,
    ) -> Result<Option<Change>, CrdtError> {
        check_time(time)?;
        self.doc.set_actor(actor);
        let mut tx = self.doc.transaction();
        if let Err(e) = f(&mut tx) {
            tx.rollback();
            return Err(e.into());
        }
        let (hash, _) = tx.commit_with(
            CommitOptions::default()
                .with_message(message)
                .with_time(time),
        );
        if hash.is_none() {
            return Ok(None);
        }
        let Some(change) = self.doc.get_last_local_change() else {
            return Ok(None);
        };
        // The change is applied already; register what it created and refresh.
        self.applied.insert(change.hash(), change.max_op());
        let mut created = Vec::new();
        let summary = self.summarize_inner(&change, Some(&mut created))?;
        self.lanes
            .insert(change.actor_id().clone(), (change.seq(), change.hash()));
        self.objects.extend(created);
        self.note_summary(&summary);
        self.refresh_view();
        Ok(Some(change))
    }
}

/// Raw document keys under `obj` that canonicalize to `canonical` (the key as
/// given, plus the canonical form; the schema stores canonical keys, but a
/// signed change may use another spelling of the same uid).
fn raw_keys_for(doc: &Automerge, obj: &ObjId, canonical: &str, given: &str) -> Vec<String> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for k in [canonical, given] {
        if matches!(doc.get_all(obj, k), Ok(v) if !v.is_empty()) {
            keys.insert(k.to_owned());
        }
    }
    keys.into_iter().collect()
}

/// Records `key` in `aliases` if it is not its subject's canonical spelling.
fn note_alias(aliases: &mut FastMap<String, BTreeSet<String>>, key: &str) {
    let canonical = canonical_subject(key);
    if canonical != key {
        aliases.entry(canonical).or_default().insert(key.to_owned());
    }
}

/// The reason in a revocation record (the raw string if it is not one).
fn reason_of(value: &Value<'_>) -> String {
    match value {
        Value::Scalar(v) => match v.as_ref() {
            ScalarValue::Str(s) => reason_of_str(s),
            _ => String::new(),
        },
        Value::Object(_) => String::new(),
    }
}

/// The reason in a revocation record's text (the text itself if it is not one).
fn reason_of_str(s: &str) -> String {
    serde_json::from_str::<RevocationRecord>(s)
        .map(|r| r.reason)
        .unwrap_or_else(|_| s.to_owned())
}

fn actor_hex(id: &ObjId) -> String {
    match id {
        ObjId::Root => String::new(),
        ObjId::Id(_, actor, _) => hex::encode(actor.to_bytes()),
    }
}

fn fingerprint(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..8])
}

fn read_str_all<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> (Option<String>, usize) {
    let all = doc.get_all(obj, key).unwrap_or_default();
    let n = all.len();
    let winner = doc.get(obj, key).ok().flatten().and_then(|(v, _)| match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    });
    (winner, n)
}

/// Reads bundle `name`, now or as of `heads`, with its conflicts and the
/// operations (sorted) that wrote what it holds.
fn read_bundle(
    doc: &Automerge,
    bundles: &ObjId,
    name: &str,
    heads: Option<&[ChangeHash]>,
) -> Option<(BundleContent, Vec<Conflict>, Vec<OpRef>)> {
    let get_all = |obj: &ObjId, key: &str| -> Vec<(Value<'_>, ObjId)> {
        match heads {
            None => doc.get_all(obj, key),
            Some(h) => doc.get_all_at(obj, key, h),
        }
        .unwrap_or_default()
    };
    let mut conflicts = Vec::new();
    let mut writers = BTreeSet::new();
    let mut note_conflict = |path: String, sides: &[(Value<'_>, ObjId)]| {
        writers.extend(sides.iter().filter_map(|(_, id)| OpRef::of(id)));
        if sides.len() > 1 {
            let winner = sides.len() - 1;
            conflicts.push(Conflict {
                path,
                sides: sides
                    .iter()
                    .enumerate()
                    .map(|(i, (v, id))| ConflictSide {
                        actor: actor_hex(id),
                        value: match v {
                            Value::Scalar(s) => match s.as_ref() {
                                ScalarValue::Str(s) => fingerprint(s),
                                other => fingerprint(&other.to_string()),
                            },
                            Value::Object(_) => format!("object {}", id),
                        },
                        winner: i == winner,
                    })
                    .collect(),
            });
        }
    };
    let bundle_sides = get_all(bundles, name);
    note_conflict(format!("{BUNDLES}/{name}"), &bundle_sides);
    let (_, bundle) = bundle_sides
        .into_iter()
        .rfind(|(v, _)| matches!(v, Value::Object(ObjType::Map)))?;
    let str_winner = |sides: &[(Value<'_>, ObjId)]| -> Option<String> {
        sides.last().and_then(|(v, _)| match v {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            },
            _ => None,
        })
    };
    let mut content = BundleContent::default();
    let policy_sides = get_all(&bundle, POLICIES);
    note_conflict(format!("{BUNDLES}/{name}/{POLICIES}"), &policy_sides);
    if let Some((_, policies)) = policy_sides
        .into_iter()
        .rfind(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
    {
        let keys: Vec<String> = match heads {
            None => doc.keys(&policies).collect(),
            Some(h) => doc.keys_at(&policies, h).collect(),
        };
        for id in keys {
            let sides = get_all(&policies, &id);
            note_conflict(format!("{BUNDLES}/{name}/{POLICIES}/{id}"), &sides);
            if let Some(text) = str_winner(&sides) {
                content.policies.insert(id, text);
            }
        }
    }
    for (field, slot) in BUNDLE_FIELDS.iter().zip([
        &mut content.schema,
        &mut content.entities,
        &mut content.links,
        &mut content.description,
        &mut content.routes,
        &mut content.issuers,
    ]) {
        let sides = get_all(&bundle, field);
        note_conflict(format!("{BUNDLES}/{name}/{field}"), &sides);
        *slot = str_winner(&sides);
    }
    Some((content, conflicts, writers.into_iter().collect()))
}
