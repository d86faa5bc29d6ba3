//! The queue module's data: queue definitions, GPU inventory, jobs and
//! their runs, events, and the inputs of commands. Every type here is part
//! of the log and snapshot encoding: fields and variants keep their order.

use crate::JobId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::sync::Arc;

/// A queue, kind or worker name, shared by the jobs that carry it.
pub type Name = Arc<str>;

/// Largest stored result (JSON text); the server refuses larger ones with 413.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// Largest job params (JSON text): the server refuses larger submits with
/// 413, and a workflow step whose assembled params (its dependencies'
/// results) would be larger fails instead of being enqueued.
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;
/// Largest stored error message; longer ones are truncated.
pub const MAX_ERROR_BYTES: usize = 4096;
/// Events kept per shard; older ones are dropped (a reader that falls
/// further behind sees a gap in `seq`).
pub const EVENTS_KEPT: usize = 10_000;
/// The error a worker reports for a job it stopped because it was cancelled.
pub const CANCELLED: &str = "cancelled";
/// Jobs (or completions) in one bulk command: job ids give each entry room
/// for 1024 of them (see [`job_seq`](crate::job_seq)).
pub const MAX_BATCH: usize = 1000;

/// A queue's definition, in the placement group's catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub name: String,
    pub partitions: u32,
    pub lease_s: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// At most this many running jobs over all partitions (split evenly
    /// over the partitions, see [`QueueSpec::partition_limit`]).
    pub concurrency_limit: Option<u32>,
    pub created_ms: u64,
}

impl QueueSpec {
    /// The share of the concurrency limit that partition `p` enforces: the
    /// limit is split over partitions so that no cross-shard coordination is
    /// needed and the sum is exactly the limit (the server requires
    /// `limit >= partitions`).
    pub fn partition_limit(&self, p: u32) -> Option<u32> {
        self.concurrency_limit.map(|l| {
            let n = self.partitions.max(1);
            l / n + u32::from(p < l % n)
        })
    }
}

/// Retry delay after failed attempt `n` (1-based): `initial * multiplier^(n-1)`, capped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    /// The multiplier in thousandths (2.0 = 2000), so the state stays `Eq`.
    pub multiplier_milli: u32,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 1000,
            multiplier_milli: 2000,
            max_ms: 60_000,
        }
    }
}

impl Backoff {
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let mut d = self.initial_ms as u128;
        for _ in 1..attempt.max(1) {
            d = d * self.multiplier_milli as u128 / 1000;
            if d >= self.max_ms as u128 {
                break;
            }
        }
        (d.min(self.max_ms as u128)) as u64
    }
}

/// Resources a job asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub gpus: u32,
    pub gpu_memory_mb: u64,
    pub cpus: u32,
    pub shared_gpu: bool,
}

/// One GPU as a node reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRecord {
    pub uuid: String,
    pub index: u32,
    pub name: String,
    pub memory_total_mb: u64,
    pub memory_used_mb: u64,
    pub utilization_pct: u32,
    pub temperature_c: u32,
    pub compute_capability: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuReport {
    pub reported_ms: u64,
    pub gpus: Vec<GpuRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            "dead" => JobState::Dead,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Dead,
    ];
}

/// The live lease of a running job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub worker_id: Name,
    pub node: u64,
    pub expires_ms: u64,
}

/// What a worker reports about a finished attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFacts {
    pub gpu_uuids: Vec<String>,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub gpu_peak_memory_mb: Option<u64>,
    /// Mean GPU utilisation in hundredths of a percent.
    pub gpu_mean_utilization_centi: Option<u32>,
}

/// One attempt of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub attempt: u32,
    pub node: u64,
    pub worker_id: Name,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// `None` while running.
    pub outcome: Option<Outcome>,
    pub error: Option<Box<str>>,
    pub facts: RunFacts,
}

/// How an attempt ended. Stored (and shown) as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "succeeded" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            "cancelled" => Outcome::Cancelled,
            "expired" => Outcome::Expired,
            _ => return None,
        })
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Cow<'de, str> = Deserialize::deserialize(d)?;
        Outcome::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown run outcome {s:?}")))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub queue: Name,
    pub partition: u32,
    pub kind: Name,
    pub params: Box<str>,
    pub priority: i32,
    pub state: JobState,
    pub run_at_ms: u64,
    /// Attempts started so far; the current lease token.
    pub attempts: u32,
    pub max_attempts: u32,
    pub lease_s: u32,
    pub backoff: Backoff,
    pub resources: Resources,
    pub dedupe_key: Option<Box<str>>,
    pub submitted_by: Option<Box<str>>,
    pub result: Option<Box<str>>,
    pub last_error: Option<Box<str>>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
    pub lease: Option<Lease>,
    pub cancel_requested: bool,
    pub runs: Vec<Run>,
}

/// One state change, in a shard's event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// enqueued, claimed, heartbeat-less changes: succeeded, failed,
    /// retrying, dead, cancel_requested, cancelled, expired.
    pub kind: Cow<'static, str>,
    pub job_id: JobId,
    pub queue: Name,
    pub attempt: u32,
    /// Small JSON text (e.g. the error, the worker).
    pub payload: Cow<'static, str>,
    pub ts_ms: u64,
}

/// One item of [`QueueCommand::CompleteMany`](crate::QueueCommand::CompleteMany).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub job_id: String,
    pub token: u32,
    pub result: String,
    pub facts: RunFacts,
}

/// What the shard needs of a queue's definition when a job is enqueued
/// (stamped by the server from the catalog, so shards never read group 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    pub queue: String,
    pub partition: u32,
    pub kind: String,
    pub params: String,
    pub priority: i32,
    pub run_at_ms: Option<u64>,
    pub resources: Resources,
    pub dedupe_key: Option<String>,
    pub submitted_by: Option<String>,
    pub max_attempts: u32,
    pub lease_s: u32,
    pub backoff: Backoff,
}

/// A worker's claim: what it can run, and which queue partitions (with their
/// share of the concurrency limit) the claim may take from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimSpec {
    pub worker_id: String,
    pub node: u64,
    /// Empty = any kind.
    pub kinds: Vec<String>,
    /// `(queue, partition, limit)`: the partitions of this shard the claim
    /// may take from. Empty = every queue in the shard, unlimited.
    pub partitions: Vec<(String, u32, Option<u32>)>,
    /// Free GPUs offered: `(uuid, free memory MiB)`.
    pub free_gpus: Vec<(String, u64)>,
    /// Free CPUs offered; `None` = do not check CPUs.
    pub free_cpus: Option<u32>,
    /// Jobs to take at most (batch claim).
    pub max: u32,
    /// Lease override; `None` = the job's queue default.
    pub lease_s: Option<u32>,
}

/// One item of [`QueueCommand::Settle`](crate::QueueCommand::Settle): the jobs a worker finished, then
/// its next claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub completions: Vec<Completion>,
    pub claim: ClaimSpec,
}
