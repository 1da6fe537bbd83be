//! The materialized [`PolicyView`]: everything a decision needs, built from the
//! document and kept up to date incrementally.
//!
//! A view is cheap to clone (persistent maps and `Arc`s), so the node can swap
//! a new one in atomically after each applied change while readers keep the
//! old one.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use automerge::ChangeHash;
use cedar_policy::{Entities, EntityUid, PolicySet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::{BundleContent, BundleError, ParsedBundle};
use crate::index::{IndexedPolicy, ScopeIndex};

/// One side of a conflict: a value written concurrently with another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictSide {
    /// Hex of the actor that wrote it; `protocol` maps actors to signers.
    pub actor: String,
    /// A short fingerprint of the value (hex of its SHA-256, first 8 bytes).
    pub value: String,
    /// Whether this side is the one the merge chose.
    pub winner: bool,
}

/// Concurrent writes to one path, and how the merge resolved them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The path written concurrently, e.g. `bundles/team/policies/p1`.
    pub path: String,
    /// Every side, the winner marked. The winner is automerge's deterministic
    /// choice (the greatest op id), the same on every replica.
    pub sides: Vec<ConflictSide>,
}

/// One live operation in the document: its actor (hex) and counter. The
/// pair names the change that holds it (the actor's change whose op range
/// covers the counter), so it is how an item leads to the changes, and the
/// signatures, that wrote what it holds now; an actor alone does not, since
/// an author lane writes many changes with one actor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpRef {
    /// Hex of the operation's actor.
    pub actor: String,
    /// The operation's counter.
    pub counter: u64,
}

impl OpRef {
    /// The operation an object id names (`None` for the root).
    pub(crate) fn of(id: &automerge::ObjId) -> Option<OpRef> {
        match id {
            automerge::ObjId::Root => None,
            automerge::ObjId::Id(counter, actor, _) => Some(OpRef {
                actor: hex::encode(actor.to_bytes()),
                counter: *counter,
            }),
        }
    }

    /// The distinct actors (hex, sorted) of `writes`.
    pub(crate) fn actors(writes: &[OpRef]) -> Vec<String> {
        let actors: std::collections::BTreeSet<&str> =
            writes.iter().map(|w| w.actor.as_str()).collect();
        actors.into_iter().map(str::to_owned).collect()
    }
}

/// A revocation as recorded in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The revoked subject, canonical: a Cedar entity uid or a node id.
    pub subject: String,
    /// The reason the winning record gives.
    pub reason: String,
    /// Hex of the actors whose records are live (concurrent revocations of one
    /// subject each stay until a reinstatement that saw them removes them).
    pub actors: Vec<String>,
    /// The operations that wrote the live records, sorted.
    #[serde(default)]
    pub writes: Vec<OpRef>,
}

/// The record stored at `revocations/BUCKET/SUBJECT`, as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// Why the subject was revoked.
    #[serde(default)]
    pub reason: String,
    /// Digest of the state the revocation was written on. It makes every
    /// record unique, so writing one is always a fresh put: automerge elides a
    /// put of a value equal to the current one (turning it into a delete of
    /// the conflicting values), and a revocation must never be elided.
    #[serde(default)]
    pub after: String,
}

/// A bundle as the view sees it.
#[derive(Clone, Debug)]
pub struct BundleState {
    /// The bundle's name.
    pub name: String,
    /// The merged content currently in the document.
    pub merged: BundleContent,
    /// The version in force: the merged content when it is valid, otherwise
    /// the last good version (see [`crate::PolicyDoc`] for the rule).
    pub effective: Option<Arc<ParsedBundle>>,
    /// The content of the version in force.
    pub effective_content: Option<BundleContent>,
    /// The change whose state the effective version comes from, when it is
    /// not the merged content.
    pub fallback_from: Option<ChangeHash>,
    /// Why the merged content is not in force, if it is not.
    pub error: Option<BundleError>,
    /// Concurrent writes in this bundle.
    pub conflicts: Vec<Conflict>,
    /// Hex of the actors that wrote what the bundle holds now (every side of
    /// a conflict included), sorted.
    pub authors: Vec<String>,
    /// The operations that wrote what the bundle holds now (every side of a
    /// conflict included), sorted.
    pub writes: Vec<OpRef>,
    /// The effective version's policies, indexed by scope.
    pub indexed: Arc<Vec<Arc<IndexedPolicy>>>,
}

/// The routes and trusted issuers in force: what a proxy's question needs
/// besides the policies.
#[derive(Clone, Debug, Default)]
pub struct Gateway {
    /// Every bundle's routes, merged.
    pub routes: crate::routes::RouteTable,
    /// Every bundle's trusted issuers, merged.
    pub issuers: crate::issuers::Issuers,
}

/// Everything a decision needs, materialized from the document.
#[derive(Clone, Debug)]
pub struct PolicyView {
    pub(crate) bundles: imbl::OrdMap<String, Arc<BundleState>>,
    /// The merged policy set, assembled on first use (decisions use `index`).
    pub(crate) policies: Arc<OnceLock<PolicySet>>,
    /// The merged routes and issuers, assembled on first use.
    pub(crate) gateway: Arc<OnceLock<Gateway>>,
    /// Every effective policy, indexed by scope.
    pub(crate) index: ScopeIndex,
    pub(crate) entities: Arc<Entities>,
    /// Every uid that a stored entity has as an ancestor, defined by a
    /// bundle or only named as a parent ([`ancestors_of_all`]).
    pub(crate) entity_ancestors: Arc<HashSet<EntityUid, crate::FastHash>>,
    pub(crate) entity_errors: Arc<Vec<String>>,
    pub(crate) revoked: imbl::OrdMap<String, Revocation>,
    /// The revoked subjects that are Cedar uids, for lookups without formatting.
    pub(crate) revoked_uids:
        imbl::GenericHashSet<EntityUid, crate::FastHash, imbl::shared_ptr::DefaultSharedPtr>,
    /// The quarantine record of each subject that is shown and decided on
    /// ([`crate::quarantine::merge_sides`]).
    pub(crate) quarantines: imbl::OrdMap<String, String>,
    /// The other records of subjects that concurrent node orders wrote
    /// (rare); each is decided on too.
    pub(crate) quarantine_others: imbl::OrdMap<String, Arc<Vec<String>>>,
    pub(crate) heads: Arc<Vec<ChangeHash>>,
    pub(crate) digest: String,
}

impl Default for PolicyView {
    fn default() -> Self {
        PolicyView {
            bundles: imbl::OrdMap::new(),
            policies: Arc::new(OnceLock::new()),
            gateway: Arc::new(OnceLock::new()),
            index: ScopeIndex::new(),
            entities: Arc::new(Entities::empty()),
            entity_ancestors: Arc::default(),
            entity_errors: Arc::new(Vec::new()),
            revoked: imbl::OrdMap::new(),
            revoked_uids: imbl::GenericHashSet::default(),
            quarantines: imbl::OrdMap::new(),
            quarantine_others: imbl::OrdMap::new(),
            heads: Arc::new(Vec::new()),
            digest: digest_of(&[]),
        }
    }
}

/// Canonical text of a subject: a Cedar uid re-rendered, anything else as given.
pub fn canonical_subject(subject: &str) -> String {
    let subject = subject.trim();
    if !subject.contains("::") {
        // No Cedar uid lacks the separator (a node id, say): Cedar would
        // refuse it, and its refusal is the costly path.
        return subject.to_owned();
    }
    if is_plain_uid(subject) {
        // Cedar would render it back unchanged (or refuse it, which keeps it
        // as given too); parsing costs more than the rest of a revocation's
        // path through the view.
        return subject.to_owned();
    }
    match EntityUid::from_str(subject) {
        Ok(uid) => uid.to_string(),
        Err(_) => subject.to_owned(),
    }
}

/// The Cedar uid that a canonical subject names, if it names one.
///
/// A subject in the plain form (see [`canonical_subject`]) is assembled from
/// its type, parsed once per thread and remembered, and its id, which needs
/// no unescaping: parsing the whole uid costs more than the rest of a
/// revocation's path through the view. Anything else goes through Cedar's
/// parser.
pub fn uid_of_canonical(subject: &str) -> Option<EntityUid> {
    use cedar_policy::{EntityId, EntityTypeName};
    use std::cell::RefCell;
    use std::collections::HashMap;
    /// Distinct types kept per thread (they are few: `User`, `Node`, ...).
    const CACHED_TYPES: usize = 64;
    thread_local! {
        static TYPES: RefCell<HashMap<String, Option<EntityTypeName>>> = RefCell::new(HashMap::new());
    }
    if !subject.contains("::") {
        return None;
    }
    if !is_plain_uid(subject) {
        return EntityUid::from_str(subject).ok();
    }
    let (path, id) = subject
        .strip_suffix('"')
        .and_then(|b| b.split_once("::\""))
        .expect("a plain uid has a type and a quoted id");
    let type_name = TYPES.with(|t| {
        let mut t = t.borrow_mut();
        if let Some(known) = t.get(path) {
            return known.clone();
        }
        if t.len() >= CACHED_TYPES {
            t.clear();
        }
        let parsed = EntityTypeName::from_str(path).ok();
        t.insert(path.to_owned(), parsed.clone());
        parsed
    })?;
    Some(EntityUid::from_type_name_and_id(
        type_name,
        EntityId::new(id),
    ))
}

/// Whether `s` is `Name(::Name)*::"id"` with ASCII identifiers and an id of
/// printable ASCII other than quotes and backslashes: the form in which
/// Cedar renders a uid, with nothing it would escape or respace.
fn is_plain_uid(s: &str) -> bool {
    let Some(body) = s.strip_suffix('"') else {
        return false;
    };
    let Some((path, id)) = body.split_once("::\"") else {
        return false;
    };
    let ident = |n: &str| {
        let mut chars = n.bytes();
        chars
            .next()
            .is_some_and(|c| c == b'_' || c.is_ascii_alphabetic())
            && chars.all(|c| c == b'_' || c.is_ascii_alphanumeric())
    };
    path.split("::").all(ident)
        && id
            .bytes()
            .all(|c| (b' '..=b'~').contains(&c) && !matches!(c, b'"' | b'\\' | b'\''))
}

/// Every uid that an entity of `entities` has as an ancestor, direct or
/// not. A parent that no entity defines is in it too: it is the uid a
/// request's own entity would have to define to give a stored entity new
/// ancestors ([`crate::decide::check_request_entities`]).
pub(crate) fn ancestors_of_all(entities: &Entities) -> HashSet<EntityUid, crate::FastHash> {
    entities
        .iter()
        .flat_map(|e| {
            entities
                .ancestors(&e.uid())
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Hex SHA-256 over the sorted heads: the state's digest.
pub(crate) fn digest_of(heads: &[ChangeHash]) -> String {
    let mut sorted: Vec<&ChangeHash> = heads.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    h.update(b"weft/state/v1");
    for head in sorted {
        h.update(head.0);
    }
    hex::encode(h.finalize())
}

/// A comparable summary of a view: two views that agree on it decide alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViewSummary {
    /// State digest.
    pub digest: String,
    /// Effective policy text by id, sorted.
    pub policies: BTreeMap<String, String>,
    /// Bundle name to (merged content, effective content, error text).
    pub bundles: BTreeMap<String, (BundleContent, Option<BundleContent>, Option<String>)>,
    /// Bundle conflicts.
    pub conflicts: BTreeMap<String, Vec<Conflict>>,
    /// Revocations.
    pub revoked: BTreeMap<String, Revocation>,
    /// Entity uids in the merged entities, sorted.
    pub entities: Vec<String>,
    /// Quarantine records.
    pub quarantines: BTreeMap<String, String>,
}

impl PolicyView {
    /// The merged policy set in force: every bundle's effective version.
    /// Assembled on first use and kept with this view; decisions do not need
    /// it (they go through [`PolicyView::index`]).
    pub fn policies(&self) -> &PolicySet {
        self.policies.get_or_init(|| {
            let mut set = PolicySet::new();
            for b in self.bundles.values() {
                if let Some(parsed) = &b.effective {
                    // Ids are `BUNDLE/ID` and bundle names hold no '/', so
                    // bundles never collide.
                    let _ = set.merge(&parsed.policies, false);
                }
            }
            set
        })
    }

    /// Every bundle's routes and trusted issuers, merged in bundle name
    /// order ([`crate::routes`], [`crate::issuers`]). Assembled on first use
    /// and kept with this view.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.get_or_init(|| {
            let parsed = || {
                self.bundles
                    .iter()
                    .filter_map(|(name, b)| b.effective.as_ref().map(|p| (name.as_str(), p)))
            };
            Gateway {
                routes: crate::routes::RouteTable::build(
                    parsed().filter_map(|(n, p)| p.routes.as_deref().map(|r| (n, r))),
                ),
                issuers: crate::issuers::Issuers::build(
                    parsed().filter_map(|(n, p)| p.issuers.as_deref().map(|i| (n, i))),
                ),
            }
        })
    }

    /// The scope index over every effective policy.
    pub fn index(&self) -> &ScopeIndex {
        &self.index
    }

    /// The merged entities of every bundle.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// Whether a stored entity has `uid` as an ancestor (direct or not),
    /// whether or not a bundle defines `uid`.
    pub fn is_stored_ancestor(&self, uid: &EntityUid) -> bool {
        self.entity_ancestors.contains(uid)
    }

    /// Entity uids defined by more than one bundle (the first bundle by name wins).
    pub fn entity_errors(&self) -> &[String] {
        &self.entity_errors
    }

    /// Bundles by name.
    pub fn bundles(&self) -> impl Iterator<Item = &BundleState> {
        self.bundles.values().map(|b| b.as_ref())
    }

    /// One bundle.
    pub fn bundle(&self, name: &str) -> Option<&BundleState> {
        self.bundles.get(name).map(|b| b.as_ref())
    }

    /// The revocation of `subject` (canonicalized), if it is revoked.
    pub fn revocation(&self, subject: &str) -> Option<&Revocation> {
        self.revoked.get(&canonical_subject(subject))
    }

    /// Whether the exact canonical subject text is revoked.
    pub fn is_revoked_canonical(&self, subject: &str) -> bool {
        self.revoked.contains_key(subject)
    }

    /// Whether this Cedar uid is revoked (no formatting, one hash lookup).
    pub fn is_uid_revoked(&self, uid: &EntityUid) -> bool {
        self.revoked_uids.contains(uid)
    }

    /// All revocations, by subject.
    pub fn revocations(&self) -> impl Iterator<Item = &Revocation> {
        self.revoked.values()
    }

    /// How many subjects are revoked.
    pub fn revocation_count(&self) -> usize {
        self.revoked.len()
    }

    /// Raw quarantine records by subject.
    pub fn quarantines(&self) -> impl Iterator<Item = (&String, &String)> {
        self.quarantines.iter()
    }

    /// The raw quarantine record of `subject` (canonical form).
    pub fn quarantine_record(&self, subject: &str) -> Option<&String> {
        self.quarantines.get(subject)
    }

    /// Every raw quarantine record of `subject` that is decided on: the one
    /// [`PolicyView::quarantine_record`] shows, then those of concurrent node
    /// orders ([`crate::quarantine::merge_sides`]).
    pub fn quarantine_records(&self, subject: &str) -> impl Iterator<Item = &String> {
        self.quarantines.get(subject).into_iter().chain(
            self.quarantine_others
                .get(subject)
                .into_iter()
                .flat_map(|o| o.iter()),
        )
    }

    /// Every raw quarantine record decided on, with its subject.
    pub fn all_quarantine_records(&self) -> impl Iterator<Item = (&String, &String)> {
        self.quarantines.iter().chain(
            self.quarantine_others
                .iter()
                .flat_map(|(s, o)| o.iter().map(move |r| (s, r))),
        )
    }

    /// Whether any quarantine record exists.
    pub fn has_quarantines(&self) -> bool {
        !self.quarantines.is_empty()
    }

    /// The heads of the document this view was built from.
    pub fn heads(&self) -> &[ChangeHash] {
        &self.heads
    }

    /// Hex digest of the state (of its sorted heads).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Every conflict in every bundle.
    pub fn conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.bundles.values().flat_map(|b| b.conflicts.iter())
    }

    /// A comparable summary, for tests and for checking replicas agree.
    pub fn summary(&self) -> ViewSummary {
        let mut policies = BTreeMap::new();
        for p in self.policies().policies() {
            policies.insert(p.id().to_string(), p.to_string());
        }
        for t in self.policies().templates() {
            policies.insert(t.id().to_string(), t.to_string());
        }
        let mut entities: Vec<String> = self.entities.iter().map(|e| e.uid().to_string()).collect();
        entities.sort();
        ViewSummary {
            digest: self.digest.clone(),
            policies,
            bundles: self
                .bundles
                .iter()
                .map(|(k, b)| {
                    (
                        k.clone(),
                        (
                            b.merged.clone(),
                            b.effective_content.clone(),
                            b.error.as_ref().map(ToString::to_string),
                        ),
                    )
                })
                .collect(),
            conflicts: self
                .bundles
                .iter()
                .filter(|(_, b)| !b.conflicts.is_empty())
                .map(|(k, b)| (k.clone(), b.conflicts.clone()))
                .collect(),
            revoked: self
                .revoked
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            entities,
            quarantines: self
                .quarantines
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `canonical_subject` gives without its shortcut.
    fn through_cedar(subject: &str) -> String {
        match EntityUid::from_str(subject.trim()) {
            Ok(uid) => uid.to_string(),
            Err(_) => subject.trim().to_owned(),
        }
    }

    #[test]
    fn the_shortcut_takes_only_what_cedar_renders_unchanged() {
        for s in [
            r#"User::"alice""#,
            r#"Acme::Corp::User::"a b-c.d@e""#,
            r#"_T1::"""#,
            r#"if::"x""#,
            r#"User::"it's""#,
            r#"User::"caf\u{e9}""#,
            r#"User :: "alice""#,
            r#"User::"a\"b""#,
            "User::\"tab\there\"",
            "  User::\"padded\"  ",
            r#"1User::"x""#,
            r#"::"x""#,
            "alice",
            "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            r#"User:"x""#,
            r#"User: :"x""#,
        ] {
            assert_eq!(canonical_subject(s), through_cedar(s), "{s:?}");
        }
        assert!(is_plain_uid(r#"User::"alice""#));
        assert!(!is_plain_uid(r#"User :: "alice""#));
        assert!(!is_plain_uid(r#"User::"it's""#));
    }

    #[test]
    fn uids_are_assembled_as_cedar_parses_them() {
        for s in [
            r#"User::"alice""#,
            r#"Acme::Corp::User::"a b-c.d@e""#,
            r#"if::"x""#,
            r#"User::"it's""#,
            r#"User::"caf\u{e9}""#,
            r#"User::"a\"b""#,
            "alice",
            r#"User::"""#,
        ] {
            let canonical = canonical_subject(s);
            assert_eq!(
                uid_of_canonical(&canonical),
                EntityUid::from_str(&canonical).ok(),
                "{s:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn uid_of_canonical_agrees_with_cedar(
            s in r#"[A-Za-z_0-9]{0,3}(::[A-Za-z_0-9]{0,3}){0,2}::"[ -~\u{e9}]{0,6}""#
        ) {
            let canonical = canonical_subject(&s);
            prop_assert_eq!(
                uid_of_canonical(&canonical),
                EntityUid::from_str(&canonical).ok()
            );
        }
    }

    proptest! {
        /// Text without `::` (node ids among it) is never a uid.
        #[test]
        fn text_without_a_separator_is_no_uid(s in r#"[ -~\t\u{e9}]{0,16}"#) {
            prop_assume!(!s.contains("::"));
            prop_assert_eq!(canonical_subject(&s), through_cedar(&s));
            prop_assert_eq!(uid_of_canonical(&s), EntityUid::from_str(&s).ok());
        }
    }

    proptest! {
        #[test]
        fn canonical_subject_agrees_with_cedar(
            s in r#"[ ]?[A-Za-z_0-9:]{0,3}(::[A-Za-z_0-9 ]{0,3}){0,2}::"[ -~\t\u{e9}]{0,6}"[ ]?"#
        ) {
            prop_assert_eq!(canonical_subject(&s), through_cedar(&s));
        }
    }
}
