//! The per-client rate limit of `POST /v1/updates`: a token bucket per
//! client IP address.
//!
//! Updates are signed, so anyone may submit one, but each costs the node
//! signature checks, an automerge apply and a durable sled write. A client
//! holds [`UpdateRate::burst`] tokens at most, spends one per request and
//! gets [`UpdateRate::per_minute`] back each minute; a request with no
//! token left is answered 429. The table holds at most [`MAX_CLIENTS`]
//! addresses: a full bucket is forgotten (it holds nothing a fresh one
//! would not), and when every entry is still refilling, a new address is
//! refused until one is (a flood from many addresses cannot grow memory).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// The most client addresses tracked at once.
pub const MAX_CLIENTS: usize = 16_384;

/// The rate settings (weft.toml `api_updates_per_minute`,
/// `api_updates_burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateRate {
    /// Tokens a client gets back per minute; 0 turns the limit off.
    /// Default 120 (two a second): well above what operators push by hand
    /// or from CI, while one address cannot keep the node verifying and
    /// writing updates all the time.
    pub per_minute: u32,
    /// Tokens a client holds at most, so requests in a burst. Default 60:
    /// `weft push` of a directory of updates goes through at once.
    pub burst: u32,
}

impl Default for UpdateRate {
    fn default() -> Self {
        UpdateRate {
            per_minute: crate::layout::DEFAULT_API_UPDATES_PER_MINUTE,
            burst: crate::layout::DEFAULT_API_UPDATES_BURST,
        }
    }
}

/// The buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate: UpdateRate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter with these settings.
    pub fn new(rate: UpdateRate) -> Self {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn rate(&self) -> UpdateRate {
        self.rate
    }

    /// Whether `client` may make a request at `now` (and spends a token if so).
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        if self.rate.per_minute == 0 {
            return true;
        }
        let burst = f64::from(self.rate.burst.max(1));
        let per_sec = f64::from(self.rate.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&client) && buckets.len() >= MAX_CLIENTS {
            buckets.retain(|_, b| refill(b, now, per_sec, burst) < burst);
            if buckets.len() >= MAX_CLIENTS {
                return false;
            }
        }
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = refill(b, now, per_sec, burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refill(b: &Bucket, now: Instant, per_sec: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * per_sec).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let l = RateLimiter::new(UpdateRate {
            per_minute: 60,
            burst: 3,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        assert!(l.allow(a, t) && l.allow(a, t) && l.allow(a, t));
        assert!(!l.allow(a, t), "the burst is spent");
        assert!(l.allow(b, t), "another client has its own bucket");
        assert!(!l.allow(a, t + Duration::from_millis(900)));
        assert!(l.allow(a, t + Duration::from_millis(1100)), "one a second");
        let off = RateLimiter::new(UpdateRate {
            per_minute: 0,
            burst: 0,
        });
        assert!((0..1000).all(|_| off.allow(a, t)));
    }
}
