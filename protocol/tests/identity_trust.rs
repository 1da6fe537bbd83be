//! Identities, signatures, the trust root and node certificates, tested from
//! the outside. Each test targets one check: it would fail if that check were
//! removed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use weft_protocol::encoding::{self, DecodeError, FORMAT_VERSION, Kind};
use weft_protocol::identity::{
    Domain, KeyError, NodeId, PublicKey, SecretKey, Signature, SignatureError, verify_batch,
};
use weft_protocol::trust::{
    MAX_TRUST_ROOT_LEN, NodeCert, Operator, QuarantineLimits, Role, RootSignature, SignedNodeCert,
    SignedRoot, TrustError, TrustRoot, VerifiedRoot, from_trust_file, to_trust_file,
};

const NOW: u64 = 1_750_000_000;
const DAY: u64 = 86_400;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// Root keys are seeds 1..=9, operators 11..=19, nodes 21..=29, strangers 31..
fn root_key(i: u8) -> SecretKey {
    key(i)
}

fn op(name: &str, seed: u8, roles: &[Role]) -> Operator {
    Operator {
        name: name.into(),
        key: key(seed).public(),
        roles: roles.iter().copied().collect(),
    }
}

/// A root with the given version, root keys (by seed) and threshold, and two
/// operators: alice (policy, revoke, admit) and bob (policy only).
fn root(version: u64, root_seeds: &[u8], threshold: u32) -> TrustRoot {
    TrustRoot {
        version,
        expires: NOW + 365 * DAY,
        root_keys: root_seeds.iter().map(|s| root_key(*s).public()).collect(),
        root_threshold: threshold,
        operators: vec![
            op("alice", 11, &[Role::Policy, Role::Revoke, Role::Admit]),
            op("bob", 12, &[Role::Policy]),
        ],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    }
}

fn sign(root: &TrustRoot, seeds: &[u8]) -> SignedRoot {
    let keys: Vec<SecretKey> = seeds.iter().map(|s| root_key(*s)).collect();
    let refs: Vec<&SecretKey> = keys.iter().collect();
    SignedRoot::sign(root, &refs)
}

fn verified(version: u64, seeds: &[u8], threshold: u32) -> VerifiedRoot {
    sign(&root(version, seeds, threshold), seeds)
        .verify_initial(NOW)
        .unwrap()
}

// ---------------------------------------------------------------------------
// Signatures and keys

#[test]
fn tampered_message_does_not_verify() {
    let k = key(1);
    let msg = b"grant alice view".to_vec();
    let sig = k.sign(Domain::Update, &msg);
    k.public().verify(Domain::Update, &msg, &sig).unwrap();
    for bit in [0, 7, 8 * msg.len() - 1] {
        let mut bad = msg.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            k.public().verify(Domain::Update, &bad, &sig),
            Err(SignatureError::Invalid {
                key: Box::new(k.public())
            })
        );
    }
}

#[test]
fn tampered_signature_does_not_verify() {
    let k = key(1);
    let sig = k.sign(Domain::Update, b"m");
    for bit in [0, 255, 256, 511] {
        let mut bytes = sig.to_bytes();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let bad = Signature::from_bytes(bytes);
        assert!(
            k.public().verify(Domain::Update, b"m", &bad).is_err(),
            "bit {bit}"
        );
    }
}

#[test]
fn signature_does_not_verify_under_another_key() {
    let sig = key(1).sign(Domain::Update, b"m");
    assert!(key(2).public().verify(Domain::Update, b"m", &sig).is_err());
}

#[test]
fn signatures_do_not_replay_across_domains() {
    let k = key(1);
    for signed_in in Domain::ALL {
        let sig = k.sign(signed_in, b"the same bytes");
        for checked_in in Domain::ALL {
            let ok = k
                .public()
                .verify(checked_in, b"the same bytes", &sig)
                .is_ok();
            assert_eq!(
                ok,
                signed_in == checked_in,
                "{signed_in:?} checked as {checked_in:?}"
            );
        }
    }
}

#[test]
fn node_cert_signature_does_not_verify_as_trust_root_or_update() {
    // A root key tricked into signing in the node-cert domain has not signed
    // a trust root, even over the very same bytes.
    let r = root(1, &[1], 1);
    let body = r.encode();
    let sig = root_key(1).sign(Domain::NodeCert, &body);
    let signed = SignedRoot {
        body: body.clone(),
        signatures: vec![RootSignature {
            key: root_key(1).public(),
            sig,
        }],
    };
    assert!(matches!(
        signed.verify_initial(NOW),
        Err(TrustError::BadSignature { .. })
    ));
    assert!(
        root_key(1)
            .public()
            .verify(Domain::Update, &body, &sig)
            .is_err()
    );
    assert!(
        root_key(1)
            .public()
            .verify(Domain::NodeCert, &body, &sig)
            .is_ok()
    );
}

/// The identity point (0, 1): a point of order 1.
const IDENTITY_POINT: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
};

/// (0, -1): a point of order 2.
const ORDER_TWO_POINT: [u8; 32] = {
    let mut b = [0xffu8; 32];
    b[0] = 0xec;
    b[31] = 0x7f;
    b
};

#[test]
fn parsing_a_key_again_gives_the_same_answer() {
    // Valid keys are remembered after the first parse; the answer must not
    // change, and refusals are never remembered as keys.
    let good = SecretKey::from_seed([42; 32]).public();
    let bytes = good.to_bytes();
    for _ in 0..3 {
        assert_eq!(PublicKey::from_bytes(&bytes).unwrap(), good);
        assert_eq!(PublicKey::from_bytes(&IDENTITY_POINT), Err(KeyError::Weak));
    }
    // Far more distinct keys than the cache holds still parse correctly.
    for n in 0..600u32 {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        let k = SecretKey::from_seed(seed).public();
        assert_eq!(PublicKey::from_bytes(&k.to_bytes()).unwrap(), k);
    }
    assert_eq!(PublicKey::from_bytes(&bytes).unwrap(), good);
}

#[test]
fn weak_keys_are_refused_from_bytes() {
    assert_eq!(PublicKey::from_bytes(&IDENTITY_POINT), Err(KeyError::Weak));
    assert_eq!(PublicKey::from_bytes(&ORDER_TWO_POINT), Err(KeyError::Weak));
    assert_eq!(
        PublicKey::from_bytes(&IDENTITY_POINT)
            .unwrap_err()
            .to_string(),
        "refusing a weak ed25519 public key (a point of small order)"
    );
}

#[test]
fn weak_keys_are_refused_from_text_json_and_binary() {
    let text = format!("ed25519.{}", bs58::encode(IDENTITY_POINT).into_string());
    let err = text.parse::<PublicKey>().unwrap_err().to_string();
    assert!(err.contains("weak"), "{err}");
    assert!(serde_json::from_str::<PublicKey>(&format!("\"{text}\"")).is_err());
    // A trust root body naming a weak root key does not decode.
    let r = root(1, &[1], 1);
    let good = r.root_keys[0];
    let body = r.encode();
    let pos = body.windows(32).position(|w| w == good.as_bytes()).unwrap();
    let mut bad = body.clone();
    bad[pos..pos + 32].copy_from_slice(&IDENTITY_POINT);
    let err = encoding::decode::<TrustRoot>(Kind::TrustRoot, &bad, 1 << 20).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
}

#[test]
fn invalid_point_is_refused() {
    // y = 2 is not the y coordinate of any point on the curve.
    let mut b = [0u8; 32];
    b[0] = 2;
    assert_eq!(PublicKey::from_bytes(&b), Err(KeyError::InvalidPoint));
    assert_eq!(PublicKey::from_slice(&[0u8; 31]), Err(KeyError::Length(31)));
}

/// A PKCS#8 v2 (RFC 8410 OneAsymmetricKey) PEM for an ed25519 seed and an
/// arbitrary public key field.
fn pkcs8_v2_pem(seed: &[u8; 32], public: &[u8; 32]) -> String {
    let mut der = vec![
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der.extend_from_slice(&[0x81, 0x21, 0x00]);
    der.extend_from_slice(public);
    let b64 = BASE64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[test]
fn weak_public_key_in_pem_is_refused() {
    let seed = [7u8; 32];
    // The hand-made document is right: with the true public key it parses.
    let good = pkcs8_v2_pem(&seed, key(7).public().as_bytes());
    assert_eq!(
        SecretKey::from_pkcs8_pem(&good).unwrap().public(),
        key(7).public()
    );
    // With a small-order public key it is refused.
    let err = SecretKey::from_pkcs8_pem(&pkcs8_v2_pem(&seed, &IDENTITY_POINT)).unwrap_err();
    assert!(matches!(err, KeyError::Pem(_) | KeyError::Weak), "{err}");
    // And with another valid key that does not match the seed, too.
    assert!(SecretKey::from_pkcs8_pem(&pkcs8_v2_pem(&seed, key(8).public().as_bytes())).is_err());
}

#[test]
fn garbage_pem_is_refused_clearly() {
    let err = SecretKey::from_pkcs8_pem("not a key")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("the secret key is not a valid ed25519 PKCS#8 PEM document"),
        "{err}"
    );
}

#[test]
fn batch_verify_names_the_bad_item_and_respects_domain() {
    let keys: Vec<SecretKey> = (40..104).map(key).collect();
    let pks: Vec<PublicKey> = keys.iter().map(SecretKey::public).collect();
    let msgs: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let sigs: Vec<Signature> = keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| k.sign(Domain::Update, m))
        .collect();
    let items: Vec<(&PublicKey, &[u8], &Signature)> = pks
        .iter()
        .zip(&msgs)
        .zip(&sigs)
        .map(|((k, m), s)| (k, m.as_slice(), s))
        .collect();
    verify_batch(Domain::Update, &items).unwrap();
    assert_eq!(
        verify_batch(Domain::Token, &items),
        Err(SignatureError::BatchItem {
            index: 0,
            key: Box::new(pks[0])
        })
    );
    let mut items2 = items.clone();
    items2[17].1 = b"other";
    assert_eq!(
        verify_batch(Domain::Update, &items2),
        Err(SignatureError::BatchItem {
            index: 17,
            key: Box::new(pks[17])
        })
    );
}

#[test]
fn node_id_is_peer_id_of_the_key() {
    let pk = key(21).public();
    let id = NodeId::new(pk);
    let bytes = bs58::decode(id.to_string()).into_vec().unwrap();
    assert_eq!(&bytes[..6], &[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
    assert_eq!(&bytes[6..], pk.as_bytes());
    assert_eq!(id.to_string().parse::<NodeId>().unwrap().public_key(), pk);
}

// ---------------------------------------------------------------------------
// The trust root: initial verification

#[test]
fn valid_root_verifies() {
    let v = verified(1, &[1, 2, 3], 2);
    assert_eq!(v.root.version, 1);
    assert!(!v.expired);
}

#[test]
fn flipped_body_bit_is_a_bad_signature() {
    let mut signed = sign(&root(1, &[1, 2], 2), &[1, 2]);
    // Flip one bit of operator alice's name: "alice" becomes "alicd", which
    // still decodes and validates, so only the signature check can catch it.
    let pos = signed.body.windows(5).position(|w| w == b"alice").unwrap();
    signed.body[pos + 4] ^= 0x01;
    assert_eq!(signed.root().unwrap().operators[0].name, "alicd");
    let err = signed.verify_initial(NOW).unwrap_err();
    assert_eq!(
        err,
        TrustError::BadSignature {
            who: format!("root key {}", root_key(1).public())
        }
    );
    assert!(
        err.to_string()
            .starts_with("the signature by root key ed25519.")
    );
}

#[test]
fn flipped_signature_bit_is_a_bad_signature() {
    let mut signed = sign(&root(1, &[1, 2], 1), &[1, 2]);
    let mut bytes = signed.signatures[1].sig.to_bytes();
    bytes[3] ^= 0x10;
    signed.signatures[1].sig = Signature::from_bytes(bytes);
    // Even though key 1 alone meets the threshold, a bad signature by a root
    // key is an error.
    assert_eq!(
        signed.verify_initial(NOW).unwrap_err(),
        TrustError::BadSignature {
            who: format!("root key {}", root_key(2).public())
        }
    );
}

#[test]
fn threshold_not_met() {
    let signed = sign(&root(1, &[1, 2, 3], 2), &[3]);
    let err = signed.verify_initial(NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not enough valid signatures from the root keys of trust root version 1: 1 of the 2 required"
    );
    assert!(matches!(
        err,
        TrustError::ThresholdNotMet {
            have: 1,
            need: 2,
            ..
        }
    ));
}

#[test]
fn same_signer_counts_once() {
    let mut signed = sign(&root(1, &[1, 2], 2), &[1]);
    let again = signed.signatures[0].clone();
    signed.signatures.push(again.clone());
    signed.signatures.push(again);
    // add_signature does not add a second signature by the same key either.
    signed.add_signature(&root_key(1));
    assert_eq!(signed.signatures.len(), 3);
    assert!(matches!(
        signed.verify_initial(NOW),
        Err(TrustError::ThresholdNotMet {
            have: 1,
            need: 2,
            ..
        })
    ));
    signed.add_signature(&root_key(2));
    signed.verify_initial(NOW).unwrap();
}

#[test]
fn unknown_signer_does_not_count() {
    // Policy: signatures by keys that are not root keys are ignored.
    let r = root(1, &[1, 2], 2);
    let mut signed = sign(&r, &[1]);
    signed.add_signature(&key(31));
    // An operator key is not a root key either.
    signed.add_signature(&key(11));
    assert!(matches!(
        signed.verify_initial(NOW),
        Err(TrustError::ThresholdNotMet {
            have: 1,
            need: 2,
            ..
        })
    ));
}

#[test]
fn unknown_signer_with_garbage_signature_is_ignored() {
    let mut signed = sign(&root(1, &[1], 1), &[1]);
    signed.signatures.push(RootSignature {
        key: key(31).public(),
        sig: Signature::from_bytes([0xab; 64]),
    });
    signed.verify_initial(NOW).unwrap();
}

#[test]
fn expired_root_is_reported_but_usable() {
    let mut r = root(1, &[1], 1);
    r.expires = NOW - 1;
    let v = sign(&r, &[1]).verify_initial(NOW).unwrap();
    assert!(v.expired);
    assert!(r.is_expired(NOW));
    assert!(!r.is_expired(NOW - 2));
    assert!(r.is_expired(NOW - 1), "expires at the stated second");
    // Still usable: it can verify a rotation, and node certificates under it.
    let next = sign(&root(2, &[1], 1), &[1]);
    let v2 = v.verify_rotation(&next, NOW).unwrap();
    assert!(!v2.expired);
}

#[test]
fn invalid_root_is_refused_even_if_signed() {
    let mut r = root(1, &[1, 2], 3);
    assert!(sign(&r, &[1, 2]).verify_initial(NOW).is_err());
    r.root_threshold = 0;
    let err = sign(&r, &[1, 2])
        .verify_initial(NOW)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "trust root version 1: the root threshold must be at least 1"
    );
}

#[test]
fn validate_catches_each_problem() {
    let ok = root(1, &[1, 2], 2);
    ok.validate().unwrap();
    type Change = Box<dyn Fn(&mut TrustRoot)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|r| r.version = 0), "versions start at 1"),
        (Box::new(|r| r.root_keys.clear()), "has no root keys"),
        (
            Box::new(|r| r.root_threshold = 3),
            "root threshold of 3 cannot be met, as the number of root keys is only 2",
        ),
        (
            Box::new(|r| r.root_keys[1] = r.root_keys[0]),
            "lists root key",
        ),
        (
            Box::new(|r| r.policy_threshold = 0),
            "policy threshold must be at least 1",
        ),
        (
            Box::new(|r| r.policy_threshold = 3),
            "policy threshold of 3 cannot be met, as the number of operators with the policy role is only 2",
        ),
        (
            Box::new(|r| r.revoke_threshold = 2),
            "revoke threshold of 2 cannot be met, as the number of operators with the revoke role is only 1",
        ),
        (Box::new(|r| r.operators.swap(0, 1)), "sorted by name"),
        (
            Box::new(|r| r.operators[1].name = "alice".into()),
            "two operators named alice",
        ),
        (
            Box::new(|r| r.operators[1].key = r.operators[0].key),
            "already used",
        ),
        (
            Box::new(|r| r.operators[1].key = r.root_keys[0]),
            "already used",
        ),
        (Box::new(|r| r.operators[1].roles.clear()), "has no roles"),
        (
            Box::new(|r| r.accepted_heads = vec![[7; 32], [7; 32]]),
            "lists accepted head 0707",
        ),
        (
            Box::new(|r| r.operators[1].name = "b=b".into()),
            "contains '='",
        ),
        (
            Box::new(|r| {
                r.node_quarantine.allowed = true;
                r.node_quarantine.max_ttl_secs = 0;
            }),
            "maximum duration of zero",
        ),
        (
            Box::new(|r| r.max_token_ttl_secs = 0),
            "maximum token lifetime must be at least 1 second",
        ),
    ];
    for (change, needle) in cases {
        let mut r = ok.clone();
        change(&mut r);
        let err = r.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    }
}

#[test]
fn operator_lookup() {
    let r = root(1, &[1], 1);
    assert_eq!(r.operator_by_key(&key(12).public()).unwrap().name, "bob");
    assert!(r.operator_by_key(&key(31).public()).is_none());
    assert_eq!(r.operator_by_name("alice").unwrap().key, key(11).public());
    assert!(r.operator_by_name("carol").is_none());
    let revokers: Vec<&str> = r
        .operators_with_role(Role::Revoke)
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(revokers, ["alice"]);
}

// ---------------------------------------------------------------------------
// Rotation

#[test]
fn rollback_to_lower_version_is_refused() {
    let current = verified(5, &[1], 1);
    let older = sign(&root(3, &[1], 1), &[1]);
    let err = current.verify_rotation(&older, NOW).unwrap_err();
    assert_eq!(
        err,
        TrustError::Rollback {
            current: 5,
            offered: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "refusing trust root version 3: this node already trusts version 5"
    );
}

#[test]
fn rollback_to_equal_version_is_refused() {
    let current = verified(5, &[1], 1);
    let mut same = root(5, &[1], 1);
    same.policy_threshold = 2;
    let err = current
        .verify_rotation(&sign(&same, &[1]), NOW)
        .unwrap_err();
    assert_eq!(
        err,
        TrustError::Rollback {
            current: 5,
            offered: 5
        }
    );
}

#[test]
fn valid_rotation_to_new_keys() {
    // v1: keys 1, 2 (threshold 2). v2: keys 2, 3, 4 (threshold 2), signed by
    // 1 and 2 (old threshold) and 2 and 3 (new threshold).
    let current = verified(1, &[1, 2], 2);
    let next_root = root(2, &[2, 3, 4], 2);
    let next = sign(&next_root, &[1, 2, 3]);
    let v2 = current.verify_rotation(&next, NOW).unwrap();
    assert_eq!(v2.root, next_root);
    // A new node can bootstrap from v2 alone: key 1's signature is ignored.
    next.verify_initial(NOW).unwrap();
    // And v2 can rotate on without key 1.
    let v3 = sign(&root(3, &[3, 4], 2), &[3, 4]);
    v2.verify_rotation(&v3, NOW).unwrap();
}

#[test]
fn rotation_without_old_threshold_is_refused() {
    let current = verified(1, &[1, 2], 2);
    let next = sign(&root(2, &[3, 4], 2), &[2, 3, 4]);
    let err = current.verify_rotation(&next, NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not enough valid signatures from the root keys of the current trust root (version 1): 1 of the 2 required"
    );
    // On its own the new root looks fine: only the old-root check stops it.
    next.verify_initial(NOW).unwrap();
}

#[test]
fn rotation_without_new_threshold_is_refused() {
    let current = verified(1, &[1, 2], 2);
    let next = sign(&root(2, &[3, 4], 2), &[1, 2, 3]);
    let err = current.verify_rotation(&next, NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not enough valid signatures from the root keys of trust root version 2: 1 of the 2 required"
    );
}

#[test]
fn rotation_with_bad_old_key_signature_is_refused() {
    let current = verified(1, &[1, 2], 1);
    let mut next = sign(&root(2, &[3], 1), &[1, 3]);
    next.signatures.push(RootSignature {
        key: root_key(2).public(),
        sig: Signature::from_bytes([1; 64]),
    });
    assert!(matches!(
        current.verify_rotation(&next, NOW),
        Err(TrustError::BadSignature { .. })
    ));
}

// ---------------------------------------------------------------------------
// Trust files

#[test]
fn trust_file_roundtrip() {
    let signed = sign(&root(1, &[1, 2], 2), &[1, 2]);
    let text = to_trust_file(&signed);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format"], "weft-trust-root");
    assert_eq!(json["root"]["operators"][0]["name"], "alice");
    assert_eq!(
        json["root"]["operators"][1]["roles"],
        serde_json::json!(["policy"])
    );
    assert_eq!(
        json["root"]["root_keys"][0],
        serde_json::json!(root_key(1).public().to_string())
    );
    let back = from_trust_file(&text).unwrap();
    assert_eq!(back, signed);
    back.verify_initial(NOW).unwrap();
}

#[test]
fn trust_file_with_disagreeing_copy_is_refused() {
    let signed = sign(&root(1, &[1, 2], 2), &[1, 2]);
    let mut json: serde_json::Value = serde_json::from_str(&to_trust_file(&signed)).unwrap();
    json["root"]["policy_threshold"] = serde_json::json!(2);
    let err = from_trust_file(&json.to_string()).unwrap_err().to_string();
    assert_eq!(
        err,
        "the readable \"root\" copy in the trust file disagrees with the signed body; refusing the file"
    );
}

#[test]
fn trust_file_errors_are_clear() {
    let signed = sign(&root(1, &[1], 1), &[1]);
    let good: serde_json::Value = serde_json::from_str(&to_trust_file(&signed)).unwrap();
    let with = |field: &str, v: serde_json::Value| {
        let mut j = good.clone();
        j[field] = v;
        from_trust_file(&j.to_string()).unwrap_err().to_string()
    };
    assert!(with("format", "x".into()).contains("is not a Weft trust file"));
    assert!(with("signed", "@@".into()).contains("is not base64"));
    assert!(
        with("signed", BASE64.encode(b"nope").into()).contains(
            "is not a signed trust root: input is not Weft data (it does not start with the magic bytes \"WEFT\")"
        )
    );
    assert!(with("root", serde_json::json!({})).contains("copy in the trust file is not valid"));
    let e = from_trust_file("{").unwrap_err().to_string();
    assert!(
        e.starts_with("the trust file is not valid: EOF while parsing"),
        "{e}"
    );
    let e = from_trust_file(&" ".repeat(MAX_TRUST_ROOT_LEN + 1))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "the trust file is 1048577 bytes, over the limit of 1048576"
    );
}

// ---------------------------------------------------------------------------
// Node certificates

fn cert(issuer: u8, expires: u64) -> NodeCert {
    NodeCert {
        node: NodeId::new(key(21).public()),
        name: "edge-1".into(),
        issuer: key(issuer).public(),
        issued: NOW - DAY,
        expires,
    }
}

#[test]
fn node_cert_by_admit_operator_verifies() {
    let r = root(1, &[1], 1);
    let c = cert(11, NOW + DAY);
    let signed = SignedNodeCert::sign(&c, &key(11));
    assert_eq!(signed.verify(&r, NOW).unwrap(), c);
    let again = SignedNodeCert::from_bytes(&signed.to_bytes()).unwrap();
    assert_eq!(again.verify(&r, NOW).unwrap(), c);
}

#[test]
fn node_cert_by_operator_without_admit_is_refused() {
    let r = root(1, &[1], 1);
    let signed = SignedNodeCert::sign(&cert(12, NOW + DAY), &key(12));
    let err = signed.verify(&r, NOW).unwrap_err();
    assert_eq!(err.to_string(), "operator bob does not hold the admit role");
}

#[test]
fn node_cert_by_unknown_issuer_is_refused() {
    let r = root(1, &[1], 1);
    for issuer in [31, 1] {
        // A stranger, and a root key (root keys are not operators).
        let signed = SignedNodeCert::sign(&cert(issuer, NOW + DAY), &key(issuer));
        assert_eq!(
            signed.verify(&r, NOW).unwrap_err(),
            TrustError::UnknownSigner {
                key: Box::new(key(issuer).public())
            }
        );
    }
}

#[test]
fn expired_node_cert_is_refused() {
    let r = root(1, &[1], 1);
    let signed = SignedNodeCert::sign(&cert(11, NOW), &key(11));
    let err = signed.verify(&r, NOW).unwrap_err();
    assert!(matches!(err, TrustError::Expired { expires: NOW, .. }));
    assert!(
        err.to_string()
            .starts_with("the node certificate for edge-1 (12D3KooW"),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("expired at 2025-06-15T15:06:40Z"),
        "{err}"
    );
    signed.verify(&r, NOW - 1).unwrap();
}

#[test]
fn node_cert_with_forged_issuer_is_refused() {
    // Signed by bob (no admit) but claiming alice as the issuer.
    let r = root(1, &[1], 1);
    let signed = SignedNodeCert::sign(&cert(11, NOW + DAY), &key(12));
    assert_eq!(
        signed.verify(&r, NOW).unwrap_err(),
        TrustError::BadSignature {
            who: "operator alice".into()
        }
    );
}

#[test]
fn node_cert_signature_is_not_a_root_signature() {
    // Alice's node-cert signature over a body does not verify in any other domain.
    let signed = SignedNodeCert::sign(&cert(11, NOW + DAY), &key(11));
    for d in Domain::ALL {
        let ok = key(11)
            .public()
            .verify(d, &signed.body, &signed.sig)
            .is_ok();
        assert_eq!(ok, d == Domain::NodeCert, "{d:?}");
    }
}

// ---------------------------------------------------------------------------
// Malformed inputs

fn good_signed_root_bytes() -> Vec<u8> {
    sign(&root(1, &[1, 2], 2), &[1, 2]).to_bytes()
}

#[test]
fn truncated_input_is_refused() {
    let bytes = good_signed_root_bytes();
    for cut in [0, 3, 5, 6, 7, bytes.len() / 2, bytes.len() - 1] {
        let err = SignedRoot::from_bytes(&bytes[..cut]).unwrap_err();
        assert_eq!(err.to_string(), "input is truncated", "cut at {cut}");
    }
}

#[test]
fn random_bytes_are_refused() {
    let err = SignedRoot::from_bytes(&[0x9c, 0x11, 0x42, 0x07, 0x00, 0x01, 0x02]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input is not Weft data (it does not start with the magic bytes \"WEFT\")"
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut bytes = good_signed_root_bytes();
    bytes.resize(5_000_000, 0);
    let err = SignedRoot::from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input is 5000000 bytes, over the limit of 1048576"
    );
    // Even garbage that would fail at the magic is refused for its size first.
    let err = encoding::decode::<TrustRoot>(Kind::TrustRoot, &[0u8; 2048], 1024).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            len: 2048,
            max: 1024
        }
    );
}

#[test]
fn wrong_version_is_refused() {
    let mut bytes = good_signed_root_bytes();
    bytes[5] = 7;
    assert_eq!(
        SignedRoot::from_bytes(&bytes).unwrap_err().to_string(),
        "unsupported format version 7 (this build reads version 1)"
    );
    assert_eq!(FORMAT_VERSION, 1);
}

#[test]
fn wrong_kind_is_refused() {
    let cert_bytes = SignedNodeCert::sign(&cert(11, NOW + DAY), &key(11)).to_bytes();
    assert_eq!(
        SignedRoot::from_bytes(&cert_bytes).unwrap_err().to_string(),
        "expected a signed trust root but the input is a signed node certificate"
    );
    // The body of a root is not a signed root either.
    let body = root(1, &[1], 1).encode();
    assert_eq!(
        SignedRoot::from_bytes(&body).unwrap_err().to_string(),
        "expected a signed trust root but the input is a trust root body"
    );
    let mut bytes = good_signed_root_bytes();
    bytes[4] = 0xee;
    assert_eq!(
        SignedRoot::from_bytes(&bytes).unwrap_err().to_string(),
        "input is of unknown kind 0xee"
    );
}

#[test]
fn wrong_magic_is_refused() {
    let mut bytes = good_signed_root_bytes();
    bytes[0] = b'w';
    assert_eq!(
        SignedRoot::from_bytes(&bytes).unwrap_err().to_string(),
        "input is not Weft data (it does not start with the magic bytes \"WEFT\")"
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = good_signed_root_bytes();
    bytes.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        SignedRoot::from_bytes(&bytes).unwrap_err().to_string(),
        "input has 3 unexpected bytes after the end of the value"
    );
}

#[test]
fn malformed_payload_is_refused() {
    let mut bytes = root(1, &[1], 1).encode();
    // The first byte of the payload is the version varint; 0xff.. never ends.
    bytes.truncate(6);
    bytes.extend_from_slice(&[0xff; 11]);
    let err = encoding::decode::<TrustRoot>(Kind::TrustRoot, &bytes, 1 << 20).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input is malformed: it holds a bad variable-length integer"
    );
}

// ---------------------------------------------------------------------------
// Properties: nothing panics on hostile input; no bit flip yields another
// root that verifies.

fn decode_everything(bytes: &[u8]) {
    for kind in Kind::ALL {
        let _ = encoding::decode::<TrustRoot>(kind, bytes, 1 << 20);
        let _ = encoding::decode::<SignedRoot>(kind, bytes, 1 << 20);
        let _ = encoding::decode::<NodeCert>(kind, bytes, 1 << 20);
        let _ = encoding::decode::<SignedNodeCert>(kind, bytes, 1 << 20);
        let _ = encoding::decode::<Operator>(kind, bytes, 1 << 20);
        let _ = encoding::decode::<PublicKey>(kind, bytes, 1 << 20);
        let _ = encoding::decode::<Signature>(kind, bytes, 1 << 20);
        let _ = encoding::decode::<NodeId>(kind, bytes, 1 << 20);
    }
    if let Ok(signed) = SignedRoot::from_bytes(bytes) {
        let _ = signed.verify_initial(NOW);
    }
    if let Ok(c) = SignedNodeCert::from_bytes(bytes) {
        let _ = c.verify(&root(1, &[1], 1), NOW);
    }
}

fn with_header(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut v = b"WEFT".to_vec();
    v.push(kind.to_byte());
    v.push(FORMAT_VERSION);
    v.extend_from_slice(payload);
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn decode_arbitrary_payloads_never_panics(
        kind in proptest::sample::select(Kind::ALL.to_vec()),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        decode_everything(&with_header(kind, &payload));
    }

    #[test]
    fn decode_mutated_valid_input_never_panics(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = match which {
            0 => good_signed_root_bytes(),
            1 => root(1, &[1, 2], 2).encode(),
            _ => SignedNodeCert::sign(&cert(11, NOW + DAY), &key(11)).to_bytes(),
        };
        for (pos, b) in flips {
            let i = pos % bytes.len();
            bytes[i] = b;
        }
        decode_everything(&bytes);
    }

    #[test]
    fn trust_file_of_arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = from_trust_file(&text);
    }

    #[test]
    fn trust_file_of_arbitrary_signed_field_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        header in any::<bool>(),
    ) {
        let signed = if header { with_header(Kind::SignedRoot, &bytes) } else { bytes };
        let text = serde_json::json!({
            "format": "weft-trust-root",
            "signed": BASE64.encode(&signed),
            "root": {},
        })
        .to_string();
        prop_assert!(from_trust_file(&text).is_err());
    }

    #[test]
    fn no_bit_flip_of_a_signed_root_verifies_as_another_root(bit in 0usize..4096) {
        let original = sign(&root(1, &[1, 2], 2), &[1, 2]);
        let mut bytes = original.to_bytes();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(signed) = SignedRoot::from_bytes(&bytes)
            && let Ok(v) = signed.verify_initial(NOW)
        {
            // Only a flip in an ignored part (none exists) could get here;
            // whatever verifies must be the original root.
            prop_assert_eq!(v.root, original.root().unwrap());
        }
    }
}
