//! `POST /v1/backup`: a backup of the whole cluster, streamed as the
//! backup file (docs/operations.md, "Backup and restore").

use super::AppState;
use crate::api::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/backup", post(create))
}

/// Takes a backup of every group (placement and every shard) from the
/// live cluster, each on its leader at one point of its log, and streams
/// it. Checksummed: a body cut short (the request failed midway) does not
/// verify, so keep the file only if it does (`orreryctl backup create`
/// checks it before it renames the file into place).
#[utoipa::path(post, path = "/v1/backup", operation_id = "backup_create", tag = "cluster",
    responses((status = 200, description = "The backup file (format in docs/operations.md).",
        content_type = "application/octet-stream", body = Vec<u8>)))]
async fn create(State(s): State<AppState>) -> Result<Response, ApiError> {
    let stream = s.backup.create().await?;
    // An error after the first byte can only end the body early.
    let body =
        Body::from_stream(stream.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"orrery.backup\"",
            ),
        ],
        body,
    )
        .into_response())
}
