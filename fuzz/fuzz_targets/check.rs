//! Envoy's ext_authz `Check`, from the bytes of a `CheckRequest` to the
//! `CheckResponse`, through the code the node runs: prost's decoding, the
//! mapping (`node/src/extauthz/map.rs` and `node/src/bearer.rs`, compiled
//! here as they are), the caller's identity (a Weft token or the mTLS
//! peer's SPIFFE id), `decide_http` on a view with routes, a policy and a
//! trusted SPIFFE domain, and the answer. Nothing may panic; every answer
//! is OK with an allow, else a 401 or 403 with a JSON body.
#![no_main]

#[path = "../../node/src/bearer.rs"]
#[allow(dead_code)]
mod bearer;
#[path = "../../node/src/extauthz/map.rs"]
#[allow(dead_code)]
mod map;

use std::sync::OnceLock;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use weft_crdt::{ActorId, BundleContent, PolicyDoc, PolicyView};
use weft_protocol::authorize::Deciding;
use weft_protocol::gateway::{Identity, Outcome, decide_http, weft_token};
use weft_protocol::identity::SecretKey;
use weft_protocol::trust::{Operator, QuarantineLimits, Role, TrustRoot};

const ROUTES: &str = r#"
headers = ["x-tenant"]
[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"view"', DELETE = 'Action::"delete"', "*" = 'Action::"other"' }
[[route]]
host = "admin.example.com"
path = "/{*rest}"
resource = 'Admin::"{rest}"'
actions = { "*" = 'Action::"admin"' }
"#;

const ISSUERS: &str = r#"
[[spiffe]]
trust_domain = "prod.example.org"
audience = ["weft"]
jwks = '{"keys": []}'
"#;

fn view() -> &'static PolicyView {
    static VIEW: OnceLock<PolicyView> = OnceLock::new();
    VIEW.get_or_init(|| {
        let mut doc = PolicyDoc::new();
        let content = BundleContent {
            policies: [
                (
                    "a".to_owned(),
                    r#"permit(principal, action == Action::"view", resource) when { context.http.headers has "x-tenant" };"#.to_owned(),
                ),
                (
                    "b".to_owned(),
                    r#"permit(principal is Workload, action, resource is Doc);"#.to_owned(),
                ),
            ]
            .into(),
            routes: Some(ROUTES.to_owned()),
            issuers: Some(ISSUERS.to_owned()),
            ..Default::default()
        };
        doc.build_bundle(ActorId::from(vec![1; 40]), "web", &content, 1)
            .expect("the bundle builds")
            .expect("the bundle changes the document");
        assert!(!doc.view().gateway().issuers.is_empty());
        doc.view().clone()
    })
}

fn root() -> TrustRoot {
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![SecretKey::from_seed([9; 32]).public()],
        root_threshold: 1,
        operators: vec![Operator {
            name: "idp".into(),
            key: SecretKey::from_seed([1; 32]).public(),
            roles: [Role::Issue].into_iter().collect(),
        }],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(check) = CheckRequest::decode(data) else {
        return;
    };
    let view = view();
    let root = root();
    let now_ms = 1_767_225_600_000;
    let response = match map::http_request(&check) {
        Err(why) => {
            assert!(!why.contains('\n'), "a reason of more than one line: {why}");
            map::malformed(&why)
        }
        Ok(http) => {
            let identity = match map::credential(&http, &check) {
                map::Credential::Bearer(Ok(t)) if t.starts_with("wtk1.") => {
                    weft_token(t, &root, now_ms / 1000)
                }
                map::Credential::Bearer(Ok(_)) => Identity::Refused("a JWT".into()),
                map::Credential::Bearer(Err(why)) => Identity::Refused(why),
                map::Credential::Spiffe(id) => map::spiffe_identity(id, &view.gateway().issuers),
                map::Credential::None => Identity::Missing,
            };
            let verified = matches!(identity, Identity::Verified(_));
            let decided = decide_http(
                &http,
                identity,
                Deciding {
                    view,
                    root: &root,
                    now_ms,
                    stale_deny: None,
                },
            );
            assert_eq!(
                decided.outcome == Outcome::Allow,
                decided.record.decision.allow
            );
            assert_eq!(decided.outcome == Outcome::Unauthenticated, !verified);
            map::answer(&decided, "0123456789abcdef0123456789abcdef", view.digest())
        }
    };
    let code = response.status.as_ref().map(|s| s.code);
    match response.http_response {
        Some(HttpResponse::OkResponse(_)) => assert_eq!(code, Some(0)),
        Some(HttpResponse::DeniedResponse(d)) => {
            assert!(matches!(code, Some(7 | 16)));
            let status = d.status.map(|s| s.code);
            assert!(matches!(status, Some(401 | 403)), "{status:?}");
            let body: serde_json::Value = serde_json::from_str(&d.body).expect("a JSON body");
            assert_eq!(body["decision"], "deny");
        }
        other => panic!("not an OK or denied HTTP response: {other:?}"),
    }
});
