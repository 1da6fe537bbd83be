//! A proxy's question, from an HTTP request and a caller's identity to a
//! decision: the one pure function, [`decide_http`], behind
//! `/v1/forward-auth` and Envoy's ext_authz `Check`.
//!
//! The node reads the original request from the proxy's headers (or from
//! Envoy's `CheckRequest`) into a [`HttpRequest`], and resolves the
//! caller's credential into an [`Identity`]: a Weft token is verified here
//! ([`weft_token`]); a JWT against its issuer's keys, which the node
//! fetches. Everything after that is decided here, with no I/O and no
//! clock, so every node answers one request the same way.
//!
//! Answers map to HTTP statuses: [`Outcome::Allow`] 200,
//! [`Outcome::Unauthenticated`] 401 (no identity, or one refused),
//! [`Outcome::Forbidden`] 403 (a deny).

use cedar_policy::{Context, EntityUid, RestrictedExpression};
use weft_crdt::Decision;
use weft_crdt::routes::{HttpRequest, NoRoute, Unmatched};

use crate::authorize::{Asked, Deciding, DecisionRecord};
use crate::token;
use crate::trust::TrustRoot;

/// A caller's verified identity.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The principal.
    pub principal: EntityUid,
    /// Where its attributes go in the context: `token` for a Weft token,
    /// `claims` for a JWT.
    pub context_key: &'static str,
    /// Its attributes (a record).
    pub attrs: RestrictedExpression,
    /// Who vouched: `weft token`, `oidc https://…`, `spiffe://DOMAIN`,
    /// `envoy mTLS spiffe://DOMAIN`.
    pub source: String,
    /// A revocation subject of the credential itself (a Weft token's
    /// `token:<id>`), checked besides the principal.
    pub credential_subject: Option<String>,
}

/// What the caller's credential came to.
#[derive(Clone, Debug)]
pub enum Identity {
    /// Verified.
    Verified(Box<Verified>),
    /// No credential was sent.
    Missing,
    /// A credential was sent and refused: why, in one sentence.
    Refused(String),
}

/// How the proxy is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200: allowed.
    Allow,
    /// 401: no identity, or one refused.
    Unauthenticated,
    /// 403: denied.
    Forbidden,
}

/// A proxy's question, decided.
#[derive(Debug)]
pub struct HttpDecision {
    /// The decision, as every other decision is recorded.
    pub record: DecisionRecord,
    /// How the proxy is answered.
    pub outcome: Outcome,
    /// The principal, when the identity was verified.
    pub principal: Option<String>,
    /// The route that matched, `BUNDLE: [HOST]PATH`.
    pub route: Option<String>,
}

/// Verifies a Weft token (`wtk1.…`) as a bearer credential: the same
/// checks as `POST /v1/authorize`'s `token`. Its attributes go to
/// `context.token`; its id is checked for revocation by [`decide_http`].
pub fn weft_token(text: &str, root: &TrustRoot, now_secs: u64) -> Identity {
    let token = match token::verify(text, root, &[], now_secs) {
        Ok(t) => t,
        Err(e) => return Identity::Refused(format!("token refused: {e}")),
    };
    let Ok(principal) = token.principal.parse::<EntityUid>() else {
        return Identity::Refused(format!(
            "token refused: its principal {:?} is not a Cedar entity uid",
            token.principal
        ));
    };
    let credential_subject = Some(token.revocation_subject());
    let attrs = token
        .attrs
        .into_iter()
        .map(|(k, v)| (k, RestrictedExpression::new_string(v)));
    match RestrictedExpression::new_record(attrs) {
        Ok(attrs) => Identity::Verified(Box::new(Verified {
            principal,
            context_key: "token",
            attrs,
            source: "weft token".into(),
            credential_subject,
        })),
        Err(e) => Identity::Refused(format!(
            "token refused: its attributes do not make a context: {e}"
        )),
    }
}

/// Decides a proxy's question. The checks, in order:
/// 1. **The identity**: none, or refused, 401.
/// 2. **A stale state** under `on_stale = deny`: 403.
/// 3. **The route** ([`weft_crdt::routes::RouteTable::map`]): a refused
///    path, or a matched path with no action for the method, 403; no
///    route, the routes' `unmatched` (403 unless it is `allow`).
/// 4. **The credential revoked** (a Weft token's id): 403, `revoked`.
/// 5. **[`weft_crdt::decide_at`]** on principal, action, resource and the
///    context `{http, token | claims}`: a revoked principal, resource or
///    ancestor, a quarantine in force, then the policies; 200 or 403.
pub fn decide_http(req: &HttpRequest, identity: Identity, at: Deciding<'_>) -> HttpDecision {
    let now = at.now_ms / 1000;
    let routes = &at.view.gateway().routes;
    let mapped = routes.map(req);
    let (action, resource, route) = match &mapped {
        Ok(m) => (
            m.action.to_string(),
            m.resource.to_string(),
            Some(m.route.clone()),
        ),
        Err(_) => (
            format!("{} {}", req.method.to_ascii_uppercase(), req.target),
            req.host.clone(),
            None,
        ),
    };
    let named = |principal: &str| Asked::Named {
        principal: principal.to_owned(),
        action: action.clone(),
        resource: resource.clone(),
    };
    let answer = |asked: Asked, decision: Decision, outcome: Outcome, principal: Option<String>| {
        HttpDecision {
            record: DecisionRecord {
                at_ms: at.now_ms,
                asked,
                decision,
                token_failed: outcome == Outcome::Unauthenticated,
            },
            outcome,
            principal,
            route: route.clone(),
        }
    };
    let verified = match identity {
        Identity::Verified(v) => v,
        Identity::Missing => {
            return answer(
                named("anonymous"),
                deny("no identity: send Authorization: Bearer <JWT or wtk1 token>".into()),
                Outcome::Unauthenticated,
                None,
            );
        }
        Identity::Refused(why) => {
            return answer(named("token"), deny(why), Outcome::Unauthenticated, None);
        }
    };
    let principal = verified.principal.to_string();
    if let Some(after) = at.stale_deny {
        return answer(
            named(&principal),
            deny(format!(
                "the state is stale: no sync with any peer for over {after} s, and on_stale is deny"
            )),
            Outcome::Forbidden,
            Some(principal),
        );
    }
    let mapped = match mapped {
        Ok(m) => m,
        Err(NoRoute::Unmatched) if routes.unmatched == Unmatched::Allow => {
            let decision = Decision {
                allow: true,
                reasons: vec!["unmatched = allow".into()],
                ..Decision::default()
            };
            return answer(named(&principal), decision, Outcome::Allow, Some(principal));
        }
        Err(e) => {
            return answer(
                named(&principal),
                deny(e.to_string()),
                Outcome::Forbidden,
                Some(principal),
            );
        }
    };
    if let Some(subject) = &verified.credential_subject
        && at.view.revocation(subject).is_some()
    {
        let mut d = deny(format!("the credential {subject} is revoked"));
        d.revoked = true;
        d.revoked_subject = Some(subject.clone());
        return answer(named(&principal), d, Outcome::Forbidden, Some(principal));
    }
    let context = Context::from_pairs([
        ("http".to_owned(), routes.context(req, Some(&mapped))),
        (verified.context_key.to_owned(), verified.attrs.clone()),
    ]);
    let request = context.map_err(|e| e.to_string()).and_then(|c| {
        weft_crdt::Request::with_context(
            verified.principal.clone(),
            mapped.action.clone(),
            mapped.resource.clone(),
            c,
            Vec::new(),
        )
    });
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return answer(
                named(&principal),
                deny(format!("the request does not make a Cedar request: {e}")),
                Outcome::Forbidden,
                Some(principal),
            );
        }
    };
    let decision = weft_crdt::decide_at(
        at.view,
        &request,
        now,
        &crate::quarantine::rules_of(at.root),
    );
    let outcome = if decision.allow {
        Outcome::Allow
    } else {
        Outcome::Forbidden
    };
    answer(
        Asked::Request(Box::new(request)),
        decision,
        outcome,
        Some(principal),
    )
}

fn deny(error: String) -> Decision {
    Decision {
        allow: false,
        errors: vec![error],
        ..Decision::default()
    }
}

#[cfg(test)]
mod tests {
    use weft_crdt::{ActorId, BundleContent, PolicyDoc};

    use super::*;
    use crate::identity::SecretKey;
    use crate::token::Token;
    use crate::trust::{Operator, QuarantineLimits, Role};

    const ROUTES: &str = r#"
headers = ["x-tenant"]
[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"view"', DELETE = 'Action::"delete"' }
"#;
    const POLICY: &str = r#"permit(principal == User::"alice", action == Action::"view", resource)
        when { context.http.headers["x-tenant"] == "red" && context.http.method == "GET" };"#;

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

    fn doc(routes: &str) -> PolicyDoc {
        let mut doc = PolicyDoc::new();
        let content = BundleContent {
            policies: [("p".to_owned(), POLICY.to_owned())].into(),
            routes: Some(routes.to_owned()),
            ..Default::default()
        };
        doc.build_bundle(ActorId::from(vec![1; 40]), "web", &content, 1)
            .unwrap()
            .unwrap();
        doc
    }

    fn get(target: &str, tenant: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            target: target.into(),
            host: "docs.example.com".into(),
            client: Some("10.1.2.3".into()),
            headers: vec![("x-tenant".into(), tenant.into())],
        }
    }

    fn alice() -> Identity {
        Identity::Verified(Box::new(Verified {
            principal: r#"User::"alice""#.parse().unwrap(),
            context_key: "claims",
            attrs: RestrictedExpression::new_record([]).unwrap(),
            source: "oidc https://idp".into(),
            credential_subject: None,
        }))
    }

    fn ask(doc: &PolicyDoc, req: &HttpRequest, who: Identity) -> HttpDecision {
        let r = root(&SecretKey::from_seed([1; 32]));
        decide_http(
            req,
            who,
            Deciding {
                view: doc.view(),
                root: &r,
                now_ms: 1_500_000,
                stale_deny: None,
            },
        )
    }

    #[test]
    fn a_routed_request_is_decided_on_its_route_and_context() {
        let doc = doc(ROUTES);
        let ok = ask(&doc, &get("/docs/7?x=1", "red"), alice());
        assert_eq!(ok.outcome, Outcome::Allow, "{:?}", ok.record.decision);
        assert_eq!(ok.principal.as_deref(), Some(r#"User::"alice""#));
        assert_eq!(ok.route.as_deref(), Some("web: /docs/{id}"));
        assert_eq!(ok.record.decision.reasons, ["web/p"]);
        // The context decides: another tenant header is a deny.
        let blue = ask(&doc, &get("/docs/7", "blue"), alice());
        assert_eq!(blue.outcome, Outcome::Forbidden);
        // A method the route has no action for, no route, a refused path.
        let mut put = get("/docs/7", "red");
        put.method = "PUT".into();
        for (req, needle) in [
            (put, "no action for the request's method"),
            (get("/other", "red"), "no route matches"),
            (get("/docs/%2e%2e", "red"), "path is refused"),
        ] {
            let d = ask(&doc, &req, alice());
            assert_eq!(d.outcome, Outcome::Forbidden);
            assert!(
                d.record.decision.errors[0].contains(needle),
                "{:?}",
                d.record.decision
            );
        }
    }

    #[test]
    fn no_identity_or_a_refused_one_is_401_and_a_revoked_principal_403() {
        let mut doc = doc(ROUTES);
        let d = ask(&doc, &get("/docs/7", "red"), Identity::Missing);
        assert_eq!(d.outcome, Outcome::Unauthenticated);
        assert!(d.record.token_failed);
        let d = ask(
            &doc,
            &get("/docs/7", "red"),
            Identity::Refused("token refused: expired".into()),
        );
        assert_eq!(d.outcome, Outcome::Unauthenticated);
        assert_eq!(d.record.decision.errors, ["token refused: expired"]);
        doc.build_revoke(ActorId::from(vec![2; 40]), r#"User::"alice""#, "left", 2)
            .unwrap()
            .unwrap();
        let d = ask(&doc, &get("/docs/7", "red"), alice());
        assert_eq!(d.outcome, Outcome::Forbidden);
        assert!(d.record.decision.revoked);
    }

    #[test]
    fn weft_tokens_are_bearer_credentials_and_revocable_by_id() {
        let issuer = SecretKey::from_seed([1; 32]);
        let token = Token {
            principal: r#"User::"alice""#.into(),
            attrs: [("team".to_owned(), "red".to_owned())].into(),
            issuer: issuer.public(),
            issued: 1000,
            expires: 2000,
            id: [7; 16],
        };
        let text = crate::token::issue(&token, &issuer);
        let r = root(&issuer);
        let Identity::Verified(v) = weft_token(&text, &r, 1500) else {
            panic!("refused")
        };
        assert_eq!(v.context_key, "token");
        assert_eq!(
            v.credential_subject.as_deref(),
            Some("token:07070707070707070707070707070707")
        );
        assert!(
            matches!(weft_token(&text, &r, 5000), Identity::Refused(e) if e.contains("token refused"))
        );
        assert!(matches!(
            weft_token("wtk1.zz", &r, 1500),
            Identity::Refused(_)
        ));

        let mut doc = doc(ROUTES);
        let who = Identity::Verified(v);
        assert_eq!(
            ask(&doc, &get("/docs/1", "red"), who.clone()).outcome,
            Outcome::Allow
        );
        doc.build_revoke(
            ActorId::from(vec![2; 40]),
            &token.revocation_subject(),
            "lost",
            2,
        )
        .unwrap()
        .unwrap();
        let d = ask(&doc, &get("/docs/1", "red"), who);
        assert_eq!(d.outcome, Outcome::Forbidden);
        assert!(d.record.decision.revoked);
    }

    #[test]
    fn unmatched_requests_get_the_routes_default() {
        let allow = doc(&format!("unmatched = \"allow\"\n{ROUTES}"));
        assert_eq!(
            ask(&allow, &get("/other", "red"), alice()).outcome,
            Outcome::Allow
        );
        // Still a 401 without an identity.
        assert_eq!(
            ask(&allow, &get("/other", "red"), Identity::Missing).outcome,
            Outcome::Unauthenticated
        );
        let none = PolicyDoc::new();
        assert_eq!(
            ask(&none, &get("/docs/1", "red"), alice()).outcome,
            Outcome::Forbidden
        );
    }
}
