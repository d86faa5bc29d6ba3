//! Claims: lease jobs from the shards a queue's partitions live on, with
//! long-poll, and the completions a worker sends along.

use super::bulk::{check_batch, filled, item_result, spread, Slots, BULK_ENTRY_BYTES};
use super::complete::{completed_job, completions_by_group};
use super::{ClaimArgs, CompleteArgs, JobsService};
use crate::api::limits::MAX_CLAIM_BATCH;
use crate::api::{now_ms, ApiError};
use orrery_queue::{
    ClaimSpec, Completion, Job, JobsQuery, JobsQueryResult, QueueCommand, QueueResponse, QueueSpec,
    Settlement,
};
use orrery_types::GroupId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often idle long-polls re-check the shards (a local enqueue wakes
/// them at once).
const POLL_EVERY: Duration = Duration::from_millis(200);

/// `(queue, partition, its share of the concurrency limit)`.
type PartitionSlot = (String, u32, Option<u32>);

/// What a claim gives back: the leased jobs (empty: none within the wait)
/// and, in order, the outcome of each completion sent with it.
#[derive(Debug)]
pub struct ClaimOutcome {
    pub jobs: Vec<Job>,
    pub completed: Vec<Result<Job, ApiError>>,
}

fn check(a: &ClaimArgs, done: &[CompleteArgs]) -> Result<(), ApiError> {
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
    Ok(())
}

impl JobsService {
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
        let mut plan: BTreeMap<GroupId, Vec<PartitionSlot>> = BTreeMap::new();
        for q in specs {
            for p in 0..q.partitions {
                plan.entry(self.partition_group(&q.name, p)?)
                    .or_default()
                    .push((q.name.clone(), p, q.partition_limit(p)));
            }
        }
        let mut v: Vec<_> = plan.into_iter().collect();
        // Rotate the start so that concurrent claimers spread over shards.
        let r = self.node.metrics.next_rotation() % v.len().max(1);
        v.rotate_left(r);
        v.sort_by_key(|(g, _)| !self.leads(*g));
        Ok(v)
    }

    /// Leases up to `a.max` jobs (of `queue`, or of any queue), waiting up
    /// to `a.wait` for one to become claimable.
    ///
    /// `done` are the jobs the worker finished since its last claim. They
    /// are all applied before the claim looks for work, each on its own as
    /// by [`Self::complete_many`]. Those of the shard the claim tries first
    /// share its log entry (a settlement), so a worker's steady state is one
    /// request and one entry per batch of jobs, not two.
    pub async fn claim(
        &self,
        queue: Option<&str>,
        a: ClaimArgs,
        done: Vec<CompleteArgs>,
    ) -> Result<ClaimOutcome, ApiError> {
        check(&a, &done)?;
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
            let wake = self.wake.notified();
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
                if let Some((_, items)) = settle.take_if(|(sg, _)| *sg == g) {
                    match self.settle(g, items, cs, &mut completed).await {
                        Ok(jobs) if !jobs.is_empty() => return Ok(outcome(jobs, completed)),
                        Ok(_) => {}
                        Err(e) => last_err = Some(e),
                    }
                    continue;
                }
                match self.try_claim(g, cs, &a.shared_gpus).await {
                    Ok(jobs) if !jobs.is_empty() => return Ok(outcome(jobs, completed)),
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

    /// One entry on `g`: the completions of `items` (their outcomes into
    /// `completed`), then the claim `cs`. Returns the jobs it leased.
    async fn settle(
        &self,
        g: GroupId,
        items: Vec<(usize, Completion)>,
        cs: ClaimSpec,
        completed: &mut Slots<Job>,
    ) -> Result<Vec<Job>, ApiError> {
        let (idx, completions): (Vec<usize>, Vec<Completion>) = items.into_iter().unzip();
        let cmd = QueueCommand::Settle {
            work: vec![Settlement {
                completions,
                claim: cs,
            }],
            now_ms: now_ms(),
        };
        let r = self.queue_write(g, cmd).await;
        let mut rs = match r {
            // One settlement, one item; anything else is reported by
            // `spread` as a count mismatch.
            Ok(QueueResponse::Many(ws)) => match <[QueueResponse; 1]>::try_from(ws) {
                Ok([w]) => spread(idx.len() + 1, Ok(w)),
                Err(ws) => spread(idx.len() + 1, Ok(QueueResponse::Many(ws))),
            },
            other => spread(idx.len() + 1, other),
        };
        let claimed = rs.pop();
        for (i, r) in idx.into_iter().zip(rs) {
            completed[i] = Some(r.and_then(|r| item_result(r, completed_job)));
        }
        match claimed {
            Some(Ok(QueueResponse::Claimed(jobs))) => Ok(jobs),
            Some(Err(e)) => Err(e),
            _ => Ok(Vec::new()),
        }
    }

    /// A claim on `g`: a cheap (stale) look first, so that most polls of an
    /// idle queue cost no Raft write; then the claim itself.
    async fn try_claim(
        &self,
        g: GroupId,
        cs: ClaimSpec,
        shared_gpus: &[(String, u64)],
    ) -> Result<Vec<Job>, ApiError> {
        let now = now_ms();
        let look = if shared_gpus.is_empty() {
            JobsQuery::Claimable {
                spec: cs.clone(),
                now_ms: now,
            }
        } else {
            JobsQuery::ClaimableSharing {
                spec: cs.clone(),
                shared_gpus: shared_gpus.to_vec(),
                now_ms: now,
            }
        };
        match self.jobs_read(g, look, false).await? {
            JobsQueryResult::Claimable(true) => {}
            _ => return Ok(Vec::new()),
        }
        // Claims without shared GPUs keep the command that group commit
        // merges.
        let cmd = if shared_gpus.is_empty() {
            QueueCommand::Claim {
                spec: cs,
                now_ms: now,
            }
        } else {
            QueueCommand::ClaimSharing {
                spec: cs,
                shared_gpus: shared_gpus.to_vec(),
                now_ms: now,
            }
        };
        match self.queue_write(g, cmd).await? {
            QueueResponse::Claimed(jobs) => Ok(jobs),
            _ => Ok(Vec::new()),
        }
    }
}
