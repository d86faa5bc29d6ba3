//! Claim selection: which queued jobs a worker's claim takes, and taking them.

use crate::lifecycle::json_str;
use crate::tally::ready_remove;
use crate::{ClaimSpec, Job, JobId, JobState, Lease, Name, QueueState, Run, RunFacts};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

impl QueueState {
    /// Does `job` fit what the claim offers? On success returns the free
    /// GPUs it would take (to remove them from the offer for the next job;
    /// none for a `shared_gpu` job, which leaves them to other shared jobs).
    /// `shared` GPUs, held by shared jobs already, fit shared jobs only.
    fn fits(
        job: &Job,
        spec: &ClaimSpec,
        gpus: &[(String, u64)],
        shared: &[(String, u64)],
        cpus: Option<u32>,
    ) -> Option<Vec<usize>> {
        if !spec.kinds.is_empty() && !spec.kinds.iter().any(|k| **k == *job.kind) {
            return None;
        }
        if let Some(c) = cpus {
            if job.resources.cpus > c {
                return None;
            }
        }
        let want = job.resources.gpus as usize;
        let roomy = |(_, free): &&(String, u64)| *free >= job.resources.gpu_memory_mb;
        if job.resources.shared_gpu {
            let n = shared.iter().filter(roomy).count() + gpus.iter().filter(roomy).count();
            return (n >= want).then(Vec::new);
        }
        let picked: Vec<usize> = gpus
            .iter()
            .enumerate()
            .filter(|(_, g)| roomy(g))
            .map(|(i, _)| i)
            .take(want)
            .collect();
        (picked.len() == want).then_some(picked)
    }

    /// The jobs a claim would take, in claim order (read-only).
    pub(crate) fn select(
        &self,
        spec: &ClaimSpec,
        shared: &[(String, u64)],
        now_ms: u64,
        max: usize,
    ) -> Vec<JobId> {
        let mut gpus = spec.free_gpus.clone();
        let mut cpus = spec.free_cpus;
        let mut taken: Vec<JobId> = Vec::new();
        let allowed: BTreeMap<(&str, u32), Option<u32>> = spec
            .partitions
            .iter()
            .map(|(q, p, l)| ((q.as_str(), *p), *l))
            .collect();
        // Only the buckets this claim may take from, merged back into one
        // claim order (priority desc, then FIFO across queues and kinds).
        let mut cursors: Vec<std::collections::btree_set::Iter<'_, (i64, JobId)>> = self
            .ready
            .iter()
            .filter(|((q, k), _)| {
                (allowed.is_empty() || allowed.keys().any(|(aq, _)| *aq == &**q))
                    && (spec.kinds.is_empty() || spec.kinds.iter().any(|sk| **sk == **k))
            })
            .map(|(_, set)| set.iter())
            .collect();
        let mut heads: Vec<Option<&(i64, JobId)>> = cursors.iter_mut().map(|c| c.next()).collect();
        let mut planned: BTreeMap<(&str, u32), u32> = BTreeMap::new();
        while taken.len() < max {
            let Some(i) = (0..heads.len())
                .filter(|i| heads[*i].is_some())
                .min_by(|a, b| heads[*a].cmp(&heads[*b]))
            else {
                break;
            };
            let Some((_, id)) = heads[i] else { break };
            heads[i] = cursors[i].next();
            let Some(job) = self.jobs.get(id) else {
                continue;
            };
            if job.run_at_ms > now_ms {
                continue;
            }
            let key = (&*job.queue, job.partition);
            if !allowed.is_empty() {
                match allowed.get(&key) {
                    None => continue,
                    Some(Some(limit)) => {
                        let busy = self
                            .running
                            .get(&(job.queue.clone(), job.partition))
                            .copied()
                            .unwrap_or(0)
                            + planned.get(&key).copied().unwrap_or(0);
                        if busy >= *limit {
                            continue;
                        }
                    }
                    Some(None) => {}
                }
            }
            let Some(picked) = Self::fits(job, spec, &gpus, shared, cpus) else {
                continue;
            };
            for i in picked.into_iter().rev() {
                gpus.remove(i);
            }
            if let Some(c) = cpus.as_mut() {
                *c -= job.resources.cpus;
            }
            *planned.entry(key).or_default() += 1;
            taken.push(*id);
        }
        taken
    }

    pub(crate) fn claim(
        &mut self,
        spec: &ClaimSpec,
        shared: &[(String, u64)],
        now_ms: u64,
        respond: bool,
    ) -> Vec<Job> {
        let taken = self.select(spec, shared, now_ms, spec.max.max(1) as usize);
        let mut out = Vec::with_capacity(if respond { taken.len() } else { 0 });
        if taken.is_empty() {
            return out;
        }
        // One name for every job (and run) of this claim.
        let worker: Name = Arc::from(spec.worker_id.as_str());
        let payload: Cow<'static, str> = Cow::Owned(format!(
            "{{\"worker_id\":{},\"node\":{}}}",
            json_str(&spec.worker_id),
            spec.node
        ));
        for id in taken {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            ready_remove(&mut self.ready, job);
            job.attempts += 1;
            self.tally
                .moved(&job.queue, id, Some(job.state), Some(JobState::Running));
            job.state = JobState::Running;
            job.updated_ms = now_ms;
            let lease_s = spec.lease_s.unwrap_or(job.lease_s).max(1);
            job.lease_s = lease_s;
            let expires = now_ms.saturating_add(lease_s as u64 * 1000);
            job.lease = Some(Lease {
                worker_id: worker.clone(),
                node: spec.node,
                expires_ms: expires,
            });
            // Most jobs run once: room for exactly one run.
            job.runs.reserve_exact(1);
            job.runs.push(Run {
                attempt: job.attempts,
                node: spec.node,
                worker_id: worker.clone(),
                started_ms: now_ms,
                finished_ms: None,
                outcome: None,
                error: None,
                facts: RunFacts::default(),
            });
            *self
                .running
                .entry((job.queue.clone(), job.partition))
                .or_default() += 1;
            if respond {
                out.push((**job).clone());
            }
            let tag = job.tag();
            self.leases.insert((expires, id));
            self.event("claimed", tag, payload.clone(), now_ms);
        }
        out
    }
}
