//! Workflows: replicated DAGs of steps whose jobs live in one shard.
//!
//! A workflow instance lives in the shard group of one partition of its
//! queue, next to its jobs, and advances inside the apply that ends one of
//! them: when a step job reaches a terminal state (`finish`), the same
//! apply records its outcome and enqueues every step whose dependencies
//! have now all succeeded. So no step job exists before its dependencies
//! succeeded, and each step (each fan-out item) is created exactly once, by
//! one deterministic apply; retries, leases and exactly-once completion are
//! the jobs' own.
//!
//! A step's job receives, as its params, the JSON object
//! `{"workflow":{"id","step"},"input":…,"params":…,"deps":{"<step>":…}}`
//! (fan-out items also `"item"` and `"index"`). A dependency's value is its
//! job's result, or, for a fan-out step, the array of its items' results;
//! a result that is missing (a failed step with `on_failure: continue`) is
//! `null`.

use crate::{Backoff, JobId, JobState, Resources};
use serde::{Deserialize, Serialize};

/// Steps in one workflow at most.
pub const MAX_STEPS: usize = 100;
/// Items one fan-out step may create at most; a longer array fails the step.
pub const MAX_FAN_OUT: usize = 10_000;

/// What a failed (or dead, or cancelled) step does to its workflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnFailure {
    /// The workflow fails; its other jobs are cancelled.
    #[default]
    FailWorkflow,
    /// The step counts as done; dependents see `null` for what failed.
    Continue,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::FailWorkflow => "fail_workflow",
            OnFailure::Continue => "continue",
        }
    }

    pub fn parse(s: &str) -> Option<OnFailure> {
        match s {
            "fail_workflow" => Some(OnFailure::FailWorkflow),
            "continue" => Some(OnFailure::Continue),
            _ => None,
        }
    }
}

/// One step of a workflow definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    pub name: String,
    pub kind: String,
    /// JSON text.
    pub params: String,
    pub depends_on: Vec<String>,
    /// A step (also in `depends_on`) whose result is a JSON array: one job
    /// per item.
    pub for_each: Option<String>,
    pub on_failure: OnFailure,
    pub priority: i32,
    pub resources: Resources,
}

/// A workflow as submitted, with the queue settings its jobs take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    pub queue: String,
    pub partition: u32,
    /// JSON text.
    pub input: String,
    pub steps: Vec<StepSpec>,
    pub submitted_by: Option<String>,
    pub max_attempts: u32,
    pub lease_s: u32,
    pub backoff: Backoff,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkflowState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkflowState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
        }
    }
}

/// One job of a step (one per fan-out item).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepItem {
    pub job: JobId,
    /// The job's terminal state, once it ended.
    pub ended: Option<JobState>,
    /// Its result, when it succeeded.
    pub result: Option<Box<str>>,
}

/// What became of one step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    /// `None` until the step's jobs are created (all at once).
    pub items: Option<Vec<StepItem>>,
    /// Why the step failed without a job (a `for_each` that is no array).
    pub error: Option<String>,
}

impl StepProgress {
    /// Created, and every job ended (or the step failed before any).
    pub fn done(&self) -> bool {
        self.error.is_some()
            || self
                .items
                .as_ref()
                .is_some_and(|it| it.iter().all(|i| i.ended.is_some()))
    }

    /// Done, and every job succeeded.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && self
                .items
                .as_ref()
                .is_some_and(|it| it.iter().all(|i| i.ended == Some(JobState::Succeeded)))
    }
}

/// A workflow instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: JobId,
    pub spec: WorkflowSpec,
    /// Parallel to `spec.steps`.
    pub steps: Vec<StepProgress>,
    pub state: WorkflowState,
    pub error: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
}

/// A workflow as read, with the state and attempts of its jobs (those
/// not yet pruned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRead {
    pub workflow: Workflow,
    pub live: Vec<(JobId, JobState, u32)>,
}

fn valid_step_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl WorkflowSpec {
    /// Checks the DAG: names, dependencies, `for_each`, no cycles. The
    /// error names the step.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("a workflow needs at least one step".into());
        }
        if self.steps.len() > MAX_STEPS {
            return Err(format!(
                "{} steps; a workflow has at most {MAX_STEPS}",
                self.steps.len()
            ));
        }
        let index = |n: &str| self.steps.iter().position(|s| s.name == n);
        for (i, s) in self.steps.iter().enumerate() {
            if !valid_step_name(&s.name) {
                return Err(format!(
                    "step {:?}: a step name is 1..=64 letters, digits, '_', '-' or '.'",
                    s.name
                ));
            }
            if index(&s.name) != Some(i) {
                return Err(format!("step {:?}: the name is used twice", s.name));
            }
            for (j, d) in s.depends_on.iter().enumerate() {
                if index(d).is_none() {
                    return Err(format!("step {:?}: depends on unknown step {d:?}", s.name));
                }
                if *d == s.name {
                    return Err(format!("step {:?}: depends on itself", s.name));
                }
                if s.depends_on[..j].contains(d) {
                    return Err(format!("step {:?}: lists {d:?} twice", s.name));
                }
            }
            if let Some(f) = &s.for_each {
                if !s.depends_on.contains(f) {
                    return Err(format!(
                        "step {:?}: for_each {f:?} must name a step in its depends_on",
                        s.name
                    ));
                }
            }
        }
        // Kahn's algorithm: whatever is left has a cycle.
        let n = self.steps.len();
        let mut left: Vec<usize> = self.steps.iter().map(|s| s.depends_on.len()).collect();
        let mut ready: Vec<usize> = (0..n).filter(|i| left[*i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = ready.pop() {
            seen += 1;
            for (j, s) in self.steps.iter().enumerate() {
                if s.depends_on.contains(&self.steps[i].name) {
                    left[j] -= 1;
                    if left[j] == 0 {
                        ready.push(j);
                    }
                }
            }
        }
        if seen < n {
            let i = (0..n).find(|i| left[*i] > 0).unwrap_or(0);
            return Err(format!(
                "step {:?}: is part of a dependency cycle",
                self.steps[i].name
            ));
        }
        Ok(())
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

impl Workflow {
    /// The value dependents see for step `i`: its result, or its items'
    /// results as an array (`null` for what did not succeed).
    pub fn step_value(&self, i: usize) -> String {
        let p = &self.steps[i];
        let one = |it: &StepItem| it.result.as_deref().unwrap_or("null").to_string();
        match (&p.items, self.spec.steps[i].for_each.is_some()) {
            (Some(items), true) => {
                let parts: Vec<String> = items.iter().map(one).collect();
                format!("[{}]", parts.join(","))
            }
            (Some(items), false) => items.first().map(one).unwrap_or_else(|| "null".into()),
            (None, true) if p.error.is_some() => "[]".into(),
            (None, _) => "null".into(),
        }
    }
}
