//! `/v1/workflows` (see docs/api.md, "Workflows"): start, read with
//! per-step state, cancel.

use super::extract::{json_body, Path};
use super::openapi_errors::ErrorBody;
use super::AppState;
use crate::api::workflow_view::WorkflowView;
use crate::api::ApiError;
use crate::auth::Caller;
use crate::service::jobs::{StepArgs, WorkflowArgs};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orrery_queue::Resources;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", post(start))
        .route("/v1/workflows/{id}", get(show))
        .route("/v1/workflows/{id}/cancel", post(cancel))
}

/// A field where `null` means its default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// POST /v1/workflows.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    queue: String,
    steps: Vec<StepBody>,
    /// Passed to every step as `input`.
    #[serde(default)]
    input: Value,
}

/// One step: a job kind with params, run once its dependencies succeeded.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    #[schema(min_length = 1, max_length = 128)]
    kind: String,
    #[serde(default = "empty_object")]
    params: Value,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    depends_on: Vec<String>,
    /// A step in `depends_on` whose result is a JSON array: one job per item.
    for_each: Option<String>,
    /// `fail_workflow` (default) or `continue`.
    on_failure: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    priority: i32,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    resources: StepResources,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StepResources {
    #[serde(default)]
    gpus: u32,
    #[serde(default)]
    gpu_memory_mb: u64,
    #[serde(default)]
    cpus: u32,
    #[serde(default)]
    shared_gpu: bool,
}

/// Starts a workflow: its steps without dependencies become claimable jobs
/// at once, the others as their dependencies succeed.
#[utoipa::path(post, path = "/v1/workflows", operation_id = "workflow_start", tag = "workflows",
    request_body = WorkflowBody,
    responses(
        (status = 201, description = "The workflow, started.", body = WorkflowView),
        (status = 400, description = "`invalid_workflow`: a cycle, an unknown dependency, a bad `for_each` or `on_failure` (the message names the step).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such queue.", body = ErrorBody),
    ))]
async fn start(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: WorkflowBody = json_body(body, 4 << 20).await?;
    let steps = b
        .steps
        .into_iter()
        .map(|st| StepArgs {
            name: st.name,
            kind: st.kind,
            params: st.params,
            depends_on: st.depends_on,
            for_each: st.for_each,
            on_failure: st.on_failure,
            priority: st.priority,
            resources: Resources {
                gpus: st.resources.gpus,
                gpu_memory_mb: st.resources.gpu_memory_mb,
                cpus: st.resources.cpus,
                shared_gpu: st.resources.shared_gpu,
            },
        })
        .collect();
    let w = s
        .jobs
        .start_workflow(WorkflowArgs {
            queue: b.queue,
            steps,
            input: b.input,
            caller: Some(caller),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(WorkflowView::new(&w))).into_response())
}

#[utoipa::path(get, path = "/v1/workflows/{id}", operation_id = "workflow_get", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id.")),
    responses(
        (status = 200, description = "The workflow with each step's state, jobs and result.", body = WorkflowView),
        (status = 404, description = "`not_found`: no such workflow.", body = ErrorBody),
    ))]
async fn show(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let w = s.jobs.get_workflow(&id).await?;
    caller.check_queue(&w.workflow.spec.queue)?;
    Ok(Json(WorkflowView::new(&w)).into_response())
}

/// Cancels a workflow: no further step is created, its queued jobs are
/// cancelled and its running ones asked to stop (as a job cancel does).
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", operation_id = "workflow_cancel", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id.")),
    responses(
        (status = 200, description = "The workflow, cancelled (again: unchanged).", body = WorkflowView),
        (status = 404, description = "`not_found`: no such workflow.", body = ErrorBody),
        (status = 409, description = "`conflict`: the workflow already succeeded or failed.", body = ErrorBody),
    ))]
async fn cancel(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.jobs.authorize_workflow(&caller, &id, true).await?;
    let w = s.jobs.cancel_workflow(&id).await?;
    Ok(Json(WorkflowView::new(&w)).into_response())
}
