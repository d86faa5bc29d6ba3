//! Request parts every REST handler reads the same way: the consistency of
//! a read, limits, and bodies with a size cap.

use crate::api::ApiError;
use axum::body::Body;
use serde::Deserialize;

/// `?consistency=linearizable|stale` on reads.
#[derive(Deserialize, Default)]
pub struct ReadParams {
    pub consistency: Option<String>,
}

impl ReadParams {
    pub fn linearizable(&self) -> Result<bool, ApiError> {
        linearizable(self.consistency.as_deref())
    }
}

/// Whether a read must go through the leader (the default) or may be
/// served from this node's replica.
pub fn linearizable(c: Option<&str>) -> Result<bool, ApiError> {
    match c {
        None | Some("linearizable") => Ok(true),
        Some("stale") => Ok(false),
        Some(other) => Err(ApiError::bad(
            "invalid_consistency",
            format!("consistency must be \"linearizable\" or \"stale\", got {other:?}"),
        )),
    }
}

/// The whole body, refused with 413 past `limit` bytes (`shown` is the
/// limit the message names: the user-facing one, when `limit` adds slack).
pub async fn read_body(body: Body, limit: usize, shown: usize) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "request body exceeds the limit of {} bytes",
                limit.max(shown)
            ))
        })
}
