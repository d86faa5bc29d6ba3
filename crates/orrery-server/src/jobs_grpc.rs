//! The public gRPC API of job queues (orrery.v1.Jobs): the same operations
//! and validation as REST (both call `jobs_api`).

use crate::api::error::ApiError;
use crate::jobs_api::{
    all_failed, at, cursor_string, event_json, job_json, parse_cursor, run_json, ClaimArgs,
    CompleteArgs, QueueArgs, SubmitArgs, DEFAULT_JOB_LIMIT, MAX_WAIT_S,
};
use crate::jobs_rest::{gpus_json, queue_info_json, queue_json};
use crate::node::Node;
use futures::StreamExt;
use orrery_proto::v1 as pb;
use orrery_proto::v1::jobs_server::Jobs;
use orrery_queue::{JobState, Resources, RunFacts};
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct JobsService(pub Arc<Node>);

fn pb_job(j: &orrery_queue::Job) -> pb::Job {
    pb::Job {
        id: j.id.to_string(),
        queue: j.queue.to_string(),
        kind: j.kind.to_string(),
        state: j.state.as_str().into(),
        attempts: j.attempts,
        priority: j.priority,
        json: serde_json::to_string(&crate::jobs_api::JobView::new(j)).unwrap_or_default(),
    }
}

fn pb_queue(v: &Value) -> pb::QueueInfo {
    pb::QueueInfo {
        name: v["name"].as_str().unwrap_or_default().into(),
        partitions: v["partitions"].as_u64().unwrap_or(0) as u32,
        lease_s: v["lease_s"].as_u64().unwrap_or(0) as u32,
        max_attempts: v["max_attempts"].as_u64().unwrap_or(0) as u32,
        json: v.to_string(),
    }
}

fn parse_json(field: &str, s: &str, empty: Value) -> Result<Value, ApiError> {
    if s.is_empty() {
        return Ok(empty);
    }
    serde_json::from_str(s)
        .map_err(|e| ApiError::bad("invalid_json", format!("{field} is not valid JSON: {e}")))
}

fn submit_args(r: pb::SubmitRequest) -> Result<SubmitArgs, ApiError> {
    let params = parse_json("params_json", &r.params_json, serde_json::json!({}))?;
    Ok(SubmitArgs {
        queue: r.queue,
        kind: r.kind,
        params,
        priority: r.priority,
        run_at_ms: r.run_at_ms,
        delay_ms: r.delay_ms,
        resources: Resources {
            gpus: r.gpus,
            gpu_memory_mb: r.gpu_memory_mb,
            cpus: r.cpus,
            shared_gpu: r.shared_gpu,
        },
        dedupe_key: r.dedupe_key,
        submitted_by: r.submitted_by,
    })
}

fn item_error(e: &ApiError) -> pb::ItemError {
    pb::ItemError {
        code: e.code().into(),
        message: e.to_string(),
    }
}

type LogStream = Pin<Box<dyn futures::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn create_queue(
        &self,
        req: Request<pb::CreateQueueRequest>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        let r = req.into_inner();
        let q = self
            .0
            .create_queue(QueueArgs {
                name: r.name,
                partitions: r.partitions,
                lease_s: r.lease_s,
                max_attempts: r.max_attempts,
                backoff_initial_ms: r.backoff_initial_ms,
                backoff_multiplier: r.backoff_multiplier,
                backoff_max_ms: r.backoff_max_ms,
                concurrency_limit: r.concurrency_limit,
            })
            .await?;
        Ok(Response::new(pb_queue(&queue_json(&q))))
    }

    async fn list_queues(
        &self,
        _: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let qs = self.0.list_queues().await?;
        Ok(Response::new(pb::ListQueuesResponse {
            queues: qs.iter().map(|q| pb_queue(&queue_json(q))).collect(),
        }))
    }

    async fn get_queue(
        &self,
        req: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        let v = queue_info_json(&self.0, &req.into_inner().name).await?;
        Ok(Response::new(pb_queue(&v)))
    }

    async fn delete_queue(
        &self,
        req: Request<pb::DeleteQueueRequest>,
    ) -> Result<Response<pb::DeleteQueueResponse>, Status> {
        self.0.delete_queue(&req.into_inner().name).await?;
        Ok(Response::new(pb::DeleteQueueResponse {}))
    }

    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let (job, created) = self.0.submit_job(submit_args(req.into_inner())?).await?;
        Ok(Response::new(pb::SubmitResponse {
            job: Some(pb_job(&job)),
            created,
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let job = self.0.get_job(&req.into_inner().id).await?;
        let mut pj = pb_job(&job);
        let mut v = job_json(&job);
        v["waiting"] = serde_json::json!(self.0.waiting_reason(&job).await);
        pj.json = v.to_string();
        Ok(Response::new(pj))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = req.into_inner();
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
        let jobs = self
            .0
            .list_jobs(r.queue, state, r.cursor.filter(|c| !c.is_empty()), limit)
            .await?;
        let next_cursor = (jobs.len() == limit)
            .then(|| jobs.last().map(|j| j.id.to_string()))
            .flatten();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(pb_job).collect(),
            next_cursor,
        }))
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<Response<pb::Job>, Status> {
        let job = self.0.cancel_job(&req.into_inner().id).await?;
        Ok(Response::new(pb_job(&job)))
    }

    async fn runs(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::RunsResponse>, Status> {
        let job = self.0.get_job(&req.into_inner().id).await?;
        Ok(Response::new(pb::RunsResponse {
            runs_json: job.runs.iter().map(|r| run_json(r).to_string()).collect(),
        }))
    }

    type LogsStream = LogStream;

    /// Relays this node's REST logs endpoint (which finds the node that ran
    /// the attempt), parsing its Server-Sent Events when following.
    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = req.into_inner();
        let node = &self.0;
        crate::jobs_api::job_group(&r.id)?;
        let mut url = format!(
            "http://{}/v1/jobs/{}/logs?follow={}",
            node.cfg.addr, r.id, r.follow
        );
        if let Some(a) = r.attempt {
            url.push_str(&format!("&attempt={a}"));
        }
        let resp = node
            .jobs
            .http()
            .get(&url)
            .send()
            .await
            .map_err(|e| ApiError::unavailable(format!("logs: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let msg = body["error"]["message"]
                .as_str()
                .unwrap_or("logs unavailable")
                .to_string();
            return Err(match status {
                404 => ApiError::NotFound(msg),
                400 => ApiError::bad("invalid_request", msg),
                _ => ApiError::unavailable(msg),
            }
            .into());
        }
        if !r.follow {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ApiError::unavailable(format!("logs: {e}")))?;
            let s = futures::stream::iter([Ok(pb::LogChunk {
                data: bytes.to_vec(),
                end: true,
            })]);
            return Ok(Response::new(Box::pin(s)));
        }
        // SSE: events separated by blank lines; `event: log|end`, `data:` lines.
        let body = resp.bytes_stream();
        let s = futures::stream::unfold(
            (body, String::new(), false),
            |(mut body, mut buf, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(pos) = buf.find("\n\n") {
                        let event: String = buf[..pos].to_string();
                        buf.drain(..pos + 2);
                        let mut kind = "message";
                        let mut data = Vec::new();
                        for line in event.lines() {
                            if let Some(k) = line.strip_prefix("event:") {
                                kind = if k.trim() == "end" { "end" } else { "log" };
                            } else if let Some(d) = line.strip_prefix("data:") {
                                data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                            }
                        }
                        if kind == "end" {
                            let c = pb::LogChunk {
                                data: vec![],
                                end: true,
                            };
                            return Some((Ok(c), (body, buf, true)));
                        }
                        if data.is_empty() {
                            continue;
                        }
                        let c = pb::LogChunk {
                            data: data.join("\n").into_bytes(),
                            end: false,
                        };
                        return Some((Ok(c), (body, buf, false)));
                    }
                    match body.next().await {
                        Some(Ok(b)) => buf.push_str(&String::from_utf8_lossy(&b)),
                        Some(Err(e)) => {
                            let st = Status::unavailable(format!("log stream: {e}"));
                            return Some((Err(st), (body, buf, true)));
                        }
                        None => return None,
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(s)))
    }

    async fn claim(
        &self,
        req: Request<pb::ClaimJobsRequest>,
    ) -> Result<Response<pb::ClaimJobsResponse>, Status> {
        let r = req.into_inner();
        if !(0.0..=MAX_WAIT_S as f64).contains(&r.wait_s) {
            return Err(ApiError::bad(
                "invalid_field",
                format!("wait_s must be 0..={MAX_WAIT_S} seconds"),
            )
            .into());
        }
        let done = complete_args("complete", r.complete)?;
        let ids: Vec<String> = done.iter().map(|c| c.id.clone()).collect();
        let got = self
            .0
            .claim_jobs(
                Some(&r.queue),
                ClaimArgs {
                    worker_id: r.worker_id,
                    kinds: r.kinds,
                    lease_s: r.lease_s,
                    wait: Duration::from_secs_f64(r.wait_s),
                    max: r.max.max(1),
                    free_gpus: grpc_offer(r.free_gpus),
                    shared_gpus: grpc_offer(r.shared_gpus),
                    free_cpus: r.free_cpus,
                    node: 0,
                },
                done,
            )
            .await?;
        Ok(Response::new(pb::ClaimJobsResponse {
            jobs: got.jobs.iter().map(pb_job).collect(),
            completions: complete_items(&got.completed, ids),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let (cancelled, lease_expires_ms) = self.0.heartbeat_job(&r.id, r.token).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancelled,
            lease_expires_ms,
        }))
    }

    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = req.into_inner();
        let result = parse_json("result_json", &r.result_json, Value::Null)?;
        let job = self
            .0
            .complete_job(&r.id, r.token, &result, RunFacts::default())
            .await?;
        Ok(Response::new(pb_job(&job)))
    }

    async fn submit_batch(
        &self,
        req: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let mut items = Vec::new();
        for (i, r) in req.into_inner().jobs.into_iter().enumerate() {
            items.push(submit_args(r).map_err(|e| at(&format!("jobs[{i}]"), e))?);
        }
        let results = self.0.submit_jobs(items).await?;
        if let Some(e) = all_failed(&results) {
            return Err(e.into());
        }
        let items = results
            .iter()
            .map(|r| match r {
                Ok((job, created)) => pb::SubmitBatchItem {
                    job: Some(pb_job(job)),
                    created: *created,
                    error: None,
                },
                Err(e) => pb::SubmitBatchItem {
                    job: None,
                    created: false,
                    error: Some(item_error(e)),
                },
            })
            .collect();
        Ok(Response::new(pb::SubmitBatchResponse { items }))
    }

    async fn complete_batch(
        &self,
        req: Request<pb::CompleteBatchRequest>,
    ) -> Result<Response<pb::CompleteBatchResponse>, Status> {
        let items = complete_args("completions", req.into_inner().completions)?;
        let ids: Vec<String> = items.iter().map(|c| c.id.clone()).collect();
        let results = self.0.complete_jobs(items).await?;
        if let Some(e) = all_failed(&results) {
            return Err(e.into());
        }
        Ok(Response::new(pb::CompleteBatchResponse {
            items: complete_items(&results, ids),
        }))
    }

    async fn fail(&self, req: Request<pb::FailRequest>) -> Result<Response<pb::Job>, Status> {
        let r = req.into_inner();
        let job = self
            .0
            .fail_job(
                &r.id,
                r.token,
                r.error,
                r.retry.unwrap_or(true),
                RunFacts::default(),
            )
            .await?;
        Ok(Response::new(pb_job(&job)))
    }

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<pb::EventsResponse>, Status> {
        let r = req.into_inner();
        let cursor = parse_cursor(&r.since)?;
        let limit = if r.limit == 0 {
            1000
        } else {
            (r.limit as usize).min(10_000)
        };
        let (evs, next) = self.0.events_since(&cursor, limit).await?;
        Ok(Response::new(pb::EventsResponse {
            events_json: evs
                .iter()
                .map(|(s, e)| event_json(*s, e).to_string())
                .collect(),
            cursor: cursor_string(&next),
        }))
    }

    async fn gpus(
        &self,
        _: Request<pb::GpusRequest>,
    ) -> Result<Response<pb::GpusResponse>, Status> {
        Ok(Response::new(pb::GpusResponse {
            json: gpus_json(&self.0).await?.to_string(),
        }))
    }
}

/// The completions of a request (its field `field`), with `result_json`
/// parsed.
fn complete_args(field: &str, reqs: Vec<pb::CompleteRequest>) -> Result<Vec<CompleteArgs>, Status> {
    let mut items = Vec::new();
    for (i, r) in reqs.into_iter().enumerate() {
        let result = parse_json("result_json", &r.result_json, Value::Null)
            .map_err(|e| at(&format!("{field}[{i}]"), e))?;
        items.push(CompleteArgs {
            id: r.id,
            token: r.token,
            result,
            facts: RunFacts::default(),
        });
    }
    Ok(items)
}

/// One item per completion, in order: the job's new state or the error.
fn complete_items(
    results: &[Result<orrery_queue::Job, ApiError>],
    ids: Vec<String>,
) -> Vec<pb::CompleteBatchItem> {
    results
        .iter()
        .zip(ids)
        .map(|(r, id)| match r {
            Ok(job) => pb::CompleteBatchItem {
                id,
                state: job.state.as_str().into(),
                error: None,
            },
            Err(e) => pb::CompleteBatchItem {
                id,
                state: String::new(),
                error: Some(item_error(e)),
            },
        })
        .collect()
}

/// A claim's GPU offer as `(uuid, free MiB)` (no memory given: any amount).
fn grpc_offer(gpus: Vec<pb::GpuOffer>) -> Vec<(String, u64)> {
    gpus.into_iter()
        .map(|g| (g.uuid, g.free_memory_mb.unwrap_or(u64::MAX)))
        .collect()
}
