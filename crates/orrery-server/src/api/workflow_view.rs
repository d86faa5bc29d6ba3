//! A workflow as both fronts show it (REST `GET /v1/workflows/{id}`, the
//! gRPC `Workflow.json`): each step's state, jobs and result.

use orrery_queue::{JobId, JobState, WorkflowRead, WorkflowState};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One job of a step.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StepJobView {
    id: String,
    /// queued, running, succeeded, failed, dead or cancelled.
    state: String,
    attempts: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StepView {
    name: String,
    kind: String,
    depends_on: Vec<String>,
    for_each: Option<String>,
    on_failure: String,
    /// pending (waits for its dependencies), claimable, running,
    /// succeeded, failed, cancelled, or skipped (never created: the
    /// workflow ended first).
    state: String,
    /// One per item for a fan-out step, else one.
    jobs: Vec<StepJobView>,
    /// What dependents receive: the job's result, or the array of the
    /// items' results (`null` where one did not succeed).
    result: Value,
    /// Why the step failed without a job (a `for_each` that is no array).
    error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowView {
    id: String,
    queue: String,
    partition: u32,
    /// running, succeeded, failed or cancelled.
    state: String,
    error: Option<String>,
    input: Value,
    submitted_by: Option<String>,
    created_ms: u64,
    updated_ms: u64,
    finished_ms: Option<u64>,
    steps: Vec<StepView>,
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()))
}

impl WorkflowView {
    pub fn new(r: &WorkflowRead) -> Self {
        let w = &r.workflow;
        let live: BTreeMap<JobId, (JobState, u32)> =
            r.live.iter().map(|(id, s, a)| (*id, (*s, *a))).collect();
        let steps = w
            .spec
            .steps
            .iter()
            .zip(&w.steps)
            .enumerate()
            .map(|(i, (s, p))| {
                let jobs: Vec<StepJobView> = p
                    .items
                    .iter()
                    .flatten()
                    .map(|it| {
                        // A pruned job's state is what the workflow recorded.
                        let (state, attempts) = match (live.get(&it.job), it.ended) {
                            (Some(l), _) => *l,
                            (None, Some(e)) => (e, 0),
                            (None, None) => (JobState::Queued, 0),
                        };
                        StepJobView {
                            id: it.job.to_string(),
                            state: state.as_str().into(),
                            attempts,
                        }
                    })
                    .collect();
                let has = |st: &str| jobs.iter().any(|j| j.state == st);
                let state = if p.error.is_some() {
                    "failed"
                } else if p.items.is_none() {
                    if w.state == WorkflowState::Running {
                        "pending"
                    } else {
                        "skipped"
                    }
                } else if has("running") {
                    "running"
                } else if has("queued") {
                    "claimable"
                } else if p.succeeded() {
                    "succeeded"
                } else if has("failed") || has("dead") {
                    "failed"
                } else {
                    "cancelled"
                };
                StepView {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    depends_on: s.depends_on.clone(),
                    for_each: s.for_each.clone(),
                    on_failure: s.on_failure.as_str().into(),
                    state: state.into(),
                    jobs,
                    result: json(&w.step_value(i)),
                    error: p.error.clone(),
                }
            })
            .collect();
        WorkflowView {
            id: w.id.to_string(),
            queue: w.spec.queue.clone(),
            partition: w.spec.partition,
            state: w.state.as_str().into(),
            error: w.error.clone(),
            input: json(&w.spec.input),
            submitted_by: w.spec.submitted_by.clone(),
            created_ms: w.created_ms,
            updated_ms: w.updated_ms,
            finished_ms: w.finished_ms,
            steps,
        }
    }
}
