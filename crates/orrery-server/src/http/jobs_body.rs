//! Request bodies of the job queue endpoints, as typed serde structs (a
//! mistake is a 400 naming the field), and their service arguments.
//! `null` is the same as leaving a field out.

use crate::service::jobs::{CompleteArgs, QueueArgs, SubmitArgs};
use orrery_queue::{Resources, RunFacts};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A field where `null` means its default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A field whose presence counts, even as `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// POST /v1/queues.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    name: String,
    partitions: Option<u32>,
    lease_s: Option<u32>,
    max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    backoff: BackoffBody,
    concurrency_limit: Option<u32>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BackoffBody {
    initial_ms: Option<u64>,
    multiplier: Option<f64>,
    max_ms: Option<u64>,
}

impl From<QueueBody> for QueueArgs {
    fn from(b: QueueBody) -> Self {
        QueueArgs {
            name: b.name,
            partitions: b.partitions,
            lease_s: b.lease_s,
            max_attempts: b.max_attempts,
            backoff_initial_ms: b.backoff.initial_ms,
            backoff_multiplier: b.backoff.multiplier,
            backoff_max_ms: b.backoff.max_ms,
            concurrency_limit: b.concurrency_limit,
        }
    }
}

/// A job submission (POST /v1/jobs, or one item of POST /v1/jobs/batch).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    queue: String,
    #[schema(min_length = 1, max_length = 128)]
    kind: String,
    #[serde(default = "empty_object")]
    params: Value,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    priority: i32,
    run_at: Option<u64>,
    run_at_ms: Option<u64>,
    delay_ms: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    resources: ResourcesBody,
    dedupe_key: Option<String>,
    submitted_by: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResourcesBody {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    gpus: u32,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    gpu_memory_mb: u64,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    cpus: u32,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    shared_gpu: bool,
}

impl From<JobBody> for SubmitArgs {
    fn from(b: JobBody) -> Self {
        let r = b.resources;
        SubmitArgs {
            queue: b.queue,
            kind: b.kind,
            params: b.params,
            priority: b.priority,
            run_at_ms: b.run_at_ms.or(b.run_at),
            delay_ms: b.delay_ms,
            resources: Resources {
                gpus: r.gpus,
                gpu_memory_mb: r.gpu_memory_mb,
                cpus: r.cpus,
                shared_gpu: r.shared_gpu,
            },
            dedupe_key: b.dedupe_key,
            submitted_by: b.submitted_by,
            caller: None,
        }
    }
}

/// POST /v1/jobs/batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobBatchBody)]
pub struct BatchBody {
    pub jobs: Vec<JobBody>,
}

/// What a worker reports about a finished attempt.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RunFactsBody)]
pub struct RunBody {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    gpu_uuids: Vec<String>,
    exit_code: Option<i32>,
    duration_ms: Option<u64>,
    gpu_peak_memory_mb: Option<u64>,
    gpu_mean_utilization_pct: Option<f64>,
}

impl From<RunBody> for RunFacts {
    fn from(r: RunBody) -> Self {
        RunFacts {
            gpu_uuids: r.gpu_uuids,
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            gpu_peak_memory_mb: r.gpu_peak_memory_mb,
            gpu_mean_utilization_centi: r
                .gpu_mean_utilization_pct
                .filter(|u| u.is_finite() && *u >= 0.0)
                .map(|u| (u * 100.0).round() as u32),
        }
    }
}

/// One completion: `{id, token, result?, run?}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionBody {
    id: String,
    token: u32,
    #[serde(default)]
    result: Value,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    run: RunBody,
}

impl From<CompletionBody> for CompleteArgs {
    fn from(c: CompletionBody) -> Self {
        CompleteArgs {
            id: c.id,
            token: c.token,
            result: c.result,
            facts: c.run.into(),
        }
    }
}

/// POST /v1/jobs/complete.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBatchBody {
    pub completions: Vec<CompletionBody>,
}

/// A GPU a claim offers; no `free_memory_mb`: any amount.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct GpuOfferBody {
    uuid: String,
    free_memory_mb: Option<u64>,
}

/// GPU offers as `(uuid, free MiB)`.
pub fn offer(gpus: Vec<GpuOfferBody>) -> Vec<(String, u64)> {
    gpus.into_iter()
        .map(|g| (g.uuid, g.free_memory_mb.unwrap_or(u64::MAX)))
        .collect()
}

/// POST /v1/queues/{q}/claim.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    #[schema(min_length = 1, max_length = 256)]
    pub worker_id: String,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    pub kinds: Vec<String>,
    pub lease_s: Option<u32>,
    /// Long-poll up to this many seconds for a job.
    #[schema(minimum = 0, maximum = 60)]
    pub wait_s: Option<f64>,
    /// Present (even `null`): the answer is `{"jobs": [...]}`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 256)]
    pub max: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    pub free_gpus: Vec<GpuOfferBody>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    pub shared_gpus: Vec<GpuOfferBody>,
    pub free_cpus: Option<u32>,
    pub complete: Option<Vec<CompletionBody>>,
}

/// POST /v1/jobs/{id}/heartbeat.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    pub token: u32,
}

/// POST /v1/jobs/{id}/complete.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    pub token: u32,
    #[serde(default)]
    pub result: Value,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    pub run: RunBody,
}

/// POST /v1/jobs/{id}/fail.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    pub token: u32,
    pub error: Option<String>,
    pub retry: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(nullable)]
    pub run: RunBody,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::parse_json;

    fn err<T: serde::de::DeserializeOwned>(body: &str) -> (String, String) {
        let e = parse_json::<T>(body.as_bytes())
            .err()
            .expect("must be refused");
        (e.code().to_string(), e.to_string())
    }

    #[test]
    fn bodies_name_the_field_at_fault() {
        let (c, m) = err::<BatchBody>(
            r#"{"jobs": [{"queue": "q", "kind": "k"}, {"queue": "q", "kind": "k", "priority": "high"}]}"#,
        );
        assert_eq!(c, "invalid_field");
        assert!(m.contains("jobs[1].priority"), "{m}");
        let (c, m) = err::<QueueBody>(r#"{"name": "q", "bogus": 1}"#);
        assert_eq!(c, "unknown_field");
        assert!(m.contains("bogus"), "{m}");
        let (c, m) = err::<QueueBody>(r#"{"name": "q", "backoff": {"max": 1}}"#);
        assert_eq!(c, "unknown_field");
        assert!(m.contains("backoff"), "{m}");
        let (c, m) = err::<CompleteBatchBody>(r#"{"completions": [{"id": "x"}]}"#);
        assert_eq!(c, "missing_field");
        assert!(m.contains("completions[0].token"), "{m}");
        let (_, m) = err::<ClaimBody>(r#"{"worker_id": "w", "complete": "all"}"#);
        assert!(m.contains("complete"), "{m}");
        let (_, m) = err::<ClaimBody>(r#"{"worker_id": "w", "shared_gpus": "GPU-x"}"#);
        assert!(m.contains("shared_gpus"), "{m}");
        let (c, m) = err::<ClaimBody>("{}");
        assert_eq!(c, "missing_field");
        assert!(m.contains("worker_id"), "{m}");
    }

    #[test]
    fn nulls_and_absent_fields_take_their_defaults() {
        let j: JobBody = parse_json(
            br#"{"queue": "q", "kind": "k", "priority": null, "resources": null, "run_at": 5}"#,
        )
        .unwrap();
        let a = SubmitArgs::from(j);
        assert_eq!(
            (a.priority, a.run_at_ms, a.params.clone()),
            (0, Some(5), empty_object())
        );
        let j: JobBody = parse_json(br#"{"queue": "q", "kind": "k", "params": null}"#).unwrap();
        assert_eq!(SubmitArgs::from(j).params, Value::Null);
        let c: ClaimBody = parse_json(
            br#"{"worker_id": "w", "max": null, "free_gpus": [{"uuid": "g", "extra": 1}]}"#,
        )
        .unwrap();
        assert_eq!(c.max, Some(None));
        assert_eq!(offer(c.free_gpus), vec![("g".to_string(), u64::MAX)]);
        let c: ClaimBody = parse_json(br#"{"worker_id": "w"}"#).unwrap();
        assert_eq!(c.max, None);
        let f: CompleteBody =
            parse_json(br#"{"token": 1, "run": {"gpu_mean_utilization_pct": 12.5}}"#).unwrap();
        assert_eq!(RunFacts::from(f.run).gpu_mean_utilization_centi, Some(1250));
    }
}
