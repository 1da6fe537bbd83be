//! Bearer JWTs, through the node's verification (`weft_node::identity::jwt`:
//! size, header, issuer choice, algorithm, signature, claims, and the
//! claim mapping to a principal and `context.claims`) against a fixed set
//! of issuers with an inline key set. The first byte picks the input:
//! - even: the rest is the bearer text, as a proxy would pass it;
//! - odd: the rest is a JSON object of claims laid over valid ones
//!   (`iss`, `sub`, `aud`, `exp`), signed with the issuers' own Ed25519
//!   key, so that fuzzed claims get past the signature to the checks and
//!   the mapping.
//!
//! Nothing may panic, and every refusal is one sentence starting `token
//! refused:`.
#![no_main]

use std::sync::LazyLock;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use weft_crdt::issuers::{BundleIssuers, Issuers};
use weft_node::identity::jwt;
use weft_node::identity::keys::KeySet;

/// 2026-01-01, the time every token is checked at.
const NOW_MS: u64 = 1_767_225_600_000;

struct Fixture {
    issuers: Issuers,
    keys: KeySet,
    key: EncodingKey,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    // PKCS#8 v1 of a fixed Ed25519 seed.
    let mut der = hex_prefix();
    der.extend_from_slice(&[7u8; 32]);
    let key = EncodingKey::from_ed_der(&der);
    let mut jwk = Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::EdDSA).unwrap();
    jwk.common.key_id = Some("k".into());
    let set = json!({ "keys": [jwk] }).to_string();
    let file = BundleIssuers::parse(&format!(
        r#"
[[oidc]]
issuer = "https://idp.example.com"
audience = ["weft", "api"]
jwks = '{set}'
principal = 'User::"{{sub}}"'
claims = ["email", "groups", "level", "admin", "tenant"]

[[oidc]]
issuer = "https://tenant.example.com"
audience = "weft"
jwks = '{set}'
algorithms = ["EdDSA"]
leeway_secs = 0
principal = 'Tenant::"{{tenant}}"'

[[spiffe]]
trust_domain = "prod.example.org"
audience = "weft"
jwks = '{set}'
"#
    ))
    .unwrap();
    Fixture {
        issuers: Issuers::build([("idp", &file)]),
        keys: KeySet::parse(set.as_bytes()).unwrap(),
        key,
    }
});

fn hex_prefix() -> Vec<u8> {
    vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ]
}

fn check(token: &str) {
    let f = &*FIXTURE;
    match jwt::select(token, &f.issuers) {
        Err(why) => assert!(why.starts_with("token refused: "), "{why}"),
        Ok(selected) => match jwt::verify(token, &selected, &f.keys, NOW_MS) {
            Ok(checked) => {
                assert!(!checked.verified.principal.to_string().is_empty());
                assert!(checked.valid_until_ms >= NOW_MS);
            }
            Err(r) => {
                let why = r.sentence(&selected.issuer.kind);
                assert!(why.starts_with("token refused: "), "{why}");
            }
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(&String::from_utf8_lossy(rest));
        return;
    }
    let mut claims: Map<String, Value> = json!({
        "iss": "https://idp.example.com",
        "sub": "alice",
        "aud": "weft",
        "exp": NOW_MS / 1000 + 600,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    match serde_json::from_slice::<Map<String, Value>>(rest) {
        Ok(over) => claims.extend(over),
        Err(_) => {
            claims.insert(
                "sub".into(),
                Value::String(String::from_utf8_lossy(rest).into()),
            );
        }
    }
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(if mode & 2 == 0 { "k" } else { "other" }.into());
    if let Ok(token) = jsonwebtoken::encode(&header, &claims, &FIXTURE.key) {
        check(&token);
    }
});
