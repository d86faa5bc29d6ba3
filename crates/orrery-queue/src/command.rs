//! The commands the queue module applies, their responses and errors.

use crate::{
    ClaimSpec, Completion, GpuRecord, Job, JobState, NewJob, QueueSpec, RunFacts, Settlement,
    WorkflowRead, WorkflowSpec, MAX_BATCH, MAX_RESULT_BYTES,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    // ---- catalog (placement group) ----
    CreateQueue(QueueSpec),
    DeleteQueue {
        name: String,
    },
    ReportGpus {
        node: u64,
        gpus: Vec<GpuRecord>,
        now_ms: u64,
    },
    // ---- jobs (shard groups) ----
    Enqueue {
        shard: u32,
        job: NewJob,
        now_ms: u64,
    },
    /// Bulk submit: every job is enqueued as by `Enqueue`, in order, each
    /// with its own id; one log entry (and one fsync) for all of them.
    EnqueueMany {
        shard: u32,
        jobs: Vec<NewJob>,
        now_ms: u64,
    },
    Claim {
        spec: ClaimSpec,
        now_ms: u64,
    },
    /// Claims of several workers in one entry (group commit, see
    /// [`coalesce`](crate::coalesce)): each applied as by `Claim`, in order.
    ClaimMany {
        claims: Vec<ClaimSpec>,
        now_ms: u64,
    },
    /// Bulk complete: each item is checked and applied as by `Complete`,
    /// independently (a stale token rejects that item only).
    CompleteMany {
        items: Vec<Completion>,
        now_ms: u64,
    },
    Heartbeat {
        job_id: String,
        token: u32,
        now_ms: u64,
    },
    Complete {
        job_id: String,
        token: u32,
        result: String,
        facts: RunFacts,
        now_ms: u64,
    },
    Fail {
        job_id: String,
        token: u32,
        error: String,
        /// `false`: the failure is permanent, the job ends `failed` at once.
        retry: bool,
        facts: RunFacts,
        now_ms: u64,
    },
    Cancel {
        job_id: String,
        now_ms: u64,
    },
    /// Sent by a shard leader: leases that ended before `now_ms` expire.
    ExpireLeases {
        now_ms: u64,
    },
    // New variants go last: the log and snapshots store the variant index.
    /// For each settlement in turn, its completions (each as by
    /// `CompleteMany`), then its claim (as by `Claim`): a worker reports
    /// the jobs it finished and takes its next ones in one request and one
    /// entry. The response is `Many`, one item per settlement, each `Many`
    /// of its completions' responses followed by its claim's `Claimed`.
    Settle {
        work: Vec<Settlement>,
        now_ms: u64,
    },
    /// Sent by a shard leader: forgets at most `max` finished jobs that
    /// finished before `before_ms` (the retention period), oldest first,
    /// with their dedupe keys.
    Prune {
        before_ms: u64,
        max: u32,
    },
    /// A `Claim` that also offers `shared_gpus`, `(uuid, free MiB)`: GPUs
    /// the worker's running `shared_gpu` jobs hold. Only `shared_gpu` jobs
    /// may take those; other jobs fit only `spec.free_gpus`. (A variant of
    /// its own because `ClaimSpec` is stored in the log as it is.)
    ClaimSharing {
        spec: ClaimSpec,
        shared_gpus: Vec<(String, u64)>,
        now_ms: u64,
    },
    /// Starts a workflow in this shard (cluster version 7): its id is a
    /// job id of `shard`, and the steps without dependencies are enqueued
    /// in the same entry (see [`crate::workflow`]).
    StartWorkflow {
        shard: u32,
        spec: WorkflowSpec,
        now_ms: u64,
    },
    /// Cancels a running workflow: no more step is created, its queued
    /// jobs are cancelled and its running ones asked to stop.
    CancelWorkflow {
        id: String,
        now_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueError {
    QueueExists(String),
    UnknownQueue(String),
    UnknownJob(String),
    /// The token is not the job's live lease (expired and re-claimed, or finished).
    StaleToken {
        job_id: String,
        token: u32,
        state: JobState,
        attempts: u32,
    },
    /// Cancel of a job that already ended.
    AlreadyFinished {
        job_id: String,
        state: JobState,
    },
    ResultTooLarge(usize),
    /// A bulk command with more than [`MAX_BATCH`] items.
    BatchTooLarge(usize),
    /// A workflow definition the DAG checks refuse (the message names the step).
    InvalidWorkflow(String),
    UnknownWorkflow(String),
    /// Cancel of a workflow that already ended otherwise.
    WorkflowEnded {
        id: String,
        state: String,
    },
}

impl std::error::Error for QueueError {}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::QueueExists(q) => write!(f, "queue {q:?} already exists"),
            QueueError::UnknownQueue(q) => write!(f, "queue {q:?} does not exist"),
            QueueError::UnknownJob(j) => write!(
                f,
                "job {j:?} does not exist (or finished longer ago than the job retention period)"
            ),
            QueueError::StaleToken {
                job_id,
                token,
                state,
                attempts,
            } => write!(
                f,
                "token {token} is not the live lease of job {job_id} (state {}, attempt {attempts})",
                state.as_str()
            ),
            QueueError::AlreadyFinished { job_id, state } => {
                write!(f, "job {job_id} already ended {}", state.as_str())
            }
            QueueError::ResultTooLarge(n) => write!(
                f,
                "result is {n} bytes; the limit is {MAX_RESULT_BYTES} bytes"
            ),
            QueueError::BatchTooLarge(n) => {
                write!(f, "{n} items in one request; the limit is {MAX_BATCH}")
            }
            QueueError::InvalidWorkflow(m) => write!(f, "invalid workflow: {m}"),
            QueueError::UnknownWorkflow(id) => write!(
                f,
                "workflow {id:?} does not exist (or ended longer ago than the job retention period)"
            ),
            QueueError::WorkflowEnded { id, state } => {
                write!(f, "workflow {id} already ended {state}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueResponse {
    QueueCreated(QueueSpec),
    QueueDeleted,
    GpusReported,
    /// `created == false`: the dedupe key matched this existing job.
    Enqueued {
        job: Box<Job>,
        created: bool,
    },
    Claimed(Vec<Job>),
    Heartbeat {
        cancelled: bool,
        expires_ms: u64,
    },
    /// Complete, fail and cancel return the job as it is now.
    Job(Box<Job>),
    Expired(u32),
    Rejected(QueueError),
    /// One response per item of a bulk command, in order.
    Many(Vec<QueueResponse>),
    /// Finished jobs forgotten by `Prune`.
    Pruned(u32),
    /// In place of a job (or, in `Claimed`, of the jobs) when the command
    /// was applied by [`QueueState::apply_unobserved`](crate::QueueState::apply_unobserved): no client reads
    /// that replica's response, so copies of jobs are not made for it.
    Unobserved,
    /// A workflow as it is after the command.
    Workflow(Box<WorkflowRead>),
}
