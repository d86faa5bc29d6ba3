//! orrery.v1.Jobs over the jobs service: the same operations and
//! validation as REST.

use super::jobs_convert as conv;
use crate::api::cursor::{cursor_string, parse_cursor};
use crate::api::jobs_view::{EventView, GpusView, JobView, QueueInfoView, RunView, WaitingJobView};
use crate::api::limits::{DEFAULT_EVENT_LIMIT, DEFAULT_JOB_LIMIT, MAX_EVENT_LIMIT, MAX_WAIT_S};
use crate::api::ApiError;
use crate::service::jobs::{all_failed, ClaimArgs, JobAction, JobLogs, LogEvent, SubmitArgs};
use crate::service::Services;
use futures::StreamExt;
use orrery_proto::v1 as pb;
use orrery_proto::v1::jobs_server::Jobs;
use orrery_queue::{JobState, RunFacts};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct JobsApi(pub Arc<Services>);

type LogStream = Pin<Box<dyn futures::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

fn chunk(data: Vec<u8>, end: bool) -> pb::LogChunk {
    pb::LogChunk { data, end }
}

/// A followed log as chunks: data until the run ends (`end`), or an error
/// when the node running it stopped answering.
fn log_chunks(logs: JobLogs) -> LogStream {
    match logs {
        JobLogs::Text(bytes) => Box::pin(futures::stream::iter([Ok(chunk(bytes, true))])),
        JobLogs::Follow(events) => Box::pin(events.map(|e| match e {
            LogEvent::Data(d) => Ok(chunk(d, false)),
            LogEvent::Lagged(n) => Ok(chunk(LogEvent::lagged_message(n).into_bytes(), false)),
            LogEvent::End => Ok(chunk(Vec::new(), true)),
            LogEvent::Failed(m) => Err(Status::unavailable(format!("log stream: {m}"))),
        })),
    }
}

impl JobsApi {
    /// The message of a request about one job, once the caller may act on
    /// that job (`JobsService::authorize_job`).
    async fn authorized<T>(
        &self,
        req: Request<T>,
        id: impl Fn(&T) -> &String,
        action: JobAction,
    ) -> Result<T, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        self.0.jobs.authorize_job(&caller, id(&r), action).await?;
        Ok(r)
    }
}

#[tonic::async_trait]
impl Jobs for JobsApi {
    async fn create_queue(
        &self,
        req: Request<pb::CreateQueueRequest>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        let q = self.0.jobs.create_queue(req.into_inner().into()).await?;
        Ok(Response::new(conv::queue_spec(&q)))
    }

    async fn list_queues(
        &self,
        _: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let qs = self.0.jobs.list_queues().await?;
        Ok(Response::new(pb::ListQueuesResponse {
            queues: qs.iter().map(conv::queue_spec).collect(),
        }))
    }

    async fn get_queue(
        &self,
        req: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        let i = self.0.jobs.queue_info(&req.into_inner().name).await?;
        let view = QueueInfoView::new(&i.spec, &i.counts, i.oldest_queued_age_ms);
        Ok(Response::new(conv::queue(&i.spec, &view)))
    }

    async fn delete_queue(
        &self,
        req: Request<pb::DeleteQueueRequest>,
    ) -> Result<Response<pb::DeleteQueueResponse>, Status> {
        self.0.jobs.delete_queue(&req.into_inner().name).await?;
        Ok(Response::new(pb::DeleteQueueResponse {}))
    }

    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = super::caller(&req);
        let mut args = SubmitArgs::try_from(req.into_inner())?;
        args.caller = Some(caller);
        let (job, created) = self.0.jobs.submit(args).await?;
        Ok(Response::new(pb::SubmitResponse {
            job: Some(conv::job(&job)),
            created,
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let jobs = &self.0.jobs;
        let id = self.authorized(req, |r| &r.id, JobAction::Use).await?.id;
        let job = jobs.get_job(&id).await?;
        let mut pj = conv::job(&job);
        pj.json = conv::json_text(&WaitingJobView {
            waiting: jobs.waiting_reason(&job),
            job: JobView::new(&job),
        });
        Ok(Response::new(pj))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        // A worker confined to some queues lists one of them at a time.
        if caller.queues.is_some() {
            match &r.queue {
                Some(q) => caller.check_queue(q)?,
                None => {
                    return Err(ApiError::Forbidden(
                        "this token is limited to some queues: list one queue".into(),
                    )
                    .into())
                }
            }
        }
        let state = match &r.state {
            None => None,
            Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                ApiError::bad("invalid_state", format!("state {s:?} is not a job state"))
            })?),
        };
        let limit = if r.limit == 0 {
            DEFAULT_JOB_LIMIT
        } else {
            r.limit as usize
        };
        let after = r.cursor.filter(|c| !c.is_empty());
        let jobs = self.0.jobs.list_jobs(r.queue, state, after, limit).await?;
        let next_cursor = (jobs.len() == limit)
            .then(|| jobs.last().map(|j| j.id.to_string()))
            .flatten();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(conv::job).collect(),
            next_cursor,
        }))
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<Response<pb::Job>, Status> {
        let id = self.authorized(req, |r| &r.id, JobAction::Cancel).await?.id;
        let job = self.0.jobs.cancel(&id).await?;
        Ok(Response::new(conv::job(&job)))
    }

    async fn runs(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::RunsResponse>, Status> {
        let id = self.authorized(req, |r| &r.id, JobAction::Use).await?.id;
        let job = self.0.jobs.get_job(&id).await?;
        Ok(Response::new(pb::RunsResponse {
            runs_json: job
                .runs
                .iter()
                .map(|r| conv::json_text(&RunView::new(r)))
                .collect(),
        }))
    }

    type LogsStream = LogStream;

    /// The logs of an attempt, from the node that ran it: one chunk, or
    /// (following) chunks until one with `end`.
    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = self.authorized(req, |r| &r.id, JobAction::Use).await?;
        let logs = self.0.jobs.logs(&r.id, r.attempt, r.follow).await?;
        Ok(Response::new(log_chunks(logs)))
    }

    async fn claim(
        &self,
        req: Request<pb::ClaimJobsRequest>,
    ) -> Result<Response<pb::ClaimJobsResponse>, Status> {
        let caller = super::caller(&req);
        let r = req.into_inner();
        caller.check_queue(&r.queue)?;
        if !(0.0..=MAX_WAIT_S as f64).contains(&r.wait_s) {
            return Err(ApiError::bad(
                "invalid_field",
                format!("wait_s must be 0..={MAX_WAIT_S} seconds"),
            )
            .into());
        }
        let done = conv::completions("complete", r.complete)?;
        let ids: Vec<String> = done.iter().map(|c| c.id.clone()).collect();
        let args = ClaimArgs {
            worker_id: r.worker_id,
            kinds: r.kinds,
            lease_s: r.lease_s,
            wait: Duration::from_secs_f64(r.wait_s),
            max: r.max.max(1),
            free_gpus: conv::offer(r.free_gpus),
            shared_gpus: conv::offer(r.shared_gpus),
            free_cpus: r.free_cpus,
            node: 0,
        };
        let got = self.0.jobs.claim(Some(&r.queue), args, done).await?;
        Ok(Response::new(pb::ClaimJobsResponse {
            jobs: got.jobs.iter().map(conv::job).collect(),
            completions: conv::complete_items(&got.completed, ids),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = self.authorized(req, |r| &r.id, JobAction::Use).await?;
        let (cancelled, lease_expires_ms) = self.0.jobs.heartbeat(&r.id, r.token).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancelled,
            lease_expires_ms,
        }))
    }

    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = self.authorized(req, |r| &r.id, JobAction::Use).await?;
        let result = conv::complete_result(&r)?;
        let job = self
            .0
            .jobs
            .complete(&r.id, r.token, &result, RunFacts::default())
            .await?;
        Ok(Response::new(conv::job(&job)))
    }

    async fn submit_batch(
        &self,
        req: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let caller = super::caller(&req);
        let mut items = conv::submits(req.into_inner().jobs)?;
        for i in &mut items {
            i.caller = Some(caller.clone());
        }
        let results = self.0.jobs.submit_many(items).await?;
        if let Some(e) = all_failed(&results) {
            return Err(e.into());
        }
        let items = results
            .iter()
            .map(|r| match r {
                Ok((job, created)) => pb::SubmitBatchItem {
                    job: Some(conv::job(job)),
                    created: *created,
                    error: None,
                },
                Err(e) => pb::SubmitBatchItem {
                    job: None,
                    created: false,
                    error: Some(conv::item_error(e)),
                },
            })
            .collect();
        Ok(Response::new(pb::SubmitBatchResponse { items }))
    }

    async fn complete_batch(
        &self,
        req: Request<pb::CompleteBatchRequest>,
    ) -> Result<Response<pb::CompleteBatchResponse>, Status> {
        let caller = super::caller(&req);
        let items = conv::completions("completions", req.into_inner().completions)?;
        let ids: Vec<String> = items.iter().map(|c| c.id.clone()).collect();
        self.0
            .jobs
            .authorize_jobs(&caller, ids.iter().map(String::as_str))
            .await?;
        let results = self.0.jobs.complete_many(items).await?;
        if let Some(e) = all_failed(&results) {
            return Err(e.into());
        }
        Ok(Response::new(pb::CompleteBatchResponse {
            items: conv::complete_items(&results, ids),
        }))
    }

    async fn fail(&self, req: Request<pb::FailRequest>) -> Result<Response<pb::Job>, Status> {
        let r = self.authorized(req, |r| &r.id, JobAction::Use).await?;
        let retry = r.retry.unwrap_or(true);
        let job = self
            .0
            .jobs
            .fail(&r.id, r.token, r.error, retry, RunFacts::default())
            .await?;
        Ok(Response::new(conv::job(&job)))
    }

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<pb::EventsResponse>, Status> {
        let r = req.into_inner();
        let cursor = parse_cursor(&r.since)?;
        let limit = if r.limit == 0 {
            DEFAULT_EVENT_LIMIT
        } else {
            (r.limit as usize).min(MAX_EVENT_LIMIT)
        };
        let (evs, next) = self.0.jobs.events_since(&cursor, limit).await?;
        Ok(Response::new(pb::EventsResponse {
            events_json: evs
                .iter()
                .map(|(s, e)| conv::json_text(&EventView::new(*s, e)))
                .collect(),
            cursor: cursor_string(&next),
        }))
    }

    async fn gpus(
        &self,
        _: Request<pb::GpusRequest>,
    ) -> Result<Response<pb::GpusResponse>, Status> {
        let reports = self.0.jobs.cluster_gpus().await?;
        Ok(Response::new(pb::GpusResponse {
            json: conv::json_text(&GpusView::new(&reports)),
        }))
    }

    async fn start_workflow(
        &self,
        req: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        super::workflows::start(&self.0, req).await
    }

    async fn get_workflow(
        &self,
        req: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        super::workflows::get(&self.0, req).await
    }

    async fn cancel_workflow(
        &self,
        req: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::Workflow>, Status> {
        super::workflows::cancel(&self.0, req).await
    }
}
