//! Verifying one bearer JWT against the issuers a view trusts: no I/O and
//! no clock, so the fetcher ([`super::jwks`]), the resolver and the fuzz
//! target share it.
//!
//! # Order of the checks
//! 1. **Size**: at most [`MAX_TOKEN_BYTES`].
//! 2. **Header**: a JWS header with `alg` RS256, ES256 or EdDSA (`none`,
//!    HMAC and every other algorithm are refused here), no `crit`.
//! 3. **Issuer** ([`select`]), from the claims read *without* trusting
//!    them: the OIDC issuer whose URL is `iss`, else the SPIFFE trust
//!    domain of a `sub` that is a `spiffe://` id. Nothing else of the
//!    token is used before its signature is checked.
//! 4. **Algorithm** in the issuer's `algorithms`.
//! 5. **Signature** ([`verify`]) with the issuer's key named by `kid` (or,
//!    without a `kid`, any of its keys for the algorithm), the key's
//!    algorithm being the header's: a key never verifies another
//!    algorithm's signature.
//! 6. **Claims**, of the verified token: `exp` required and `nbf` when
//!    present, both with the issuer's leeway, against the time given;
//!    `iss` exactly the issuer's URL (OIDC); `aud` (a string or an array)
//!    holding one of the issuer's audiences; `sub` a non-empty string,
//!    for SPIFFE a `spiffe://DOMAIN/PATH` id in the trust domain.
//! 7. **Mapping** ([`TrustedIssuer::identity`]): the principal template
//!    and `context.claims`.
//!
//! Every refusal is one sentence that starts `token refused:` and holds
//! no text of the token: no claim, no `kid`, no parser message quoting it.

use std::collections::HashSet;

use jsonwebtoken::{Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::{Map, Value};
use weft_crdt::issuers::{Algorithm, IssuerKind, Issuers, TrustedIssuer};
use weft_protocol::gateway::Verified;

use super::keys::KeySet;

/// The largest bearer JWT read.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A token whose issuer is known, not yet verified.
#[derive(Debug)]
pub struct Selected<'a> {
    /// The issuer that must have signed it.
    pub issuer: &'a TrustedIssuer,
    /// The header's algorithm.
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
}

/// A verified token.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The identity it comes to.
    pub verified: Verified,
    /// Until when it counts (its `exp` and the issuer's leeway), in Unix
    /// milliseconds.
    pub valid_until_ms: u64,
}

/// Why a token was not verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The issuer's key set holds no key for the token's `kid` and
    /// algorithm: fetching the set again may help.
    UnknownKey,
    /// Anything else, in one sentence.
    Refused(String),
}

impl Refusal {
    /// The sentence, for [`weft_protocol::gateway::Identity::Refused`].
    pub fn sentence(&self, issuer: &IssuerKind) -> String {
        match self {
            Refusal::UnknownKey => {
                format!("token refused: it is signed by a key that {issuer} does not publish")
            }
            Refusal::Refused(s) => s.clone(),
        }
    }
}

fn refused(why: impl std::fmt::Display) -> Refusal {
    Refusal::Refused(format!("token refused: {why}"))
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    iss: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
}

/// The issuer that must have signed `token`, after the size and header
/// checks (steps 1 to 4).
pub fn select<'a>(token: &str, issuers: &'a Issuers) -> Result<Selected<'a>, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "token refused: it is {} bytes, over the limit of {MAX_TOKEN_BYTES}",
            token.len()
        ));
    }
    let header = decode_header(token).map_err(|_| {
        "token refused: it is neither a wtk1 token nor a signed JWT with a known alg (alg none is never accepted)".to_owned()
    })?;
    if header.crit.is_some() {
        return Err("token refused: its header names critical extensions (crit)".into());
    }
    let alg = match header.alg {
        jsonwebtoken::Algorithm::RS256 => Algorithm::RS256,
        jsonwebtoken::Algorithm::ES256 => Algorithm::ES256,
        jsonwebtoken::Algorithm::EdDSA => Algorithm::EdDSA,
        other => {
            return Err(format!(
                "token refused: alg {other:?} is not one of RS256, ES256 and EdDSA"
            ));
        }
    };
    let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| "token refused: its claims are not a JSON object".to_owned())?;
    let iss = peek.iss.as_ref().and_then(Value::as_str);
    let sub = peek.sub.as_ref().and_then(Value::as_str);
    let issuer = iss
        .and_then(|iss| issuers.oidc(iss))
        .or_else(|| {
            sub.filter(|s| s.starts_with("spiffe://"))
                .and_then(|s| issuers.spiffe(s))
        })
        .ok_or_else(|| "token refused: its issuer is not trusted by any bundle".to_owned())?;
    if !issuer.algorithms.contains(&alg) {
        return Err(format!(
            "token refused: alg {alg:?} is not allowed for {}",
            issuer.kind
        ));
    }
    Ok(Selected {
        issuer,
        alg,
        kid: header.kid,
    })
}

/// Verifies a selected token's signature with `keys` and its claims at
/// `now_ms` (steps 5 to 7).
pub fn verify(
    token: &str,
    selected: &Selected<'_>,
    keys: &KeySet,
    now_ms: u64,
) -> Result<Checked, Refusal> {
    let issuer = selected.issuer;
    let mut validation = Validation::new(match selected.alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
    });
    // Only the signature here: the claims are checked below, against the
    // time given rather than the system clock.
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let mut tried = false;
    let mut claims = None;
    for key in keys.candidates(selected.alg, selected.kid.as_deref()) {
        tried = true;
        match decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_) => {
                    return Err(refused("its claims are not a JSON object"));
                }
                jsonwebtoken::errors::ErrorKind::Base64(_)
                | jsonwebtoken::errors::ErrorKind::InvalidToken => {
                    return Err(refused("it is not a well-formed JWT"));
                }
                _ => continue,
            },
        }
    }
    if !tried {
        return Err(Refusal::UnknownKey);
    }
    let Some(claims) = claims else {
        return Err(refused(format!(
            "its signature does not verify with the keys of {}",
            issuer.kind
        )));
    };
    let valid_until_ms = check_claims(&claims, issuer, now_ms)?;
    let id = issuer.identity(&claims).map_err(refused)?;
    Ok(Checked {
        verified: Verified {
            principal: id.principal,
            context_key: "claims",
            attrs: id.claims,
            source: issuer.kind.to_string(),
            credential_subject: None,
        },
        valid_until_ms,
    })
}

/// A NumericDate claim in whole seconds (fractions dropped), if it is one.
fn seconds(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Step 6: the claims of a verified token. Until when it counts.
fn check_claims(
    claims: &Map<String, Value>,
    issuer: &TrustedIssuer,
    now_ms: u64,
) -> Result<u64, Refusal> {
    let now = now_ms / 1000;
    let leeway = issuer.leeway_secs;
    let exp = match claims.get("exp") {
        None => return Err(refused("it has no exp claim")),
        Some(v) => seconds(v).ok_or_else(|| refused("its exp claim is not a number"))?,
    };
    if now > exp.saturating_add(leeway) {
        return Err(refused("it has expired"));
    }
    if let Some(v) = claims.get("nbf") {
        let nbf = seconds(v).ok_or_else(|| refused("its nbf claim is not a number"))?;
        if now.saturating_add(leeway) < nbf {
            return Err(refused("it is not valid yet (nbf)"));
        }
    }
    let sub = match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s,
        _ => return Err(refused("it has no sub claim")),
    };
    match &issuer.kind {
        IssuerKind::Oidc(url) => {
            if claims.get("iss").and_then(Value::as_str) != Some(url.as_str()) {
                return Err(refused(format!("its iss is not {url}")));
            }
        }
        IssuerKind::Spiffe(domain) => {
            let in_domain = sub
                .strip_prefix("spiffe://")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(d, path)| d.eq_ignore_ascii_case(domain) && !path.is_empty());
            if !in_domain {
                return Err(refused(format!(
                    "its sub is not a SPIFFE id in spiffe://{domain}"
                )));
            }
        }
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => issuer.audience.contains(a),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|a| issuer.audience.iter().any(|x| x == a)),
        _ => false,
    };
    if !audience_ok {
        return Err(refused(format!(
            "its aud holds none of the audiences of {}",
            issuer.kind
        )));
    }
    Ok(exp.saturating_add(leeway).saturating_mul(1000))
}
