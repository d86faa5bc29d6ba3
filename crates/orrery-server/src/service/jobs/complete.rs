//! What workers report on their leases: heartbeats, completions (single and
//! bulk), failures; and cancels.

use super::bulk::{check_batch, filled, Slots};
use super::{job_group, unexpected, CompleteArgs, JobsService};
use crate::api::{now_ms, ApiError};
use orrery_queue::{Completion, Job, JobState, QueueCommand, QueueResponse, RunFacts};
use orrery_types::GroupId;
use serde_json::Value;
use std::collections::BTreeMap;

/// Completions by shard group (with each one's index in the request).
pub(super) type ByGroup = BTreeMap<GroupId, Vec<(usize, Completion)>>;

fn too_large(result: &str) -> Option<ApiError> {
    let cap = orrery_queue::MAX_RESULT_BYTES;
    (result.len() > cap).then(|| {
        ApiError::TooLarge(format!(
            "result is {} bytes; the limit is {cap} bytes",
            result.len()
        ))
    })
}

/// The completions of a bulk request by shard group, and a result slot per
/// item; items that cannot be written (bad id, oversized result) already
/// hold their error.
pub(super) fn completions_by_group(items: Vec<CompleteArgs>) -> (Slots<Job>, ByGroup) {
    let mut out: Slots<Job> = vec![None; items.len()];
    let mut by_group: ByGroup = BTreeMap::new();
    for (i, c) in items.into_iter().enumerate() {
        let g = match job_group(&c.id) {
            Ok(g) => g,
            Err(e) => {
                out[i] = Some(Err(e));
                continue;
            }
        };
        let result = c.result.to_string();
        if let Some(e) = too_large(&result) {
            out[i] = Some(Err(e));
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
pub(super) fn completed_job(r: QueueResponse) -> Result<Job, QueueResponse> {
    match r {
        QueueResponse::Job(j) => Ok(*j),
        other => Err(other),
    }
}

impl JobsService {
    async fn job_cmd(&self, g: GroupId, cmd: QueueCommand) -> Result<Job, ApiError> {
        match self.queue_write(g, cmd).await? {
            QueueResponse::Job(j) => Ok(*j),
            other => Err(unexpected(other)),
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        let cmd = QueueCommand::Cancel {
            job_id: id.into(),
            now_ms: now_ms(),
        };
        self.job_cmd(g, cmd).await
    }

    /// Extends a lease. Returns (cancel requested, the lease's new expiry).
    pub async fn heartbeat(&self, id: &str, token: u32) -> Result<(bool, u64), ApiError> {
        let g = job_group(id)?;
        let cmd = QueueCommand::Heartbeat {
            job_id: id.into(),
            token,
            now_ms: now_ms(),
        };
        match self.queue_write(g, cmd).await? {
            QueueResponse::Heartbeat {
                cancelled,
                expires_ms,
            } => Ok((cancelled, expires_ms)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn complete(
        &self,
        id: &str,
        token: u32,
        result: &Value,
        facts: RunFacts,
    ) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        let result = result.to_string();
        if let Some(e) = too_large(&result) {
            return Err(e);
        }
        let cmd = QueueCommand::Complete {
            job_id: id.into(),
            token,
            result,
            facts,
            now_ms: now_ms(),
        };
        self.job_cmd(g, cmd).await
    }

    /// Bulk complete: the completions of each shard go in one log entry per
    /// chunk, all shards at once. Each is checked on its own (a stale token
    /// or an unknown id fails that item only); one result per item, in order.
    pub async fn complete_many(
        &self,
        items: Vec<CompleteArgs>,
    ) -> Result<Vec<Result<Job, ApiError>>, ApiError> {
        check_batch("completions", items.len())?;
        let (mut out, by_group) = completions_by_group(items);
        self.write_completions(by_group, &mut out).await;
        Ok(filled(out))
    }

    pub(super) async fn write_completions(
        &self,
        by_group: ByGroup,
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

    /// Fails an attempt: retried with backoff while attempts remain (and
    /// `retry`), dead otherwise.
    pub async fn fail(
        &self,
        id: &str,
        token: u32,
        error: String,
        retry: bool,
        facts: RunFacts,
    ) -> Result<Job, ApiError> {
        let g = job_group(id)?;
        let cmd = QueueCommand::Fail {
            job_id: id.into(),
            token,
            error,
            retry,
            facts,
            now_ms: now_ms(),
        };
        let job = self.job_cmd(g, cmd).await?;
        if job.state == JobState::Queued {
            self.wake.notify_waiters();
        }
        Ok(job)
    }
}
