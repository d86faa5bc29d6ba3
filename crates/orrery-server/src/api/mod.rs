//! What both fronts share: the one error type and its mapping from every
//! domain's errors, and small helpers every service needs.

pub mod cursor;
pub mod error;
pub mod jobs_view;
pub mod limits;
pub mod workflow_view;

pub use error::ApiError;

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this node's clock. Only leaders'
/// stamps enter the log (the state machines never read a clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks `m`, recovering from poisoning: every critical section here leaves
/// its data consistent, so a panic elsewhere must not wedge the node.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
