//! Job queues: what a queue or job request means, whichever front it came
//! through. Queue definitions live in the placement group's catalog, jobs
//! in the shard groups of their queue's partitions; this node's execution
//! engine (when it has workers) claims from them like any worker.

mod authz;
pub use authz::JobAction;
mod background;
mod bulk;
mod catalog;
mod claim;
mod complete;
mod engine_source;
pub mod events_hub;
mod logs;
mod read;
mod submit;
mod workflows;
pub use workflows::{StepArgs, WorkflowArgs};

pub use catalog::QueueInfo;
pub use logs::{JobLogs, LogEvent};

use crate::api::ApiError;
use crate::node::Node;
use orrery_queue::{JobsQuery, JobsQueryResult, QueueCommand, QueueResponse, Resources, RunFacts};
use orrery_types::{shard_group, GroupId, NodeId};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

pub use crate::api::limits::MAX_QUEUE_NAME;

/// Checks, at submit, the params of job kinds another domain adds (policy
/// runs and backtests), so that a mistake is a 400 rather than a job that
/// fails later. Registered after construction: the domain that adds the
/// kinds submits its jobs through this service.
#[async_trait::async_trait]
pub trait KindCheck: Send + Sync {
    async fn check(&self, kind: &str, params: &Value) -> Result<(), ApiError>;
}

/// The job queues of one node, and its execution engine.
pub struct JobsService {
    node: Arc<Node>,
    /// The execution engine, once started (never with `--workers 0`).
    engine: OnceLock<Arc<orrery_exec::Engine>>,
    /// Notified on every local enqueue (and retry) so that waiting claims
    /// look again at once.
    wake: Notify,
    /// Notifies event-stream followers of new events (one watcher per node).
    pub events: events_hub::EventsHub,
    /// For reading logs from the node that ran an attempt.
    http: OnceLock<reqwest::Client>,
    kind_check: OnceLock<Arc<dyn KindCheck>>,
}

/// A job submission as the fronts receive it.
#[derive(Clone, Debug, Default)]
pub struct SubmitArgs {
    pub queue: String,
    pub kind: String,
    pub params: Value,
    pub priority: i32,
    pub run_at_ms: Option<u64>,
    pub delay_ms: Option<u64>,
    pub resources: Resources,
    pub dedupe_key: Option<String>,
    /// Set by the service itself (policies' jobs); the fronts' callers
    /// are named by `caller` instead.
    pub submitted_by: Option<String>,
    /// Who submits (the fronts set it from the request); `None`: the node
    /// itself on a policy's behalf.
    pub caller: Option<crate::auth::Caller>,
}

/// A claim as the fronts receive it.
#[derive(Clone, Debug)]
pub struct ClaimArgs {
    pub worker_id: String,
    pub kinds: Vec<String>,
    pub lease_s: Option<u32>,
    pub wait: Duration,
    pub max: u32,
    pub free_gpus: Vec<(String, u64)>,
    /// GPUs the worker's running `shared_gpu` jobs hold, offered to more
    /// shared jobs only: `(uuid, free MiB)`.
    pub shared_gpus: Vec<(String, u64)>,
    pub free_cpus: Option<u32>,
    /// The node whose engine claims (0: an external worker).
    pub node: NodeId,
}

/// One completion (of a bulk complete, or sent with a claim).
#[derive(Clone, Debug)]
pub struct CompleteArgs {
    pub id: String,
    pub token: u32,
    pub result: Value,
    pub facts: RunFacts,
}

/// Queue creation parameters (defaults applied by [`JobsService::create_queue`]).
#[derive(Clone, Debug, Default)]
pub struct QueueArgs {
    pub name: String,
    pub partitions: Option<u32>,
    pub lease_s: Option<u32>,
    pub max_attempts: Option<u32>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_multiplier: Option<f64>,
    pub backoff_max_ms: Option<u64>,
    pub concurrency_limit: Option<u32>,
}

fn unexpected<T: std::fmt::Debug>(r: T) -> ApiError {
    ApiError::Internal(format!("unexpected response {r:?}"))
}

/// Queue and partition names, and the names a query filters on.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    crate::node::validate::name(field, name)
}

/// Parses a job id and returns its shard group, or 404.
pub fn job_group(id: &str) -> Result<GroupId, ApiError> {
    orrery_queue::job_shard(id)
        .map(shard_group)
        .ok_or_else(|| ApiError::NotFound(format!("job {id:?} does not exist (not a job id)")))
}

/// When every item of a bulk request failed with the same retryable error
/// (no quorum, outcome unknown), the request answers with that error and
/// its status (503 + Retry-After), like a single request would.
pub fn all_failed<T>(results: &[Result<T, ApiError>]) -> Option<ApiError> {
    let first = results.first()?.as_ref().err()?;
    let retryable = matches!(
        first,
        ApiError::Unavailable(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::NotInitialized
            | ApiError::StorageUnavailable(_)
            | ApiError::Overloaded(_)
    );
    let same = results
        .iter()
        .all(|r| matches!(r, Err(e) if e.http_status() == first.http_status()));
    (retryable && same).then(|| first.clone())
}

/// `e` with its message prefixed by where in a bulk request it happened.
pub fn at(place: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::BadRequest { code, message } => ApiError::BadRequest {
            code,
            message: format!("{place}: {message}"),
        },
        ApiError::NotFound(m) => ApiError::NotFound(format!("{place}: {m}")),
        ApiError::Conflict(m) => ApiError::Conflict(format!("{place}: {m}")),
        ApiError::TooLarge(m) => ApiError::TooLarge(format!("{place}: {m}")),
        other => other,
    }
}

impl JobsService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            engine: OnceLock::new(),
            wake: Notify::new(),
            events: events_hub::EventsHub::default(),
            http: OnceLock::new(),
            kind_check: OnceLock::new(),
        }
    }

    /// Registers the check of other domains' job kinds (once; later calls
    /// are ignored).
    pub fn set_kind_check(&self, check: Arc<dyn KindCheck>) {
        let _ = self.kind_check.set(check);
    }

    /// This node's GPUs as its engine last saw them, and those running jobs
    /// hold (none without an engine).
    pub fn local_gpus(&self) -> (Vec<orrery_exec::GpuInfo>, Vec<String>) {
        match self.engine.get() {
            Some(e) => (e.gpus(), e.gpus_held()),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// A queue command on `group`; a rejection is the error it maps to.
    async fn queue_write(
        &self,
        group: GroupId,
        cmd: QueueCommand,
    ) -> Result<QueueResponse, ApiError> {
        match self.node.write(group, cmd).await? {
            QueueResponse::Rejected(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    async fn jobs_read(
        &self,
        group: GroupId,
        q: JobsQuery,
        linearizable: bool,
    ) -> Result<JobsQueryResult, ApiError> {
        self.node.read(group, q, linearizable).await
    }

    /// The client for other nodes' client ports (job logs live on the node
    /// that ran the job). On a secure cluster it trusts the cluster CA and
    /// shows this node's certificate, which the other node's guard reads
    /// as a node identity (reads only).
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            let b = reqwest::Client::builder();
            let b = match self.node.cfg.certs.as_ref().map(|c| c.client_config()) {
                Some(Ok(tls)) => b.use_preconfigured_tls(tls),
                Some(Err(e)) => {
                    tracing::error!("client TLS for job logs: {e}");
                    b
                }
                None => b,
            };
            b.build().unwrap_or_default()
        })
    }

    /// `https` on a secure cluster, `http` with `--insecure`.
    fn scheme(&self) -> &'static str {
        if self.node.cfg.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orrery_queue::{JobState, QueueError};

    #[test]
    fn job_ids_route_to_their_shard() {
        let id = orrery_queue::JobId::new(1_700_000_000_000, 2, 77);
        assert_eq!(job_group(&id.to_string()).unwrap(), shard_group(2));
        assert!(matches!(job_group("nope"), Err(ApiError::NotFound(_))));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("name", "ok-name_1.x").is_ok());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", "a/b").is_err());
        assert!(check_name("name", &"a".repeat(MAX_QUEUE_NAME + 1)).is_err());
    }

    #[test]
    fn stale_tokens_are_conflicts() {
        let e = ApiError::from(QueueError::StaleToken {
            job_id: "j".into(),
            token: 1,
            state: JobState::Running,
            attempts: 2,
        });
        assert_eq!(e.http_status(), axum::http::StatusCode::CONFLICT);
        assert_eq!(
            ApiError::from(QueueError::ResultTooLarge(5)).http_status(),
            axum::http::StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn only_uniform_retryable_failures_fail_a_bulk_request() {
        let u = || Err::<(), _>(ApiError::unavailable("no quorum"));
        assert!(all_failed(&[u(), u()]).is_some());
        assert!(all_failed(&[u(), Ok(())]).is_none());
        assert!(all_failed(&[Err::<(), _>(ApiError::Conflict("x".into()))]).is_none());
        let e = at("jobs[3]", ApiError::bad("invalid_field", "priority"));
        assert_eq!(e.to_string(), "jobs[3]: priority");
    }
}
