//! A proxy's question, all the way to a decision, through the function
//! the node calls for `/v1/forward-auth` and ext_authz (`decide_http`):
//! the path's normalization, route matching, segment decoding, the
//! resource template, the context, the credential's checks and Cedar's
//! evaluation, on a view whose signed bundle holds routes. A routes file
//! (signed input, but an operator's text all the same) is read and
//! matched too. Nothing may panic.
//!
//! Input: `routes TOML \0 method \n target \n host \n header: value …`,
//! the first byte choosing the identity (none, a refusal, a verified
//! principal or a Weft token).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weft_crdt::routes::{BundleRoutes, HttpRequest, RouteTable};
use weft_crdt::{ActorId, BundleContent, PolicyDoc};
use weft_protocol::authorize::Deciding;
use weft_protocol::gateway::{Identity, Outcome, Verified, decide_http, weft_token};
use weft_protocol::identity::SecretKey;
use weft_protocol::token::Token;
use weft_protocol::trust::{Operator, QuarantineLimits, Role, TrustRoot};

const ROUTES: &str = r#"
unmatched = "deny"
headers = ["x-tenant"]
[[route]]
path = "/docs/{id}"
resource = 'Doc::"{id}"'
actions = { GET = 'Action::"view"', "*" = 'Action::"other"' }
[[route]]
host = "files.example.com"
path = "/f/{org}/{*rest}"
resource = 'File::"{org}/{rest}"'
actions = { GET = 'Action::"view"' }
"#;

const POLICY: &str = r#"permit(principal == User::"alice", action == Action::"view", resource)
    when { context.http.headers has "x-tenant" && context.http.headers["x-tenant"] == "red" };"#;

const NOW_MS: u64 = 1_767_225_600_000;

struct Fixture {
    doc: PolicyDoc,
    root: TrustRoot,
    token: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let issuer = SecretKey::from_seed([1; 32]);
        let root = TrustRoot {
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
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: vec![],
        };
        let mut doc = PolicyDoc::new();
        let content = BundleContent {
            policies: [("p".to_owned(), POLICY.to_owned())].into(),
            routes: Some(ROUTES.to_owned()),
            ..Default::default()
        };
        doc.build_bundle(ActorId::from(vec![1; 40]), "web", &content, 1)
            .expect("the fixture bundle builds")
            .expect("the fixture bundle changes the document");
        let now = NOW_MS / 1000;
        let token = weft_protocol::token::issue(
            &Token {
                principal: r#"User::"alice""#.into(),
                attrs: [("team".to_owned(), "red".to_owned())].into(),
                issuer: issuer.public(),
                issued: now - 10,
                expires: now + 600,
                id: [3; 16],
            },
            &issuer,
        );
        Fixture { doc, root, token }
    })
}

fn request(text: &str) -> HttpRequest {
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or_default().to_owned();
    let target = lines.next().unwrap_or_default().to_owned();
    let host = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpRequest {
        method,
        target,
        host,
        client: Some("10.0.0.1".into()),
        headers,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (routes_text, req_text) = text.split_once('\0').unwrap_or(("", text));
    let req = request(req_text);

    // An operator's routes file: read, and when it stands, matched.
    if let Ok(routes) = BundleRoutes::parse(routes_text) {
        let table = RouteTable::build([("fuzz", &routes)]);
        if let Ok(m) = table.map(&req) {
            let _ = table.context(&req, Some(&m));
        }
    }

    let f = fixture();
    let identity = match pick % 4 {
        0 => Identity::Missing,
        1 => Identity::Refused("token refused: fuzz".into()),
        2 => weft_token(&f.token, &f.root, NOW_MS / 1000),
        _ => Identity::Verified(Box::new(Verified {
            principal: r#"User::"alice""#.parse().expect("a uid"),
            context_key: "claims",
            attrs: cedar_policy::RestrictedExpression::new_record([]).expect("a record"),
            source: "fuzz".into(),
            credential_subject: None,
        })),
    };
    let verified = matches!(identity, Identity::Verified(_));
    let decided = decide_http(
        &req,
        identity,
        Deciding {
            view: f.doc.view(),
            root: &f.root,
            now_ms: NOW_MS,
            stale_deny: None,
        },
    );
    match decided.outcome {
        Outcome::Unauthenticated => assert!(!verified),
        Outcome::Allow => {
            // Only the one policy allows, and only on a routed GET.
            assert!(verified);
            assert_eq!(decided.record.decision.reasons, ["web/p"]);
            assert!(decided.route.is_some());
        }
        Outcome::Forbidden => {
            assert!(verified);
            assert!(!decided.record.decision.allow);
        }
    }
    for e in &decided.record.decision.errors {
        assert!(!e.contains('\n'), "an error of more than one line: {e}");
    }
});
