//! Jobs, queues, runs, events and GPUs as the API shows them: the REST
//! bodies, and the `json` fields of the gRPC messages (the same documents).
//! Serialised straight into the answer, without a `serde_json::Value` tree
//! in between: submits and claims answer with many jobs, and building
//! those trees (a map insert per field) was an eighth of a node's CPU in
//! the batched job-queue benchmark.

use orrery_queue::{Event, GpuReport, Job, JobState, QueueSpec, Run};
use orrery_types::NodeId;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobView<'a> {
    #[schema(value_type = String)]
    id: orrery_queue::JobId,
    queue: &'a str,
    partition: u32,
    kind: &'a str,
    /// The job's parameters, as submitted.
    #[schema(value_type = serde_json::Value)]
    params: Embedded<'a>,
    priority: i32,
    state: &'static str,
    run_at_ms: u64,
    attempts: u32,
    max_attempts: u32,
    lease_s: u32,
    resources: ResourcesView,
    dedupe_key: Option<&'a str>,
    submitted_by: Option<&'a str>,
    #[schema(value_type = serde_json::Value)]
    result: Option<Embedded<'a>>,
    last_error: Option<&'a str>,
    created_ms: u64,
    updated_ms: u64,
    finished_ms: Option<u64>,
    cancel_requested: bool,
    lease: Option<LeaseView<'a>>,
    /// Submits: whether this request created the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<bool>,
    /// Claims: the lease token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ResourcesView {
    gpus: u32,
    gpu_memory_mb: u64,
    cpus: u32,
    shared_gpu: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LeaseView<'a> {
    worker_id: &'a str,
    node: u64,
    expires_ms: u64,
}

/// Stored JSON text (a job's params or result), written into the answer as
/// the JSON it is; text that is not JSON (never stored by this version) as
/// a string.
struct Embedded<'a>(&'a str);

impl Serialize for Embedded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(self.0),
        }
    }
}

impl<'a> JobView<'a> {
    pub fn new(j: &'a Job) -> Self {
        JobView {
            id: j.id,
            queue: &j.queue,
            partition: j.partition,
            kind: &j.kind,
            params: Embedded(&j.params),
            priority: j.priority,
            state: j.state.as_str(),
            run_at_ms: j.run_at_ms,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            lease_s: j.lease_s,
            resources: ResourcesView {
                gpus: j.resources.gpus,
                gpu_memory_mb: j.resources.gpu_memory_mb,
                cpus: j.resources.cpus,
                shared_gpu: j.resources.shared_gpu,
            },
            dedupe_key: j.dedupe_key.as_deref(),
            submitted_by: j.submitted_by.as_deref(),
            result: j.result.as_deref().map(Embedded),
            last_error: j.last_error.as_deref(),
            created_ms: j.created_ms,
            updated_ms: j.updated_ms,
            finished_ms: j.finished_ms,
            cancel_requested: j.cancel_requested,
            lease: j.lease.as_ref().map(|l| LeaseView {
                worker_id: &l.worker_id,
                node: l.node,
                expires_ms: l.expires_ms,
            }),
            created: None,
            token: None,
        }
    }

    /// The job and whether this request created it, as a submit answers.
    pub fn submitted(j: &'a Job, created: bool) -> Self {
        JobView {
            created: Some(created),
            ..Self::new(j)
        }
    }

    /// The job with its lease token, as a claim answers.
    pub fn claimed(j: &'a Job) -> Self {
        JobView {
            token: Some(j.attempts),
            ..Self::new(j)
        }
    }
}

/// One job as a get answers: with why it waits, if it does.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WaitingJobView<'a> {
    #[serde(flatten)]
    pub job: JobView<'a>,
    pub waiting: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueView<'a> {
    name: &'a str,
    partitions: u32,
    lease_s: u32,
    max_attempts: u32,
    backoff: BackoffView,
    concurrency_limit: Option<u32>,
    created_ms: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BackoffView {
    initial_ms: u64,
    multiplier: f64,
    max_ms: u64,
}

impl<'a> QueueView<'a> {
    pub fn new(q: &'a QueueSpec) -> Self {
        QueueView {
            name: &q.name,
            partitions: q.partitions,
            lease_s: q.lease_s,
            max_attempts: q.max_attempts,
            backoff: BackoffView {
                initial_ms: q.backoff.initial_ms,
                multiplier: q.backoff.multiplier_milli as f64 / 1000.0,
                max_ms: q.backoff.max_ms,
            },
            concurrency_limit: q.concurrency_limit,
            created_ms: q.created_ms,
        }
    }
}

/// A queue with its job counts per state and its oldest queued job's age.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueInfoView<'a> {
    #[serde(flatten)]
    queue: QueueView<'a>,
    #[schema(value_type = BTreeMap<String, u64>)]
    counts: BTreeMap<&'static str, u64>,
    oldest_queued_age_ms: Option<u64>,
}

impl<'a> QueueInfoView<'a> {
    pub fn new(
        spec: &'a QueueSpec,
        counts: &BTreeMap<JobState, u64>,
        oldest_queued_age_ms: Option<u64>,
    ) -> Self {
        QueueInfoView {
            queue: QueueView::new(spec),
            counts: counts.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
            oldest_queued_age_ms,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunView<'a> {
    attempt: u32,
    node: u64,
    worker_id: &'a str,
    #[schema(value_type = Vec<String>)]
    gpu_uuids: &'a [String],
    started_ms: u64,
    finished_ms: Option<u64>,
    /// succeeded, failed, cancelled or expired.
    #[schema(value_type = Option<String>)]
    outcome: Option<orrery_queue::Outcome>,
    exit_code: Option<i32>,
    error: Option<&'a str>,
    duration_ms: Option<u64>,
    gpu_peak_memory_mb: Option<u64>,
    gpu_mean_utilization_pct: Option<f64>,
}

impl<'a> RunView<'a> {
    pub fn new(r: &'a Run) -> Self {
        RunView {
            attempt: r.attempt,
            node: r.node,
            worker_id: &r.worker_id,
            gpu_uuids: &r.facts.gpu_uuids,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
            outcome: r.outcome,
            exit_code: r.facts.exit_code,
            error: r.error.as_deref(),
            duration_ms: r.facts.duration_ms,
            gpu_peak_memory_mb: r.facts.gpu_peak_memory_mb,
            gpu_mean_utilization_pct: r.facts.gpu_mean_utilization_centi.map(|c| c as f64 / 100.0),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView<'a> {
    id: String,
    shard: u32,
    seq: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    #[schema(value_type = String)]
    job_id: orrery_queue::JobId,
    queue: &'a str,
    attempt: u32,
    #[schema(value_type = serde_json::Value)]
    payload: Payload<'a>,
    ts: u64,
}

/// An event's payload (JSON text) as the JSON it is; `null` if it is not.
struct Payload<'a>(&'a str);

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_none(),
        }
    }
}

impl<'a> EventView<'a> {
    pub fn new(shard: u32, e: &'a Event) -> Self {
        EventView {
            id: format!("{shard}:{}", e.seq),
            shard,
            seq: e.seq,
            kind: &e.kind,
            job_id: e.job_id,
            queue: &e.queue,
            attempt: e.attempt,
            payload: Payload(&e.payload),
            ts: e.ts_ms,
        }
    }
}

/// Every node's GPUs, and per node when it reported them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GpusView<'a> {
    gpus: Vec<GpuView<'a>>,
    nodes: Vec<NodeGpusView>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct GpuView<'a> {
    #[schema(value_type = u64)]
    node: NodeId,
    uuid: &'a str,
    index: u32,
    name: &'a str,
    memory_total_mb: u64,
    memory_used_mb: u64,
    utilization_pct: u32,
    temperature_c: u32,
    compute_capability: &'a str,
}

#[derive(Serialize, utoipa::ToSchema)]
struct NodeGpusView {
    #[schema(value_type = u64)]
    node: NodeId,
    reported_ms: u64,
    gpus: usize,
}

impl<'a> GpusView<'a> {
    pub fn new(reports: &'a BTreeMap<NodeId, GpuReport>) -> Self {
        let mut gpus = Vec::new();
        let mut nodes = Vec::new();
        for (n, r) in reports {
            nodes.push(NodeGpusView {
                node: *n,
                reported_ms: r.reported_ms,
                gpus: r.gpus.len(),
            });
            gpus.extend(r.gpus.iter().map(|g| GpuView {
                node: *n,
                uuid: &g.uuid,
                index: g.index,
                name: &g.name,
                memory_total_mb: g.memory_total_mb,
                memory_used_mb: g.memory_used_mb,
                utilization_pct: g.utilization_pct,
                temperature_c: g.temperature_c,
                compute_capability: &g.compute_capability,
            }));
        }
        GpusView { gpus, nodes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn job(params: &str, result: Option<&str>) -> Job {
        Job {
            id: orrery_queue::JobId::parse("0000000000010000000000002a").unwrap(),
            queue: "q".into(),
            partition: 2,
            kind: "fs.summarize".into(),
            params: params.into(),
            priority: -3,
            state: orrery_queue::JobState::Running,
            run_at_ms: 5,
            attempts: 2,
            max_attempts: 3,
            lease_s: 30,
            backoff: Default::default(),
            resources: orrery_queue::Resources {
                gpus: 1,
                gpu_memory_mb: 512,
                cpus: 4,
                shared_gpu: true,
            },
            dedupe_key: Some("d\"k".into()),
            submitted_by: None,
            result: result.map(Into::into),
            last_error: Some("boom".into()),
            created_ms: 1,
            updated_ms: 2,
            finished_ms: None,
            lease: Some(orrery_queue::Lease {
                worker_id: "w1".into(),
                node: 3,
                expires_ms: 9,
            }),
            cancel_requested: false,
            runs: Vec::new(),
        }
    }

    #[test]
    fn job_view_writes_every_field_and_embeds_stored_json() {
        let j = job(r#"{"path":"a/b","n":[1,2.5]}"#, Some(r#"{"files":3}"#));
        let v: Value =
            serde_json::from_slice(&serde_json::to_vec(&JobView::new(&j)).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "0000000000010000000000002a", "queue": "q", "partition": 2,
                "kind": "fs.summarize", "params": {"path": "a/b", "n": [1, 2.5]},
                "priority": -3, "state": "running", "run_at_ms": 5, "attempts": 2,
                "max_attempts": 3, "lease_s": 30,
                "resources": {"gpus": 1, "gpu_memory_mb": 512, "cpus": 4, "shared_gpu": true},
                "dedupe_key": "d\"k", "submitted_by": null, "result": {"files": 3},
                "last_error": "boom", "created_ms": 1, "updated_ms": 2, "finished_ms": null,
                "cancel_requested": false,
                "lease": {"worker_id": "w1", "node": 3, "expires_ms": 9},
            })
        );
        let claimed = serde_json::to_value(JobView::claimed(&j)).unwrap();
        assert_eq!(claimed["token"], json!(2));
        assert!(claimed.get("created").is_none());
        let submitted = serde_json::to_value(JobView::submitted(&j, false)).unwrap();
        assert_eq!(submitted["created"], json!(false));
        assert!(submitted.get("token").is_none());
        let waiting = serde_json::to_value(WaitingJobView {
            job: JobView::new(&j),
            waiting: None,
        })
        .unwrap();
        let mut want = v.clone();
        want["waiting"] = Value::Null;
        assert_eq!(waiting, want);
    }

    #[test]
    fn stored_text_that_is_not_json_is_shown_as_a_string() {
        let j = job("not {json", None);
        let v = serde_json::to_value(JobView::new(&j)).unwrap();
        assert_eq!(v["params"], json!("not {json"));
        assert_eq!(v["result"], Value::Null);
        let text = serde_json::to_string(&JobView::new(&j)).unwrap();
        assert!(text.contains(r#""params":"not {json""#), "{text}");
    }

    #[test]
    fn queues_runs_and_events_keep_their_documents() {
        let q = QueueSpec {
            name: "q".into(),
            partitions: 2,
            lease_s: 30,
            max_attempts: 3,
            backoff: orrery_queue::Backoff {
                initial_ms: 1000,
                multiplier_milli: 2500,
                max_ms: 60_000,
            },
            concurrency_limit: None,
            created_ms: 7,
        };
        let counts = JobState::ALL.iter().map(|s| (*s, 1)).collect();
        let v = serde_json::to_value(QueueInfoView::new(&q, &counts, Some(5))).unwrap();
        assert_eq!(
            v,
            json!({"name": "q", "partitions": 2, "lease_s": 30, "max_attempts": 3,
                   "backoff": {"initial_ms": 1000, "multiplier": 2.5, "max_ms": 60000},
                   "concurrency_limit": null, "created_ms": 7,
                   "counts": {"queued": 1, "running": 1, "succeeded": 1, "failed": 1,
                              "cancelled": 1, "dead": 1},
                   "oldest_queued_age_ms": 5})
        );
        let e = Event {
            seq: 4,
            kind: "claimed".into(),
            job_id: orrery_queue::JobId::new(1, 0, 2),
            queue: "q".into(),
            attempt: 1,
            payload: "{\"worker\":\"w\"}".into(),
            ts_ms: 9,
        };
        let v = serde_json::to_value(EventView::new(3, &e)).unwrap();
        assert_eq!(v["id"], "3:4");
        assert_eq!(v["type"], "claimed");
        assert_eq!(v["payload"], json!({"worker": "w"}));
        let bad = Event {
            payload: "nope".into(),
            ..e
        };
        assert_eq!(
            serde_json::to_value(EventView::new(3, &bad)).unwrap()["payload"],
            Value::Null
        );
    }
}
