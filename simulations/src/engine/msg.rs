//! The messages that cross a link, and their size on the wire.
//!
//! Rules: sizes approximate the real encodings (gossipsub's protobuf
//! framing, the sync protocol's postcard) and feed the traffic figures; a
//! message's [`Msg::tag`] goes into the trace digest.

use std::sync::Arc;

use weft_protocol::wire::{SyncRequest, SyncResponse};

use crate::gossip::MsgIdx;

/// Bytes of gossipsub framing around a message's data, approximately (the
/// protobuf `Message` with its source, sequence number and signature, and
/// the RPC around it).
const ENVELOPE: usize = 64;
/// The same for an anonymous message (`MessageAuthenticity::Anonymous`):
/// the topic and the data's framing, no source, sequence number or
/// signature (116 bytes fewer on the wire).
const ENVELOPE_ANONYMOUS: usize = 24;
/// The `source` of a message that names none (`GossipConfig::anonymous`):
/// no peer is skipped as its publisher.
pub(super) const NO_SOURCE: u32 = u32::MAX;

/// A message between two nodes.
#[derive(Clone, Debug)]
pub(super) enum Msg {
    /// A message, with the node that published it as its envelope names it
    /// (gossipsub's `source` under `MessageAuthenticity::Signed`), or
    /// [`NO_SOURCE`] for an anonymous one.
    Gossip {
        id: MsgIdx,
        source: u32,
        bytes: Arc<[u8]>,
    },
    /// A frame longer than the codec accepts (a Byzantine node's): only
    /// its length.
    Oversized { len: usize },
    /// Gossipsub's IHAVE: ids the sender has.
    IHave(Arc<[MsgIdx]>),
    /// Gossipsub's IWANT: ids the sender asks for.
    IWant(Vec<MsgIdx>),
    /// Gossipsub 1.2's IDONTWANT: an id the sender needs no copy of.
    IDontWant(MsgIdx),
    /// Gossipsub's GRAFT: add the sender to the receiver's mesh.
    Graft,
    /// Gossipsub's PRUNE: drop the sender from the receiver's mesh.
    Prune,
    /// A sync request, `req` its id. Sync messages are boxed: they are the
    /// largest, and a small `Msg` keeps the event queue's buckets small.
    Request { req: u64, request: Box<SyncRequest> },
    /// The answer to sync request `req`.
    Response {
        req: u64,
        response: Box<SyncResponse>,
    },
}

/// Bytes on the wire of an IHAVE with `ids` ids (as [`Msg::size`]).
pub(super) fn ihave_size(ids: usize) -> u64 {
    16 + 32 * ids as u64 + 6
}

/// Gossipsub's framing around the data of a message with this `source`.
pub(super) fn envelope(source: u32) -> usize {
    if source == NO_SOURCE {
        ENVELOPE_ANONYMOUS
    } else {
        ENVELOPE
    }
}

impl Msg {
    /// Bytes on the wire, approximately: gossipsub's protobuf framing is
    /// about 64 bytes around a message and 8 per control message; sync
    /// messages are counted as their postcard encoding would be (32 bytes a
    /// hash, the certificate and update bytes as they are).
    pub(super) fn size(&self) -> u64 {
        let heads = |n: usize| 32 * n as u64 + 8;
        (match self {
            Msg::Gossip { bytes, source, .. } => bytes.len() as u64 + envelope(*source) as u64,
            Msg::Oversized { len } => *len as u64,
            Msg::IHave(ids) => return ihave_size(ids.len()),
            Msg::IWant(ids) => 16 + 32 * ids.len() as u64,
            Msg::IDontWant(_) => 16 + 32,
            Msg::Graft | Msg::Prune => 24,
            Msg::Request { request, .. } => match &**request {
                SyncRequest::Hello { cert, heads: h, .. } => cert.len() as u64 + heads(h.len()) + 8,
                SyncRequest::Heads { heads: h, .. } => heads(h.len()) + 8,
                SyncRequest::Fetch { hashes } => heads(hashes.len()),
                SyncRequest::Roots { .. } => 8,
            },
            Msg::Response { response, .. } => match &**response {
                SyncResponse::Hello { cert, heads: h, .. } => {
                    cert.len() as u64 + heads(h.len()) + 8
                }
                SyncResponse::Offer {
                    heads: h, hashes, ..
                } => heads(h.len()) + heads(hashes.len()) + 8,
                SyncResponse::Roots { roots } => {
                    roots.iter().map(|u| u.0.len() as u64 + 4).sum::<u64>() + 8
                }
                SyncResponse::Updates { updates } => {
                    updates.iter().map(|u| u.0.len() as u64 + 4).sum::<u64>() + 8
                }
                SyncResponse::Refused { reason } => reason.len() as u64 + 8,
            },
        }) + 6
    }

    /// The message's kind, for the trace digest.
    pub(super) fn tag(&self) -> u8 {
        match self {
            Msg::Gossip { .. } => 1,
            Msg::Oversized { .. } => 2,
            Msg::IHave(_) => 3,
            Msg::IWant(_) => 4,
            Msg::Graft => 5,
            Msg::Prune => 6,
            Msg::Request { .. } => 7,
            Msg::Response { .. } => 8,
            Msg::IDontWant(_) => 9,
        }
    }
}
