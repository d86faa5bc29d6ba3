//! How a workflow advances: start, the end of a step job, cancel, and the
//! creation of step jobs. All of it runs inside an apply (see `workflow`).

use crate::lifecycle::json_str;
use crate::workflow::{OnFailure, StepItem, Workflow, WorkflowRead, MAX_FAN_OUT};
use crate::{
    job_seq, JobId, JobState, NewJob, QueueError, QueueResponse, QueueState, WorkflowSpec,
    WorkflowState, MAX_PARAMS_BYTES,
};
use serde_json::value::RawValue;

/// Where the ids of jobs an apply creates come from: the entry's index and
/// a count of the ids it gave out. Set at the start of every apply; not
/// part of the state's value (two cursors always compare equal).
#[derive(Clone, Copy, Default)]
pub(crate) struct IdCursor {
    index: u64,
    next: u64,
}

impl PartialEq for IdCursor {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IdCursor {}

/// Not part of the state's value: states are compared by their `Debug`
/// text too, so it shows nothing of the cursor.
impl std::fmt::Debug for IdCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdCursor")
    }
}

impl IdCursor {
    pub(crate) fn at(index: u64) -> IdCursor {
        IdCursor { index, next: 0 }
    }

    /// The next id of this entry. `job_seq` has room for 1024 ids per
    /// millisecond and entry; past that the id takes the next millisecond,
    /// which stays unique: another entry's ids hold another index.
    fn take(&mut self, now_ms: u64, shard: u32) -> JobId {
        let n = self.next;
        self.next += 1;
        JobId::new(
            now_ms + n / 1024,
            shard,
            job_seq(self.index, (n % 1024) as usize),
        )
    }
}

/// Where a job sits in its workflow: (workflow, step, item).
pub(crate) type Place = (JobId, u32, u32);

impl QueueState {
    pub(crate) fn start_workflow(
        &mut self,
        shard: u32,
        spec: WorkflowSpec,
        now_ms: u64,
        respond: bool,
    ) -> QueueResponse {
        if let Err(m) = spec.validate() {
            return QueueResponse::Rejected(QueueError::InvalidWorkflow(m));
        }
        let id = self.ids.take(now_ms, shard);
        let steps = vec![Default::default(); spec.steps.len()];
        self.workflows.insert(
            id,
            Workflow {
                id,
                spec,
                steps,
                state: WorkflowState::Running,
                error: None,
                created_ms: now_ms,
                updated_ms: now_ms,
                finished_ms: None,
            },
        );
        self.advance(id, now_ms);
        self.workflow_response(id, respond)
    }

    pub(crate) fn cancel_workflow(
        &mut self,
        id: &str,
        now_ms: u64,
        respond: bool,
    ) -> QueueResponse {
        let Some(wid) = JobId::parse(id).filter(|w| self.workflows.contains_key(w)) else {
            return QueueResponse::Rejected(QueueError::UnknownWorkflow(id.to_string()));
        };
        match self.workflows.get(&wid).map(|w| w.state) {
            Some(WorkflowState::Running) => {
                self.end_workflow(wid, WorkflowState::Cancelled, None, now_ms)
            }
            Some(WorkflowState::Cancelled) => {}
            Some(state) => {
                return QueueResponse::Rejected(QueueError::WorkflowEnded {
                    id: id.to_string(),
                    state: state.as_str().to_string(),
                })
            }
            None => {}
        }
        self.workflow_response(wid, respond)
    }

    fn workflow_response(&self, id: JobId, respond: bool) -> QueueResponse {
        match self.workflow(id) {
            Some(_) if !respond => QueueResponse::Unobserved,
            Some(w) => QueueResponse::Workflow(Box::new(w)),
            None => QueueResponse::Rejected(QueueError::UnknownWorkflow(id.to_string())),
        }
    }

    /// A workflow and the state of its jobs (those still retained).
    pub fn workflow(&self, id: JobId) -> Option<WorkflowRead> {
        let w = self.workflows.get(&id)?;
        let live = w
            .steps
            .iter()
            .flat_map(|p| p.items.iter().flatten())
            .filter_map(|i| self.jobs.get(&i.job))
            .map(|j| (j.id, j.state, j.attempts))
            .collect();
        Some(WorkflowRead {
            workflow: w.clone(),
            live,
        })
    }

    /// Called by `finish` for every job that reaches a terminal state: a
    /// workflow's job records its outcome, and the workflow advances.
    pub(crate) fn workflow_job_ended(&mut self, job: JobId, state: JobState, now_ms: u64) {
        let Some(&(wid, step, item)) = self.wf_jobs.get(&job) else {
            return;
        };
        let result = if state == JobState::Succeeded {
            self.jobs.get(&job).and_then(|j| j.result.clone())
        } else {
            None
        };
        let Some(w) = self.workflows.get_mut(&wid) else {
            return;
        };
        let Some(it) = w.steps[step as usize]
            .items
            .as_mut()
            .and_then(|v| v.get_mut(item as usize))
        else {
            return;
        };
        if it.ended.is_some() {
            return;
        }
        it.ended = Some(state);
        it.result = result;
        w.updated_ms = now_ms;
        if w.state != WorkflowState::Running {
            return;
        }
        let p = &w.steps[step as usize];
        let s = &w.spec.steps[step as usize];
        // A failure that fails the workflow does so at once, even while
        // other items of its step still run.
        if state != JobState::Succeeded && s.on_failure == OnFailure::FailWorkflow {
            let why = format!("step {:?}: a job ended {}", s.name, state.as_str());
            self.end_workflow(wid, WorkflowState::Failed, Some(why), now_ms);
            return;
        }
        if p.done() {
            self.advance(wid, now_ms);
        }
    }

    /// Creates the jobs of every step whose dependencies are all done
    /// (and succeeded, or may fail), until nothing changes; then ends the
    /// workflow when every step is done.
    fn advance(&mut self, wid: JobId, now_ms: u64) {
        loop {
            let Some(w) = self.workflows.get(&wid) else {
                return;
            };
            if w.state != WorkflowState::Running {
                return;
            }
            let ready = (0..w.steps.len()).find(|&i| {
                let p = &w.steps[i];
                p.items.is_none()
                    && p.error.is_none()
                    && w.spec.steps[i].depends_on.iter().all(|d| {
                        w.spec.step_index(d).is_some_and(|j| {
                            let dp = &w.steps[j];
                            dp.done()
                                && (dp.succeeded()
                                    || w.spec.steps[j].on_failure == OnFailure::Continue)
                        })
                    })
            });
            let Some(i) = ready else { break };
            if let Err(why) = self.create_step(wid, i, now_ms) {
                let Some(w) = self.workflows.get_mut(&wid) else {
                    return;
                };
                w.steps[i].error = Some(why.clone());
                if w.spec.steps[i].on_failure == OnFailure::FailWorkflow {
                    let why = format!("step {:?}: {why}", w.spec.steps[i].name);
                    self.end_workflow(wid, WorkflowState::Failed, Some(why), now_ms);
                    return;
                }
            }
        }
        let Some(w) = self.workflows.get(&wid) else {
            return;
        };
        if w.steps.iter().all(|p| p.done()) {
            self.end_workflow(wid, WorkflowState::Succeeded, None, now_ms);
        }
    }

    /// Enqueues step `i`'s jobs (one, or one per item of its `for_each`).
    fn create_step(&mut self, wid: JobId, i: usize, now_ms: u64) -> Result<(), String> {
        let Some(w) = self.workflows.get(&wid) else {
            return Ok(());
        };
        let s = &w.spec.steps[i];
        let deps: Vec<String> = s
            .depends_on
            .iter()
            .filter_map(|d| w.spec.step_index(d).map(|j| (d, j)))
            .map(|(d, j)| format!("{}:{}", json_str(d), w.step_value(j)))
            .collect();
        let head = format!(
            "{{\"workflow\":{{\"id\":\"{wid}\",\"step\":{}}},\"input\":{},\"params\":{},\"deps\":{{{}}}",
            json_str(&s.name),
            w.spec.input,
            s.params,
            deps.join(",")
        );
        // What the step's job(s) would receive may not exceed what a
        // submit may carry: the step fails instead (a fan-in of large
        // results, an oversized item).
        let fits = |n: usize| {
            if n > MAX_PARAMS_BYTES {
                return Err(format!(
                    "its params (input, params and its dependencies' results) would be {n} bytes; \
                     the limit for a job's params is {MAX_PARAMS_BYTES} bytes"
                ));
            }
            Ok(())
        };
        fits(head.len() + 1)?;
        let params: Vec<String> = match &s.for_each {
            None => vec![format!("{head}}}")],
            Some(f) => {
                let j = w.spec.step_index(f).ok_or("for_each names no step")?;
                let list = w.step_value(j);
                let items: Vec<&RawValue> = serde_json::from_str(&list)
                    .map_err(|_| format!("for_each {f:?}: its result is not a JSON array"))?;
                if items.len() > MAX_FAN_OUT {
                    return Err(format!(
                        "for_each {f:?}: {} items; at most {MAX_FAN_OUT}",
                        items.len()
                    ));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(n, it)| format!("{head},\"item\":{},\"index\":{n}}}", it.get()))
                    .collect()
            }
        };
        for p in &params {
            fits(p.len())?;
        }
        let new = |params: String| NewJob {
            queue: w.spec.queue.clone(),
            partition: w.spec.partition,
            kind: s.kind.clone(),
            params,
            priority: s.priority,
            run_at_ms: None,
            resources: s.resources.clone(),
            dedupe_key: None,
            submitted_by: w.spec.submitted_by.clone(),
            max_attempts: w.spec.max_attempts,
            lease_s: w.spec.lease_s,
            backoff: w.spec.backoff.clone(),
        };
        let jobs: Vec<NewJob> = params.into_iter().map(new).collect();
        let mut items = Vec::with_capacity(jobs.len());
        for (n, job) in jobs.into_iter().enumerate() {
            let id = self.ids.take(now_ms, wid.shard());
            self.enqueue_as(id, job, now_ms, false);
            self.wf_jobs.insert(id, (wid, i as u32, n as u32));
            items.push(StepItem {
                job: id,
                ended: None,
                result: None,
            });
        }
        if let Some(w) = self.workflows.get_mut(&wid) {
            w.steps[i].items = Some(items);
            w.updated_ms = now_ms;
        }
        Ok(())
    }

    /// Ends a running workflow; its jobs that have not ended are cancelled
    /// (queued ones at once, running ones as a cancel is requested).
    fn end_workflow(
        &mut self,
        wid: JobId,
        state: WorkflowState,
        error: Option<String>,
        now_ms: u64,
    ) {
        let Some(w) = self.workflows.get_mut(&wid) else {
            return;
        };
        w.state = state;
        w.error = error;
        w.updated_ms = now_ms;
        w.finished_ms = Some(now_ms);
        let open: Vec<JobId> = w
            .steps
            .iter()
            .flat_map(|p| p.items.iter().flatten())
            .filter(|i| i.ended.is_none())
            .map(|i| i.job)
            .collect();
        for id in open {
            // An item that already ended is not open; nothing to refuse.
            let _ = self.cancel(id, now_ms, false);
        }
    }

    /// Forgets finished workflows that ended before `before_ms` (with the
    /// jobs' pruning: a workflow outlives none of its jobs' retention).
    pub(crate) fn prune_workflows(&mut self, before_ms: u64) {
        let old: Vec<JobId> = self
            .workflows
            .values()
            .filter(|w| w.finished_ms.is_some_and(|t| t < before_ms))
            .map(|w| w.id)
            .collect();
        for id in old {
            if let Some(w) = self.workflows.remove(&id) {
                for it in w.steps.iter().flat_map(|p| p.items.iter().flatten()) {
                    self.wf_jobs.remove(&it.job);
                }
            }
        }
    }

    /// The job index of the workflows (derived, rebuilt on restore).
    pub(crate) fn index_workflows(&mut self) {
        self.wf_jobs = self
            .workflows
            .values()
            .flat_map(|w| {
                w.steps.iter().enumerate().flat_map(move |(s, p)| {
                    p.items
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(move |(n, it)| (it.job, (w.id, s as u32, n as u32)))
                })
            })
            .collect();
    }
}
