//! The body of `POST /v1/authorize`, all the way to a decision: JSON
//! parsing, uid, context and entity checks, token verification, and
//! Cedar's evaluation against an empty view. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_crdt::{PolicyView, decide};
use weft_node::api::{Authorize, AuthorizeRequest, TokenCheck, parse_authorize};
use weft_protocol::identity::SecretKey;
use weft_protocol::trust::{Operator, QuarantineLimits, Role, TrustRoot};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<AuthorizeRequest>(data) else {
        return;
    };
    let root = TrustRoot {
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
    };
    let view = PolicyView::default();
    let check = TokenCheck {
        root: &root,
        view: &view,
        now: 1_767_225_600,
    };
    if let Ok(Authorize::Decide(request)) = parse_authorize(req, check) {
        let _ = decide(&view, &request);
    }
});
