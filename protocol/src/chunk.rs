//! The change inside a signed update or a quarantine order, read as bytes:
//! exactly one uncompressed automerge change chunk, and its hash, computed
//! without automerge's parser.
//!
//! This is what the trust boundary ([`crate::boundary`]) can know of a
//! change before anyone is trusted: the chunk header (magic bytes,
//! checksum, type, a canonical length that covers the rest) and the
//! SHA-256 hash automerge gives the change, which signatures cover. Nothing
//! here reads the change's contents.

use sha2::{Digest as _, Sha256};
use thiserror::Error;
use weft_crdt::ChangeHash;

/// Why bytes are not one uncompressed automerge change chunk.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("the change is not an uncompressed automerge change chunk: {0}")]
pub struct ChunkError(pub String);

impl ChunkError {
    fn new(why: &str) -> Self {
        ChunkError(why.to_string())
    }
}

/// automerge's magic bytes, which every chunk starts with.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Where a chunk keeps its type: after the magic bytes and the checksum.
const CHUNK_TYPE_AT: usize = 8;

/// The chunk type of an uncompressed change.
const CHUNK_TYPE_CHANGE: u8 = 1;

/// The hash automerge gives the change in `change`, computed without
/// automerge's parser: SHA-256 over the chunk's type, length and contents,
/// once [`check_chunk`] has passed. The chunk's checksum (the hash's first
/// four bytes, which the hash does not cover) must match, so one change has
/// exactly one byte string, and its hash is known before anything reads its
/// contents.
pub fn change_hash(change: &[u8]) -> Result<ChangeHash, ChunkError> {
    check_chunk(change)?;
    let hash: [u8; 32] = Sha256::digest(&change[CHUNK_TYPE_AT..]).into();
    if change[4..8] != hash[..4] {
        return Err(ChunkError::new("its checksum does not match its contents"));
    }
    Ok(ChangeHash(hash))
}

/// Refuses anything but exactly one uncompressed change chunk, by its
/// header alone: wrong magic bytes, another chunk type (automerge parses a
/// compressed change or a document chunk as a change too, and those expand
/// while parsed: a few hundred bytes can ask for gigabytes), or a length
/// that is not canonical LEB128 or does not cover exactly the rest.
pub fn check_chunk(change: &[u8]) -> Result<(), ChunkError> {
    if change.get(..4) != Some(&CHUNK_MAGIC[..]) {
        return Err(ChunkError::new(
            "it does not start with automerge's magic bytes",
        ));
    }
    match change.get(CHUNK_TYPE_AT) {
        Some(&CHUNK_TYPE_CHANGE) => {}
        Some(_) => {
            return Err(ChunkError::new(
                "its chunk type is not an uncompressed change",
            ));
        }
        None => return Err(ChunkError::new("it ends inside its header")),
    }
    let mut len: u64 = 0;
    let mut at = CHUNK_TYPE_AT + 1;
    for shift in (0..64).step_by(7) {
        let Some(&b) = change.get(at) else {
            return Err(ChunkError::new("it ends inside its length"));
        };
        at += 1;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(ChunkError::new("its length overflows"));
        }
        len |= bits << shift;
        if b & 0x80 == 0 {
            if b == 0 && shift > 0 {
                return Err(ChunkError::new("its length is not canonically encoded"));
            }
            let rest = (change.len() - at) as u64;
            if rest != len {
                return Err(ChunkError(format!(
                    "its length says {len} bytes, but {rest} follow"
                )));
            }
            return Ok(());
        }
    }
    Err(ChunkError::new("its length overflows"))
}
