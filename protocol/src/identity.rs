//! Identities, keys and signatures.
//!
//! Every key in Weft is an ed25519 key. This module wraps `ed25519-dalek` so
//! that the rest of the code base cannot get the dangerous parts wrong:
//!
//! - [`PublicKey`] can only hold a valid point that is not of small order
//!   (weak keys are refused when parsed, whatever the source).
//! - Every signature is made and checked under a [`Domain`], so a signature of
//!   one kind (say a node certificate) never verifies as another kind (say a
//!   trust root).
//! - Verification is always `verify_strict`'s verdict (see [`PublicKey::verify`]).
//! - [`SecretKey`] never prints its secret, and zeroizes it on drop.
//!
//! There is one text form for a public key, used in the CLI, in JSON and in
//! `trust.json`: `ed25519.` followed by the base58btc encoding of the 32 key
//! bytes. A node is named by its [`NodeId`], rendered as the libp2p `PeerId` of
//! its ed25519 key, without this crate depending on libp2p.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

/// The prefix of the text form of a [`PublicKey`].
pub const PUBLIC_KEY_PREFIX: &str = "ed25519.";

/// Length in bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length in bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// The longest text a public key or node id parser will look at; anything
/// longer is refused before it is decoded.
const MAX_KEY_TEXT_LEN: usize = 128;

/// Why a key, a key's text form or a key file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The input does not hold exactly 32 bytes.
    #[error("a public key is 32 bytes, but the input holds {0} bytes")]
    Length(usize),
    /// The 32 bytes are not the encoding of a point on the curve.
    #[error("the bytes are not a valid ed25519 public key (not a point on the curve)")]
    InvalidPoint,
    /// The point is of small order, so signatures under it prove nothing.
    #[error("refusing a weak ed25519 public key (a point of small order)")]
    Weak,
    /// The text form could not be parsed.
    #[error("{0}")]
    Text(String),
    /// The PKCS#8 PEM document could not be parsed.
    #[error("the secret key is not a valid ed25519 PKCS#8 PEM document: {0}")]
    Pem(String),
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// A single signature does not verify.
    #[error("the signature by {key} does not verify")]
    Invalid {
        /// The key the signature was checked against (boxed: a key is 192 bytes).
        key: Box<PublicKey>,
    },
    /// One item of a batch does not verify.
    #[error("signature {index} of the batch (by {key}) does not verify")]
    BatchItem {
        /// The position of the first bad item in the batch.
        index: usize,
        /// The key of that item.
        key: Box<PublicKey>,
    },
}

// ---------------------------------------------------------------------------
// Domains

/// The kind of thing a signature is about.
///
/// Each domain has its own prefix, and the message that is actually signed is
///
/// ```text
/// prefix bytes (ASCII, e.g. "weft/trust-root/v1") || 0x00 || msg
/// ```
///
/// The prefixes contain no 0x00 byte and none is a prefix of another, so a
/// signature made in one domain can never verify in another, whatever the
/// message bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// A trust root, signed by root keys: `weft/trust-root/v1`.
    TrustRoot,
    /// A signed update (policy bundle, revocation), signed by operators: `weft/update/v1`.
    Update,
    /// A node's admission certificate, signed by an operator: `weft/node-cert/v1`.
    NodeCert,
    /// An identity token, signed by an issuer: `weft/token/v1`.
    Token,
    /// A quarantine order, signed by a node: `weft/quarantine/v1`.
    Quarantine,
    /// An audit log checkpoint, signed by a node: `weft/audit-checkpoint/v1`.
    AuditCheckpoint,
    /// A detection summary, signed by a node: `weft/detect-summary/v1`.
    DetectSummary,
}

impl Domain {
    /// Every domain, in declaration order.
    pub const ALL: [Domain; 7] = [
        Domain::TrustRoot,
        Domain::Update,
        Domain::NodeCert,
        Domain::Token,
        Domain::Quarantine,
        Domain::AuditCheckpoint,
        Domain::DetectSummary,
    ];

    /// The domain-separation prefix of this domain.
    pub const fn prefix(self) -> &'static str {
        match self {
            Domain::TrustRoot => "weft/trust-root/v1",
            Domain::Update => "weft/update/v1",
            Domain::NodeCert => "weft/node-cert/v1",
            Domain::Token => "weft/token/v1",
            Domain::Quarantine => "weft/quarantine/v1",
            Domain::AuditCheckpoint => "weft/audit-checkpoint/v1",
            Domain::DetectSummary => "weft/detect-summary/v1",
        }
    }

    /// The exact bytes that are signed for `msg` in this domain:
    /// `prefix || 0x00 || msg`.
    pub fn message(self, msg: &[u8]) -> Vec<u8> {
        let prefix = self.prefix().as_bytes();
        let mut out = Vec::with_capacity(prefix.len() + 1 + msg.len());
        out.extend_from_slice(prefix);
        out.push(0);
        out.extend_from_slice(msg);
        out
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

// ---------------------------------------------------------------------------
// Fixed-size byte arrays in serde: a tuple of N bytes (exactly N bytes in
// postcard, no length prefix).

fn serialize_fixed<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut tup = serializer.serialize_tuple(N)?;
    for b in bytes {
        tup.serialize_element(b)?;
    }
    tup.end()
}

struct FixedVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for FixedVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; N];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        Ok(out)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        v.try_into()
            .map_err(|_| de::Error::invalid_length(v.len(), &self))
    }
}

fn deserialize_fixed<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    deserializer.deserialize_tuple(N, FixedVisitor::<N>)
}

// ---------------------------------------------------------------------------
// Public keys

/// An ed25519 public key that is a valid point and not of small order.
///
/// Ordered by its bytes. The text form is `ed25519.<base58btc>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes, refusing invalid points and weak (small-order) keys.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        // Decompressing a point costs a square root; the same few operator
        // keys sign almost every update, so valid keys are remembered (per
        // thread, a pure function of the bytes, bounded).
        const CACHED_KEYS: usize = 256;
        thread_local! {
            static PARSED: std::cell::RefCell<std::collections::HashMap<[u8; PUBLIC_KEY_LEN], VerifyingKey>> =
                std::cell::RefCell::new(std::collections::HashMap::new());
        }
        if let Some(key) = PARSED.with(|c| c.borrow().get(bytes).copied()) {
            return Ok(PublicKey(key));
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        PARSED.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CACHED_KEYS {
                c.clear();
            }
            c.insert(*bytes, key);
        });
        Ok(PublicKey(key))
    }

    /// Parses a slice that must hold exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Self::from_bytes(arr)
    }

    /// The 32 bytes of the key.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The 32 bytes of the key, borrowed.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    /// Checks `sig` over `msg` in `domain`, with `verify_strict`'s verdict
    /// (computed as the private `strict` explains).
    pub fn verify(
        &self,
        domain: Domain,
        msg: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        let signed = domain.message(msg);
        strict(&self.0, &signed, &sig.to_dalek()).map_err(|_| SignatureError::Invalid {
            key: Box::new(*self),
        })
    }
}

/// The canonical encodings of the eight points of small order (the torsion
/// subgroup of edwards25519), as `CompressedEdwardsY` renders them.
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }
    const fn hex(s: &str) -> [u8; 32] {
        let s = s.as_bytes();
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = (digit(s[2 * i]) << 4) | digit(s[2 * i + 1]);
            i += 1;
        }
        out
    }
    [
        hex("0100000000000000000000000000000000000000000000000000000000000000"),
        hex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hex("0000000000000000000000000000000000000000000000000000000000000000"),
        hex("0000000000000000000000000000000000000000000000000000000000000080"),
        hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
        hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    ]
};

/// Whether an `R` is refused before a batch sees it: an encoding that is not
/// canonical (a `y` of at least p = 2^255 − 19, or the sign bit set on a
/// point whose `x` is 0, which are `y` = 1 and `y` = −1), or one of the eight
/// canonical encodings of a point of small order. Every encoding that
/// decompresses to a point of small order is among these, and no square root
/// is taken to tell (the batch decompresses `R` once itself).
fn refused_r(r: &[u8; 32]) -> bool {
    let sign = r[31] & 0x80 != 0;
    let mut y = *r;
    y[31] &= 0x7f;
    // y ≥ p: the top 250 bits all set and the low byte at least 0xed.
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    // p − 1 is 0xec followed by 0xff bytes and a final 0x7f.
    let minus_one = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] == 0xec;
    let one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
    at_least_p || (sign && (one || minus_one)) || SMALL_ORDER_ENCODINGS.contains(r)
}

/// `verify_strict`'s verdict, for less: ed25519-dalek's `verify_strict`
/// decompresses `R` (a field square root) only to refuse an `R` of small
/// order, then checks that `R` equals the canonical encoding of
/// `[s]B − [k]A`, which the plain `verify` checks as well. An `R` that passes
/// that comparison is canonical, so it is of small order exactly when its
/// bytes are one of the eight [`SMALL_ORDER_ENCODINGS`]; comparing bytes
/// gives the same verdict without the square root (about a fifth of a
/// verification). `A` of small order is refused as `verify_strict` does.
fn strict(
    key: &VerifyingKey,
    signed: &[u8],
    sig: &ed25519_dalek::Signature,
) -> Result<(), ed25519_dalek::SignatureError> {
    use ed25519_dalek::Verifier as _;
    if key.is_weak() || SMALL_ORDER_ENCODINGS.contains(sig.r_bytes()) {
        return Err(ed25519_dalek::SignatureError::new());
    }
    key.verify(signed, sig)
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PUBLIC_KEY_PREFIX)?;
        f.write_str(&bs58::encode(self.as_bytes()).into_string())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = shorten(s);
        if s.len() > MAX_KEY_TEXT_LEN {
            return Err(KeyError::Text(format!(
                "\"{shown}\" is not a public key: it is too long"
            )));
        }
        let Some(b58) = s.strip_prefix(PUBLIC_KEY_PREFIX) else {
            return Err(KeyError::Text(format!(
                "\"{shown}\" is not a public key: it must start with \"{PUBLIC_KEY_PREFIX}\" (as printed by `weft key gen`)"
            )));
        };
        let bytes = bs58::decode(b58).into_vec().map_err(|e| {
            KeyError::Text(format!(
                "\"{shown}\" is not a public key: the part after \"{PUBLIC_KEY_PREFIX}\" is not base58 ({e})"
            ))
        })?;
        let key = Self::from_slice(&bytes)
            .map_err(|e| KeyError::Text(format!("\"{shown}\" is not a usable public key: {e}")))?;
        // Only one spelling per key: refuse e.g. leading '1's that decode to
        // extra zero bytes (already caught by the length) or any other
        // alternative form.
        if key.to_string() != s {
            return Err(KeyError::Text(format!(
                "\"{shown}\" is not the canonical text form of a public key"
            )));
        }
        Ok(key)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serialize_fixed(self.as_bytes(), serializer)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(de::Error::custom)
        } else {
            let bytes = deserialize_fixed::<D, PUBLIC_KEY_LEN>(deserializer)?;
            PublicKey::from_bytes(&bytes).map_err(de::Error::custom)
        }
    }
}

/// Shortens user input for an error message.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    // Control characters are written escaped so that an error stays one
    // line whatever text it quotes.
    let mut out = String::new();
    for c in s.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------
// Signatures

/// An ed25519 signature: 64 bytes.
///
/// In JSON it is standard base64; in the binary encoding it is 64 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps 64 bytes. Any bytes are accepted here; whether they form a
    /// valid signature is decided by [`PublicKey::verify`].
    pub const fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Signature(bytes)
    }

    /// The 64 bytes of the signature.
    pub const fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// The 64 bytes of the signature, borrowed.
    pub const fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    fn to_dalek(self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", BASE64.encode(self.0))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl FromStr for Signature {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_KEY_TEXT_LEN {
            return Err(KeyError::Text(
                "a signature is 88 base64 characters; the input is too long".into(),
            ));
        }
        let bytes = BASE64
            .decode(s)
            .map_err(|e| KeyError::Text(format!("a signature must be base64: {e}")))?;
        let arr: [u8; SIGNATURE_LEN] = bytes.as_slice().try_into().map_err(|_| {
            KeyError::Text(format!(
                "a signature is {SIGNATURE_LEN} bytes, but the input holds {} bytes",
                bytes.len()
            ))
        })?;
        Ok(Signature(arr))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serialize_fixed(&self.0, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(de::Error::custom)
        } else {
            deserialize_fixed::<D, SIGNATURE_LEN>(deserializer).map(Signature)
        }
    }
}

/// Verifies many signatures in one domain at once.
///
/// The batch is checked with `ed25519_dalek::verify_batch`; if that fails,
/// each item is checked on its own with `verify_strict` to name the first bad
/// one. An empty batch is fine.
///
/// Signatures whose `R` is a point of small order, or not canonically
/// encoded, are refused up front, as `verify_strict` refuses them (keys of
/// small order cannot exist as a [`PublicKey`]). One difference remains, inherent to batch verification: a
/// *signer* who deliberately puts a torsion component into `R` can produce a
/// signature that the batch may accept and `verify_strict` refuses. Such a
/// signature can only be made by the holder of the secret key, never forged by
/// a third party. Where every node must reach the same verdict on the same
/// bytes (accepting updates into the replicated state), use
/// [`PublicKey::verify`] per item.
pub fn verify_batch(
    domain: Domain,
    items: &[(&PublicKey, &[u8], &Signature)],
) -> Result<(), SignatureError> {
    if items.is_empty() {
        return Ok(());
    }
    let messages: Vec<Vec<u8>> = items.iter().map(|(_, m, _)| domain.message(m)).collect();
    let small_order_r = items.iter().any(|(_, _, sig)| {
        let r: [u8; 32] = sig.0[..32].try_into().expect("32 bytes");
        refused_r(&r)
    });
    if !small_order_r {
        let msg_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let sigs: Vec<ed25519_dalek::Signature> =
            items.iter().map(|(_, _, s)| s.to_dalek()).collect();
        let keys: Vec<VerifyingKey> = items.iter().map(|(k, _, _)| k.0).collect();
        if ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys).is_ok() {
            return Ok(());
        }
    }
    for (index, ((key, _, sig), signed)) in items.iter().zip(&messages).enumerate() {
        if key.0.verify_strict(signed, &sig.to_dalek()).is_err() {
            return Err(SignatureError::BatchItem {
                index,
                key: Box::new(**key),
            });
        }
    }
    // The batch failed but every item verifies on its own: this can only be a
    // signature the batch equation and the strict check disagree on. Treat the
    // strict verdict as authoritative.
    Ok(())
}

// ---------------------------------------------------------------------------
// Secret keys

/// An ed25519 secret key. Its `Debug` shows only the public key, and the
/// secret is zeroized on drop.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Derives the key from a 32-byte seed (the RFC 8032 secret key). The
    /// seed must come from a cryptographically secure source; this crate
    /// never generates randomness itself.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        // A key derived from a seed has a clamped scalar, which is a multiple
        // of the cofactor and nonzero modulo the group order, so its public
        // key is never of small order.
        PublicKey(self.0.verifying_key())
    }

    /// Signs `msg` in `domain` (see [`Domain`] for the exact bytes signed).
    pub fn sign(&self, domain: Domain, msg: &[u8]) -> Signature {
        let signed = domain.message(msg);
        Signature(self.0.sign(&signed).to_bytes())
    }

    /// The key as a PKCS#8 v2 PEM document (`-----BEGIN PRIVATE KEY-----`),
    /// holding the seed and the public key.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding an ed25519 key as PKCS#8 PEM cannot fail")
    }

    /// Parses a PKCS#8 PEM document. If the document carries a public key, it
    /// must match the secret; a weak public key is refused.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        if key.verifying_key().is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(SecretKey(key))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {})", self.public())
    }
}

// ---------------------------------------------------------------------------
// Node ids

/// The identity multihash header and the protobuf header of an ed25519
/// `PublicKey` as libp2p encodes them, in front of the 32 key bytes of a
/// libp2p `PeerId`: multihash code 0x00 (identity), length 0x24 (36), then
/// protobuf field 1 = 1 (Ed25519) and field 2 = 32 bytes.
const PEER_ID_HEADER: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// A node's identity: its ed25519 public key.
///
/// It is written as the node's libp2p `PeerId` (`12D3KooW…`): the base58btc
/// encoding of the identity multihash of the protobuf-encoded public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(PublicKey);

impl NodeId {
    /// The node id of a public key.
    pub const fn new(key: PublicKey) -> Self {
        NodeId(key)
    }

    /// The node's public key.
    pub const fn public_key(&self) -> PublicKey {
        self.0
    }

    /// The bytes of the libp2p `PeerId` (38 bytes).
    pub fn to_peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..6].copy_from_slice(&PEER_ID_HEADER);
        out[6..].copy_from_slice(self.0.as_bytes());
        out
    }
}

impl From<PublicKey> for NodeId {
    fn from(key: PublicKey) -> Self {
        NodeId(key)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.to_peer_id_bytes()).into_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = shorten(s);
        if s.len() > MAX_KEY_TEXT_LEN {
            return Err(KeyError::Text(format!(
                "\"{shown}\" is not a node id: it is too long"
            )));
        }
        let bytes = bs58::decode(s).into_vec().map_err(|e| {
            KeyError::Text(format!(
                "\"{shown}\" is not a node id: it is not base58 ({e})"
            ))
        })?;
        if bytes.len() != 38 || bytes[..6] != PEER_ID_HEADER {
            return Err(KeyError::Text(format!(
                "\"{shown}\" is not a node id: only libp2p peer ids of ed25519 keys (12D3KooW…) are node ids"
            )));
        }
        let key = PublicKey::from_slice(&bytes[6..])
            .map_err(|e| KeyError::Text(format!("\"{shown}\" is not a usable node id: {e}")))?;
        let id = NodeId(key);
        if id.to_string() != s {
            return Err(KeyError::Text(format!(
                "\"{shown}\" is not the canonical form of a node id"
            )));
        }
        Ok(id)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(de::Error::custom)
        } else {
            PublicKey::deserialize(deserializer).map(NodeId)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn key_and_node_id_errors_are_one_line() {
        for bad in ["ed25519:\nabc", "12D3\r\nKooW", "\u{1b}[2J"] {
            let e = bad.parse::<PublicKey>().unwrap_err().to_string();
            assert!(!e.chars().any(char::is_control), "{e:?}");
            let e = bad.parse::<NodeId>().unwrap_err().to_string();
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    #[test]
    fn the_small_order_encodings_are_the_whole_torsion_subgroup() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let mut seen = std::collections::BTreeSet::new();
        for bytes in SMALL_ORDER_ENCODINGS {
            let point = CompressedEdwardsY(bytes).decompress().expect("a point");
            assert!(point.is_small_order(), "{}", hex::encode(bytes));
            assert_eq!(point.compress().to_bytes(), bytes, "canonical");
            seen.insert(bytes);
        }
        // The torsion subgroup has exactly eight points, each with exactly
        // one canonical encoding: eight distinct ones are all of them.
        assert_eq!(seen.len(), 8);
    }

    /// Every `R` that decompresses to a point of small order is refused by
    /// the byte test, in every encoding: the eight canonical ones, each with
    /// the sign bit flipped, and each `y` written as `y + p` where that fits.
    #[test]
    fn every_encoding_of_a_small_order_r_is_refused_without_a_square_root() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let add_p = |y: [u8; 32]| -> Option<[u8; 32]> {
            // y + p with p = 2^255 − 19, as 32 little-endian bytes; None when
            // it does not fit below 2^255.
            let p: [u8; 32] = {
                let mut p = [0xff; 32];
                p[0] = 0xed;
                p[31] = 0x7f;
                p
            };
            let mut out = [0u8; 32];
            let mut carry = 0u16;
            for i in 0..32 {
                let sum = u16::from(y[i]) + u16::from(p[i]) + carry;
                out[i] = sum as u8;
                carry = sum >> 8;
            }
            (carry == 0 && out[31] & 0x80 == 0).then_some(out)
        };
        let mut encodings = Vec::new();
        for canonical in SMALL_ORDER_ENCODINGS {
            for sign in [0u8, 0x80] {
                let mut y = canonical;
                y[31] &= 0x7f;
                let mut e = y;
                e[31] |= sign;
                encodings.push(e);
                if let Some(mut big) = add_p(y) {
                    big[31] |= sign;
                    encodings.push(big);
                }
            }
        }
        let mut small = 0;
        for e in &encodings {
            if let Some(point) = CompressedEdwardsY(*e).decompress()
                && point.is_small_order()
            {
                small += 1;
                assert!(refused_r(e), "{}", hex::encode(e));
            }
        }
        assert!(small > 8, "non-canonical encodings were tried ({small})");
        // Ordinary signatures' R pass.
        for n in 0..32u8 {
            let sig = key(n).sign(Domain::Update, &[n; 40]);
            let r: [u8; 32] = sig.0[..32].try_into().unwrap();
            assert!(!refused_r(&r));
        }
    }

    /// A signature whose `R` is the identity, made by the holder of the
    /// secret scalar `a`: `s = k·a`, so `[s]B − [k]A` is the identity. The
    /// plain equation accepts it; `verify_strict` does not.
    fn identity_r_signature(a_seed: u8, msg: &[u8]) -> (VerifyingKey, ed25519_dalek::Signature) {
        use curve25519_dalek::{EdwardsPoint, Scalar};
        use sha2::{Digest as _, Sha512};
        let a = Scalar::from_bytes_mod_order([a_seed; 32]);
        let big_a = EdwardsPoint::mul_base(&a).compress().to_bytes();
        let r = SMALL_ORDER_ENCODINGS[0];
        let mut h = Sha512::new();
        h.update(r);
        h.update(big_a);
        h.update(msg);
        let wide: [u8; 64] = h.finalize().into();
        let s = Scalar::from_bytes_mod_order_wide(&wide) * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(s.as_bytes());
        (
            VerifyingKey::from_bytes(&big_a).unwrap(),
            ed25519_dalek::Signature::from_bytes(&sig),
        )
    }

    #[test]
    fn a_signature_with_an_identity_r_is_refused_like_verify_strict_refuses_it() {
        use ed25519_dalek::Verifier as _;
        let msg = b"weft/update/v1 revoke everything";
        let (key, sig) = identity_r_signature(7, msg);
        assert!(key.verify(msg, &sig).is_ok(), "the plain equation holds");
        assert!(key.verify_strict(msg, &sig).is_err());
        assert!(strict(&key, msg, &sig).is_err());
    }

    proptest::proptest! {
        /// The shortcut gives `verify_strict`'s verdict on honest signatures
        /// and on every kind of damage to them.
        #[test]
        fn the_strict_check_agrees_with_verify_strict(
            seed in proptest::prelude::any::<[u8; 32]>(),
            msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            damage in 0usize..5,
            at in 0usize..64,
            byte in proptest::prelude::any::<u8>(),
            which in 0usize..8,
        ) {
            let secret = SigningKey::from_bytes(&seed);
            let key = secret.verifying_key();
            let (key, mut sig) = match damage {
                4 => identity_r_signature(seed[0], &msg),
                _ => (key, ed25519_dalek::Signer::sign(&secret, &msg)),
            };
            let mut bytes = sig.to_bytes();
            match damage {
                1 => bytes[at] ^= byte.max(1),
                2 => bytes[..32].copy_from_slice(&SMALL_ORDER_ENCODINGS[which]),
                3 => bytes[at] = byte,
                _ => {}
            }
            sig = ed25519_dalek::Signature::from_bytes(&bytes);
            proptest::prop_assert_eq!(
                strict(&key, &msg, &sig).is_ok(),
                key.verify_strict(&msg, &sig).is_ok()
            );
        }
    }

    #[test]
    fn sign_and_verify_roundtrip() {
        let k = key(1);
        let sig = k.sign(Domain::Update, b"hello");
        k.public().verify(Domain::Update, b"hello", &sig).unwrap();
        assert!(k.public().verify(Domain::Update, b"hellO", &sig).is_err());
    }

    #[test]
    fn signed_message_layout() {
        assert_eq!(
            Domain::TrustRoot.message(b"ab"),
            b"weft/trust-root/v1\0ab".to_vec()
        );
    }

    #[test]
    fn domain_prefixes_are_distinct_and_prefix_free() {
        for a in Domain::ALL {
            for b in Domain::ALL {
                if a != b {
                    let pa = format!("{}\0", a.prefix());
                    let pb = format!("{}\0", b.prefix());
                    assert!(!pa.starts_with(&pb), "{a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn public_key_text_roundtrip_and_charset() {
        for n in 0..20u8 {
            let pk = key(n).public();
            let s = pk.to_string();
            assert!(s.starts_with("ed25519."));
            assert!(!s.contains([':', '=', ',', ' ']));
            assert_eq!(s.parse::<PublicKey>().unwrap(), pk);
        }
    }

    #[test]
    fn public_key_serde_forms() {
        let pk = key(3).public();
        let json = serde_json::to_string(&pk).unwrap();
        assert_eq!(json, format!("\"{pk}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), pk);
        let bin = postcard::to_allocvec(&pk).unwrap();
        assert_eq!(bin, pk.to_bytes().to_vec());
        assert_eq!(postcard::from_bytes::<PublicKey>(&bin).unwrap(), pk);
    }

    #[test]
    fn signature_serde_forms() {
        let sig = key(3).sign(Domain::Token, b"x");
        let bin = postcard::to_allocvec(&sig).unwrap();
        assert_eq!(bin.len(), 64);
        assert_eq!(postcard::from_bytes::<Signature>(&bin).unwrap(), sig);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
    }

    #[test]
    fn secret_debug_hides_secret() {
        let k = key(9);
        let dbg = format!("{k:?}");
        assert!(dbg.contains(&k.public().to_string()));
        let pem = k.to_pkcs8_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!dbg.contains(&body));
        assert!(!dbg.contains(&hex::encode([9u8; 32])));
    }

    #[test]
    fn pem_roundtrip() {
        let k = key(5);
        let pem = k.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SecretKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.public(), k.public());
    }

    #[test]
    fn node_id_roundtrip() {
        let id = NodeId::new(key(4).public());
        let s = id.to_string();
        assert!(s.starts_with("12D3KooW"), "{s}");
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert_eq!(id.public_key(), key(4).public());
    }

    #[test]
    fn node_id_refuses_other_text() {
        let pk = key(4).public();
        for bad in [
            "",
            "hello",
            "0OIl",
            &pk.to_string(),
            // A sha256 multihash peer id (RSA keys look like this).
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
        ] {
            let err = bad.parse::<NodeId>().unwrap_err().to_string();
            assert!(err.contains("not a node id"), "{bad}: {err}");
        }
    }

    #[test]
    fn public_key_refuses_bad_text() {
        let err = "ed25519:abc".parse::<PublicKey>().unwrap_err().to_string();
        assert!(err.contains("must start with \"ed25519.\""), "{err}");
        let err = "ed25519.0OIl".parse::<PublicKey>().unwrap_err().to_string();
        assert!(err.contains("not base58"), "{err}");
        let err = "ed25519.abc".parse::<PublicKey>().unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
    }

    #[test]
    fn batch_verifies_and_names_bad_item() {
        let keys: Vec<SecretKey> = (0..8).map(key).collect();
        let pks: Vec<PublicKey> = keys.iter().map(SecretKey::public).collect();
        let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10]).collect();
        let mut sigs: Vec<Signature> = keys
            .iter()
            .zip(&msgs)
            .map(|(k, m)| k.sign(Domain::Update, m))
            .collect();
        let items = |sigs: &[Signature]| -> Result<(), SignatureError> {
            let v: Vec<(&PublicKey, &[u8], &Signature)> = pks
                .iter()
                .zip(&msgs)
                .zip(sigs)
                .map(|((k, m), s)| (k, m.as_slice(), s))
                .collect();
            verify_batch(Domain::Update, &v)
        };
        items(&sigs).unwrap();
        sigs[5].0[40] ^= 1;
        assert_eq!(
            items(&sigs).unwrap_err(),
            SignatureError::BatchItem {
                index: 5,
                key: Box::new(pks[5])
            }
        );
        assert!(verify_batch(Domain::Update, &[]).is_ok());
    }
}
