//! Vector searches run outside the group's state lock.
//!
//! `route::read_state` takes a search's view under the read lock (O(1):
//! see `orrery_vector::SearchView`), after the read index is applied for a
//! linearizable read, exactly where the lock-held search used to run; the
//! search itself runs here with the lock released, so apply of the group
//! (KV, jobs, policies and vectors alike) never waits for it. A search
//! that may scan the shard runs on a blocking thread, so a long exact
//! search does not hold an async worker either; an index search (tens of
//! microseconds) runs in place.

use super::ops::QueryResult;
use crate::api::ApiError;
use orrery_vector::SearchView;

/// Searches `view`; `pause` runs first (no-op outside tests: a test's
/// hook to hold a search in progress).
pub(super) async fn search(
    view: Box<SearchView>,
    pause: impl FnOnce() + Send + 'static,
) -> Result<QueryResult, ApiError> {
    let scan = view.may_scan();
    let run = move || {
        pause();
        QueryResult::VectorSearch(Ok(view.run().0))
    };
    if !scan {
        return Ok(run());
    }
    tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| ApiError::Internal(format!("vector search failed: {e}")))
}

#[cfg(test)]
#[path = "view_read_tests.rs"]
mod tests;
