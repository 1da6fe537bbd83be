//! The resolver's counters, registered under the node's `weft_` prefix
//! (`docs/metrics.md` lists them):
//! - `weft_jwks_fetches_total{result}`: key set fetches, `ok` or `error`,
//!   and `limited` for a fetch a request wanted and the rate limit held
//!   back;
//! - `weft_jwt_verifications_total{result}`: JWTs checked in full, `ok` or
//!   `refused`;
//! - `weft_jwt_cache_hits_total`: JWTs answered from the token cache,
//!   with no signature check.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A result label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `error`, `limited` or `refused`.
    pub result: &'static str,
}

/// The counters (clones share them).
#[derive(Clone, Debug, Default)]
pub struct IdentityMetrics {
    fetches: Family<ResultLabel, Counter>,
    verifications: Family<ResultLabel, Counter>,
    cache_hits: Counter,
}

impl IdentityMetrics {
    /// Registers the counters in `registry` (the node's `weft_` one).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "jwks_fetches",
            "Fetches of issuers' key sets (JWKS), by result: ok, error, or limited (held back by the rate limit)",
            self.fetches.clone(),
        );
        registry.register(
            "jwt_verifications",
            "Bearer JWTs checked in full (signature and claims), by result: ok or refused",
            self.verifications.clone(),
        );
        registry.register(
            "jwt_cache_hits",
            "Bearer JWTs answered from the verified-token cache",
            self.cache_hits.clone(),
        );
    }

    /// Counts a fetch.
    pub fn fetch(&self, result: &'static str) {
        self.fetches.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a full verification.
    pub fn verification(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.verifications
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a cache hit.
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// Fetches so far with `result` (for tests).
    pub fn fetches(&self, result: &'static str) -> u64 {
        self.fetches.get_or_create(&ResultLabel { result }).get()
    }

    /// Cache hits so far (for tests).
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.get()
    }
}
