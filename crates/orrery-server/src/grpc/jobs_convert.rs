//! orrery.v1 job messages to service arguments, and domain types to
//! messages (their `json` fields hold the same documents as REST answers).

use crate::api::jobs_view::{JobView, QueueView};
use crate::api::ApiError;
use crate::service::jobs::{at, CompleteArgs, QueueArgs, SubmitArgs};
use orrery_proto::v1 as pb;
use orrery_queue::{Job, QueueSpec, Resources, RunFacts};
use serde::Serialize;
use serde_json::Value;

/// A view as JSON text (for the `json` fields).
pub fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub fn job(j: &Job) -> pb::Job {
    pb::Job {
        id: j.id.to_string(),
        queue: j.queue.to_string(),
        kind: j.kind.to_string(),
        state: j.state.as_str().into(),
        attempts: j.attempts,
        priority: j.priority,
        json: json_text(&JobView::new(j)),
    }
}

/// A queue message whose `json` is `view` (the queue, or with its counts).
pub fn queue<T: Serialize>(q: &QueueSpec, view: &T) -> pb::QueueInfo {
    pb::QueueInfo {
        name: q.name.clone(),
        partitions: q.partitions,
        lease_s: q.lease_s,
        max_attempts: q.max_attempts,
        json: json_text(view),
    }
}

pub fn queue_spec(q: &QueueSpec) -> pb::QueueInfo {
    queue(q, &QueueView::new(q))
}

/// JSON text of a request field; empty means `empty`.
pub fn parse_json(field: &str, s: &str, empty: Value) -> Result<Value, ApiError> {
    if s.is_empty() {
        return Ok(empty);
    }
    serde_json::from_str(s)
        .map_err(|e| ApiError::bad("invalid_json", format!("{field} is not valid JSON: {e}")))
}

impl From<pb::CreateQueueRequest> for QueueArgs {
    fn from(r: pb::CreateQueueRequest) -> Self {
        QueueArgs {
            name: r.name,
            partitions: r.partitions,
            lease_s: r.lease_s,
            max_attempts: r.max_attempts,
            backoff_initial_ms: r.backoff_initial_ms,
            backoff_multiplier: r.backoff_multiplier,
            backoff_max_ms: r.backoff_max_ms,
            concurrency_limit: r.concurrency_limit,
        }
    }
}

impl TryFrom<pb::SubmitRequest> for SubmitArgs {
    type Error = ApiError;
    fn try_from(r: pb::SubmitRequest) -> Result<Self, ApiError> {
        let params = parse_json("params_json", &r.params_json, serde_json::json!({}))?;
        Ok(SubmitArgs {
            queue: r.queue,
            kind: r.kind,
            params,
            priority: r.priority,
            run_at_ms: r.run_at_ms,
            delay_ms: r.delay_ms,
            resources: Resources {
                gpus: r.gpus,
                gpu_memory_mb: r.gpu_memory_mb,
                cpus: r.cpus,
                shared_gpu: r.shared_gpu,
            },
            dedupe_key: r.dedupe_key,
            submitted_by: r.submitted_by,
            caller: None,
        })
    }
}

/// The jobs of a bulk submit; a bad one refuses the call, naming it.
pub fn submits(reqs: Vec<pb::SubmitRequest>) -> Result<Vec<SubmitArgs>, ApiError> {
    reqs.into_iter()
        .enumerate()
        .map(|(i, r)| SubmitArgs::try_from(r).map_err(|e| at(&format!("jobs[{i}]"), e)))
        .collect()
}

/// The completions of a request (its field `field`), `result_json` parsed.
pub fn completions(
    field: &str,
    reqs: Vec<pb::CompleteRequest>,
) -> Result<Vec<CompleteArgs>, ApiError> {
    reqs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let result = parse_json("result_json", &r.result_json, Value::Null)
                .map_err(|e| at(&format!("{field}[{i}]"), e))?;
            Ok(CompleteArgs {
                id: r.id,
                token: r.token,
                result,
                facts: RunFacts::default(),
            })
        })
        .collect()
}

pub fn complete_result(r: &pb::CompleteRequest) -> Result<Value, ApiError> {
    parse_json("result_json", &r.result_json, Value::Null)
}

pub fn item_error(e: &ApiError) -> pb::ItemError {
    pb::ItemError {
        code: e.code().into(),
        message: e.to_string(),
    }
}

/// One item per completion, in order: the job's new state or the error.
pub fn complete_items(
    results: &[Result<Job, ApiError>],
    ids: Vec<String>,
) -> Vec<pb::CompleteBatchItem> {
    results
        .iter()
        .zip(ids)
        .map(|(r, id)| match r {
            Ok(job) => pb::CompleteBatchItem {
                id,
                state: job.state.as_str().into(),
                error: None,
            },
            Err(e) => pb::CompleteBatchItem {
                id,
                state: String::new(),
                error: Some(item_error(e)),
            },
        })
        .collect()
}

/// A claim's GPU offer as `(uuid, free MiB)` (no memory given: any amount).
pub fn offer(gpus: Vec<pb::GpuOffer>) -> Vec<(String, u64)> {
    gpus.into_iter()
        .map(|g| (g.uuid, g.free_memory_mb.unwrap_or(u64::MAX)))
        .collect()
}
