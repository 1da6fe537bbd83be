//! Durations and timestamps as text.
//!
//! Weft reads no clock in its core: a time is a `u64` count of seconds since
//! the Unix epoch, passed in by the caller. This module parses durations as
//! people write them on the command line (`90s`, `15m`, `24h`, `365d`) and
//! renders timestamps as RFC 3339 UTC (`2026-01-31T12:00:00Z`).

use thiserror::Error;

/// Why a duration could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "\"{input}\" is not a duration: {reason} (write a whole number followed by s, m, h or d, like 90s, 15m, 24h or 365d)"
)]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a duration like `90s`, `15m`, `24h` or `365d` into seconds.
///
/// The number must be a whole number of at least 1, and the unit is required.
pub fn parse_duration(input: &str) -> Result<u64, DurationError> {
    let err = |reason| DurationError {
        input: input.chars().take(64).collect(),
        reason,
    };
    let s = input.trim();
    let Some(unit) = s.chars().last() else {
        return Err(err("it is empty"));
    };
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        c if c.is_ascii_digit() => return Err(err("the unit is missing")),
        _ => return Err(err("the unit is not one of s, m, h, d")),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() {
        return Err(err("the number is missing"));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the number is not a whole number"));
    }
    let n: u64 = digits.parse().map_err(|_| err("the number is too large"))?;
    if n == 0 {
        return Err(err("it must be longer than zero"));
    }
    n.checked_mul(scale)
        .ok_or_else(|| err("the number is too large"))
}

/// Renders a number of seconds in the largest unit that divides it exactly,
/// in the form [`parse_duration`] reads (`0s` for zero).
pub fn format_duration(secs: u64) -> String {
    for (unit, scale) in [('d', 86_400), ('h', 3600), ('m', 60)] {
        if secs != 0 && secs.is_multiple_of(scale) {
            return format!("{}{unit}", secs / scale);
        }
    }
    format!("{secs}s")
}

/// Renders Unix seconds as an RFC 3339 UTC timestamp, e.g.
/// `2026-01-31T12:00:00Z`.
pub fn format_timestamp(unix: u64) -> String {
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Reads an RFC 3339 UTC timestamp as [`format_timestamp`] writes it
/// (`2026-01-31T12:00:00Z`; a date alone means its midnight) into Unix
/// seconds. Anything else, or a time before 1970, gives `None`.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t.strip_suffix(['Z', 'z'])?)),
        None => (text, None),
    };
    let num = |s: &str, len: usize| -> Option<u64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || y < 1970 || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut p = t.split(':');
            let (h, mi, s) = (num(p.next()?, 2)?, num(p.next()?, 2)?, num(p.next()?, 2)?);
            if p.next().is_some() || h > 23 || mi > 59 || s > 60 {
                return None;
            }
            h * 3600 + mi * 60 + s
        }
    };
    // Howard Hinnant's days_from_civil.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let unix = days * 86_400 + secs;
    // Refuse dates that do not exist (2026-02-31) rather than roll them over.
    (format_timestamp(unix)[..10] == *date).then_some(unix)
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("24h").unwrap(), 86_400);
        assert_eq!(parse_duration("365d").unwrap(), 365 * 86_400);
    }

    #[test]
    fn refuses_bad_input_clearly() {
        for (input, reason) in [
            ("", "it is empty"),
            ("90", "the unit is missing"),
            ("d", "the number is missing"),
            ("1.5h", "not a whole number"),
            ("-3d", "not a whole number"),
            ("3w", "not one of s, m, h, d"),
            ("0s", "longer than zero"),
            ("99999999999999999999d", "too large"),
            ("999999999999999999d", "too large"),
        ] {
            let e = parse_duration(input).unwrap_err().to_string();
            assert!(e.contains(reason), "{input}: {e}");
            assert!(e.contains("like 90s, 15m, 24h or 365d"), "{e}");
        }
    }

    #[test]
    fn timestamps_read_back() {
        for t in [0, 86_399, 1_795_651_200, 1_700_000_123, 4_102_444_800] {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }
        assert_eq!(parse_timestamp("2026-11-26"), Some(1_795_651_200));
        for bad in [
            "2026-02-31",
            "2026-13-01",
            "1969-12-31",
            "2026-11-26T25:00:00Z",
            "tomorrow",
            "2026-11-26T10:00:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(90), "90s");
        assert_eq!(format_duration(900), "15m");
        assert_eq!(format_duration(365 * 86_400), "365d");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_timestamp(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
