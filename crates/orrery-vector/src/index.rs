//! The derived approximate index of one collection on one replica.
//!
//! Never replicated, never snapshotted, never compared: each replica builds
//! it from its own applied state. `apply` only hands changes to a background
//! indexer thread over a channel; the thread inserts them in batches. The
//! index is therefore allowed to lag the state, and search uses it only when
//! it has caught up with the collection's last applied revision (otherwise
//! exact search answers). Overwritten and deleted points stay in the graph
//! as tombstones: the indexer records, per entry, the revision at which its
//! point was overwritten or deleted (`dead_at`), so a search of the state at
//! revision R keeps exactly the entries with `rev <= R < dead_at` — an
//! integer check per candidate instead of a lookup in the points map (which
//! only the k results, and filtered searches, still do) — and none at all
//! when no entry is dead yet or newer than R (after a bulk load), where
//! the walk is the plain HNSW search. Past a threshold the indexer is
//! handed all live points and rebuilds from scratch.

use crate::hnsw::Hnsw;
use crate::{Metric, PointId};
use std::collections::HashMap;
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
    /// The nearest `k` ids, every one accepted: what a search whose
    /// candidates are all current needs (no per-candidate check).
    fn search_all(&self, q: &[f32], k: usize, ef: usize) -> Vec<usize> {
        self.search(q, k, ef, &|_| true)
    }
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

/// `dead_at` of an entry whose point is still current.
pub const ALIVE: u64 = u64::MAX;

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
    /// Nothing to index, but the index is current up to `rev`.
    Advance { rev: u64 },
    /// These points were deleted at `rev`; the index is current up to it.
    Kill { rev: u64, ids: Vec<PointId> },
    /// Replace the whole index with these live points.
    Rebuild {
        rev: u64,
        items: Vec<(PointId, u64, Vec<f32>)>,
    },
    /// Save the index, once everything sent before has been inserted.
    Dump(crate::persist::DumpTo),
}

/// Per internal id, the revision at which its point was overwritten or
/// deleted ([`ALIVE`] while it is current), and two bounds that let a
/// search skip the per-candidate check when every entry is current for it.
#[derive(Default)]
pub struct Liveness {
    pub dead_at: Vec<u64>,
    /// The smallest `dead_at` ([`ALIVE`] when none is dead).
    pub min_dead: u64,
    /// No entry was indexed at a later revision than this.
    pub max_rev: u64,
}

impl Liveness {
    pub fn new(dead_at: Vec<u64>, max_rev: u64) -> Liveness {
        let min_dead = dead_at.iter().copied().min().unwrap_or(ALIVE);
        Liveness {
            dead_at,
            min_dead,
            max_rev,
        }
    }

    /// Entry `i`, indexed at `rev`, is current for the state at `at`.
    pub fn visible(&self, i: usize, rev: u64, at: u64) -> bool {
        rev <= at && self.dead_at.get(i).is_some_and(|d| *d > at)
    }

    /// Every entry is current for the state at `at`.
    pub fn all_visible(&self, at: u64) -> bool {
        self.max_rev <= at && self.min_dead > at
    }

    fn kill(&mut self, i: usize, rev: u64) {
        if let Some(d) = self.dead_at.get_mut(i) {
            *d = (*d).min(rev);
            self.min_dead = self.min_dead.min(rev);
        }
    }
}

/// What searches read; written by the indexer thread.
pub struct Shared {
    pub index: RwLock<Option<Arc<dyn AnnIndex>>>,
    /// Internal id -> (point, revision it was indexed at).
    pub entries: RwLock<Vec<(PointId, u64)>>,
    /// Which entries are current at which revision. Locked after `entries`.
    pub liveness: RwLock<Liveness>,
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
                liveness: RwLock::new(Liveness::new(Vec::new(), 0)),
                indexed_through: AtomicU64::new(0),
                state: AtomicU8::new(BUILDING),
            },
            Some((l, rev)) => Shared {
                index: RwLock::new(Some(l.index)),
                liveness: RwLock::new(Liveness::new(
                    l.dead_at,
                    l.entries.iter().map(|(_, r)| *r).max().unwrap_or(0),
                )),
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

    /// `ids` were deleted at `rev` (ids the index never held are ignored).
    pub fn kill(&self, rev: u64, ids: Vec<PointId>) {
        self.send(Msg::Kill { rev, ids });
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

/// Each point's newest entry, from a table (the live ones of a loaded dump).
fn newest_entries(s: &Shared) -> HashMap<PointId, usize> {
    let entries = s.entries.read().unwrap_or_else(|p| p.into_inner());
    let dead = s.liveness.read().unwrap_or_else(|p| p.into_inner());
    entries
        .iter()
        .enumerate()
        .filter(|(i, _)| dead.dead_at.get(*i).is_some_and(|d| *d == ALIVE))
        .map(|(i, (pid, _))| (pid.clone(), i))
        .collect()
}

/// Marks `pid`'s current entry dead at `rev` (the first such mark stands).
fn kill(dead: &mut Liveness, newest: &mut HashMap<PointId, usize>, pid: &PointId, rev: u64) {
    if let Some(i) = newest.remove(pid) {
        dead.kill(i, rev);
    }
}

fn run(rx: Receiver<Msg>, s: Arc<Shared>, metric: Metric, m: usize, efc: usize) {
    let new_index = |cap: usize| -> Arc<dyn AnnIndex> { Arc::new(Hnsw::new(metric, m, efc, cap)) };
    let mut newest = newest_entries(&s);
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
                        let mut dead = s.liveness.write().unwrap_or_else(|p| p.into_inner());
                        for (pid, v) in items {
                            kill(&mut dead, &mut newest, &pid, rev);
                            newest.insert(pid.clone(), entries.len());
                            batch.push((entries.len(), v));
                            entries.push((pid, rev));
                            dead.dead_at.push(ALIVE);
                        }
                        dead.max_rev = dead.max_rev.max(rev);
                        through = through.max(rev);
                    }
                    Msg::Advance { rev } => through = through.max(rev),
                    Msg::Kill { rev, ids } => {
                        let mut dead = s.liveness.write().unwrap_or_else(|p| p.into_inner());
                        for pid in &ids {
                            kill(&mut dead, &mut newest, pid, rev);
                        }
                        through = through.max(rev);
                    }
                    Msg::Dump(to) => dumps.push(to),
                    Msg::Rebuild { rev, items } => {
                        batch.clear();
                        let idx = new_index(items.len());
                        let mut entries = Vec::with_capacity(items.len());
                        newest.clear();
                        for (pid, prev, v) in items {
                            newest.insert(pid.clone(), entries.len());
                            batch.push((entries.len(), v));
                            entries.push((pid, prev));
                        }
                        let alive = Liveness::new(vec![ALIVE; entries.len()], rev);
                        let mut e = s.entries.write().unwrap_or_else(|p| p.into_inner());
                        *e = entries;
                        *s.liveness.write().unwrap_or_else(|p| p.into_inner()) = alive;
                        drop(e);
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
