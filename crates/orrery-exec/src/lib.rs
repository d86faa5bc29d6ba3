//! The per-node execution engine.
//!
//! Each node runs an [`Engine`]: `slots` worker tasks that long-poll a
//! [`JobSource`] for work, run it (built-in kinds on the rayon pool, `command`
//! jobs as child processes in their own process group), heartbeat the lease,
//! and report the outcome with a [`RunReport`]. The engine knows nothing of
//! Raft or the server: the node implements [`JobSource`] over its queue
//! module.
//!
//! Built-in kinds (see [`BUILTIN_KINDS`] and docs/api.md):
//! `fs.summarize`, `fs.csv_transform`, `image.thumbnail`, `dataset.scan` (confined to the
//! node's `fs_root`), `image.caption` (with a [`Captioner`] too, see [`Hooks`])
//! and `command` (only with `allow_command_jobs`). More kinds plug in through
//! [`KindHandler`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod confine;
mod confine_glob;
mod engine;
mod gpu;
mod hooks;
mod kinds;
mod logs;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_command;
#[cfg(test)]
mod tests_confine;
#[cfg(test)]
mod tests_dataset;
#[cfg(test)]
mod tests_pipeline;

pub use confine::{confine_existing, FsRoot};
pub use engine::{Engine, CANCELLED, GPU_REFRESH};
pub use gpu::{GpuId, GpuInventory, GpuSelection};
pub use hooks::{
    Caption, CaptionError, CaptionRequest, Captioner, DatasetOutputs, Hooks, ItemOutputs,
};
pub use kinds::caption::{CaptionParams, DEFAULT_PROMPT};
pub use kinds::step::STEP_KINDS;
pub use logs::{LogBook, LogChunk, FINISHED_RUNS_KEPT};

/// The engine's error type (path confinement and internal failures).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// A user-supplied path was rejected (escape attempt, missing, ...).
    #[error("{0}")]
    Path(String),
    /// The kind is not runnable on this node (no fs_root, commands disabled).
    #[error("{0}")]
    Refused(String),
}

/// Engine configuration (one per node).
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// This node's id, stamped into every [`RunReport`].
    pub node_id: u64,
    /// Worker slots; default = available cores.
    pub slots: usize,
    /// Root directory the fs/image kinds are confined to; `None` => those kinds are refused.
    pub fs_root: Option<PathBuf>,
    /// `false` => the `command` kind is refused.
    pub allow_command_jobs: bool,
    /// Where each `command` run gets its scratch directory
    /// (`<scratch_root>/<job id>-<attempt>`, removed when the run ends).
    /// The server sets `<data_dir>/scratch`; `None` (the default): a
    /// directory of the engine's own under the system temp dir, removed
    /// when the engine is dropped.
    pub scratch_root: Option<PathBuf>,
    /// The user `command` jobs run as when the node runs as root (they are
    /// refused as root without one). Ignored, with a warning, when the node
    /// is not root: then they run as the node's own user.
    pub command_user: Option<String>,
    /// Log bytes kept per run (the LAST bytes); default 4 MiB.
    pub log_keep_bytes: usize,
    /// Largest JSON result a run may return; larger => the run fails. Default 1 MiB.
    pub max_result_bytes: usize,
    /// Heartbeat period of a running job; default 1 s (cancel is seen within 2 s).
    pub heartbeat_every: Duration,
    /// Long-poll wait per claim; default 5 s.
    pub claim_wait: Duration,
    /// Which of the host's GPUs this node manages; default all.
    pub gpus: GpuSelection,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            node_id: 0,
            slots: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fs_root: None,
            allow_command_jobs: false,
            scratch_root: None,
            command_user: None,
            log_keep_bytes: 4 * 1024 * 1024,
            max_result_bytes: 1024 * 1024,
            heartbeat_every: Duration::from_secs(1),
            claim_wait: Duration::from_secs(5),
            gpus: GpuSelection::All,
        }
    }
}

/// Resources a job asks for (mirrors the job's `resources` field).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Resources {
    /// Number of GPUs.
    pub gpus: u32,
    /// Free memory each assigned GPU must have, in MiB (0 = any).
    pub gpu_memory_mb: u64,
    /// CPU cores.
    pub cpus: u32,
    /// The job may share its GPUs with other `shared_gpu` jobs.
    pub shared_gpu: bool,
}

/// One GPU as NVML reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GpuInfo {
    pub uuid: String,
    pub index: u32,
    pub name: String,
    pub memory_total_mb: u64,
    pub memory_used_mb: u64,
    pub utilization_pct: u32,
    pub temperature_c: u32,
    /// `"major.minor"`, e.g. `"8.0"`.
    pub compute_capability: String,
}

/// What a worker slot offers when it asks for work.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// `"<node_id>/<slot>"`.
    pub worker_id: String,
    /// Kinds this slot can run right now.
    pub kinds: Vec<String>,
    /// GPUs not assigned to running jobs. At most one slot at a time offers a
    /// non-empty list, so two concurrent claims never get the same GPU.
    pub free_gpus: Vec<GpuInfo>,
    /// GPUs only `shared_gpu` jobs hold, offered (with `free_gpus`, by the
    /// same slot) to more shared jobs only.
    pub shared_gpus: Vec<GpuInfo>,
    /// Cores not asked for by running jobs.
    pub free_cpus: u32,
    /// How long the source may hold the request before answering `None`.
    pub wait: Duration,
}

/// A job leased to this worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub resources: Resources,
    /// The lease token (= the attempt number).
    pub token: u64,
    pub lease_s: u32,
}

/// Facts about one finished attempt, stored in the job's Run record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub node: u64,
    pub gpu_uuids: Vec<String>,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// The process exit code for `command`; `Some(0)` for a successful built-in job.
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// Peak memory used on the assigned GPUs (summed), sampled through NVML.
    pub gpu_peak_memory_mb: Option<u64>,
    /// Mean utilisation of the assigned GPUs over the run, sampled through NVML.
    pub gpu_mean_utilization_pct: Option<f64>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The job was cancelled: stop the work and `fail(.., "cancelled", ..)`.
    pub cancelled: bool,
}

/// Errors a [`JobSource`] returns.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// Stale token: the lease was lost. Stop the work, do not retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Temporarily unavailable (no quorum, leader change): retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Implemented by the server over the node (claims/heartbeats are Raft commands).
#[async_trait::async_trait]
pub trait JobSource: Send + Sync + 'static {
    /// Leases one job fitting `req`, waiting up to `req.wait`; `None` if none came.
    async fn claim(&self, req: ClaimRequest) -> Result<Option<Claimed>, SourceError>;
    /// Extends the lease.
    async fn heartbeat(&self, job_id: &str, token: u64) -> Result<HeartbeatReply, SourceError>;
    /// Ends the attempt successfully.
    async fn complete(
        &self,
        job_id: &str,
        token: u64,
        result: serde_json::Value,
        run: RunReport,
    ) -> Result<(), SourceError>;
    /// Ends the attempt with an error. A cancelled job's worker sends `"cancelled"`.
    async fn fail(
        &self,
        job_id: &str,
        token: u64,
        error: String,
        run: RunReport,
    ) -> Result<(), SourceError>;
    /// Ends the attempt with an error that any other attempt would meet too
    /// (e.g. a root node without `--command-user`): the job should fail now,
    /// not be retried. Defaults to [`JobSource::fail`].
    async fn fail_permanently(
        &self,
        job_id: &str,
        token: u64,
        error: String,
        run: RunReport,
    ) -> Result<(), SourceError> {
        self.fail(job_id, token, error, run).await
    }
}

/// Extra job kinds (e.g. `policy.run`, `policy.backtest` from the policy module),
/// run on a blocking thread (use rayon inside freely).
pub trait KindHandler: Send + Sync + 'static {
    /// Checks params at enqueue time; Err(message naming the field).
    fn validate(&self, params: &serde_json::Value) -> Result<(), String>;
    /// Runs the job. Should poll `ctx.is_cancelled()` and return early when set.
    fn run(
        &self,
        params: &serde_json::Value,
        ctx: &RunContext,
    ) -> Result<serde_json::Value, String>;
}

/// Given to a running job: its log sink, cancellation flag, fs root, assigned GPUs.
pub struct RunContext {
    pub(crate) logs: LogBook,
    pub(crate) job_id: String,
    pub(crate) attempt: u64,
    pub(crate) cancelled: Arc<AtomicBool>,
    pub(crate) fs: Option<Arc<FsRoot>>,
    pub(crate) gpus: Vec<String>,
}

impl RunContext {
    /// A context outside any engine (for testing a [`KindHandler`]): its log
    /// lines go to a private [`LogBook`] under `("detached", 0)`, returned alongside.
    /// An `fs_root` that cannot be opened counts as none.
    pub fn detached(fs_root: Option<PathBuf>, gpus: Vec<String>) -> (RunContext, LogBook) {
        let logs = LogBook::new(4 * 1024 * 1024);
        let fs = fs_root.and_then(|r| FsRoot::open(&r).ok()).map(Arc::new);
        let ctx = RunContext {
            logs: logs.clone(),
            job_id: "detached".to_string(),
            attempt: 0,
            cancelled: Arc::new(AtomicBool::new(false)),
            fs,
            gpus,
        };
        (ctx, logs)
    }
    /// Appends one line to the run's log.
    pub fn log(&self, line: &str) {
        let mut data = Vec::with_capacity(line.len() + 1);
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
        self.logs.append(&self.job_id, self.attempt, &data);
    }
    /// True once the job was cancelled or its lease lost.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
    /// The node's canonical fs root, if it has one. Open files through
    /// [`RunContext::fs`], not by paths under this: only the handle confines.
    pub fn fs_root(&self) -> Option<&Path> {
        self.fs.as_deref().map(FsRoot::path)
    }
    /// The node's fs root handle, if it has one: every open of a job's path
    /// goes through it (see [`FsRoot`]).
    pub fn fs(&self) -> Option<&FsRoot> {
        self.fs.as_deref()
    }
    /// UUIDs of the GPUs assigned to this run.
    pub fn gpus(&self) -> &[String] {
        &self.gpus
    }
}

/// The built-in kinds.
pub const BUILTIN_KINDS: &[&str] = &[
    "fs.summarize",
    "fs.csv_transform",
    "image.thumbnail",
    "command",
    "dataset.scan",
    "image.caption",
];

/// Validates a built-in kind's params at enqueue time (unknown kinds => Ok:
/// external workers may run any kind). Err(message naming the field) => HTTP 400.
pub fn validate_params(kind: &str, params: &serde_json::Value) -> Result<(), String> {
    kinds::validate(kind, params)
}

/// Validates the `params` of a workflow step of one of the [`STEP_KINDS`]
/// (its `dataset` and `path` may come from the step's item or the
/// workflow's input when it runs).
pub fn validate_step_params(kind: &str, params: &serde_json::Value) -> Result<(), String> {
    kinds::step::validate_step(kind, params)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
