//! The job-queue domain module.
//!
//! Two halves share one state type, [`QueueState`]:
//! * the **catalog** (queues, per-node GPU inventory), applied in the
//!   placement group (group 0);
//! * the **jobs** of a shard (jobs, their runs, the dedupe index, events),
//!   applied in shard groups.
//!
//! Everything is a pure function of the command, the log index and the
//! prior state: the proposing node stamps `now_ms` into every command that
//! needs time, so lease expiry, backoff and timestamps are identical on
//! every replica. Lease tokens are attempt numbers: a claim increments
//! `attempts` and hands it out as the token; `heartbeat`/`complete`/`fail`
//! with any other token (or on a job that is no longer running) are
//! rejected as [`QueueError::StaleToken`], which is how a job completes at
//! most once even when its lease expired and another worker took it.
//!
//! Params and results are JSON *text*: the snapshot codec (bincode) cannot
//! carry `serde_json::Value`, and keeping the exact text avoids a parse in
//! the apply path.
//!
//! ## Memory per job
//! A shard keeps every job until the retention period prunes it, on every
//! replica, so the in-memory form is compact: ids are [`JobId`] (a `u128`,
//! no heap), queue and kind names are shared [`Name`]s interned per state,
//! a run's outcome is an [`Outcome`], text fields are `Box<str>`, and the
//! job map holds boxed jobs (a B-tree filled in id order leaves its nodes
//! about half full, so large inline values would waste half their bytes).
//! Every one of these types serialises exactly as the `String` it replaced:
//! the snapshot format is unchanged (pinned by `snapshot_format_is_stable`).
//!
//! ## Modules
//! * `model`: the data (queues, GPUs, jobs, runs, events, command inputs);
//! * `id`: [`JobId`];
//! * `command`: [`QueueCommand`], [`QueueResponse`], [`QueueError`];
//! * `state`: [`QueueState`], the dispatch of commands, and its reads;
//! * `claim`: claim selection; `lifecycle`: enqueue, completion, retries,
//!   cancel, expiry and pruning; `tally`: the derived indexes;
//! * `snapshot`: the snapshot encoding; `query`: [`JobsQuery`], the reads
//!   that travel between nodes; [`coalesce`]: group commit of commands;
//! * [`workflow`]: workflows (DAGs of step jobs); `advance`: how they
//!   advance inside the applies that end their jobs.

pub mod coalesce;
pub mod workflow;

mod advance;
mod claim;
mod command;
mod id;
mod lifecycle;
mod model;
mod query;
mod snapshot;
mod state;
mod tally;

pub use command::{QueueCommand, QueueError, QueueResponse};
pub use id::{job_seq, job_shard, JobId};
pub use model::{
    Backoff, ClaimSpec, Completion, Event, GpuRecord, GpuReport, Job, JobState, Lease, Name,
    NewJob, Outcome, QueueSpec, Resources, Run, RunFacts, Settlement, CANCELLED, EVENTS_KEPT,
    MAX_BATCH, MAX_ERROR_BYTES, MAX_PARAMS_BYTES, MAX_RESULT_BYTES,
};
pub use query::{JobsQuery, JobsQueryResult};
pub use state::QueueState;
pub use workflow::{
    OnFailure, StepItem, StepProgress, StepSpec, Workflow, WorkflowRead, WorkflowSpec,
    WorkflowState,
};

#[cfg(test)]
mod tests;
