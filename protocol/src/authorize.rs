//! An authorization request, from the body of `POST /v1/authorize` to a
//! decision: one pure function, [`decide_request`], that every reason to
//! deny goes through, and the one record of what was decided,
//! [`DecisionRecord`], that the audit trail, the detector and the dashboard
//! take their views of.
//!
//! No I/O and no clock: the view, the trust root, the time and how fresh
//! the state is come in as arguments, so the HTTP layer only reads the
//! body and writes the answer, and a fuzzer reaches every decision without
//! a node.

use std::str::FromStr as _;

use cedar_policy::{Context, Entities, EntityUid, RestrictedExpression};
use serde::Deserialize;
use weft_crdt::{Decision, PolicyView};

use weft_crdt::bundle::one_line_text as one_line;

use crate::token;
use crate::trust::TrustRoot;

/// The largest `POST /v1/authorize` body.
pub const MAX_AUTHORIZE_BYTES: usize = 1024 * 1024;

/// The body of `POST /v1/authorize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Who asks: a Cedar entity uid, like `User::"alice"`.
    pub principal: Option<String>,
    /// An identity token in place of `principal` (`wtk1.…`), verified on every request.
    pub token: Option<String>,
    /// The action's uid.
    pub action: String,
    /// The resource's uid.
    pub resource: String,
    /// The request context (a JSON object).
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// Entities of the request, in Cedar's entity JSON format.
    #[serde(default)]
    pub entities: Option<serde_json::Value>,
}

/// A request that is not one: the one sentence saying why (a 400 over HTTP).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// What a request is decided against.
#[derive(Clone, Copy)]
pub struct Deciding<'a> {
    /// The view that decides.
    pub view: &'a PolicyView,
    /// The node's current trust root (tokens are verified against it, and
    /// it sets the rules for nodes' quarantines).
    pub root: &'a TrustRoot,
    /// Now, in Unix milliseconds.
    pub now_ms: u64,
    /// `Some(after_secs)` when the state is stale (no sync with any peer
    /// for longer than `after_secs`) and the node denies while it is.
    pub stale_deny: Option<u64>,
}

/// What was asked, as far as it could be read.
#[derive(Debug)]
pub enum Asked {
    /// A whole request.
    Request(Box<weft_crdt::Request>),
    /// A request whose token was refused: the principal is the token's
    /// when it could be read, else `token`.
    Named {
        /// The principal.
        principal: String,
        /// The action's uid.
        action: String,
        /// The resource's uid.
        resource: String,
    },
}

impl Asked {
    /// Principal, action and resource, as text.
    pub fn who(&self) -> (String, String, String) {
        match self {
            Asked::Request(r) => (
                r.principal().to_string(),
                r.action().to_string(),
                r.resource().to_string(),
            ),
            Asked::Named {
                principal,
                action,
                resource,
            } => (principal.clone(), action.clone(), resource.clone()),
        }
    }
}

/// One decision, as decided: what was asked, the answer and its reasons.
/// The audit trail, the detector and the dashboard each keep their view of
/// it.
#[derive(Debug)]
pub struct DecisionRecord {
    /// When it was decided, Unix milliseconds.
    pub at_ms: u64,
    /// What was asked.
    pub asked: Asked,
    /// The answer, its reasons and errors, and whether a revocation or a
    /// quarantine made it.
    pub decision: Decision,
    /// The deny is for an identity token that was refused (not revoked).
    pub token_failed: bool,
}

/// Decides an authorization request. The checks, in order:
/// 1. **The request** ([`parse`]): a principal or a token (not both, not
///    neither), uids for principal, action and resource, a context with no
///    `token` key, request entities that are valid and neither redefine a
///    stored entity nor define an ancestor of one. Otherwise
///    [`BadRequest`], and nothing is decided.
/// 2. **A stale state** under `on_stale = deny`
///    ([`Deciding::stale_deny`]): deny.
/// 3. **A token refused** (malformed, forged, expired, from an issuer the
///    root does not know, a principal that is not a uid, attributes that
///    do not make a context): deny, `token_failed`.
/// 4. **A token revoked** (its id): deny, `revoked`.
/// 5. **[`weft_crdt::decide_at`]**: a revoked principal, resource or
///    ancestor; a quarantine in force (by the root's rules for nodes'
///    quarantines); then the policies.
pub fn decide_request(
    req: AuthorizeRequest,
    at: Deciding<'_>,
) -> Result<DecisionRecord, BadRequest> {
    let now = at.now_ms / 1000;
    let stale = |after: u64| {
        deny(
            format!(
                "the state is stale: no sync with any peer for over {after} s, and on_stale is deny"
            ),
            None,
        )
    };
    let (asked, decision, token_failed) = match parse(req, at.view, at.root, now)? {
        Parsed::TokenRefused { asked, refusal } => {
            let failed = refusal.revoked_subject.is_none();
            let decision = match at.stale_deny {
                Some(after) => stale(after),
                None => deny(refusal.error, refusal.revoked_subject),
            };
            (asked, decision, failed)
        }
        Parsed::Request(request) => {
            let decision = match at.stale_deny {
                Some(after) => stale(after),
                None => weft_crdt::decide_at(
                    at.view,
                    &request,
                    now,
                    &crate::quarantine::rules_of(at.root),
                ),
            };
            (Asked::Request(request), decision, false)
        }
    };
    Ok(DecisionRecord {
        at_ms: at.now_ms,
        asked,
        decision,
        token_failed,
    })
}

fn deny(error: String, revoked_subject: Option<String>) -> Decision {
    Decision {
        allow: false,
        reasons: vec![],
        errors: vec![error],
        revoked: revoked_subject.is_some(),
        revoked_subject,
        ..Decision::default()
    }
}

/// A request read as far as it goes: whole, or stopped at a token that
/// was refused or revoked.
#[derive(Debug)]
pub enum Parsed {
    /// A request for [`weft_crdt::decide_at`].
    Request(Box<weft_crdt::Request>),
    /// Its token was refused or revoked: a deny, not an error.
    TokenRefused {
        /// What was asked, as far as it could be read.
        asked: Asked,
        /// Why.
        refusal: TokenRefusal,
    },
}

/// Why a request's token does not stand.
#[derive(Debug)]
pub struct TokenRefusal {
    /// One sentence.
    pub error: String,
    /// The revoked subject (the token's id), when that is why.
    pub revoked_subject: Option<String>,
}

/// Reads an authorization request: step 1 of [`decide_request`], and the
/// token's checks (3 and 4) against `root`, `view` and `now` (Unix
/// seconds). A token that is refused or revoked is a deny with its reason,
/// not an error.
pub fn parse(
    req: AuthorizeRequest,
    view: &PolicyView,
    root: &TrustRoot,
    now: u64,
) -> Result<Parsed, BadRequest> {
    enum Who {
        Principal(EntityUid),
        Token(String),
    }
    let who = match (req.principal, req.token) {
        (Some(p), None) => Who::Principal(uid("principal", &p)?),
        (None, Some(t)) => Who::Token(t),
        (Some(_), Some(_)) => {
            return Err(BadRequest(
                "send either \"principal\" or \"token\", not both".into(),
            ));
        }
        (None, None) => {
            return Err(BadRequest(
                "the request has neither \"principal\" nor \"token\": send one of them".into(),
            ));
        }
    };
    let action = uid("action", &req.action)?;
    let resource = uid("resource", &req.resource)?;
    if req
        .context
        .as_ref()
        .and_then(|c| c.as_object())
        .is_some_and(|c| c.contains_key("token"))
    {
        return Err(BadRequest(
            "\"context\" may not have a \"token\" key: the node sets context.token from a verified token's attributes".into(),
        ));
    }
    let context = match req.context {
        None => Context::empty(),
        Some(v) => Context::from_json_value(v, None)
            .map_err(|e| BadRequest(format!("\"context\" is not valid: {}", one_line(e))))?,
    };
    let entities = match req.entities {
        None => Vec::new(),
        Some(v) => Entities::from_json_value(v, None)
            .map_err(|e| BadRequest(format!("\"entities\" are not valid: {}", one_line(e))))?
            .into_iter()
            .collect(),
    };
    weft_crdt::check_request_entities(view, &entities).map_err(|e| BadRequest(e.to_string()))?;
    let refused = |principal: &str, error: String, revoked_subject: Option<String>| {
        Ok(Parsed::TokenRefused {
            asked: Asked::Named {
                principal: principal.to_owned(),
                action: action.to_string(),
                resource: resource.to_string(),
            },
            refusal: TokenRefusal {
                error,
                revoked_subject,
            },
        })
    };
    let (principal, context) = match who {
        Who::Principal(p) => (p, context),
        Who::Token(text) => {
            let token = match token::verify(&text, root, &[], now) {
                Ok(t) => t,
                Err(e) => return refused("token", format!("token refused: {e}"), None),
            };
            let subject = token.revocation_subject();
            if view.revocation(&subject).is_some() {
                return refused(
                    &token.principal,
                    format!("token refused: token {} is revoked", token.id_hex()),
                    Some(subject),
                );
            }
            let Ok(principal) = EntityUid::from_str(&token.principal) else {
                return refused(
                    &token.principal,
                    format!(
                        "token refused: its principal {:?} is not a Cedar entity uid",
                        token.principal
                    ),
                    None,
                );
            };
            let attrs = token
                .attrs
                .into_iter()
                .map(|(k, v)| (k, RestrictedExpression::new_string(v)));
            let merged = RestrictedExpression::new_record(attrs)
                .map_err(|e| e.to_string())
                .and_then(|record| {
                    context
                        .merge([("token".to_owned(), record)])
                        .map_err(|e| e.to_string())
                });
            match merged {
                Ok(c) => (principal, c),
                Err(e) => {
                    return refused(
                        &token.principal,
                        format!(
                            "token refused: its attributes do not make a context: {}",
                            one_line(e)
                        ),
                        None,
                    );
                }
            }
        }
    };
    weft_crdt::Request::with_context(principal, action, resource, context, entities)
        .map(|r| Parsed::Request(Box::new(r)))
        .map_err(|e| BadRequest(format!("the request is not valid: {e}")))
}

fn uid(field: &str, text: &str) -> Result<EntityUid, BadRequest> {
    EntityUid::from_str(text).map_err(|e| {
        BadRequest(format!(
            "\"{field}\" is not a Cedar entity uid like User::\"alice\": {}",
            one_line(e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::identity::SecretKey;
    use crate::token::Token;
    use crate::trust::{Operator, QuarantineLimits, Role};

    fn root(issuer: &SecretKey) -> TrustRoot {
        TrustRoot {
            version: 1,
            expires: u64::MAX,
            root_keys: vec![SecretKey::from_seed([9; 32]).public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "idp".into(),
                key: issuer.public(),
                roles: [Role::Issue].into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: QuarantineLimits::default(),
            max_token_ttl_secs: crate::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: vec![],
        }
    }

    fn read(v: serde_json::Value, r: &TrustRoot) -> Result<Parsed, BadRequest> {
        let view = PolicyView::default();
        parse(serde_json::from_value(v).unwrap(), &view, r, 1500)
    }

    fn req(v: serde_json::Value) -> Result<weft_crdt::Request, BadRequest> {
        let r = root(&SecretKey::from_seed([1; 32]));
        match read(v, &r)? {
            Parsed::Request(r) => Ok(*r),
            Parsed::TokenRefused { refusal, .. } => panic!("denied: {}", refusal.error),
        }
    }

    #[test]
    fn authorize_requests_are_checked() {
        let ok = req(json!({
            "principal": "User::\"alice\"",
            "action": "Action::\"view\"",
            "resource": "Doc::\"d\"",
            "context": {"ip": "10.0.0.1"},
            "entities": [{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}],
        }))
        .unwrap();
        assert_eq!(ok.principal().to_string(), "User::\"alice\"");
        assert_eq!(ok.entities.len(), 1);
        for (v, needle) in [
            (
                json!({"principal": "alice", "action": "Action::\"v\"", "resource": "D::\"d\""}),
                "\"principal\" is not a Cedar entity uid",
            ),
            (
                json!({"token": "t", "principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\""}),
                "not both",
            ),
            (
                json!({"token": "t", "action": "Action::\"v\"", "resource": "D::\"d\"", "context": {"token": 1}}),
                "may not have a \"token\" key",
            ),
            (
                json!({"principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\"", "context": {"token": {"team": "red"}}}),
                "may not have a \"token\" key",
            ),
            (
                json!({"action": "Action::\"v\"", "resource": "D::\"d\""}),
                "neither \"principal\" nor \"token\"",
            ),
            (
                json!({"principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\"", "context": [1]}),
                "\"context\" is not valid",
            ),
            (
                json!({"principal": "U::\"a\"", "action": "Action::\"v\"", "resource": "D::\"d\"", "entities": {"x": 1}}),
                "\"entities\" are not valid",
            ),
        ] {
            let e = req(v).unwrap_err();
            assert!(e.0.contains(needle), "{}", e.0);
            assert!(!e.0.contains('\n'), "{}", e.0);
        }
    }

    #[test]
    fn tokens_become_principal_and_context() {
        let k = SecretKey::from_seed([1; 32]);
        let r = root(&k);
        let mut t = Token {
            principal: r#"User::"alice""#.into(),
            attrs: [("team".to_string(), "red".to_string())].into(),
            issuer: k.public(),
            issued: 1000,
            expires: 1900,
            id: [7; 16],
        };
        let body = |text: &str| json!({"token": text, "action": "Action::\"v\"", "resource": "D::\"d\"", "context": {"ip": "x"}});
        let Parsed::Request(ok) = read(body(&token::issue(&t, &k)), &r).unwrap() else {
            panic!("denied");
        };
        assert_eq!(ok.principal().to_string(), r#"User::"alice""#);
        let ctx = ok.cedar().context().unwrap();
        assert!(ctx.get("ip").is_some());
        assert!(format!("{:?}", ctx.get("token").unwrap()).contains("red"));
        let refused = |text: &str| match read(body(text), &r).unwrap() {
            Parsed::TokenRefused { refusal, .. } => {
                assert!(refusal.revoked_subject.is_none());
                refusal.error
            }
            Parsed::Request(_) => panic!("allowed"),
        };
        assert!(refused("garbage").starts_with("token refused: malformed token"));
        let forged = token::issue(&t, &SecretKey::from_seed([2; 32]));
        assert!(
            refused(&forged).contains("signature"),
            "{}",
            refused(&forged)
        );
        t.expires = 1200;
        assert!(refused(&token::issue(&t, &k)).contains("expired"));
        t.expires = 1900;
        t.principal = "alice".into();
        assert!(refused(&token::issue(&t, &k)).contains("not a Cedar entity uid"));
    }

    /// A view that stores `User::"bob"` in `Group::"interns"`, a group it
    /// does not define, and permits `Group::"admins"`.
    fn interns_doc() -> weft_crdt::PolicyDoc {
        let mut b = weft_crdt::BundleContent::default();
        b.policies.insert(
            "admins".into(),
            r#"permit (principal in Group::"admins", action, resource);"#.into(),
        );
        b.entities = Some(
            r#"[{"uid":{"type":"User","id":"bob"},"attrs":{},"parents":[{"type":"Group","id":"interns"}]}]"#
                .into(),
        );
        let mut doc = weft_crdt::PolicyDoc::new();
        doc.build_bundle(weft_crdt::ActorId::from(vec![1u8; 40]), "t", &b, 0)
            .unwrap();
        doc
    }

    #[test]
    fn request_entities_may_not_be_stored_entities_or_their_ancestors() {
        let doc = interns_doc();
        let r = root(&SecretKey::from_seed([1; 32]));
        let ask = |entities: serde_json::Value| {
            parse(
                serde_json::from_value(json!({
                    "principal": "User::\"bob\"",
                    "action": "Action::\"v\"",
                    "resource": "D::\"d\"",
                    "entities": entities,
                }))
                .unwrap(),
                doc.view(),
                &r,
                1500,
            )
        };
        let group = |id: &str, parent: &str| json!([{"uid": {"type": "Group", "id": id}, "attrs": {}, "parents": [{"type": "Group", "id": parent}]}]);
        for (entities, needle) in [
            (
                group("interns", "admins"),
                "Group::\"interns\" is an ancestor",
            ),
            (
                json!([{"uid": {"type": "User", "id": "bob"}, "attrs": {}, "parents": [{"type": "Group", "id": "admins"}]}]),
                "User::\"bob\" is defined by the policy bundles",
            ),
        ] {
            let e = ask(entities).unwrap_err();
            assert!(e.0.contains(needle), "{}", e.0);
            assert!(!e.0.contains('\n'), "{}", e.0);
        }
        // A new group under a stored one is fine.
        assert!(matches!(
            ask(group("visitors", "interns")),
            Ok(Parsed::Request(_))
        ));
    }

    #[test]
    fn every_reason_to_deny_is_decided_here_in_order() {
        let k = SecretKey::from_seed([1; 32]);
        let r = root(&k);
        let mut doc = weft_crdt::PolicyDoc::new();
        let mut b = weft_crdt::BundleContent::default();
        b.policies.insert(
            "alice".into(),
            r#"permit (principal == User::"alice", action, resource);"#.into(),
        );
        doc.build_bundle(weft_crdt::ActorId::from(vec![1u8; 40]), "t", &b, 0)
            .unwrap();
        let token = |id: u8| Token {
            principal: r#"User::"alice""#.into(),
            attrs: Default::default(),
            issuer: k.public(),
            issued: 1000,
            expires: 1900,
            id: [id; 16],
        };
        doc.build_revoke(
            weft_crdt::ActorId::from(vec![2u8; 40]),
            &token(9).revocation_subject(),
            "lost",
            0,
        )
        .unwrap();
        let ask = |who: serde_json::Value, stale: Option<u64>| {
            let mut body = json!({"action": "Action::\"v\"", "resource": "D::\"d\""});
            body.as_object_mut()
                .unwrap()
                .extend(who.as_object().unwrap().clone());
            decide_request(
                serde_json::from_value(body).unwrap(),
                Deciding {
                    view: doc.view(),
                    root: &r,
                    now_ms: 1_500_000,
                    stale_deny: stale,
                },
            )
        };
        let alice = json!({"principal": "User::\"alice\""});
        let good = json!({"token": token::issue(&token(7), &k)});
        let forged = json!({"token": token::issue(&token(7), &SecretKey::from_seed([2; 32]))});
        let revoked = json!({"token": token::issue(&token(9), &k)});
        // 5. The policies decide a readable request: alice by name or by token.
        for who in [&alice, &good] {
            let d = ask(who.clone(), None).unwrap();
            assert!(d.decision.allow, "{d:?}");
            assert!(!d.token_failed);
        }
        let bob = ask(json!({"principal": "User::\"bob\""}), None).unwrap();
        assert!(!bob.decision.allow && bob.decision.errors.is_empty());
        // 4. A revoked token: denied as revoked, its subject named.
        let d = ask(revoked.clone(), None).unwrap();
        assert!(!d.decision.allow && d.decision.revoked && !d.token_failed);
        assert_eq!(
            d.decision.revoked_subject,
            Some(token(9).revocation_subject())
        );
        assert_eq!(d.asked.who().0, r#"User::"alice""#);
        // 3. A refused token: denied, told as a failed token.
        let d = ask(forged.clone(), None).unwrap();
        assert!(!d.decision.allow && d.token_failed && !d.decision.revoked);
        assert!(d.decision.errors[0].starts_with("token refused"), "{d:?}");
        assert_eq!(d.asked.who().0, "token");
        // 2. A stale state under on_stale = deny: every request is denied,
        // whatever else holds (a refused token is still told as one).
        for (who, failed) in [
            (&alice, false),
            (&good, false),
            (&forged, true),
            (&revoked, false),
        ] {
            let d = ask(who.clone(), Some(300)).unwrap();
            assert!(!d.decision.allow);
            assert!(d.decision.errors[0].contains("stale"), "{d:?}");
            assert_eq!(d.token_failed, failed, "{who}");
        }
        // 1. A request that is not one is refused before anything else.
        let e = ask(json!({"principal": "alice"}), Some(300)).unwrap_err();
        assert!(e.0.contains("not a Cedar entity uid"), "{e}");
    }
}
