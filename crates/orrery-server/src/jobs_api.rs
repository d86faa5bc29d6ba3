//! Job queues on the node: validation, routing of queue commands (catalog
//! to the placement group, jobs to shard groups), claims with long-poll,
//! the lease-expiry sweep, the GPU inventory report, and the execution
//! engine's [`JobSource`]. Shared by the REST and gRPC fronts.

use crate::api::error::ApiError;
use crate::node::ops::{Query, QueryResult};
use crate::node::Node;
use orrery_exec::{ClaimRequest, Claimed, HeartbeatReply, JobSource, RunReport, SourceError};
use orrery_queue::{
    Backoff, ClaimSpec, Completion, Event, GpuRecord, GpuReport, Job, JobState, NewJob,
    QueueCommand, QueueError, QueueResponse, QueueSpec, Resources, RunFacts, Settlement,
};
use orrery_raft::{Command, Response};
use orrery_types::{group_shard, shard_group, stable_hash, GroupId, NodeId, PLACEMENT_GROUP};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

pub const MAX_QUEUE_NAME: usize = 128;
pub const MAX_PARTITIONS: u32 = 256;
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;
pub const MAX_WAIT_S: u64 = 60;
pub const MAX_CLAIM_BATCH: u32 = 256;
pub const DEFAULT_JOB_LIMIT: usize = 100;
pub const MAX_JOB_LIMIT: usize = 1000;
/// How often idle long-polls re-check the shards (a local enqueue wakes
/// them at once).
const POLL_EVERY: Duration = Duration::from_millis(200);

pub use orrery_queue::{JobsQuery, JobsQueryResult};

/// `(queue, partition, its share of the concurrency limit)`.
pub type PartitionSlot = (String, u32, Option<u32>);

/// Per-node job runtime: the execution engine (when started) and the
/// wake-up for long-polling claims.
#[derive(Default)]
pub struct JobsRuntime {
    pub engine: OnceLock<Arc<orrery_exec::Engine>>,
    /// Notified on every local enqueue/retry-worthy event so waiting claims
    /// look again at once.
    pub wake: Notify,
    http: OnceLock<reqwest::Client>,
}

impl JobsRuntime {
    pub fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(reqwest::Client::new)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Maps a module rejection to the API's errors (409 for stale tokens).
pub fn queue_error(e: QueueError) -> ApiError {
    match &e {
        QueueError::QueueExists(_)
        | QueueError::StaleToken { .. }
        | QueueError::AlreadyFinished { .. } => ApiError::Conflict(e.to_string()),
        QueueError::UnknownQueue(_) | QueueError::UnknownJob(_) => {
            ApiError::NotFound(e.to_string())
        }
        QueueError::ResultTooLarge(_) | QueueError::BatchTooLarge(_) => {
            ApiError::TooLarge(e.to_string())
        }
    }
}

/// A job submission as the API receives it.
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
    pub submitted_by: Option<String>,
}

/// A claim as the API receives it.
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
    pub node: NodeId,
}

/// Finished jobs forgotten per log entry when their retention has passed,
/// and entries per sweep (every 500 ms): up to 8 000 jobs/s per shard.
const PRUNE_BATCH: u32 = 1000;
const PRUNE_ENTRIES_PER_SWEEP: usize = 4;

/// What a claim gives back: the leased jobs (empty: none within the wait)
/// and, in order, the outcome of each completion sent with it.
#[derive(Debug)]
pub struct ClaimOutcome {
    pub jobs: Vec<Job>,
    pub completed: Vec<Result<Job, ApiError>>,
}

/// Queue creation parameters (defaults applied by [`Node::create_queue`]).
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

pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_QUEUE_NAME {
        return Err(ApiError::bad(
            "invalid_name",
            format!("{field} must be 1..={MAX_QUEUE_NAME} characters"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ApiError::bad(
            "invalid_name",
            format!("{field} may contain only letters, digits, '-', '_' and '.', got {name:?}"),
        ));
    }
    Ok(())
}

/// A submission checked and routed, ready to propose.
struct PreparedJob {
    group: GroupId,
    job: NewJob,
}

/// One completion of a bulk complete, as the API receives it.
#[derive(Clone, Debug)]
pub struct CompleteArgs {
    pub id: String,
    pub token: u32,
    pub result: Value,
    pub facts: RunFacts,
}

/// Bytes of payload per bulk log entry: large entries replicate slowly
/// (one AppendEntries must carry them within the heartbeat-sized timeout),
/// so a bulk request is split into entries of about this size.
const BULK_ENTRY_BYTES: usize = 128 * 1024;

fn check_batch(field: &str, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad(
            &format!("invalid_{field}"),
            format!("{field} must hold at least one item"),
        ));
    }
    if n > orrery_queue::MAX_BATCH {
        return Err(ApiError::TooLarge(format!(
            "{n} {field} in one request; the limit is {}",
            orrery_queue::MAX_BATCH
        )));
    }
    Ok(())
}

/// Splits `items` into runs of at most [`BULK_ENTRY_BYTES`] (by `size`;
/// an item larger than that goes alone) and [`orrery_queue::MAX_BATCH`].
fn chunks<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut cur: Vec<T> = Vec::new();
    let mut bytes = 0usize;
    for it in items {
        let b = size(&it);
        if !cur.is_empty() && (bytes + b > BULK_ENTRY_BYTES || cur.len() >= orrery_queue::MAX_BATCH)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += b;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The completions of a bulk request by shard group, and a result slot per
/// item; items that cannot be written (bad id, oversized result) already
/// hold their error.
#[allow(clippy::type_complexity)]
fn completions_by_group(
    items: Vec<CompleteArgs>,
) -> (
    Vec<Option<Result<Job, ApiError>>>,
    BTreeMap<GroupId, Vec<(usize, Completion)>>,
) {
    let cap = orrery_queue::MAX_RESULT_BYTES;
    let mut out: Vec<Option<Result<Job, ApiError>>> = vec![None; items.len()];
    let mut by_group: BTreeMap<GroupId, Vec<(usize, Completion)>> = BTreeMap::new();
    for (i, c) in items.into_iter().enumerate() {
        let g = match job_group(&c.id) {
            Ok(g) => g,
            Err(e) => {
                out[i] = Some(Err(e));
                continue;
            }
        };
        let result = c.result.to_string();
        if result.len() > cap {
            out[i] = Some(Err(ApiError::TooLarge(format!(
                "result is {} bytes; the limit is {cap} bytes",
                result.len()
            ))));
            continue;
        }
        by_group.entry(g).or_default().push((
            i,
            Completion {
                job_id: c.id,
                token: c.token,
                result,
                facts: c.facts,
            },
        ));
    }
    (out, by_group)
}

/// A completion's response as the job it finished (or what refused it).
fn completed_job(r: QueueResponse) -> Result<Job, QueueResponse> {
    match r {
        QueueResponse::Job(j) => Ok(*j),
        other => Err(other),
    }
}

/// One item's API result from its queue response.
fn item_result(r: QueueResponse) -> Result<Job, ApiError> {
    match completed_job(r) {
        Ok(j) => Ok(j),
        Err(QueueResponse::Rejected(e)) => Err(queue_error(e)),
        Err(other) => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
    }
}

/// The per-item responses of one bulk write (`n` items), or its error for
/// every item.
fn spread(n: usize, r: Result<QueueResponse, ApiError>) -> Vec<Result<QueueResponse, ApiError>> {
    match r {
        Ok(QueueResponse::Many(rs)) if rs.len() == n => rs.into_iter().map(Ok).collect(),
        Ok(QueueResponse::Many(rs)) => vec![
            Err(ApiError::Internal(format!(
                "{} responses for {n} items",
                rs.len()
            )));
            n
        ],
        Ok(other) => vec![Err(ApiError::Internal(format!("unexpected response {other:?}"))); n],
        Err(e) => vec![Err(e); n],
    }
}

/// When every item of a bulk request failed with the same retryable error
/// (no quorum, outcome unknown), the request answers with that error and
/// its status (503 + Retry-After), like a single request would.
pub fn all_failed<T>(results: &[Result<T, ApiError>]) -> Option<ApiError> {
    let first = results.first()?.as_ref().err()?;
    let retryable = matches!(
        first,
        ApiError::Unavailable(_) | ApiError::OutcomeUnknown(_) | ApiError::NotInitialized
    );
    let same = results
        .iter()
        .all(|r| matches!(r, Err(e) if e.http_status() == first.http_status()));
    (retryable && same).then(|| first.clone())
}

/// The results of a bulk request, one per item (an item no response
/// reached is an internal error, never silently dropped).
fn filled<T>(out: Vec<Option<Result<T, ApiError>>>) -> Vec<Result<T, ApiError>> {
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(ApiError::Internal("no response for this item".into()))))
        .collect()
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

/// Parses a job id and returns its shard group, or 404.
pub fn job_group(id: &str) -> Result<GroupId, ApiError> {
    orrery_queue::job_shard(id)
        .map(shard_group)
        .ok_or_else(|| ApiError::NotFound(format!("job {id:?} does not exist (not a job id)")))
}

impl Node {
    pub async fn queue_write(
        &self,
        group: GroupId,
        cmd: QueueCommand,
    ) -> Result<QueueResponse, ApiError> {
        match self.write(group, Command::Queue(cmd)).await? {
            Response::Queue(QueueResponse::Rejected(e)) => Err(queue_error(e)),
            Response::Queue(r) => Ok(r),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    pub async fn jobs_read(
        &self,
        group: GroupId,
        q: JobsQuery,
        linearizable: bool,
    ) -> Result<JobsQueryResult, ApiError> {
        match self.read(group, Query::Jobs(q), linearizable).await? {
            QueryResult::Jobs(r) => Ok(r),
            other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
        }
    }

    /// The catalog as this node's replica of group 0 has it (may lag).
    fn local_catalog(&self) -> BTreeMap<String, QueueSpec> {
        self.placement_group()
            .map(|g| g.sm.read(|s| s.queue.queues().clone()))
            .unwrap_or_default()
    }

    async fn catalog(&self) -> Result<(Vec<QueueSpec>, BTreeMap<NodeId, GpuReport>), ApiError> {
        match self
            .jobs_read(PLACEMENT_GROUP, JobsQuery::Catalog, true)
            .await?
        {
            JobsQueryResult::Catalog { queues, gpus } => Ok((queues, gpus)),
            other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
        }
    }

    /// A queue's definition: the local copy, or (when absent locally, e.g.
    /// just created through another node) the placement leader's.
    /// Used on the enqueue path; reads and deletes use [`Node::queue_spec_fresh`].
    pub async fn queue_spec(&self, name: &str) -> Result<QueueSpec, ApiError> {
        if let Some(q) = self.local_catalog().get(name) {
            return Ok(q.clone());
        }
        self.queue_spec_fresh(name).await
    }

    /// A queue's definition read through the placement leader
    /// (linearizable: a create or delete that returned is visible).
    pub async fn queue_spec_fresh(&self, name: &str) -> Result<QueueSpec, ApiError> {
        let (queues, _) = self.catalog().await?;
        queues
            .into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("queue {name:?} does not exist")))
    }

    /// Partition `p` of `queue` lives on this shard group: partitions are
    /// consecutive shards from a per-queue hashed start, so the partitions
    /// of one queue spread over all shards and queues start on different ones.
    pub fn partition_group(&self, queue: &str, p: u32) -> Result<GroupId, ApiError> {
        let n = self.shard_groups()?.len() as u64;
        Ok(shard_group(
            ((stable_hash(queue.as_bytes()) + p as u64) % n) as u32,
        ))
    }

    pub async fn create_queue(&self, a: QueueArgs) -> Result<QueueSpec, ApiError> {
        check_name("name", &a.name)?;
        let shards = self.shard_groups()?.len() as u32;
        let lease_s = a.lease_s.unwrap_or(30);
        if !(1..=86_400).contains(&lease_s) {
            return Err(ApiError::bad(
                "invalid_lease_s",
                "lease_s must be 1..=86400",
            ));
        }
        let max_attempts = a.max_attempts.unwrap_or(3);
        if !(1..=1000).contains(&max_attempts) {
            return Err(ApiError::bad(
                "invalid_max_attempts",
                "max_attempts must be 1..=1000",
            ));
        }
        if a.concurrency_limit == Some(0) {
            return Err(ApiError::bad(
                "invalid_concurrency_limit",
                "concurrency_limit must be at least 1",
            ));
        }
        let default_parts = match a.concurrency_limit {
            Some(l) => shards.min(l),
            None => shards,
        };
        let partitions = a.partitions.unwrap_or(default_parts);
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(ApiError::bad(
                "invalid_partitions",
                format!("partitions must be 1..={MAX_PARTITIONS}"),
            ));
        }
        if let Some(l) = a.concurrency_limit {
            if l < partitions {
                return Err(ApiError::bad(
                    "invalid_concurrency_limit",
                    format!("concurrency_limit ({l}) must be at least partitions ({partitions}): the limit is split over partitions"),
                ));
            }
        }
        let mult = a.backoff_multiplier.unwrap_or(2.0);
        if !(1.0..=100.0).contains(&mult) {
            return Err(ApiError::bad(
                "invalid_backoff",
                "backoff.multiplier must be 1.0..=100.0",
            ));
        }
        let initial_ms = a.backoff_initial_ms.unwrap_or(1000);
        let max_ms = a.backoff_max_ms.unwrap_or(60_000);
        if max_ms < initial_ms || max_ms > 86_400_000 {
            return Err(ApiError::bad(
                "invalid_backoff",
                "backoff.max_ms must be >= backoff.initial_ms and at most one day",
            ));
        }
        let spec = QueueSpec {
            name: a.name,
            partitions,
            lease_s,
            max_attempts,
            backoff: Backoff {
                initial_ms,
                multiplier_milli: (mult * 1000.0).round() as u32,
                max_ms,
            },
            concurrency_limit: a.concurrency_limit,
            created_ms: now_ms(),
        };
        match self
            .queue_write(PLACEMENT_GROUP, QueueCommand::CreateQueue(spec))
            .await?
        {
            QueueResponse::QueueCreated(s) => Ok(s),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    pub async fn list_queues(&self) -> Result<Vec<QueueSpec>, ApiError> {
        Ok(self.catalog().await?.0)
    }

    /// Counts per state over all partitions, and the oldest queued job's age.
    pub async fn queue_counts(
        &self,
        spec: &QueueSpec,
    ) -> Result<(BTreeMap<JobState, u64>, Option<u64>), ApiError> {
        let mut groups: Vec<GroupId> = (0..spec.partitions)
            .map(|p| self.partition_group(&spec.name, p))
            .collect::<Result<_, _>>()?;
        groups.sort_unstable();
        groups.dedup();
        let futs = groups
            .into_iter()
            .map(|g| self.jobs_read(g, JobsQuery::Counts(spec.name.clone()), true));
        let mut counts: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        let mut oldest: Option<u64> = None;
        for r in futures::future::join_all(futs).await {
            match r? {
                JobsQueryResult::Counts(c, o) => {
                    for (s, n) in c {
                        *counts.entry(s).or_default() += n;
                    }
                    if let Some(o) = o {
                        oldest = Some(oldest.map_or(o, |x| x.min(o)));
                    }
                }
                other => return Err(ApiError::Internal(format!("unexpected result {other:?}"))),
            }
        }
        Ok((counts, oldest))
    }

    /// Deletes a queue with no queued or running job. Racy by design: a job
    /// enqueued between the count and the delete stays in its shard
    /// (readable, cancellable, claimable by workers that name no queue),
    /// but no new job can be enqueued once the delete is applied.
    pub async fn delete_queue(&self, name: &str) -> Result<(), ApiError> {
        let spec = self.queue_spec_fresh(name).await?;
        let (counts, _) = self.queue_counts(&spec).await?;
        let live = counts.get(&JobState::Queued).copied().unwrap_or(0)
            + counts.get(&JobState::Running).copied().unwrap_or(0);
        if live > 0 {
            return Err(ApiError::Conflict(format!(
                "queue {name:?} still has {live} queued or running jobs; cancel them first"
            )));
        }
        self.queue_write(
            PLACEMENT_GROUP,
            QueueCommand::DeleteQueue { name: name.into() },
        )
        .await
        .map(|_| ())
    }

    /// Checks a submission and resolves where it goes (its partition's
    /// shard group) and what the shard is told (the queue's settings).
    /// `specs` caches queue definitions (and the partitions this node
    /// leads) across the jobs of one request.
    async fn prepare_job(
        &self,
        a: SubmitArgs,
        now: u64,
        specs: &mut BTreeMap<String, (QueueSpec, Vec<u32>)>,
    ) -> Result<PreparedJob, ApiError> {
        check_name("queue", &a.queue)?;
        if a.kind.is_empty() || a.kind.len() > 128 {
            return Err(ApiError::bad(
                "invalid_kind",
                "kind must be 1..=128 characters",
            ));
        }
        if let Err(m) = orrery_exec::validate_params(&a.kind, &a.params) {
            return Err(ApiError::bad("invalid_params", m));
        }
        crate::service::policies::jobs::check_job(self, &a.kind, &a.params).await?;
        let params = a.params.to_string();
        if params.len() > MAX_PARAMS_BYTES {
            return Err(ApiError::TooLarge(format!(
                "params are {} bytes; the limit is {MAX_PARAMS_BYTES} bytes",
                params.len()
            )));
        }
        if let Some(k) = &a.dedupe_key {
            if k.is_empty() || k.len() > 256 {
                return Err(ApiError::bad(
                    "invalid_dedupe_key",
                    "dedupe_key must be 1..=256 characters",
                ));
            }
        }
        if a.resources.gpus > 64 {
            return Err(ApiError::bad(
                "invalid_resources",
                "resources.gpus must be at most 64",
            ));
        }
        let (spec, local) = match specs.get(&a.queue) {
            Some(s) => s.clone(),
            None => {
                let s = self.queue_spec(&a.queue).await?;
                let local = self.led_partitions(&s);
                specs.insert(a.queue.clone(), (s.clone(), local.clone()));
                (s, local)
            }
        };
        // A dedupe key always lands in the same partition, so the shard's
        // dedupe index sees every submission with that key. Other jobs go
        // to a partition this node leads when there is one: no forwarding
        // hop, and the jobs of a bulk submit make one entry, not one per
        // shard. Workers claim from every partition, so where a job waits
        // does not change who can run it.
        let partition = match &a.dedupe_key {
            Some(k) => (stable_hash(k.as_bytes()) % spec.partitions as u64) as u32,
            None if !local.is_empty() => local[self.metrics.next_rotation() % local.len()],
            None => (self.metrics.next_rotation() as u64 % spec.partitions as u64) as u32,
        };
        let group = self.partition_group(&a.queue, partition)?;
        let run_at_ms = match (a.run_at_ms, a.delay_ms) {
            (Some(t), _) => Some(t),
            (None, Some(d)) => Some(now + d),
            (None, None) => None,
        };
        let job = NewJob {
            queue: a.queue,
            partition,
            kind: a.kind,
            params,
            priority: a.priority,
            run_at_ms,
            resources: a.resources,
            dedupe_key: a.dedupe_key,
            submitted_by: a.submitted_by,
            max_attempts: spec.max_attempts,
            lease_s: spec.lease_s,
            backoff: spec.backoff,
        };
        Ok(PreparedJob { group, job })
    }

    pub async fn submit_job(&self, a: SubmitArgs) -> Result<(Job, bool), ApiError> {
        let now = now_ms();
        let PreparedJob { group, job } = self.prepare_job(a, now, &mut BTreeMap::new()).await?;
        match self
            .queue_write(
                group,
                QueueCommand::Enqueue {
                    shard: group_shard(group).unwrap_or(0),
                    job,
                    now_ms: now,
                },
            )
            .await?
        {
            QueueResponse::Enqueued { job, created } => {
                self.jobs.wake.notify_waiters();
                Ok((*job, created))
            }
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Bulk submit. Every job is checked first (one invalid job refuses the
    /// whole request, naming `jobs[i]`, and nothing is enqueued); then the
    /// jobs of each shard go in one log entry per chunk, all shards at once.
    /// Returns one result per job, in order: a shard that cannot commit
    /// fails only its own jobs.
    pub async fn submit_jobs(
        &self,
        items: Vec<SubmitArgs>,
    ) -> Result<Vec<Result<(Job, bool), ApiError>>, ApiError> {
        check_batch("jobs", items.len())?;
        let now = now_ms();
        let n = items.len();
        let mut by_group: BTreeMap<GroupId, Vec<(usize, NewJob)>> = BTreeMap::new();
        let mut specs = BTreeMap::new();
        for (i, a) in items.into_iter().enumerate() {
            let p = self
                .prepare_job(a, now, &mut specs)
                .await
                .map_err(|e| at(&format!("jobs[{i}]"), e))?;
            by_group.entry(p.group).or_default().push((i, p.job));
        }
        let mut out = vec![None; n];
        self.bulk_write(
            by_group,
            |(_, j)| j.params.len() + j.kind.len() + j.queue.len(),
            |group, jobs| QueueCommand::EnqueueMany {
                shard: group_shard(group).unwrap_or(0),
                jobs,
                now_ms: now,
            },
            |r| match r {
                QueueResponse::Enqueued { job, created } => Ok((*job, created)),
                other => Err(other),
            },
            &mut out,
        )
        .await;
        self.jobs.wake.notify_waiters();
        Ok(filled(out))
    }

    /// Proposes the items of a bulk request: per shard group, its items in
    /// chunks ([`chunks`]) one after the other, so that they keep their
    /// order; the groups concurrently. `out[i]` gets item `i`'s result
    /// (`item` maps its response; anything it hands back is unexpected).
    async fn bulk_write<I, T>(
        &self,
        by_group: BTreeMap<GroupId, Vec<(usize, I)>>,
        size: impl Fn(&(usize, I)) -> usize + Copy,
        cmd: impl Fn(GroupId, Vec<I>) -> QueueCommand + Copy,
        item: impl Fn(QueueResponse) -> Result<T, QueueResponse>,
        out: &mut [Option<Result<T, ApiError>>],
    ) {
        let writes = by_group.into_iter().map(|(group, items)| async move {
            let mut done = Vec::new();
            for chunk in chunks(items, size) {
                let (idx, items): (Vec<usize>, Vec<I>) = chunk.into_iter().unzip();
                let r = self.queue_write(group, cmd(group, items)).await;
                done.push((idx, r));
            }
            done
        });
        for (idx, r) in futures::future::join_all(writes)
            .await
            .into_iter()
            .flatten()
        {
            for (i, r) in spread(idx.len(), r).into_iter().enumerate() {
                out[idx[i]] = Some(r.and_then(|r| match item(r) {
                    Ok(t) => Ok(t),
                    Err(QueueResponse::Rejected(e)) => Err(queue_error(e)),
                    Err(other) => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
                }));
            }
        }
    }

    pub async fn get_job(&self, id: &str) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        match self.jobs_read(g, JobsQuery::Job(id.into()), true).await? {
            JobsQueryResult::Job(Some(j)) => Ok(*j),
            JobsQueryResult::Job(None) => Err(queue_error(QueueError::UnknownJob(id.into()))),
            other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
        }
    }

    /// Why a queued job is not running (None when nothing stands out).
    pub async fn waiting_reason(&self, job: &Job) -> Option<String> {
        if job.state != JobState::Queued {
            return None;
        }
        let now = now_ms();
        if job.run_at_ms > now {
            return Some(format!(
                "waiting: run_at is {} ms from now{}",
                job.run_at_ms - now,
                if job.attempts > 0 {
                    " (retry backoff)"
                } else {
                    ""
                }
            ));
        }
        if job.resources.gpus > 0 {
            let gpus = self
                .placement_group()
                .map(|g| g.sm.read(|s| s.queue.gpu_reports().clone()))
                .unwrap_or_default();
            let n = job.resources.gpus;
            let fits = gpus.values().any(|r| {
                r.gpus
                    .iter()
                    .filter(|g| g.memory_total_mb >= job.resources.gpu_memory_mb)
                    .count()
                    >= n as usize
            });
            let plural = if n == 1 { "" } else { "s" };
            return Some(if fits {
                format!("waiting: for a node with {n} free GPU{plural} (all busy)")
            } else if job.resources.gpu_memory_mb > 0 {
                format!(
                    "waiting: no node has {n} free GPU{plural} with {} MiB",
                    job.resources.gpu_memory_mb
                )
            } else {
                format!("waiting: no node has {n} free GPU{plural}")
            });
        }
        None
    }

    /// Jobs from every shard, merged in id (= submission time) order.
    pub async fn list_jobs(
        &self,
        queue: Option<String>,
        state: Option<JobState>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Job>, ApiError> {
        if limit == 0 || limit > MAX_JOB_LIMIT {
            return Err(ApiError::bad(
                "invalid_limit",
                format!("limit must be 1..={MAX_JOB_LIMIT}, got {limit}"),
            ));
        }
        if let Some(q) = &queue {
            check_name("queue", q)?;
        }
        let futs = self.shard_groups()?.into_iter().map(|g| {
            let q = JobsQuery::List {
                queue: queue.clone(),
                state,
                after: after.clone(),
                limit,
            };
            async move { self.jobs_read(g, q, true).await }
        });
        let mut jobs = Vec::new();
        for r in futures::future::join_all(futs).await {
            match r? {
                JobsQueryResult::List(mut part) => jobs.append(&mut part),
                other => return Err(ApiError::Internal(format!("unexpected result {other:?}"))),
            }
        }
        jobs.sort_by_key(|j| j.id);
        jobs.truncate(limit);
        Ok(jobs)
    }

    pub async fn cancel_job(&self, id: &str) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        self.job_cmd(
            g,
            QueueCommand::Cancel {
                job_id: id.into(),
                now_ms: now_ms(),
            },
        )
        .await
    }

    async fn job_cmd(&self, g: GroupId, cmd: QueueCommand) -> Result<Job, ApiError> {
        match self.queue_write(g, cmd).await? {
            QueueResponse::Job(j) => Ok(*j),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Returns (cancelled, lease expiry).
    pub async fn heartbeat_job(&self, id: &str, token: u32) -> Result<(bool, u64), ApiError> {
        let g = job_group(id)?;
        match self
            .queue_write(
                g,
                QueueCommand::Heartbeat {
                    job_id: id.into(),
                    token,
                    now_ms: now_ms(),
                },
            )
            .await?
        {
            QueueResponse::Heartbeat {
                cancelled,
                expires_ms,
            } => Ok((cancelled, expires_ms)),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    pub async fn complete_job(
        &self,
        id: &str,
        token: u32,
        result: &Value,
        facts: RunFacts,
    ) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        let result = result.to_string();
        let cap = orrery_queue::MAX_RESULT_BYTES;
        if result.len() > cap {
            return Err(ApiError::TooLarge(format!(
                "result is {} bytes; the limit is {cap} bytes",
                result.len()
            )));
        }
        self.job_cmd(
            g,
            QueueCommand::Complete {
                job_id: id.into(),
                token,
                result,
                facts,
                now_ms: now_ms(),
            },
        )
        .await
    }

    /// Bulk complete: the completions of each shard go in one log entry per
    /// chunk, all shards at once. Each is checked on its own (a stale token
    /// or an unknown id fails that item only); one result per item, in order.
    pub async fn complete_jobs(
        &self,
        items: Vec<CompleteArgs>,
    ) -> Result<Vec<Result<Job, ApiError>>, ApiError> {
        check_batch("completions", items.len())?;
        let (mut out, by_group) = completions_by_group(items);
        self.write_completions(by_group, &mut out).await;
        Ok(filled(out))
    }

    async fn write_completions(
        &self,
        by_group: BTreeMap<GroupId, Vec<(usize, Completion)>>,
        out: &mut [Option<Result<Job, ApiError>>],
    ) {
        let now = now_ms();
        self.bulk_write(
            by_group,
            |(_, c)| c.result.len() + c.job_id.len(),
            |_, items| QueueCommand::CompleteMany { items, now_ms: now },
            completed_job,
            out,
        )
        .await;
    }

    pub async fn fail_job(
        &self,
        id: &str,
        token: u32,
        error: String,
        retry: bool,
        facts: RunFacts,
    ) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        let job = self
            .job_cmd(
                g,
                QueueCommand::Fail {
                    job_id: id.into(),
                    token,
                    error,
                    retry,
                    facts,
                    now_ms: now_ms(),
                },
            )
            .await?;
        if job.state == JobState::Queued {
            self.jobs.wake.notify_waiters();
        }
        Ok(job)
    }

    /// The partitions of `spec` whose shard this node leads now. Empty for
    /// a queue with a concurrency limit: the limit is split evenly over the
    /// partitions, so its jobs must stay spread over all of them.
    fn led_partitions(&self, spec: &QueueSpec) -> Vec<u32> {
        if spec.concurrency_limit.is_some() {
            return Vec::new();
        }
        (0..spec.partitions)
            .filter(|p| {
                self.partition_group(&spec.name, *p)
                    .ok()
                    .is_some_and(|g| self.leads(g))
            })
            .collect()
    }

    fn leads(&self, g: GroupId) -> bool {
        self.registry
            .get(g)
            .map(|gr| gr.raft.metrics().borrow().current_leader == Some(self.id()))
            .unwrap_or(false)
    }

    /// For each shard group: the `(queue, partition, limit)` triples a claim
    /// may take from. Groups this node leads come first (no forwarding hop).
    fn claim_plan(
        &self,
        queue: Option<&QueueSpec>,
    ) -> Result<Vec<(GroupId, Vec<PartitionSlot>)>, ApiError> {
        let catalog = self.local_catalog();
        let specs: Vec<&QueueSpec> = match queue {
            Some(q) => vec![q],
            None => catalog.values().collect(),
        };
        let mut plan: BTreeMap<GroupId, Vec<(String, u32, Option<u32>)>> = BTreeMap::new();
        for q in specs {
            for p in 0..q.partitions {
                plan.entry(self.partition_group(&q.name, p)?)
                    .or_default()
                    .push((q.name.clone(), p, q.partition_limit(p)));
            }
        }
        let mut v: Vec<_> = plan.into_iter().collect();
        // Rotate the start so that concurrent claimers spread over shards.
        let r = self.metrics.next_rotation() % v.len().max(1);
        v.rotate_left(r);
        v.sort_by_key(|(g, _)| !self.leads(*g));
        Ok(v)
    }

    /// Leases up to `a.max` jobs (of `queue`, or of any queue), waiting up
    /// to `a.wait` for one to become claimable.
    ///
    /// `done` are the jobs the worker finished since its last claim. They
    /// are all applied before the claim looks for work, each on its own as
    /// by [`Node::complete_jobs`]. Those of the shard the claim tries first
    /// share its log entry (a settlement), so a worker's steady state is one
    /// request and one entry per batch of jobs, not two.
    pub async fn claim_jobs(
        &self,
        queue: Option<&str>,
        a: ClaimArgs,
        done: Vec<CompleteArgs>,
    ) -> Result<ClaimOutcome, ApiError> {
        if a.worker_id.is_empty() || a.worker_id.len() > 256 {
            return Err(ApiError::bad(
                "invalid_worker_id",
                "worker_id must be 1..=256 characters",
            ));
        }
        if a.max == 0 || a.max > MAX_CLAIM_BATCH {
            return Err(ApiError::bad(
                "invalid_max",
                format!("max must be 1..={MAX_CLAIM_BATCH}"),
            ));
        }
        if let Some(l) = a.lease_s {
            if !(1..=86_400).contains(&l) {
                return Err(ApiError::bad(
                    "invalid_lease_s",
                    "lease_s must be 1..=86400",
                ));
            }
        }
        if !done.is_empty() {
            check_batch("complete", done.len())?;
        }
        let spec = match queue {
            Some(q) => Some(self.queue_spec(q).await?),
            None => None,
        };
        let (mut completed, mut by_group) = completions_by_group(done);
        let first_plan = self.claim_plan(spec.as_ref())?;
        // A settlement carries a plain claim: with shared GPUs on offer the
        // completions go in entries of their own.
        let mut settle = first_plan
            .first()
            .filter(|_| a.shared_gpus.is_empty())
            .and_then(|(g, _)| by_group.remove(g).map(|items| (*g, items)));
        if let Some((g, items)) = settle.take() {
            let bytes: usize = items
                .iter()
                .map(|(_, c)| c.result.len() + c.job_id.len())
                .sum();
            if bytes <= BULK_ENTRY_BYTES {
                settle = Some((g, items));
            } else {
                by_group.insert(g, items);
            }
        }
        if !by_group.is_empty() {
            self.write_completions(by_group, &mut completed).await;
        }
        let outcome = |jobs, completed| ClaimOutcome {
            jobs,
            completed: filled(completed),
        };
        let deadline = Instant::now() + a.wait;
        let mut last_err: Option<ApiError> = None;
        let mut plan = Some(first_plan);
        loop {
            let wake = self.jobs.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let groups = match plan.take() {
                Some(p) => p,
                None => self.claim_plan(spec.as_ref())?,
            };
            for (g, partitions) in groups {
                let cs = ClaimSpec {
                    worker_id: a.worker_id.clone(),
                    node: a.node,
                    kinds: a.kinds.clone(),
                    partitions,
                    free_gpus: a.free_gpus.clone(),
                    free_cpus: a.free_cpus,
                    max: a.max,
                    lease_s: a.lease_s,
                };
                let now = now_ms();
                if let Some((_, items)) = settle.take_if(|(sg, _)| *sg == g) {
                    let (idx, completions): (Vec<usize>, Vec<Completion>) =
                        items.into_iter().unzip();
                    let cmd = QueueCommand::Settle {
                        work: vec![Settlement {
                            completions,
                            claim: cs,
                        }],
                        now_ms: now,
                    };
                    let r = self.queue_write(g, cmd).await;
                    let mut rs = match r {
                        // One settlement, one item; anything else is
                        // reported by `spread` as a count mismatch.
                        Ok(QueueResponse::Many(ws)) => match <[QueueResponse; 1]>::try_from(ws) {
                            Ok([w]) => spread(idx.len() + 1, Ok(w)),
                            Err(ws) => spread(idx.len() + 1, Ok(QueueResponse::Many(ws))),
                        },
                        other => spread(idx.len() + 1, other),
                    };
                    let claimed = rs.pop();
                    for (i, r) in idx.into_iter().zip(rs) {
                        completed[i] = Some(r.and_then(item_result));
                    }
                    match claimed {
                        Some(Ok(QueueResponse::Claimed(jobs))) if !jobs.is_empty() => {
                            return Ok(outcome(jobs, completed));
                        }
                        Some(Err(e)) => last_err = Some(e),
                        _ => {}
                    }
                    continue;
                }
                // A cheap (stale) look first: most polls of an idle queue
                // then cost no Raft write.
                let look = if a.shared_gpus.is_empty() {
                    JobsQuery::Claimable {
                        spec: cs.clone(),
                        now_ms: now,
                    }
                } else {
                    JobsQuery::ClaimableSharing {
                        spec: cs.clone(),
                        shared_gpus: a.shared_gpus.clone(),
                        now_ms: now,
                    }
                };
                match self.jobs_read(g, look, false).await {
                    Ok(JobsQueryResult::Claimable(true)) => {}
                    Ok(_) => continue,
                    Err(e) => {
                        last_err = Some(e);
                        continue;
                    }
                }
                // Claims without shared GPUs keep the command that group
                // commit merges.
                let cmd = if a.shared_gpus.is_empty() {
                    QueueCommand::Claim {
                        spec: cs,
                        now_ms: now,
                    }
                } else {
                    QueueCommand::ClaimSharing {
                        spec: cs,
                        shared_gpus: a.shared_gpus.clone(),
                        now_ms: now,
                    }
                };
                match self.queue_write(g, cmd).await {
                    Ok(QueueResponse::Claimed(jobs)) if !jobs.is_empty() => {
                        return Ok(outcome(jobs, completed))
                    }
                    Ok(_) => {}
                    Err(e) => last_err = Some(e),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                // Nothing claimable and no shard reachable: say so rather
                // than 204, unless completions were reported (their outcomes
                // must reach the worker).
                return match last_err {
                    Some(e @ (ApiError::Unavailable(_) | ApiError::NotInitialized))
                        if a.wait.is_zero() && completed.is_empty() =>
                    {
                        Err(e)
                    }
                    _ => Ok(outcome(Vec::new(), completed)),
                };
            }
            let nap = POLL_EVERY.min(deadline - now);
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Events of every shard after `cursor` (one seq per shard), with the
    /// cursor to resume from.
    pub async fn events_since(
        &self,
        cursor: &[u64],
        limit: usize,
    ) -> Result<(Vec<(u32, Event)>, Vec<u64>), ApiError> {
        let groups = self.shard_groups()?;
        let mut next: Vec<u64> = groups
            .iter()
            .enumerate()
            .map(|(i, _)| cursor.get(i).copied().unwrap_or(0))
            .collect();
        let futs = groups.iter().enumerate().map(|(i, g)| {
            let since = next[i];
            async move {
                (
                    i,
                    self.jobs_read(*g, JobsQuery::Events { since, limit }, true)
                        .await,
                )
            }
        });
        let mut out = Vec::new();
        for (i, r) in futures::future::join_all(futs).await {
            match r? {
                JobsQueryResult::Events(evs) => {
                    if let Some(last) = evs.last() {
                        next[i] = last.seq;
                    }
                    out.extend(evs.into_iter().map(|e| (i as u32, e)));
                }
                other => return Err(ApiError::Internal(format!("unexpected result {other:?}"))),
            }
        }
        out.sort_by_key(|(s, e)| (e.ts_ms, *s, e.seq));
        Ok((out, next))
    }

    /// Every node's reported GPUs.
    pub async fn cluster_gpus(&self) -> Result<BTreeMap<NodeId, GpuReport>, ApiError> {
        Ok(self.catalog().await?.1)
    }

    /// Shard leaders expire leases that ended; runs every 500 ms.
    pub async fn run_lease_expiry(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
            for g in self.registry.all() {
                if g.id == PLACEMENT_GROUP
                    || g.raft.metrics().borrow().current_leader != Some(self.id())
                {
                    continue;
                }
                let now = now_ms();
                let due =
                    g.sm.read(|s| s.queue.next_expiry())
                        .is_some_and(|e| e <= now);
                if due {
                    match self
                        .queue_write(g.id, QueueCommand::ExpireLeases { now_ms: now })
                        .await
                    {
                        Ok(QueueResponse::Expired(n)) if n > 0 => {
                            tracing::info!(group = g.id, expired = n, "job leases expired");
                            self.jobs.wake.notify_waiters();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(group = g.id, "lease expiry: {e}"),
                    }
                }
                // Finished jobs past the retention period are forgotten, a
                // bounded number per entry so that no apply stalls the shard.
                let retention = self.cfg.job_retention.as_millis() as u64;
                let before_ms = now.saturating_sub(retention);
                let prunable =
                    g.sm.read(|s| s.queue.oldest_finished())
                        .is_some_and(|t| t < before_ms);
                // A few entries per sweep at most, so that a backlog of
                // expired jobs drains without starving other writes.
                for _ in 0..PRUNE_ENTRIES_PER_SWEEP {
                    if !prunable {
                        break;
                    }
                    let cmd = QueueCommand::Prune {
                        before_ms,
                        max: PRUNE_BATCH,
                    };
                    match self.queue_write(g.id, cmd).await {
                        Ok(QueueResponse::Pruned(n)) => {
                            tracing::debug!(group = g.id, pruned = n, "finished jobs pruned");
                            if n < PRUNE_BATCH {
                                break;
                            }
                        }
                        Ok(_) => break,
                        Err(e) => {
                            tracing::debug!(group = g.id, "pruning finished jobs: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Reports the engine's GPU inventory to the placement group every 10 s
    /// (only when it changed, or at least once a minute).
    pub async fn run_gpu_report(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut last: Option<(Vec<GpuRecord>, Instant)> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(if last.is_none() { 1 } else { 10 })) => {}
                _ = shutdown.changed() => return,
            }
            let Some(engine) = self.jobs.engine.get() else {
                continue;
            };
            if !self.placement().is_initialized() {
                continue;
            }
            let gpus: Vec<GpuRecord> = engine
                .gpus()
                .into_iter()
                .map(|g| GpuRecord {
                    uuid: g.uuid,
                    index: g.index,
                    name: g.name,
                    memory_total_mb: g.memory_total_mb,
                    memory_used_mb: g.memory_used_mb,
                    utilization_pct: g.utilization_pct,
                    temperature_c: g.temperature_c,
                    compute_capability: g.compute_capability,
                })
                .collect();
            if let Some((prev, at)) = &last {
                if *prev == gpus && at.elapsed() < Duration::from_secs(60) {
                    continue;
                }
            }
            let cmd = QueueCommand::ReportGpus {
                node: self.id(),
                gpus: gpus.clone(),
                now_ms: now_ms(),
            };
            match self.queue_write(PLACEMENT_GROUP, cmd).await {
                Ok(_) => last = Some((gpus, Instant::now())),
                Err(e) => tracing::debug!("gpu report: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------
// The engine's job source
// ---------------------------------------------------------------------

/// The execution engine's view of the cluster: claims over every queue,
/// preferring shards this node leads.
pub struct NodeJobSource(pub Arc<Node>);

fn source_error(e: ApiError) -> SourceError {
    match e {
        ApiError::Conflict(m) | ApiError::NotFound(m) => SourceError::Conflict(m),
        ApiError::Unavailable(_) | ApiError::OutcomeUnknown(_) | ApiError::NotInitialized => {
            SourceError::Unavailable(e.to_string())
        }
        other => SourceError::Other(other.to_string()),
    }
}

fn facts(run: &RunReport) -> RunFacts {
    RunFacts {
        gpu_uuids: run.gpu_uuids.clone(),
        exit_code: run.exit_code,
        duration_ms: Some(run.duration_ms),
        gpu_peak_memory_mb: run.gpu_peak_memory_mb,
        gpu_mean_utilization_centi: run
            .gpu_mean_utilization_pct
            .filter(|u| u.is_finite() && *u >= 0.0)
            .map(|u| (u * 100.0).round() as u32),
    }
}

fn token(t: u64) -> Result<u32, SourceError> {
    u32::try_from(t).map_err(|_| SourceError::Conflict(format!("token {t} is not a lease token")))
}

/// GPUs as a claim offers them: `(uuid, free MiB)`.
fn offer(gpus: &[orrery_exec::GpuInfo]) -> Vec<(String, u64)> {
    gpus.iter()
        .map(|g| {
            (
                g.uuid.clone(),
                g.memory_total_mb.saturating_sub(g.memory_used_mb),
            )
        })
        .collect()
}

#[async_trait::async_trait]
impl JobSource for NodeJobSource {
    async fn claim(&self, req: ClaimRequest) -> Result<Option<Claimed>, SourceError> {
        if !self.0.placement().is_initialized() {
            tokio::time::sleep(req.wait.min(Duration::from_secs(1))).await;
            return Ok(None);
        }
        let args = ClaimArgs {
            worker_id: format!("node-{}/{}", self.0.id(), req.worker_id),
            kinds: req.kinds,
            lease_s: None,
            wait: req.wait,
            max: 1,
            free_gpus: offer(&req.free_gpus),
            shared_gpus: offer(&req.shared_gpus),
            free_cpus: Some(req.free_cpus),
            node: self.0.id(),
        };
        let jobs = self
            .0
            .claim_jobs(None, args, Vec::new())
            .await
            .map_err(source_error)?
            .jobs;
        let Some(j) = jobs.into_iter().next() else {
            return Ok(None);
        };
        let params = serde_json::from_str(&j.params).unwrap_or(Value::Null);
        Ok(Some(Claimed {
            job_id: j.id.to_string(),
            queue: j.queue.to_string(),
            kind: j.kind.to_string(),
            params,
            resources: orrery_exec::Resources {
                gpus: j.resources.gpus,
                gpu_memory_mb: j.resources.gpu_memory_mb,
                cpus: j.resources.cpus,
                shared_gpu: j.resources.shared_gpu,
            },
            token: j.attempts as u64,
            lease_s: j.lease_s,
        }))
    }

    async fn heartbeat(&self, job_id: &str, t: u64) -> Result<HeartbeatReply, SourceError> {
        let (cancelled, _) = self
            .0
            .heartbeat_job(job_id, token(t)?)
            .await
            .map_err(source_error)?;
        Ok(HeartbeatReply { cancelled })
    }

    async fn complete(
        &self,
        job_id: &str,
        t: u64,
        result: Value,
        run: RunReport,
    ) -> Result<(), SourceError> {
        match self
            .0
            .complete_job(job_id, token(t)?, &result, facts(&run))
            .await
        {
            Ok(_) => Ok(()),
            // The engine caps results itself; a result still too large
            // fails the attempt rather than being lost silently.
            Err(ApiError::TooLarge(m)) => self
                .0
                .fail_job(job_id, token(t)?, m, false, facts(&run))
                .await
                .map(|_| ())
                .map_err(source_error),
            Err(e) => Err(source_error(e)),
        }
    }

    async fn fail(
        &self,
        job_id: &str,
        t: u64,
        error: String,
        run: RunReport,
    ) -> Result<(), SourceError> {
        self.0
            .fail_job(job_id, token(t)?, error, true, facts(&run))
            .await
            .map(|_| ())
            .map_err(source_error)
    }
}

/// The JSON form of a job (params and result as JSON, not text).
/// A job as the API shows it. It is serialised straight into the response
/// body, without a `serde_json::Value` tree in between: submits and claims
/// answer with many jobs, and building those trees (a map insert per field)
/// was an eighth of a node's CPU in the batched job-queue benchmark.
#[derive(Serialize)]
pub struct JobView<'a> {
    id: orrery_queue::JobId,
    queue: &'a str,
    partition: u32,
    kind: &'a str,
    params: Embedded<'a>,
    priority: i32,
    state: &'static str,
    run_at_ms: u64,
    attempts: u32,
    max_attempts: u32,
    lease_s: u32,
    resources: ResourcesView,
    dedupe_key: Option<&'a str>,
    submitted_by: Option<&'a str>,
    result: Option<Embedded<'a>>,
    last_error: Option<&'a str>,
    created_ms: u64,
    updated_ms: u64,
    finished_ms: Option<u64>,
    cancel_requested: bool,
    lease: Option<LeaseView<'a>>,
    /// Submits: whether this request created the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<bool>,
    /// Claims: the lease token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<u32>,
}

#[derive(Serialize)]
struct ResourcesView {
    gpus: u32,
    gpu_memory_mb: u64,
    cpus: u32,
    shared_gpu: bool,
}

#[derive(Serialize)]
struct LeaseView<'a> {
    worker_id: &'a str,
    node: u64,
    expires_ms: u64,
}

/// Stored JSON text (a job's params or result), written into the answer as
/// the JSON it is; text that is not JSON (never stored by this version) as
/// a string.
struct Embedded<'a>(&'a str);

impl Serialize for Embedded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(self.0),
        }
    }
}

impl<'a> JobView<'a> {
    pub fn new(j: &'a Job) -> Self {
        JobView {
            id: j.id,
            queue: &j.queue,
            partition: j.partition,
            kind: &j.kind,
            params: Embedded(&j.params),
            priority: j.priority,
            state: j.state.as_str(),
            run_at_ms: j.run_at_ms,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            lease_s: j.lease_s,
            resources: ResourcesView {
                gpus: j.resources.gpus,
                gpu_memory_mb: j.resources.gpu_memory_mb,
                cpus: j.resources.cpus,
                shared_gpu: j.resources.shared_gpu,
            },
            dedupe_key: j.dedupe_key.as_deref(),
            submitted_by: j.submitted_by.as_deref(),
            result: j.result.as_deref().map(Embedded),
            last_error: j.last_error.as_deref(),
            created_ms: j.created_ms,
            updated_ms: j.updated_ms,
            finished_ms: j.finished_ms,
            cancel_requested: j.cancel_requested,
            lease: j.lease.as_ref().map(|l| LeaseView {
                worker_id: &l.worker_id,
                node: l.node,
                expires_ms: l.expires_ms,
            }),
            created: None,
            token: None,
        }
    }

    /// The job and whether this request created it, as a submit answers.
    pub fn submitted(j: &'a Job, created: bool) -> Self {
        JobView {
            created: Some(created),
            ..Self::new(j)
        }
    }

    /// The job with its lease token, as a claim answers.
    pub fn claimed(j: &'a Job) -> Self {
        JobView {
            token: Some(j.attempts),
            ..Self::new(j)
        }
    }
}

/// A job as a JSON value, for the answers that add fields to it.
pub fn job_json(j: &Job) -> Value {
    serde_json::to_value(JobView::new(j)).unwrap_or(Value::Null)
}

pub fn run_json(r: &orrery_queue::Run) -> Value {
    json!({
        "attempt": r.attempt,
        "node": r.node,
        "worker_id": r.worker_id,
        "gpu_uuids": r.facts.gpu_uuids,
        "started_ms": r.started_ms,
        "finished_ms": r.finished_ms,
        "outcome": r.outcome,
        "exit_code": r.facts.exit_code,
        "error": r.error,
        "duration_ms": r.facts.duration_ms,
        "gpu_peak_memory_mb": r.facts.gpu_peak_memory_mb,
        "gpu_mean_utilization_pct": r.facts.gpu_mean_utilization_centi.map(|c| c as f64 / 100.0),
    })
}

pub fn event_json(shard: u32, e: &Event) -> Value {
    let payload = serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null);
    json!({
        "id": format!("{shard}:{}", e.seq),
        "shard": shard,
        "seq": e.seq,
        "type": e.kind,
        "job_id": e.job_id,
        "queue": e.queue,
        "attempt": e.attempt,
        "payload": payload,
        "ts": e.ts_ms,
    })
}

/// Event cursors are one seq per shard joined by '.', e.g. `12.0.7`.
pub fn parse_cursor(s: &str) -> Result<Vec<u64>, ApiError> {
    if s.is_empty() || s == "0" {
        return Ok(Vec::new());
    }
    s.split('.')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ApiError::bad(
                "invalid_cursor",
                format!(
                    "since must be a cursor returned by /v1/events (seqs joined by '.'), got {s:?}"
                ),
            )
        })
}

pub fn cursor_string(c: &[u64]) -> String {
    c.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// Starts the lease-expiry sweep, and (with `workers > 0`) the execution
/// engine and its GPU inventory report.
/// `handlers` are the kinds other domains add to the engine (policies).
pub fn start_jobs(
    node: &Arc<Node>,
    stop: tokio::sync::watch::Receiver<bool>,
    handlers: Vec<(String, Arc<dyn orrery_exec::KindHandler>)>,
) {
    tokio::spawn(node.clone().run_lease_expiry(stop.clone()));
    if node.cfg.workers == 0 {
        tracing::info!("no job workers on this node (--workers 0)");
        return;
    }
    let cfg = orrery_exec::ExecConfig {
        node_id: node.id(),
        slots: node.cfg.workers,
        fs_root: node.cfg.fs_root.clone(),
        allow_command_jobs: node.cfg.allow_command_jobs,
        gpus: node.cfg.gpus.clone(),
        ..Default::default()
    };
    let engine = orrery_exec::Engine::start(cfg, Arc::new(NodeJobSource(node.clone())), handlers);
    let _ = node.jobs.engine.set(Arc::new(engine));
    tokio::spawn(node.clone().run_gpu_report(stop));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(params: &str, result: Option<&str>) -> Job {
        Job {
            id: orrery_queue::JobId::parse("0000000000010000000000002a").unwrap(),
            queue: "q".into(),
            partition: 2,
            kind: "fs.summarize".into(),
            params: params.into(),
            priority: -3,
            state: orrery_queue::JobState::Running,
            run_at_ms: 5,
            attempts: 2,
            max_attempts: 3,
            lease_s: 30,
            backoff: Default::default(),
            resources: orrery_queue::Resources {
                gpus: 1,
                gpu_memory_mb: 512,
                cpus: 4,
                shared_gpu: true,
            },
            dedupe_key: Some("d\"k".into()),
            submitted_by: None,
            result: result.map(Into::into),
            last_error: Some("boom".into()),
            created_ms: 1,
            updated_ms: 2,
            finished_ms: None,
            lease: Some(orrery_queue::Lease {
                worker_id: "w1".into(),
                node: 3,
                expires_ms: 9,
            }),
            cancel_requested: false,
            runs: Vec::new(),
        }
    }

    #[test]
    fn job_view_writes_every_field_and_embeds_stored_json() {
        let j = job(r#"{"path":"a/b","n":[1,2.5]}"#, Some(r#"{"files":3}"#));
        let v: Value =
            serde_json::from_slice(&serde_json::to_vec(&JobView::new(&j)).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "0000000000010000000000002a", "queue": "q", "partition": 2,
                "kind": "fs.summarize", "params": {"path": "a/b", "n": [1, 2.5]},
                "priority": -3, "state": "running", "run_at_ms": 5, "attempts": 2,
                "max_attempts": 3, "lease_s": 30,
                "resources": {"gpus": 1, "gpu_memory_mb": 512, "cpus": 4, "shared_gpu": true},
                "dedupe_key": "d\"k", "submitted_by": null, "result": {"files": 3},
                "last_error": "boom", "created_ms": 1, "updated_ms": 2, "finished_ms": null,
                "cancel_requested": false,
                "lease": {"worker_id": "w1", "node": 3, "expires_ms": 9},
            })
        );
        assert_eq!(job_json(&j), v, "the Value form is the same document");
        let claimed = serde_json::to_value(JobView::claimed(&j)).unwrap();
        assert_eq!(claimed["token"], json!(2));
        assert!(claimed.get("created").is_none());
        let submitted = serde_json::to_value(JobView::submitted(&j, false)).unwrap();
        assert_eq!(submitted["created"], json!(false));
        assert!(submitted.get("token").is_none());
    }

    #[test]
    fn stored_text_that_is_not_json_is_shown_as_a_string() {
        let j = job("not {json", None);
        let v = serde_json::to_value(JobView::new(&j)).unwrap();
        assert_eq!(v["params"], json!("not {json"));
        assert_eq!(v["result"], Value::Null);
        let text = serde_json::to_string(&JobView::new(&j)).unwrap();
        assert!(text.contains(r#""params":"not {json""#), "{text}");
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(parse_cursor("").unwrap(), Vec::<u64>::new());
        assert_eq!(parse_cursor("0").unwrap(), Vec::<u64>::new());
        assert_eq!(parse_cursor("3.0.12").unwrap(), vec![3, 0, 12]);
        assert_eq!(cursor_string(&[3, 0, 12]), "3.0.12");
        assert!(parse_cursor("3..1").is_err());
        assert!(parse_cursor("x").is_err());
    }

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
        let e = queue_error(QueueError::StaleToken {
            job_id: "j".into(),
            token: 1,
            state: JobState::Running,
            attempts: 2,
        });
        assert_eq!(e.http_status(), axum::http::StatusCode::CONFLICT);
        assert_eq!(
            queue_error(QueueError::ResultTooLarge(5)).http_status(),
            axum::http::StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
