//! Reads of jobs: one job (and why it waits), lists merged over the
//! shards, and the shards' event logs.

use super::{check_name, job_group, unexpected, JobsService};
use crate::api::limits::MAX_JOB_LIMIT;
use crate::api::{now_ms, ApiError};
use orrery_queue::{Event, Job, JobState, JobsQuery, JobsQueryResult, QueueError};

impl JobsService {
    pub async fn get_job(&self, id: &str) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        match self.jobs_read(g, JobsQuery::Job(id.into()), true).await? {
            JobsQueryResult::Job(Some(j)) => Ok(*j),
            JobsQueryResult::Job(None) => Err(QueueError::UnknownJob(id.into()).into()),
            other => Err(unexpected(other)),
        }
    }

    /// Why a queued job is not running (None when nothing stands out).
    pub fn waiting_reason(&self, job: &Job) -> Option<String> {
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
                .node
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
        if &*job.kind == "image.caption" {
            // Nodes do not report which engine kinds they run; say who can.
            return Some(
                "waiting: image.caption runs on nodes started with --providers and --fs-root, \
                 or on an external worker claiming image.caption"
                    .into(),
            );
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
        let futs = self.node.shard_groups()?.into_iter().map(|g| {
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
                other => return Err(unexpected(other)),
            }
        }
        jobs.sort_by_key(|j| j.id);
        jobs.truncate(limit);
        Ok(jobs)
    }

    /// Events of every shard after `cursor` (one seq per shard), with the
    /// cursor to resume from.
    pub async fn events_since(
        &self,
        cursor: &[u64],
        limit: usize,
    ) -> Result<(Vec<(u32, Event)>, Vec<u64>), ApiError> {
        let groups = self.node.shard_groups()?;
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
                other => return Err(unexpected(other)),
            }
        }
        out.sort_by_key(|(s, e)| (e.ts_ms, *s, e.seq));
        Ok((out, next))
    }
}
