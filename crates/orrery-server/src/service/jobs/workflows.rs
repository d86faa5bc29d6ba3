//! Workflows (DAGs of step jobs, see `orrery_queue::workflow`): start,
//! read and cancel, whichever front they came through. A workflow lives in
//! the shard group of one partition of its queue, with its jobs; its id is
//! a job id of that shard, so reads and cancels route like a job's.

use super::{check_name, job_group, unexpected, JobsService};
use crate::api::{now_ms, ApiError};
use crate::auth::Caller;
use crate::node::validate;
use orrery_queue::workflow::{OnFailure, StepSpec, WorkflowSpec};
use orrery_queue::{
    JobsQuery, JobsQueryResult, QueueCommand, QueueError, QueueResponse, Resources, WorkflowRead,
};
use orrery_types::group_shard;
use serde_json::Value;

/// One step as the fronts receive it.
#[derive(Clone, Debug, Default)]
pub struct StepArgs {
    pub name: String,
    pub kind: String,
    pub params: Value,
    pub depends_on: Vec<String>,
    pub for_each: Option<String>,
    /// `fail_workflow` (default) or `continue`.
    pub on_failure: Option<String>,
    pub priority: i32,
    pub resources: Resources,
}

/// A workflow start as the fronts receive it.
#[derive(Clone, Debug, Default)]
pub struct WorkflowArgs {
    pub queue: String,
    pub steps: Vec<StepArgs>,
    pub input: Value,
    pub caller: Option<Caller>,
}

impl JobsService {
    /// Checks the definition (a 400 names the step), picks the partition
    /// and starts the workflow: its root steps are enqueued in the same
    /// log entry.
    pub async fn start_workflow(&self, a: WorkflowArgs) -> Result<WorkflowRead, ApiError> {
        check_name("queue", &a.queue)?;
        let admin = a.caller.as_ref().is_some_and(|c| c.is_admin());
        let mut steps = Vec::with_capacity(a.steps.len());
        for s in a.steps {
            let at =
                |m: String| ApiError::bad("invalid_workflow", format!("step {:?}: {m}", s.name));
            validate::job_kind(&s.kind).map_err(|e| at(e.to_string()))?;
            // As for jobs: a command step runs a process on a node.
            if s.kind == "command" && !admin {
                return Err(ApiError::Forbidden(format!(
                    "step {:?}: only admins may submit command jobs",
                    s.name
                )));
            }
            // The node's engine runs its kinds with their own params; a
            // step's job carries the workflow's (see `orrery_queue::workflow`).
            // (`image.thumbnail` and `image.caption` take the step's params,
            // `dataset`/`path` filled from the item or input: kinds/step.rs.)
            if orrery_exec::STEP_KINDS.contains(&s.kind.as_str()) {
                orrery_exec::validate_step_params(&s.kind, &s.params).map_err(at)?;
            } else if orrery_exec::BUILTIN_KINDS.contains(&s.kind.as_str()) {
                return Err(at(format!(
                    "kind {:?} is run by the nodes' engine, which does not take a step's params; \
                     steps are for kinds that workers claim",
                    s.kind
                )));
            }
            if s.resources.gpus > 64 {
                return Err(at("resources.gpus must be at most 64".into()));
            }
            let on_failure = match s.on_failure.as_deref() {
                None => OnFailure::FailWorkflow,
                Some(o) => OnFailure::parse(o).ok_or_else(|| {
                    at(format!(
                        "on_failure must be \"fail_workflow\" or \"continue\", not {o:?}"
                    ))
                })?,
            };
            let params = s.params.to_string();
            validate::job_params(&params)?;
            steps.push(StepSpec {
                name: s.name,
                kind: s.kind,
                params,
                depends_on: s.depends_on,
                for_each: s.for_each,
                on_failure,
                priority: s.priority,
                resources: s.resources,
            });
        }
        let input = a.input.to_string();
        validate::job_params(&input)?;
        let spec = self.queue_spec(&a.queue).await?;
        // Like a job without a dedupe key: a partition this node leads
        // when there is one (no forwarding hop), else the next in turn.
        let local = self.led_partitions(&spec);
        let rotation = self.node.metrics.next_rotation();
        let partition = match local.len() {
            0 => (rotation as u64 % spec.partitions as u64) as u32,
            n => local[rotation % n],
        };
        let wf = WorkflowSpec {
            queue: a.queue,
            partition,
            input,
            steps,
            submitted_by: a.caller.map(|c| c.name),
            max_attempts: spec.max_attempts,
            lease_s: spec.lease_s,
            backoff: spec.backoff,
        };
        wf.validate()
            .map_err(|m| ApiError::bad("invalid_workflow", m))?;
        let group = self.partition_group(&wf.queue, partition)?;
        let cmd = QueueCommand::StartWorkflow {
            shard: group_shard(group).unwrap_or(0),
            spec: wf,
            now_ms: now_ms(),
        };
        match self.queue_write(group, cmd).await? {
            QueueResponse::Workflow(w) => {
                self.wake.notify_waiters();
                Ok(*w)
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_workflow(&self, id: &str) -> Result<WorkflowRead, ApiError> {
        let g =
            job_group(id).map_err(|_| ApiError::from(QueueError::UnknownWorkflow(id.into())))?;
        match self
            .jobs_read(g, JobsQuery::Workflow(id.into()), true)
            .await?
        {
            JobsQueryResult::Workflow(Some(w)) => Ok(*w),
            JobsQueryResult::Workflow(None) => Err(QueueError::UnknownWorkflow(id.into()).into()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn cancel_workflow(&self, id: &str) -> Result<WorkflowRead, ApiError> {
        let g =
            job_group(id).map_err(|_| ApiError::from(QueueError::UnknownWorkflow(id.into())))?;
        let cmd = QueueCommand::CancelWorkflow {
            id: id.into(),
            now_ms: now_ms(),
        };
        match self.queue_write(g, cmd).await? {
            QueueResponse::Workflow(w) => Ok(*w),
            other => Err(unexpected(other)),
        }
    }

    /// Refuses (403) a workflow the caller may not read or cancel: one of
    /// a queue a confined worker does not serve, and (to cancel) one with
    /// a command step, unless an admin.
    pub async fn authorize_workflow(
        &self,
        caller: &Caller,
        id: &str,
        cancel: bool,
    ) -> Result<(), ApiError> {
        let confined = caller.queues.is_some();
        let cancel_check = cancel && !caller.is_admin();
        if !confined && !cancel_check {
            return Ok(());
        }
        let w = self.get_workflow(id).await?.workflow;
        caller.check_queue(&w.spec.queue)?;
        if cancel_check && w.spec.steps.iter().any(|s| s.kind == "command") {
            return Err(ApiError::Forbidden(format!(
                "only admins may cancel workflows with command steps ({} may not)",
                caller.name
            )));
        }
        Ok(())
    }
}
