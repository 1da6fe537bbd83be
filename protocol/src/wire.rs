//! Messages between nodes.
//!
//! Gossip carries signed updates as they are (the update file's bytes, kind
//! `Update`). Anti-entropy sync runs over request-response with the messages
//! here, encoded as kind `Wire`, each bounded in size and in item count:
//!
//! 1. `Hello` on every new connection: each side shows its node certificate and
//!    its heads. A peer is admitted only with a valid certificate for its own
//!    node id from an operator with the `admit` role, and only if its node id is
//!    not revoked.
//! 2. `Heads`: "these are my heads"; the answer offers the hashes the asker lacks
//!    (at most [`MAX_OFFER`], in causal order, `more` set when there are more).
//! 3. `Fetch`: the asker fetches offered or missing updates by hash, at most
//!    [`MAX_FETCH`] per request; each one is verified on its own on arrival.
//! 4. `Roots`: `Hello`, `Heads` and their answers carry the version of the
//!    trust root the sender holds; a side that sees a newer one asks for the
//!    signed roots after its own (at most [`MAX_ROOTS`] per answer), and
//!    adopts each one whose rotation verifies. So a node that missed a
//!    rotation's gossip learns of it at its next exchange with any peer.

use serde::{Deserialize, Serialize};

use crate::encoding::{self, DecodeError, Kind};

/// Largest sync message, in bytes. A `Fetch` answer carries at most
/// [`MAX_FETCH`] updates; the sender stops adding updates before this limit.
pub const MAX_WIRE_BYTES: usize = 8 * 1024 * 1024;

/// Most hashes offered in one answer to `Heads`.
pub const MAX_OFFER: usize = 1024;

/// Most updates asked for in one `Fetch`.
pub const MAX_FETCH: usize = 256;

/// Most heads a message may carry (heads only multiply under heavy concurrency).
pub const MAX_HEADS: usize = 1024;

/// Most signed trust roots in one answer to `Roots`.
pub const MAX_ROOTS: usize = 16;

/// A 32-byte change hash on the wire.
pub type Hash = [u8; 32];

/// A sync request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Sent on every new connection.
    Hello {
        /// The sender's signed node certificate (`SignedNodeCert` bytes).
        #[serde(with = "encoding::bytes")]
        cert: Vec<u8>,
        /// The sender's heads.
        heads: Vec<Hash>,
        /// The version of the trust root the sender holds.
        root: u64,
    },
    /// "These are my heads; what do I lack?"
    Heads {
        /// The asker's heads.
        heads: Vec<Hash>,
        /// The version of the trust root the asker holds.
        root: u64,
    },
    /// "Send me these updates."
    Fetch {
        /// Hashes wanted.
        hashes: Vec<Hash>,
    },
    /// "Send me the signed trust roots after this version."
    Roots {
        /// The version the asker holds.
        after: u64,
    },
}

/// A sync response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The answer to `Hello`.
    Hello {
        /// The responder's signed node certificate.
        #[serde(with = "encoding::bytes")]
        cert: Vec<u8>,
        /// The responder's heads.
        heads: Vec<Hash>,
        /// The version of the trust root the responder holds.
        root: u64,
    },
    /// The answer to `Heads`.
    Offer {
        /// The responder's heads.
        heads: Vec<Hash>,
        /// Hashes the asker lacks, in causal order.
        hashes: Vec<Hash>,
        /// Whether more hashes remain after these.
        more: bool,
        /// The version of the trust root the responder holds.
        root: u64,
    },
    /// The answer to `Roots`: encoded `SignedRoot`s, oldest first.
    Roots {
        /// Each an encoded `SignedRoot`.
        roots: Vec<WireBytes>,
    },
    /// The answer to `Fetch`: signed update bytes, in causal order.
    Updates {
        /// Each an encoded `SignedUpdate`.
        updates: Vec<WireBytes>,
    },
    /// The request was refused.
    Refused {
        /// Why, in one sentence.
        reason: String,
    },
}

/// Opaque bytes inside a wire message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBytes(#[serde(with = "encoding::bytes")] pub Vec<u8>);

impl SyncRequest {
    /// Encodes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::Wire, &WireMessage::Request(self.clone()))
    }

    /// Decodes and bounds-checks a request.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match decode(bytes)? {
            WireMessage::Request(r) => {
                let n = match &r {
                    SyncRequest::Hello { heads, .. } | SyncRequest::Heads { heads, .. } => {
                        heads.len()
                    }
                    SyncRequest::Fetch { hashes } => hashes.len() * MAX_HEADS / MAX_FETCH,
                    SyncRequest::Roots { .. } => 0,
                };
                if n > MAX_HEADS {
                    return Err(DecodeError::Malformed(
                        "too many hashes in one request".into(),
                    ));
                }
                Ok(r)
            }
            WireMessage::Response(_) => Err(DecodeError::Malformed(
                "expected a sync request, got a response".into(),
            )),
        }
    }
}

impl SyncResponse {
    /// Encodes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::Wire, &WireMessage::Response(self.clone()))
    }

    /// Decodes and bounds-checks a response.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match decode(bytes)? {
            WireMessage::Response(r) => {
                let too_many = match &r {
                    SyncResponse::Hello { heads, .. } => heads.len() > MAX_HEADS,
                    SyncResponse::Offer { heads, hashes, .. } => {
                        heads.len() > MAX_HEADS || hashes.len() > MAX_OFFER
                    }
                    SyncResponse::Updates { updates } => updates.len() > MAX_FETCH,
                    SyncResponse::Roots { roots } => roots.len() > MAX_ROOTS,
                    SyncResponse::Refused { reason } => reason.len() > 1024,
                };
                if too_many {
                    return Err(DecodeError::Malformed(
                        "a sync response is over its item limit".into(),
                    ));
                }
                Ok(r)
            }
            WireMessage::Request(_) => Err(DecodeError::Malformed(
                "expected a sync response, got a request".into(),
            )),
        }
    }
}

/// The envelope of every sync message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireMessage {
    /// A request.
    Request(SyncRequest),
    /// A response.
    Response(SyncResponse),
}

fn decode(bytes: &[u8]) -> Result<WireMessage, DecodeError> {
    encoding::decode(Kind::Wire, bytes, MAX_WIRE_BYTES)
}
