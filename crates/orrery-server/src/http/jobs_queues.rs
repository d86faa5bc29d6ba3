//! `/v1/queues` (create, list, show with counts, delete) and `/v1/gpus`.

use super::extract::json_body;
use super::extract::Path;
use super::jobs_body::QueueBody;
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::AppState;
use crate::api::jobs_view::{GpusView, QueueInfoView, QueueView};
use crate::api::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/queues", get(list_queues).post(create_queue))
        .route("/v1/queues/{q}", get(get_queue).delete(delete_queue))
        .route("/v1/gpus", get(gpus))
}

#[utoipa::path(post, path = "/v1/queues", operation_id = "queue_create", tag = "jobs",
    request_body = QueueBody,
    responses(
        (status = 201, description = "The queue.", body = QueueView),
        (status = 409, description = "`conflict`: the queue exists.", body = ErrorBody),
    ))]
async fn create_queue(State(s): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let b: QueueBody = json_body(body, 64 * 1024).await?;
    let q = s.jobs.create_queue(b.into()).await?;
    Ok((StatusCode::CREATED, Json(QueueView::new(&q))).into_response())
}

#[utoipa::path(get, path = "/v1/queues", operation_id = "queue_list", tag = "jobs",
    responses((status = 200, description = "Every queue.", body = S::QueueList)))]
async fn list_queues(State(s): State<AppState>) -> Result<Response, ApiError> {
    let qs = s.jobs.list_queues().await?;
    #[derive(Serialize)]
    struct Queues<'a> {
        queues: Vec<QueueView<'a>>,
    }
    let queues = qs.iter().map(QueueView::new).collect();
    Ok(Json(Queues { queues }).into_response())
}

#[utoipa::path(get, path = "/v1/queues/{q}", operation_id = "queue_get", tag = "jobs",
    params(("q" = String, Path, description = "The queue's name.")),
    responses(
        (status = 200, description = "The queue with its job counts.", body = QueueInfoView),
        (status = 404, description = "`not_found`: no such queue.", body = ErrorBody),
    ))]
async fn get_queue(State(s): State<AppState>, Path(q): Path<String>) -> Result<Response, ApiError> {
    let i = s.jobs.queue_info(&q).await?;
    Ok(Json(QueueInfoView::new(
        &i.spec,
        &i.counts,
        i.oldest_queued_age_ms,
    ))
    .into_response())
}

#[utoipa::path(delete, path = "/v1/queues/{q}", operation_id = "queue_delete", tag = "jobs",
    params(("q" = String, Path, description = "The queue's name.")),
    responses(
        (status = 200, description = "Deleted, with its finished jobs.", body = S::QueueDeleted),
        (status = 404, description = "`not_found`: no such queue.", body = ErrorBody),
        (status = 409, description = "`conflict`: the queue still has queued or running jobs.", body = ErrorBody),
    ))]
async fn delete_queue(
    State(s): State<AppState>,
    Path(q): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.jobs.delete_queue(&q).await?;
    Ok(Json(json!({"deleted": true, "name": q})))
}

#[utoipa::path(get, path = "/v1/gpus", operation_id = "gpus", tag = "jobs",
    responses((status = 200, description = "Every node's GPUs.", body = GpusView)))]
async fn gpus(State(s): State<AppState>) -> Result<Response, ApiError> {
    let reports = s.jobs.cluster_gpus().await?;
    Ok(Json(GpusView::new(&reports)).into_response())
}
