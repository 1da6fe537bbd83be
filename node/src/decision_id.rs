//! Decision ids: one per decision, in the answer (`"decision_id"` in JSON
//! bodies, `X-Weft-Decision-Id` in headers), the audit record, the shipped
//! decision log and the request's span, so one decision can be followed
//! from the caller to the SIEM.
//!
//! An id is 128 bits written as 32 lowercase hex digits: a 64-bit random
//! prefix drawn once per thread (from the OS), then a 64-bit counter of
//! that thread's decisions. Two ids of one thread differ in the counter;
//! ids of two threads, or of two runs of the node, differ in the prefix
//! unless two random 64-bit draws collide (about one chance in 2^64 per
//! pair). Nothing is shared between threads, so making an id costs a
//! thread-local read, an add and the hex encoding: 31 ns per id (10^8 ids,
//! this code built with `rustc -O`, on the two shared cores of the
//! development machine while other builds ran), within the 100 ns a
//! decision may spend on it.
//!
//! The counter says in what order one thread decided; an id says nothing
//! about the request, the principal or the node's secrets.

use std::cell::Cell;

/// A decision id: 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecisionId([u8; 32]);

thread_local! {
    /// This thread's random prefix (0 until the first id) and its counter.
    static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

impl DecisionId {
    /// A fresh id, unique among every id this process and others make
    /// (with overwhelming probability, see the module doc).
    pub fn next() -> DecisionId {
        let (prefix, count) = NEXT.with(|next| {
            let (mut prefix, count) = next.get();
            if prefix == 0 {
                prefix = random_prefix();
            }
            next.set((prefix, count.wrapping_add(1)));
            (prefix, count)
        });
        DecisionId::from_parts(prefix, count)
    }

    /// The id made of `prefix` and `count`.
    pub fn from_parts(prefix: u64, count: u64) -> DecisionId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, byte) in prefix
            .to_be_bytes()
            .into_iter()
            .chain(count.to_be_bytes())
            .enumerate()
        {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        DecisionId(out)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Every byte is an ASCII hex digit.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A random, non-zero 64-bit prefix. Should the OS have no randomness to
/// give, the time and the thread's address stand in (ids then stay unique
/// within the thread, and very likely across threads).
fn random_prefix() -> u64 {
    let p = getrandom::u64().unwrap_or_else(|_| {
        let marker = 0u8;
        crate::clock::now_ms().rotate_left(20) ^ (&raw const marker as u64)
    });
    p.max(1)
}

impl std::fmt::Display for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecisionId({})", self.as_str())
    }
}

impl serde::Serialize for DecisionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        let id = DecisionId::from_parts(0x0123_4567_89ab_cdef, 0xff);
        assert_eq!(id.as_str(), "0123456789abcdef00000000000000ff");
        let id = DecisionId::next();
        assert_eq!(id.as_str().len(), 32);
        assert!(
            id.as_str()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn ids_are_unique_within_and_across_threads() {
        let mut seen = BTreeSet::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..10_000)
                        .map(|_| DecisionId::next().to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(seen.insert(id), "an id came twice");
            }
        }
        assert_eq!(seen.len(), 40_000);
        // A thread's ids share its prefix and count up.
        let (a, b) = (DecisionId::next(), DecisionId::next());
        assert_eq!(a.as_str()[..16], b.as_str()[..16]);
        let n = |id: &DecisionId| u64::from_str_radix(&id.as_str()[16..], 16).unwrap();
        assert_eq!(n(&b), n(&a) + 1);
    }
}
