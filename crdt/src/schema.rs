//! The document schema: which paths exist, which operations are allowed on
//! them, and the deterministic genesis change every replica starts from.
//!
//! The document is one automerge map:
//!
//! ```text
//! ROOT
//! ├── bundles:      { NAME: { policies: { ID: "<cedar text>" },
//! │                            schema?: "<cedarschema text>",
//! │                            entities?: "<cedar entity JSON>",
//! │                            links?: "<template links JSON>",
//! │                            description?: "<text>",
//! │                            routes?: "<routes TOML>",
//! │                            issuers?: "<issuers TOML>" } }
//! ├── revocations:  { BUCKET: { SUBJECT: "<revocation record JSON>" } }
//! └── quarantines:  { SUBJECT: "<quarantine record JSON>" }
//! ```
//!
//! The three top-level maps, and the 4,096 revocation buckets (`000` to `fff`),
//! are created by the [`genesis`] change, which is byte-for-byte the same on
//! every replica (fixed actor, time 0), so no two replicas ever race to
//! create them. A subject's bucket is fixed by its canonical form
//! ([`revocation_bucket`]), and a revocation written in any other bucket is
//! refused. The buckets keep each map small: automerge applies a remote
//! write to a map by walking the map's entries up to the key, so one map of
//! every revocation would make each new one cost in proportion to all of
//! them. Every later change may only touch the paths listed in [`Section`],
//! with the operations the schema allows at each; anything else is a
//! [`SchemaViolation`].

use std::collections::BTreeSet;
use std::fmt;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjType, ROOT, legacy};

/// Top-level key of the bundles map.
pub const BUNDLES: &str = "bundles";
/// Top-level key of the revocations map.
pub const REVOCATIONS: &str = "revocations";
/// Top-level key of the quarantines map.
pub const QUARANTINES: &str = "quarantines";
/// Key of a bundle's policies map.
pub const POLICIES: &str = "policies";
/// Scalar fields a bundle may hold besides its policies.
pub const BUNDLE_FIELDS: [&str; 6] = [
    "schema",
    "entities",
    "links",
    "description",
    "routes",
    "issuers",
];

/// The actor id of the genesis change. No operator key can produce it: operator
/// actors are 40 bytes long (see `protocol`), this one is 16.
pub const GENESIS_ACTOR: [u8; 16] = *b"weft-genesis-v1\0";

/// How many buckets the revocations map is split into.
/// At 100,000 revocations a bucket holds about 24, so the walk that automerge
/// makes to apply a revocation stays short (see BENCHMARKS.md, "Ingest").
pub const REVOCATION_BUCKETS: usize = 4096;

/// The bucket (three lowercase hex digits) that holds `subject`'s revocation:
/// the first 12 bits of SHA-256 over a domain prefix and the canonical
/// subject, so every spelling of one uid lands in the same bucket.
pub fn revocation_bucket(subject: &str) -> String {
    bucket_of_canonical(&crate::view::canonical_subject(subject))
}

/// [`revocation_bucket`] for a subject already in canonical form (as
/// `canonical_subject` gives it), without parsing it again.
pub fn bucket_of_canonical(canonical: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(b"weft/revocation-bucket/v1\0");
    h.update(canonical.as_bytes());
    let d = h.finalize();
    bucket_name(u16::from_be_bytes([d[0], d[1]]) >> 4)
}

/// The name of bucket `n` (below [`REVOCATION_BUCKETS`]).
pub fn bucket_name(n: u16) -> String {
    debug_assert!(usize::from(n) < REVOCATION_BUCKETS);
    format!("{n:03x}")
}

/// The number of the bucket named `name`, if it is one.
pub fn bucket_number(name: &str) -> Option<u16> {
    if name.len() != 3 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u16::from_str_radix(name, 16).ok()
}

/// Longest bundle name, policy id or subject accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Builds the genesis change: the three top-level maps and the revocation
/// buckets, all empty.
///
/// It is a pure function of this crate's version, so every replica derives
/// the same bytes and the same hash.
pub fn genesis() -> Change {
    static GENESIS: std::sync::OnceLock<Change> = std::sync::OnceLock::new();
    GENESIS.get_or_init(build_genesis).clone()
}

fn build_genesis() -> Change {
    let mut doc = Automerge::new().with_actor(ActorId::from(GENESIS_ACTOR));
    let mut tx = doc.transaction();
    for key in [BUNDLES, QUARANTINES, REVOCATIONS] {
        let obj = tx
            .put_object(ROOT, key, ObjType::Map)
            .expect("putting a map into an empty document cannot fail");
        if key == REVOCATIONS {
            for n in 0..REVOCATION_BUCKETS as u16 {
                tx.put_object(&obj, bucket_name(n), ObjType::Map)
                    .expect("putting a map into a new map cannot fail");
            }
        }
    }
    tx.commit_with(CommitOptions::default().with_time(0));
    doc.get_last_local_change()
        .expect("the genesis transaction made a change")
}

/// Every map the [`genesis`] change creates: the op id that made it
/// (counter, actor) and its path.
pub fn genesis_objects() -> Vec<((u64, ActorId), Path)> {
    static OBJECTS: std::sync::OnceLock<Vec<((u64, ActorId), Path)>> = std::sync::OnceLock::new();
    OBJECTS.get_or_init(build_genesis_objects).clone()
}

fn build_genesis_objects() -> Vec<((u64, ActorId), Path)> {
    let expanded = genesis().decode();
    let start = expanded.start_op.get();
    let mut out: Vec<((u64, ActorId), Path)> = Vec::new();
    for (i, op) in expanded.operations.iter().enumerate() {
        if let (legacy::OpType::Make(ObjType::Map), legacy::Key::Map(k)) = (&op.action, &op.key) {
            let parent = match &op.obj {
                legacy::ObjectId::Root => Path(vec![]),
                legacy::ObjectId::Id(legacy::OpId(counter, actor)) => out
                    .iter()
                    .find(|(id, _)| id.0 == *counter && id.1 == *actor)
                    .map(|(_, p)| p.clone())
                    .expect("genesis creates a map before it writes into it"),
            };
            out.push((
                (start + i as u64, expanded.actor_id.clone()),
                parent.child(k),
            ));
        }
    }
    out
}

/// The hash of the [`genesis`] change.
pub fn genesis_hash() -> ChangeHash {
    static HASH: std::sync::OnceLock<ChangeHash> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| genesis().hash())
}

/// A path in the document, from the root, as its map keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(pub Vec<String>);

impl Path {
    /// The path's first key, which says which section it belongs to.
    pub fn section(&self) -> Option<Section> {
        match self.0.first().map(String::as_str) {
            Some(BUNDLES) => Some(Section::Bundles),
            Some(REVOCATIONS) => Some(Section::Revocations),
            Some(QUARANTINES) => Some(Section::Quarantines),
            _ => None,
        }
    }

    /// Appends a key.
    pub fn child(&self, key: &str) -> Path {
        let mut v = self.0.clone();
        v.push(key.to_owned());
        Path(v)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// The three sections of the document, each with its own authorization rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `bundles/...`: needs the policy role and threshold.
    Bundles,
    /// `revocations/...`: needs the revoke role and threshold.
    Revocations,
    /// `quarantines/...`: node-issued quarantines, within the root's limits.
    Quarantines,
}

/// What kind of object a path denotes; the schema decides what a new object may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A map that may be created by a change (a bundle, or its policies map).
    Map,
    /// A string scalar.
    Str,
}

/// A change that does something the schema does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("change violates the document schema: {0}")]
pub struct SchemaViolation(pub String);

/// Decides what the schema allows at `parent`/`key`. Returns the slot kind.
pub(crate) fn slot_at(parent: &Path, key: &str) -> Result<Slot, SchemaViolation> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(SchemaViolation(format!(
            "key of {} bytes under {parent} (allowed: 1 to {MAX_KEY_LEN})",
            key.len()
        )));
    }
    let p: Vec<&str> = parent.0.iter().map(String::as_str).collect();
    match p.as_slice() {
        [] => Err(SchemaViolation(format!(
            "the top level is fixed; `{key}` cannot be written"
        ))),
        [BUNDLES] => {
            check_bundle_name(key).map_err(SchemaViolation)?;
            Ok(Slot::Map)
        }
        [BUNDLES, _] if key == POLICIES => Ok(Slot::Map),
        [BUNDLES, _] if BUNDLE_FIELDS.contains(&key) => Ok(Slot::Str),
        [BUNDLES, _] => Err(SchemaViolation(format!(
            "bundles hold only {POLICIES}, {}; not `{key}`",
            BUNDLE_FIELDS.join(", ")
        ))),
        [BUNDLES, _, POLICIES] => Ok(Slot::Str),
        [REVOCATIONS] => Err(SchemaViolation(format!(
            "the revocation buckets are fixed; `{key}` cannot be written under {REVOCATIONS}"
        ))),
        [REVOCATIONS, bucket] => {
            let right = revocation_bucket(key);
            if *bucket == right {
                Ok(Slot::Str)
            } else {
                Err(SchemaViolation(format!(
                    "the revocation of `{key}` belongs in bucket {right}, not {bucket}"
                )))
            }
        }
        [QUARANTINES] => Ok(Slot::Str),
        _ => Err(SchemaViolation(format!(
            "nothing may be written under {parent}"
        ))),
    }
}

/// Checks a bundle name: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with a dot.
pub fn check_bundle_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bundle name `{name}` is invalid: use 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'"
        ))
    }
}

/// What one change touches, computed from its operations before it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSummary {
    /// The change's hash, recomputed from its bytes.
    pub hash: ChangeHash,
    /// The change's actor.
    pub actor: ActorId,
    /// The change's dependencies.
    pub deps: Vec<ChangeHash>,
    /// The change's highest op counter: a Lamport clock, greater than every op
    /// in the change's causal past.
    pub max_op: u64,
    /// The author's timestamp (informational only; never used for decisions).
    pub time: i64,
    /// Every path the change writes or deletes.
    pub paths: BTreeSet<Path>,
}

impl ChangeSummary {
    /// The sections the change touches.
    pub fn sections(&self) -> BTreeSet<Section> {
        self.paths.iter().filter_map(Path::section).collect()
    }

    /// Names of the bundles the change touches.
    pub fn bundles(&self) -> BTreeSet<&str> {
        self.keys_in(BUNDLES, 1)
    }

    /// Subjects whose revocation the change writes or deletes.
    pub fn revocations(&self) -> BTreeSet<&str> {
        self.keys_in(REVOCATIONS, 2)
    }

    /// Subjects whose quarantine the change writes or deletes.
    pub fn quarantines(&self) -> BTreeSet<&str> {
        self.keys_in(QUARANTINES, 1)
    }

    fn keys_in(&self, section: &str, depth: usize) -> BTreeSet<&str> {
        self.paths
            .iter()
            .filter(|p| p.0.first().map(String::as_str) == Some(section))
            .filter_map(|p| p.0.get(depth).map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_deterministic() {
        assert_eq!(genesis().raw_bytes(), genesis().raw_bytes());
        assert_eq!(genesis_hash(), genesis().hash());
    }

    #[test]
    fn schema_slots() {
        let root = Path(vec![]);
        let b = Path(vec![BUNDLES.into()]);
        assert!(slot_at(&root, "bundles").is_err());
        assert_eq!(slot_at(&b, "team-a").unwrap(), Slot::Map);
        assert!(slot_at(&b, ".hidden").is_err());
        assert!(slot_at(&b, "").is_err());
        let bn = b.child("team-a");
        assert_eq!(slot_at(&bn, POLICIES).unwrap(), Slot::Map);
        assert_eq!(slot_at(&bn, "schema").unwrap(), Slot::Str);
        assert!(slot_at(&bn, "other").is_err());
        assert_eq!(slot_at(&bn.child(POLICIES), "p1").unwrap(), Slot::Str);
        assert!(slot_at(&bn.child(POLICIES).child("p1"), "x").is_err());
        let r = Path(vec![REVOCATIONS.into()]);
        let a = "User::\"a\"";
        // Buckets are fixed; a subject goes only in its own bucket.
        assert!(slot_at(&r, a).is_err());
        assert!(slot_at(&r, "000").is_err());
        let right = r.child(&revocation_bucket(a));
        assert_eq!(slot_at(&right, a).unwrap(), Slot::Str);
        let wrong = bucket_name(bucket_number(&revocation_bucket(a)).unwrap() ^ 1);
        let err = slot_at(&r.child(&wrong), a).unwrap_err();
        assert!(err.0.contains("belongs in bucket"), "{err}");
        assert!(slot_at(&right.child(a), "y").is_err());
        // Every bucket has a name of its own, and names read back.
        let names: BTreeSet<String> = (0..REVOCATION_BUCKETS as u16).map(bucket_name).collect();
        assert_eq!(names.len(), REVOCATION_BUCKETS);
        for (n, name) in names.iter().enumerate() {
            assert_eq!(bucket_number(name), Some(n as u16), "{name}");
        }
        for bad in ["", "00", "0000", "FFF", "g00", "+ff"] {
            assert_eq!(bucket_number(bad), None, "{bad}");
        }
        // Subjects spread over the buckets.
        let used: BTreeSet<String> = (0..20_000)
            .map(|i| revocation_bucket(&format!("User::\"u{i}\"")))
            .collect();
        assert!(used.len() > REVOCATION_BUCKETS * 9 / 10, "{}", used.len());
        assert!(slot_at(&right, &"x".repeat(MAX_KEY_LEN + 1)).is_err());
        // Every spelling of one uid has one bucket.
        assert_eq!(revocation_bucket(a), revocation_bucket(" User::\"a\" "));
    }
}
