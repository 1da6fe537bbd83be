//! The node's durable store: every accepted update, by change hash, in sled.
//!
//! ```text
//! store/ (sled)
//! ├── updates   32-byte change hash -> the signed update's bytes, as received
//! ├── roots     trust root version (8 bytes, big-endian) -> its SignedRoot bytes:
//! │             every root the node has adopted ([`crate::rootchain`])
//! └── meta      "snapshot"   -> a saved document, the hashes it covers and
//!                               the trust root version it was taken under
//! ```
//!
//! Every record is content-addressed and signed, so damage is detected on
//! load: a record whose bytes do not decode, whose recomputed change hash is
//! not its key, or whose signatures do not verify is logged, removed, and
//! fetched again from peers by anti-entropy (the updates that depend on it
//! stay held until it arrives).
//!
//! # Start-up with many updates
//! Applying 100,000 updates one by one to a fresh document takes long, so
//! every [`DEFAULT_SNAPSHOT_EVERY`] applied updates the node saves a
//! snapshot: its document ([`PolicyDoc::save`]) and the list of update hashes
//! it covers. The node copies both on its own thread ([`SnapshotCapture`],
//! 7-9 ms at 100,000 updates) and encodes and writes them on the blocking
//! pool (about 0.2 s), so gossip and sync do not stop meanwhile. On start
//! the snapshot's document is loaded while every covered record is decoded,
//! its change hashed and its signatures checked (in batches, on every core),
//! and every update is authorized again against the trust root and matched
//! to the document's changes, as soon as both its signatures and the
//! document are in ([`SignedState::restore`]). So
//! nothing in the snapshot is trusted that a signature can vouch for; what
//! it saves is automerge's apply. The records stored after the snapshot are
//! verified and ingested on top, in causal order. If a covered record is
//! missing, damaged or refused, the snapshot is dropped and everything is
//! verified from scratch, one signature at a time.
//!
//! A snapshot is used only under the trust root it was taken under. An
//! update that names an older root is valid only in the causal past of the
//! heads the next root vouched for, and a snapshot taken before a rotation
//! may cover updates that the rotation dropped; so once the node runs under
//! a newer root (adopted from the mesh, or put in `trust.json` by hand),
//! an older snapshot is dropped, every record is judged again under the
//! whole chain, and the node writes a new snapshot.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use weft_crdt::{ChangeHash, PolicyDoc};
use weft_protocol::boundary::VerifiedUpdate;
use weft_protocol::state::{DEFAULT_MAX_HELD, Ingested, SignedState};
use weft_protocol::trust::TrustRoot;
use weft_protocol::update::UpdateError;

/// How many applied updates between two snapshots. Default 10,000: loading a
/// snapshot spares automerge's apply of what it covers, so start-up applies
/// at most this many updates one by one, while saving one (a few hundred
/// milliseconds for a large document) stays rare.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;

const UPDATES: &str = "updates";
const ROOTS: &str = "roots";
const META: &str = "meta";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// A snapshot that names the trust root version it was taken under.
const SNAPSHOT_MAGIC: &[u8; 8] = b"WEFTSNP2";
/// A snapshot of an earlier format, which names no trust root version:
/// used only by a node that has never adopted a rotation.
const SNAPSHOT_MAGIC_UNVERSIONED: &[u8; 8] = b"WEFTSNP1";

/// A failure of the store itself (not of a record in it).
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled failed.
    #[error("the store at {path} failed: {source}")]
    Sled {
        /// The store's directory.
        path: String,
        /// The underlying error.
        source: sled::Error,
    },
}

/// What loading the store found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Updates applied (from the snapshot and on top of it).
    pub applied: usize,
    /// Updates the snapshot covered (applied with its saved document; their
    /// signatures are checked all the same).
    pub from_snapshot: usize,
    /// Updates verified and ingested one by one.
    pub verified: usize,
    /// Updates held, waiting for dependencies that were damaged or never stored.
    pub held: usize,
    /// Damaged records removed (to be fetched again from peers).
    pub damaged: usize,
    /// Records refused under the current trust root and kept in the store.
    pub refused: usize,
    /// Whether a snapshot was found but could not be used.
    pub snapshot_dropped: bool,
    /// How long loading took, in milliseconds.
    pub elapsed_ms: u64,
}

/// One stored record: its key and its bytes.
pub type Record = (Vec<u8>, Arc<[u8]>);

/// A verified update with its bytes, by change hash.
type Verified = (VerifiedUpdate, Arc<[u8]>);

/// A state's document and update hashes, copied at one moment so that its
/// snapshot can be encoded and written elsewhere while the state moves on.
/// Copying is cheap next to encoding: about 7 ms against 0.2 s at 100,000
/// updates.
pub struct SnapshotCapture {
    doc: automerge::Automerge,
    hashes: Vec<ChangeHash>,
    root_version: u64,
}

impl SnapshotCapture {
    /// Copies what a snapshot of `state` holds.
    pub fn of(state: &SignedState) -> SnapshotCapture {
        SnapshotCapture {
            doc: state.doc().automerge().clone(),
            hashes: state.update_hashes().copied().collect(),
            root_version: state.root().version,
        }
    }

    /// How many updates the snapshot covers.
    pub fn update_count(&self) -> usize {
        self.hashes.len()
    }
}

/// The sled store of one node.
pub struct Store {
    path: String,
    db: sled::Db,
    updates: sled::Tree,
    roots: sled::Tree,
    meta: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError::Sled {
            path: p.clone(),
            source,
        };
        let db = sled::open(path).map_err(err)?;
        let updates = db.open_tree(UPDATES).map_err(err)?;
        let roots = db.open_tree(ROOTS).map_err(err)?;
        let meta = db.open_tree(META).map_err(err)?;
        Ok(Store {
            path: p,
            db,
            updates,
            roots,
            meta,
        })
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores an update under its change hash (not yet durable: call [`Store::flush`]).
    pub fn put_update(&self, hash: &ChangeHash, bytes: &[u8]) -> Result<(), StoreError> {
        self.updates
            .insert(hash.0, bytes)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The sled database (the audit log keeps its trees in it too).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// How many update records the store holds.
    pub fn update_count(&self) -> usize {
        self.updates.len()
    }

    /// Every stored update record, as `(key, bytes)`. Keys that are not 32
    /// bytes long are returned too, for the caller to drop.
    pub fn records(&self) -> Result<Vec<Record>, StoreError> {
        self.updates
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), Arc::from(&v[..])))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    /// Removes one record.
    pub fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.updates
            .remove(key)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Records a trust root the node has adopted (`SignedRoot` bytes), under
    /// its version (not yet durable: call [`Store::flush`]).
    pub fn put_root(&self, version: u64, signed_root: &[u8]) -> Result<(), StoreError> {
        self.roots
            .insert(version.to_be_bytes(), signed_root)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every trust root recorded by [`Store::put_root`], oldest first.
    pub fn roots(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.roots
            .iter()
            .map(|r| r.map(|(_, v)| v.to_vec()).map_err(|e| self.err(e)))
            .collect()
    }

    /// Saves a snapshot of `state`: its document, the hashes of every
    /// update it holds and the version of the trust root it runs under, and
    /// flushes.
    pub fn save_snapshot(&self, state: &SignedState) -> Result<(), StoreError> {
        self.write_snapshot(
            &state.doc().save(),
            state.root().version,
            state.update_count(),
            state.update_hashes(),
        )
    }

    /// Saves a snapshot taken earlier with [`SnapshotCapture::of`]: the
    /// same as [`Store::save_snapshot`] of the state as it was then, whatever
    /// was applied since. Encoding the document is the slow part (about
    /// 0.2 s at 100,000 updates); this is what the node runs off its own
    /// thread.
    pub fn save_capture(&self, capture: &SnapshotCapture) -> Result<(), StoreError> {
        self.write_snapshot(
            &capture.doc.save(),
            capture.root_version,
            capture.hashes.len(),
            &capture.hashes,
        )
    }

    fn write_snapshot<'a>(
        &self,
        doc: &[u8],
        root_version: u64,
        n: usize,
        hashes: impl IntoIterator<Item = &'a ChangeHash>,
    ) -> Result<(), StoreError> {
        let mut v = Vec::with_capacity(SNAPSHOT_MAGIC.len() + 24 + doc.len() + 32 * n);
        v.extend_from_slice(SNAPSHOT_MAGIC);
        v.extend_from_slice(&root_version.to_be_bytes());
        v.extend_from_slice(&(doc.len() as u64).to_be_bytes());
        v.extend_from_slice(doc);
        v.extend_from_slice(&(n as u64).to_be_bytes());
        for h in hashes {
            v.extend_from_slice(&h.0);
        }
        self.meta.insert(KEY_SNAPSHOT, v).map_err(|e| self.err(e))?;
        self.flush()
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let Some(v) = self.meta.get(KEY_SNAPSHOT).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        Ok(Snapshot::decode(&v))
    }

    fn drop_snapshot(&self) -> Result<(), StoreError> {
        self.meta
            .remove(KEY_SNAPSHOT)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Loads every stored update into a fresh state trusting `root`: from the
    /// snapshot when there is a usable one, then verifying the rest in causal
    /// order. Damaged records are logged and removed.
    pub fn load_state(&self, root: TrustRoot) -> Result<(SignedState, LoadReport), StoreError> {
        self.load_state_chain(root, Vec::new())
    }

    /// [`Store::load_state`] with the chain of roots that led to `root`
    /// (oldest first, each with its encoded `SignedRoot`; `root` may end
    /// it), by which updates that name an older root are judged (see
    /// [`SignedState::with_chain`]).
    pub fn load_state_chain(
        &self,
        root: TrustRoot,
        chain: Vec<(TrustRoot, Arc<[u8]>)>,
    ) -> Result<(SignedState, LoadReport), StoreError> {
        let started = Instant::now();
        let mut report = LoadReport::default();
        let mut snapshot = self.snapshot()?;
        // Taken under another root than the latest, it may cover updates
        // that a rotation since has dropped (see the module doc).
        if let Some(snap) = &snapshot {
            let usable = match snap.root_version {
                Some(v) => v == root.version,
                None => chain.len() <= 1,
            };
            if !usable {
                tracing::info!(
                    taken_under = ?snap.root_version,
                    root = root.version,
                    "dropping a snapshot taken under another trust root; verifying every stored update under the chain of roots"
                );
                report.snapshot_dropped = true;
                self.drop_snapshot()?;
                snapshot = None;
            }
        }
        // The snapshot's document loads on a thread of its own while the
        // records are read and their signatures checked.
        let (mut records, restored) = std::thread::scope(|scope| {
            // A document that makes automerge panic is refused like any
            // other, and the thread never ends in a panic, whatever path
            // this one takes.
            let loading = snapshot.as_ref().map(|snap| {
                scope.spawn(
                    || match std::panic::catch_unwind(|| PolicyDoc::load(&snap.doc)) {
                        Ok(loaded) => loaded.map_err(|e| e.to_string()),
                        Err(_) => Err("automerge panicked".to_string()),
                    },
                )
            });
            let records = self.read_records(&mut report)?;
            let restored = match (&snapshot, loading) {
                (Some(snap), Some(loading)) => {
                    Some(self.restore_snapshot(&root, snap, &records, loading))
                }
                _ => None,
            };
            Ok::<_, StoreError>((records, restored))
        })?;

        let mut state = None;
        if let (Some(snap), Some(restored)) = (&snapshot, restored) {
            match restored {
                Ok(s) => {
                    report.from_snapshot = s.update_count();
                    if records.len() == snap.covered.len() {
                        // Every record is covered: the snapshot's updates
                        // are distinct (it holds one change for each) and all
                        // among the records.
                        records.clear();
                    } else {
                        for h in &snap.covered {
                            records.remove(h);
                        }
                    }
                    state = Some(s);
                }
                Err(reason) => {
                    tracing::warn!(%reason, "dropping the snapshot; verifying every stored update instead");
                    report.snapshot_dropped = true;
                    self.drop_snapshot()?;
                }
            }
        } else if let Ok(Some(_)) = self.meta.get(KEY_SNAPSHOT) {
            tracing::warn!("dropping a snapshot that does not decode");
            report.snapshot_dropped = true;
            self.drop_snapshot()?;
        }
        // Hold everything that might come out of order while loading; the
        // usual bound applies again once loading is done.
        let mut state = state
            .unwrap_or_else(|| SignedState::new(root.clone()))
            .with_chain(chain)
            .with_max_held(records.len() + DEFAULT_MAX_HELD);

        // Verify the rest, dropping what is damaged.
        let mut verified: BTreeMap<ChangeHash, Verified> = BTreeMap::new();
        let (keys, bytes): (Vec<ChangeHash>, Vec<Arc<[u8]>>) = records.into_iter().unzip();
        let checked = weft_protocol::boundary::decode_verified_all(&bytes);
        for ((key, bytes), checked) in keys.into_iter().zip(bytes).zip(checked) {
            match checked {
                Ok(v) if v.hash == key => {
                    verified.insert(key, (v, bytes));
                }
                Ok(v) => {
                    tracing::warn!(key = %key, actual = %v.hash, "removing a damaged store record: its hash is not its key");
                    self.remove(&key.0)?;
                    report.damaged += 1;
                }
                Err(err) => {
                    tracing::warn!(key = %key, %err, "removing a damaged store record");
                    self.remove(&key.0)?;
                    report.damaged += 1;
                }
            }
        }

        // In causal order and in one batch: automerge's cost is per call.
        let (keys, batch): (Vec<ChangeHash>, Vec<Verified>) =
            causal_order(verified).into_iter().unzip();
        let results = state.ingest_verified_batch(batch);
        for (key, result) in keys.into_iter().zip(results) {
            match result {
                Ok(Ingested::Applied { released, .. }) => report.verified += 1 + released.len(),
                Ok(Ingested::Held { released, .. }) => report.verified += released.len(),
                Ok(Ingested::Duplicate(_)) => {}
                Err(err) if is_damage(&err) => {
                    tracing::warn!(key = %key, %err, "removing a damaged store record");
                    self.remove(&key.0)?;
                    report.damaged += 1;
                }
                Err(err) => {
                    tracing::warn!(key = %key, %err, "a stored update is refused under the current trust root; keeping the record");
                    report.refused += 1;
                }
            }
        }
        let state = state.with_max_held(DEFAULT_MAX_HELD);
        report.applied = state.update_count();
        report.held = state.held_count();
        if report.damaged > 0 {
            self.flush()?;
        }
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok((state, report))
    }

    /// Every stored record by its change hash; records whose key is not a
    /// change hash are removed and counted as damaged.
    fn read_records(
        &self,
        report: &mut LoadReport,
    ) -> Result<BTreeMap<ChangeHash, Arc<[u8]>>, StoreError> {
        let mut records = BTreeMap::new();
        for (key, bytes) in self.records()? {
            match <[u8; 32]>::try_from(key.as_slice()) {
                Ok(k) => {
                    records.insert(ChangeHash(k), bytes);
                }
                Err(_) => {
                    tracing::warn!(key = %hex::encode(&key), "removing a store record whose key is not a change hash");
                    self.remove(&key)?;
                    report.damaged += 1;
                }
            }
        }
        Ok(records)
    }

    /// The state the snapshot holds, from its document (`loading`, started
    /// by the caller) and the records of the updates it covers, every
    /// signature checked while the document loads.
    fn restore_snapshot(
        &self,
        root: &TrustRoot,
        snap: &Snapshot,
        records: &BTreeMap<ChangeHash, Arc<[u8]>>,
        loading: std::thread::ScopedJoinHandle<'_, Result<PolicyDoc, String>>,
    ) -> Result<SignedState, String> {
        let covered: Result<Vec<_>, String> = snap
            .covered
            .iter()
            .map(|h| {
                records
                    .get(h)
                    .map(|b| (*h, b.clone()))
                    .ok_or_else(|| format!("update {h} it covers is not in the store"))
            })
            .collect();
        let load = || {
            loading
                .join()
                .map_err(|_| "its loading thread panicked".to_string())?
        };
        // On an error the scope still joins the loading thread.
        let covered = covered?;
        SignedState::restore(root.clone(), load, &covered).map_err(|e| e.to_string())
    }
}

/// Whether an ingest error means the record itself is bad (as opposed to a
/// refusal under the current trust root, which a root change could lift).
fn is_damage(err: &UpdateError) -> bool {
    matches!(
        err,
        UpdateError::Malformed(_)
            | UpdateError::BadSignature { .. }
            | UpdateError::State(weft_crdt::CrdtError::Malformed(_))
    )
}

/// Orders updates so that each comes after those of its dependencies that
/// are in the set (Kahn's algorithm, ties broken by hash).
fn causal_order(mut updates: BTreeMap<ChangeHash, Verified>) -> Vec<(ChangeHash, Verified)> {
    let mut waiting: BTreeMap<ChangeHash, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<ChangeHash, Vec<ChangeHash>> = BTreeMap::new();
    for (h, (u, _)) in &updates {
        let deps: BTreeSet<ChangeHash> = u
            .change
            .deps()
            .iter()
            .filter(|d| updates.contains_key(d))
            .copied()
            .collect();
        waiting.insert(*h, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(*h);
        }
    }
    let mut ready: VecDeque<ChangeHash> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(h, _)| *h)
        .collect();
    let mut out = Vec::with_capacity(updates.len());
    while let Some(h) = ready.pop_front() {
        if let Some(u) = updates.remove(&h) {
            out.push((h, u));
        }
        for d in dependents.remove(&h).unwrap_or_default() {
            if let Some(n) = waiting.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    ready.push_back(d);
                }
            }
        }
    }
    // A cycle cannot happen with content-addressed dependencies; whatever is
    // left (nothing) goes last and is held.
    out.extend(updates);
    out
}

struct Snapshot {
    doc: Vec<u8>,
    covered: Vec<ChangeHash>,
    /// The trust root version it was taken under (none in the earlier
    /// format).
    root_version: Option<u64>,
}

impl Snapshot {
    fn decode(v: &[u8]) -> Option<Snapshot> {
        let (root_version, rest) = match v.strip_prefix(SNAPSHOT_MAGIC) {
            Some(rest) => {
                let (version, rest) = rest.split_first_chunk::<8>()?;
                (Some(u64::from_be_bytes(*version)), rest)
            }
            None => (None, v.strip_prefix(SNAPSHOT_MAGIC_UNVERSIONED)?),
        };
        let (len, rest) = rest.split_first_chunk::<8>()?;
        let len = usize::try_from(u64::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (doc, rest) = rest.split_at(len);
        let (n, rest) = rest.split_first_chunk::<8>()?;
        let n = usize::try_from(u64::from_be_bytes(*n)).ok()?;
        if rest.len() != n.checked_mul(32)? {
            return None;
        }
        let covered = rest
            .chunks_exact(32)
            .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(ChangeHash))
            .collect();
        Some(Snapshot {
            doc: doc.to_vec(),
            covered,
            root_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use weft_protocol::identity::SecretKey;
    use weft_protocol::trust::{Operator, QuarantineLimits, Role};
    use weft_protocol::update::{SignedUpdate, actor_for};

    use super::*;

    fn op() -> SecretKey {
        SecretKey::from_seed([3; 32])
    }

    fn root() -> TrustRoot {
        TrustRoot {
            version: 1,
            expires: u64::MAX,
            root_keys: vec![SecretKey::from_seed([9; 32]).public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "ops".into(),
                key: op().public(),
                roles: Role::ALL.into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: QuarantineLimits::default(),
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: Vec::new(),
        }
    }

    /// `n` revocations, each on top of the previous one.
    pub(crate) fn updates(n: u64) -> Vec<(ChangeHash, Vec<u8>)> {
        let mut doc = PolicyDoc::new();
        (0..n)
            .map(|i| {
                let change = doc
                    .build_revoke(
                        actor_for(&op().public(), i.to_be_bytes()),
                        &format!("User::\"u{i}\""),
                        "test",
                        0,
                    )
                    .unwrap()
                    .unwrap();
                let mut u = SignedUpdate::new(&change, 1);
                u.sign(&op()).unwrap();
                (change.hash(), u.to_bytes())
            })
            .collect()
    }

    fn store_with(dir: &Path, updates: &[(ChangeHash, Vec<u8>)]) -> Store {
        let store = Store::open(dir).unwrap();
        for (h, b) in updates {
            store.put_update(h, b).unwrap();
        }
        store.flush().unwrap();
        store
    }

    #[test]
    fn loads_in_causal_order_whatever_the_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let ups = updates(50);
        let store = store_with(dir.path(), &ups);
        let (state, report) = store.load_state(root()).unwrap();
        assert_eq!(state.update_count(), 50);
        assert_eq!(state.held_count(), 0);
        assert_eq!(report.verified, 50);
        assert_eq!(report.damaged, 0);
        assert_eq!(state.heads(), vec![ups[49].0]);
    }

    #[test]
    fn damaged_records_are_removed_and_their_dependents_held() {
        let dir = tempfile::tempdir().unwrap();
        let ups = updates(10);
        let store = store_with(dir.path(), &ups);
        // Garbage under one key; another record's bytes under a wrong key.
        store.put_update(&ups[5].0, b"WEFT garbage").unwrap();
        store.put_update(&ups[7].0, &ups[8].1).unwrap();
        store.updates.insert(b"short key", &b"x"[..]).unwrap();
        let (state, report) = store.load_state(root()).unwrap();
        assert_eq!(report.damaged, 3);
        assert_eq!(state.update_count(), 5);
        // 6 waits for 5; 8 and 9 wait for 7 (via 8's record under 7's key, removed).
        assert_eq!(state.held_count(), 3);
        assert_eq!(store.update_count(), 8);
        assert!(state.wanted().contains(&ups[5].0));
    }

    #[test]
    fn a_snapshot_is_used_and_a_bad_one_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ups = updates(30);
        let store = store_with(dir.path(), &ups[..20]);
        let (state, _) = store.load_state(root()).unwrap();
        store.save_snapshot(&state).unwrap();
        for (h, b) in &ups[20..] {
            store.put_update(h, b).unwrap();
        }
        let (state, report) = store.load_state(root()).unwrap();
        assert_eq!(report.from_snapshot, 20);
        assert_eq!(report.verified, 10);
        assert_eq!(state.update_count(), 30);
        assert_eq!(state.heads(), vec![ups[29].0]);
        assert_eq!(state.signers_of(&ups[3].0).unwrap().len(), 1);
        let full = store_with(tempfile::tempdir().unwrap().path(), &ups)
            .load_state(root())
            .unwrap()
            .0;
        assert_eq!(state.view().summary(), full.view().summary());

        // A covered record is damaged: the snapshot is dropped, the rest verified.
        store.put_update(&ups[3].0, b"WEFT garbage").unwrap();
        let (state, report) = store.load_state(root()).unwrap();
        assert!(report.snapshot_dropped);
        assert_eq!(report.from_snapshot, 0);
        assert_eq!(report.damaged, 1);
        assert_eq!(state.update_count(), 3);
        assert!(store.snapshot().unwrap().is_none());
    }

    /// The store's snapshot rewritten in the earlier format, which names
    /// no trust root version.
    fn unversion_snapshot(store: &Store) {
        let v = store.meta.get(KEY_SNAPSHOT).unwrap().unwrap();
        let mut old = SNAPSHOT_MAGIC_UNVERSIONED.to_vec();
        old.extend_from_slice(&v[SNAPSHOT_MAGIC.len() + 8..]);
        store.meta.insert(KEY_SNAPSHOT, old).unwrap();
    }

    /// Finding: a snapshot taken before a rotation covered updates that the
    /// rotation dropped (named under the old root, outside the heads the new
    /// root vouched for), and a restart restored them from it.
    #[test]
    fn a_snapshot_is_used_only_under_the_root_it_was_taken_under() {
        let dir = tempfile::tempdir().unwrap();
        let ups = updates(20);
        let store = store_with(dir.path(), &ups);
        let (twenty, _) = store.load_state(root()).unwrap();
        store.save_snapshot(&twenty).unwrap();
        // Version 2 vouches for the first ten updates only.
        let root_key = SecretKey::from_seed([9; 32]);
        let mut v2 = root();
        v2.version = 2;
        v2.accepted_heads = vec![ups[9].0.0];
        let chain: Vec<(TrustRoot, Arc<[u8]>)> = [root(), v2.clone()]
            .into_iter()
            .map(|r| {
                let signed = weft_protocol::trust::SignedRoot::sign(&r, &[&root_key]);
                (r, Arc::from(signed.to_bytes()))
            })
            .collect();
        let (ten, report) = store.load_state_chain(v2.clone(), chain.clone()).unwrap();
        assert!(report.snapshot_dropped);
        assert_eq!(report.from_snapshot, 0);
        assert_eq!(ten.update_count(), 10);
        assert_eq!(ten.heads(), vec![ups[9].0]);
        assert!(!ten.contains(&ups[10].0), "past the vouched heads");
        // A snapshot taken under version 2 is used under version 2.
        store.save_snapshot(&ten).unwrap();
        let (again, report) = store.load_state_chain(v2.clone(), chain.clone()).unwrap();
        assert!(!report.snapshot_dropped);
        assert_eq!(report.from_snapshot, 10);
        assert_eq!(again.heads(), ten.heads());
        // A snapshot of the earlier format is used only without a rotation.
        store.save_snapshot(&twenty).unwrap();
        unversion_snapshot(&store);
        let (state, report) = store.load_state(root()).unwrap();
        assert_eq!(report.from_snapshot, 20);
        assert_eq!(state.update_count(), 20);
        unversion_snapshot(&store);
        let (state, report) = store.load_state_chain(v2, chain).unwrap();
        assert!(report.snapshot_dropped);
        assert_eq!(state.update_count(), 10);
    }

    #[test]
    fn a_captured_snapshot_holds_the_state_as_it_was_when_captured() {
        let dir = tempfile::tempdir().unwrap();
        let ups = updates(30);
        let store = store_with(dir.path(), &ups[..20]);
        let (mut state, _) = store.load_state(root()).unwrap();
        let capture = SnapshotCapture::of(&state);
        assert_eq!(capture.update_count(), 20);
        // The state moves on before the snapshot is written.
        for (h, b) in &ups[20..] {
            state.ingest(b).unwrap();
            store.put_update(h, b).unwrap();
        }
        assert_eq!(state.update_count(), 30);
        store.save_capture(&capture).unwrap();
        let (loaded, report) = store.load_state(root()).unwrap();
        assert!(!report.snapshot_dropped);
        assert_eq!(report.from_snapshot, 20);
        assert_eq!(report.verified, 10);
        assert_eq!(loaded.heads(), state.heads());
        assert_eq!(loaded.view().summary(), state.view().summary());
        // The same bytes as a snapshot saved at once from that state.
        let at_once = store_with(tempfile::tempdir().unwrap().path(), &ups[..20]);
        let (twenty, _) = at_once.load_state(root()).unwrap();
        at_once.save_snapshot(&twenty).unwrap();
        let saved = |s: &Store| s.meta.get(KEY_SNAPSHOT).unwrap().unwrap().to_vec();
        let (a, b) = (saved(&store), saved(&at_once));
        let (a, b) = (Snapshot::decode(&a).unwrap(), Snapshot::decode(&b).unwrap());
        assert_eq!(a.covered, b.covered);
        assert_eq!(a.doc, b.doc);
    }

    #[test]
    fn a_snapshot_is_not_trusted_for_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let ups = updates(20);
        let store = store_with(dir.path(), &ups);
        let (state, _) = store.load_state(root()).unwrap();
        store.save_snapshot(&state).unwrap();
        // A covered record's signature is damaged; its change, and so its
        // key, are intact.
        let mut forged = ups[7].1.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            weft_protocol::boundary::change_bytes(&forged).unwrap(),
            weft_protocol::boundary::change_bytes(&ups[7].1).unwrap()
        );
        store.put_update(&ups[7].0, &forged).unwrap();
        let (state, report) = store.load_state(root()).unwrap();
        assert!(report.snapshot_dropped);
        assert_eq!(report.from_snapshot, 0);
        assert_eq!(report.damaged, 1);
        // Everything built on it waits for a good copy from a peer.
        assert_eq!(state.update_count(), 7);
        assert_eq!(state.held_count(), 12);
    }

    #[test]
    fn a_snapshot_is_authorized_again_under_the_trust_root() {
        let dir = tempfile::tempdir().unwrap();
        let ups = updates(10);
        let store = store_with(dir.path(), &ups);
        let (state, _) = store.load_state(root()).unwrap();
        store.save_snapshot(&state).unwrap();
        // The operator no longer holds the revoke role.
        let mut demoted = root();
        demoted.operators[0].roles.remove(&Role::Revoke);
        let (state, report) = store.load_state(demoted).unwrap();
        assert!(report.snapshot_dropped);
        assert_eq!(report.from_snapshot, 0);
        assert_eq!(state.update_count(), 0);
        assert!(report.refused >= 1);
        // Nothing was removed: a later root may allow them again.
        assert_eq!(store.load_state(root()).unwrap().0.update_count(), 10);
    }
}
