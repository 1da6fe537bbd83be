//! The pure decision function: `decide(view, request) -> Decision`.
//!
//! Order of checks:
//! 0. **Request entities.** A request may bring entities of its own, but
//!    only new ones: one that a bundle defines, or that a stored entity has
//!    as an ancestor (defined or only named as a parent), is refused
//!    ([`check_request_entities`]), since it would give stored entities
//!    ancestors the bundles do not give them. The answer is deny with the
//!    reason.
//! 1. **Revocation.** If the principal or the resource, or any of their
//!    ancestors (from the bundles' entities and the request's), is revoked, the
//!    answer is deny with `revoked: true`, whatever the policies say.
//! 2. **Cedar.** The policies whose scope matches the request (found with the
//!    scope index, [`crate::index`]) are evaluated with Cedar's authorizer;
//!    the others could neither match nor error.
//! 3. **Fail closed.** Cedar skips a policy whose evaluation errors. For a
//!    `permit` that is safe (it grants nothing), but a skipped `forbid` could
//!    let a request through. So when Cedar allows and any `forbid` errored,
//!    the answer becomes deny, and the erroring forbids are the reasons.

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityUid,
    Request as CedarRequest,
};
use std::collections::BTreeSet;

use serde::Serialize;

use crate::bundle::one_line;
use crate::view::PolicyView;

/// An authorization request: a Cedar request plus entities of its own.
#[derive(Clone, Debug)]
pub struct Request {
    cedar: CedarRequest,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    /// Entities that come with the request, added to the bundles' entities.
    pub entities: Vec<Entity>,
}

impl Request {
    /// A request with an empty context and no entities of its own.
    pub fn new(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Self::with_context(principal, action, resource, Context::empty(), Vec::new())
            .expect("a request without a schema and with an empty context is always valid")
    }

    /// A request with a context and entities of its own.
    pub fn with_context(
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Context,
        entities: Vec<Entity>,
    ) -> Result<Self, String> {
        let cedar = CedarRequest::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            None,
        )
        .map_err(|e| one_line(&e))?;
        Ok(Request {
            cedar,
            principal,
            action,
            resource,
            entities,
        })
    }

    /// Who asks.
    pub fn principal(&self) -> &EntityUid {
        &self.principal
    }

    /// What they want to do.
    pub fn action(&self) -> &EntityUid {
        &self.action
    }

    /// What they want to do it to.
    pub fn resource(&self) -> &EntityUid {
        &self.resource
    }

    /// The request as Cedar sees it.
    pub fn cedar(&self) -> &CedarRequest {
        &self.cedar
    }
}

/// Why a request's own entities are refused ([`check_request_entities`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestEntityError {
    /// The request defines an entity that a bundle defines.
    #[error(
        "request entity {0} is defined by the policy bundles: a request may add new entities but not redefine stored ones"
    )]
    Redefines(String),
    /// The request defines an entity that a stored entity has as an
    /// ancestor, which would change the stored entity's memberships.
    #[error(
        "request entity {0} is an ancestor of an entity the policy bundles define: a request may not change the memberships of stored entities"
    )]
    AncestorOfStored(String),
}

/// Checks that a request's own entities only add new entities to the
/// view's: none may be an entity a bundle defines, nor a uid a stored
/// entity has as an ancestor (a group a stored user is in, defined by a
/// bundle or only named as a parent). Such an entity could give stored
/// entities ancestors the signed bundles do not give them. A new entity may
/// name stored entities as its parents. Pure, and cheap: two hash lookups
/// per entity.
pub fn check_request_entities(
    view: &PolicyView,
    entities: &[Entity],
) -> Result<(), RequestEntityError> {
    for e in entities {
        let uid = e.uid();
        if view.entities().get(&uid).is_some() {
            return Err(RequestEntityError::Redefines(uid.to_string()));
        }
        if view.is_stored_ancestor(&uid) {
            return Err(RequestEntityError::AncestorOfStored(uid.to_string()));
        }
    }
    Ok(())
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allow: bool,
    /// Ids of the policies that determined the answer (`NAME/ID`).
    pub reasons: Vec<String>,
    /// Errors met while deciding, one line each.
    pub errors: Vec<String>,
    /// Whether the answer is deny because a subject is revoked.
    pub revoked: bool,
    /// The revoked subject that caused the deny, if any.
    pub revoked_subject: Option<String>,
    /// The quarantine that caused the deny, if any ([`decide_at`] only).
    pub quarantine: Option<crate::quarantine::QuarantineHit>,
}

impl Decision {
    fn deny(reasons: Vec<String>, errors: Vec<String>) -> Self {
        Decision {
            allow: false,
            reasons,
            errors,
            ..Decision::default()
        }
    }
}

/// Decides `request` against `view` at `now` (Unix seconds): as
/// [`decide`], but a quarantine in force on the principal, the resource or
/// one of their ancestors denies first, like a revocation (a revocation
/// still wins: it is reported as the reason when both apply). Pure: the time
/// and the rules come in as arguments.
pub fn decide_at(
    view: &PolicyView,
    request: &Request,
    now: u64,
    rules: &crate::quarantine::QuarantineRules,
) -> Decision {
    decide_with(view, request, Evaluation::Indexed, Some((now, rules)))
}

/// Decides `request` against `view`. Pure: no I/O, no clock.
///
/// Only the policies whose scope matches the request are evaluated (see
/// [`crate::index`]); the answer is the same as [`decide_full`]'s.
pub fn decide(view: &PolicyView, request: &Request) -> Decision {
    decide_with(view, request, Evaluation::Indexed, None)
}

/// Decides `request` by evaluating every policy in force with Cedar, as
/// [`decide`] did before the scope index. It is the reference the index is
/// tested against, and the baseline it is measured against.
pub fn decide_full(view: &PolicyView, request: &Request) -> Decision {
    decide_with(view, request, Evaluation::Full, None)
}

#[derive(Clone, Copy)]
enum Evaluation {
    Indexed,
    Full,
}

/// What Cedar's authorizer concluded, before Weft's fail-closed rule.
struct Outcome {
    allow: bool,
    reasons: Vec<String>,
    errors: Vec<String>,
    /// Ids of the `forbid` policies whose evaluation errored.
    failed_forbids: BTreeSet<String>,
}

/// The quarantine in force at `now` under `rules` on the principal, the
/// resource or one of their ancestors, if any.
fn quarantine_hit(
    view: &PolicyView,
    entities: &Entities,
    request: &Request,
    now: u64,
    rules: &crate::quarantine::QuarantineRules,
) -> Option<crate::quarantine::QuarantineHit> {
    for uid in [&request.principal, &request.resource] {
        let ancestors = entities.ancestors(uid).into_iter().flatten();
        for u in std::iter::once(uid).chain(ancestors) {
            if let Some(hit) = crate::quarantine::in_force(view, &u.to_string(), now, rules) {
                return Some(hit);
            }
        }
    }
    None
}

fn decide_with(
    view: &PolicyView,
    request: &Request,
    how: Evaluation,
    quarantine: Option<(u64, &crate::quarantine::QuarantineRules)>,
) -> Decision {
    let merged;
    let entities: &Entities = if request.entities.is_empty() {
        view.entities()
    } else {
        if let Err(e) = check_request_entities(view, &request.entities) {
            return Decision::deny(vec![], vec![format!("request entities rejected: {e}")]);
        }
        match view
            .entities()
            .clone()
            .add_entities(request.entities.iter().cloned(), None)
        {
            Ok(e) => {
                merged = e;
                &merged
            }
            Err(e) => {
                return Decision::deny(
                    vec![],
                    vec![format!("request entities rejected: {}", one_line(&e))],
                );
            }
        }
    };

    let resolved = crate::index::Resolved::new(
        entities,
        &request.principal,
        &request.action,
        &request.resource,
    );
    if let Some(subject) = revoked_subject(view, &resolved) {
        return Decision {
            allow: false,
            reasons: vec![],
            errors: vec![],
            revoked: true,
            revoked_subject: Some(subject),
            ..Decision::default()
        };
    }

    if let Some((now, rules)) = quarantine
        && view.has_quarantines()
        && let Some(hit) = quarantine_hit(view, entities, request, now, rules)
    {
        return Decision {
            allow: false,
            reasons: vec![],
            errors: vec![format!("quarantined: {}", hit.reason)],
            quarantine: Some(hit),
            ..Decision::default()
        };
    }

    let mut outcome = match how {
        Evaluation::Indexed => evaluate_candidates(view, request, entities, &resolved),
        Evaluation::Full => evaluate_all(view, request, entities),
    };
    // Cedar reports these from hash sets; sort them so every replica answers alike.
    outcome.errors.sort();
    outcome.reasons.sort();

    if outcome.allow {
        if !outcome.failed_forbids.is_empty() {
            return Decision::deny(outcome.failed_forbids.into_iter().collect(), outcome.errors);
        }
        Decision {
            allow: true,
            reasons: outcome.reasons,
            errors: outcome.errors,
            ..Decision::default()
        }
    } else {
        Decision::deny(outcome.reasons, outcome.errors)
    }
}

/// Evaluates the whole merged policy set in one call to Cedar.
fn evaluate_all(view: &PolicyView, request: &Request, entities: &Entities) -> Outcome {
    let response = Authorizer::new().is_authorized(&request.cedar, view.policies(), entities);
    let diagnostics = response.diagnostics();
    let failed_forbids = diagnostics
        .errors()
        .map(|cedar_policy::AuthorizationError::PolicyEvaluationError(e)| e.policy_id())
        .filter(|id| {
            view.policies()
                .policy(id)
                .is_some_and(|p| p.effect() == Effect::Forbid)
        })
        .map(ToString::to_string)
        .collect();
    Outcome {
        allow: response.decision() == CedarDecision::Allow,
        reasons: diagnostics.reason().map(ToString::to_string).collect(),
        errors: diagnostics.errors().map(|e| one_line(e)).collect(),
        failed_forbids,
    }
}

/// Evaluates only the policies whose scope matches, combined by Cedar's rule:
/// any satisfied `forbid` denies (the satisfied forbids are the reasons),
/// else any satisfied `permit` allows (the satisfied permits are the
/// reasons), else deny with no reasons.
///
/// A candidate without `when`/`unless` clauses is satisfied and cannot
/// error, so it needs no evaluation. The others go to Cedar as one small set,
/// whose response says which of them are satisfied: when it denies with
/// reasons, those are all of its satisfied forbids; when it allows, its
/// reasons are all of its satisfied permits and none of its forbids holds.
fn evaluate_candidates(
    view: &PolicyView,
    request: &Request,
    entities: &Entities,
    resolved: &crate::index::Resolved<'_>,
) -> Outcome {
    let candidates = view.index().candidates_for(entities, resolved);
    let mut forbids = Vec::new();
    let mut permits = Vec::new();
    let mut conditional = Vec::new();
    for c in candidates {
        match (c.conditional, c.forbid) {
            (true, _) => conditional.push(c),
            (false, true) => forbids.push(c.id_text.clone()),
            (false, false) => permits.push(c.id_text.clone()),
        }
    }
    let mut errors = Vec::new();
    let mut failed_forbids = BTreeSet::new();
    if !conditional.is_empty() {
        let set = view.index().policy_set(&conditional);
        let response = Authorizer::new().is_authorized(&request.cedar, &set, entities);
        let diagnostics = response.diagnostics();
        let reasons = diagnostics.reason().map(ToString::to_string);
        match response.decision() {
            CedarDecision::Allow => permits.extend(reasons),
            CedarDecision::Deny => forbids.extend(reasons),
        }
        for e in diagnostics.errors() {
            errors.push(one_line(e));
            let cedar_policy::AuthorizationError::PolicyEvaluationError(err) = e;
            if conditional
                .iter()
                .any(|c| c.forbid && &c.id == err.policy_id())
            {
                failed_forbids.insert(err.policy_id().to_string());
            }
        }
    }
    let (allow, reasons) = if !forbids.is_empty() {
        (false, forbids)
    } else if !permits.is_empty() {
        (true, permits)
    } else {
        (false, Vec::new())
    };
    Outcome {
        allow,
        reasons,
        errors,
        failed_forbids,
    }
}

/// The first revoked subject among the principal, the resource and their ancestors.
fn revoked_subject(view: &PolicyView, r: &crate::index::Resolved<'_>) -> Option<String> {
    if view.revocation_count() == 0 {
        return None;
    }
    std::iter::once(&r.principal)
        .chain(&r.principal_ancestors)
        .chain(std::iter::once(&r.resource))
        .chain(&r.resource_ancestors)
        .find(|uid| view.is_uid_revoked(uid))
        .map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActorId, BundleContent, PolicyDoc};
    use std::str::FromStr as _;

    fn uid(s: &str) -> EntityUid {
        EntityUid::from_str(s).unwrap()
    }

    fn entity(json: serde_json::Value) -> Entity {
        Entity::from_json_value(json, None).unwrap()
    }

    /// A view whose one bundle permits `Group::"admins"` and stores
    /// `User::"bob"` in `Group::"interns"`, a group it does not define, and
    /// `Group::"staff"`.
    fn admins_view() -> PolicyDoc {
        let mut b = BundleContent::default();
        b.policies.insert(
            "admins".into(),
            r#"permit (principal in Group::"admins", action, resource);"#.into(),
        );
        b.entities = Some(
            r#"[{"uid":{"type":"User","id":"bob"},"attrs":{},"parents":[{"type":"Group","id":"interns"}]},
                {"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]}]"#
                .into(),
        );
        let mut doc = PolicyDoc::new();
        doc.build_bundle(ActorId::from(vec![1u8; 40]), "t", &b, 0)
            .unwrap();
        doc
    }

    fn bob_asks(entities: Vec<Entity>) -> Request {
        Request::with_context(
            uid(r#"User::"bob""#),
            uid(r#"Action::"view""#),
            uid(r#"Doc::"d""#),
            Context::empty(),
            entities,
        )
        .unwrap()
    }

    #[test]
    fn a_request_cannot_put_a_stored_entity_in_a_group() {
        let doc = admins_view();
        let view = doc.view();
        assert!(!decide(view, &bob_asks(vec![])).allow);
        // The request defines the group bob's stored entity names, inside
        // admins: bob would be an admin.
        let interns = entity(serde_json::json!({
            "uid": {"type": "Group", "id": "interns"},
            "attrs": {},
            "parents": [{"type": "Group", "id": "admins"}],
        }));
        for d in [
            decide(view, &bob_asks(vec![interns.clone()])),
            decide_full(view, &bob_asks(vec![interns])),
        ] {
            assert!(!d.allow, "{d:?}");
            assert!(
                d.errors
                    .iter()
                    .any(|e| e.contains(r#"Group::"interns""#) && e.contains("ancestor")),
                "{d:?}"
            );
        }
        // Redefining bob himself, inside admins.
        let bob = entity(serde_json::json!({
            "uid": {"type": "User", "id": "bob"},
            "attrs": {},
            "parents": [{"type": "Group", "id": "admins"}],
        }));
        let d = decide(view, &bob_asks(vec![bob]));
        assert!(!d.allow, "{d:?}");
        assert!(
            d.errors
                .iter()
                .any(|e| e.contains(r#"User::"bob""#) && e.contains("redefine")),
            "{d:?}"
        );
    }

    #[test]
    fn a_request_may_add_new_entities_under_stored_ones() {
        let doc = admins_view();
        let view = doc.view();
        // A new user in a stored group, a new group in a stored group, and a
        // new document: none is stored or a stored entity's ancestor.
        let new = vec![
            entity(serde_json::json!({
                "uid": {"type": "User", "id": "visitor"},
                "attrs": {},
                "parents": [{"type": "Group", "id": "staff"}, {"type": "Group", "id": "guests"}],
            })),
            entity(serde_json::json!({
                "uid": {"type": "Group", "id": "guests"},
                "attrs": {},
                "parents": [{"type": "Group", "id": "staff"}],
            })),
            entity(
                serde_json::json!({"uid": {"type": "Doc", "id": "d"}, "attrs": {}, "parents": []}),
            ),
        ];
        assert_eq!(check_request_entities(view, &new), Ok(()));
        let d = decide(view, &bob_asks(new));
        assert!(!d.allow, "{d:?}");
        assert!(d.errors.is_empty(), "{d:?}");
        // Bob's stored group, named but not defined, is refused; so is the
        // stored group staff.
        let named = |t: &str, id: &str| {
            entity(serde_json::json!({"uid": {"type": t, "id": id}, "attrs": {}, "parents": []}))
        };
        assert_eq!(
            check_request_entities(view, &[named("Group", "interns")]),
            Err(RequestEntityError::AncestorOfStored(
                r#"Group::"interns""#.into()
            ))
        );
        assert_eq!(
            check_request_entities(view, &[named("Group", "staff")]),
            Err(RequestEntityError::Redefines(r#"Group::"staff""#.into()))
        );
        // An empty view has nothing to protect.
        assert_eq!(
            check_request_entities(&PolicyView::default(), &[named("Group", "interns")]),
            Ok(())
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const GROUPS: usize = 5;
        const USERS: usize = 3;

        /// A uid of the small universe: users `0..USERS`, then groups.
        fn name(i: usize) -> (&'static str, String) {
            if i < USERS {
                ("User", format!("u{i}"))
            } else {
                ("Group", format!("g{}", i - USERS))
            }
        }

        /// Entity JSON for universe member `i` with parents among the
        /// groups: a group's parents are higher groups, so there is no cycle.
        fn json(i: usize, parents: &[usize]) -> serde_json::Value {
            let (t, id) = name(i);
            let parents: Vec<serde_json::Value> = parents
                .iter()
                .filter(|g| USERS + **g > i)
                .map(|g| serde_json::json!({"type": "Group", "id": format!("g{g}")}))
                .collect();
            serde_json::json!({"uid": {"type": t, "id": id}, "attrs": {}, "parents": parents})
        }

        /// Entities: each member of the universe at most once, with parents.
        fn entities() -> impl Strategy<Value = Vec<(usize, Vec<usize>)>> {
            prop::collection::btree_map(
                0..USERS + GROUPS,
                prop::collection::vec(0..GROUPS, 0..3),
                0..5,
            )
            .prop_map(|m| m.into_iter().collect())
        }

        fn ancestors(entities: &Entities, uid: &EntityUid) -> BTreeSet<String> {
            entities
                .ancestors(uid)
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Request entities that pass the check never change what any
            /// stored entity descends from; the ones refused are stored or
            /// a stored entity's ancestor.
            #[test]
            fn accepted_request_entities_leave_stored_ancestry_alone(
                stored in entities(),
                asked in entities(),
            ) {
                let mut b = BundleContent::default();
                b.policies.insert("p".into(), "permit (principal, action, resource);".into());
                let stored_json: Vec<_> = stored.iter().map(|(i, p)| json(*i, p)).collect();
                b.entities = Some(serde_json::Value::Array(stored_json).to_string());
                let mut doc = PolicyDoc::new();
                doc.build_bundle(ActorId::from(vec![1u8; 40]), "t", &b, 0).unwrap();
                let view = doc.view();
                let asked: Vec<Entity> = asked.iter().map(|(i, p)| entity(json(*i, p))).collect();
                let stored_uids: Vec<EntityUid> = view.entities().iter().map(|e| e.uid()).collect();
                match check_request_entities(view, &asked) {
                    Ok(()) => {
                        let merged = view
                            .entities()
                            .clone()
                            .add_entities(asked.iter().cloned(), None)
                            .unwrap();
                        for u in &stored_uids {
                            prop_assert_eq!(
                                ancestors(view.entities(), u),
                                ancestors(&merged, u),
                                "{}", u
                            );
                        }
                    }
                    Err(RequestEntityError::Redefines(u)) => {
                        prop_assert!(stored_uids.iter().any(|s| s.to_string() == u));
                    }
                    Err(RequestEntityError::AncestorOfStored(u)) => {
                        prop_assert!(stored_uids
                            .iter()
                            .any(|s| ancestors(view.entities(), s).contains(&u)));
                    }
                }
            }
        }
    }
}
