//! The derived approximate index of one collection on one replica.
//!
//! Never replicated, never snapshotted, never compared: each replica builds
//! it from its own applied state. `apply` only hands changes to a background
//! indexer thread over a channel; the thread inserts them in batches. The
//! index is therefore allowed to lag the state, and search uses it only when
//! it has caught up with the collection's last applied revision (otherwise
//! exact search answers). Results are always re-checked against the state,
//! so overwritten and deleted points (which stay in the graph as implicit
//! tombstones) are dropped at search time; past a threshold the indexer is
//! handed all live points and rebuilds from scratch.

use crate::hnsw::Hnsw;
use crate::{Metric, PointId};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};

/// An approximate nearest-neighbour index over internal ids: our own
/// [`Hnsw`] (hnsw_rs, behind the `hnsw_rs` feature, only for the
/// side-by-side benchmark `examples/ann_bench.rs`).
pub trait AnnIndex: Send + Sync {
    /// Adds the items; the same id inserted twice is reported once.
    fn insert_batch(&self, items: &[(usize, Vec<f32>)]);
    /// The nearest `k` ids accepted by `keep`, closest first.
    fn search(&self, q: &[f32], k: usize, ef: usize, keep: &dyn Fn(usize) -> bool) -> Vec<usize>;
    /// The index as bytes that [`crate::persist`] can load back; `None`
    /// for an index that cannot be saved.
    fn dump(&self) -> Option<Vec<u8>> {
        None
    }
}

/// Index states shown by `GET /v1/collections/{c}`.
pub const BUILDING: u8 = 0;
pub const READY: u8 = 1;
pub const FAILED: u8 = 2;

pub fn state_name(s: u8) -> &'static str {
    match s {
        BUILDING => "building",
        READY => "ready",
        _ => "failed",
    }
}

enum Msg {
    Insert {
        rev: u64,
        items: Vec<(PointId, Vec<f32>)>,
    },
    /// Nothing to index (a delete), but the index is current up to `rev`.
    Advance { rev: u64 },
    /// Replace the whole index with these live points.
    Rebuild {
        rev: u64,
        items: Vec<(PointId, u64, Vec<f32>)>,
    },
    /// Save the index, once everything sent before has been inserted.
    Dump(crate::persist::DumpTo),
}

/// What searches read; written by the indexer thread.
pub struct Shared {
    pub index: RwLock<Option<Arc<dyn AnnIndex>>>,
    /// Internal id -> (point, revision it was indexed at).
    pub entries: RwLock<Vec<(PointId, u64)>>,
    pub indexed_through: AtomicU64,
    pub state: AtomicU8,
}

/// A collection's handle to its indexer, held in the (derived, skipped)
/// part of the shard state. Dropping it stops the thread.
pub struct IndexHandle {
    tx: Mutex<Sender<Msg>>,
    pub shared: Arc<Shared>,
    /// Entries handed to the indexer since its last rebuild (live + stale).
    pub sent: AtomicU64,
}

impl Drop for IndexHandle {
    // A dropped collection (or a state replaced by a snapshot install) no
    // longer holds its dump: unclaimed, the sweep deletes it after an hour.
    fn drop(&mut self) {
        crate::persist::release(self as *const IndexHandle as usize);
    }
}

impl IndexHandle {
    pub fn spawn(metric: Metric, m: usize, ef_construction: usize) -> Arc<IndexHandle> {
        Self::spawn_with(metric, m, ef_construction, None)
    }

    /// An indexer that starts from a loaded index (see [`crate::persist`]),
    /// ready and current through `rev`.
    pub fn spawn_loaded(
        metric: Metric,
        m: usize,
        ef_construction: usize,
        loaded: crate::persist::Loaded,
        rev: u64,
    ) -> Arc<IndexHandle> {
        Self::spawn_with(metric, m, ef_construction, Some((loaded, rev)))
    }

    fn spawn_with(
        metric: Metric,
        m: usize,
        ef_construction: usize,
        loaded: Option<(crate::persist::Loaded, u64)>,
    ) -> Arc<IndexHandle> {
        let (tx, rx) = channel();
        let sent = loaded.as_ref().map_or(0, |(l, _)| l.entries.len() as u64);
        let shared = Arc::new(match loaded {
            None => Shared {
                index: RwLock::new(None),
                entries: RwLock::new(Vec::new()),
                indexed_through: AtomicU64::new(0),
                state: AtomicU8::new(BUILDING),
            },
            Some((l, rev)) => Shared {
                index: RwLock::new(Some(l.index)),
                entries: RwLock::new(l.entries),
                indexed_through: AtomicU64::new(rev),
                state: AtomicU8::new(READY),
            },
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("vector-indexer".into())
            .spawn(move || run(rx, s, metric, m, ef_construction));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a vector indexer ({e}); searches will be exact");
            shared.state.store(FAILED, Ordering::Release);
        }
        Arc::new(IndexHandle {
            tx: Mutex::new(tx),
            shared,
            sent: AtomicU64::new(sent),
        })
    }

    fn send(&self, m: Msg) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send(m).is_err() {
            self.shared.state.store(FAILED, Ordering::Release);
        }
    }

    pub fn insert(&self, rev: u64, items: Vec<(PointId, Vec<f32>)>) {
        self.sent.fetch_add(items.len() as u64, Ordering::Relaxed);
        self.send(Msg::Insert { rev, items });
    }

    pub fn advance(&self, rev: u64) {
        self.send(Msg::Advance { rev });
    }

    pub fn rebuild(&self, rev: u64, items: Vec<(PointId, u64, Vec<f32>)>) {
        self.sent.store(items.len() as u64, Ordering::Relaxed);
        self.send(Msg::Rebuild { rev, items });
    }

    /// Asks the indexer to save the index once it has inserted everything
    /// sent so far.
    pub fn dump(&self, to: crate::persist::DumpTo) {
        self.send(Msg::Dump(to));
    }

    /// Usable for a collection whose last applied change is `last_rev`.
    pub fn current(&self, last_rev: u64) -> bool {
        self.shared.state.load(Ordering::Acquire) == READY
            && self.shared.indexed_through.load(Ordering::Acquire) >= last_rev
    }
}

/// Index building shares one small rayon pool per process (half the cores),
/// so bulk loads cannot starve Raft heartbeats and request handling.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores / 2).max(1))
            .thread_name(|i| format!("vector-index-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

fn run(rx: Receiver<Msg>, s: Arc<Shared>, metric: Metric, m: usize, efc: usize) {
    let new_index = |cap: usize| -> Arc<dyn AnnIndex> { Arc::new(Hnsw::new(metric, m, efc, cap)) };
    while let Ok(first) = rx.recv() {
        // Coalesce whatever is queued into one batch: bulk loads are then
        // linked in parallel instead of one small insert per command.
        let mut msgs = vec![first];
        while let Ok(m) = rx.try_recv() {
            msgs.push(m);
        }
        let mut dumps = Vec::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut batch: Vec<(usize, Vec<f32>)> = Vec::new();
            let mut through = s.indexed_through.load(Ordering::Acquire);
            for msg in msgs {
                match msg {
                    Msg::Insert { rev, items } => {
                        let mut entries = s.entries.write().unwrap_or_else(|p| p.into_inner());
                        for (pid, v) in items {
                            batch.push((entries.len(), v));
                            entries.push((pid, rev));
                        }
                        through = through.max(rev);
                    }
                    Msg::Advance { rev } => through = through.max(rev),
                    Msg::Dump(to) => dumps.push(to),
                    Msg::Rebuild { rev, items } => {
                        batch.clear();
                        let idx = new_index(items.len());
                        let mut entries = Vec::with_capacity(items.len());
                        for (pid, prev, v) in items {
                            batch.push((entries.len(), v));
                            entries.push((pid, prev));
                        }
                        *s.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
                        *s.index.write().unwrap_or_else(|p| p.into_inner()) = Some(idx);
                        through = rev;
                        s.state.store(BUILDING, Ordering::Release);
                    }
                }
            }
            let idx = {
                let mut g = s.index.write().unwrap_or_else(|p| p.into_inner());
                g.get_or_insert_with(|| new_index(batch.len())).clone()
            };
            let insert = || {
                for chunk in batch.chunks(8192) {
                    idx.insert_batch(chunk);
                }
            };
            match pool() {
                Some(p) => p.install(insert),
                None => insert(),
            }
            through
        }));
        match outcome {
            Ok(through) => {
                s.indexed_through.store(through, Ordering::Release);
                s.state.store(READY, Ordering::Release);
                // Every batch of this round is inserted: entries and graph
                // agree, which is what a dump must capture.
                for to in dumps {
                    crate::persist::save(&s, to);
                }
            }
            Err(_) => {
                tracing::error!(
                    "vector indexer panicked; this collection's searches will be exact"
                );
                s.state.store(FAILED, Ordering::Release);
                return;
            }
        }
    }
}
