//! `/v1/jobs` and claims (see docs/api.md, "Job queues"); queues are in
//! `jobs_queues`, logs and events in `jobs_sse`.

use super::extract::json_body;
use super::extract::{Path, Query};
use super::jobs_body::{
    offer, BatchBody, ClaimBody, CompleteBatchBody, CompleteBody, FailBody, HeartbeatBody, JobBody,
};
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::AppState;
use crate::api::jobs_view::{JobView, RunView, WaitingJobView};
use crate::api::limits::{BULK_BODY_BYTES, DEFAULT_JOB_LIMIT, MAX_WAIT_S};
use crate::api::ApiError;
use crate::auth::Caller;
use crate::service::jobs::{all_failed, ClaimArgs, CompleteArgs, JobAction, SubmitArgs};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orrery_queue::{Job, JobState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/queues/{q}/claim", post(claim))
        .route("/v1/jobs", get(list_jobs).post(submit))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/complete", post(complete_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/runs", get(runs))
        .route("/v1/jobs/{id}/heartbeat", post(heartbeat))
        .route("/v1/jobs/{id}/complete", post(complete))
        .route("/v1/jobs/{id}/fail", post(fail))
        .merge(super::jobs_queues::routes())
        .merge(super::jobs_sse::routes())
}

// ---------------------------------------------------------------------
// Submits
// ---------------------------------------------------------------------

/// Submits a job (idempotent with `dedupe_key`).
#[utoipa::path(post, path = "/v1/jobs", operation_id = "job_submit", tag = "jobs",
    request_body = JobBody,
    responses(
        (status = 201, description = "Created.", body = JobView),
        (status = 200, description = "A job with this `dedupe_key` exists: that job.", body = JobView),
        (status = 404, description = "`not_found`: no such queue.", body = ErrorBody),
    ))]
async fn submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: JobBody = json_body(body, 1 << 20).await?;
    let mut args: SubmitArgs = b.into();
    args.caller = Some(caller);
    let (job, created) = s.jobs.submit(args).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(JobView::submitted(&job, created))).into_response())
}

/// One item of a bulk answer: what succeeded, or `{"error": {...}}`
/// (with `id` for completions).
#[derive(Serialize)]
#[serde(untagged)]
enum Item<T> {
    Ok(T),
    Err {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        error: Value,
    },
}

impl<T> Item<T> {
    fn err(id: Option<&str>, e: &ApiError) -> Self {
        Item::Err {
            id: id.map(str::to_owned),
            error: e.detail(),
        }
    }
}

#[derive(Serialize)]
struct Submitted<'a> {
    jobs: Vec<Item<JobView<'a>>>,
    created: usize,
    existing: usize,
    failed: usize,
}

#[utoipa::path(post, path = "/v1/jobs/batch", operation_id = "job_submit_batch", tag = "jobs",
    request_body = BatchBody,
    responses(
        (status = 200, description = "One entry per job, in order.", body = S::Submitted),
        (status = 404, description = "`not_found`: every job named an unknown queue.", body = ErrorBody),
    ))]
/// POST /v1/jobs/batch {"jobs": [job, ...]}: 200 with one entry per job,
/// in order: the job (with `created`) or `{"error": {...}}`.
async fn submit_batch(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: BatchBody = json_body(body, BULK_BODY_BYTES).await?;
    let items: Vec<SubmitArgs> = b
        .jobs
        .into_iter()
        .map(|j| SubmitArgs {
            caller: Some(caller.clone()),
            ..j.into()
        })
        .collect();
    let results = s.jobs.submit_many(items).await?;
    if let Some(e) = all_failed(&results) {
        return Err(e);
    }
    let (mut created, mut existing, mut failed) = (0, 0, 0);
    let jobs = results
        .iter()
        .map(|r| match r {
            Ok((job, c)) => {
                if *c {
                    created += 1;
                } else {
                    existing += 1;
                }
                Item::Ok(JobView::submitted(job, *c))
            }
            Err(e) => {
                failed += 1;
                Item::err(None, e)
            }
        })
        .collect();
    Ok(Json(Submitted {
        jobs,
        created,
        existing,
        failed,
    })
    .into_response())
}

// ---------------------------------------------------------------------
// Completions and claims
// ---------------------------------------------------------------------

#[derive(Serialize)]
struct Completed<'a> {
    id: &'a str,
    state: &'static str,
}

/// `{"results": [...], "completed": n, "failed": m}`: one entry per
/// completion, in order, `{"id", "state"}` or `{"id", "error": {...}}`.
#[derive(Serialize)]
struct Completions<'a> {
    results: Vec<Item<Completed<'a>>>,
    completed: usize,
    failed: usize,
}

impl<'a> Completions<'a> {
    fn new(results: &[Result<Job, ApiError>], ids: &'a [String]) -> Self {
        let (mut completed, mut failed) = (0, 0);
        let results = results
            .iter()
            .zip(ids)
            .map(|(r, id)| match r {
                Ok(job) => {
                    completed += 1;
                    Item::Ok(Completed {
                        id,
                        state: job.state.as_str(),
                    })
                }
                Err(e) => {
                    failed += 1;
                    Item::err(Some(id), e)
                }
            })
            .collect();
        Completions {
            results,
            completed,
            failed,
        }
    }
}

#[utoipa::path(post, path = "/v1/jobs/complete", operation_id = "job_complete_batch", tag = "jobs",
    request_body = CompleteBatchBody,
    responses(
        (status = 200, description = "One entry per completion, in order.", body = S::Completions),
        (status = 404, description = "`not_found`: an unknown job.", body = ErrorBody),
        (status = 409, description = "`conflict`: every completion was refused (stale lease tokens, finished jobs).", body = ErrorBody),
    ))]
/// POST /v1/jobs/complete {"completions": [{id, token, result?, run?}, ...]}:
/// 200 with one entry per completion, in order: `{"id", "state"}` or
/// `{"id", "error": {...}}` (e.g. 409 conflict for a stale token).
async fn complete_batch(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: CompleteBatchBody = json_body(body, BULK_BODY_BYTES).await?;
    let items: Vec<CompleteArgs> = b.completions.into_iter().map(Into::into).collect();
    let ids: Vec<String> = items.iter().map(|c| c.id.clone()).collect();
    s.jobs
        .authorize_jobs(&caller, ids.iter().map(String::as_str))
        .await?;
    let results = s.jobs.complete_many(items).await?;
    if let Some(e) = all_failed(&results) {
        return Err(e);
    }
    Ok(Json(Completions::new(&results, &ids)).into_response())
}

#[derive(Serialize)]
struct ClaimedJobs<'a> {
    jobs: Vec<JobView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completions: Option<Completions<'a>>,
}

#[utoipa::path(post, path = "/v1/queues/{q}/claim", operation_id = "queue_claim", tag = "jobs",
    params(("q" = String, Path, description = "The queue's name.")), request_body = ClaimBody,
    responses(
        (status = 200, description = "The job with its lease `token`; with `max` or `complete`: `{\"jobs\": [...]}`.",
            body = S::ClaimAnswer),
        (status = 204, description = "Nothing to claim."),
        (status = 404, description = "`not_found`: no such queue.", body = ErrorBody),
    ))]
/// POST /v1/queues/{q}/claim {worker_id, kinds?, lease_s?, wait_s?, max?,
/// free_gpus?, shared_gpus?, free_cpus?, complete?}: the job with its lease
/// `token`, or 204; with `max`, `{"jobs": [...]}`. With `complete` (the jobs
/// the worker finished, as in `POST /v1/jobs/complete`), those are completed
/// first and the answer is always 200 `{"jobs": [...], "completions": {...}}`.
async fn claim(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(q): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.check_queue(&q)?;
    // Room for the completions a claim may carry.
    let b: ClaimBody = json_body(body, BULK_BODY_BYTES).await?;
    let wait_s = b.wait_s.unwrap_or(0.0);
    if !(0.0..=MAX_WAIT_S as f64).contains(&wait_s) {
        return Err(ApiError::bad(
            "invalid_field",
            format!("field \"wait_s\" must be 0..={MAX_WAIT_S} seconds"),
        ));
    }
    let batch = b.max.is_some();
    let args = ClaimArgs {
        worker_id: b.worker_id,
        kinds: b.kinds,
        lease_s: b.lease_s,
        wait: Duration::from_secs_f64(wait_s),
        max: b.max.flatten().unwrap_or(1),
        free_gpus: offer(b.free_gpus),
        shared_gpus: offer(b.shared_gpus),
        free_cpus: b.free_cpus,
        node: 0,
    };
    let settles = b.complete.is_some();
    let done: Vec<CompleteArgs> = b
        .complete
        .unwrap_or_default()
        .into_iter()
        .map(Into::into)
        .collect();
    let ids: Vec<String> = done.iter().map(|c| c.id.clone()).collect();
    let got = s.jobs.claim(Some(&q), args, done).await?;
    let jobs = got.jobs;
    if settles {
        // The completions' outcomes must reach the worker, so there is
        // always a body, even when nothing was claimed.
        return Ok(Json(ClaimedJobs {
            jobs: jobs.iter().map(JobView::claimed).collect(),
            completions: Some(Completions::new(&got.completed, &ids)),
        })
        .into_response());
    }
    let Some(first) = jobs.first() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if batch {
        Ok(Json(ClaimedJobs {
            jobs: jobs.iter().map(JobView::claimed).collect(),
            completions: None,
        })
        .into_response())
    } else {
        Ok(Json(JobView::claimed(first)).into_response())
    }
}

#[utoipa::path(post, path = "/v1/jobs/{id}/heartbeat", operation_id = "job_heartbeat", tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")), request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The lease, extended.", body = S::Heartbeat),
        (status = 404, description = "`not_found`: no such job.", body = ErrorBody),
        (status = 409, description = "`conflict`: a stale lease token or a finished job.", body = ErrorBody),
    ))]
async fn heartbeat(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: HeartbeatBody = json_body(body, 4096).await?;
    s.jobs.authorize_job(&caller, &id, JobAction::Use).await?;
    let (cancelled, expires) = s.jobs.heartbeat(&id, b.token).await?;
    Ok(Json(
        json!({"cancelled": cancelled, "lease_expires_ms": expires}),
    ))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/complete", operation_id = "job_complete", tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")), request_body = CompleteBody,
    responses(
        (status = 200, description = "The job, succeeded.", body = JobView),
        (status = 404, description = "`not_found`: no such job.", body = ErrorBody),
        (status = 409, description = "`conflict`: a stale lease token or a finished job.", body = ErrorBody),
    ))]
async fn complete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: CompleteBody = json_body(body, 2 * orrery_queue::MAX_RESULT_BYTES).await?;
    s.jobs.authorize_job(&caller, &id, JobAction::Use).await?;
    let job = s
        .jobs
        .complete(&id, b.token, &b.result, b.run.into())
        .await?;
    Ok(Json(JobView::new(&job)).into_response())
}

#[utoipa::path(post, path = "/v1/jobs/{id}/fail", operation_id = "job_fail", tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")), request_body = FailBody,
    responses(
        (status = 200, description = "The job, queued for a retry or failed.", body = JobView),
        (status = 404, description = "`not_found`: no such job.", body = ErrorBody),
        (status = 409, description = "`conflict`: a stale lease token or a finished job.", body = ErrorBody),
    ))]
async fn fail(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: FailBody = json_body(body, 64 * 1024).await?;
    s.jobs.authorize_job(&caller, &id, JobAction::Use).await?;
    let error = b.error.unwrap_or_else(|| "failed".into());
    let retry = b.retry.unwrap_or(true);
    let job = s
        .jobs
        .fail(&id, b.token, error, retry, b.run.into())
        .await?;
    Ok(Json(JobView::new(&job)).into_response())
}

// ---------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only this queue's jobs (required for tokens limited to queues).
    queue: Option<String>,
    /// queued, running, succeeded, failed, cancelled or dead.
    #[param(value_type = Option<String>, pattern = "^(queued|running|succeeded|failed|cancelled|dead)$")]
    state: Option<String>,
    /// Jobs per page (default 100, at most 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs", operation_id = "job_list", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs, in id order.", body = S::JobList),
        (status = 400, description = "`invalid_limit`, `invalid_state`, `invalid_cursor`.", body = ErrorBody),
    ))]
async fn list_jobs(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    // A worker confined to some queues lists one of them at a time.
    if caller.queues.is_some() {
        match &p.queue {
            Some(q) => caller.check_queue(q)?,
            None => {
                return Err(ApiError::Forbidden(
                    "this token is limited to some queues: list with ?queue=".into(),
                ))
            }
        }
    }
    let limit = match &p.limit {
        None => DEFAULT_JOB_LIMIT,
        Some(l) => l.parse().map_err(|_| {
            ApiError::bad(
                "invalid_limit",
                format!("limit must be a positive integer, got {l:?}"),
            )
        })?,
    };
    let state = match &p.state {
        None => None,
        Some(st) => Some(JobState::parse(st).ok_or_else(|| {
            ApiError::bad(
                "invalid_state",
                format!("state must be one of queued, running, succeeded, failed, cancelled, dead; got {st:?}"),
            )
        })?),
    };
    let after = p.cursor.filter(|c| !c.is_empty());
    let jobs = s.jobs.list_jobs(p.queue, state, after, limit).await?;
    let next = if jobs.len() == limit {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    #[derive(Serialize)]
    struct Jobs<'a> {
        jobs: Vec<JobView<'a>>,
        next_cursor: Option<orrery_queue::JobId>,
    }
    let jobs = jobs.iter().map(JobView::new).collect();
    Ok(Json(Jobs {
        jobs,
        next_cursor: next,
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "job_get", tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job, and why it waits if it does.", body = WaitingJobView),
        (status = 404, description = "`not_found`: no such job.", body = ErrorBody),
    ))]
async fn get_job(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = s.jobs.get_job(&id).await?;
    caller.check_queue(&job.queue)?;
    Ok(Json(WaitingJobView {
        waiting: s.jobs.waiting_reason(&job),
        job: JobView::new(&job),
    })
    .into_response())
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "job_cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job, cancelled (or asked to stop if running).", body = JobView),
        (status = 404, description = "`not_found`: no such job.", body = ErrorBody),
        (status = 409, description = "`conflict`: the job is finished.", body = ErrorBody),
    ))]
async fn cancel(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.jobs
        .authorize_job(&caller, &id, JobAction::Cancel)
        .await?;
    let job = s.jobs.cancel(&id).await?;
    Ok(Json(JobView::new(&job)).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}/runs", operation_id = "job_runs", tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job's attempts.", body = S::JobRuns),
        (status = 404, description = "`not_found`: no such job.", body = ErrorBody),
    ))]
async fn runs(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Runs<'a> {
        job_id: &'a str,
        runs: Vec<RunView<'a>>,
    }
    let job = s.jobs.get_job(&id).await?;
    caller.check_queue(&job.queue)?;
    let runs = job.runs.iter().map(RunView::new).collect();
    Ok(Json(Runs { job_id: &id, runs }).into_response())
}
