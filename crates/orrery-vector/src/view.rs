//! A search's view of one shard: taken under the group's state lock in
//! O(1), searched after the lock is released, so that apply (of every
//! domain of the group) never waits for a search.
//!
//! The view is a clone of the collection: its points and payload index
//! are persistent maps (a clone shares their nodes), its HNSW handle an
//! `Arc`. Apply goes on changing the state's own copy; the view keeps the
//! points exactly as they were when it was taken. So a search over it
//! answers as the lock-held search answered at that moment, and a
//! linearizable read that takes it after the read index is applied stays
//! linearizable.
//!
//! The HNSW graph is shared with the live state and may move on (the
//! indexer thread inserts newer revisions) while the view is searched;
//! that was already so under the lock, because the indexer never took it.
//! Every index candidate is re-checked against the view's own points (its
//! indexed revision must equal the view's, and the filter must hold), so
//! a newer entry can never surface a point the view does not hold.

use crate::filter::Filter;
use crate::payload_index::Narrowed;
use crate::{
    Hit, SearchMode, SearchRequest, ShardCollection, StoredPoint, EXACT_BELOW, FILTER_EXACT_BELOW,
};

/// See the module docs; made by [`crate::VectorState::view`].
#[derive(Clone)]
pub struct SearchView {
    pub(crate) req: SearchRequest,
    pub(crate) filter: Option<Filter>,
    /// `None`: the shard holds nothing of this collection incarnation.
    pub(crate) collection: Option<ShardCollection>,
}

impl SearchView {
    /// Whether running the search may scan the shard (exact search, a
    /// filter the payload index cannot narrow, an index that is not
    /// current): worth a blocking thread rather than an async worker. A
    /// guess, not a promise: an index search that under-fills scans too.
    pub fn may_scan(&self) -> bool {
        let Some(c) = &self.collection else {
            return false;
        };
        c.points.len() >= EXACT_BELOW
            && (self.req.exact
                || self.filter.is_some()
                || !c.index.as_ref().is_some_and(|h| h.current(c.last_rev)))
    }

    /// The points the view holds.
    pub fn points(&self) -> usize {
        self.collection.as_ref().map_or(0, |c| c.points.len())
    }

    /// Searches the view: the index when it is current and the shard is
    /// not small, exact search otherwise or when the index under-fills.
    pub fn run(&self) -> (Vec<Hit>, SearchMode) {
        let req = &self.req;
        let Some(c) = &self.collection else {
            return (Vec::new(), SearchMode::Exact);
        };
        let filter = self.filter.as_ref();
        let matches = |p: &StoredPoint| filter.is_none_or(|f| f.matches(&p.payload));
        // A selective filter leaves few candidates: scanning them exactly is
        // cheap and exact, where graph search would wander past them. The
        // payload index names a superset of them without a scan.
        let narrowed = match filter {
            None => Narrowed::Many,
            Some(f) => c.payload_index.candidates(f, FILTER_EXACT_BELOW),
        };
        let selective = match narrowed {
            Narrowed::Few(ids) => {
                return (c.exact_among(req, &ids, &matches), SearchMode::Exact);
            }
            Narrowed::Many => false,
            Narrowed::Unknown => {
                c.points.values().filter(|p| matches(p)).count() < FILTER_EXACT_BELOW
            }
        };
        let use_index = !req.exact
            && !selective
            && c.points.len() >= EXACT_BELOW
            && c.index.as_ref().is_some_and(|h| h.current(c.last_rev));
        if use_index {
            if let Some(hits) = c.index_search(req, &matches, filter.is_some()) {
                if hits.len() >= req.k {
                    return (hits, SearchMode::Index);
                }
                // Under-filled (selective filter, unreachable points): exact
                // search gives every matching point a chance.
                return (c.exact(req, &matches), SearchMode::IndexThenExact);
            }
        }
        (c.exact(req, &matches), SearchMode::Exact)
    }
}
