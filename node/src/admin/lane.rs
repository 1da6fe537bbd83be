//! Author lanes: an operator's successive changes reuse one automerge actor.
//!
//! Every change is written by an actor: the author's public key and an
//! 8-byte lane nonce ([`actor_for`]). automerge keeps per-actor columns and
//! clocks, so a state whose every change has its own actor costs each node
//! time and memory in proportion to the number of actors on every apply;
//! one actor per lane keeps that number to a handful per operator.
//!
//! The catch is that an author must never sign two different changes with
//! the same actor and sequence number (nodes refuse the second as an
//! equivocation wherever the first arrived first). So the CLI keeps the lane
//! beside the key, in `KEY.lane`, locked while a command builds a change:
//! the lane's actor and the number and hash of its latest change. A lane is
//! continued only when the state the change is built on holds exactly that
//! latest change; otherwise (a state from before it, or the lane extended
//! from somewhere else, say a copied key and lane file) the change starts a
//! new lane with a fresh random nonce, which is always safe. A lost or
//! damaged lane file also just starts a new lane.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};
use weft_crdt::{ActorId, Change, ChangeHash, PolicyDoc};
use weft_protocol::identity::SecretKey;
use weft_protocol::update::{actor_for, author_of};

/// The largest lane file read; a real one is about 200 bytes.
const MAX_LANE_FILE: u64 = 4096;

#[derive(Serialize, Deserialize)]
struct Record {
    /// The actor, in hex.
    actor: String,
    /// The number of the lane's latest change.
    seq: u64,
    /// The hash of that change, in hex.
    hash: String,
}

/// The actor to write one change with, and the lane file it is kept in
/// (locked until this value is dropped).
pub(crate) struct Lane {
    file: Option<File>,
    path: PathBuf,
    actor: ActorId,
    continued: bool,
}

impl Lane {
    /// Opens (and locks) the lane kept beside `key_path` and picks the actor
    /// for a change built on `doc`.
    pub(crate) fn open(key_path: &Path, key: &SecretKey, doc: &PolicyDoc) -> Result<Lane> {
        let mut path = key_path.as_os_str().to_owned();
        path.push(".lane");
        let path = PathBuf::from(path);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "warning: cannot keep the author lane in {}: {e}; this change starts a new lane",
                    path.display()
                );
                None
            }
        };
        if let Some(f) = &file {
            f.lock()
                .map_err(|e| anyhow!("cannot lock {}: {e}", path.display()))?;
        }
        let record = file.as_ref().and_then(|f| read_record(f, &path));
        let continued = record.and_then(|r| {
            let actor = ActorId::from(hex::decode(&r.actor).ok()?);
            if author_of(&actor) != Some(key.public()) {
                return None;
            }
            let hash = ChangeHash::try_from(hex::decode(&r.hash).ok()?.as_slice()).ok()?;
            match doc.lane(&actor) {
                Some(latest) if latest == (r.seq, hash) => Some(actor),
                Some((seq, _)) if seq > r.seq => {
                    eprintln!(
                        "warning: the state already holds change {seq} of the lane in {}, which this lane file has not seen (was the key copied with its lane file?); this change starts a new lane",
                        path.display()
                    );
                    None
                }
                // The state is from before the lane's latest change (or it
                // was never published): a new lane cannot collide with it.
                _ => None,
            }
        });
        let (actor, continued) = match continued {
            Some(actor) => (actor, true),
            None => (fresh_actor(key)?, false),
        };
        Ok(Lane {
            file,
            path,
            actor,
            continued,
        })
    }

    /// The actor to write the change with.
    pub(crate) fn actor(&self) -> ActorId {
        self.actor.clone()
    }

    /// Whether the change continues an existing lane.
    pub(crate) fn continued(&self) -> bool {
        self.continued
    }

    /// Records `change` as the lane's latest, before it leaves this machine.
    /// A crash half-way through leaves a lane file that does not parse, and
    /// the next change starts a new lane.
    pub(crate) fn record(mut self, change: &Change) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let record = Record {
            actor: change.actor_id().to_hex_string(),
            seq: change.seq(),
            hash: hex::encode(change.hash().0),
        };
        let mut text = serde_json::to_vec(&record)?;
        text.push(b'\n');
        let path = &self.path;
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&text)?;
            file.sync_all()
        })()
        .map_err(|e| anyhow!("cannot write the author lane {}: {e}", path.display()))
    }
}

fn read_record(file: &File, path: &Path) -> Option<Record> {
    let mut text = String::new();
    file.take(MAX_LANE_FILE).read_to_string(&mut text).ok()?;
    if text.trim().is_empty() {
        return None;
    }
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(_) => {
            eprintln!(
                "warning: {} does not hold an author lane; this change starts a new lane",
                path.display()
            );
            None
        }
    }
}

/// A fresh actor for a change authored by `key`: a new random lane.
pub(crate) fn fresh_actor(key: &SecretKey) -> Result<ActorId> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce)
        .map_err(|e| anyhow!("cannot get random bytes from the operating system: {e}"))?;
    Ok(actor_for(&key.public(), nonce))
}
