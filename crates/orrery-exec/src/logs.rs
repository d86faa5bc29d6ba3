//! Per-run log buffers, kept in memory on the executing node only.
//!
//! Each run `(job_id, attempt)` keeps the LAST `keep_bytes` of its output in a
//! ring; followers get new chunks through a broadcast channel. Finished runs
//! stay readable until more than [`FINISHED_RUNS_KEPT`] runs have finished
//! after them (oldest evicted first), which bounds memory to roughly
//! `(slots + FINISHED_RUNS_KEPT) × keep_bytes`. Nothing survives a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

/// How many finished runs' logs a node keeps (oldest evicted first).
pub const FINISHED_RUNS_KEPT: usize = 256;

/// Broadcast capacity in chunks; a follower that falls further behind gets
/// `RecvError::Lagged` and should re-read with [`LogBook::read`].
const FOLLOW_CAPACITY: usize = 1024;

/// A piece of a followed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogChunk {
    /// New bytes of output.
    Data(Vec<u8>),
    /// The run has ended; nothing more will come.
    End,
}

struct RunLog {
    buf: VecDeque<u8>,
    ended: bool,
    tx: broadcast::Sender<LogChunk>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<(String, u64), RunLog>,
    finished: VecDeque<(String, u64)>,
}

/// Per-run log buffers (last `log_keep_bytes` of stdout+stderr or `ctx.log` lines).
#[derive(Clone)]
pub struct LogBook {
    keep_bytes: usize,
    inner: Arc<Mutex<Inner>>,
}

impl LogBook {
    /// A log book keeping the last `keep_bytes` bytes of each run.
    pub fn new(keep_bytes: usize) -> LogBook {
        LogBook {
            keep_bytes,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-append; the ring is
        // still structurally valid, so keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a run (idempotent); its log starts empty.
    pub(crate) fn begin(&self, job_id: &str, attempt: u64) {
        let mut inner = self.lock();
        inner
            .runs
            .entry((job_id.to_string(), attempt))
            .or_insert_with(|| RunLog {
                buf: VecDeque::new(),
                ended: false,
                tx: broadcast::channel(FOLLOW_CAPACITY).0,
            });
    }

    /// Appends output of a run (registering it if needed).
    pub(crate) fn append(&self, job_id: &str, attempt: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.begin(job_id, attempt);
        let keep = self.keep_bytes;
        let mut inner = self.lock();
        if let Some(run) = inner.runs.get_mut(&(job_id.to_string(), attempt)) {
            if run.ended {
                return;
            }
            let tail = &data[data.len().saturating_sub(keep)..];
            let overflow = (run.buf.len() + tail.len()).saturating_sub(keep);
            run.buf.drain(..overflow.min(run.buf.len()));
            run.buf.extend(tail);
            // No receivers is the normal case, not an error.
            let _ = run.tx.send(LogChunk::Data(data.to_vec()));
        }
    }

    /// Marks a run ended, tells followers, and evicts the oldest finished runs.
    pub(crate) fn end(&self, job_id: &str, attempt: u64) {
        let mut inner = self.lock();
        let key = (job_id.to_string(), attempt);
        let Some(run) = inner.runs.get_mut(&key) else {
            return;
        };
        if run.ended {
            return;
        }
        run.ended = true;
        let _ = run.tx.send(LogChunk::End);
        inner.finished.push_back(key);
        while inner.finished.len() > FINISHED_RUNS_KEPT {
            if let Some(old) = inner.finished.pop_front() {
                inner.runs.remove(&old);
            }
        }
    }

    /// The kept bytes of a run and whether it has ended; None if unknown here.
    pub fn read(&self, job_id: &str, attempt: u64) -> Option<(Vec<u8>, bool)> {
        let inner = self.lock();
        let run = inner.runs.get(&(job_id.to_string(), attempt))?;
        Some((run.buf.iter().copied().collect(), run.ended))
    }

    /// Live follow: the kept bytes so far, then a stream of new chunks until
    /// the run ends ([`LogChunk::End`] is always the last chunk).
    pub fn follow(
        &self,
        job_id: &str,
        attempt: u64,
    ) -> Option<(Vec<u8>, broadcast::Receiver<LogChunk>)> {
        let inner = self.lock();
        let run = inner.runs.get(&(job_id.to_string(), attempt))?;
        let kept: Vec<u8> = run.buf.iter().copied().collect();
        if run.ended {
            let (tx, rx) = broadcast::channel(1);
            let _ = tx.send(LogChunk::End);
            return Some((kept, rx));
        }
        // Subscribing under the same lock as the snapshot: no chunk is missed
        // or duplicated between the two.
        Some((kept, run.tx.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes() {
        let book = LogBook::new(10);
        book.begin("j", 1);
        book.append("j", 1, b"0123456");
        book.append("j", 1, b"789abc");
        assert_eq!(book.read("j", 1), Some((b"3456789abc".to_vec(), false)));
        book.append("j", 1, b"ABCDEFGHIJKLMNOP");
        assert_eq!(book.read("j", 1).unwrap().0, b"GHIJKLMNOP".to_vec());
        book.end("j", 1);
        assert!(book.read("j", 1).unwrap().1);
        assert_eq!(book.read("j", 2), None);
        assert_eq!(book.read("k", 1), None);
    }

    #[tokio::test]
    async fn follow_sees_kept_then_new_then_end() {
        let book = LogBook::new(1024);
        book.append("j", 1, b"first\n");
        let (kept, mut rx) = book.follow("j", 1).unwrap();
        assert_eq!(kept, b"first\n".to_vec());
        book.append("j", 1, b"second\n");
        book.end("j", 1);
        assert_eq!(
            rx.recv().await.unwrap(),
            LogChunk::Data(b"second\n".to_vec())
        );
        assert_eq!(rx.recv().await.unwrap(), LogChunk::End);
        // Following an ended run: kept bytes then End at once.
        let (kept, mut rx) = book.follow("j", 1).unwrap();
        assert_eq!(kept, b"first\nsecond\n".to_vec());
        assert_eq!(rx.recv().await.unwrap(), LogChunk::End);
    }

    #[test]
    fn old_finished_runs_are_evicted() {
        let book = LogBook::new(16);
        for i in 0..(FINISHED_RUNS_KEPT as u64 + 5) {
            book.append("j", i, b"x");
            book.end("j", i);
        }
        book.append("running", 1, b"y");
        for i in 0..5 {
            assert_eq!(book.read("j", i), None, "run {i} should be evicted");
        }
        assert!(book.read("j", 5).is_some());
        assert!(book.read("j", FINISHED_RUNS_KEPT as u64 + 4).is_some());
        assert_eq!(book.read("running", 1), Some((b"y".to_vec(), false)));
    }
}
