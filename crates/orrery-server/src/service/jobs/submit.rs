//! Submits, single and bulk: every job is checked and routed to its
//! partition's shard group before anything is proposed.

use super::bulk::{check_batch, filled};
use super::{at, check_name, unexpected, JobsService, SubmitArgs};
use crate::api::{now_ms, ApiError};
use crate::node::validate;
use orrery_queue::{Job, NewJob, QueueCommand, QueueResponse, QueueSpec};
use orrery_types::{group_shard, stable_hash, GroupId};
use std::collections::BTreeMap;

/// A submission checked and routed, ready to propose.
struct PreparedJob {
    group: GroupId,
    job: NewJob,
}

/// Queue definitions (and the partitions this node leads) looked up once
/// per request.
type Specs = BTreeMap<String, (QueueSpec, Vec<u32>)>;

impl JobsService {
    /// Checks a submission and resolves where it goes (its partition's
    /// shard group) and what the shard is told (the queue's settings).
    async fn prepare_job(
        &self,
        a: SubmitArgs,
        now: u64,
        specs: &mut Specs,
    ) -> Result<PreparedJob, ApiError> {
        check_name("queue", &a.queue)?;
        validate::job_kind(&a.kind)?;
        // A command job runs a process on a node: admins only, never an
        // anonymous caller (--insecure) nor a policy.
        if a.kind == "command" && !a.caller.as_ref().is_some_and(|c| c.is_admin()) {
            return Err(ApiError::Forbidden(format!(
                "only admins may submit command jobs ({} may not)",
                a.caller.as_ref().map_or("a policy", |c| c.name.as_str())
            )));
        }
        if let Err(m) = orrery_exec::validate_params(&a.kind, &a.params) {
            return Err(ApiError::bad("invalid_params", m));
        }
        if let Some(check) = self.kind_check.get() {
            check.check(&a.kind, &a.params).await?;
        }
        let params = a.params.to_string();
        validate::job_params(&params)?;
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
        let rotation = || self.node.metrics.next_rotation();
        let partition = match &a.dedupe_key {
            Some(k) => (stable_hash(k.as_bytes()) % spec.partitions as u64) as u32,
            None if !local.is_empty() => local[rotation() % local.len()],
            None => (rotation() as u64 % spec.partitions as u64) as u32,
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
            submitted_by: a.caller.map(|c| c.name).or(a.submitted_by),
            max_attempts: spec.max_attempts,
            lease_s: spec.lease_s,
            backoff: spec.backoff,
        };
        Ok(PreparedJob { group, job })
    }

    /// Returns the job and whether this submit created it (false: its
    /// dedupe key matched an existing job).
    pub async fn submit(&self, a: SubmitArgs) -> Result<(Job, bool), ApiError> {
        let now = now_ms();
        let PreparedJob { group, job } = self.prepare_job(a, now, &mut BTreeMap::new()).await?;
        let cmd = QueueCommand::Enqueue {
            shard: group_shard(group).unwrap_or(0),
            job,
            now_ms: now,
        };
        match self.queue_write(group, cmd).await? {
            QueueResponse::Enqueued { job, created } => {
                self.wake.notify_waiters();
                Ok((*job, created))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Bulk submit. Every job is checked first (one invalid job refuses the
    /// whole request, naming `jobs[i]`, and nothing is enqueued); then the
    /// jobs of each shard go in one log entry per chunk, all shards at once.
    /// Returns one result per job, in order: a shard that cannot commit
    /// fails only its own jobs.
    pub async fn submit_many(
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
        self.wake.notify_waiters();
        Ok(filled(out))
    }

    /// The partitions of `spec` whose shard this node leads now. Empty for
    /// a queue with a concurrency limit: the limit is split evenly over the
    /// partitions, so its jobs must stay spread over all of them.
    pub(super) fn led_partitions(&self, spec: &QueueSpec) -> Vec<u32> {
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

    pub(super) fn leads(&self, g: GroupId) -> bool {
        self.node
            .registry
            .get(g)
            .map(|gr| gr.raft.metrics().borrow().current_leader == Some(self.node.id()))
            .unwrap_or(false)
    }
}
