//! A node whose storage failed stops, rather than limp on.
//!
//! When the write-ahead log cannot write or fsync (disk full, EIO), it
//! refuses every later write (the page cache may have dropped the failed
//! pages, so what is on disk is unknown), and openraft stops each group
//! whose storage call failed. Such a node can store nothing: it answers
//! writes 503 `storage_unavailable`, `/healthz` and `/readyz` say why, and
//! `orrery_storage_failed` is 1. After [`GRACE`] (so that clients and
//! probes see the reason, and its groups' followers notice the silent
//! leader) the node stops with a clear message and a non-zero exit.
//!
//! Why stop instead of recovering in place: after a failed fsync, Linux may
//! have dropped the dirty pages and cleared the error (the PostgreSQL
//! "fsyncgate" lesson), so retrying the write could report success over a
//! hole. A restart rereads the log from disk and checks every record's
//! CRC, truncating a torn tail; nothing it had acknowledged can be missing,
//! because nothing is acknowledged before its fsync succeeded. If the disk
//! is still full the restart fails again with the same message, so a
//! supervisor's restart loop with back-off recovers once space returns.

use super::Node;
use crate::api::ApiError;
use std::sync::Arc;
use std::time::Duration;

/// How long a node whose storage failed keeps answering (503s and its
/// reason) before it stops.
pub const GRACE: Duration = Duration::from_secs(2);

/// How often the watcher looks.
const EVERY: Duration = Duration::from_millis(200);

impl Node {
    /// Why this node's storage cannot be written, if it cannot.
    pub fn storage_failure(&self) -> Option<String> {
        if let Some(r) = self.storage_failed.get() {
            return Some(r.clone());
        }
        if let Some(f) = self.registry.storage().wal().failure() {
            return Some(format!("write-ahead log: {f}"));
        }
        // Only storage errors: a group that stopped for another reason (a
        // panic in apply) is that group's failure, not the node's storage.
        self.registry.all().into_iter().find_map(|g| {
            match &g.raft.metrics().borrow().running_state {
                Err(openraft::error::Fatal::StorageError(e)) => Some(format!("{}: {e}", g.name())),
                _ => None,
            }
        })
    }

    /// The write path's check: cheap (no scan of the groups).
    pub(super) fn check_storage(&self) -> Result<(), ApiError> {
        let failed = self
            .storage_failed
            .get()
            .cloned()
            .or_else(|| self.registry.storage().wal().failure());
        match failed {
            Some(r) => Err(ApiError::StorageUnavailable(r)),
            None => Ok(()),
        }
    }
}

/// Watches this node's storage; returns the reason once it failed and
/// [`GRACE`] has passed (the caller then stops the node), or `None` when
/// the node is stopping anyway.
pub async fn watch(
    node: Arc<Node>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<String> {
    loop {
        if let Some(reason) = node.storage_failure() {
            let _ = node.storage_failed.set(reason.clone());
            tracing::error!(
                reason,
                "storage failed: this node acknowledges no more writes and stops in {} s",
                GRACE.as_secs()
            );
            tokio::time::sleep(GRACE).await;
            return Some(reason);
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return None,
        }
    }
}
