//! The cost of resolving a bearer JWT (`Identities::resolve`), side by side:
//!
//! - `jwt/ES256/verify` and `jwt/RS256/verify`: every request checks its
//!   token in full (the token cache off): header, issuer, signature with
//!   the issuer's inline key set, claims, and the claim mapping;
//! - `jwt/ES256/cached` and `jwt/RS256/cached`: the same token again,
//!   answered from the verified-token cache (a SHA-256 of the token, a
//!   lookup, the issuer's fingerprint compared).
//!
//! After criterion's groups, a plain timed loop of each prints the mean
//! per call and the ratio of the full check to the cached answer.
//!
//! Run: `cargo bench -p weft-node --bench jwt`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use automerge::ActorId;
use criterion::Criterion;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use weft_crdt::{BundleContent, PolicyDoc, PolicyView};
use weft_node::identity::{Identities, IdentityOptions};
use weft_protocol::gateway::Identity;
use weft_protocol::trust::{QuarantineLimits, TrustRoot};

/// The allocator the `weft` binary runs with (node/src/main.rs), so that the
/// figures are the node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ISSUER: &str = "https://idp.example.com";

fn key(alg: jsonwebtoken::Algorithm) -> EncodingKey {
    match alg {
        jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_der(
            &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .expect("a P-256 key")
                .serialize_der(),
        ),
        _ => {
            use rustls_pki_types::pem::PemObject as _;
            let der = rustls_pki_types::PrivatePkcs1KeyDer::from_pem_slice(include_bytes!(
                "../tests/fixtures/jwt-rs256.pem"
            ))
            .expect("the RSA test key");
            EncodingKey::from_rsa_der(der.secret_pkcs1_der())
        }
    }
}

/// A view trusting one issuer with `jwk` inline, and a token it signed.
fn setup(alg: jsonwebtoken::Algorithm) -> (PolicyView, String) {
    let enc = key(alg);
    let mut jwk = Jwk::from_encoding_key(&enc, alg).expect("a JWK");
    jwk.common.key_id = Some("k".into());
    let set = json!({ "keys": [jwk] }).to_string();
    let mut doc = PolicyDoc::new();
    let content = BundleContent {
        policies: [(
            "p".to_owned(),
            "permit(principal, action, resource);".to_owned(),
        )]
        .into(),
        issuers: Some(format!(
            "[[oidc]]\nissuer = \"{ISSUER}\"\naudience = \"weft\"\njwks = '{set}'\nclaims = [\"email\", \"groups\"]\n"
        )),
        ..Default::default()
    };
    doc.build_bundle(ActorId::from(vec![1; 16]), "idp", &content, 1)
        .expect("a bundle");
    let now = weft_node::clock::now_secs();
    let mut header = Header::new(alg);
    header.kid = Some("k".into());
    let token = encode(
        &header,
        &json!({
            "iss": ISSUER, "sub": "alice", "aud": "weft", "exp": now + 3600, "iat": now,
            "email": "alice@example.com", "groups": ["eng", "ops"],
        }),
        &enc,
    )
    .expect("a token");
    (doc.view().clone(), token)
}

fn root() -> TrustRoot {
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: Vec::new(),
        root_threshold: 1,
        operators: Vec::new(),
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: 86_400,
        accepted_heads: Vec::new(),
    }
}

fn resolve(
    rt: &tokio::runtime::Runtime,
    ids: &Identities,
    token: &str,
    view: &PolicyView,
    root: &TrustRoot,
) {
    let now = weft_node::clock::now_ms();
    let id = rt.block_on(ids.resolve(Some(black_box(token)), view, root, now));
    assert!(matches!(id, Identity::Verified(_)), "{id:?}");
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let root = root();
    let cases: Vec<_> = [
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::RS256,
    ]
    .into_iter()
    .map(|alg| {
        let (view, token) = setup(alg);
        let (cached, uncached) = rt.block_on(async {
            (
                Identities::new(IdentityOptions::default()),
                Identities::new(IdentityOptions {
                    token_cache: 0,
                    ..IdentityOptions::default()
                }),
            )
        });
        (format!("{alg:?}"), view, token, cached, uncached)
    })
    .collect();

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut group = c.benchmark_group("jwt");
    for (alg, view, token, cached, uncached) in &cases {
        group.bench_function(format!("{alg}/verify"), |b| {
            b.iter(|| resolve(&rt, uncached, token, view, &root))
        });
        group.bench_function(format!("{alg}/cached"), |b| {
            b.iter(|| resolve(&rt, cached, token, view, &root))
        });
    }
    group.finish();
    c.final_summary();
    // `cargo test` runs benches once, as tests (no `--bench`): the timed
    // loops are for `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }

    for (alg, view, token, cached, uncached) in &cases {
        let mean = |ids: &Identities, n: u32| {
            let started = Instant::now();
            for _ in 0..n {
                resolve(&rt, ids, token, view, &root);
            }
            started.elapsed() / n
        };
        let full = mean(uncached, 2_000);
        let hit = mean(cached, 200_000);
        println!(
            "jwt {alg}: full check {:.1} µs, cached {:.2} µs: the cache answers {:.0}x faster",
            full.as_secs_f64() * 1e6,
            hit.as_secs_f64() * 1e6,
            full.as_secs_f64() / hit.as_secs_f64()
        );
    }
}
