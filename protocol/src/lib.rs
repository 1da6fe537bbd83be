//! Weft's trust and wire layer.
//!
//! - [`audit`]: the hash-chained audit trail, its signed checkpoints, verification.
//! - [`authorize`]: an authorization request, from its body to a decision.
//! - [`boundary`]: the trust boundary, the one way in for updates and orders.
//! - [`chunk`]: a change as bytes: one automerge change chunk and its hash.
//! - [`quarantine`]: nodes' signed quarantine orders and their bounded authority.
//! - [`identity`]: ed25519 keys, domain-separated signatures, node ids.
//! - [`encoding`]: the one canonical, versioned, size-limited binary encoding.
//! - [`export`]: the state export that authoring tools build updates on.
//! - [`trust`]: the threshold-signed trust root, its rotation, node certificates.
//! - [`update`]: signed updates and who may make which change.
//! - [`state`]: the replicated document behind a wall of signature checks.
//! - [`summary`]: nodes' signed detection summaries, for a mesh-wide view.
//! - [`summary_gossip`]: a signed summary with its node's certificate, as gossiped.
//! - [`wire`]: the sync messages between nodes.
//! - [`replica`]: the sans-IO replica that the node and the simulator drive.
//! - [`token`]: short-lived identity tokens.
//!
//! No tokio, no libp2p, no sled, no clock and no RNG: time and randomness come
//! in as arguments.

pub mod audit;
pub mod authorize;
pub mod boundary;
pub mod chunk;
pub mod encoding;
pub mod export;
pub mod gateway;
pub mod identity;
pub mod quarantine;
pub mod replica;
pub mod state;
pub mod summary;
pub mod summary_gossip;
pub mod time;
pub mod token;
pub mod trust;
pub mod update;
pub mod wire;
