//! Short-lived identity tokens.
//!
//! A token binds a principal (a Cedar entity uid) and optional attributes to
//! an expiry and a token id, signed in the `weft/token/v1` domain by an issuer:
//! an operator holding the `issue` role in the trust root, or an issuer key a
//! node is configured with. A token may live, from `issued` to `expires`, at
//! most the trust root's `max_token_ttl_secs` (24 h unless the root says
//! otherwise). `POST /v1/authorize` accepts a token in place of a principal
//! and verifies it on every request; there is no session.
//!
//! The text form is `wtk1.` followed by unpadded base64url of the encoded
//! `SignedToken`. A token can be revoked by its id: the subject `token:<id>`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::encoding::{self, Kind};
use crate::identity::{Domain, PublicKey, SecretKey, Signature};
use crate::time::format_duration;
use crate::trust::{Role, TrustRoot};

/// Prefix of a token's text form.
pub const TOKEN_PREFIX: &str = "wtk1.";

/// Largest token accepted, in bytes of its text form.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The principal, as Cedar uid text (`User::"alice"`).
    pub principal: String,
    /// Attributes the issuer vouches for (string values).
    pub attrs: BTreeMap<String, String>,
    /// Who issued it.
    pub issuer: PublicKey,
    /// When it was issued (Unix seconds).
    pub issued: u64,
    /// When it expires (Unix seconds).
    pub expires: u64,
    /// Its id, 16 random bytes, hex in text.
    pub id: [u8; 16],
}

impl Token {
    /// The token id as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// The revocation subject that revokes this token.
    pub fn revocation_subject(&self) -> String {
        format!("token:{}", self.id_hex())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SignedToken {
    #[serde(with = "encoding::bytes")]
    body: Vec<u8>,
    sig: Signature,
}

/// Why a token was refused. Each message is one sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// The issuer may not issue tokens.
    #[error("token issuer {0} is not an operator with the issue role nor a configured issuer")]
    UnknownIssuer(String),
    /// The token has expired.
    #[error("token expired {0} second(s) ago")]
    Expired(u64),
    /// The token was issued in the future (beyond the allowed clock skew).
    #[error("token is not valid yet (issued {0} second(s) in the future)")]
    NotYetValid(u64),
    /// The token lives longer, from `issued` to `expires`, than the trust
    /// root allows ([`TrustRoot::max_token_ttl_secs`]).
    #[error(
        "token lifetime of {} is longer than the trust root's maximum of {}",
        format_duration(*.lifetime),
        format_duration(*.max)
    )]
    TooLong {
        /// `expires - issued`, in seconds, as the token states them.
        lifetime: u64,
        /// The trust root's maximum, in seconds.
        max: u64,
    },
}

/// Clock skew tolerated on `issued`, in seconds.
pub const MAX_SKEW_SECS: u64 = 60;

/// Signs `token` with `key` and returns its text form.
pub fn issue(token: &Token, key: &SecretKey) -> String {
    let body = encoding::encode(Kind::Token, token);
    let sig = key.sign(Domain::Token, &body);
    let signed = encoding::encode(Kind::Token, &SignedToken { body, sig });
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(signed))
}

/// Verifies a token's text form at `now` (Unix seconds) against `root` and any
/// extra configured issuers. Checks the signature strictly, the issuer, the
/// lifetime (`expires - issued`, at most the root's `max_token_ttl_secs`,
/// whoever issued the token), and the validity window. Revocation of the
/// principal or of `token:<id>` is the caller's to check against its state.
pub fn verify(
    text: &str,
    root: &TrustRoot,
    extra_issuers: &[PublicKey],
    now: u64,
) -> Result<Token, TokenError> {
    if text.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed(format!(
            "{} bytes, over the limit of {MAX_TOKEN_LEN}",
            text.len()
        )));
    }
    let b64 = text
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| TokenError::Malformed(format!("it does not start with `{TOKEN_PREFIX}`")))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|e| TokenError::Malformed(format!("bad base64url: {e}")))?;
    let signed: SignedToken = encoding::decode(Kind::Token, &bytes, MAX_TOKEN_LEN)
        .map_err(|e| TokenError::Malformed(e.to_string()))?;
    let token: Token = encoding::decode(Kind::Token, &signed.body, MAX_TOKEN_LEN)
        .map_err(|e| TokenError::Malformed(e.to_string()))?;
    token
        .issuer
        .verify(Domain::Token, &signed.body, &signed.sig)
        .map_err(|_| TokenError::BadSignature)?;
    let by_root = root
        .operator_by_key(&token.issuer)
        .is_some_and(|op| op.has_role(Role::Issue));
    if !by_root && !extra_issuers.contains(&token.issuer) {
        return Err(TokenError::UnknownIssuer(token.issuer.to_string()));
    }
    let lifetime = token.expires.saturating_sub(token.issued);
    if lifetime > root.max_token_ttl_secs {
        return Err(TokenError::TooLong {
            lifetime,
            max: root.max_token_ttl_secs,
        });
    }
    if now >= token.expires {
        return Err(TokenError::Expired(now - token.expires));
    }
    if token.issued > now + MAX_SKEW_SECS {
        return Err(TokenError::NotYetValid(token.issued - now));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{Operator, QuarantineLimits};

    fn root(issuer: &SecretKey, roles: &[Role]) -> TrustRoot {
        TrustRoot {
            version: 1,
            expires: u64::MAX,
            root_keys: vec![SecretKey::from_seed([9; 32]).public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "idp".into(),
                key: issuer.public(),
                roles: roles.iter().copied().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: QuarantineLimits::default(),
            max_token_ttl_secs: crate::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: vec![],
        }
    }

    fn token(issuer: &SecretKey) -> Token {
        Token {
            principal: r#"User::"alice""#.into(),
            attrs: [("team".to_string(), "red".to_string())].into(),
            issuer: issuer.public(),
            issued: 1000,
            expires: 1900,
            id: [7; 16],
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = SecretKey::from_seed([1; 32]);
        let r = root(&k, &[Role::Issue]);
        let text = issue(&token(&k), &k);
        assert_eq!(verify(&text, &r, &[], 1500).unwrap(), token(&k));
        assert_eq!(verify(&text, &r, &[], 1900), Err(TokenError::Expired(0)));
        assert!(matches!(
            verify(&text, &r, &[], 800),
            Err(TokenError::NotYetValid(200))
        ));
        // An operator without the issue role, unless configured as an issuer.
        let r2 = root(&k, &[Role::Policy]);
        assert!(matches!(
            verify(&text, &r2, &[], 1500),
            Err(TokenError::UnknownIssuer(_))
        ));
        assert!(verify(&text, &r2, &[k.public()], 1500).is_ok());
        // Forged: a token claiming k as issuer but signed by someone else.
        let other = SecretKey::from_seed([2; 32]);
        let forged = issue(&token(&k), &other);
        assert_eq!(
            verify(&forged, &r, &[], 1500),
            Err(TokenError::BadSignature)
        );
        // Tampered text.
        let mut t = text.clone().into_bytes();
        let i = t.len() - 5;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        assert!(verify(std::str::from_utf8(&t).unwrap(), &r, &[], 1500).is_err());
        assert!(matches!(
            verify("hello", &r, &[], 1500),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify(&"x".repeat(MAX_TOKEN_LEN + 1), &r, &[], 1500),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            token(&k).revocation_subject(),
            format!("token:{}", hex::encode([7u8; 16]))
        );
    }

    #[test]
    fn lifetime_is_bounded_by_the_root() {
        let k = SecretKey::from_seed([1; 32]);
        let mut r = root(&k, &[Role::Issue]);
        let mut t = token(&k);
        // At the maximum: accepted.
        r.max_token_ttl_secs = 900;
        assert_eq!(verify(&issue(&t, &k), &r, &[], 1500), Ok(t.clone()));
        // One second over: refused, whoever issued it.
        t.expires = t.issued + 901;
        let text = issue(&t, &k);
        let too_long = TokenError::TooLong {
            lifetime: 901,
            max: 900,
        };
        assert_eq!(verify(&text, &r, &[], 1500), Err(too_long.clone()));
        assert_eq!(
            verify(&text, &r, &[k.public()], 1500),
            Err(too_long.clone())
        );
        assert_eq!(
            too_long.to_string(),
            "token lifetime of 901s is longer than the trust root's maximum of 15m"
        );
        // The default maximum is a day: a ten-year token is refused.
        r.max_token_ttl_secs = crate::trust::DEFAULT_MAX_TOKEN_TTL_SECS;
        t.expires = t.issued + 3650 * 86_400;
        assert!(matches!(
            verify(&issue(&t, &k), &r, &[], 1500),
            Err(TokenError::TooLong { .. })
        ));
        t.expires = t.issued + 86_400;
        assert!(verify(&issue(&t, &k), &r, &[], 1500).is_ok());
    }
}
