//! REST endpoints of job queues (see docs/api.md, "Job queues").

use crate::api::error::ApiError;
use crate::jobs_api::{
    all_failed, at, cursor_string, event_json, job_json, parse_cursor, run_json, ClaimArgs,
    CompleteArgs, JobView, QueueArgs, SubmitArgs, DEFAULT_JOB_LIMIT, MAX_WAIT_S,
};
use crate::node::Node;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use orrery_queue::{JobState, Resources, RunFacts};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

type AppState = crate::http::AppState;

pub fn routes() -> Router<crate::http::AppState> {
    Router::new()
        .route("/v1/queues", get(list_queues).post(create_queue))
        .route("/v1/queues/{q}", get(get_queue).delete(delete_queue))
        .route("/v1/queues/{q}/claim", post(claim))
        .route("/v1/jobs", get(list_jobs).post(submit))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/complete", post(complete_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/runs", get(runs))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/heartbeat", post(heartbeat))
        .route("/v1/jobs/{id}/complete", post(complete))
        .route("/v1/jobs/{id}/fail", post(fail))
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(events_stream))
        .route("/v1/gpus", get(gpus))
}

// ---------------------------------------------------------------------
// Body helpers: every error names the field
// ---------------------------------------------------------------------

async fn json_object(body: Body, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(format!("request body exceeds {limit} bytes")))?;
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("invalid_body", "body must be a JSON object")),
        Err(e) => Err(ApiError::bad(
            "invalid_json",
            format!("body is not valid JSON: {e}"),
        )),
    }
}

fn invalid(field: &str, what: &str) -> ApiError {
    ApiError::bad("invalid_field", format!("field {field:?} must be {what}"))
}

fn opt_str(o: &Map<String, Value>, f: &str) -> Result<Option<String>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(f, "a string")),
    }
}

fn req_str(o: &Map<String, Value>, f: &str) -> Result<String, ApiError> {
    opt_str(o, f)?.ok_or_else(|| ApiError::bad("missing_field", format!("field {f:?} is required")))
}

fn opt_u64(o: &Map<String, Value>, f: &str) -> Result<Option<u64>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(f, "a non-negative integer")),
    }
}

fn opt_u32(o: &Map<String, Value>, f: &str) -> Result<Option<u32>, ApiError> {
    opt_u64(o, f)?
        .map(|v| u32::try_from(v).map_err(|_| invalid(f, "at most 4294967295")))
        .transpose()
}

fn opt_f64(o: &Map<String, Value>, f: &str) -> Result<Option<f64>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| invalid(f, "a number")),
    }
}

fn opt_bool(o: &Map<String, Value>, f: &str) -> Result<Option<bool>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(f, "true or false")),
    }
}

fn str_list(o: &Map<String, Value>, f: &str) -> Result<Vec<String>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| invalid(f, "a list of strings"))
            })
            .collect(),
        Some(_) => Err(invalid(f, "a list of strings")),
    }
}

fn object<'a>(
    o: &'a Map<String, Value>,
    f: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match o.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(f, "an object")),
    }
}

fn check_fields(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(
            "unknown_field",
            format!(
                "unknown field {k:?} in {what}; allowed: {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn token(o: &Map<String, Value>) -> Result<u32, ApiError> {
    opt_u32(o, "token")?
        .ok_or_else(|| ApiError::bad("missing_field", "field \"token\" is required"))
}

// ---------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------

pub(crate) fn queue_json(q: &orrery_queue::QueueSpec) -> Value {
    json!({
        "name": q.name,
        "partitions": q.partitions,
        "lease_s": q.lease_s,
        "max_attempts": q.max_attempts,
        "backoff": {"initial_ms": q.backoff.initial_ms,
                    "multiplier": q.backoff.multiplier_milli as f64 / 1000.0,
                    "max_ms": q.backoff.max_ms},
        "concurrency_limit": q.concurrency_limit,
        "created_ms": q.created_ms,
    })
}

async fn create_queue(State(node): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let o = json_object(body, 64 * 1024).await?;
    check_fields(
        &o,
        &[
            "name",
            "partitions",
            "lease_s",
            "max_attempts",
            "backoff",
            "concurrency_limit",
        ],
        "a queue",
    )?;
    let mut a = QueueArgs {
        name: req_str(&o, "name")?,
        partitions: opt_u32(&o, "partitions")?,
        lease_s: opt_u32(&o, "lease_s")?,
        max_attempts: opt_u32(&o, "max_attempts")?,
        concurrency_limit: opt_u32(&o, "concurrency_limit")?,
        ..Default::default()
    };
    if let Some(b) = object(&o, "backoff")? {
        check_fields(b, &["initial_ms", "multiplier", "max_ms"], "backoff")?;
        a.backoff_initial_ms = opt_u64(b, "initial_ms")?;
        a.backoff_multiplier = opt_f64(b, "multiplier")?;
        a.backoff_max_ms = opt_u64(b, "max_ms")?;
    }
    let q = node.create_queue(a).await?;
    Ok((StatusCode::CREATED, Json(queue_json(&q))).into_response())
}

async fn list_queues(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let qs = node.list_queues().await?;
    Ok(Json(
        json!({"queues": qs.iter().map(queue_json).collect::<Vec<_>>()}),
    ))
}

async fn get_queue(
    State(node): State<AppState>,
    Path(q): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(queue_info_json(&node, &q).await?))
}

/// A queue with its counts per state and the age of its oldest queued job.
pub(crate) async fn queue_info_json(node: &Node, q: &str) -> Result<Value, ApiError> {
    let spec = node.queue_spec_fresh(q).await?;
    let (counts, oldest) = node.queue_counts(&spec).await?;
    let mut v = queue_json(&spec);
    let counts: Map<String, Value> = counts
        .iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    v["counts"] = Value::Object(counts);
    v["oldest_queued_age_ms"] = json!(oldest.map(|o| crate::jobs_api::now_ms().saturating_sub(o)));
    Ok(v)
}

async fn delete_queue(
    State(node): State<AppState>,
    Path(q): Path<String>,
) -> Result<Json<Value>, ApiError> {
    node.delete_queue(&q).await?;
    Ok(Json(json!({"deleted": true, "name": q})))
}

// ---------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------

fn resources(o: &Map<String, Value>) -> Result<Resources, ApiError> {
    let Some(r) = object(o, "resources")? else {
        return Ok(Resources::default());
    };
    check_fields(
        r,
        &["gpus", "gpu_memory_mb", "cpus", "shared_gpu"],
        "resources",
    )?;
    Ok(Resources {
        gpus: opt_u32(r, "gpus")?.unwrap_or(0),
        gpu_memory_mb: opt_u64(r, "gpu_memory_mb")?.unwrap_or(0),
        cpus: opt_u32(r, "cpus")?.unwrap_or(0),
        shared_gpu: opt_bool(r, "shared_gpu")?.unwrap_or(false),
    })
}

/// A job submission from its JSON object (POST /v1/jobs, or one item of
/// POST /v1/jobs/batch).
fn submit_args(o: &Map<String, Value>) -> Result<SubmitArgs, ApiError> {
    check_fields(
        o,
        &[
            "queue",
            "kind",
            "params",
            "priority",
            "run_at",
            "run_at_ms",
            "delay_ms",
            "resources",
            "dedupe_key",
            "submitted_by",
        ],
        "a job",
    )?;
    let priority = match o.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| invalid("priority", "an integer (32-bit)"))?,
    };
    let a = SubmitArgs {
        queue: req_str(o, "queue")?,
        kind: req_str(o, "kind")?,
        params: o.get("params").cloned().unwrap_or_else(|| json!({})),
        priority,
        run_at_ms: match opt_u64(o, "run_at_ms")? {
            Some(t) => Some(t),
            None => opt_u64(o, "run_at")?,
        },
        delay_ms: opt_u64(o, "delay_ms")?,
        resources: resources(o)?,
        dedupe_key: opt_str(o, "dedupe_key")?,
        submitted_by: opt_str(o, "submitted_by")?,
    };
    Ok(a)
}

async fn submit(State(node): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let o = json_object(body, 1 << 20).await?;
    let (job, created) = node.submit_job(submit_args(&o)?).await?;
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

#[derive(Serialize)]
struct Completed<'a> {
    id: &'a str,
    state: &'static str,
}

#[derive(Serialize)]
struct Completions<'a> {
    results: Vec<Item<Completed<'a>>>,
    completed: usize,
    failed: usize,
}

#[derive(Serialize)]
struct ClaimedJobs<'a> {
    jobs: Vec<JobView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completions: Option<Completions<'a>>,
}

/// Bodies of bulk requests: up to 1000 items, each up to its own limit.
const BULK_BODY_BYTES: usize = 16 << 20;

fn item_list<'a>(o: &'a Map<String, Value>, field: &str) -> Result<&'a Vec<Value>, ApiError> {
    match o.get(field) {
        Some(Value::Array(a)) => Ok(a),
        _ => Err(invalid(field, "a list")),
    }
}

fn item_object<'a>(v: &'a Value, place: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| ApiError::bad("invalid_body", format!("{place} must be a JSON object")))
}

/// POST /v1/jobs/batch {"jobs": [job, ...]}: 200 with one entry per job,
/// in order: the job (with `created`) or `{"error": {...}}`.
async fn submit_batch(State(node): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let o = json_object(body, BULK_BODY_BYTES).await?;
    check_fields(&o, &["jobs"], "a bulk submit")?;
    let mut items = Vec::new();
    for (i, v) in item_list(&o, "jobs")?.iter().enumerate() {
        let place = format!("jobs[{i}]");
        let m = item_object(v, &place)?;
        items.push(submit_args(m).map_err(|e| at(&place, e))?);
    }
    let results = node.submit_jobs(items).await?;
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

/// POST /v1/jobs/complete {"completions": [{id, token, result?, run?}, ...]}:
/// 200 with one entry per completion, in order: `{"id", "state"}` or
/// `{"id", "error": {...}}` (e.g. 409 conflict for a stale token).
async fn complete_batch(State(node): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let o = json_object(body, BULK_BODY_BYTES).await?;
    check_fields(&o, &["completions"], "a bulk complete")?;
    let items = completion_list(&o, "completions")?;
    let ids: Vec<String> = items.iter().map(|c| c.id.clone()).collect();
    let results = node.complete_jobs(items).await?;
    if let Some(e) = all_failed(&results) {
        return Err(e);
    }
    Ok(Json(completion_results(&results, &ids)).into_response())
}

/// The completions listed under `field`: `[{id, token, result?, run?}]`.
fn completion_list(o: &Map<String, Value>, field: &str) -> Result<Vec<CompleteArgs>, ApiError> {
    let mut items = Vec::new();
    for (i, v) in item_list(o, field)?.iter().enumerate() {
        let place = format!("{field}[{i}]");
        let m = item_object(v, &place)?;
        let parse = || -> Result<CompleteArgs, ApiError> {
            check_fields(m, &["id", "token", "result", "run"], "a completion")?;
            Ok(CompleteArgs {
                id: req_str(m, "id")?,
                token: token(m)?,
                result: m.get("result").cloned().unwrap_or(Value::Null),
                facts: run_facts(m)?,
            })
        };
        items.push(parse().map_err(|e| at(&place, e))?);
    }
    Ok(items)
}

/// `{"results": [...], "completed": n, "failed": m}`: one entry per
/// completion, in order, `{"id", "state"}` or `{"id", "error": {...}}`.
fn completion_results<'a>(
    results: &[Result<orrery_queue::Job, ApiError>],
    ids: &'a [String],
) -> Completions<'a> {
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

async fn list_jobs(
    State(node): State<AppState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match p.get("limit") {
        None => DEFAULT_JOB_LIMIT,
        Some(l) => l.parse().map_err(|_| {
            ApiError::bad(
                "invalid_limit",
                format!("limit must be a positive integer, got {l:?}"),
            )
        })?,
    };
    let state = match p.get("state") {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::bad(
                "invalid_state",
                format!("state must be one of queued, running, succeeded, failed, cancelled, dead; got {s:?}"),
            )
        })?),
    };
    let after = p.get("cursor").filter(|c| !c.is_empty()).cloned();
    let jobs = node
        .list_jobs(p.get("queue").cloned(), state, after, limit)
        .await?;
    let next = if jobs.len() == limit {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(Json(json!({
        "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

async fn get_job(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = node.get_job(&id).await?;
    let mut v = job_json(&job);
    v["waiting"] = json!(node.waiting_reason(&job).await);
    Ok(Json(v))
}

async fn cancel(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&node.cancel_job(&id).await?)))
}

async fn runs(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = node.get_job(&id).await?;
    Ok(Json(
        json!({"job_id": id, "runs": job.runs.iter().map(run_json).collect::<Vec<_>>()}),
    ))
}

/// A claim's GPU offer `[{uuid, free_memory_mb?}]` as `(uuid, free MiB)`
/// (no `free_memory_mb`: any amount).
fn gpu_offer(o: &Map<String, Value>, field: &str) -> Result<Vec<(String, u64)>, ApiError> {
    let what = "a list of {uuid, free_memory_mb}";
    match o.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|g| {
                let g = g.as_object().ok_or_else(|| invalid(field, what))?;
                Ok((
                    req_str(g, "uuid")?,
                    opt_u64(g, "free_memory_mb")?.unwrap_or(u64::MAX),
                ))
            })
            .collect(),
        Some(_) => Err(invalid(field, what)),
    }
}

/// POST /v1/queues/{q}/claim {worker_id, kinds?, lease_s?, wait_s?, max?,
/// free_gpus?, shared_gpus?, free_cpus?, complete?}: the job with its lease `token`, or
/// 204; with `max`, `{"jobs": [...]}`. With `complete` (the jobs the worker
/// finished, as in `POST /v1/jobs/complete`), those are completed first and
/// the answer is always 200 `{"jobs": [...], "completions": {...}}`.
async fn claim(
    State(node): State<AppState>,
    Path(q): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    // Room for the completions a claim may carry.
    let o = json_object(body, BULK_BODY_BYTES).await?;
    check_fields(
        &o,
        &[
            "worker_id",
            "kinds",
            "lease_s",
            "wait_s",
            "max",
            "free_gpus",
            "shared_gpus",
            "free_cpus",
            "complete",
        ],
        "a claim",
    )?;
    let wait_s = opt_f64(&o, "wait_s")?.unwrap_or(0.0);
    if !(0.0..=MAX_WAIT_S as f64).contains(&wait_s) {
        return Err(invalid("wait_s", &format!("0..={MAX_WAIT_S} seconds")));
    }
    let free_gpus = gpu_offer(&o, "free_gpus")?;
    let shared_gpus = gpu_offer(&o, "shared_gpus")?;
    let batch = o.get("max").is_some();
    let args = ClaimArgs {
        worker_id: req_str(&o, "worker_id")?,
        kinds: str_list(&o, "kinds")?,
        lease_s: opt_u32(&o, "lease_s")?,
        wait: Duration::from_secs_f64(wait_s),
        max: opt_u32(&o, "max")?.unwrap_or(1),
        free_gpus,
        shared_gpus,
        free_cpus: opt_u32(&o, "free_cpus")?,
        node: 0,
    };
    let settles = !matches!(o.get("complete"), None | Some(Value::Null));
    let done = if settles {
        completion_list(&o, "complete")?
    } else {
        Vec::new()
    };
    let ids: Vec<String> = done.iter().map(|c| c.id.clone()).collect();
    let got = node.claim_jobs(Some(&q), args, done).await?;
    let jobs = got.jobs;
    if settles {
        // The completions' outcomes must reach the worker, so there is
        // always a body, even when nothing was claimed.
        return Ok(Json(ClaimedJobs {
            jobs: jobs.iter().map(JobView::claimed).collect(),
            completions: Some(completion_results(&got.completed, &ids)),
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

async fn heartbeat(
    State(node): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let o = json_object(body, 4096).await?;
    check_fields(&o, &["token"], "a heartbeat")?;
    let (cancelled, expires) = node.heartbeat_job(&id, token(&o)?).await?;
    Ok(Json(
        json!({"cancelled": cancelled, "lease_expires_ms": expires}),
    ))
}

fn run_facts(o: &Map<String, Value>) -> Result<RunFacts, ApiError> {
    let Some(r) = object(o, "run")? else {
        return Ok(RunFacts::default());
    };
    check_fields(
        r,
        &[
            "exit_code",
            "duration_ms",
            "gpu_uuids",
            "gpu_peak_memory_mb",
            "gpu_mean_utilization_pct",
        ],
        "run",
    )?;
    let exit_code = match r.get("exit_code") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .ok_or_else(|| invalid("run.exit_code", "an integer"))?,
        ),
    };
    Ok(RunFacts {
        gpu_uuids: str_list(r, "gpu_uuids")?,
        exit_code,
        duration_ms: opt_u64(r, "duration_ms")?,
        gpu_peak_memory_mb: opt_u64(r, "gpu_peak_memory_mb")?,
        gpu_mean_utilization_centi: opt_f64(r, "gpu_mean_utilization_pct")?
            .filter(|u| u.is_finite() && *u >= 0.0)
            .map(|u| (u * 100.0).round() as u32),
    })
}

async fn complete(
    State(node): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let o = json_object(body, 2 * orrery_queue::MAX_RESULT_BYTES).await?;
    check_fields(&o, &["token", "result", "run"], "a completion")?;
    let result = o.get("result").cloned().unwrap_or(Value::Null);
    let job = node
        .complete_job(&id, token(&o)?, &result, run_facts(&o)?)
        .await?;
    Ok(Json(job_json(&job)))
}

async fn fail(
    State(node): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let o = json_object(body, 64 * 1024).await?;
    check_fields(&o, &["token", "error", "retry", "run"], "a failure")?;
    let error = opt_str(&o, "error")?.unwrap_or_else(|| "failed".into());
    let retry = opt_bool(&o, "retry")?.unwrap_or(true);
    let job = node
        .fail_job(&id, token(&o)?, error, retry, run_facts(&o)?)
        .await?;
    Ok(Json(job_json(&job)))
}

// ---------------------------------------------------------------------
// Logs: kept in memory on the node that ran the attempt; any other node
// proxies the request to it with `local=true`.
// ---------------------------------------------------------------------

async fn logs(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let follow = matches!(p.get("follow").map(String::as_str), Some("true" | "1"));
    let local = matches!(p.get("local").map(String::as_str), Some("true" | "1"));
    let attempt: Option<u64> = match p.get("attempt") {
        None => None,
        Some(a) => Some(
            a.parse()
                .map_err(|_| invalid("attempt", "a positive integer"))?,
        ),
    };
    let (attempt, run_node) = if local {
        (
            attempt.ok_or_else(|| {
                ApiError::bad("missing_field", "attempt is required with local=true")
            })?,
            node.id(),
        )
    } else {
        let job = node.get_job(&id).await?;
        let run = match attempt {
            Some(a) => job.runs.iter().find(|r| r.attempt as u64 == a),
            None => job.runs.last(),
        }
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "job {id} has no run{} yet",
                attempt.map(|a| format!(" {a}")).unwrap_or_default()
            ))
        })?;
        (run.attempt as u64, run.node)
    };
    if run_node == 0 {
        return Err(ApiError::NotFound(format!(
            "attempt {attempt} of job {id} ran on an external worker; its logs are not kept by Orrery"
        )));
    }
    if run_node != node.id() {
        return proxy_logs(&node, run_node, &id, attempt, follow).await;
    }
    let engine = node
        .jobs
        .engine
        .get()
        .ok_or_else(|| ApiError::NotFound(format!("node {} runs no job engine", node.id())))?;
    let gone = || {
        ApiError::NotFound(format!(
            "logs of attempt {attempt} of job {id} are no longer on node {} (kept in memory for recent runs only)",
            node.id()
        ))
    };
    if !follow {
        let (bytes, _) = engine.logs().read(&id, attempt).ok_or_else(gone)?;
        return Ok(([("content-type", "text/plain; charset=utf-8")], bytes).into_response());
    }
    let (initial, rx) = engine.logs().follow(&id, attempt).ok_or_else(gone)?;
    let first = futures::stream::iter((!initial.is_empty()).then(|| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .event("log")
                .data(String::from_utf8_lossy(&initial)),
        )
    }));
    let rest = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        let ev = match rx.recv().await {
            Ok(orrery_exec::LogChunk::Data(d)) => SseEvent::default()
                .event("log")
                .data(String::from_utf8_lossy(&d)),
            Ok(orrery_exec::LogChunk::End)
            | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return Some((Ok(SseEvent::default().event("end").data("end")), None));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(format!(
                    "{n} chunks skipped; re-read the logs without follow"
                ))
            }
        };
        Some((Ok::<_, Infallible>(ev), Some(rx)))
    });
    Ok(Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

async fn proxy_logs(
    node: &Node,
    run_node: u64,
    id: &str,
    attempt: u64,
    follow: bool,
) -> Result<Response, ApiError> {
    let p = node.placement();
    let member = p.members.get(&run_node).ok_or_else(|| {
        ApiError::NotFound(format!(
            "node {run_node}, which ran attempt {attempt}, is no longer a member"
        ))
    })?;
    let url = format!(
        "http://{}/v1/jobs/{id}/logs?attempt={attempt}&local=true&follow={follow}",
        member.addr.addr
    );
    let mut req = node.jobs.http().get(&url);
    if !follow {
        req = req.timeout(node.cfg.request_timeout);
    }
    let resp = req.send().await.map_err(|e| {
        ApiError::unavailable(format!(
            "node {run_node} (which ran attempt {attempt}) is unreachable: {e}"
        ))
    })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    let body = Body::from_stream(resp.bytes_stream());
    Ok((status, [("content-type", ctype)], body).into_response())
}

// ---------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------

async fn events(
    State(node): State<AppState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let cursor = parse_cursor(p.get("since").map(String::as_str).unwrap_or(""))?;
    let limit = match p.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| invalid("limit", "1..=10000"))?,
    };
    let (evs, next) = node.events_since(&cursor, limit).await?;
    Ok(Json(json!({
        "events": evs.iter().map(|(s, e)| event_json(*s, e)).collect::<Vec<_>>(),
        "cursor": cursor_string(&next),
    })))
}

/// Server-Sent Events of every shard's events. Each SSE `id` is the cursor
/// after that event, so a reconnect with `Last-Event-ID` resumes exactly.
async fn events_stream(
    State(node): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| p.get("since").cloned())
        .unwrap_or_default();
    let cursor = parse_cursor(&from)?;
    let stream = futures::stream::unfold(
        (node, cursor, std::collections::VecDeque::<SseEvent>::new()),
        |(node, mut cursor, mut pending)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((Ok::<_, Infallible>(ev), (node, cursor, pending)));
                }
                match node.events_since(&cursor, 500).await {
                    Ok((evs, _)) if !evs.is_empty() => {
                        for (s, e) in &evs {
                            let i = *s as usize;
                            if cursor.len() <= i {
                                cursor.resize(i + 1, 0);
                            }
                            cursor[i] = e.seq;
                            pending.push_back(
                                SseEvent::default()
                                    .id(cursor_string(&cursor))
                                    .event(e.kind.clone())
                                    .data(event_json(*s, e).to_string()),
                            );
                        }
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                    Err(e) => {
                        tracing::debug!("event stream: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

async fn gpus(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(gpus_json(&node).await?))
}

pub(crate) async fn gpus_json(node: &Node) -> Result<Value, ApiError> {
    let reports = node.cluster_gpus().await?;
    let mut gpus = Vec::new();
    let mut nodes = Vec::new();
    for (n, r) in &reports {
        nodes.push(json!({"node": n, "reported_ms": r.reported_ms, "gpus": r.gpus.len()}));
        for g in &r.gpus {
            gpus.push(json!({
                "node": n, "uuid": g.uuid, "index": g.index, "name": g.name,
                "memory_total_mb": g.memory_total_mb, "memory_used_mb": g.memory_used_mb,
                "utilization_pct": g.utilization_pct, "temperature_c": g.temperature_c,
                "compute_capability": g.compute_capability,
            }));
        }
    }
    Ok(json!({"gpus": gpus, "nodes": nodes}))
}
