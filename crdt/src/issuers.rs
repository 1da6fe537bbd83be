//! Trusted issuers: the OIDC providers and SPIFFE trust domains whose
//! tokens a node accepts as identities. A bundle may hold an issuers file
//! (`issuers.toml` in the bundle's directory, the `issuers` field in the
//! document), so trusting an issuer needs the policy threshold, like any
//! policy.
//!
//! ```toml
//! [[oidc]]
//! issuer = "https://idp.example.com"        # the token's `iss`, exactly
//! audience = ["weft"]                        # the token's `aud` must hold one of these
//! jwks_url = "https://idp.example.com/jwks"  # or `jwks = '{"keys": [...]}'`, inline
//! algorithms = ["RS256", "ES256", "EdDSA"]   # the default: all three
//! leeway_secs = 60                           # clock skew allowed on exp and nbf (at most 300)
//! principal = 'User::"{sub}"'                # a uid template over string claims (the default)
//! claims = ["email", "groups"]               # claims copied into context.claims
//!
//! [[spiffe]]
//! trust_domain = "prod.example.org"          # JWT-SVIDs whose `sub` is spiffe://prod.example.org/…
//! audience = ["weft"]
//! jwks_url = "https://spire.example.org/keys"   # the trust domain's JWT bundle
//! principal = 'Workload::"{sub}"'            # the default
//! ```
//!
//! This module reads and checks the files and maps verified claims to a
//! principal and a context ([`TrustedIssuer::identity`]); verifying a
//! token's signature and fetching the keys are the node's.
//!
//! Merging: bundles are taken in name order; an issuer (by `issuer`, or by
//! trust domain) that an earlier bundle already names is left out and
//! named in [`Issuers::conflicts`].

use std::collections::BTreeMap;

use cedar_policy::{EntityUid, RestrictedExpression};
use serde::Deserialize;

use crate::template::UidTemplate;

/// A signature algorithm an issuer may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

/// Every algorithm, the default.
pub const ALL_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// The most clock skew an issuer may allow, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// The largest issuers file.
pub const MAX_ISSUERS_BYTES: usize = 256 * 1024;

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuersFile {
    #[serde(default)]
    oidc: Vec<OidcSpec>,
    #[serde(default)]
    spiffe: Vec<SpiffeSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcSpec {
    issuer: String,
    audience: OneOrMany,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks: Option<String>,
    #[serde(default)]
    algorithms: Option<Vec<Algorithm>>,
    #[serde(default)]
    leeway_secs: Option<u64>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    claims: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpiffeSpec {
    trust_domain: String,
    audience: OneOrMany,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks: Option<String>,
    #[serde(default)]
    algorithms: Option<Vec<Algorithm>>,
    #[serde(default)]
    leeway_secs: Option<u64>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    claims: Vec<String>,
}

/// Who an issuer is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IssuerKind {
    /// An OIDC provider: tokens whose `iss` is this URL.
    Oidc(String),
    /// A SPIFFE trust domain: JWT-SVIDs whose `sub` is `spiffe://DOMAIN/…`.
    Spiffe(String),
}

impl std::fmt::Display for IssuerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssuerKind::Oidc(url) => write!(f, "oidc {url}"),
            IssuerKind::Spiffe(td) => write!(f, "spiffe://{td}"),
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Fetched (and cached) from this URL.
    Url(String),
    /// Inline, a JWK set as JSON.
    Inline(String),
}

/// One trusted issuer, read and checked.
#[derive(Clone, Debug)]
pub struct TrustedIssuer {
    /// Who it is.
    pub kind: IssuerKind,
    /// Accepted audiences: a token's `aud` must hold one.
    pub audience: Vec<String>,
    /// Its keys.
    pub keys: KeySource,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The principal's uid template over the claims.
    pub principal: UidTemplate,
    /// Claims copied into `context.claims`.
    pub claims: Vec<String>,
}

/// A bundle's issuers file, read and checked.
#[derive(Clone, Debug, Default)]
pub struct BundleIssuers {
    /// Its issuers, in file order.
    pub issuers: Vec<TrustedIssuer>,
}

impl BundleIssuers {
    /// Reads and checks an issuers file: TOML in the documented shape;
    /// issuer URLs with `https://` or `http://`; trust domains that are
    /// host names; an audience; exactly one of `jwks_url` and `jwks`, an
    /// inline set being a JSON object with a `keys` array; known
    /// algorithms; `leeway_secs` at most [`MAX_LEEWAY_SECS`]; a principal
    /// template; no issuer twice.
    pub fn parse(text: &str) -> Result<BundleIssuers, String> {
        if text.len() > MAX_ISSUERS_BYTES {
            return Err(format!(
                "the issuers file is {} bytes, over the limit of {MAX_ISSUERS_BYTES}",
                text.len()
            ));
        }
        let file: IssuersFile =
            toml::from_str(text).map_err(|e| e.message().lines().collect::<Vec<_>>().join(" "))?;
        let mut issuers = Vec::new();
        for s in file.oidc {
            let url = s.issuer.trim_end_matches('/').to_owned();
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 9 {
                return Err(format!("oidc issuer {:?} is not an http(s) URL", s.issuer));
            }
            let kind = IssuerKind::Oidc(s.issuer.clone());
            issuers.push(common(
                kind,
                s.audience,
                s.jwks_url,
                s.jwks,
                s.algorithms,
                s.leeway_secs,
                s.principal.as_deref().unwrap_or(r#"User::"{sub}""#),
                s.claims,
            )?);
        }
        for s in file.spiffe {
            let td = s.trust_domain.to_ascii_lowercase();
            if td.is_empty()
                || !td
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(format!(
                    "spiffe trust_domain {:?} is not a trust domain name (e.g. prod.example.org)",
                    s.trust_domain
                ));
            }
            issuers.push(common(
                IssuerKind::Spiffe(td),
                s.audience,
                s.jwks_url,
                s.jwks,
                s.algorithms,
                s.leeway_secs,
                s.principal.as_deref().unwrap_or(r#"Workload::"{sub}""#),
                s.claims,
            )?);
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in &issuers {
            if !seen.insert(&i.kind) {
                return Err(format!("{} is named twice", i.kind));
            }
        }
        Ok(BundleIssuers { issuers })
    }
}

#[allow(clippy::too_many_arguments)]
fn common(
    kind: IssuerKind,
    audience: OneOrMany,
    jwks_url: Option<String>,
    jwks: Option<String>,
    algorithms: Option<Vec<Algorithm>>,
    leeway_secs: Option<u64>,
    principal: &str,
    claims: Vec<String>,
) -> Result<TrustedIssuer, String> {
    let at = |e: String| format!("{kind}: {e}");
    let audience = match audience {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(a) => a,
    };
    if audience.is_empty() || audience.iter().any(|a| a.is_empty()) {
        return Err(at("audience is empty".into()));
    }
    let keys = match (jwks_url, jwks) {
        (Some(url), None) if url.starts_with("https://") || url.starts_with("http://") => {
            KeySource::Url(url)
        }
        (Some(url), None) => return Err(at(format!("jwks_url {url:?} is not an http(s) URL"))),
        (None, Some(set)) => {
            let v: serde_json::Value =
                serde_json::from_str(&set).map_err(|e| at(format!("jwks is not JSON: {e}")))?;
            if !v.get("keys").is_some_and(|k| k.is_array()) {
                return Err(at("jwks is not a JWK set: it has no \"keys\" array".into()));
            }
            KeySource::Inline(set)
        }
        _ => return Err(at("give exactly one of jwks_url and jwks".into())),
    };
    let mut algorithms = algorithms.unwrap_or_else(|| ALL_ALGORITHMS.to_vec());
    algorithms.sort();
    algorithms.dedup();
    if algorithms.is_empty() {
        return Err(at("algorithms is empty".into()));
    }
    let leeway_secs = leeway_secs.unwrap_or(60);
    if leeway_secs > MAX_LEEWAY_SECS {
        return Err(at(format!(
            "leeway_secs {leeway_secs} is over the limit of {MAX_LEEWAY_SECS}"
        )));
    }
    let principal = UidTemplate::parse(principal).map_err(|e| at(format!("principal: {e}")))?;
    for c in &claims {
        if c.is_empty() || c.len() > 128 {
            return Err(at(format!("claims: {c:?} is not a claim name")));
        }
    }
    Ok(TrustedIssuer {
        kind,
        audience,
        keys,
        algorithms,
        leeway_secs,
        principal,
        claims,
    })
}

/// An identity made from verified claims.
#[derive(Clone, Debug)]
pub struct ClaimsIdentity {
    /// The principal.
    pub principal: EntityUid,
    /// `context.claims`: the issuer's listed claims that the token holds.
    pub claims: RestrictedExpression,
}

impl TrustedIssuer {
    /// Maps verified claims to the principal (the template, filled with
    /// string claims) and `context.claims` (the listed claims the token
    /// holds: strings, integers, booleans, and arrays of strings as sets;
    /// other claims are left out).
    pub fn identity(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ClaimsIdentity, String> {
        let principal = self
            .principal
            .fill(|name| claims.get(name).and_then(|v| v.as_str()))
            .map_err(|slot| {
                format!(
                    "the token has no string claim {slot:?} for the principal {}",
                    self.principal.as_str()
                )
            })?;
        let mut fields = BTreeMap::new();
        for name in &self.claims {
            let value = match claims.get(name) {
                Some(serde_json::Value::String(s)) => RestrictedExpression::new_string(s.clone()),
                Some(serde_json::Value::Bool(b)) => RestrictedExpression::new_bool(*b),
                Some(serde_json::Value::Number(n)) if n.is_i64() => {
                    RestrictedExpression::new_long(n.as_i64().unwrap_or_default())
                }
                Some(serde_json::Value::Array(items)) if items.iter().all(|i| i.is_string()) => {
                    RestrictedExpression::new_set(
                        items
                            .iter()
                            .filter_map(|i| i.as_str())
                            .map(|s| RestrictedExpression::new_string(s.to_owned())),
                    )
                }
                _ => continue,
            };
            fields.insert(name.clone(), value);
        }
        let claims = RestrictedExpression::new_record(fields)
            .map_err(|e| format!("the claims do not make a record: {e}"))?;
        Ok(ClaimsIdentity { principal, claims })
    }
}

/// Every bundle's issuers, merged.
#[derive(Clone, Debug, Default)]
pub struct Issuers {
    /// The issuers in force, in bundle name order.
    pub issuers: Vec<TrustedIssuer>,
    /// Issuers left out because an earlier bundle names them.
    pub conflicts: Vec<String>,
}

impl Issuers {
    /// Merges bundles' issuers, in the order given.
    pub fn build<'a>(bundles: impl IntoIterator<Item = (&'a str, &'a BundleIssuers)>) -> Self {
        let mut merged = Issuers::default();
        for (bundle, file) in bundles {
            for issuer in &file.issuers {
                if merged.issuers.iter().any(|i| i.kind == issuer.kind) {
                    merged.conflicts.push(format!(
                        "{bundle}: {} is named by an earlier bundle",
                        issuer.kind
                    ));
                } else {
                    merged.issuers.push(issuer.clone());
                }
            }
        }
        merged
    }

    /// The OIDC issuer whose URL is `iss`.
    pub fn oidc(&self, iss: &str) -> Option<&TrustedIssuer> {
        self.issuers
            .iter()
            .find(|i| matches!(&i.kind, IssuerKind::Oidc(u) if u == iss))
    }

    /// The SPIFFE trust domain of a `spiffe://DOMAIN/…` id.
    pub fn spiffe(&self, spiffe_id: &str) -> Option<&TrustedIssuer> {
        let rest = spiffe_id.strip_prefix("spiffe://")?;
        let domain = rest.split('/').next()?.to_ascii_lowercase();
        self.issuers
            .iter()
            .find(|i| matches!(&i.kind, IssuerKind::Spiffe(d) if *d == domain))
    }

    /// Whether no issuer is trusted.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[oidc]]
issuer = "https://idp.example.com"
audience = "weft"
jwks_url = "https://idp.example.com/jwks"
algorithms = ["RS256"]
claims = ["email", "groups", "level", "admin", "nested"]

[[spiffe]]
trust_domain = "Prod.Example.org"
audience = ["weft", "api"]
jwks = '{"keys": []}'
"#;

    #[test]
    fn issuers_files_are_read_and_claims_mapped() {
        let file = BundleIssuers::parse(FILE).unwrap();
        assert_eq!(file.issuers.len(), 2);
        let merged = Issuers::build([("idp", &file)]);
        let oidc = merged.oidc("https://idp.example.com").unwrap();
        assert_eq!(oidc.algorithms, [Algorithm::RS256]);
        assert_eq!(oidc.leeway_secs, 60);
        let claims = serde_json::json!({
            "sub": "alice", "email": "a@x", "groups": ["eng", "ops"], "level": 3,
            "admin": false, "nested": {"a": 1}, "other": "x"
        });
        let id = oidc.identity(claims.as_object().unwrap()).unwrap();
        assert_eq!(id.principal.to_string(), r#"User::"alice""#);
        let ctx = cedar_policy::Context::from_pairs([("claims".to_owned(), id.claims)]).unwrap();
        let json = ctx.to_json_value().unwrap();
        assert_eq!(json["claims"]["email"], "a@x");
        assert_eq!(json["claims"]["level"], 3);
        assert_eq!(json["claims"]["admin"], false);
        assert!(json["claims"].get("nested").is_none());
        assert!(json["claims"].get("other").is_none());

        let svid = merged.spiffe("spiffe://prod.example.org/ns/web").unwrap();
        let id = svid
            .identity(
                serde_json::json!({"sub": "spiffe://prod.example.org/ns/web"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            id.principal.to_string(),
            r#"Workload::"spiffe://prod.example.org/ns/web""#
        );
        assert!(merged.spiffe("spiffe://other.org/x").is_none());
        assert!(merged.oidc("https://evil.example.com").is_none());
        let e = oidc
            .identity(serde_json::json!({"sub": 5}).as_object().unwrap())
            .unwrap_err();
        assert!(e.contains("no string claim \"sub\""), "{e}");
    }

    #[test]
    fn bad_issuers_files_are_refused() {
        for (text, needle) in [
            (
                "[[oidc]]\nissuer = \"idp\"\naudience = \"w\"\njwks = '{\"keys\":[]}'",
                "not an http(s) URL",
            ),
            (
                "[[oidc]]\nissuer = \"https://i\"\naudience = []\njwks = '{\"keys\":[]}'",
                "audience is empty",
            ),
            (
                "[[oidc]]\nissuer = \"https://i\"\naudience = \"w\"",
                "exactly one of",
            ),
            (
                "[[oidc]]\nissuer = \"https://i\"\naudience = \"w\"\njwks = '{}'",
                "no \"keys\"",
            ),
            (
                "[[oidc]]\nissuer = \"https://i\"\naudience = \"w\"\njwks = '{\"keys\":[]}'\nalgorithms = [\"HS256\"]",
                "unknown variant",
            ),
            (
                "[[oidc]]\nissuer = \"https://i\"\naudience = \"w\"\njwks = '{\"keys\":[]}'\nleeway_secs = 9999",
                "over the limit",
            ),
            (
                "[[oidc]]\nissuer = \"https://i\"\naudience = \"w\"\njwks = '{\"keys\":[]}'\nprincipal = 'sub'",
                "principal",
            ),
            (
                "[[oidc]]\nissuer = \"https://i\"\naudience = \"w\"\njwks = '{\"keys\":[]}'\n[[oidc]]\nissuer = \"https://i\"\naudience = \"w\"\njwks = '{\"keys\":[]}'",
                "named twice",
            ),
            (
                "[[spiffe]]\ntrust_domain = \"spiffe://x\"\naudience = \"w\"\njwks = '{\"keys\":[]}'",
                "not a trust domain",
            ),
        ] {
            let e = BundleIssuers::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn the_first_bundle_to_name_an_issuer_wins() {
        let a = BundleIssuers::parse(FILE).unwrap();
        let b = BundleIssuers::parse(
            "[[oidc]]\nissuer = \"https://idp.example.com\"\naudience = \"other\"\njwks = '{\"keys\":[]}'",
        )
        .unwrap();
        let merged = Issuers::build([("a", &a), ("b", &b)]);
        assert_eq!(merged.issuers.len(), 2);
        assert_eq!(merged.conflicts.len(), 1);
        assert_eq!(
            merged.oidc("https://idp.example.com").unwrap().audience,
            ["weft"]
        );
    }
}
