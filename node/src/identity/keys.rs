//! A JWK set (RFC 7517), read into keys that verify JWT signatures.
//!
//! # Rules
//! - Only signing keys of the three algorithms an issuer may use are kept:
//!   `RSA` (RS256, a modulus of 2048 to 8192 bits), `EC` on `P-256`
//!   (ES256) and `OKP` on `Ed25519` (EdDSA). A key's `alg`, when given,
//!   must be that algorithm; a key whose `use` is not `sig` is left out.
//!   Symmetric (`oct`) keys are never kept: a public key set cannot hold a
//!   shared secret, and no token signed with HMAC is ever accepted.
//! - Every component is checked for its length before it reaches
//!   `jsonwebtoken`, so that no key set, fetched or inline, can make a
//!   verification fail other than by refusing.
//! - Keys that do not fit are skipped and counted, not an error: an
//!   issuer's set may hold encryption keys or curves this node does not
//!   use. A set with no usable key is an error for the fetcher, which
//!   keeps the last good one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use weft_crdt::issuers::Algorithm;

/// The most keys a set may hold.
pub const MAX_KEYS: usize = 64;

/// One key that can verify signatures.
pub struct Key {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// The one algorithm it verifies.
    pub alg: Algorithm,
    /// The key, for `jsonwebtoken`.
    pub key: DecodingKey,
}

/// The usable keys of a JWK set.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
    /// Keys of the set that were left out.
    pub skipped: usize,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl KeySet {
    /// Reads a JWK set: a JSON object with a `keys` array of at most
    /// [`MAX_KEYS`] keys.
    pub fn parse(json: &[u8]) -> Result<KeySet, String> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("the key set is not JSON: {e}"))?;
        let Some(keys) = value.get("keys").and_then(|k| k.as_array()) else {
            return Err("the key set has no \"keys\" array".into());
        };
        if keys.len() > MAX_KEYS {
            return Err(format!(
                "the key set holds {} keys, over the limit of {MAX_KEYS}",
                keys.len()
            ));
        }
        let mut set = KeySet::default();
        for jwk in keys {
            match read_key(jwk) {
                Some(k) => set.keys.push(k),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// How many usable keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may have signed a token with `alg` and `kid`: the
    /// key with that `kid`, or with no `kid` in the token, every key of
    /// the algorithm.
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
    }
}

fn text<'a>(jwk: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(|v| v.as_str())
}

/// The bytes of a base64url component, if its length is in `len`.
fn component(jwk: &serde_json::Value, name: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    text(jwk, name)
        .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        .is_some_and(|b| len.contains(&b.len()))
}

fn read_key(jwk: &serde_json::Value) -> Option<Key> {
    if text(jwk, "use").is_some_and(|u| u != "sig") {
        return None;
    }
    let (alg, names): (Algorithm, &[&str]) = match (text(jwk, "kty")?, text(jwk, "crv")) {
        ("RSA", _) => (Algorithm::RS256, &["RS256"]),
        ("EC", Some("P-256")) => (Algorithm::ES256, &["ES256"]),
        ("OKP", Some("Ed25519")) => (Algorithm::EdDSA, &["EdDSA", "Ed25519"]),
        _ => return None,
    };
    if let Some(a) = text(jwk, "alg")
        && !names.contains(&a)
    {
        return None;
    }
    let key = match alg {
        Algorithm::RS256 => {
            let n = URL_SAFE_NO_PAD.decode(text(jwk, "n")?).ok()?;
            let n = &n[n.iter().take_while(|b| **b == 0).count()..];
            if !(256..=1024).contains(&n.len()) || !component(jwk, "e", 1..=8) {
                return None;
            }
            let e = URL_SAFE_NO_PAD.decode(text(jwk, "e")?).ok()?;
            DecodingKey::from_rsa_raw_components(n, &e)
        }
        Algorithm::ES256 => {
            if !component(jwk, "x", 32..=32) || !component(jwk, "y", 32..=32) {
                return None;
            }
            DecodingKey::from_ec_components(text(jwk, "x")?, text(jwk, "y")?).ok()?
        }
        Algorithm::EdDSA => {
            if !component(jwk, "x", 32..=32) {
                return None;
            }
            DecodingKey::from_ed_components(text(jwk, "x")?).ok()?
        }
    };
    let kid = text(jwk, "kid").map(str::to_owned);
    Some(Key { kid, alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usable_signing_keys_are_kept() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let short = URL_SAFE_NO_PAD.encode([7u8; 5]);
        let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        let small_n = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        let set = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "ed"},
            {"kty": "OKP", "crv": "Ed25519", "x": short},
            {"kty": "OKP", "crv": "Ed25519", "x": x, "use": "enc"},
            {"kty": "OKP", "crv": "X25519", "x": x},
            {"kty": "EC", "crv": "P-256", "x": x, "y": x, "alg": "ES256"},
            {"kty": "EC", "crv": "P-384", "x": x, "y": x},
            {"kty": "EC", "crv": "P-256", "x": x, "y": x, "alg": "RS256"},
            {"kty": "RSA", "n": n, "e": "AQAB", "kid": "r"},
            {"kty": "RSA", "n": small_n, "e": "AQAB"},
            {"kty": "oct", "k": x},
            {"kty": 5},
            "not an object"
        ]});
        let set = KeySet::parse(set.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.skipped, 9);
        assert_eq!(set.candidates(Algorithm::EdDSA, Some("ed")).count(), 1);
        assert_eq!(set.candidates(Algorithm::EdDSA, Some("r")).count(), 0);
        assert_eq!(set.candidates(Algorithm::RS256, None).count(), 1);
        assert_eq!(set.candidates(Algorithm::ES256, None).count(), 1);

        for (bad, needle) in [(&b"{"[..], "not JSON"), (b"{\"k\": []}", "no \"keys\"")] {
            assert!(KeySet::parse(bad).unwrap_err().contains(needle));
        }
        let many = serde_json::json!({"keys": vec![serde_json::json!({}); MAX_KEYS + 1]});
        assert!(
            KeySet::parse(many.to_string().as_bytes())
                .unwrap_err()
                .contains("over the limit")
        );
    }
}
