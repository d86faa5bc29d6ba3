//! Graph walks: the greedy descent through the upper layers, the
//! beam search of one layer (with the filter honoured: refused nodes are
//! walked through but never returned), and Malkov's neighbour-selection
//! heuristic.

use super::distance::Dist;
use super::graph::Store;
use super::visited::Visited;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A node and its distance to the query; ordered by distance, then slot,
/// so that heaps are total (distances are never NaN, see `Dist`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cand {
    pub d: f32,
    pub slot: u32,
}

impl Eq for Cand {}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.slot.cmp(&o.slot))
    }
}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A walk over one graph with one distance.
#[derive(Clone, Copy)]
pub struct Walk<'a> {
    pub store: &'a Store,
    pub dist: &'a Dist,
}

impl Walk<'_> {
    /// Greedy descent on one layer: moves to the closest neighbour until none
    /// is closer.
    pub fn greedy(&self, q: &[f32], mut cur: Cand, layer: usize) -> Cand {
        let (store, dist) = (self.store, self.dist);
        let mut buf = Vec::new();
        loop {
            let mut moved = false;
            store.neighbours(cur.slot, layer, &mut buf);
            for &n in &buf {
                let d = dist.eval(q, store.vector(n));
                if d < cur.d {
                    cur = Cand { d, slot: n };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Beam search of `layer` from the entry points `eps` keeping the `ef` closest nodes that
    /// `keep` accepts (closest first). With a filter the walk goes on until
    /// `ef` accepted nodes are found or the reachable graph is exhausted (as
    /// hnswlib does): refused nodes still lead somewhere.
    pub fn search_layer(
        &self,
        visited: &mut Visited,
        q: &[f32],
        eps: &[Cand],
        ef: usize,
        layer: usize,
        keep: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Cand> {
        let (store, dist) = (self.store, self.dist);
        let ef = ef.max(1);
        let accepts = |s: u32| keep.is_none_or(|k| k(s));
        let mut candidates: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef * 2);
        let mut top: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
        for &ep in eps {
            if visited.check_and_mark(ep.slot) {
                continue;
            }
            candidates.push(Reverse(ep));
            if accepts(ep.slot) {
                top.push(ep);
                if top.len() > ef {
                    top.pop();
                }
            }
        }
        let mut bound = top.peek().map_or(f32::MAX, |t| t.d);
        let mut buf = Vec::with_capacity(store.max_neighbours(layer));
        while let Some(Reverse(c)) = candidates.pop() {
            if c.d > bound && (top.len() >= ef || keep.is_none()) {
                break;
            }
            store.neighbours(c.slot, layer, &mut buf);
            if let Some(&n) = buf.first() {
                store.prefetch(n);
            }
            for (i, &n) in buf.iter().enumerate() {
                if let Some(&next) = buf.get(i + 1) {
                    store.prefetch(next);
                }
                if visited.check_and_mark(n) {
                    continue;
                }
                let d = dist.eval(q, store.vector(n));
                if top.len() < ef || d < bound {
                    let cand = Cand { d, slot: n };
                    candidates.push(Reverse(cand));
                    if accepts(n) {
                        top.push(cand);
                        if top.len() > ef {
                            top.pop();
                        }
                    }
                    if let Some(t) = top.peek() {
                        bound = t.d;
                    }
                }
            }
        }
        top.into_sorted_vec()
    }

    /// Malkov's "select neighbours heuristic": from candidates sorted closest
    /// first, keep one only if it is closer to the base than to every one
    /// already kept, up to `m`. Spreads links across directions, which is what
    /// keeps clustered data navigable.
    pub fn select(&self, sorted: &[Cand], m: usize) -> Vec<u32> {
        let (store, dist) = (self.store, self.dist);
        let mut kept: Vec<Cand> = Vec::with_capacity(m);
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let v = store.vector(c.slot);
            let diverse = kept
                .iter()
                .all(|k| dist.eval(v, store.vector(k.slot)) >= c.d);
            if diverse {
                kept.push(*c);
            }
        }
        kept.into_iter().map(|c| c.slot).collect()
    }
}
