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
//! │                            description?: "<text>" } }
//! ├── revocations:  { SUBJECT: "<revocation record JSON>" }
//! └── quarantines:  { SUBJECT: "<quarantine record JSON>" }
//! ```
//!
//! The three top-level maps are created by the [`genesis`] change, which is
//! byte-for-byte the same on every replica (fixed actor, time 0), so no two
//! replicas ever race to create them. Every later change may only touch the
//! paths listed in [`Section`], with the operations that [`classify_op`]
//! allows; anything else is a [`SchemaViolation`].

use std::collections::BTreeSet;
use std::fmt;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjType, ROOT};

/// Top-level key of the bundles map.
pub const BUNDLES: &str = "bundles";
/// Top-level key of the revocations map.
pub const REVOCATIONS: &str = "revocations";
/// Top-level key of the quarantines map.
pub const QUARANTINES: &str = "quarantines";
/// Key of a bundle's policies map.
pub const POLICIES: &str = "policies";
/// Scalar fields a bundle may hold besides its policies.
pub const BUNDLE_FIELDS: [&str; 4] = ["schema", "entities", "links", "description"];

/// The actor id of the genesis change. No operator key can produce it: operator
/// actors are 40 bytes long (see `protocol`), this one is 16.
pub const GENESIS_ACTOR: [u8; 16] = *b"weft-genesis-v1\0";

/// Longest bundle name, policy id or subject accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Builds the genesis change: the three empty top-level maps.
///
/// It is a pure function of this crate's version, so every replica derives
/// the same bytes and the same hash.
pub fn genesis() -> Change {
    let mut doc = Automerge::new().with_actor(ActorId::from(GENESIS_ACTOR));
    let mut tx = doc.transaction();
    for key in [BUNDLES, QUARANTINES, REVOCATIONS] {
        tx.put_object(ROOT, key, ObjType::Map)
            .expect("putting a map into an empty document cannot fail");
    }
    tx.commit_with(CommitOptions::default().with_time(0));
    doc.get_last_local_change()
        .expect("the genesis transaction made a change")
}

/// The hash of the [`genesis`] change.
pub fn genesis_hash() -> ChangeHash {
    genesis().hash()
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
        [REVOCATIONS] | [QUARANTINES] => Ok(Slot::Str),
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
        self.keys_in(BUNDLES)
    }

    /// Subjects whose revocation the change writes or deletes.
    pub fn revocations(&self) -> BTreeSet<&str> {
        self.keys_in(REVOCATIONS)
    }

    /// Subjects whose quarantine the change writes or deletes.
    pub fn quarantines(&self) -> BTreeSet<&str> {
        self.keys_in(QUARANTINES)
    }

    fn keys_in(&self, section: &str) -> BTreeSet<&str> {
        self.paths
            .iter()
            .filter(|p| p.0.first().map(String::as_str) == Some(section))
            .filter_map(|p| p.0.get(1).map(String::as_str))
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
        assert_eq!(slot_at(&r, "User::\"a\"").unwrap(), Slot::Str);
        assert!(slot_at(&r.child("x"), "y").is_err());
        assert!(slot_at(&r, &"x".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
