//! A job's life after it is queued: enqueue, completion and failure of
//! attempts (with retries and backoff), cancel, lease expiry, and the pruning
//! of finished jobs; and the event log they write.

use crate::tally::{ready_add, ready_remove};
use crate::{
    Completion, Event, Job, JobId, JobState, Name, NewJob, Outcome, QueueError, QueueResponse,
    QueueState, RunFacts, EVENTS_KEPT, MAX_RESULT_BYTES,
};
use std::borrow::Cow;

/// `s` cut to at most `max` bytes (at a character boundary).
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What an event records of its job.
pub(crate) struct Tag {
    id: JobId,
    queue: Name,
    attempt: u32,
}

impl Job {
    pub(crate) fn tag(&self) -> Tag {
        Tag {
            id: self.id,
            queue: self.queue.clone(),
            attempt: self.attempts,
        }
    }
}

impl QueueState {
    pub(crate) fn complete(&mut self, c: Completion, now_ms: u64, respond: bool) -> QueueResponse {
        if c.result.len() > MAX_RESULT_BYTES {
            return QueueResponse::Rejected(QueueError::ResultTooLarge(c.result.len()));
        }
        let id = match self.live(&c.job_id, c.token) {
            Ok(id) => id,
            Err(e) => return QueueResponse::Rejected(e),
        };
        self.end_attempt(id, now_ms, Outcome::Succeeded, None, c.facts);
        if let Some(job) = self.jobs.get_mut(&id) {
            job.result = Some(c.result.into_boxed_str());
        }
        self.finish(id, JobState::Succeeded, now_ms, "succeeded", "{}".into());
        self.job_response(id, respond)
    }

    pub(crate) fn job_response(&self, id: JobId, respond: bool) -> QueueResponse {
        match self.jobs.get(&id) {
            Some(_) if !respond => QueueResponse::Unobserved,
            Some(j) => QueueResponse::Job(j.clone()),
            None => QueueResponse::Rejected(QueueError::UnknownJob(id.to_string())),
        }
    }

    pub(crate) fn event(
        &mut self,
        kind: &'static str,
        tag: Tag,
        payload: Cow<'static, str>,
        now_ms: u64,
    ) {
        self.next_seq += 1;
        self.events.push_back(Event {
            seq: self.next_seq,
            kind: Cow::Borrowed(kind),
            job_id: tag.id,
            queue: tag.queue,
            attempt: tag.attempt,
            payload,
            ts_ms: now_ms,
        });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    pub(crate) fn enqueue(
        &mut self,
        seq: u64,
        shard: u32,
        new: NewJob,
        now_ms: u64,
        respond: bool,
    ) -> QueueResponse {
        let queue = self.names.get(&new.queue);
        if let Some(key) = &new.dedupe_key {
            if let Some(existing) = self.dedupe.get(&(queue.clone(), Box::from(key.as_str()))) {
                if let Some(j) = self.jobs.get(existing) {
                    if !respond {
                        return QueueResponse::Unobserved;
                    }
                    return QueueResponse::Enqueued {
                        job: j.clone(),
                        created: false,
                    };
                }
            }
        }
        self.enqueue_as(JobId::new(now_ms, shard, seq), new, now_ms, respond)
    }

    /// Enqueues `new` as job `id` (no dedupe check: the caller did it, or
    /// the job has no key).
    pub(crate) fn enqueue_as(
        &mut self,
        id: JobId,
        new: NewJob,
        now_ms: u64,
        respond: bool,
    ) -> QueueResponse {
        let queue = self.names.get(&new.queue);
        let dedupe_key = new.dedupe_key.map(String::into_boxed_str);
        let job = Box::new(Job {
            id,
            kind: self.names.get(&new.kind),
            queue,
            partition: new.partition,
            params: new.params.into_boxed_str(),
            priority: new.priority,
            state: JobState::Queued,
            run_at_ms: new.run_at_ms.unwrap_or(now_ms),
            attempts: 0,
            max_attempts: new.max_attempts.max(1),
            lease_s: new.lease_s.max(1),
            backoff: new.backoff,
            resources: new.resources,
            dedupe_key,
            submitted_by: new.submitted_by.map(String::into_boxed_str),
            result: None,
            last_error: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            finished_ms: None,
            lease: None,
            cancel_requested: false,
            runs: Vec::new(),
        });
        if let Some(key) = &job.dedupe_key {
            self.dedupe.insert((job.queue.clone(), key.clone()), id);
        }
        ready_add(&mut self.ready, &job);
        self.event("enqueued", job.tag(), "{}".into(), now_ms);
        self.tally
            .moved(&job.queue, id, None, Some(JobState::Queued));
        let response = respond.then(|| job.clone());
        self.jobs.insert(id, job);
        match response {
            Some(job) => QueueResponse::Enqueued { job, created: true },
            None => QueueResponse::Unobserved,
        }
    }

    /// The job is running and `token` is its live lease.
    pub(crate) fn live(&self, id: &str, token: u32) -> Result<JobId, QueueError> {
        let (jid, j) = JobId::parse(id)
            .and_then(|jid| self.jobs.get(&jid).map(|j| (jid, j)))
            .ok_or_else(|| QueueError::UnknownJob(id.to_string()))?;
        if j.state != JobState::Running || j.attempts != token {
            return Err(QueueError::StaleToken {
                job_id: id.to_string(),
                token,
                state: j.state,
                attempts: j.attempts,
            });
        }
        Ok(jid)
    }

    /// Closes the current run and releases the lease (the job is running).
    pub(crate) fn end_attempt(
        &mut self,
        id: JobId,
        now_ms: u64,
        outcome: Outcome,
        error: Option<String>,
        facts: RunFacts,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some(l) = job.lease.take() {
            self.leases.remove(&(l.expires_ms, id));
        }
        let key = (job.queue.clone(), job.partition);
        if let Some(n) = self.running.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(&key);
            }
        }
        if let Some(run) = job.runs.last_mut() {
            if run.finished_ms.is_none() {
                run.finished_ms = Some(now_ms);
                run.outcome = Some(outcome);
                run.error = error.map(String::into_boxed_str);
                if facts.duration_ms.is_none() {
                    run.facts = RunFacts {
                        duration_ms: Some(now_ms.saturating_sub(run.started_ms)),
                        ..facts
                    };
                } else {
                    run.facts = facts;
                }
            }
        }
    }

    fn finish(
        &mut self,
        id: JobId,
        state: JobState,
        now_ms: u64,
        event: &'static str,
        payload: Cow<'static, str>,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        self.tally
            .moved(&job.queue, id, Some(job.state), Some(state));
        job.state = state;
        job.updated_ms = now_ms;
        if let Some(t) = job.finished_ms.replace(now_ms) {
            self.finished.remove(&(t, id));
        }
        self.finished.insert((now_ms, id));
        let tag = job.tag();
        self.event(event, tag, payload, now_ms);
        self.workflow_job_ended(id, state, now_ms);
    }

    /// Forgets up to `max` jobs that finished before `before_ms`.
    pub(crate) fn prune(&mut self, before_ms: u64, max: u32) -> u32 {
        let mut n = 0;
        while n < max {
            let Some(first) = self.finished.first() else {
                break;
            };
            if first.0 >= before_ms {
                break;
            }
            let Some((_, id)) = self.finished.pop_first() else {
                break;
            };
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            // Only a finished job is ever indexed here; a job that is not
            // (cannot happen) is kept rather than lost.
            if !job.state.is_terminal() {
                continue;
            }
            if let Some(key) = &job.dedupe_key {
                let k = (job.queue.clone(), key.clone());
                if self.dedupe.get(&k) == Some(&id) {
                    self.dedupe.remove(&k);
                }
            }
            if let Some(job) = self.jobs.remove(&id) {
                self.tally.moved(&job.queue, id, Some(job.state), None);
                let Job { queue, kind, .. } = *job;
                self.names.release(queue);
                self.names.release(kind);
            }
            n += 1;
        }
        n
    }

    /// After an attempt failed (error, or lease expiry): retry with backoff,
    /// or end the job.
    pub(crate) fn after_failed_attempt(
        &mut self,
        id: JobId,
        now_ms: u64,
        error: String,
        retry: bool,
        cancelled: bool,
    ) {
        let payload: Cow<'static, str> = format!("{{\"error\":{}}}", json_str(&error)).into();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.last_error = Some(error.into_boxed_str());
        if cancelled {
            self.finish(id, JobState::Cancelled, now_ms, "cancelled", payload);
        } else if !retry {
            self.finish(id, JobState::Failed, now_ms, "failed", payload);
        } else if job.attempts >= job.max_attempts {
            self.finish(id, JobState::Dead, now_ms, "dead", payload);
        } else {
            self.tally
                .moved(&job.queue, id, Some(job.state), Some(JobState::Queued));
            job.state = JobState::Queued;
            job.updated_ms = now_ms;
            job.run_at_ms = now_ms.saturating_add(job.backoff.delay_ms(job.attempts));
            ready_add(&mut self.ready, job);
            let tag = job.tag();
            self.event("retrying", tag, payload, now_ms);
        }
    }

    pub(crate) fn cancel(&mut self, id: JobId, now_ms: u64, respond: bool) -> QueueResponse {
        let Some(job) = self.jobs.get_mut(&id) else {
            return QueueResponse::Rejected(QueueError::UnknownJob(id.to_string()));
        };
        match job.state {
            JobState::Queued => {
                ready_remove(&mut self.ready, job);
                self.finish(id, JobState::Cancelled, now_ms, "cancelled", "{}".into());
            }
            JobState::Running => {
                if !job.cancel_requested {
                    job.cancel_requested = true;
                    job.updated_ms = now_ms;
                    let tag = job.tag();
                    self.event("cancel_requested", tag, "{}".into(), now_ms);
                }
            }
            JobState::Cancelled => {}
            s => {
                return QueueResponse::Rejected(QueueError::AlreadyFinished {
                    job_id: id.to_string(),
                    state: s,
                })
            }
        }
        self.job_response(id, respond)
    }

    /// Leases that ended at or before `now_ms` expire: the attempt counts
    /// as failed. A job whose cancel was requested ends `cancelled`.
    pub(crate) fn expire(&mut self, now_ms: u64) -> u32 {
        let due: Vec<JobId> = self
            .leases
            .range(..=(now_ms, JobId::MAX))
            .map(|(_, id)| *id)
            .collect();
        for id in &due {
            let cancelled = self
                .jobs
                .get(id)
                .map(|j| j.cancel_requested)
                .unwrap_or(false);
            let outcome = if cancelled {
                Outcome::Cancelled
            } else {
                Outcome::Expired
            };
            self.end_attempt(
                *id,
                now_ms,
                outcome,
                Some("lease expired".into()),
                RunFacts::default(),
            );
            if let Some(tag) = self.jobs.get(id).map(|j| j.tag()) {
                self.event("expired", tag, "{}".into(), now_ms);
            }
            self.after_failed_attempt(*id, now_ms, "lease expired".into(), true, cancelled);
        }
        due.len() as u32
    }
}
