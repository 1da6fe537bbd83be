//! The one canonical, versioned binary encoding of everything Weft signs or
//! sends.
//!
//! An encoded value is an envelope followed by the payload:
//!
//! ```text
//! b"WEFT" (4 bytes) || kind (1 byte, see [`Kind`]) || format version (1 byte, now 1) || postcard(payload)
//! ```
//!
//! [`decode`] is the only way in. It checks the length against the caller's
//! limit before it looks at anything else, then the magic, the kind and the
//! version, then decodes the payload and refuses truncated input, trailing
//! bytes and non-canonical forms (input that decodes but does not re-encode to
//! the same bytes, such as an over-long varint). So for every value there is
//! exactly one byte string that decodes to it. It never panics on any input.
//!
//! Signatures are always computed over the encoded bytes, and verification
//! uses the bytes as received: never re-encode a decoded value to verify it.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The four bytes every encoded value starts with.
pub const MAGIC: [u8; 4] = *b"WEFT";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Length of the envelope header: magic, kind and version.
pub const HEADER_LEN: usize = MAGIC.len() + 2;

/// What an encoded value is. The byte values are fixed forever; gaps leave
/// room for related kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// The body of a trust root (`TrustRoot`), the bytes the root keys sign.
    TrustRoot,
    /// A trust root body with its signatures (`SignedRoot`).
    SignedRoot,
    /// The body of a node certificate (`NodeCert`), the bytes an operator signs.
    NodeCert,
    /// A node certificate with its signature (`SignedNodeCert`).
    SignedNodeCert,
    /// A signed update (policy bundle or revocation).
    Update,
    /// A gossip or sync message between nodes.
    Wire,
    /// An identity token.
    Token,
    /// A quarantine order.
    Quarantine,
    /// The body of an audit log checkpoint, the bytes a node signs.
    Checkpoint,
    /// An audit log checkpoint with its signature, as kept by peers.
    SignedCheckpoint,
    /// A signed audit log checkpoint with its node's certificate, as gossiped.
    CheckpointGossip,
    /// A node's state exported for authoring tools (`GET /v1/state`).
    State,
    /// The body of a detection summary, the bytes a node signs.
    Summary,
    /// A detection summary with its node's signature.
    SignedSummary,
    /// A signed detection summary with its node's certificate, as gossiped.
    SummaryGossip,
}

impl Kind {
    /// Every kind this build knows.
    pub const ALL: [Kind; 15] = [
        Kind::TrustRoot,
        Kind::SignedRoot,
        Kind::NodeCert,
        Kind::SignedNodeCert,
        Kind::Update,
        Kind::Wire,
        Kind::Token,
        Kind::Quarantine,
        Kind::Checkpoint,
        Kind::SignedCheckpoint,
        Kind::CheckpointGossip,
        Kind::State,
        Kind::Summary,
        Kind::SignedSummary,
        Kind::SummaryGossip,
    ];

    /// The byte that stands for this kind in the envelope.
    pub const fn to_byte(self) -> u8 {
        match self {
            Kind::TrustRoot => 0x01,
            Kind::SignedRoot => 0x02,
            Kind::NodeCert => 0x08,
            Kind::SignedNodeCert => 0x09,
            Kind::Update => 0x10,
            Kind::Wire => 0x20,
            Kind::Token => 0x30,
            Kind::Quarantine => 0x40,
            Kind::Checkpoint => 0x50,
            Kind::SignedCheckpoint => 0x51,
            Kind::CheckpointGossip => 0x52,
            Kind::State => 0x60,
            Kind::Summary => 0x70,
            Kind::SignedSummary => 0x71,
            Kind::SummaryGossip => 0x72,
        }
    }

    /// The kind a byte stands for, if any.
    pub fn from_byte(b: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.to_byte() == b)
    }

    /// A short human name, used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::TrustRoot => "trust root body",
            Kind::SignedRoot => "signed trust root",
            Kind::NodeCert => "node certificate body",
            Kind::SignedNodeCert => "signed node certificate",
            Kind::Update => "signed update",
            Kind::Wire => "wire message",
            Kind::Token => "identity token",
            Kind::Quarantine => "quarantine order",
            Kind::Checkpoint => "audit checkpoint body",
            Kind::SignedCheckpoint => "signed audit checkpoint",
            Kind::CheckpointGossip => "gossiped audit checkpoint",
            Kind::State => "state export",
            Kind::Summary => "detection summary body",
            Kind::SignedSummary => "signed detection summary",
            Kind::SummaryGossip => "gossiped detection summary",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes could not be decoded. Each message is one sentence.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input is longer than the caller allows.
    #[error("input is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The caller's limit.
        max: usize,
    },
    /// The input ends before the value does.
    #[error("input is truncated")]
    Truncated,
    /// The input does not start with `WEFT`.
    #[error("input is not Weft data (it does not start with the magic bytes \"WEFT\")")]
    BadMagic,
    /// The kind byte is not one this build knows.
    #[error("input is of unknown kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The input is of another kind than expected.
    #[error("expected a {expected} but the input is a {found}")]
    WrongKind {
        /// The kind the caller asked for.
        expected: Kind,
        /// The kind the input says it is.
        found: Kind,
    },
    /// The format version is not one this build reads.
    #[error("unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// Bytes follow the end of the value.
    #[error("input has {0} unexpected bytes after the end of the value")]
    TrailingBytes(usize),
    /// The input decodes, but is not the canonical encoding of its value.
    #[error("input is not in canonical form (re-encoding the value gives different bytes)")]
    NonCanonical,
    /// The payload is not a valid value of the expected type.
    #[error("input is malformed: {0}")]
    Malformed(String),
}

/// The kind an encoded value's envelope names, if the bytes start with one
/// this build knows (nothing else is checked).
pub fn kind_of(bytes: &[u8]) -> Option<Kind> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    Kind::from_byte(bytes[MAGIC.len()])
}

/// Encodes `value` as `kind`, in the current format version.
pub fn encode<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.push(kind.to_byte());
    out.push(FORMAT_VERSION);
    postcard::to_extend(value, out)
        .expect("postcard encoding of a Weft value cannot fail (all types have known lengths)")
}

/// Checks the envelope of `bytes` (length, magic, kind, version) and returns
/// the payload.
pub fn open_envelope(kind: Kind, bytes: &[u8], max_len: usize) -> Result<&[u8], DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(DecodeError::BadMagic);
    }
    let Some(&kind_byte) = bytes.get(MAGIC.len()) else {
        return Err(DecodeError::Truncated);
    };
    let found = Kind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    if found != kind {
        return Err(DecodeError::WrongKind {
            expected: kind,
            found,
        });
    }
    let Some(&version) = bytes.get(MAGIC.len() + 1) else {
        return Err(DecodeError::Truncated);
    };
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    Ok(&bytes[HEADER_LEN..])
}

/// Decodes a value of kind `kind` from `bytes`, refusing input longer than
/// `max_len` before anything else is looked at.
pub fn decode<T: DeserializeOwned + Serialize>(
    kind: Kind,
    bytes: &[u8],
    max_len: usize,
) -> Result<T, DecodeError> {
    let payload = open_envelope(kind, bytes, max_len)?;
    let (value, rest) = postcard::take_from_bytes::<T>(payload).map_err(map_postcard)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    // Canonical form: exactly one byte string per value.
    let again = postcard::to_allocvec(&value).map_err(map_postcard)?;
    if again != payload {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

fn map_postcard(e: postcard::Error) -> DecodeError {
    use postcard::Error as E;
    match e {
        E::DeserializeUnexpectedEnd => DecodeError::Truncated,
        E::SerdeDeCustom => DecodeError::Malformed(
            "it holds a value that is not valid here (for example an unknown variant, or a weak or invalid public key)".into(),
        ),
        E::DeserializeBadVarint => DecodeError::Malformed("it holds a bad variable-length integer".into()),
        E::DeserializeBadBool => DecodeError::Malformed("it holds a boolean that is neither 0 nor 1".into()),
        E::DeserializeBadUtf8 => DecodeError::Malformed("it holds text that is not UTF-8".into()),
        E::DeserializeBadEnum => DecodeError::Malformed("it holds an unknown variant".into()),
        E::DeserializeBadOption => DecodeError::Malformed("it holds an option tag that is neither 0 nor 1".into()),
        other => DecodeError::Malformed(other.to_string().to_lowercase()),
    }
}

/// Serde helpers to encode a `Vec<u8>` as a byte string: in postcard, a
/// varint length then the bytes (the same bytes as a sequence of `u8`, only
/// faster); in JSON, an array of numbers.
pub mod bytes {
    use std::fmt;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::Serializer;

    /// Serializes bytes with `serialize_bytes`.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    /// Deserializes bytes written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        n: u64,
        s: String,
        #[serde(with = "bytes")]
        b: Vec<u8>,
    }

    fn sample() -> Sample {
        Sample {
            n: 300,
            s: "hi".into(),
            b: vec![1, 2, 3],
        }
    }

    #[test]
    fn roundtrip_and_layout() {
        let enc = encode(Kind::Wire, &sample());
        assert_eq!(&enc[..4], b"WEFT");
        assert_eq!(enc[4], 0x20);
        assert_eq!(enc[5], 1);
        let back: Sample = decode(Kind::Wire, &enc, 1024).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn kind_bytes_are_unique() {
        for a in Kind::ALL {
            assert_eq!(Kind::from_byte(a.to_byte()), Some(a));
        }
        assert_eq!(Kind::from_byte(0), None);
        assert_eq!(Kind::from_byte(0xff), None);
    }

    #[test]
    fn non_canonical_varint_refused() {
        // n = 1 as the over-long varint 0x81 0x00 instead of 0x01.
        let mut enc = encode(
            Kind::Wire,
            &Sample {
                n: 1,
                s: String::new(),
                b: vec![],
            },
        );
        assert_eq!(enc[6], 1);
        enc.splice(6..7, [0x81, 0x00]);
        let err = decode::<Sample>(Kind::Wire, &enc, 1024).unwrap_err();
        assert_eq!(err, DecodeError::NonCanonical);
    }

    #[test]
    fn length_checked_first() {
        let err = decode::<Sample>(Kind::Wire, &[0xff; 100], 10).unwrap_err();
        assert_eq!(err.to_string(), "input is 100 bytes, over the limit of 10");
    }

    #[test]
    fn short_inputs() {
        assert_eq!(
            decode::<Sample>(Kind::Wire, b"", 10).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(
            decode::<Sample>(Kind::Wire, b"WE", 10).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(
            decode::<Sample>(Kind::Wire, b"WEFT", 10).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(
            decode::<Sample>(Kind::Wire, b"WEFT\x20", 10).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(
            decode::<Sample>(Kind::Wire, b"WEFT\x20\x01", 10).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(
            decode::<Sample>(Kind::Wire, b"X", 10).unwrap_err(),
            DecodeError::BadMagic
        );
    }
}
