//! Values too large for one log entry, written in chunks.
//!
//! openraft (0.9) gives each AppendEntries one heartbeat interval end to
//! end; a 16 MiB entry can miss it on a loaded machine and be retried
//! until it fits while the shard's later writes wait. So a large PUT is
//! replicated as `PutChunk` entries of about 1 MiB, staged here invisibly,
//! and a final `PutStaged` entry moves the assembled value under its key:
//! the value appears at once, at `PutStaged`'s revision, on every replica.
//!
//! Chunks are addressed by offset, so a chunk proposed twice (a retry after
//! an unknown outcome) is recognised and ignored. An upload its writer
//! abandoned (it crashed, or gave up) is dropped once no chunk touched it
//! for [`STAGED_TTL_MS`], judged by the times the writers stamped into
//! the commands: every replica drops it at the same entry.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An upload untouched this long (by the commands' stamped times) is
/// dropped.
pub const STAGED_TTL_MS: u64 = 10 * 60 * 1000;

/// Size of the chunks writers cut large values into.
pub const CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub touched_ms: u64,
}

/// The uploads in progress on one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    uploads: BTreeMap<u64, Upload>,
}

/// What applying a chunk did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Appended, or a duplicate of bytes already staged: the upload's
    /// length now.
    Staged(u64),
    /// The chunk does not continue the upload (a gap, or different bytes
    /// at that offset): the upload's length.
    Mismatch(u64),
}

impl Staging {
    pub fn is_empty(&self) -> bool {
        self.uploads.is_empty()
    }

    pub fn len(&self) -> usize {
        self.uploads.len()
    }

    /// Forgets uploads no one touched for the TTL before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        self.uploads
            .retain(|_, u| u.touched_ms.saturating_add(STAGED_TTL_MS) >= now_ms);
    }

    pub fn chunk(&mut self, upload: u64, offset: u64, data: &[u8], now_ms: u64) -> ChunkOutcome {
        let u = self.uploads.entry(upload).or_default();
        u.touched_ms = u.touched_ms.max(now_ms);
        let have = u.data.len() as u64;
        let end = offset.saturating_add(data.len() as u64);
        if offset == have {
            u.data.extend_from_slice(data);
            ChunkOutcome::Staged(u.data.len() as u64)
        } else if end <= have && u.data[offset as usize..end as usize] == *data {
            ChunkOutcome::Staged(have)
        } else {
            ChunkOutcome::Mismatch(have)
        }
    }

    /// Takes the upload if it holds exactly `len` bytes; otherwise leaves
    /// it and returns how many it holds.
    pub fn take(&mut self, upload: u64, len: u64) -> Result<Vec<u8>, u64> {
        match self.uploads.get(&upload) {
            Some(u) if u.data.len() as u64 == len => Ok(self
                .uploads
                .remove(&upload)
                .map(|u| u.data)
                .unwrap_or_default()),
            Some(u) => Err(u.data.len() as u64),
            None => Err(0),
        }
    }

    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(data, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| format!("kv staging snapshot: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_assemble_and_duplicates_are_ignored() {
        let mut s = Staging::default();
        assert_eq!(s.chunk(7, 0, b"abc", 1), ChunkOutcome::Staged(3));
        assert_eq!(s.chunk(7, 0, b"abc", 2), ChunkOutcome::Staged(3));
        assert_eq!(s.chunk(7, 3, b"de", 3), ChunkOutcome::Staged(5));
        // A gap, and different bytes at a staged offset.
        assert_eq!(s.chunk(7, 9, b"x", 4), ChunkOutcome::Mismatch(5));
        assert_eq!(s.chunk(7, 1, b"zz", 4), ChunkOutcome::Mismatch(5));
        assert_eq!(s.take(7, 4), Err(5));
        assert_eq!(s.take(8, 0), Err(0));
        assert_eq!(s.take(7, 5), Ok(b"abcde".to_vec()));
        assert!(s.is_empty());
    }

    #[test]
    fn abandoned_uploads_expire_by_stamped_time() {
        let mut s = Staging::default();
        s.chunk(1, 0, b"a", 1_000);
        s.chunk(2, 0, b"b", 5_000);
        s.expire(1_000 + STAGED_TTL_MS);
        assert_eq!(s.len(), 2);
        s.expire(1_001 + STAGED_TTL_MS);
        assert_eq!(s.len(), 1);
        assert_eq!(s.take(2, 1), Ok(b"b".to_vec()));
    }

    #[test]
    fn snapshot_round_trip() {
        let mut s = Staging::default();
        s.chunk(3, 0, &[1, 2, 3], 9);
        assert_eq!(Staging::restore(&s.snapshot().unwrap()).unwrap(), s);
    }
}
