//! The wall clock, in one place: what the replica, the audit trail, the
//! API and the CLI are given as "now".

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the `now_ms` the replica is given.
/// A clock before the epoch reads 0.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch; 0 before it.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Whole seconds since the Unix epoch, for the CLI, which reads the clock
/// once and passes `now` down: a clock set before 1970 is an error (the
/// certificates and tokens it would sign or check are dated by it), not 0.
pub fn unix_secs() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("the system clock is set before 1970"))?
        .as_secs())
}
