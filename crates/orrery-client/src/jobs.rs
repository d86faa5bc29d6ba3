//! Job queues over the gRPC API (orrery.v1.Jobs). Jobs, queues, runs and
//! events come with their full JSON form in a `json` field (the same as
//! the REST API's).

use crate::Channel;
use crate::{pb, Client, Error};
use orrery_proto::v1::jobs_client::JobsClient;

/// What a worker offers in a claim ([`Client::claim_jobs_offering`]).
#[derive(Clone, Debug, Default)]
pub struct ClaimOffer {
    /// Kinds it runs; empty: any.
    pub kinds: Vec<String>,
    /// Lease instead of the queue's default.
    pub lease_s: Option<u32>,
    /// GPUs none of its jobs hold: `(uuid, free MiB)`, `None` for any amount.
    pub free_gpus: Vec<(String, Option<u64>)>,
    /// GPUs only its running `shared_gpu` jobs hold, for more shared jobs.
    pub shared_gpus: Vec<(String, Option<u64>)>,
    /// Cores it has free; `None`: CPUs are not checked.
    pub free_cpus: Option<u32>,
}

impl Client {
    /// The raw Jobs service client, for the operations without a helper here.
    pub fn jobs(&self) -> JobsClient<Channel> {
        JobsClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(16 << 20)
    }

    pub async fn create_queue(&self, req: pb::CreateQueueRequest) -> Result<pb::QueueInfo, Error> {
        Ok(self.jobs().create_queue(req).await?.into_inner())
    }

    pub async fn list_queues(&self) -> Result<Vec<pb::QueueInfo>, Error> {
        Ok(self
            .jobs()
            .list_queues(pb::ListQueuesRequest {})
            .await?
            .into_inner()
            .queues)
    }

    /// A queue with counts per state (in `json`).
    pub async fn get_queue(&self, name: &str) -> Result<pb::QueueInfo, Error> {
        let req = pb::GetQueueRequest { name: name.into() };
        Ok(self.jobs().get_queue(req).await?.into_inner())
    }

    /// Returns the job and whether it was created (false: deduplicated).
    pub async fn submit_job(&self, req: pb::SubmitRequest) -> Result<(pb::Job, bool), Error> {
        let r = self.jobs().submit(req).await?.into_inner();
        let job = r
            .job
            .ok_or_else(|| tonic::Status::internal("submit returned no job"))?;
        Ok((job, r.created))
    }

    pub async fn get_job(&self, id: &str) -> Result<pb::Job, Error> {
        let req = pb::GetJobRequest { id: id.into() };
        Ok(self.jobs().get_job(req).await?.into_inner())
    }

    pub async fn list_jobs(&self, req: pb::ListJobsRequest) -> Result<pb::ListJobsResponse, Error> {
        Ok(self.jobs().list_jobs(req).await?.into_inner())
    }

    pub async fn cancel_job(&self, id: &str) -> Result<pb::Job, Error> {
        let req = pb::CancelRequest { id: id.into() };
        Ok(self.jobs().cancel(req).await?.into_inner())
    }

    /// Leases up to `max` jobs of `queue`, waiting up to `wait_s` seconds;
    /// each job's `attempts` is its lease token.
    pub async fn claim_jobs(
        &self,
        queue: &str,
        worker_id: &str,
        max: u32,
        wait_s: f64,
    ) -> Result<Vec<pb::Job>, Error> {
        let (jobs, _) = self
            .claim_jobs_completing(queue, worker_id, max, wait_s, Vec::new())
            .await?;
        Ok(jobs)
    }

    /// Completes the jobs in `done` (`(id, token, result_json)` each), then
    /// leases up to `max` jobs of `queue` as [`Client::claim_jobs`] does, in
    /// one request: a worker's loop then costs one round trip per batch.
    /// Returns the claimed jobs and one item per completion, in order.
    pub async fn claim_jobs_completing(
        &self,
        queue: &str,
        worker_id: &str,
        max: u32,
        wait_s: f64,
        done: Vec<(String, u32, String)>,
    ) -> Result<(Vec<pb::Job>, Vec<pb::CompleteBatchItem>), Error> {
        let req = pb::ClaimJobsRequest {
            queue: queue.into(),
            worker_id: worker_id.into(),
            wait_s,
            max,
            complete: complete_requests(done),
            ..Default::default()
        };
        let r = self.jobs().claim(req).await?.into_inner();
        Ok((r.jobs, r.completions))
    }

    /// Leases up to `max` jobs of `queue` for a worker that says what it
    /// can run: `offer` names kinds, a lease, and the GPUs and cores it has
    /// free (see [`ClaimOffer`]). GPU jobs are only claimed with GPUs offered.
    pub async fn claim_jobs_offering(
        &self,
        queue: &str,
        worker_id: &str,
        max: u32,
        wait_s: f64,
        offer: &ClaimOffer,
    ) -> Result<Vec<pb::Job>, Error> {
        let gpus = |v: &[(String, Option<u64>)]| {
            v.iter()
                .map(|(uuid, free)| pb::GpuOffer {
                    uuid: uuid.clone(),
                    free_memory_mb: *free,
                })
                .collect()
        };
        let req = pb::ClaimJobsRequest {
            queue: queue.into(),
            worker_id: worker_id.into(),
            kinds: offer.kinds.clone(),
            lease_s: offer.lease_s,
            wait_s,
            max,
            complete: Vec::new(),
            free_gpus: gpus(&offer.free_gpus),
            shared_gpus: gpus(&offer.shared_gpus),
            free_cpus: offer.free_cpus,
        };
        Ok(self.jobs().claim(req).await?.into_inner().jobs)
    }

    /// Extends the lease; returns whether the job was cancelled.
    pub async fn heartbeat_job(&self, id: &str, token: u32) -> Result<bool, Error> {
        let req = pb::HeartbeatRequest {
            id: id.into(),
            token,
        };
        Ok(self.jobs().heartbeat(req).await?.into_inner().cancelled)
    }

    pub async fn complete_job(
        &self,
        id: &str,
        token: u32,
        result_json: &str,
    ) -> Result<pb::Job, Error> {
        let req = pb::CompleteRequest {
            id: id.into(),
            token,
            result_json: result_json.into(),
        };
        Ok(self.jobs().complete(req).await?.into_inner())
    }

    /// Bulk submit (up to 1000 jobs): one item per job, in order, each with
    /// the job or the error that job met.
    pub async fn submit_jobs(
        &self,
        jobs: Vec<pb::SubmitRequest>,
    ) -> Result<Vec<pb::SubmitBatchItem>, Error> {
        let req = pb::SubmitBatchRequest { jobs };
        Ok(self.jobs().submit_batch(req).await?.into_inner().items)
    }

    /// Bulk complete: `(id, token, result_json)` per job; one item per
    /// completion, in order (a stale token is an item error "conflict").
    pub async fn complete_jobs(
        &self,
        completions: Vec<(String, u32, String)>,
    ) -> Result<Vec<pb::CompleteBatchItem>, Error> {
        let req = pb::CompleteBatchRequest {
            completions: complete_requests(completions),
        };
        Ok(self.jobs().complete_batch(req).await?.into_inner().items)
    }

    pub async fn fail_job(
        &self,
        id: &str,
        token: u32,
        error: &str,
        retry: bool,
    ) -> Result<pb::Job, Error> {
        let req = pb::FailRequest {
            id: id.into(),
            token,
            error: error.into(),
            retry: Some(retry),
        };
        Ok(self.jobs().fail(req).await?.into_inner())
    }

    /// The cluster's GPUs as JSON (`{"gpus": [...], "nodes": [...]}`).
    pub async fn gpus(&self) -> Result<String, Error> {
        Ok(self
            .jobs()
            .gpus(pb::GpusRequest {})
            .await?
            .into_inner()
            .json)
    }
}

impl Client {
    /// Starts a workflow (`Workflow.json`: the REST view, per-step state).
    pub async fn start_workflow(
        &self,
        req: pb::StartWorkflowRequest,
    ) -> Result<pb::Workflow, Error> {
        Ok(self.jobs().start_workflow(req).await?.into_inner())
    }

    pub async fn get_workflow(&self, id: &str) -> Result<pb::Workflow, Error> {
        let req = pb::GetWorkflowRequest { id: id.into() };
        Ok(self.jobs().get_workflow(req).await?.into_inner())
    }

    pub async fn cancel_workflow(&self, id: &str) -> Result<pb::Workflow, Error> {
        let req = pb::CancelWorkflowRequest { id: id.into() };
        Ok(self.jobs().cancel_workflow(req).await?.into_inner())
    }
}

/// `(id, token, result_json)` triples as completion messages.
fn complete_requests(items: Vec<(String, u32, String)>) -> Vec<pb::CompleteRequest> {
    items
        .into_iter()
        .map(|(id, token, result_json)| pb::CompleteRequest {
            id,
            token,
            result_json,
        })
        .collect()
}
