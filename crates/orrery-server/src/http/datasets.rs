//! `/v1/datasets` (see docs/api.md, "Datasets"): create (and scan), list,
//! get, items with paging and filters, re-scan, attach outputs, delete.

use super::extract::{json_body, Path, Query};
use super::openapi_errors::ErrorBody;
use super::AppState;
use crate::api::ApiError;
use crate::service::datasets::NewDataset;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orrery_dataset::{Attach, DatasetDef, Item, ItemFilter, Outputs};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/datasets", post(create).get(list))
        .route("/v1/datasets/{name}", get(show).delete(delete))
        .route("/v1/datasets/{name}/items", get(items).patch(attach))
        .route("/v1/datasets/{name}/scan", post(scan))
}

/// POST /v1/datasets.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    name: String,
    /// A directory under the node's `--fs-root` (relative, or absolute
    /// inside it; `.` is the root itself). No `..`.
    path: String,
    /// Which files under `path` are items, e.g. `**/*.png`.
    glob: String,
    /// The queue its scan jobs go to (default `datasets`, created when
    /// missing).
    queue: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ScanView {
    generation: u64,
    /// idle, running, succeeded or failed.
    state: String,
    /// The job the scan runs (or ran last).
    job: Option<String>,
    started_ms: u64,
    finished_ms: Option<u64>,
    error: Option<String>,
    added: u64,
    updated: u64,
    removed: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DatasetView {
    name: String,
    path: String,
    glob: String,
    queue: String,
    items: u64,
    bytes: u64,
    created_ms: u64,
    updated_ms: u64,
    scan: ScanView,
}

impl From<DatasetDef> for DatasetView {
    fn from(d: DatasetDef) -> Self {
        DatasetView {
            name: d.name,
            path: d.path,
            glob: d.glob,
            queue: d.queue,
            items: d.items,
            bytes: d.bytes,
            created_ms: d.created_ms,
            updated_ms: d.updated_ms,
            scan: ScanView {
                generation: d.scan.generation,
                state: d.scan.state.as_str().into(),
                job: d.scan.job,
                started_ms: d.scan.started_ms,
                finished_ms: d.scan.finished_ms,
                error: d.scan.error,
                added: d.scan.added,
                updated: d.scan.updated,
                removed: d.scan.removed,
            },
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemView {
    /// Relative to the fs root.
    path: String,
    size: u64,
    /// Lower-case hex sha256 of the content.
    sha256: String,
    width: u32,
    height: u32,
    thumbnail: Option<String>,
    caption: Option<String>,
    embedding_id: Option<String>,
    added_ms: u64,
    updated_ms: u64,
}

impl From<Item> for ItemView {
    fn from(i: Item) -> Self {
        ItemView {
            path: i.meta.path,
            size: i.meta.size,
            sha256: i.meta.sha256,
            width: i.meta.width,
            height: i.meta.height,
            thumbnail: i.outputs.thumbnail,
            caption: i.outputs.caption,
            embedding_id: i.outputs.embedding_id,
            added_ms: i.added_ms,
            updated_ms: i.updated_ms,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ItemsView {
    items: Vec<ItemView>,
    /// Pass as `after` for the next page; `null` on the last.
    next: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DatasetList {
    datasets: Vec<DatasetView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ItemsParams {
    /// Items with paths after this one (a page's `next`).
    after: Option<String>,
    /// 1..=1000 (default 100).
    limit: Option<usize>,
    has_caption: Option<bool>,
    has_thumbnail: Option<bool>,
    has_embedding: Option<bool>,
    /// File extension without the dot, any case (`png`).
    ext: Option<String>,
    /// Only the item at this path (a page of one, or none).
    path: Option<String>,
}

/// PATCH /v1/datasets/{name}/items.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    items: Vec<AttachItem>,
}

/// Outputs of one item: a field given replaces that output (`""` clears
/// it), one left out keeps it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachItem {
    path: String,
    thumbnail: Option<String>,
    caption: Option<String>,
    embedding_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttachView {
    updated: u64,
    /// Paths that are no item of the dataset (nothing was set for them).
    missing: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedView {
    deleted: String,
    items: u64,
}

/// Creates a dataset and starts its first scan (a `dataset.scan` job).
#[utoipa::path(post, path = "/v1/datasets", operation_id = "dataset_create", tag = "datasets",
    request_body = DatasetBody,
    responses(
        (status = 201, description = "The dataset, its first scan running.", body = DatasetView),
        (status = 400, description = "`invalid_name`, `invalid_path` (absolute outside the fs root, `..`, missing, not a directory, a symlink leading out) or `invalid_glob`.", body = ErrorBody),
        (status = 404, description = "`not_found`: the named queue does not exist.", body = ErrorBody),
        (status = 409, description = "`conflict`: a dataset of that name exists.", body = ErrorBody),
    ))]
async fn create(State(s): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let b: DatasetBody = json_body(body, 64 << 10).await?;
    let d = s
        .datasets
        .create(NewDataset {
            name: b.name,
            path: b.path,
            glob: b.glob,
            queue: b.queue,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(DatasetView::from(d))).into_response())
}

#[utoipa::path(get, path = "/v1/datasets", operation_id = "dataset_list", tag = "datasets",
    responses((status = 200, description = "Every dataset, by name.", body = DatasetList)))]
async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    let datasets = s
        .datasets
        .list()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(DatasetList { datasets }).into_response())
}

#[utoipa::path(get, path = "/v1/datasets/{name}", operation_id = "dataset_get", tag = "datasets",
    params(("name" = String, Path, description = "The dataset's name.")),
    responses(
        (status = 200, description = "The dataset and its last scan.", body = DatasetView),
        (status = 400, description = "`invalid_name`: a name that may not be a dataset's (letters, digits, `.`, `_` and `-` only).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dataset.", body = ErrorBody),
    ))]
async fn show(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(DatasetView::from(s.datasets.get(&name).await?)).into_response())
}

#[utoipa::path(get, path = "/v1/datasets/{name}/items", operation_id = "dataset_items", tag = "datasets",
    params(("name" = String, Path, description = "The dataset's name."), ItemsParams),
    responses(
        (status = 200, description = "A page of items in path order.", body = ItemsView),
        (status = 400, description = "`invalid_query`: a bad limit or filter; `invalid_name`: a name that may not be a dataset's.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dataset.", body = ErrorBody),
    ))]
async fn items(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ItemsParams>,
) -> Result<Response, ApiError> {
    if let Some(path) = q.path {
        if q.after.is_some() || q.limit.is_some() {
            return Err(ApiError::bad(
                "invalid_query",
                "path names one item: after and limit do not go with it",
            ));
        }
        let filter = ItemFilter {
            has_caption: q.has_caption,
            has_thumbnail: q.has_thumbnail,
            has_embedding: q.has_embedding,
            ext: q.ext.map(|e| e.trim_start_matches('.').to_string()),
        };
        orrery_dataset::check_name(&name).map_err(|m| ApiError::bad("invalid_name", m))?;
        s.datasets.get(&name).await?;
        let items = s
            .datasets
            .item(&name, &path)
            .await?
            .filter(|i| filter.matches(i))
            .map(ItemView::from)
            .into_iter()
            .collect();
        return Ok(Json(ItemsView { items, next: None }).into_response());
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=orrery_dataset::MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad(
            "invalid_query",
            format!("limit must be in 1..={}", orrery_dataset::MAX_PAGE),
        ));
    }
    let filter = ItemFilter {
        has_caption: q.has_caption,
        has_thumbnail: q.has_thumbnail,
        has_embedding: q.has_embedding,
        ext: q.ext.map(|e| e.trim_start_matches('.').to_string()),
    };
    let page = s.datasets.items(&name, q.after, limit, filter).await?;
    Ok(Json(ItemsView {
        items: page.items.into_iter().map(Into::into).collect(),
        next: page.next,
    })
    .into_response())
}

/// Re-scans: adds new files, removes vanished ones, updates changed ones
/// (which lose their outputs). A scan still running is superseded.
#[utoipa::path(post, path = "/v1/datasets/{name}/scan", operation_id = "dataset_scan", tag = "datasets",
    params(("name" = String, Path, description = "The dataset's name.")),
    responses(
        (status = 202, description = "The dataset, its new scan running.", body = DatasetView),
        (status = 400, description = "`invalid_name`: a name that may not be a dataset's (letters, digits, `.`, `_` and `-` only).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dataset.", body = ErrorBody),
    ))]
async fn scan(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    orrery_dataset::check_name(&name).map_err(|m| ApiError::bad("invalid_name", m))?;
    let d = s.datasets.start_scan(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(DatasetView::from(d))).into_response())
}

/// Attaches outputs (thumbnail path, caption, embedding id) to items by path.
#[utoipa::path(patch, path = "/v1/datasets/{name}/items", operation_id = "dataset_attach", tag = "datasets",
    params(("name" = String, Path, description = "The dataset's name.")),
    request_body = AttachBody,
    responses(
        (status = 200, description = "How many items changed, and the paths that are no item.", body = AttachView),
        (status = 400, description = "`invalid_items` (none, or over 1000), `invalid_dataset` (an output too long, a thumbnail path with `..`) or `invalid_name`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dataset.", body = ErrorBody),
    ))]
async fn attach(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: AttachBody = json_body(body, 8 << 20).await?;
    let items = b
        .items
        .into_iter()
        .map(|i| Attach {
            path: i.path,
            outputs: Outputs {
                thumbnail: i.thumbnail,
                caption: i.caption,
                embedding_id: i.embedding_id,
            },
        })
        .collect();
    let (updated, missing) = s.datasets.attach(&name, items).await?;
    Ok(Json(AttachView { updated, missing }).into_response())
}

/// Deletes the dataset and its catalog (never the files).
#[utoipa::path(delete, path = "/v1/datasets/{name}", operation_id = "dataset_delete", tag = "datasets",
    params(("name" = String, Path, description = "The dataset's name.")),
    responses(
        (status = 200, description = "Deleted, with how many items it had.", body = DeletedView),
        (status = 400, description = "`invalid_name`: a name that may not be a dataset's (letters, digits, `.`, `_` and `-` only).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such dataset.", body = ErrorBody),
    ))]
async fn delete(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let items = s.datasets.delete(&name).await?;
    Ok(Json(DeletedView {
        deleted: name,
        items,
    })
    .into_response())
}
