//! The state export: what `GET /v1/state` returns and `--state FILE` reads.
//!
//! Authoring tools (`weft bundle create`, `weft revoke`, `weft update show`)
//! build and judge updates on top of a node's state. They need the document
//! (to write a change on top of its heads) and the trust root (its version,
//! to sign under, and its thresholds, to say what is still missing).
//!
//! The export is a convenience, not a source of trust: the signed root inside
//! is verified by whoever loads it, and a change built on a stale or forged
//! document is still judged by every node on its own.

use serde::{Deserialize, Serialize};

use crate::encoding::{self, DecodeError, Kind};

/// Largest state export accepted, in bytes.
pub const MAX_EXPORT_BYTES: usize = 512 * 1024 * 1024;

/// A node's state, for authoring tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateExport {
    /// The node's current trust root, as `SignedRoot` bytes.
    #[serde(with = "encoding::bytes")]
    pub signed_root: Vec<u8>,
    /// The automerge document, saved.
    #[serde(with = "encoding::bytes")]
    pub doc: Vec<u8>,
}

impl StateExport {
    /// Encodes the export.
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(Kind::State, self)
    }

    /// Decodes an export.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        encoding::decode(Kind::State, bytes, MAX_EXPORT_BYTES)
    }
}
