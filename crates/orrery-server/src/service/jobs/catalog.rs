//! Queues: the catalog in the placement group (create, list, delete), the
//! partitions' shard groups, per-state counts, and every node's GPUs.

use super::{check_name, unexpected, JobsService, QueueArgs};
use crate::api::limits::MAX_PARTITIONS;
use crate::api::{now_ms, ApiError};
use orrery_queue::{
    Backoff, GpuReport, JobState, JobsQuery, JobsQueryResult, QueueCommand, QueueResponse,
    QueueSpec,
};
use orrery_types::{shard_group, stable_hash, GroupId, NodeId, PLACEMENT_GROUP};
use std::collections::BTreeMap;

/// A queue with its job counts per state and the age of its oldest queued job.
pub struct QueueInfo {
    pub spec: QueueSpec,
    pub counts: BTreeMap<JobState, u64>,
    pub oldest_queued_age_ms: Option<u64>,
}

impl JobsService {
    /// The catalog as this node's replica of group 0 has it (may lag).
    pub(super) fn local_catalog(&self) -> BTreeMap<String, QueueSpec> {
        self.node
            .placement_group()
            .map(|g| g.sm.read(|s| s.queue.queues().clone()))
            .unwrap_or_default()
    }

    async fn catalog(&self) -> Result<(Vec<QueueSpec>, BTreeMap<NodeId, GpuReport>), ApiError> {
        match self
            .jobs_read(PLACEMENT_GROUP, JobsQuery::Catalog, true)
            .await?
        {
            JobsQueryResult::Catalog { queues, gpus } => Ok((queues, gpus)),
            other => Err(unexpected(other)),
        }
    }

    /// A queue's definition: the local copy, or (when absent locally, e.g.
    /// just created through another node) the placement leader's. Used on
    /// the enqueue path; reads and deletes use [`Self::queue_spec_fresh`].
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
    pub(super) fn partition_group(&self, queue: &str, p: u32) -> Result<GroupId, ApiError> {
        let n = self.node.shard_groups()?.len() as u64;
        Ok(shard_group(
            ((stable_hash(queue.as_bytes()) + p as u64) % n) as u32,
        ))
    }

    pub async fn create_queue(&self, a: QueueArgs) -> Result<QueueSpec, ApiError> {
        let spec = self.queue_spec_of(a)?;
        match self
            .queue_write(PLACEMENT_GROUP, QueueCommand::CreateQueue(spec))
            .await?
        {
            QueueResponse::QueueCreated(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The definition a create asks for, defaults applied and checked.
    fn queue_spec_of(&self, a: QueueArgs) -> Result<QueueSpec, ApiError> {
        check_name("name", &a.name)?;
        let shards = self.node.shard_groups()?.len() as u32;
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
        Ok(QueueSpec {
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
        })
    }

    pub async fn list_queues(&self) -> Result<Vec<QueueSpec>, ApiError> {
        Ok(self.catalog().await?.0)
    }

    /// A queue with its counts (read through the leaders).
    pub async fn queue_info(&self, name: &str) -> Result<QueueInfo, ApiError> {
        let spec = self.queue_spec_fresh(name).await?;
        let (counts, oldest) = self.queue_counts(&spec).await?;
        Ok(QueueInfo {
            spec,
            counts,
            oldest_queued_age_ms: oldest.map(|o| now_ms().saturating_sub(o)),
        })
    }

    /// Counts per state over all partitions, and the oldest queued job's
    /// creation time.
    async fn queue_counts(
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
                other => return Err(unexpected(other)),
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

    /// Every node's reported GPUs.
    pub async fn cluster_gpus(&self) -> Result<BTreeMap<NodeId, GpuReport>, ApiError> {
        Ok(self.catalog().await?.1)
    }
}
