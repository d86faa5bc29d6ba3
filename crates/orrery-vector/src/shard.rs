//! One collection's points on one shard replica: its derived indexes
//! (HNSW and payload) and the searches over them.

use crate::payload_index;
use crate::{
    Hit, IndexHandle, Metric, PointId, SearchRequest, ShardCollection, StoredPoint,
    REBUILD_STALE_MIN,
};
use rayon::prelude::*;
use std::sync::Arc;

impl ShardCollection {
    pub(crate) fn build_payload_index(&mut self) {
        self.payload_index =
            payload_index::PayloadIndex::build(self.points.iter().map(|(id, p)| (id, &p.payload)));
    }

    /// Exact search among `ids` (a superset of the matching points).
    pub(crate) fn exact_among(
        &self,
        req: &SearchRequest,
        ids: &std::collections::BTreeSet<PointId>,
        matches: &dyn Fn(&StoredPoint) -> bool,
    ) -> Vec<Hit> {
        let mut scored: Vec<(f32, &PointId, &StoredPoint)> = ids
            .iter()
            .filter_map(|id| self.points.get_key_value(id))
            .map(|(id, p)| (id, &**p))
            .filter(|(_, p)| matches(p))
            .map(|(id, p)| (req.metric.score(&req.vector, &p.vector.0), id, p))
            .collect();
        scored.sort_by(|a, b| {
            let o = a.0.total_cmp(&b.0);
            let o = if req.metric.higher_is_better() {
                o.reverse()
            } else {
                o
            };
            o.then_with(|| a.1.cmp(b.1))
        });
        scored.truncate(req.k);
        scored
            .into_iter()
            .map(|(_, id, p)| self.hit(req, id, p))
            .collect()
    }

    pub(crate) fn index_handle(&mut self) -> Arc<IndexHandle> {
        let (metric, m, efc) = (
            self.metric.unwrap_or(Metric::L2),
            self.m,
            self.ef_construction,
        );
        self.index
            .get_or_insert_with(|| IndexHandle::spawn(metric, m.max(2), efc.max(1)))
            .clone()
    }

    /// After `removed` were deleted at `index`: the indexer marks their
    /// entries dead at that revision (or rebuilds without them).
    pub(crate) fn after_delete(&mut self, index: u64, no_index: bool, removed: Vec<PointId>) {
        self.last_rev = index;
        if !no_index && !self.maybe_rebuild(index) {
            if let Some(h) = &self.index {
                h.kill(index, removed);
            }
        }
    }

    /// Rebuilds once stale entries (overwritten or deleted points still in
    /// the graph) pass a threshold, so tombstones cannot take over the index.
    /// Returns whether a rebuild was started.
    pub(crate) fn maybe_rebuild(&mut self, index: u64) -> bool {
        let Some(h) = &self.index else { return false };
        let sent = h.sent.load(std::sync::atomic::Ordering::Relaxed);
        let live = self.points.len() as u64;
        let stale = sent.saturating_sub(live);
        if stale > REBUILD_STALE_MIN && stale > live / 4 {
            self.rebuild(index);
            return true;
        }
        false
    }

    pub(crate) fn rebuild(&mut self, index: u64) {
        if self.metric.is_none() {
            return;
        }
        let items = self
            .points
            .iter()
            .map(|(id, p)| (id.clone(), p.rev, p.vector.0.clone()))
            .collect();
        self.index_handle().rebuild(index, items);
    }

    pub(crate) fn hit(&self, req: &SearchRequest, id: &PointId, p: &StoredPoint) -> Hit {
        Hit {
            id: id.clone(),
            score: req.metric.score(&req.vector, &p.vector.0),
            payload: req.with_payload.then(|| p.payload.clone()),
            vector: req.with_vector.then(|| p.vector.0.clone()),
        }
    }

    /// Brute force over every point, in parallel.
    pub(crate) fn exact(
        &self,
        req: &SearchRequest,
        matches: &(dyn Fn(&StoredPoint) -> bool + Sync),
    ) -> Vec<Hit> {
        let metric = req.metric;
        // The persistent map has no parallel iterator: collect references
        // first (what rayon does for a `BTreeMap` too).
        let all: Vec<(&PointId, &Arc<StoredPoint>)> = self.points.iter().collect();
        let mut scored: Vec<(f32, &PointId)> = all
            .par_iter()
            .map(|(id, p)| (*id, p))
            .filter(|(_, p)| matches(p))
            .map(|(id, p)| (metric.score(&req.vector, &p.vector.0), id))
            .collect();
        let cmp = |a: &(f32, &PointId), b: &(f32, &PointId)| {
            let o = a.0.total_cmp(&b.0);
            let o = if metric.higher_is_better() {
                o.reverse()
            } else {
                o
            };
            o.then_with(|| a.1.cmp(b.1))
        };
        if scored.len() > req.k {
            scored.select_nth_unstable_by(req.k, cmp);
            scored.truncate(req.k);
        }
        scored.sort_by(cmp);
        scored
            .into_iter()
            .filter_map(|(_, id)| self.points.get(id).map(|p| self.hit(req, id, p)))
            .collect()
    }

    /// The index's candidates that this state holds: an entry indexed at
    /// a revision this state has reached and not yet overwritten or deleted
    /// by it (see `index.rs`); with a filter, also present and matching.
    /// The results are read from the state and scored exactly. `None` when
    /// the index is unusable.
    pub(crate) fn index_search(
        &self,
        req: &SearchRequest,
        matches: &dyn Fn(&StoredPoint) -> bool,
        filtered: bool,
    ) -> Option<Vec<Hit>> {
        let h = self.index.as_ref()?;
        let idx = h.shared.index.read().ok()?.clone()?;
        let entries = h.shared.entries.read().ok()?;
        let liveness = h.shared.liveness.read().ok()?;
        let at = self.last_rev;
        let visible = |internal: usize| -> bool {
            entries
                .get(internal)
                .is_some_and(|(_, rev)| liveness.visible(internal, *rev, at))
        };
        // Re-checked against the points even when `visible` says so: the
        // results need the point, and a mistake in the bookkeeping must not
        // surface a point this state does not hold.
        let live = |internal: usize| -> Option<(&PointId, &StoredPoint)> {
            let (pid, rev) = entries.get(internal)?;
            let p: &StoredPoint = self.points.get(pid)?;
            (p.rev == *rev && matches(p)).then_some((pid, p))
        };
        let keep = |internal: usize| {
            if filtered {
                live(internal).is_some()
            } else {
                visible(internal)
            }
        };
        let ef = req.ef.max(req.k);
        // After a bulk load nothing is stale: no check per candidate at all.
        let found = if !filtered && liveness.all_visible(at) {
            idx.search_all(&req.vector, req.k, ef)
        } else {
            idx.search(&req.vector, req.k, ef, &keep)
        };
        let mut hits: Vec<Hit> = found
            .into_iter()
            .filter_map(|i| live(i).map(|(id, p)| self.hit(req, id, p)))
            .collect();
        hits.sort_by(|a, b| req.metric.cmp_hits(a, b));
        hits.dedup_by(|a, b| a.id == b.id);
        hits.truncate(req.k);
        Some(hits)
    }
}

#[cfg(test)]
impl ShardCollection {
    /// Where the index's liveness bookkeeping disagrees with this state:
    /// an entry visible at its revision whose point it does not hold at
    /// the entry's revision, or a point with no visible entry. Empty when
    /// the index is current through `last_rev` and agrees.
    pub(crate) fn visibility_errors(&self) -> Vec<String> {
        let Some(h) = &self.index else {
            return Vec::new();
        };
        let entries = h.shared.entries.read().unwrap_or_else(|p| p.into_inner());
        let liveness = h.shared.liveness.read().unwrap_or_else(|p| p.into_inner());
        let at = self.last_rev;
        let mut errors = Vec::new();
        let mut covered = std::collections::HashSet::new();
        for (i, (pid, rev)) in entries.iter().enumerate() {
            let visible = liveness.visible(i, *rev, at);
            if liveness.all_visible(at) && !visible {
                errors.push(format!(
                    "entry {i} ({pid} at {rev}) not visible at {at}, yet all are"
                ));
            }
            let held = self.points.get(pid).is_some_and(|p| p.rev == *rev);
            if visible && !held {
                errors.push(format!(
                    "entry {i} ({pid} at {rev}) visible at {at}, not held"
                ));
            }
            if visible {
                covered.insert(pid.clone());
            }
        }
        for (pid, p) in self.points.iter() {
            if !covered.contains(pid) {
                errors.push(format!("{pid} at {} has no visible entry at {at}", p.rev));
            }
        }
        errors
    }
}
