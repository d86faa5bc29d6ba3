//! The job-queue domain module.
//!
//! Two halves share one state type, [`QueueState`]:
//! * the **catalog** (queues, per-node GPU inventory), applied in the
//!   placement group (group 0);
//! * the **jobs** of a shard (jobs, their runs, the dedupe index, events),
//!   applied in shard groups.
//!
//! Everything is a pure function of the command, the log index and the
//! prior state: the proposing node stamps `now_ms` into every command that
//! needs time, so lease expiry, backoff and timestamps are identical on
//! every replica. Lease tokens are attempt numbers: a claim increments
//! `attempts` and hands it out as the token; `heartbeat`/`complete`/`fail`
//! with any other token (or on a job that is no longer running) are
//! rejected as [`QueueError::StaleToken`], which is how a job completes at
//! most once even when its lease expired and another worker took it.
//!
//! Params and results are JSON *text*: the snapshot codec (bincode) cannot
//! carry `serde_json::Value`, and keeping the exact text avoids a parse in
//! the apply path.
//!
//! ## Memory per job
//! A shard keeps every job until the retention period prunes it, on every
//! replica, so the in-memory form is compact: ids are [`JobId`] (a `u128`,
//! no heap), queue and kind names are shared [`Name`]s interned per state,
//! a run's outcome is an [`Outcome`], text fields are `Box<str>`, and the
//! job map holds boxed jobs (a B-tree filled in id order leaves its nodes
//! about half full, so large inline values would waste half their bytes).
//! Every one of these types serialises exactly as the `String` it replaced:
//! the snapshot format is unchanged (pinned by `snapshot_format_is_stable`).

pub mod coalesce;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// A queue, kind or worker name, shared by the jobs that carry it.
pub type Name = Arc<str>;

/// Largest stored result (JSON text); the server refuses larger ones with 413.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// Largest stored error message; longer ones are truncated.
pub const MAX_ERROR_BYTES: usize = 4096;
/// Events kept per shard; older ones are dropped (a reader that falls
/// further behind sees a gap in `seq`).
pub const EVENTS_KEPT: usize = 10_000;
/// The error a worker reports for a job it stopped because it was cancelled.
pub const CANCELLED: &str = "cancelled";
/// Jobs (or completions) in one bulk command: job ids give each entry room
/// for 1024 of them (see [`job_seq`]).
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

/// A job's id: the stamped millisecond (48 bits), the shard (16 bits) and a
/// sequence number (40 bits, see [`job_seq`]). Shown as 26 lowercase hex
/// digits, which sort as the number does: ids sort by submission time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(u128);

impl JobId {
    pub const LEN: usize = 26;
    /// Larger than every id (a bound for range scans).
    pub const MAX: JobId = JobId(u128::MAX);

    pub fn new(now_ms: u64, shard: u32, seq: u64) -> JobId {
        JobId(
            (u128::from(now_ms & 0xffff_ffff_ffff) << 56)
                | (u128::from(shard & 0xffff) << 40)
                | u128::from(seq & 0xff_ffff_ffff),
        )
    }

    /// `None` unless `s` is exactly 26 lowercase hex digits.
    pub fn parse(s: &str) -> Option<JobId> {
        if s.len() != Self::LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(JobId)
    }

    pub fn shard(self) -> u32 {
        ((self.0 >> 40) & 0xffff) as u32
    }

    fn hex(self) -> [u8; Self::LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'0'; Self::LEN];
        for (i, b) in out.iter_mut().enumerate() {
            let shift = 4 * (Self::LEN - 1 - i);
            *b = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        out
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hex digits are ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&self.hex()).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl PartialEq<str> for JobId {
    fn eq(&self, other: &str) -> bool {
        self.hex() == other.as_bytes()
    }
}

impl PartialEq<String> for JobId {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        s.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Cow<'de, str> = Deserialize::deserialize(d)?;
        JobId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad job id {s:?}")))
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

/// One item of [`QueueCommand::CompleteMany`].
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

/// One item of [`QueueCommand::Settle`]: the jobs a worker finished, then
/// its next claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub completions: Vec<Completion>,
    pub claim: ClaimSpec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    // ---- catalog (placement group) ----
    CreateQueue(QueueSpec),
    DeleteQueue {
        name: String,
    },
    ReportGpus {
        node: u64,
        gpus: Vec<GpuRecord>,
        now_ms: u64,
    },
    // ---- jobs (shard groups) ----
    Enqueue {
        shard: u32,
        job: NewJob,
        now_ms: u64,
    },
    /// Bulk submit: every job is enqueued as by `Enqueue`, in order, each
    /// with its own id; one log entry (and one fsync) for all of them.
    EnqueueMany {
        shard: u32,
        jobs: Vec<NewJob>,
        now_ms: u64,
    },
    Claim {
        spec: ClaimSpec,
        now_ms: u64,
    },
    /// Claims of several workers in one entry (group commit, see
    /// [`coalesce`]): each applied as by `Claim`, in order.
    ClaimMany {
        claims: Vec<ClaimSpec>,
        now_ms: u64,
    },
    /// Bulk complete: each item is checked and applied as by `Complete`,
    /// independently (a stale token rejects that item only).
    CompleteMany {
        items: Vec<Completion>,
        now_ms: u64,
    },
    Heartbeat {
        job_id: String,
        token: u32,
        now_ms: u64,
    },
    Complete {
        job_id: String,
        token: u32,
        result: String,
        facts: RunFacts,
        now_ms: u64,
    },
    Fail {
        job_id: String,
        token: u32,
        error: String,
        /// `false`: the failure is permanent, the job ends `failed` at once.
        retry: bool,
        facts: RunFacts,
        now_ms: u64,
    },
    Cancel {
        job_id: String,
        now_ms: u64,
    },
    /// Sent by a shard leader: leases that ended before `now_ms` expire.
    ExpireLeases {
        now_ms: u64,
    },
    // New variants go last: the log and snapshots store the variant index.
    /// For each settlement in turn, its completions (each as by
    /// `CompleteMany`), then its claim (as by `Claim`): a worker reports
    /// the jobs it finished and takes its next ones in one request and one
    /// entry. The response is `Many`, one item per settlement, each `Many`
    /// of its completions' responses followed by its claim's `Claimed`.
    Settle {
        work: Vec<Settlement>,
        now_ms: u64,
    },
    /// Sent by a shard leader: forgets at most `max` finished jobs that
    /// finished before `before_ms` (the retention period), oldest first,
    /// with their dedupe keys.
    Prune {
        before_ms: u64,
        max: u32,
    },
    /// A `Claim` that also offers `shared_gpus`, `(uuid, free MiB)`: GPUs
    /// the worker's running `shared_gpu` jobs hold. Only `shared_gpu` jobs
    /// may take those; other jobs fit only `spec.free_gpus`. (A variant of
    /// its own because `ClaimSpec` is stored in the log as it is.)
    ClaimSharing {
        spec: ClaimSpec,
        shared_gpus: Vec<(String, u64)>,
        now_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueError {
    QueueExists(String),
    UnknownQueue(String),
    UnknownJob(String),
    /// The token is not the job's live lease (expired and re-claimed, or finished).
    StaleToken {
        job_id: String,
        token: u32,
        state: JobState,
        attempts: u32,
    },
    /// Cancel of a job that already ended.
    AlreadyFinished {
        job_id: String,
        state: JobState,
    },
    ResultTooLarge(usize),
    /// A bulk command with more than [`MAX_BATCH`] items.
    BatchTooLarge(usize),
}

impl std::error::Error for QueueError {}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::QueueExists(q) => write!(f, "queue {q:?} already exists"),
            QueueError::UnknownQueue(q) => write!(f, "queue {q:?} does not exist"),
            QueueError::UnknownJob(j) => write!(
                f,
                "job {j:?} does not exist (or finished longer ago than the job retention period)"
            ),
            QueueError::StaleToken {
                job_id,
                token,
                state,
                attempts,
            } => write!(
                f,
                "token {token} is not the live lease of job {job_id} (state {}, attempt {attempts})",
                state.as_str()
            ),
            QueueError::AlreadyFinished { job_id, state } => {
                write!(f, "job {job_id} already ended {}", state.as_str())
            }
            QueueError::ResultTooLarge(n) => write!(
                f,
                "result is {n} bytes; the limit is {MAX_RESULT_BYTES} bytes"
            ),
            QueueError::BatchTooLarge(n) => {
                write!(f, "{n} items in one request; the limit is {MAX_BATCH}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueResponse {
    QueueCreated(QueueSpec),
    QueueDeleted,
    GpusReported,
    /// `created == false`: the dedupe key matched this existing job.
    Enqueued {
        job: Box<Job>,
        created: bool,
    },
    Claimed(Vec<Job>),
    Heartbeat {
        cancelled: bool,
        expires_ms: u64,
    },
    /// Complete, fail and cancel return the job as it is now.
    Job(Box<Job>),
    Expired(u32),
    Rejected(QueueError),
    /// One response per item of a bulk command, in order.
    Many(Vec<QueueResponse>),
    /// Finished jobs forgotten by `Prune`.
    Pruned(u32),
    /// In place of a job (or, in `Claimed`, of the jobs) when the command
    /// was applied by [`QueueState::apply_unobserved`]: no client reads
    /// that replica's response, so copies of jobs are not made for it.
    Unobserved,
}

/// The queue module's state of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    // catalog
    queues: BTreeMap<String, QueueSpec>,
    gpus: BTreeMap<u64, GpuReport>,
    // jobs
    jobs: BTreeMap<JobId, Box<Job>>,
    /// Queued jobs by (queue, kind), each bucket in claim order
    /// (-priority, id); ids sort by time, so that is priority desc then FIFO.
    /// Bucketed so that a claim only walks jobs of queues and kinds it can
    /// take: a worker for other kinds must not scan a backlog it cannot run.
    ready: ReadyIndex,
    /// Running jobs by lease expiry, for the expiry sweep.
    leases: BTreeSet<(u64, JobId)>,
    /// Running jobs per (queue, partition), for the concurrency limit.
    running: BTreeMap<(Name, u32), u32>,
    dedupe: BTreeMap<(Name, Box<str>), JobId>,
    events: VecDeque<Event>,
    next_seq: u64,
    /// Finished jobs by finish time, for pruning. Derived from `jobs`: not
    /// in snapshots (whose format it would change), rebuilt on restore.
    #[serde(skip)]
    finished: BTreeSet<(u64, JobId)>,
    /// Queue and kind names, shared by the jobs that carry them.
    #[serde(skip)]
    names: Interner,
    /// Jobs per queue and state, and the queued and running jobs in age
    /// order. Derived from `jobs` (not in snapshots, rebuilt on restore), so
    /// that a queue's counts, and listings of its live jobs, are not a scan
    /// of every retained job under the lock that apply waits for.
    #[serde(skip)]
    tally: Tally,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    counts: BTreeMap<(Name, JobState), u64>,
    /// Queued and running jobs by (queue, state, id). Ids sort by
    /// submission time: a queue's first queued job is its oldest.
    live: BTreeSet<(Name, JobState, JobId)>,
}

fn is_live(s: JobState) -> bool {
    !s.is_terminal()
}

impl Tally {
    /// A job of `queue` went from state `from` to `to` (`None`: it did
    /// not exist, or no longer does).
    fn moved(&mut self, queue: &Name, id: JobId, from: Option<JobState>, to: Option<JobState>) {
        if from == to {
            return;
        }
        if let Some(f) = from {
            let key = (queue.clone(), f);
            if let Some(n) = self.counts.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(&key);
                }
            }
            if is_live(f) {
                self.live.remove(&(queue.clone(), f, id));
            }
        }
        if let Some(t) = to {
            *self.counts.entry((queue.clone(), t)).or_default() += 1;
            if is_live(t) {
                self.live.insert((queue.clone(), t, id));
            }
        }
    }

    fn of<'a>(jobs: impl Iterator<Item = &'a Job>) -> Tally {
        let mut t = Tally::default();
        for j in jobs {
            t.moved(&j.queue, j.id, None, Some(j.state));
        }
        t
    }
}

/// A set of shared names. Only a memory saving: which `Arc` a job holds is
/// not part of the state's value, so two interners always compare equal.
#[derive(Clone, Default)]
struct Interner(BTreeSet<Name>);

impl Interner {
    fn get(&mut self, s: &str) -> Name {
        if let Some(n) = self.0.get(s) {
            return n.clone();
        }
        let n: Name = Arc::from(s);
        self.0.insert(n.clone());
        n
    }

    /// Forgets `name` once nothing else holds it (`name` itself and the
    /// set's copy are the two references left).
    fn release(&mut self, name: Name) {
        if Arc::strong_count(&name) <= 2 {
            self.0.remove(&*name);
        }
    }
}

impl PartialEq for Interner {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Interner {}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interner({} names)", self.0.len())
    }
}

/// The sequence part of the id of the `nth` job of the entry at `index`.
/// It wraps after 2^30 log entries; ids stay unique because they also hold
/// the stamped millisecond, and 2^30 entries never share one.
pub fn job_seq(index: u64, nth: usize) -> u64 {
    (index << 10) | (nth as u64 & 0x3ff)
}

/// The shard a job id names, or `None` when it is not a job id.
pub fn job_shard(id: &str) -> Option<u32> {
    JobId::parse(id).map(JobId::shard)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn json_str(s: &str) -> String {
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

type ReadyIndex = BTreeMap<(Name, Name), BTreeSet<(i64, JobId)>>;

fn ready_add(ready: &mut ReadyIndex, job: &Job) {
    ready
        .entry((job.queue.clone(), job.kind.clone()))
        .or_default()
        .insert((-(job.priority as i64), job.id));
}

fn ready_remove(ready: &mut ReadyIndex, job: &Job) {
    let key = (job.queue.clone(), job.kind.clone());
    if let Some(set) = ready.get_mut(&key) {
        set.remove(&(-(job.priority as i64), job.id));
        if set.is_empty() {
            ready.remove(&key);
        }
    }
}

/// What an event records of its job.
struct Tag {
    id: JobId,
    queue: Name,
    attempt: u32,
}

impl Job {
    fn tag(&self) -> Tag {
        Tag {
            id: self.id,
            queue: self.queue.clone(),
            attempt: self.attempts,
        }
    }
}

impl QueueState {
    pub fn apply(&mut self, index: u64, cmd: QueueCommand) -> QueueResponse {
        self.apply_as(index, cmd, true)
    }

    /// [`QueueState::apply`] for a replica whose response no client reads
    /// (a follower, or a leader applying an entry of an earlier leader):
    /// the same change of state, but answers that would carry jobs carry
    /// [`QueueResponse::Unobserved`] (claims: no jobs). Followers apply
    /// every command too, and the copies of jobs for their answers were a
    /// measurable share of the bulk cells' CPU.
    pub fn apply_unobserved(&mut self, index: u64, cmd: QueueCommand) -> QueueResponse {
        self.apply_as(index, cmd, false)
    }

    fn apply_as(&mut self, index: u64, cmd: QueueCommand, respond: bool) -> QueueResponse {
        match cmd {
            QueueCommand::CreateQueue(spec) => {
                if self.queues.contains_key(&spec.name) {
                    return QueueResponse::Rejected(QueueError::QueueExists(spec.name));
                }
                self.queues.insert(spec.name.clone(), spec.clone());
                QueueResponse::QueueCreated(spec)
            }
            QueueCommand::DeleteQueue { name } => match self.queues.remove(&name) {
                Some(_) => QueueResponse::QueueDeleted,
                None => QueueResponse::Rejected(QueueError::UnknownQueue(name)),
            },
            QueueCommand::ReportGpus { node, gpus, now_ms } => {
                self.gpus.insert(
                    node,
                    GpuReport {
                        reported_ms: now_ms,
                        gpus,
                    },
                );
                QueueResponse::GpusReported
            }
            QueueCommand::Enqueue { shard, job, now_ms } => {
                self.enqueue(job_seq(index, 0), shard, job, now_ms, respond)
            }
            QueueCommand::EnqueueMany { jobs, .. } if jobs.len() > MAX_BATCH => {
                QueueResponse::Rejected(QueueError::BatchTooLarge(jobs.len()))
            }
            QueueCommand::CompleteMany { items, .. } if items.len() > MAX_BATCH => {
                QueueResponse::Rejected(QueueError::BatchTooLarge(items.len()))
            }
            QueueCommand::Settle { work, .. }
                if work.len() > MAX_BATCH
                    || work.iter().any(|w| w.completions.len() > MAX_BATCH) =>
            {
                let n = work.iter().map(|w| w.completions.len()).max().unwrap_or(0);
                QueueResponse::Rejected(QueueError::BatchTooLarge(work.len().max(n)))
            }
            QueueCommand::Settle { work, now_ms } => QueueResponse::Many(
                work.into_iter()
                    .map(|w| {
                        let mut out: Vec<QueueResponse> = w
                            .completions
                            .into_iter()
                            .map(|c| self.complete(c, now_ms, respond))
                            .collect();
                        self.expire(now_ms);
                        out.push(QueueResponse::Claimed(self.claim(
                            &w.claim,
                            &[],
                            now_ms,
                            respond,
                        )));
                        QueueResponse::Many(out)
                    })
                    .collect(),
            ),
            QueueCommand::ClaimMany { claims, .. } if claims.len() > MAX_BATCH => {
                QueueResponse::Rejected(QueueError::BatchTooLarge(claims.len()))
            }
            QueueCommand::EnqueueMany {
                shard,
                jobs,
                now_ms,
            } => QueueResponse::Many(
                jobs.into_iter()
                    .enumerate()
                    .map(|(i, job)| self.enqueue(job_seq(index, i), shard, job, now_ms, respond))
                    .collect(),
            ),
            QueueCommand::CompleteMany { items, now_ms } => QueueResponse::Many(
                items
                    .into_iter()
                    .map(|c| self.complete(c, now_ms, respond))
                    .collect(),
            ),
            QueueCommand::Claim { spec, now_ms } => {
                self.expire(now_ms);
                QueueResponse::Claimed(self.claim(&spec, &[], now_ms, respond))
            }
            QueueCommand::ClaimSharing {
                spec,
                shared_gpus,
                now_ms,
            } => {
                self.expire(now_ms);
                QueueResponse::Claimed(self.claim(&spec, &shared_gpus, now_ms, respond))
            }
            QueueCommand::ClaimMany { claims, now_ms } => {
                self.expire(now_ms);
                QueueResponse::Many(
                    claims
                        .iter()
                        .map(|spec| QueueResponse::Claimed(self.claim(spec, &[], now_ms, respond)))
                        .collect(),
                )
            }
            QueueCommand::Heartbeat {
                job_id,
                token,
                now_ms,
            } => {
                let id = match self.live(&job_id, token) {
                    Ok(id) => id,
                    Err(e) => return QueueResponse::Rejected(e),
                };
                let Some(job) = self.jobs.get_mut(&id) else {
                    return QueueResponse::Rejected(QueueError::UnknownJob(job_id));
                };
                let expires = now_ms.saturating_add(job.lease_s as u64 * 1000);
                if let Some(l) = job.lease.as_mut() {
                    self.leases.remove(&(l.expires_ms, id));
                    l.expires_ms = expires;
                    self.leases.insert((expires, id));
                }
                QueueResponse::Heartbeat {
                    cancelled: job.cancel_requested,
                    expires_ms: expires,
                }
            }
            QueueCommand::Complete {
                job_id,
                token,
                result,
                facts,
                now_ms,
            } => self.complete(
                Completion {
                    job_id,
                    token,
                    result,
                    facts,
                },
                now_ms,
                respond,
            ),
            QueueCommand::Fail {
                job_id,
                token,
                error,
                retry,
                facts,
                now_ms,
            } => {
                let id = match self.live(&job_id, token) {
                    Ok(id) => id,
                    Err(e) => return QueueResponse::Rejected(e),
                };
                let error = truncate(error, MAX_ERROR_BYTES);
                let cancelled = self.jobs.get(&id).is_some_and(|j| j.cancel_requested);
                let outcome = if cancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Failed
                };
                self.end_attempt(id, now_ms, outcome, Some(error.clone()), facts);
                self.after_failed_attempt(id, now_ms, error, retry, cancelled);
                self.job_response(id, respond)
            }
            QueueCommand::Cancel { job_id, now_ms } => match JobId::parse(&job_id) {
                Some(id) => self.cancel(id, now_ms, respond),
                None => QueueResponse::Rejected(QueueError::UnknownJob(job_id)),
            },
            QueueCommand::ExpireLeases { now_ms } => QueueResponse::Expired(self.expire(now_ms)),
            QueueCommand::Prune { before_ms, max } => {
                QueueResponse::Pruned(self.prune(before_ms, max))
            }
        }
    }

    fn complete(&mut self, c: Completion, now_ms: u64, respond: bool) -> QueueResponse {
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

    fn job_response(&self, id: JobId, respond: bool) -> QueueResponse {
        match self.jobs.get(&id) {
            Some(_) if !respond => QueueResponse::Unobserved,
            Some(j) => QueueResponse::Job(j.clone()),
            None => QueueResponse::Rejected(QueueError::UnknownJob(id.to_string())),
        }
    }

    fn event(&mut self, kind: &'static str, tag: Tag, payload: Cow<'static, str>, now_ms: u64) {
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

    fn enqueue(
        &mut self,
        seq: u64,
        shard: u32,
        new: NewJob,
        now_ms: u64,
        respond: bool,
    ) -> QueueResponse {
        let queue = self.names.get(&new.queue);
        let dedupe_key = new.dedupe_key.map(String::into_boxed_str);
        if let Some(key) = &dedupe_key {
            if let Some(existing) = self.dedupe.get(&(queue.clone(), key.clone())) {
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
        let id = JobId::new(now_ms, shard, seq);
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
    fn live(&self, id: &str, token: u32) -> Result<JobId, QueueError> {
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
    fn select(
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

    fn claim(
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

    /// Closes the current run and releases the lease (the job is running).
    fn end_attempt(
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
    }

    /// Forgets up to `max` jobs that finished before `before_ms`.
    fn prune(&mut self, before_ms: u64, max: u32) -> u32 {
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

    /// The finish time of the oldest finished job, if any: the leader
    /// proposes a prune once it falls out of the retention period.
    pub fn oldest_finished(&self) -> Option<u64> {
        self.finished.first().map(|(t, _)| *t)
    }

    /// After an attempt failed (error, or lease expiry): retry with backoff,
    /// or end the job.
    fn after_failed_attempt(
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

    fn cancel(&mut self, id: JobId, now_ms: u64, respond: bool) -> QueueResponse {
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
    fn expire(&mut self, now_ms: u64) -> u32 {
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

    // ---- reads ----

    pub fn queues(&self) -> &BTreeMap<String, QueueSpec> {
        &self.queues
    }

    pub fn queue(&self, name: &str) -> Option<&QueueSpec> {
        self.queues.get(name)
    }

    pub fn gpu_reports(&self) -> &BTreeMap<u64, GpuReport> {
        &self.gpus
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(&JobId::parse(id)?).map(|j| &**j)
    }

    /// Jobs with id > `after`, in id order, filtered, at most `limit`.
    pub fn list(
        &self,
        queue: Option<&str>,
        state: Option<JobState>,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Job> {
        use std::ops::Bound;
        // A cursor is normally an id; any other text still means "ids that
        // sort after it", found by comparing the ids' text.
        let (start, after_text) = match after {
            None => (Bound::Unbounded, None),
            Some(a) => match JobId::parse(a) {
                Some(id) => (Bound::Excluded(id), None),
                None => (Bound::Unbounded, Some(a.as_bytes())),
            },
        };
        // Queued and running jobs have an index of their own: a backlog,
        // or what is running, is listed without walking the finished jobs
        // retained around it.
        if let (Some(st), None) = (state.filter(|s| is_live(*s)), after_text) {
            let after = match start {
                Bound::Excluded(id) => Some(id),
                _ => None,
            };
            return self.list_live(queue, st, after, limit);
        }
        self.jobs
            .range((start, Bound::Unbounded))
            .map(|(_, j)| &**j)
            .filter(|j| after_text.is_none_or(|a| &j.id.hex()[..] > a))
            .filter(|j| queue.is_none_or(|q| &*j.queue == q))
            .filter(|j| state.is_none_or(|s| j.state == s))
            .take(limit)
            .cloned()
            .collect()
    }

    /// [`QueueState::list`] of the jobs in live state `st` (queued or
    /// running), from the `live` index.
    fn list_live(
        &self,
        queue: Option<&str>,
        st: JobState,
        after: Option<JobId>,
        limit: usize,
    ) -> Vec<Job> {
        use std::ops::Bound;
        let after_bound = |name: &Name| match after {
            Some(id) => Bound::Excluded((name.clone(), st, id)),
            None => Bound::Included((name.clone(), st, JobId(0))),
        };
        let mut ids: Vec<JobId> = match queue {
            Some(q) => {
                let name: Name = Arc::from(q);
                self.tally
                    .live
                    .range((after_bound(&name), Bound::Included((name, st, JobId::MAX))))
                    .map(|(_, _, id)| *id)
                    .take(limit)
                    .collect()
            }
            // Every queue's jobs in that state, merged back into id order.
            None => {
                let mut ids: Vec<JobId> = self
                    .tally
                    .counts
                    .keys()
                    .filter(|(_, s)| *s == st)
                    .map(|(name, _)| name)
                    .flat_map(|name| {
                        self.tally
                            .live
                            .range((
                                after_bound(name),
                                Bound::Included((name.clone(), st, JobId::MAX)),
                            ))
                            .map(|(_, _, id)| *id)
                            .take(limit)
                    })
                    .collect();
                ids.sort_unstable();
                ids
            }
        };
        ids.truncate(limit);
        ids.iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| (**j).clone())
            .collect()
    }

    /// Per-state counts of a queue's jobs in this shard, and the creation
    /// time of its oldest queued job.
    pub fn counts(&self, queue: &str) -> (BTreeMap<JobState, u64>, Option<u64>) {
        let name: Name = Arc::from(queue);
        let counts = self
            .tally
            .counts
            .range((name.clone(), JobState::Queued)..=(name.clone(), JobState::Dead))
            .map(|((_, s), n)| (*s, *n))
            .collect();
        let oldest = self
            .tally
            .live
            .range(
                (name.clone(), JobState::Queued, JobId(0))..=(name, JobState::Queued, JobId::MAX),
            )
            .next()
            .and_then(|(_, _, id)| self.jobs.get(id))
            .map(|j| j.created_ms);
        (counts, oldest)
    }

    /// Events with seq > `since`, at most `limit`.
    pub fn events_since(&self, since: u64, limit: usize) -> Vec<Event> {
        let first = self.events.front().map(|e| e.seq).unwrap_or(0);
        let skip = since.saturating_sub(first.saturating_sub(1)) as usize;
        self.events.iter().skip(skip).take(limit).cloned().collect()
    }

    /// Is there a job a claim with `spec` (and `shared` GPUs, as in
    /// [`QueueCommand::ClaimSharing`]) could take now? (A cheap read before
    /// proposing a claim.)
    pub fn claimable(&self, spec: &ClaimSpec, shared: &[(String, u64)], now_ms: u64) -> bool {
        if self.leases.first().is_some_and(|(e, _)| *e <= now_ms) {
            return true;
        }
        !self.select(spec, shared, now_ms, 1).is_empty()
    }

    /// Earliest lease expiry among running jobs.
    pub fn next_expiry(&self) -> Option<u64> {
        self.leases.first().map(|(e, _)| *e)
    }

    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        let mut s: Self = bincode::serde::decode_from_slice(data, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| format!("queue snapshot: {e}"))?;
        s.finished = s
            .jobs
            .values()
            .filter(|j| j.state.is_terminal())
            .filter_map(|j| j.finished_ms.map(|t| (t, j.id)))
            .collect();
        // Each job was decoded with names of its own: share them again.
        let mut names = Interner::default();
        for j in s.jobs.values_mut() {
            j.queue = names.get(&j.queue);
            j.kind = names.get(&j.kind);
        }
        s.names = names;
        s.tally = Tally::of(s.jobs.values().map(|j| &**j));
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
