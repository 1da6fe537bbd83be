//! Callers' identities: the bearer credential of a proxy's question
//! (`/v1/forward-auth`, Envoy's ext_authz `Check`), resolved into a
//! [`weft_protocol::gateway::Identity`] that [`weft_protocol::gateway::decide_http`]
//! decides on.
//!
//! A credential is one of:
//! - a Weft token (`wtk1.…`), verified against the trust root as
//!   `POST /v1/authorize` verifies one ([`weft_protocol::gateway::weft_token`]);
//! - a JWT from an issuer that a signed bundle trusts
//!   ([`weft_crdt::issuers`]): an OIDC ID or access token, or a SPIFFE
//!   JWT-SVID, verified against the issuer's keys.
//!
//! # Layout
//! - [`jwt`]: the checks of one token against the view's issuers, pure.
//! - [`keys`]: a JWK set read into keys.
//! - [`jwks`]: key sets fetched, refreshed, saved, kept during outages.
//! - [`cache`]: verified tokens by hash, until they expire.
//! - [`metrics`]: the counters.
//!
//! # Rules
//! - Only issuers named by the view's bundles are ever trusted; an issuer
//!   that no bundle names any more is refused at once, cached token or not.
//! - The time is the `now_ms` given, never the system clock.
//! - A refusal is [`Identity::Refused`] with one sentence starting `token
//!   refused:`, holding no text of the token.
//! - Docs: `docs/identity.md`.

use std::sync::Arc;

use weft_crdt::PolicyView;
use weft_crdt::issuers::KeySource;
use weft_protocol::gateway::{Identity, weft_token};
use weft_protocol::token::TOKEN_PREFIX;
use weft_protocol::trust::TrustRoot;

pub mod cache;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod metrics;

use jwks::{Fetch, JwksOptions, KeyStore};
use jwt::{Checked, Refusal, Selected};

/// How a node resolves JWTs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityOptions {
    /// Key sets: fetching, saving, how long they keep working.
    pub jwks: JwksOptions,
    /// Verified tokens kept (0: none, every request checks its token).
    pub token_cache: usize,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        IdentityOptions {
            jwks: JwksOptions::default(),
            token_cache: cache::DEFAULT_TOKEN_CACHE,
        }
    }
}

/// One issuer in `GET /v1/status`'s `issuers`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IssuerStatus {
    /// `oidc URL` or `spiffe://DOMAIN`.
    pub issuer: String,
    /// Its key set's URL, or `inline`.
    pub keys: String,
    /// Usable keys held (none before the first good fetch).
    pub keys_held: Option<usize>,
    /// When the set held was fetched, Unix milliseconds.
    pub last_good_fetch_ms: Option<u64>,
    /// Why the last fetch failed, if it did.
    pub last_error: Option<String>,
    /// Whether the set held is older than `jwks_max_age` (its tokens are
    /// refused until a fetch succeeds).
    pub stale: bool,
}

/// Resolves callers' credentials. One per node, shared by the API's
/// handlers and the ext_authz service.
pub struct Identities {
    keys: Arc<KeyStore>,
    tokens: Option<cache::TokenCache>,
    metrics: metrics::IdentityMetrics,
}

impl Default for Identities {
    fn default() -> Self {
        Identities::new(IdentityOptions::default())
    }
}

impl Identities {
    /// A resolver. Key set fetches and their timer run on the tokio
    /// runtime this is called on (none outside one: then only inline key
    /// sets, or sets fetched by a request, are used).
    pub fn new(opts: IdentityOptions) -> Self {
        let metrics = metrics::IdentityMetrics::default();
        let runtime = tokio::runtime::Handle::try_current().ok();
        Identities {
            keys: KeyStore::new(opts.jwks, runtime, metrics.clone()),
            tokens: cache::TokenCache::new(opts.token_cache),
            metrics,
        }
    }

    /// The counters, to register with the node's metrics.
    pub fn metrics(&self) -> &metrics::IdentityMetrics {
        &self.metrics
    }

    /// What `bearer` (the text after `Bearer `, or none) comes to, against
    /// the issuers of `view` and the trust root, at `now_ms`.
    pub async fn resolve(
        &self,
        bearer: Option<&str>,
        view: &PolicyView,
        root: &TrustRoot,
        now_ms: u64,
    ) -> Identity {
        match bearer {
            None => Identity::Missing,
            Some(t) if t.starts_with(TOKEN_PREFIX) => weft_token(t, root, now_ms / 1000),
            Some(jwt) => self.jwt(jwt, view, now_ms).await,
        }
    }

    async fn jwt(&self, token: &str, view: &PolicyView, now_ms: u64) -> Identity {
        let key = self.tokens.as_ref().map(|_| cache::token_key(token));
        if let (Some(tokens), Some(key)) = (&self.tokens, &key)
            && let Some(verified) = tokens.get(key, view, now_ms)
        {
            self.metrics.cache_hit();
            return Identity::Verified(Box::new(verified));
        }
        let checked = match jwt::select(token, &view.gateway().issuers) {
            Ok(selected) => self
                .check(token, &selected, now_ms)
                .await
                .map(|c| (c, selected.issuer.kind.clone())),
            Err(why) => Err(why),
        };
        self.metrics.verification(checked.is_ok());
        match checked {
            Ok((checked, issuer)) => {
                let verified = checked.verified.clone();
                if let (Some(tokens), Some(key)) = (&self.tokens, key) {
                    tokens.insert(key, view, &issuer, checked);
                }
                Identity::Verified(Box::new(verified))
            }
            Err(why) => Identity::Refused(why),
        }
    }

    /// Verifies a selected token with its issuer's keys, fetching them
    /// when they are missing, stale, or lack the token's key.
    async fn check(
        &self,
        token: &str,
        selected: &Selected<'_>,
        now_ms: u64,
    ) -> Result<Checked, String> {
        let kind = &selected.issuer.kind;
        let url = match &selected.issuer.keys {
            KeySource::Inline(text) => {
                let keys = self.keys.inline(text).map_err(|e| {
                    format!("token refused: the inline key set of {kind} is not usable: {e}")
                })?;
                return jwt::verify(token, selected, &keys, now_ms).map_err(|r| r.sentence(kind));
            }
            KeySource::Url(url) => url,
        };
        let max_age = self.keys.options().max_age;
        let entry = self.keys.url(url);
        let held = entry.fresh(now_ms, max_age);
        if let Some(set) = &held {
            self.keys.refresh_if_due(&entry);
            match jwt::verify(token, selected, &set.keys, now_ms) {
                Err(Refusal::UnknownKey) => {}
                done => return done.map_err(|r| r.sentence(kind)),
            }
        }
        // No fresh set, or the token's key is not in it: fetch (within
        // the rate limit) and wait.
        let fetched = self.keys.fetch(&entry, false).await;
        let Some(set) = entry.fresh(now_ms, max_age) else {
            return Err(self.unavailable(kind, &entry, now_ms, fetched));
        };
        match jwt::verify(token, selected, &set.keys, now_ms) {
            Err(Refusal::UnknownKey) if fetched == Fetch::Limited => Err(format!(
                "token refused: it is signed by a key that {kind} does not publish (its key set was fetched again less than {} ms ago)",
                self.keys.options().refetch_after.as_millis()
            )),
            done => done.map_err(|r| r.sentence(kind)),
        }
    }

    /// Why an issuer's tokens cannot be checked.
    fn unavailable(
        &self,
        kind: &weft_crdt::issuers::IssuerKind,
        entry: &jwks::UrlKeys,
        now_ms: u64,
        fetched: Fetch,
    ) -> String {
        let why = match fetched {
            Fetch::Failed(e) => e,
            Fetch::Done => "it holds no usable key".into(),
            Fetch::Limited => match entry.last_error() {
                Some(e) => format!("{e} (fetches are rate-limited)"),
                None => "a fetch is rate-limited".into(),
            },
        };
        match entry.held() {
            Some(old) => format!(
                "token refused: the keys of {kind} were fetched {} s ago, over jwks_max_age ({} s), and fetching them again failed: {why}",
                now_ms.saturating_sub(old.fetched_ms) / 1000,
                self.keys.options().max_age.as_secs()
            ),
            None => format!("token refused: the keys of {kind} are not available: {why}"),
        }
    }

    /// Each issuer of `view`, with its keys, at `now_ms`.
    pub fn status(&self, view: &PolicyView, now_ms: u64) -> Vec<IssuerStatus> {
        let max_age = self.keys.options().max_age;
        view.gateway()
            .issuers
            .issuers
            .iter()
            .map(|i| match &i.keys {
                KeySource::Inline(text) => {
                    let keys = self.keys.inline(text);
                    IssuerStatus {
                        issuer: i.kind.to_string(),
                        keys: "inline".into(),
                        keys_held: keys.as_ref().ok().map(|k| k.len()),
                        last_good_fetch_ms: None,
                        last_error: keys.err(),
                        stale: false,
                    }
                }
                KeySource::Url(url) => {
                    let entry = self.keys.get(url);
                    let held = entry.as_ref().and_then(|e| e.held());
                    IssuerStatus {
                        issuer: i.kind.to_string(),
                        keys: url.clone(),
                        keys_held: held.as_ref().map(|h| h.keys.len()),
                        last_good_fetch_ms: held.as_ref().map(|h| h.fetched_ms),
                        last_error: entry.as_ref().and_then(|e| e.last_error()),
                        stale: held.is_some()
                            && entry
                                .as_ref()
                                .and_then(|e| e.fresh(now_ms, max_age))
                                .is_none(),
                    }
                }
            })
            .collect()
    }
}
