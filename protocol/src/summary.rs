//! Detection summaries: what a node tells the mesh about the principals it
//! served in one time slot, signed by its node key.
//!
//! Each node's anomaly detector sees only its own decisions. To let every
//! node score a principal on what the whole mesh saw, each node publishes,
//! once per slot (10 s in the node), one [`Summary`]: per principal, counts
//! (requests, denies, failed tokens) and three sketches (the distinct
//! resources, actions and (action, resource type) pairs it used, as bitmaps
//! of hashed uids) that merge
//! across sites by bitwise OR. No raw request leaves the node.
//!
//! ```text
//! SignedSummary = encode(SignedSummary, { node, body, sig })
//! body          = encode(Summary, { node, slot_start_ms, slot_ms, dropped, principals })
//! sig           = the node's signature over body, in Domain::DetectSummary
//! ```
//!
//! [`SignedSummary::from_bytes`] checks the size before anything else and
//! decodes only the envelope (the node id, the body as opaque bytes, the
//! signature); [`SignedSummary::verify`] checks the signature over the body
//! bytes as received, and only then decodes the body and checks its bounds
//! ([`MAX_PRINCIPALS`], [`MAX_PRINCIPAL_LEN`], names strictly ascending,
//! denies and failed tokens at most the requests, the body's node the
//! signer). Neither panics on any input; every refusal is one sentence
//! ([`SummaryError`]). Whether the node is one the mesh admitted is the
//! caller's question, asked before the signature is checked.
//!
//! # The sketches
//! A sketch is a bitmap: resources over 256 bits, actions over 64,
//! (action, resource type) pairs over 256 (two bits each), a uid setting
//! the bit its hash picks ([`sketch_bit`]: FNV-1a and a SplitMix
//! finalizer, the same on every node, so the bitmaps of two sites line up).
//! The number of distinct items behind a bitmap is estimated by linear
//! counting; the union of two sites' items is the OR of their bitmaps, so
//! merging is commutative, associative and idempotent. On the wire a
//! bitmap with few bits set is the list of their indices (one byte each),
//! otherwise its bytes: a principal seen once in the slot costs two bytes
//! of sketch, not forty.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::encoding::{self, DecodeError, Kind};
use crate::identity::{Domain, NodeId, SecretKey, Signature, SignatureError};

/// Principals one summary holds at most: the busiest of a slot when more
/// were active. 2,048 ordinary principals in 10 s is a node serving about
/// 10,000 active ones at a request a minute each.
pub const MAX_PRINCIPALS: usize = 2048;

/// The longest principal uid a summary carries (a longer one is left out).
pub const MAX_PRINCIPAL_LEN: usize = 256;

/// The largest encoded summary body: [`MAX_PRINCIPALS`] principals of the
/// longest name with dense sketches fit (`2048 × (256 + 2 + 15 + 34 + 10)`).
pub const MAX_SUMMARY_BYTES: usize = 660 * 1024;

/// The largest encoded [`SignedSummary`]: a body, a node id, a signature.
pub const MAX_SIGNED_SUMMARY_BYTES: usize = MAX_SUMMARY_BYTES + 256;

/// Bits of a resource sketch.
pub const RESOURCE_BITS: usize = 256;

/// Bits of an action sketch.
pub const ACTION_BITS: usize = 64;

/// Bits of an (action, resource type) pair sketch.
pub const PAIR_BITS: usize = 256;

/// Why a summary was refused. Each message is one sentence.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SummaryError {
    /// The bytes do not decode (over the size limit, not a summary, malformed).
    #[error("the detection summary does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The signature does not verify under the node's key.
    #[error("the detection summary's signature does not verify: {0}")]
    Signature(#[from] SignatureError),
    /// The node that signed is not one the mesh admitted.
    #[error("the detection summary is from node {0}, which is not admitted")]
    NotAdmitted(Box<NodeId>),
    /// The body names another node than the one that signed it.
    #[error("the detection summary signed by node {signer} names node {named}")]
    WrongNode {
        /// The signer (boxed: a node id holds a key).
        signer: Box<NodeId>,
        /// The node the body names.
        named: Box<NodeId>,
    },
    /// The body decodes but breaks a bound.
    #[error("the detection summary is invalid: {0}")]
    Invalid(String),
}

/// One principal's behaviour at one node over one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalSummary {
    /// The principal's Cedar uid.
    pub principal: String,
    /// Requests decided.
    pub requests: u32,
    /// Of them, denied.
    pub denies: u32,
    /// Of them, with a failed or expired token.
    pub token_failures: u32,
    /// The resources used: a 256-bit sketch ([`sketch_bit`]).
    #[serde(with = "bits")]
    pub resources: [u64; RESOURCE_BITS / 64],
    /// The actions used: a 64-bit sketch ([`sketch_bit`]).
    #[serde(with = "bits")]
    pub actions: [u64; ACTION_BITS / 64],
    /// The (action, resource type) pairs used: a 256-bit sketch, two bits
    /// per pair ([`pair_bits`]).
    #[serde(with = "bits")]
    pub pairs: [u64; PAIR_BITS / 64],
}

/// What one node saw of its principals in one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The node that decided (and signs).
    pub node: NodeId,
    /// Where the slot starts (Unix ms, a multiple of `slot_ms`).
    pub slot_start_ms: u64,
    /// The slot's length, ms.
    pub slot_ms: u32,
    /// Principals active in the slot but left out by [`MAX_PRINCIPALS`].
    pub dropped: u32,
    /// The principals, by uid, strictly ascending.
    pub principals: Vec<PrincipalSummary>,
}

/// A summary as gossiped: its encoded body and the node's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSummary {
    /// The node that signed, read before the body is decoded.
    pub node: NodeId,
    /// `encode(Kind::Summary, &Summary)`, exactly the bytes signed.
    #[serde(with = "encoding::bytes")]
    pub body: Vec<u8>,
    /// The node's signature over `body`, in [`Domain::DetectSummary`].
    pub sig: Signature,
}

impl SignedSummary {
    /// Encodes `summary` and signs it with `key`; the summary's `node` is
    /// set to `key`'s node.
    pub fn sign(summary: &Summary, key: &SecretKey) -> SignedSummary {
        let node = NodeId::new(key.public());
        let body = if summary.node == node {
            encoding::encode(Kind::Summary, summary)
        } else {
            let mut s = summary.clone();
            s.node = node;
            encoding::encode(Kind::Summary, &s)
        };
        let sig = key.sign(Domain::DetectSummary, &body);
        SignedSummary { node, body, sig }
    }

    /// The canonical encoding (what is gossiped).
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::SignedSummary, self)
    }

    /// Decodes the envelope, refusing anything over
    /// [`MAX_SIGNED_SUMMARY_BYTES`] first; the body stays opaque bytes and
    /// nothing is verified yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedSummary, SummaryError> {
        Ok(encoding::decode(
            Kind::SignedSummary,
            bytes,
            MAX_SIGNED_SUMMARY_BYTES,
        )?)
    }

    /// Checks the signature over the body as received (strictly, under the
    /// key of [`SignedSummary::node`]), then decodes the body and checks its
    /// bounds (see the module doc).
    pub fn verify(&self) -> Result<Summary, SummaryError> {
        self.node
            .public_key()
            .verify(Domain::DetectSummary, &self.body, &self.sig)?;
        let s: Summary = encoding::decode(Kind::Summary, &self.body, MAX_SUMMARY_BYTES)?;
        if s.node != self.node {
            return Err(SummaryError::WrongNode {
                signer: Box::new(self.node),
                named: Box::new(s.node),
            });
        }
        s.check()?;
        Ok(s)
    }

    /// [`SignedSummary::from_bytes`], the admission check on the signer,
    /// then [`SignedSummary::verify`]: the whole way in for gossiped bytes.
    pub fn open(
        bytes: &[u8],
        admitted: impl Fn(&NodeId) -> bool,
    ) -> Result<(SignedSummary, Summary), SummaryError> {
        let signed = SignedSummary::from_bytes(bytes)?;
        if !admitted(&signed.node) {
            return Err(SummaryError::NotAdmitted(Box::new(signed.node)));
        }
        let s = signed.verify()?;
        Ok((signed, s))
    }
}

impl Summary {
    /// Checks the bounds a decoded body must keep.
    pub fn check(&self) -> Result<(), SummaryError> {
        let bad = |m: String| Err(SummaryError::Invalid(m));
        if self.slot_ms == 0 || self.slot_ms > 3_600_000 {
            return bad(format!(
                "its slot is {} ms, not between 1 ms and an hour",
                self.slot_ms
            ));
        }
        if !self.slot_start_ms.is_multiple_of(u64::from(self.slot_ms)) {
            return bad("its slot does not start on a slot boundary".into());
        }
        if self.principals.len() > MAX_PRINCIPALS {
            return bad(format!(
                "it holds {} principals, over the limit of {MAX_PRINCIPALS}",
                self.principals.len()
            ));
        }
        for (i, p) in self.principals.iter().enumerate() {
            if p.principal.is_empty() || p.principal.len() > MAX_PRINCIPAL_LEN {
                return bad(format!(
                    "principal {i} has a uid of {} bytes, not 1 to {MAX_PRINCIPAL_LEN}",
                    p.principal.len()
                ));
            }
            if i > 0 && self.principals[i - 1].principal >= p.principal {
                return bad("its principals are not in strictly ascending order".into());
            }
            if p.requests == 0 || p.denies > p.requests || p.token_failures > p.requests {
                return bad(format!(
                    "principal {i} has {} requests, {} denies and {} failed tokens",
                    p.requests, p.denies, p.token_failures
                ));
            }
        }
        Ok(())
    }
}

/// The bit a uid sets in a sketch of `bits` bits: FNV-1a, then a SplitMix
/// finalizer, unsalted, so every node sets the same bit for the same uid.
pub fn sketch_bit(uid: &str, bits: usize) -> usize {
    (hash(uid) % bits.max(1) as u64) as usize
}

fn hash(uid: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The two bits an (action, resource type) pair sets in a sketch of
/// [`PAIR_BITS`] bits: two bytes of the hash ([`sketch_bit`]'s) of `action`
/// and the type (the part of `resource` before `::`) joined by a byte no
/// uid holds. Two bits, so that a pair reads as known only when both are
/// set: the few pairs of the world seldom hide one another.
pub fn pair_bits(action: &str, resource: &str) -> [usize; 2] {
    let ty = resource.split_once("::").map_or(resource, |(t, _)| t);
    let mut key = String::with_capacity(action.len() + ty.len() + 1);
    key.push_str(action);
    key.push('\u{0}');
    key.push_str(ty);
    let h = hash(&key);
    [(h % 256) as usize, ((h >> 8) % 256) as usize]
}

/// Serde for a bitmap of `W` words: in postcard a byte string, either `0`
/// and the indices of the set bits (ascending, when there are fewer of them
/// than the bitmap has bytes) or `1` and the words' little-endian bytes.
/// A decoded bitmap re-encodes to the same bytes only in that form, so the
/// envelope's canonical check refuses any other.
mod bits {
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, const W: usize>(
        words: &[u64; W],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let set: u32 = words.iter().map(|w| w.count_ones()).sum();
        let mut out = Vec::with_capacity(1 + W * 8);
        if (set as usize) < W * 8 {
            out.push(0);
            for (i, w) in words.iter().enumerate() {
                for b in 0..64 {
                    if w & (1 << b) != 0 {
                        out.push((i * 64 + b) as u8);
                    }
                }
            }
        } else {
            out.push(1);
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        crate::encoding::bytes::serialize(&out, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const W: usize>(
        deserializer: D,
    ) -> Result<[u64; W], D::Error> {
        let raw = crate::encoding::bytes::deserialize(deserializer)?;
        let mut words = [0u64; W];
        match raw.split_first() {
            Some((0, idx)) => {
                for &i in idx {
                    let i = usize::from(i);
                    if i >= W * 64 {
                        return Err(D::Error::custom("a sketch bit is out of range"));
                    }
                    words[i / 64] |= 1 << (i % 64);
                }
            }
            Some((1, dense)) if dense.len() == W * 8 => {
                for (w, c) in words.iter_mut().zip(dense.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    *w = u64::from_le_bytes(b);
                }
            }
            _ => return Err(D::Error::custom("a sketch is malformed")),
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn summary(node: NodeId, names: &[&str]) -> Summary {
        Summary {
            node,
            slot_start_ms: 1_767_571_200_000,
            slot_ms: 10_000,
            dropped: 0,
            principals: names
                .iter()
                .enumerate()
                .map(|(i, n)| PrincipalSummary {
                    principal: (*n).into(),
                    requests: 3 + i as u32,
                    denies: 1,
                    token_failures: 0,
                    resources: if i % 2 == 0 {
                        [1, 0, 1 << 63, 0]
                    } else {
                        [u64::MAX, 7, 0, 1]
                    },
                    actions: [1 << 5],
                    pairs: [1 << 9, 0, 0, 0],
                })
                .collect(),
        }
    }

    #[test]
    fn sign_encode_decode_verify() {
        let k = key(1);
        let node = NodeId::new(k.public());
        let s = summary(node, &["User::\"a\"", "User::\"b\""]);
        let bytes = SignedSummary::sign(&s, &k).to_bytes();
        let (signed, back) = SignedSummary::open(&bytes, |_| true).unwrap();
        assert_eq!(back, s);
        assert_eq!(signed.node, node);
        // A sparse sketch is a byte per bit set, a dense one its bytes: the
        // first principal's sketches (2 bits, 1 and 1) take 10 bytes with
        // their lengths and tags, the second's (68 bits, 1 and 1) 40:
        // envelope 6, node 32, slot 6 + 2, dropped and count 2, then 13
        // bytes of name and counts each.
        assert_eq!(
            SignedSummary::sign(&s, &k).body.len(),
            6 + 32 + 8 + 2 + (13 + 10) + (13 + 40)
        );
    }

    #[test]
    fn forged_unsigned_oversized_and_unadmitted_are_refused() {
        let k = key(1);
        let node = NodeId::new(k.public());
        let s = summary(node, &["User::\"a\""]);
        let good = SignedSummary::sign(&s, &k);

        // Signed by another key, claiming node 1.
        let mut forged = SignedSummary::sign(&s, &key(2));
        forged.node = node;
        let e = SignedSummary::open(&forged.to_bytes(), |_| true).unwrap_err();
        assert!(matches!(e, SummaryError::Signature(_)), "{e}");

        // A body changed after signing.
        let mut changed = good.clone();
        let last = changed.body.len() - 1;
        changed.body[last] ^= 1;
        let e = SignedSummary::open(&changed.to_bytes(), |_| true).unwrap_err();
        assert!(matches!(e, SummaryError::Signature(_)), "{e}");

        // No signature: zero bytes.
        let mut unsigned = good.clone();
        unsigned.sig = Signature::from_bytes([0; 64]);
        let e = SignedSummary::open(&unsigned.to_bytes(), |_| true).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the detection summary's signature")
        );
        assert!(!e.to_string().contains('\n'));

        // Oversized: refused on its length.
        let big = vec![0u8; MAX_SIGNED_SUMMARY_BYTES + 1];
        let e = SignedSummary::open(&big, |_| true).unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");

        // Not admitted: refused before the signature is looked at.
        let e = SignedSummary::open(&unsigned.to_bytes(), |_| false).unwrap_err();
        assert!(matches!(e, SummaryError::NotAdmitted(_)), "{e}");

        // A body naming another node than its signer.
        let other = summary(NodeId::new(key(3).public()), &["User::\"a\""]);
        let body = encoding::encode(Kind::Summary, &other);
        let sig = k.sign(Domain::DetectSummary, &body);
        let wrong = SignedSummary { node, body, sig };
        let e = wrong.verify().unwrap_err();
        assert!(matches!(e, SummaryError::WrongNode { .. }), "{e}");

        // A signature of the same body in another domain.
        let mut other_domain = good.clone();
        other_domain.sig = k.sign(Domain::AuditCheckpoint, &good.body);
        assert!(other_domain.verify().is_err());
    }

    #[test]
    fn bounds_are_checked_after_the_signature() {
        let k = key(1);
        let node = NodeId::new(k.public());
        let mut s = summary(node, &["User::\"b\"", "User::\"a\""]);
        let e = SignedSummary::sign(&s, &k).verify().unwrap_err();
        assert!(e.to_string().contains("ascending"), "{e}");
        s.principals.reverse();
        s.principals[0].denies = 99;
        let e = SignedSummary::sign(&s, &k).verify().unwrap_err();
        assert!(e.to_string().contains("99 denies"), "{e}");
        let mut s = summary(node, &["User::\"a\""]);
        s.slot_start_ms += 1;
        assert!(SignedSummary::sign(&s, &k).verify().is_err());
        let mut s = summary(node, &["User::\"a\""]);
        s.principals[0].principal = "x".repeat(MAX_PRINCIPAL_LEN + 1);
        assert!(SignedSummary::sign(&s, &k).verify().is_err());
    }

    #[test]
    fn sketches_have_one_encoding() {
        let k = key(1);
        let node = NodeId::new(k.public());
        let s = summary(node, &["User::\"a\""]);
        let body = encoding::encode(Kind::Summary, &s);
        // The first principal's resources: tag 0 and indices 0 and 191,
        // preceded by their length (3). Swapping the indices is refused.
        let at = body.windows(4).position(|w| w == [3, 0, 0, 191]).unwrap();
        let mut swapped = body.clone();
        swapped[at + 2] = 191;
        swapped[at + 3] = 0;
        let e = encoding::decode::<Summary>(Kind::Summary, &swapped, MAX_SUMMARY_BYTES);
        assert_eq!(e.unwrap_err(), DecodeError::NonCanonical);
        let mut bad_tag = body.clone();
        bad_tag[at + 1] = 7;
        assert!(encoding::decode::<Summary>(Kind::Summary, &bad_tag, MAX_SUMMARY_BYTES).is_err());
    }

    #[test]
    fn sketch_bits_are_stable() {
        assert_eq!(sketch_bit("Doc::\"a\"", 256), sketch_bit("Doc::\"a\"", 256));
        assert!(sketch_bit("Doc::\"a\"", 64) < 64);
        let distinct: std::collections::BTreeSet<usize> = (0..200)
            .map(|i| sketch_bit(&format!("Doc::\"{i}\""), 256))
            .collect();
        assert!(distinct.len() > 120, "{}", distinct.len());
    }
}
