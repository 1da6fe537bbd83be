//! Verified JWTs, kept so that a token sent again is not checked again.
//!
//! # Rules
//! - An entry is found by the SHA-256 of the token's text; the text itself
//!   is not kept.
//! - It counts until the token's `exp` (with its issuer's leeway), like
//!   a fresh check at that time would.
//! - It counts only while the issuer that verified it is trusted *as it
//!   was*: the entry holds the issuer's fingerprint (a SHA-256 of its
//!   whole definition: audiences, keys, algorithms, leeway, templates),
//!   and a hit needs the same fingerprint in the view it is asked in. An
//!   issuer dropped from the bundles, or changed in any way, is not
//!   honoured from the cache.
//! - The fingerprints of a view are computed once per view (by its state
//!   digest).
//! - The cache is bounded (quick_cache's CLOCK-Pro eviction).
//! - Revocation is not the cache's: a revoked principal is denied after
//!   the identity is resolved ([`weft_protocol::gateway::decide_http`]).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use sha2::{Digest as _, Sha256};
use weft_crdt::PolicyView;
use weft_crdt::issuers::{IssuerKind, TrustedIssuer};
use weft_protocol::gateway::Verified;

use super::jwt::Checked;

/// The default number of tokens kept.
pub const DEFAULT_TOKEN_CACHE: usize = 10_000;

struct Entry {
    issuer: IssuerKind,
    fingerprint: [u8; 32],
    checked: Checked,
}

struct Fingerprints {
    digest: String,
    issuers: Vec<(IssuerKind, [u8; 32])>,
}

/// The verified-token cache.
pub struct TokenCache {
    tokens: quick_cache::sync::Cache<[u8; 32], Arc<Entry>>,
    fingerprints: ArcSwapOption<Fingerprints>,
}

/// The cache key of a token.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// An issuer's fingerprint.
fn fingerprint(issuer: &TrustedIssuer) -> [u8; 32] {
    Sha256::digest(format!("{issuer:?}").as_bytes()).into()
}

impl TokenCache {
    /// A cache of `capacity` tokens; none for 0.
    pub fn new(capacity: usize) -> Option<TokenCache> {
        (capacity > 0).then(|| TokenCache {
            tokens: quick_cache::sync::Cache::new(capacity),
            fingerprints: ArcSwapOption::empty(),
        })
    }

    fn fingerprint_in(&self, view: &PolicyView, issuer: &IssuerKind) -> Option<[u8; 32]> {
        let memo = match self.fingerprints.load_full() {
            Some(m) if m.digest == view.digest() => m,
            _ => {
                let m = Arc::new(Fingerprints {
                    digest: view.digest().to_owned(),
                    issuers: view
                        .gateway()
                        .issuers
                        .issuers
                        .iter()
                        .map(|i| (i.kind.clone(), fingerprint(i)))
                        .collect(),
                });
                self.fingerprints.store(Some(m.clone()));
                m
            }
        };
        memo.issuers
            .iter()
            .find(|(k, _)| k == issuer)
            .map(|(_, f)| *f)
    }

    /// The identity of the token with `key`, if it was verified, has not
    /// expired at `now_ms`, and its issuer is trusted in `view` as it was.
    pub fn get(&self, key: &[u8; 32], view: &PolicyView, now_ms: u64) -> Option<Verified> {
        let entry = self.tokens.get(key)?;
        let current = self.fingerprint_in(view, &entry.issuer);
        if now_ms > entry.checked.valid_until_ms || current != Some(entry.fingerprint) {
            self.tokens.remove(key);
            return None;
        }
        Some(entry.checked.verified.clone())
    }

    /// Keeps a verified token, under its issuer as `view` defines it.
    pub fn insert(&self, key: [u8; 32], view: &PolicyView, issuer: &IssuerKind, checked: Checked) {
        if let Some(fingerprint) = self.fingerprint_in(view, issuer) {
            self.tokens.insert(
                key,
                Arc::new(Entry {
                    issuer: issuer.clone(),
                    fingerprint,
                    checked,
                }),
            );
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
