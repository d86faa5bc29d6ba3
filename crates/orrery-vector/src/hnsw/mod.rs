//! Our own HNSW (Malkov & Yashunin), behind [`AnnIndex`].
//!
//! * [`graph`]: flat storage — vectors in one `Vec<f32>`, neighbour lists
//!   in flat arrays of atomics per layer, a lock per node for writers.
//! * [`distance`]: AVX2+FMA kernels picked at runtime, scalar fallback,
//!   non-finite distances sort farthest (never NaN, never a panic).
//! * [`walk`]: greedy descent, beam search honouring the filter, and the
//!   neighbour-selection heuristic.
//! * [`visited`]: a per-thread generation-stamped visited set.
//!
//! Batches are appended under the write lock (a memcpy), then linked in
//! parallel with rayon under the read lock, which searches share: a search
//! runs concurrently with inserts and sees the nodes linked so far. Levels
//! come from a seeded generator keyed by slot, so they do not depend on
//! thread scheduling (the links do, for parallel batches).

mod distance;
mod dump;
mod graph;
mod visited;
mod walk;

use crate::index::AnnIndex;
use crate::Metric;
use distance::Dist;
use graph::Store;
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use walk::{Cand, Walk};

/// The entry point, packed as `level << 32 | slot`; `NONE` while empty.
const NONE: u64 = u64::MAX;
/// Levels above this are cut (2^-16 of nodes at m = 2 would exceed it).
const MAX_LEVEL: u8 = 16;
/// Batches smaller than this are linked in order on the calling thread
/// (and so are deterministic); larger ones in parallel.
const PARALLEL_MIN: usize = 64;
/// The beam on layer 1 (whose finds all enter layer 0, see `search`) is
/// a quarter of the layer-0 beam, at most this.
const UPPER_EF_MAX: usize = 32;

pub struct Hnsw {
    metric: Metric,
    dist: Dist,
    m: usize,
    ef_construction: usize,
    seed: u64,
    /// The expected size, reserved once the dimension is known.
    capacity: usize,
    store: RwLock<Store>,
    entry: AtomicU64,
    /// Held by an insert whose level raises the top of the graph, for the
    /// whole insert (as hnswlib does), so that raises are serialised.
    top: Mutex<()>,
    /// One batch at a time appends and links.
    batches: Mutex<()>,
}

impl Hnsw {
    pub fn new(metric: Metric, m: usize, ef_construction: usize, capacity: usize) -> Hnsw {
        Hnsw::with_seed(metric, m, ef_construction, capacity, 0x5eed_0f0a_a1e5)
    }

    pub fn with_seed(
        metric: Metric,
        m: usize,
        ef_construction: usize,
        capacity: usize,
        seed: u64,
    ) -> Hnsw {
        let m = m.clamp(2, crate::MAX_M);
        Hnsw {
            metric,
            dist: Dist::new(metric),
            m,
            ef_construction: ef_construction.max(1),
            seed,
            capacity,
            // The dimension is learnt from the first vector.
            store: RwLock::new(Store::new(0, m, capacity)),
            entry: AtomicU64::new(NONE),
            top: Mutex::new(()),
            batches: Mutex::new(()),
        }
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by vectors and lists.
    pub fn bytes(&self) -> usize {
        self.read().bytes()
    }

    /// Whether distances use the AVX2+FMA kernels.
    pub fn simd(&self) -> bool {
        self.dist.simd()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        // Writers only append whole nodes; a panic mid-append (allocation
        // failure) leaves at worst unlinked slots, which walks never reach.
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn prepare(&self, v: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::Cosine => crate::normalized(v),
            _ => v.to_vec(),
        }
    }

    /// `floor(-ln(u) / ln(m))`, u uniform in (0, 1] from splitmix64 of
    /// (seed, slot).
    fn level(&self, slot: usize) -> u8 {
        let mut z = self
            .seed
            .wrapping_add((slot as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let l = -u.ln() / (self.m as f64).ln();
        (l.floor() as u64).min(u64::from(MAX_LEVEL)) as u8
    }

    fn entry(&self) -> Option<(u32, usize)> {
        let e = self.entry.load(Ordering::Acquire);
        (e != NONE).then_some((e as u32, (e >> 32) as usize))
    }

    /// Links one appended node into the graph.
    fn link(&self, s: &Store, slot: u32) {
        let level = usize::from(s.levels[slot as usize]);
        let packed = (level as u64) << 32 | u64::from(slot);
        if self
            .entry
            .compare_exchange(NONE, packed, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return; // the first node: nothing to link to
        }
        let Some((mut ep, mut top_level)) = self.entry() else {
            return;
        };
        let _raise = (level > top_level).then(|| {
            let g = self.top.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((e, l)) = self.entry() {
                (ep, top_level) = (e, l);
            }
            g
        });
        let q = s.vector(slot);
        let w = Walk {
            store: s,
            dist: &self.dist,
        };
        let mut cur = Cand {
            d: self.dist.eval(q, s.vector(ep)),
            slot: ep,
        };
        for layer in (level + 1..=top_level).rev() {
            cur = w.greedy(q, cur, layer);
        }
        for layer in (0..=level.min(top_level)).rev() {
            let mut found = visited::with_visited(s.len(), |v| {
                w.search_layer(v, q, &[cur], self.ef_construction, layer, None)
            });
            found.retain(|c| c.slot != slot);
            let chosen = w.select(&found, self.m);
            self.set_own(s, slot, layer, &chosen);
            for &n in &chosen {
                self.connect(s, n, slot, layer);
            }
            if let Some(c) = found.first() {
                cur = *c;
            }
        }
        if level > top_level {
            // Only raising inserts store here, and they hold `top`.
            self.entry.store(packed, Ordering::Release);
        }
    }

    /// Sets the list of a node being linked. Inserts of a batch run in
    /// parallel, and another insert can reach this node from an upper layer
    /// (where it is linked already) and connect itself here before this
    /// insert sets the list: overwriting would drop that back-link, and a
    /// node whose only in-link it was becomes unreachable (seen in 2-D data,
    /// where lists are short). So what is there is kept, pruned with the
    /// heuristic when the union overflows.
    fn set_own(&self, s: &Store, slot: u32, layer: usize, chosen: &[u32]) {
        let mut list = chosen.to_vec();
        let _g = s.lock(slot);
        let mut there = Vec::new();
        s.neighbours(slot, layer, &mut there);
        for n in there {
            if !list.contains(&n) {
                list.push(n);
            }
        }
        if list.len() > s.max_neighbours(layer) {
            list = self.prune(s, slot, &list, layer);
        }
        s.set_neighbours(slot, layer, &list);
    }

    /// The heuristic's choice among `list` as neighbours of `n`.
    fn prune(&self, s: &Store, n: u32, list: &[u32], layer: usize) -> Vec<u32> {
        let base = s.vector(n);
        let mut cands: Vec<Cand> = list
            .iter()
            .map(|&x| Cand {
                d: self.dist.eval(base, s.vector(x)),
                slot: x,
            })
            .collect();
        cands.sort();
        let w = Walk {
            store: s,
            dist: &self.dist,
        };
        w.select(&cands, s.max_neighbours(layer))
    }

    /// Adds `new` to the list of `n`, pruning with the heuristic when full.
    fn connect(&self, s: &Store, n: u32, new: u32, layer: usize) {
        let _g = s.lock(n);
        let mut list = Vec::new();
        s.neighbours(n, layer, &mut list);
        if list.contains(&new) {
            return;
        }
        list.push(new);
        if list.len() > s.max_neighbours(layer) {
            list = self.prune(s, n, &list, layer);
        }
        s.set_neighbours(n, layer, &list);
    }
}

impl AnnIndex for Hnsw {
    fn dump(&self) -> Option<Vec<u8>> {
        Some(Hnsw::dump(self))
    }

    fn insert_batch(&self, mut items: &[(usize, Vec<f32>)]) {
        if items.is_empty() {
            return;
        }
        let _one = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let first = {
            let mut s = self.store.write().unwrap_or_else(|p| p.into_inner());
            if s.len() == 0 && s.dim == 0 {
                s.dim = items[0].1.len();
                s.reserve(self.capacity.max(items.len()));
            }
            // Slots are u32 (half the list memory of usize): past 4 billion
            // nodes (far beyond one replica's memory) the index stops
            // growing rather than wrap around.
            let room = (u32::MAX as usize - 1).saturating_sub(s.len());
            items = &items[..items.len().min(room)];
            s.reserve(items.len());
            let first = s.len();
            for (i, (id, v)) in items.iter().enumerate() {
                let level = self.level(first + i);
                s.push(*id, &self.prepare(v), level);
            }
            first as u32
        };
        let s = self.read();
        let slots = first..first + items.len() as u32;
        if items.len() < PARALLEL_MIN {
            slots.for_each(|slot| self.link(&s, slot));
        } else {
            let s: &Store = &s;
            slots.into_par_iter().for_each(|slot| self.link(s, slot));
        }
    }

    fn search(&self, q: &[f32], k: usize, ef: usize, keep: &dyn Fn(usize) -> bool) -> Vec<usize> {
        self.search_with(q, k, ef, Some(keep))
    }

    fn search_all(&self, q: &[f32], k: usize, ef: usize) -> Vec<usize> {
        self.search_with(q, k, ef, None)
    }
}

impl Hnsw {
    /// The walk behind both searches: `keep` `None` is the plain HNSW
    /// search (it stops as soon as no candidate can improve the top `ef`);
    /// with a filter, refused nodes are walked through until `ef`
    /// accepted ones are found.
    fn search_with(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<usize> {
        if k == 0 {
            return Vec::new();
        }
        let q = self.prepare(q);
        let s = self.read();
        let Some((ep, top_level)) = self.entry() else {
            return Vec::new();
        };
        let w = Walk {
            store: &s,
            dist: &self.dist,
        };
        let mut cur = Cand {
            d: self.dist.eval(&q, s.vector(ep)),
            slot: ep,
        };
        for layer in (2..=top_level).rev() {
            cur = w.greedy(&q, cur, layer);
        }
        // Layer 1 is searched with a beam, not greedily, and all it finds
        // seed layer 0: on clustered data layer 0 has few links between
        // clusters, and a query far from every cluster has its neighbours
        // in several; one entry point would leave the walk in one cluster.
        let eps = if top_level >= 1 {
            visited::with_visited(s.len(), |v| {
                w.search_layer(v, &q, &[cur], (ef / 4).clamp(1, UPPER_EF_MAX), 1, None)
            })
        } else {
            vec![cur]
        };
        let ext = &s.ext;
        let keep_slot = keep.map(|keep| move |slot: u32| keep(ext[slot as usize]));
        let found = visited::with_visited(s.len(), |v| {
            let keep_slot = keep_slot.as_ref().map(|f| f as &dyn Fn(u32) -> bool);
            w.search_layer(v, &q, &eps, ef.max(k), 0, keep_slot)
        });
        // The same id inserted twice is two nodes; report it once.
        let mut seen = HashSet::with_capacity(k);
        found
            .into_iter()
            .map(|c| s.ext[c.slot as usize])
            .filter(|id| seen.insert(*id))
            .take(k)
            .collect()
    }
}

#[cfg(test)]
mod tests;
