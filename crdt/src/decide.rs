//! The pure decision function: `decide(view, request) -> Decision`.
//!
//! Order of checks:
//! 1. **Revocation.** If the principal or the resource, or any of their
//!    ancestors (from the bundles' entities and the request's), is revoked, the
//!    answer is deny with `revoked: true`, whatever the policies say.
//! 2. **Cedar.** The merged policy set is evaluated with Cedar's authorizer.
//! 3. **Fail closed.** Cedar skips a policy whose evaluation errors. For a
//!    `permit` that is safe (it grants nothing), but a skipped `forbid` could
//!    let a request through. So when Cedar allows and any `forbid` errored,
//!    the answer becomes deny, and the erroring forbids are the reasons.

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityUid,
    Request as CedarRequest,
};
use serde::Serialize;

use crate::bundle::one_line;
use crate::view::PolicyView;

/// An authorization request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Who asks.
    pub principal: EntityUid,
    /// What they want to do.
    pub action: EntityUid,
    /// What they want to do it to.
    pub resource: EntityUid,
    /// The request context.
    pub context: Context,
    /// Entities that come with the request, added to the bundles' entities.
    pub entities: Vec<Entity>,
}

impl Request {
    /// A request with an empty context and no entities of its own.
    pub fn new(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Request {
            principal,
            action,
            resource,
            context: Context::empty(),
            entities: Vec::new(),
        }
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
}

impl Decision {
    fn deny(reasons: Vec<String>, errors: Vec<String>) -> Self {
        Decision {
            allow: false,
            reasons,
            errors,
            revoked: false,
            revoked_subject: None,
        }
    }
}

/// Decides `request` against `view`. Pure: no I/O, no clock.
pub fn decide(view: &PolicyView, request: &Request) -> Decision {
    let merged;
    let entities: &Entities = if request.entities.is_empty() {
        view.entities()
    } else {
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

    if let Some(subject) = revoked_subject(view, entities, request) {
        return Decision {
            allow: false,
            reasons: vec![],
            errors: vec![],
            revoked: true,
            revoked_subject: Some(subject),
        };
    }

    let cedar_request = match CedarRequest::new(
        request.principal.clone(),
        request.action.clone(),
        request.resource.clone(),
        request.context.clone(),
        None,
    ) {
        Ok(r) => r,
        Err(e) => return Decision::deny(vec![], vec![one_line(&e)]),
    };
    let response = Authorizer::new().is_authorized(&cedar_request, view.policies(), entities);
    let diagnostics = response.diagnostics();
    // Cedar reports these from hash sets; sort them so every replica answers alike.
    let mut errors: Vec<String> = diagnostics.errors().map(|e| one_line(e)).collect();
    errors.sort();
    let mut reasons: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
    reasons.sort();

    if response.decision() == CedarDecision::Allow {
        let failed_forbids: Vec<String> = diagnostics
            .errors()
            .map(|cedar_policy::AuthorizationError::PolicyEvaluationError(e)| e.policy_id())
            .filter(|id| {
                view.policies()
                    .policy(id)
                    .is_some_and(|p| p.effect() == Effect::Forbid)
            })
            .map(ToString::to_string)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !failed_forbids.is_empty() {
            return Decision::deny(failed_forbids, errors);
        }
        Decision {
            allow: true,
            reasons,
            errors,
            revoked: false,
            revoked_subject: None,
        }
    } else {
        Decision::deny(reasons, errors)
    }
}

/// The first revoked subject among the principal, the resource and their ancestors.
fn revoked_subject(view: &PolicyView, entities: &Entities, request: &Request) -> Option<String> {
    if view.revocation_count() == 0 {
        return None;
    }
    for uid in [&request.principal, &request.resource] {
        let text = uid.to_string();
        if view.is_revoked_canonical(&text) {
            return Some(text);
        }
        if let Some(ancestors) = entities.ancestors(uid) {
            for a in ancestors {
                let text = a.to_string();
                if view.is_revoked_canonical(&text) {
                    return Some(text);
                }
            }
        }
    }
    None
}
