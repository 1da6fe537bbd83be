//! The body of `POST /v1/authorize`, all the way to a decision, through
//! the same pure function the node calls (`decide_request`): JSON parsing,
//! uid, context and entity checks, token verification, the staleness rule,
//! and Cedar's evaluation. Nothing may panic; a request that is not one is
//! refused in one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_crdt::PolicyView;
use weft_protocol::authorize::{AuthorizeRequest, Deciding, decide_request};
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
    // The first byte picks whether the state is stale under on_stale = deny.
    let stale_deny = data.first().is_some_and(|b| b & 1 == 1).then_some(300);
    match decide_request(
        req,
        Deciding {
            view: &view,
            root: &root,
            now_ms: 1_767_225_600_000,
            stale_deny,
        },
    ) {
        Ok(record) => {
            // Nothing is allowed by an empty view, and every deny says why
            // unless the policies (none here) decided it.
            assert!(!record.decision.allow);
            if stale_deny.is_some() {
                assert!(record.decision.errors[0].contains("stale"));
            }
        }
        Err(e) => assert!(!e.0.contains('\n'), "a refusal of more than one line: {e}"),
    }
});
