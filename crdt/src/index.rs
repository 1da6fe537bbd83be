//! The scope index: which policies can possibly apply to a request.
//!
//! Cedar evaluates every policy of a set for every request, so a decision's
//! cost grows with the number of policies. Most policies, though, constrain
//! their scope: `principal in Group::"g"`, `action == Action::"read"`,
//! `resource in Folder::"f"`. A policy whose scope does not match a request
//! evaluates to false without evaluating its conditions, so it can neither
//! decide the request nor report an error. The index finds the policies whose
//! scope matches, and only those are evaluated.
//!
//! # Layout
//! Each policy (static or template-linked) is keyed by the entity its
//! principal constraint names (`==`, `in`, `is ... in`), or by *none* when it
//! names none (unconstrained or `is` alone), and within that by the entity its
//! resource constraint names, or none. A request looks up the keys *none*, the
//! principal itself and each of its ancestors, and within each hit the keys
//! *none*, the resource and each of its ancestors. Every policy found is then
//! checked against the whole scope (principal, action with its groups, and
//! resource, `is` included) with the same rules Cedar applies, and only a
//! match is a candidate. Ancestors come from the entity store Cedar itself
//! uses, whose transitive closure is computed once when the store is built:
//! that is the ancestor cache, and it is rebuilt whenever the entities change.
//!
//! # Exactness
//! Cedar's scope test never errors: `principal in X` for an entity the store
//! lacks is plain equality, and `is` compares types. So leaving out a policy
//! whose scope does not match changes neither the decision, nor the policies
//! that determined it, nor the errors. The differential property test in
//! `tests/index.rs` checks this against full evaluation.
//!
//! # Evaluation
//! A candidate without `when` or `unless` clauses is satisfied: its scope
//! matched, and it has nothing else to evaluate. The candidates with clauses
//! go (a linked one with its template) into a small `PolicySet` for Cedar's
//! authorizer, and the two parts are combined by Cedar's rule (see
//! `decide`). An entry points at the parsed bundle that holds its
//! policy, so the index costs little beyond the policies themselves. The
//! assembled sets are cached by candidate list for the index's version, so
//! requests alike (the same groups, the same folders) skip the assembly.
//!
//! The maps are persistent (`imbl`), so cloning a view is cheap and replacing
//! one bundle's policies costs only what that bundle holds.

use std::sync::Arc;

use std::collections::{BTreeMap, HashMap, HashSet};

use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, ResourceConstraint, SlotId,
};

use crate::bundle::ParsedBundle;

/// One policy in the index: its scope, its effect, and where it lives.
#[derive(Debug)]
pub struct IndexedPolicy {
    /// The policy's id in the merged set (`BUNDLE/ID`).
    pub id: PolicyId,
    /// The same id as text (`id.to_string()`, which escapes and so costs a
    /// formatting pass), kept for the reasons of every decision.
    pub id_text: String,
    /// Whether it is a `forbid`.
    pub forbid: bool,
    /// Whether it has `when` or `unless` clauses. A policy without them is
    /// satisfied exactly when its scope matches, and cannot error.
    pub conditional: bool,
    principal: PrincipalConstraint,
    action: ActionConstraint,
    resource: ResourceConstraint,
    /// The parsed bundle that holds the policy.
    source: Arc<ParsedBundle>,
    /// For a linked policy: its template's id and its slot values.
    link: Option<(PolicyId, HashMap<SlotId, EntityUid>)>,
}

impl IndexedPolicy {
    /// Indexes `policy`, a static or template-linked policy of `source`.
    /// Returns `None` for a linked policy whose template `source` lacks.
    pub fn new(policy: &Policy, source: &Arc<ParsedBundle>) -> Option<Self> {
        let link = match policy.template_id() {
            None => None,
            Some(tid) => {
                source.policies.template(tid)?;
                Some((tid.clone(), policy.template_links()?))
            }
        };
        Some(IndexedPolicy {
            id: policy.id().clone(),
            id_text: policy.id().to_string(),
            forbid: policy.effect() == Effect::Forbid,
            conditional: policy.has_non_scope_constraint(),
            principal: policy.principal_constraint(),
            action: policy.action_constraint(),
            resource: policy.resource_constraint(),
            source: source.clone(),
            link,
        })
    }

    /// Every static and linked policy of a parsed bundle, indexed, in id order.
    pub fn all_of(source: &Arc<ParsedBundle>) -> Vec<Arc<IndexedPolicy>> {
        let mut out: Vec<Arc<IndexedPolicy>> = source
            .policies
            .policies()
            .filter_map(|p| IndexedPolicy::new(p, source).map(Arc::new))
            .collect();
        out.sort_by_cached_key(|p| p.id.to_string());
        out
    }

    /// Adds this policy (with its template, if it is linked) to `set`.
    pub fn add_to(&self, set: &mut PolicySet) {
        match &self.link {
            None => {
                if let Some(policy) = self.source.policies.policy(&self.id) {
                    // Ids are unique across the index, so adding cannot collide.
                    let _ = set.add(policy.clone());
                }
            }
            Some((tid, values)) => {
                if set.template(tid).is_none()
                    && let Some(template) = self.source.policies.template(tid)
                {
                    let _ = set.add_template(template.clone());
                }
                let _ = set.link(tid.clone(), self.id.clone(), values.clone());
            }
        }
    }

    fn principal_key(&self) -> Option<&EntityUid> {
        match &self.principal {
            PrincipalConstraint::Eq(u)
            | PrincipalConstraint::In(u)
            | PrincipalConstraint::IsIn(_, u) => Some(u),
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
        }
    }

    fn resource_key(&self) -> Option<&EntityUid> {
        match &self.resource {
            ResourceConstraint::Eq(u)
            | ResourceConstraint::In(u)
            | ResourceConstraint::IsIn(_, u) => Some(u),
            ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
        }
    }

    /// Whether the policy's scope matches the request, by Cedar's rules:
    /// `x in e` holds when `x == e` or `e` is an ancestor of `x` in `entities`.
    pub fn scope_matches(
        &self,
        entities: &Entities,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> bool {
        self.matches(
            entities,
            &Resolved::new(entities, principal, action, resource),
        )
    }

    /// [`IndexedPolicy::scope_matches`] with the request's ancestors already
    /// looked up.
    fn matches(&self, entities: &Entities, r: &Resolved<'_>) -> bool {
        let p = match &self.principal {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(u) => r.principal == u,
            PrincipalConstraint::In(u) => r.principal_in(u),
            PrincipalConstraint::Is(t) => r.principal.type_name() == t,
            PrincipalConstraint::IsIn(t, u) => r.principal.type_name() == t && r.principal_in(u),
        };
        if !p {
            return false;
        }
        let a = match &self.action {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(u) => r.action == u,
            ActionConstraint::In(us) => us
                .iter()
                .any(|u| r.action == u || entities.is_ancestor_of(u, r.action)),
        };
        if !a {
            return false;
        }
        match &self.resource {
            ResourceConstraint::Any => true,
            ResourceConstraint::Eq(u) => r.resource == u,
            ResourceConstraint::In(u) => r.resource_in(u),
            ResourceConstraint::Is(t) => r.resource.type_name() == t,
            ResourceConstraint::IsIn(t, u) => r.resource.type_name() == t && r.resource_in(u),
        }
    }
}

/// A request's principal and resource with their ancestors, looked up in
/// the entities once for the whole decision, so each uid is hashed with
/// Cedar's map once rather than once per check.
pub struct Resolved<'q> {
    /// The principal.
    pub principal: &'q EntityUid,
    /// Its ancestors (transitively, as Cedar's entities hold them).
    pub principal_ancestors: Vec<&'q EntityUid>,
    /// The action.
    pub action: &'q EntityUid,
    /// The resource.
    pub resource: &'q EntityUid,
    /// Its ancestors.
    pub resource_ancestors: Vec<&'q EntityUid>,
}

impl<'q> Resolved<'q> {
    /// Looks up the ancestors of `principal` and `resource` in `entities`.
    pub fn new(
        entities: &'q Entities,
        principal: &'q EntityUid,
        action: &'q EntityUid,
        resource: &'q EntityUid,
    ) -> Self {
        Resolved {
            principal,
            principal_ancestors: entities
                .ancestors(principal)
                .into_iter()
                .flatten()
                .collect(),
            action,
            resource,
            resource_ancestors: entities.ancestors(resource).into_iter().flatten().collect(),
        }
    }

    fn principal_in(&self, e: &EntityUid) -> bool {
        self.principal == e || self.principal_ancestors.contains(&e)
    }

    fn resource_in(&self, e: &EntityUid) -> bool {
        self.resource == e || self.resource_ancestors.contains(&e)
    }
}

/// The policies at one (principal key, resource key); order carries no meaning.
type Bucket = Vec<Arc<IndexedPolicy>>;

/// Policies that share a principal key, by resource key. Most principal keys
/// have one or a few resource keys, so they are a sorted `Vec`, which costs a
/// fraction of a hash map's memory and is searched in O(log n).
#[derive(Clone, Debug, Default)]
struct ByResource {
    unkeyed: Bucket,
    keyed: Vec<(EntityUid, Bucket)>,
}

impl ByResource {
    fn bucket_mut(&mut self, key: Option<&EntityUid>) -> &mut Bucket {
        let Some(k) = key else {
            return &mut self.unkeyed;
        };
        let at = match self.keyed.binary_search_by(|(e, _)| e.cmp(k)) {
            Ok(at) => at,
            Err(at) => {
                self.keyed.insert(at, (k.clone(), Bucket::new()));
                at
            }
        };
        &mut self.keyed[at].1
    }

    fn bucket(&self, key: &EntityUid) -> Option<&Bucket> {
        self.keyed
            .binary_search_by(|(e, _)| e.cmp(key))
            .ok()
            .map(|at| &self.keyed[at].1)
    }

    fn drop_if_empty(&mut self, key: &EntityUid) {
        if let Ok(at) = self.keyed.binary_search_by(|(e, _)| e.cmp(key))
            && self.keyed[at].1.is_empty()
        {
            self.keyed.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.unkeyed.is_empty() && self.keyed.is_empty()
    }
}

/// Policies keyed by the entities their principal and resource scopes name.
///
/// The outer map is persistent and each principal key's part sits behind an
/// `Arc`, so a clone shares everything and a change copies only the parts of
/// the keys it touches.
#[derive(Clone, Debug, Default)]
pub struct ScopeIndex {
    unkeyed: Arc<ByResource>,
    keyed: imbl::GenericHashMap<
        EntityUid,
        Arc<ByResource>,
        crate::FastHash,
        imbl::shared_ptr::DefaultSharedPtr,
    >,
    len: usize,
    sets: SetCache,
}

/// Policy sets already assembled from candidate lists, keyed by the entries'
/// addresses. It belongs to one version of the index: any change starts a new
/// cache, so an address always names the entry it was taken from (the index
/// version that owns the cache keeps those entries alive).
#[derive(Clone)]
struct SetCache(Arc<quick_cache::sync::Cache<Vec<usize>, Arc<PolicySet>>>);

/// How many assembled sets an index version keeps. Requests that share a
/// principal's groups and a resource's folders share a set, so a few thousand
/// cover the working set of a site; each costs about 1-2 KB per policy in it.
const SET_CACHE_CAPACITY: usize = 4_096;

impl Default for SetCache {
    fn default() -> Self {
        SetCache(Arc::new(quick_cache::sync::Cache::new(SET_CACHE_CAPACITY)))
    }
}

impl std::fmt::Debug for SetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SetCache({} sets)", self.0.len())
    }
}

impl ScopeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many policies the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no policy.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn by_resource_mut(&mut self, key: Option<&EntityUid>) -> &mut ByResource {
        match key {
            None => Arc::make_mut(&mut self.unkeyed),
            Some(k) => Arc::make_mut(self.keyed.entry(k.clone()).or_default()),
        }
    }

    /// The candidates in one policy set, ready for Cedar's authorizer. Sets
    /// are cached per index version, keyed by the candidates.
    pub fn policy_set(&self, candidates: &[&Arc<IndexedPolicy>]) -> Arc<PolicySet> {
        let mut key: Vec<usize> = candidates.iter().map(|c| Arc::as_ptr(c) as usize).collect();
        key.sort_unstable();
        if let Some(set) = self.sets.0.get(&key) {
            return set;
        }
        let mut set = PolicySet::new();
        for c in candidates {
            c.add_to(&mut set);
        }
        let set = Arc::new(set);
        self.sets.0.insert(key, set.clone());
        set
    }

    /// Adds `policies`. Their ids must not be in the index already (the view
    /// removes a bundle's old policies before it adds the new ones, and ids
    /// are unique across bundles).
    pub fn insert_all<'a>(&mut self, policies: impl IntoIterator<Item = &'a Arc<IndexedPolicy>>) {
        self.sets = SetCache::default();
        for p in policies {
            self.by_resource_mut(p.principal_key())
                .bucket_mut(p.resource_key())
                .push(p.clone());
            self.len += 1;
        }
    }

    /// Removes `policies`, the same entries (by pointer) that were inserted.
    pub fn remove_all<'a>(&mut self, policies: impl IntoIterator<Item = &'a Arc<IndexedPolicy>>) {
        self.sets = SetCache::default();
        // Group by key, so each bucket is filtered once.
        type Key<'k> = (Option<&'k EntityUid>, Option<&'k EntityUid>);
        let mut groups: BTreeMap<Key<'a>, HashSet<*const IndexedPolicy>> = BTreeMap::new();
        for p in policies {
            groups
                .entry((p.principal_key(), p.resource_key()))
                .or_default()
                .insert(Arc::as_ptr(p));
        }
        for ((pk, rk), gone) in groups {
            if pk.is_some_and(|k| !self.keyed.contains_key(k)) {
                continue;
            }
            let by_resource = self.by_resource_mut(pk);
            if rk.is_some_and(|k| by_resource.bucket(k).is_none()) {
                continue;
            }
            let bucket = by_resource.bucket_mut(rk);
            let before = bucket.len();
            bucket.retain(|p| !gone.contains(&Arc::as_ptr(p)));
            let removed = before - bucket.len();
            if let Some(k) = rk {
                by_resource.drop_if_empty(k);
            }
            if by_resource.is_empty()
                && let Some(k) = pk
            {
                self.keyed.remove(k);
            }
            self.len -= removed;
        }
    }

    /// The policies whose scope matches the request.
    pub fn candidates<'a>(
        &'a self,
        entities: &Entities,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Vec<&'a Arc<IndexedPolicy>> {
        self.candidates_for(
            entities,
            &Resolved::new(entities, principal, action, resource),
        )
    }

    /// [`ScopeIndex::candidates`] with the request's ancestors already
    /// looked up.
    pub fn candidates_for<'a>(
        &'a self,
        entities: &Entities,
        r: &Resolved<'_>,
    ) -> Vec<&'a Arc<IndexedPolicy>> {
        let query = Query { entities, r };
        let mut found = Vec::new();
        query.visit(&self.unkeyed, &mut found);
        for p in std::iter::once(&r.principal).chain(&r.principal_ancestors) {
            if let Some(by) = self.keyed.get(*p) {
                query.visit(by, &mut found);
            }
        }
        found
    }
}

/// One request's lookup.
struct Query<'q> {
    entities: &'q Entities,
    r: &'q Resolved<'q>,
}

impl Query<'_> {
    fn visit<'a>(&self, by: &'a ByResource, found: &mut Vec<&'a Arc<IndexedPolicy>>) {
        self.visit_bucket(&by.unkeyed, found);
        if by.keyed.is_empty() {
            return;
        }
        for key in std::iter::once(&self.r.resource).chain(&self.r.resource_ancestors) {
            if let Some(bucket) = by.bucket(key) {
                self.visit_bucket(bucket, found);
            }
        }
    }

    fn visit_bucket<'a>(&self, bucket: &'a Bucket, found: &mut Vec<&'a Arc<IndexedPolicy>>) {
        for p in bucket {
            if p.matches(self.entities, self.r) {
                found.push(p);
            }
        }
    }
}
