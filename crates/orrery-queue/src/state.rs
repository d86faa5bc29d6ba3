//! [`QueueState`]: the state of one group, the dispatch of commands to the
//! operations that apply them, and the reads of the state.

use crate::advance::{IdCursor, Place};
use crate::lifecycle::truncate;
use crate::tally::{is_live, Interner, ReadyIndex, Tally};
use crate::{
    job_seq, ClaimSpec, Completion, Event, GpuReport, Job, JobId, JobState, Name, Outcome,
    QueueCommand, QueueError, QueueResponse, QueueSpec, Workflow, MAX_BATCH, MAX_ERROR_BYTES,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// The queue module's state of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    // catalog
    pub(crate) queues: BTreeMap<String, QueueSpec>,
    pub(crate) gpus: BTreeMap<u64, GpuReport>,
    // jobs
    pub(crate) jobs: BTreeMap<JobId, Box<Job>>,
    /// Queued jobs by (queue, kind), each bucket in claim order
    /// (-priority, id); ids sort by time, so that is priority desc then FIFO.
    /// Bucketed so that a claim only walks jobs of queues and kinds it can
    /// take: a worker for other kinds must not scan a backlog it cannot run.
    pub(crate) ready: ReadyIndex,
    /// Running jobs by lease expiry, for the expiry sweep.
    pub(crate) leases: BTreeSet<(u64, JobId)>,
    /// Running jobs per (queue, partition), for the concurrency limit.
    pub(crate) running: BTreeMap<(Name, u32), u32>,
    pub(crate) dedupe: BTreeMap<(Name, Box<str>), JobId>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) next_seq: u64,
    /// Finished jobs by finish time, for pruning. Derived from `jobs`: not
    /// in snapshots (whose format it would change), rebuilt on restore.
    #[serde(skip)]
    pub(crate) finished: BTreeSet<(u64, JobId)>,
    /// Queue and kind names, shared by the jobs that carry them.
    #[serde(skip)]
    pub(crate) names: Interner,
    /// Jobs per queue and state, and the queued and running jobs in age
    /// order. Derived from `jobs` (not in snapshots, rebuilt on restore), so
    /// that a queue's counts, and listings of its live jobs, are not a scan
    /// of every retained job under the lock that apply waits for.
    #[serde(skip)]
    pub(crate) tally: Tally,
    /// Workflows by id. Not in the serde form: the snapshot appends them
    /// after it (see `snapshot`), so snapshots without any keep the format
    /// that older builds decode.
    #[serde(skip)]
    pub(crate) workflows: BTreeMap<JobId, Workflow>,
    /// Each workflow job's place in its workflow (derived from `workflows`).
    #[serde(skip)]
    pub(crate) wf_jobs: BTreeMap<JobId, Place>,
    /// Ids for jobs an apply creates (set per apply).
    #[serde(skip)]
    pub(crate) ids: IdCursor,
}

impl QueueState {
    pub fn apply(&mut self, index: u64, cmd: QueueCommand) -> QueueResponse {
        self.apply_as(index, cmd, true)
    }

    /// [`QueueState::apply`] for a replica whose response no client reads
    /// (a follower, or a leader applying an entry of an earlier leader):
    /// the same change of state, but answers that would carry jobs carry
    /// [`QueueResponse::Unobserved`] (claims: no jobs). Followers apply
    /// every command too, and the copies of jobs for their answers were a
    /// measurable share of the bulk cells' CPU.
    pub fn apply_unobserved(&mut self, index: u64, cmd: QueueCommand) -> QueueResponse {
        self.apply_as(index, cmd, false)
    }

    fn apply_as(&mut self, index: u64, cmd: QueueCommand, respond: bool) -> QueueResponse {
        self.ids = IdCursor::at(index);
        match cmd {
            QueueCommand::CreateQueue(spec) => {
                if self.queues.contains_key(&spec.name) {
                    return QueueResponse::Rejected(QueueError::QueueExists(spec.name));
                }
                self.queues.insert(spec.name.clone(), spec.clone());
                QueueResponse::QueueCreated(spec)
            }
            QueueCommand::DeleteQueue { name } => match self.queues.remove(&name) {
                Some(_) => QueueResponse::QueueDeleted,
                None => QueueResponse::Rejected(QueueError::UnknownQueue(name)),
            },
            QueueCommand::ReportGpus { node, gpus, now_ms } => {
                self.gpus.insert(
                    node,
                    GpuReport {
                        reported_ms: now_ms,
                        gpus,
                    },
                );
                QueueResponse::GpusReported
            }
            QueueCommand::Enqueue { shard, job, now_ms } => {
                self.enqueue(job_seq(index, 0), shard, job, now_ms, respond)
            }
            QueueCommand::EnqueueMany { jobs, .. } if jobs.len() > MAX_BATCH => {
                QueueResponse::Rejected(QueueError::BatchTooLarge(jobs.len()))
            }
            QueueCommand::CompleteMany { items, .. } if items.len() > MAX_BATCH => {
                QueueResponse::Rejected(QueueError::BatchTooLarge(items.len()))
            }
            QueueCommand::Settle { work, .. }
                if work.len() > MAX_BATCH
                    || work.iter().any(|w| w.completions.len() > MAX_BATCH) =>
            {
                let n = work.iter().map(|w| w.completions.len()).max().unwrap_or(0);
                QueueResponse::Rejected(QueueError::BatchTooLarge(work.len().max(n)))
            }
            QueueCommand::Settle { work, now_ms } => QueueResponse::Many(
                work.into_iter()
                    .map(|w| {
                        let mut out: Vec<QueueResponse> = w
                            .completions
                            .into_iter()
                            .map(|c| self.complete(c, now_ms, respond))
                            .collect();
                        self.expire(now_ms);
                        out.push(QueueResponse::Claimed(self.claim(
                            &w.claim,
                            &[],
                            now_ms,
                            respond,
                        )));
                        QueueResponse::Many(out)
                    })
                    .collect(),
            ),
            QueueCommand::ClaimMany { claims, .. } if claims.len() > MAX_BATCH => {
                QueueResponse::Rejected(QueueError::BatchTooLarge(claims.len()))
            }
            QueueCommand::EnqueueMany {
                shard,
                jobs,
                now_ms,
            } => QueueResponse::Many(
                jobs.into_iter()
                    .enumerate()
                    .map(|(i, job)| self.enqueue(job_seq(index, i), shard, job, now_ms, respond))
                    .collect(),
            ),
            QueueCommand::CompleteMany { items, now_ms } => QueueResponse::Many(
                items
                    .into_iter()
                    .map(|c| self.complete(c, now_ms, respond))
                    .collect(),
            ),
            QueueCommand::Claim { spec, now_ms } => {
                self.expire(now_ms);
                QueueResponse::Claimed(self.claim(&spec, &[], now_ms, respond))
            }
            QueueCommand::ClaimSharing {
                spec,
                shared_gpus,
                now_ms,
            } => {
                self.expire(now_ms);
                QueueResponse::Claimed(self.claim(&spec, &shared_gpus, now_ms, respond))
            }
            QueueCommand::ClaimMany { claims, now_ms } => {
                self.expire(now_ms);
                QueueResponse::Many(
                    claims
                        .iter()
                        .map(|spec| QueueResponse::Claimed(self.claim(spec, &[], now_ms, respond)))
                        .collect(),
                )
            }
            QueueCommand::Heartbeat {
                job_id,
                token,
                now_ms,
            } => {
                let id = match self.live(&job_id, token) {
                    Ok(id) => id,
                    Err(e) => return QueueResponse::Rejected(e),
                };
                let Some(job) = self.jobs.get_mut(&id) else {
                    return QueueResponse::Rejected(QueueError::UnknownJob(job_id));
                };
                let expires = now_ms.saturating_add(job.lease_s as u64 * 1000);
                if let Some(l) = job.lease.as_mut() {
                    self.leases.remove(&(l.expires_ms, id));
                    l.expires_ms = expires;
                    self.leases.insert((expires, id));
                }
                QueueResponse::Heartbeat {
                    cancelled: job.cancel_requested,
                    expires_ms: expires,
                }
            }
            QueueCommand::Complete {
                job_id,
                token,
                result,
                facts,
                now_ms,
            } => self.complete(
                Completion {
                    job_id,
                    token,
                    result,
                    facts,
                },
                now_ms,
                respond,
            ),
            QueueCommand::Fail {
                job_id,
                token,
                error,
                retry,
                facts,
                now_ms,
            } => {
                let id = match self.live(&job_id, token) {
                    Ok(id) => id,
                    Err(e) => return QueueResponse::Rejected(e),
                };
                let error = truncate(error, MAX_ERROR_BYTES);
                let cancelled = self.jobs.get(&id).is_some_and(|j| j.cancel_requested);
                let outcome = if cancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Failed
                };
                self.end_attempt(id, now_ms, outcome, Some(error.clone()), facts);
                self.after_failed_attempt(id, now_ms, error, retry, cancelled);
                self.job_response(id, respond)
            }
            QueueCommand::Cancel { job_id, now_ms } => match JobId::parse(&job_id) {
                Some(id) => self.cancel(id, now_ms, respond),
                None => QueueResponse::Rejected(QueueError::UnknownJob(job_id)),
            },
            QueueCommand::ExpireLeases { now_ms } => QueueResponse::Expired(self.expire(now_ms)),
            QueueCommand::Prune { before_ms, max } => {
                self.prune_workflows(before_ms);
                QueueResponse::Pruned(self.prune(before_ms, max))
            }
            QueueCommand::StartWorkflow {
                shard,
                spec,
                now_ms,
            } => self.start_workflow(shard, spec, now_ms, respond),
            QueueCommand::CancelWorkflow { id, now_ms } => {
                self.cancel_workflow(&id, now_ms, respond)
            }
        }
    }
}

impl QueueState {
    // ---- reads ----

    /// The finish time of the oldest finished job, if any: the leader
    /// proposes a prune once it falls out of the retention period.
    pub fn oldest_finished(&self) -> Option<u64> {
        self.finished.first().map(|(t, _)| *t)
    }

    pub fn queues(&self) -> &BTreeMap<String, QueueSpec> {
        &self.queues
    }

    pub fn queue(&self, name: &str) -> Option<&QueueSpec> {
        self.queues.get(name)
    }

    pub fn gpu_reports(&self) -> &BTreeMap<u64, GpuReport> {
        &self.gpus
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(&JobId::parse(id)?).map(|j| &**j)
    }

    /// Jobs with id > `after`, in id order, filtered, at most `limit`.
    pub fn list(
        &self,
        queue: Option<&str>,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Job> {
        use std::ops::Bound;
        // A cursor is normally an id; any other text still means "ids that
        // sort after it", found by comparing the ids' text.
        let (start, after_text) = match after {
            None => (Bound::Unbounded, None),
            Some(a) => match JobId::parse(a) {
                Some(id) => (Bound::Excluded(id), None),
                None => (Bound::Unbounded, Some(a.as_bytes())),
            },
        };
        // Queued and running jobs have an index of their own: a backlog,
        // or what is running, is listed without walking the finished jobs
        // retained around it.
        if let (Some(st), None) = (state.filter(|s| is_live(*s)), after_text) {
            let after = match start {
                Bound::Excluded(id) => Some(id),
                _ => None,
            };
            return self.list_live(queue, st, after, limit);
        }
        self.jobs
            .range((start, Bound::Unbounded))
            .map(|(_, j)| &**j)
            .filter(|j| after_text.is_none_or(|a| &j.id.hex()[..] > a))
            .filter(|j| queue.is_none_or(|q| &*j.queue == q))
            .filter(|j| state.is_none_or(|s| j.state == s))
            .take(limit)
            .cloned()
            .collect()
    }

    /// [`QueueState::list`] of the jobs in live state `st` (queued or
    /// running), from the `live` index.
    fn list_live(
        &self,
        queue: Option<&str>,
        st: JobState,
        after: Option<JobId>,
        limit: usize,
    ) -> Vec<Job> {
        use std::ops::Bound;
        let after_bound = |name: &Name| match after {
            Some(id) => Bound::Excluded((name.clone(), st, id)),
            None => Bound::Included((name.clone(), st, JobId(0))),
        };
        let mut ids: Vec<JobId> = match queue {
            Some(q) => {
                let name: Name = Arc::from(q);
                self.tally
                    .live
                    .range((after_bound(&name), Bound::Included((name, st, JobId::MAX))))
                    .map(|(_, _, id)| *id)
                    .take(limit)
                    .collect()
            }
            // Every queue's jobs in that state, merged back into id order.
            None => {
                let mut ids: Vec<JobId> = self
                    .tally
                    .counts
                    .keys()
                    .filter(|(_, s)| *s == st)
                    .map(|(name, _)| name)
                    .flat_map(|name| {
                        self.tally
                            .live
                            .range((
                                after_bound(name),
                                Bound::Included((name.clone(), st, JobId::MAX)),
                            ))
                            .map(|(_, _, id)| *id)
                            .take(limit)
                    })
                    .collect();
                ids.sort_unstable();
                ids
            }
        };
        ids.truncate(limit);
        ids.iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| (**j).clone())
            .collect()
    }

    /// Per-state counts of a queue's jobs in this shard, and the creation
    /// time of its oldest queued job.
    pub fn counts(&self, queue: &str) -> (BTreeMap<JobState, u64>, Option<u64>) {
        let name: Name = Arc::from(queue);
        let counts = self
            .tally
            .counts
            .range((name.clone(), JobState::Queued)..=(name.clone(), JobState::Dead))
            .map(|((_, s), n)| (*s, *n))
            .collect();
        let oldest = self
            .tally
            .live
            .range(
                (name.clone(), JobState::Queued, JobId(0))..=(name, JobState::Queued, JobId::MAX),
            )
            .next()
            .and_then(|(_, _, id)| self.jobs.get(id))
            .map(|j| j.created_ms);
        (counts, oldest)
    }

    /// Events with seq > `since`, at most `limit`.
    pub fn events_since(&self, since: u64, limit: usize) -> Vec<Event> {
        let first = self.events.front().map(|e| e.seq).unwrap_or(0);
        let skip = since.saturating_sub(first.saturating_sub(1)) as usize;
        self.events.iter().skip(skip).take(limit).cloned().collect()
    }

    /// Is there a job a claim with `spec` (and `shared` GPUs, as in
    /// [`QueueCommand::ClaimSharing`]) could take now? (A cheap read before
    /// proposing a claim.)
    pub fn claimable(&self, spec: &ClaimSpec, shared: &[(String, u64)], now_ms: u64) -> bool {
        if self.leases.first().is_some_and(|(e, _)| *e <= now_ms) {
            return true;
        }
        !self.select(spec, shared, now_ms, 1).is_empty()
    }

    /// Earliest lease expiry among running jobs.
    pub fn next_expiry(&self) -> Option<u64> {
        self.leases.first().map(|(e, _)| *e)
    }
}
