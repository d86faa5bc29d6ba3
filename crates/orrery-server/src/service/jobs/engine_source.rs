//! The execution engine's view of the cluster: claims over every queue
//! (preferring shards this node leads), and its reports on the leases.

use super::{ClaimArgs, JobsService};
use crate::api::ApiError;
use orrery_exec::{ClaimRequest, Claimed, HeartbeatReply, JobSource, RunReport, SourceError};
use orrery_queue::RunFacts;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct EngineSource(pub(super) Arc<JobsService>);

fn source_error(e: ApiError) -> SourceError {
    match e {
        ApiError::Conflict(m) | ApiError::NotFound(m) => SourceError::Conflict(m),
        ApiError::Unavailable(_)
        | ApiError::OutcomeUnknown(_)
        | ApiError::NotInitialized
        | ApiError::StorageUnavailable(_)
        | ApiError::Overloaded(_) => SourceError::Unavailable(e.to_string()),
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
impl JobSource for EngineSource {
    async fn claim(&self, req: ClaimRequest) -> Result<Option<Claimed>, SourceError> {
        let node = &self.0.node;
        if !node.placement().is_initialized() {
            tokio::time::sleep(req.wait.min(Duration::from_secs(1))).await;
            return Ok(None);
        }
        let args = ClaimArgs {
            worker_id: format!("node-{}/{}", node.id(), req.worker_id),
            kinds: req.kinds,
            lease_s: None,
            wait: req.wait,
            max: 1,
            free_gpus: offer(&req.free_gpus),
            shared_gpus: offer(&req.shared_gpus),
            free_cpus: Some(req.free_cpus),
            node: node.id(),
        };
        let jobs = self
            .0
            .claim(None, args, Vec::new())
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
            .heartbeat(job_id, token(t)?)
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
            .complete(job_id, token(t)?, &result, facts(&run))
            .await
        {
            Ok(_) => Ok(()),
            // The engine caps results itself; a result still too large
            // fails the attempt rather than being lost silently.
            Err(ApiError::TooLarge(m)) => self
                .0
                .fail(job_id, token(t)?, m, false, facts(&run))
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
            .fail(job_id, token(t)?, error, true, facts(&run))
            .await
            .map(|_| ())
            .map_err(source_error)
    }

    async fn fail_permanently(
        &self,
        job_id: &str,
        t: u64,
        error: String,
        run: RunReport,
    ) -> Result<(), SourceError> {
        self.0
            .fail(job_id, token(t)?, error, false, facts(&run))
            .await
            .map(|_| ())
            .map_err(source_error)
    }
}
