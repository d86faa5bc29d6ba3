//! The reads of the queue module's state that travel between nodes (a
//! follower or another node asks the group's leader): [`JobsQuery`] and its
//! answer [`JobsQueryResult`], both encoded with bincode, so variants and
//! fields keep their order and types.

use crate::{ClaimSpec, Event, GpuReport, Job, JobState, QueueSpec, QueueState, WorkflowRead};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Reads of the queue module's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobsQuery {
    Catalog,
    Job(String),
    List {
        queue: Option<String>,
        state: Option<JobState>,
        after: Option<String>,
        limit: usize,
    },
    Counts(String),
    Events {
        since: u64,
        limit: usize,
    },
    Claimable {
        spec: ClaimSpec,
        now_ms: u64,
    },
    /// `Claimable` for a claim that also offers shared GPUs
    /// ([`QueueCommand::ClaimSharing`](crate::QueueCommand::ClaimSharing)).
    ClaimableSharing {
        spec: ClaimSpec,
        shared_gpus: Vec<(String, u64)>,
        now_ms: u64,
    },
    /// A workflow by id (cluster version 7).
    Workflow(String),
}

/// The answer to a [`JobsQuery`] (one variant per kind of read; both
/// `Claimable` queries answer `Claimable`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobsQueryResult {
    Catalog {
        queues: Vec<QueueSpec>,
        /// By node id.
        gpus: BTreeMap<u64, GpuReport>,
    },
    Job(Option<Box<Job>>),
    List(Vec<Job>),
    Counts(BTreeMap<JobState, u64>, Option<u64>),
    Events(Vec<Event>),
    Claimable(bool),
    Workflow(Option<Box<WorkflowRead>>),
}

impl QueueState {
    /// Answers a read of this state.
    pub fn query(&self, q: &JobsQuery) -> JobsQueryResult {
        match q {
            JobsQuery::Catalog => JobsQueryResult::Catalog {
                queues: self.queues().values().cloned().collect(),
                gpus: self.gpu_reports().clone(),
            },
            JobsQuery::Job(id) => JobsQueryResult::Job(self.job(id).cloned().map(Box::new)),
            JobsQuery::List {
                queue,
                state,
                after,
                limit,
            } => {
                JobsQueryResult::List(self.list(queue.as_deref(), *state, after.as_deref(), *limit))
            }
            JobsQuery::Counts(q) => {
                let (c, o) = self.counts(q);
                JobsQueryResult::Counts(c, o)
            }
            JobsQuery::Events { since, limit } => {
                JobsQueryResult::Events(self.events_since(*since, *limit))
            }
            JobsQuery::Claimable { spec, now_ms } => {
                JobsQueryResult::Claimable(self.claimable(spec, &[], *now_ms))
            }
            JobsQuery::ClaimableSharing {
                spec,
                shared_gpus,
                now_ms,
            } => JobsQueryResult::Claimable(self.claimable(spec, shared_gpus, *now_ms)),
            JobsQuery::Workflow(id) => JobsQueryResult::Workflow(
                crate::JobId::parse(id)
                    .and_then(|w| self.workflow(w))
                    .map(Box::new),
            ),
        }
    }
}
