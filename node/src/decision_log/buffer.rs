//! The decision log's buffer on disk: a sled tree in the node's store, so
//! records wait out a receiver's outage and a restart of the node.
//!
//! ```text
//! store/ (sled, beside the updates and the audit trail)
//! └── decision_log    seq (u64 BE) -> one record, a JSON line ending in \n
//! ```
//!
//! Records are appended with rising sequence numbers and leave from the
//! oldest: by delivery ([`Buffer::remove`]), or to make room. The buffer
//! holds at most its limit in bytes (each record counts its line and its
//! 8-byte key); a record that does not fit pushes out the oldest ones,
//! which are counted ([`Buffer::push`] returns how many), never silently
//! lost. A record larger than the whole limit is dropped itself. A record
//! pushed out while the sender has it on its way counts as dropped and may
//! still arrive; [`Buffer::remove`] then finds it gone.
//!
//! What is never lost: a record the buffer took, until it is delivered or
//! pushed out by newer ones. sled writes to disk within half a second (its
//! default flush interval) and the node flushes when it stops, so a
//! `kill -9` loses at most the last half second of records.

use std::sync::Mutex;

use sled::IVec;

const TREE: &str = "decision_log";
const KEY_BYTES: u64 = 8;

/// The buffer: a sled tree and what it holds.
pub struct Buffer {
    tree: sled::Tree,
    limit: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Bytes held (lines and keys).
    bytes: u64,
    /// Records held.
    len: u64,
    /// The sequence number of the next record.
    next: u64,
}

impl Buffer {
    /// Opens the buffer in `db`, holding at most `limit` bytes. Returns it
    /// and how many records it dropped, oldest first, because they were
    /// over a limit lowered since they were written.
    pub fn open(db: &sled::Db, limit: u64) -> Result<(Buffer, u64), sled::Error> {
        let tree = db.open_tree(TREE)?;
        let mut inner = Inner {
            bytes: 0,
            len: 0,
            next: 0,
        };
        for entry in tree.iter() {
            let (k, v) = entry?;
            inner.bytes += KEY_BYTES + v.len() as u64;
            inner.len += 1;
            inner.next = seq_of(&k).saturating_add(1);
        }
        let buffer = Buffer {
            tree,
            limit,
            inner: Mutex::new(inner),
        };
        let dropped = {
            let mut inner = buffer.lock();
            buffer.make_room(&mut inner, 0)?
        };
        Ok((buffer, dropped))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the oldest records until `more` bytes fit; returns how many.
    fn make_room(&self, inner: &mut Inner, more: u64) -> Result<u64, sled::Error> {
        let mut dropped = 0;
        while inner.bytes + more > self.limit {
            let Some((_, v)) = self.tree.pop_min()? else {
                break;
            };
            inner.bytes = inner.bytes.saturating_sub(KEY_BYTES + v.len() as u64);
            inner.len = inner.len.saturating_sub(1);
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Appends `lines`, oldest first; returns how many records were
    /// dropped to make room (older ones, or a line larger than the limit).
    pub fn push(&self, lines: &[Vec<u8>]) -> Result<u64, sled::Error> {
        let mut inner = self.lock();
        let mut dropped = 0;
        for line in lines {
            let size = KEY_BYTES + line.len() as u64;
            if size > self.limit {
                dropped += 1;
                continue;
            }
            dropped += self.make_room(&mut inner, size)?;
            self.tree
                .insert(inner.next.to_be_bytes(), line.as_slice())?;
            inner.next += 1;
            inner.bytes += size;
            inner.len += 1;
        }
        Ok(dropped)
    }

    /// The oldest records, at most `max`, with their sequence numbers.
    pub fn oldest(&self, max: usize) -> Result<Vec<(u64, IVec)>, sled::Error> {
        self.tree
            .iter()
            .take(max)
            .map(|e| e.map(|(k, v)| (seq_of(&k), v)))
            .collect()
    }

    /// Removes the records `seqs` (delivered); returns how many were still
    /// there (the rest had been pushed out to make room).
    pub fn remove(&self, seqs: impl IntoIterator<Item = u64>) -> Result<u64, sled::Error> {
        let mut inner = self.lock();
        let mut removed = 0;
        for seq in seqs {
            if let Some(v) = self.tree.remove(seq.to_be_bytes())? {
                inner.bytes = inner.bytes.saturating_sub(KEY_BYTES + v.len() as u64);
                inner.len = inner.len.saturating_sub(1);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Records held.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what it holds to disk.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.tree.flush().map(|_| ())
    }
}

fn seq_of(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u32) -> Vec<u8> {
        format!("{{\"n\":{n:08}}}\n").into_bytes()
    }

    #[test]
    fn the_oldest_leave_first_and_every_drop_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let each = KEY_BYTES + line(0).len() as u64;
        let (b, dropped) = Buffer::open(&db, 10 * each).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(b.push(&(0..10).map(line).collect::<Vec<_>>()).unwrap(), 0);
        assert_eq!((b.len(), b.bytes()), (10, 10 * each));
        // Three more push out the three oldest.
        assert_eq!(b.push(&(10..13).map(line).collect::<Vec<_>>()).unwrap(), 3);
        let held: Vec<_> = b.oldest(100).unwrap();
        assert_eq!(held.len(), 10);
        assert_eq!(held[0].1.as_ref(), line(3).as_slice());
        assert_eq!(held[9].1.as_ref(), line(12).as_slice());
        // Delivery removes; a record already pushed out is not counted.
        let seqs: Vec<u64> = held.iter().take(4).map(|(s, _)| *s).collect();
        assert_eq!(b.remove(seqs.iter().copied().chain([0])).unwrap(), 4);
        assert_eq!((b.len(), b.bytes()), (6, 6 * each));
        // A line larger than the limit is dropped itself.
        assert_eq!(b.push(&[vec![b'x'; 11 * each as usize]]).unwrap(), 1);
        assert_eq!(b.len(), 6);
        b.flush().unwrap();
        drop(b);
        // Reopened: the same records, and a lower limit drops the oldest.
        let (b, dropped) = Buffer::open(&db, 2 * each).unwrap();
        assert_eq!(dropped, 4);
        let held = b.oldest(100).unwrap();
        assert_eq!(held.len(), 2);
        assert_eq!(held[1].1.as_ref(), line(12).as_slice());
        b.push(&[line(13)]).unwrap();
        assert!(b.oldest(100).unwrap()[1].0 > held[1].0);
    }
}
