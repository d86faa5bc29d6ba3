//! `POST /v1/datasets/{name}/search` and `POST /v1/datasets/{name}/pipeline`
//! (docs/api.md, "Text search and pipelines"): text search over a
//! dataset's embeddings, and captioning workflows over its items.

use super::datasets::ItemView;
use super::extract::{json_body, Path};
use super::openapi_errors::ErrorBody;
use super::AppState;
use crate::api::ApiError;
use crate::auth::Caller;
use crate::service::datasets::{Pipeline, TextSearch};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Instant;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/datasets/{name}/search", post(search))
        .route("/v1/datasets/{name}/pipeline", post(pipeline))
}

/// POST /v1/datasets/{name}/search.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// What to look for, in words (1..=16384 bytes).
    text: String,
    /// How many items (1..=100, default 10).
    k: Option<usize>,
    /// A vector filter (docs/api.md, "Vector collections") over the points'
    /// payload `{"dataset", "path", "caption"}`.
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// How long to wait for the query's embedding (1..=60000 ms, default 10000).
    timeout_ms: Option<u64>,
    /// The queue the embed worker claims from (default `pipeline`).
    queue: Option<String>,
    /// The embeddings collection (default: the dataset's name, `.` as `_`).
    collection: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchHitView {
    /// Cosine similarity of the query and the item's caption, higher is closer.
    score: f32,
    #[serde(flatten)]
    item: ItemView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchView {
    /// Best first.
    results: Vec<SearchHitView>,
    collection: String,
    /// How long the query's embedding took.
    embed_ms: u64,
    took_ms: u64,
}

/// Finds the dataset's items whose captions are closest to `text`.
#[utoipa::path(post, path = "/v1/datasets/{name}/search", operation_id = "dataset_search", tag = "datasets",
    params(("name" = String, Path, description = "The dataset's name.")),
    request_body = SearchBody,
    responses(
        (status = 200, description = "The closest items, best first.", body = SearchView),
        (status = 400, description = "`invalid_text`, `invalid_k`, `invalid_timeout`, `invalid_filter`, `invalid_name` (dataset or queue).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dataset, or it has no embeddings collection yet.", body = ErrorBody),
        (status = 409, description = "`conflict`: the collection's dimension is not the embed worker's (384).", body = ErrorBody),
        (status = 500, description = "`internal`: the embed worker answered something that is not a 384-dimensional vector.", body = ErrorBody),
    ))]
async fn search(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let b: SearchBody = json_body(body, 64 << 10).await?;
    let r = s
        .datasets
        .search(
            &name,
            TextSearch {
                text: b.text,
                k: b.k,
                filter: b.filter,
                timeout_ms: b.timeout_ms,
                queue: b.queue,
                collection: b.collection,
            },
            &caller,
        )
        .await?;
    Ok(Json(SearchView {
        results: r
            .hits
            .into_iter()
            .map(|h| SearchHitView {
                score: h.score,
                item: h.item.into(),
            })
            .collect(),
        collection: r.collection,
        embed_ms: r.embed_ms,
        took_ms: start.elapsed().as_millis() as u64,
    })
    .into_response())
}

/// POST /v1/datasets/{name}/pipeline.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    /// Some of `thumbnail`, `caption`, `embed`, in that order.
    steps: Vec<String>,
    /// The caption step's provider (the providers file's name for it).
    provider: Option<String>,
    /// The caption step's prompt (at most 4096 bytes).
    prompt: Option<String>,
    /// Only items lacking an output of the steps (default true).
    only_missing: Option<bool>,
    /// The workflows' queue (default `pipeline`, created when missing).
    queue: Option<String>,
    /// The embed step's collection (default: the dataset's name, `.` as
    /// `_`; created with dim 384, cosine, when missing).
    collection: Option<String>,
    /// Start after this item path (a previous answer's `next`).
    after: Option<String>,
    /// Most workflows to start (1..=1000, default 1000).
    limit: Option<usize>,
    /// The thumbnail step's output root under `--fs-root` (default
    /// `thumbnails/<dataset>`); an item's thumbnail goes to this joined
    /// with the item's directory.
    thumbnail_dir: Option<String>,
    /// The thumbnail step's longest side (1..=4096, default 256).
    max_side: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PipelineWorkflow {
    id: String,
    path: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PipelineView {
    /// One per item, in path order (see `GET /v1/workflows/{id}`).
    workflows: Vec<PipelineWorkflow>,
    started: u64,
    /// Items that already had every output.
    skipped: u64,
    queue: String,
    collection: Option<String>,
    /// Set when `limit` workflows were started: pass as `after` for the rest.
    next: Option<String>,
}

/// Starts one workflow per item (thumbnail → caption → embed).
#[utoipa::path(post, path = "/v1/datasets/{name}/pipeline", operation_id = "dataset_pipeline", tag = "datasets",
    params(("name" = String, Path, description = "The dataset's name.")),
    request_body = PipelineBody,
    responses(
        (status = 202, description = "The workflows started.", body = PipelineView),
        (status = 400, description = "`invalid_pipeline` (steps, limit, provider, prompt, collection), `invalid_workflow`, `invalid_name` (dataset or queue), or the collection's `invalid_name`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dataset, or the named queue does not exist.", body = ErrorBody),
        (status = 409, description = "`conflict`: the collection exists with another dimension than 384.", body = ErrorBody),
    ))]
async fn pipeline(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: PipelineBody = json_body(body, 64 << 10).await?;
    let r = s
        .datasets
        .pipeline(
            &name,
            Pipeline {
                steps: b.steps,
                provider: b.provider,
                prompt: b.prompt,
                only_missing: b.only_missing,
                queue: b.queue,
                collection: b.collection,
                after: b.after,
                limit: b.limit,
                thumbnail_dir: b.thumbnail_dir,
                max_side: b.max_side,
            },
            &caller,
        )
        .await?;
    let view = PipelineView {
        started: r.workflows.len() as u64,
        workflows: r
            .workflows
            .into_iter()
            .map(|(id, path)| PipelineWorkflow { id, path })
            .collect(),
        skipped: r.skipped,
        queue: r.queue,
        collection: r.collection,
        next: r.next,
    };
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}
