//! Worker slots: claim, run, heartbeat, report.
//!
//! Each slot is a tokio task that long-polls [`JobSource::claim`], runs what
//! it gets and reports it. Blocking kinds run on `spawn_blocking` threads
//! (and fan out on the global rayon pool); `command` jobs are child
//! processes. While a job runs, its slot heartbeats every `heartbeat_every`;
//! a `cancelled` reply is reported at once with `fail(.., "cancelled")` and
//! the work is stopped (flag for in-process kinds, SIGKILL to the process
//! group for commands); a `Conflict` means the lease is gone: the work is
//! stopped and nothing is reported. The slot keeps the job's GPUs until the
//! work has really stopped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::confine::FsRoot;
use crate::gpu::{GpuAllocator, GpuInventory};
use crate::hooks::Hooks;
use crate::kinds::command::{self, CommandEnd, CommandSpec, Launch};
use crate::kinds::command_env::{child_env, RunAs, Scratch};
use crate::logs::LogBook;
use crate::{
    kinds, now_ms, ClaimRequest, Claimed, ExecConfig, GpuInfo, JobSource, KindHandler, RunContext,
    RunReport, SourceError,
};

/// How often the GPU inventory is re-read.
pub const GPU_REFRESH: Duration = Duration::from_secs(10);
/// How often the assigned GPUs of a running job are sampled.
const GPU_SAMPLE: Duration = Duration::from_secs(1);
/// Longest claim wait of the slot offering GPUs while some are held: a GPU
/// let go meanwhile is offered again after at most this, not after a whole
/// long poll (its claim cannot be cut short: a job it leased would be lost
/// until the lease ran out).
const GPU_REOFFER: Duration = Duration::from_millis(500);
/// The error a cancelled job is failed with (the queue module ends it `cancelled`).
pub const CANCELLED: &str = "cancelled";

struct Shared {
    cfg: ExecConfig,
    /// The fs root's handle, opened once: the fs/image kinds work through it.
    fs: Option<Arc<FsRoot>>,
    /// Who `command` children run as.
    run_as: RunAs,
    /// Parent of the runs' scratch dirs; removed on drop when `scratch_owned`.
    scratch_root: PathBuf,
    scratch_owned: bool,
    source: Arc<dyn JobSource>,
    /// The provider client and dataset writer the pipeline kinds use.
    hooks: Hooks,
    handlers: HashMap<String, Arc<dyn KindHandler>>,
    kinds: Vec<String>,
    logs: LogBook,
    gpus: GpuInventory,
    alloc: GpuAllocator,
    /// Held by the one slot whose claim offers GPUs, so two concurrent claims
    /// are never offered the same GPU.
    gpu_offer: Arc<tokio::sync::Mutex<()>>,
    cpus_total: u32,
    cpus_used: AtomicU32,
    claiming: AtomicUsize,
    stop: watch::Sender<bool>,
}

/// A new scratch root of this engine's own under the system temp dir. Made
/// with a plain mkdir, which fails on anything already there (a symlink
/// planted in the shared temp dir, say); then the next name is tried.
fn own_scratch_root() -> (PathBuf, bool) {
    use std::os::unix::fs::DirBuilderExt;
    static ENGINES: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = ENGINES.fetch_add(1, Ordering::Relaxed);
        let name = format!("orrery-scratch-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        match std::fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => return (path, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                // Command jobs then fail on it with this error, clearly.
                tracing::error!(dir = %path.display(), error = %e, "cannot create a scratch root");
                return (path, false);
            }
        }
    }
}

impl Drop for Shared {
    /// Removes the engine's own scratch root once no slot can use it.
    fn drop(&mut self) {
        if self.scratch_owned {
            let _ = std::fs::remove_dir_all(&self.scratch_root);
        }
    }
}

/// The per-node execution engine.
pub struct Engine {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Starts `cfg.slots` worker slots pulling from `source` (long-poll, no busy loop),
    /// and the 10 s GPU refresh. Returns at once. Must be called inside a tokio runtime.
    ///
    /// `fs_root` is canonicalised and opened here; if it cannot be, the
    /// fs/image kinds are refused on this node (logged). `handlers` add kinds by name; a
    /// handler named like a built-in kind replaces it.
    pub fn start(
        cfg: ExecConfig,
        source: Arc<dyn JobSource>,
        handlers: Vec<(String, Arc<dyn KindHandler>)>,
    ) -> Engine {
        let gpus = GpuInventory::load_selected(cfg.gpus.clone());
        Self::start_with_inventory(cfg, source, handlers, gpus)
    }

    /// [`Engine::start`] with a given inventory (tests, or a node that loaded NVML itself).
    pub fn start_with_inventory(
        cfg: ExecConfig,
        source: Arc<dyn JobSource>,
        handlers: Vec<(String, Arc<dyn KindHandler>)>,
        gpus: GpuInventory,
    ) -> Engine {
        Self::start_with_hooks(cfg, source, handlers, gpus, Hooks::default())
    }

    /// [`Engine::start_with_inventory`] with the [`Hooks`] the pipeline
    /// kinds need: without a captioner `image.caption` is not claimed.
    pub fn start_with_hooks(
        mut cfg: ExecConfig,
        source: Arc<dyn JobSource>,
        handlers: Vec<(String, Arc<dyn KindHandler>)>,
        gpus: GpuInventory,
        hooks: Hooks,
    ) -> Engine {
        cfg.slots = cfg.slots.max(1);
        let fs = cfg.fs_root.take().and_then(|r| match FsRoot::open(&r) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::error!(fs_root = %r.display(), error = %e, "fs root unusable; fs.* and image.* jobs are refused");
                None
            }
        });
        cfg.fs_root = fs.as_ref().map(|f| f.path().to_path_buf());
        let run_as = if cfg.allow_command_jobs {
            let r = RunAs::resolve(cfg.command_user.as_deref());
            match &r {
                RunAs::Refused(why) => tracing::error!("command jobs will fail: {why}"),
                RunAs::User { name, uid, .. } => {
                    tracing::info!(user = %name, uid, "command jobs run as the command user")
                }
                RunAs::Myself => {}
            }
            r
        } else {
            RunAs::Myself
        };
        let handlers: HashMap<_, _> = handlers.into_iter().collect();
        let mut kinds: Vec<String> = crate::BUILTIN_KINDS
            .iter()
            .filter(|k| match **k {
                "command" => cfg.allow_command_jobs,
                "image.caption" => cfg.fs_root.is_some() && hooks.captioner.is_some(),
                _ => cfg.fs_root.is_some(),
            })
            .map(|k| k.to_string())
            .collect();
        for k in handlers.keys() {
            if !kinds.contains(k) {
                kinds.push(k.clone());
            }
        }
        kinds.sort();
        let cpus_total = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let (stop, _) = watch::channel(false);
        let (scratch_root, scratch_owned) = match &cfg.scratch_root {
            // Absolute: it becomes the child's HOME and TMPDIR.
            Some(r) => (std::path::absolute(r).unwrap_or_else(|_| r.clone()), false),
            None => own_scratch_root(),
        };
        let shared = Arc::new(Shared {
            logs: LogBook::new(cfg.log_keep_bytes),
            cfg,
            fs,
            run_as,
            scratch_root,
            scratch_owned,
            source,
            hooks,
            handlers,
            kinds,
            gpus,
            alloc: GpuAllocator::default(),
            gpu_offer: Arc::new(tokio::sync::Mutex::new(())),
            cpus_total,
            cpus_used: AtomicU32::new(0),
            claiming: AtomicUsize::new(0),
            stop,
        });
        let mut tasks = Vec::new();
        // A claim with no kinds matches every kind (external workers use
        // that), so slots with nothing runnable must not claim at all: they
        // would take jobs meant for other workers and fail them.
        let slots = if shared.kinds.is_empty() {
            tracing::info!(
                "no runnable job kinds on this node (no --fs-root, no --allow-command-jobs, no handlers): worker slots not started"
            );
            0
        } else {
            shared.cfg.slots
        };
        for i in 0..slots {
            tasks.push(tokio::spawn(slot(shared.clone(), i)));
        }
        if shared.gpus.has_nvml() {
            tasks.push(tokio::spawn(refresh_gpus(shared.clone())));
        }
        tracing::info!(
            node = shared.cfg.node_id,
            slots,
            kinds = ?shared.kinds,
            gpus = shared.gpus.snapshot().len(),
            "execution engine started"
        );
        Engine {
            shared,
            tasks: Mutex::new(tasks),
        }
    }

    /// The run logs kept on this node.
    pub fn logs(&self) -> &LogBook {
        &self.shared.logs
    }

    /// This node's GPUs as of the last refresh.
    pub fn gpus(&self) -> Vec<GpuInfo> {
        self.shared.gpus.snapshot()
    }

    /// UUIDs of this node's GPUs that running jobs hold now.
    pub fn gpus_held(&self) -> Vec<String> {
        self.shared.alloc.held()
    }

    /// The kinds this node's slots claim.
    pub fn kinds(&self) -> Vec<String> {
        self.shared.kinds.clone()
    }

    /// Stops claiming; running work is left to finish or its lease to expire.
    /// When this returns no claim from this engine is in flight.
    pub async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.claiming.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Idle slots have ended; those still running a job end after it.
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !t.is_finished());
    }
}

impl Drop for Engine {
    /// Dropping the engine stops its slots from claiming, like `shutdown`.
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

async fn refresh_gpus(sh: Arc<Shared>) {
    let mut stop = sh.stop.subscribe();
    let mut tick = tokio::time::interval(GPU_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let inv = sh.gpus.clone();
                let _ = tokio::task::spawn_blocking(move || inv.refresh()).await;
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once the engine is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Err means the sender is gone, which only happens as the engine drops.
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `d` unless stopped first; true if stopped.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop) => true,
    }
}

/// Decrements the claim counter however the claim ends.
struct Claiming<'a>(&'a AtomicUsize);
impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn slot(sh: Arc<Shared>, index: usize) {
    let worker_id = format!("{}/{}", sh.cfg.node_id, index);
    let mut stop = sh.stop.subscribe();
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            break;
        }
        let all = sh.gpus.snapshot();
        let offer = if all.is_empty() {
            None
        } else {
            sh.gpu_offer.clone().try_lock_owned().ok()
        };
        let (free_gpus, shared_gpus) = if offer.is_some() {
            (sh.alloc.free(&all), sh.alloc.shared_only(&all))
        } else {
            (Vec::new(), Vec::new())
        };
        let wait = if offer.is_some() && free_gpus.len() < all.len() {
            sh.cfg.claim_wait.min(GPU_REOFFER)
        } else {
            sh.cfg.claim_wait
        };
        let req = ClaimRequest {
            worker_id: worker_id.clone(),
            kinds: sh.kinds.clone(),
            free_gpus,
            shared_gpus,
            free_cpus: sh
                .cpus_total
                .saturating_sub(sh.cpus_used.load(Ordering::SeqCst)),
            wait,
        };
        let started = Instant::now();
        sh.claiming.fetch_add(1, Ordering::SeqCst);
        let res = {
            let _c = Claiming(&sh.claiming);
            tokio::select! {
                r = sh.source.claim(req) => r,
                // Dropping the claim: a job it might have leased is left to
                // its lease expiry, as documented for shutdown.
                _ = stopped(&mut stop) => break,
            }
        };
        match res {
            Ok(Some(job)) => {
                backoff = Duration::from_millis(200);
                let gpus = if job.resources.gpus == 0 {
                    Some(Vec::new())
                } else {
                    sh.alloc.allocate(
                        &all,
                        job.resources.gpus,
                        job.resources.gpu_memory_mb,
                        job.resources.shared_gpu,
                    )
                };
                drop(offer);
                match gpus {
                    Some(gpus) => run_job(&sh, job, gpus).await,
                    None => {
                        let msg = format!(
                            "node {} has no {} free GPU(s) with {} MiB free for this job",
                            sh.cfg.node_id, job.resources.gpus, job.resources.gpu_memory_mb
                        );
                        let now = now_ms();
                        let run = RunReport {
                            node: sh.cfg.node_id,
                            started_ms: now,
                            finished_ms: now,
                            ..RunReport::default()
                        };
                        report(&sh, &job, Err(msg), true, run).await;
                    }
                }
            }
            Ok(None) => {
                drop(offer);
                // A source that answers before the wait is up must not make
                // us spin.
                if started.elapsed() < (wait / 2).max(Duration::from_millis(250))
                    && sleep_or_stop(&mut stop, Duration::from_millis(250)).await
                {
                    break;
                }
            }
            Err(e) => {
                drop(offer);
                tracing::warn!(worker = %worker_id, error = %e, "claim failed; retrying");
                if sleep_or_stop(&mut stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::debug!(worker = %worker_id, "slot stopped");
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Running,
    Cancelled,
    LeaseLost,
}

/// What the work itself produced.
struct WorkEnd {
    result: Result<Value, String>,
    exit_code: Option<i32>,
    /// `false`: another attempt would fail the same way; fail the job now.
    retry: bool,
}

async fn do_work(
    sh: &Arc<Shared>,
    job: &Claimed,
    ctx: Arc<RunContext>,
    cancel: watch::Receiver<bool>,
) -> WorkEnd {
    let refused = |msg: String| WorkEnd {
        result: Err(msg),
        exit_code: None,
        retry: true,
    };
    if let Some(h) = sh.handlers.get(&job.kind).cloned() {
        let params = job.params.clone();
        return blocking(move || {
            h.validate(&params)?;
            h.run(&params, &ctx)
        })
        .await;
    }
    match job.kind.as_str() {
        "command" => {
            if !sh.cfg.allow_command_jobs {
                return refused(format!(
                    "command jobs are refused on node {} (started without --allow-command-jobs)",
                    sh.cfg.node_id
                ));
            }
            let spec = match CommandSpec::parse(&job.params) {
                Ok(s) => s,
                Err(e) => return refused(e),
            };
            if let RunAs::Refused(why) = &sh.run_as {
                return WorkEnd {
                    retry: false,
                    ..refused(why.clone())
                };
            }
            let ids = sh.run_as.ids();
            let scratch_root = sh.scratch_root.clone();
            let (id, token) = (job.job_id.clone(), job.token);
            let scratch = match tokio::task::spawn_blocking(move || {
                Scratch::create(&scratch_root, &id, token, ids)
            })
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return refused(e),
                Err(e) => return refused(format!("creating the scratch dir: {e}")),
            };
            let launch = Launch {
                env: child_env(&spec.env, scratch.path(), &ctx.gpus, &job.job_id, job.token),
                scratch: scratch.path(),
                ids,
            };
            let ran = command::run(spec, launch, &sh.logs, &job.job_id, job.token, cancel).await;
            // Removed whatever the outcome (its contents may be large: not
            // on the async thread).
            let _ = tokio::task::spawn_blocking(move || drop(scratch)).await;
            match ran {
                Ok(CommandEnd::Exited(0)) => WorkEnd {
                    result: Ok(json!({"exit_code": 0})),
                    exit_code: Some(0),
                    retry: true,
                },
                Ok(CommandEnd::Exited(c)) => WorkEnd {
                    result: Err(format!("command exited with code {c}")),
                    exit_code: Some(c),
                    retry: true,
                },
                Ok(CommandEnd::Signalled(s)) => refused(format!("command killed by signal {s}")),
                Ok(CommandEnd::TimedOut(t)) => refused(format!(
                    "command timed out after {t} s (timeout_s); its process group was killed"
                )),
                Ok(CommandEnd::Cancelled) => refused(CANCELLED.to_string()),
                Err(e) => refused(e),
            }
        }
        "fs.summarize" | "fs.csv_transform" | "image.thumbnail" | "dataset.scan"
        | "image.caption" => {
            if ctx.fs.is_none() {
                return refused(format!(
                    "{} jobs are refused on node {} (no usable --fs-root)",
                    job.kind, sh.cfg.node_id
                ));
            }
            // A workflow step's job carries the step's envelope.
            let params = kinds::step::resolve(&job.kind, &job.params);
            if let Err(e) = kinds::validate(&job.kind, &params) {
                return refused(e);
            }
            let node = sh.cfg.node_id;
            let pipeline_end = |r: Result<Value, kinds::pipeline::Failed>| match r {
                Ok(v) => WorkEnd {
                    result: Ok(v),
                    exit_code: Some(0),
                    retry: true,
                },
                Err(f) => WorkEnd {
                    retry: f.retry,
                    ..refused(f.message)
                },
            };
            if job.kind == "image.caption" {
                let r = kinds::pipeline::caption(&sh.hooks, node, &params, ctx, cancel).await;
                return pipeline_end(r);
            }
            let kind = job.kind.clone();
            let run_params = params.clone();
            let end = blocking(move || kinds::run_blocking(&kind, &run_params, &ctx)).await;
            match end.result {
                Ok(v) if job.kind == "image.thumbnail" => pipeline_end(
                    kinds::pipeline::attach_thumbnails(&sh.hooks, node, &params, v).await,
                ),
                _ => end,
            }
        }
        other => refused(format!(
            "kind '{other}' is not runnable on node {}",
            sh.cfg.node_id
        )),
    }
}

async fn blocking<F>(f: F) -> WorkEnd
where
    F: FnOnce() -> Result<Value, String> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => WorkEnd {
            result: Ok(v),
            exit_code: Some(0),
            retry: true,
        },
        Ok(Err(e)) => WorkEnd {
            result: Err(e),
            exit_code: None,
            retry: true,
        },
        Err(e) => WorkEnd {
            result: Err(format!("the job's code panicked: {e}")),
            exit_code: None,
            retry: true,
        },
    }
}

async fn run_job(sh: &Arc<Shared>, job: Claimed, gpus: Vec<String>) {
    let started_ms = now_ms();
    let t0 = Instant::now();
    sh.cpus_used.fetch_add(job.resources.cpus, Ordering::SeqCst);
    sh.logs.begin(&job.job_id, job.token);
    tracing::info!(job = %job.job_id, attempt = job.token, kind = %job.kind, gpus = ?gpus, "running job");
    let flag = Arc::new(AtomicBool::new(false));
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let ctx = Arc::new(RunContext {
        logs: sh.logs.clone(),
        job_id: job.job_id.clone(),
        attempt: job.token,
        cancelled: flag.clone(),
        fs: sh.fs.clone(),
        gpus: gpus.clone(),
    });
    let work = do_work(sh, &job, ctx, cancel_rx);
    tokio::pin!(work);
    // Three heartbeats per lease at least, whatever the configured period:
    // one lost heartbeat must not cost the lease.
    let mut hb_every = sh.cfg.heartbeat_every;
    if job.lease_s > 0 {
        hb_every = hb_every.min(Duration::from_secs(u64::from(job.lease_s)) / 3);
    }
    let hb_every = hb_every.max(Duration::from_millis(10));
    let mut hb = tokio::time::interval_at(tokio::time::Instant::now() + hb_every, hb_every);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sampling = !gpus.is_empty() && sh.gpus.has_nvml();
    let mut sample_tick = tokio::time::interval(GPU_SAMPLE);
    let (mut peak_mb, mut util_sum, mut samples) = (None::<u64>, 0.0f64, 0u32);
    let mut outcome = Outcome::Running;
    let mut report_base = RunReport {
        node: sh.cfg.node_id,
        gpu_uuids: gpus.clone(),
        started_ms,
        ..RunReport::default()
    };
    let end = loop {
        tokio::select! {
            end = &mut work => break end,
            _ = hb.tick(), if outcome == Outcome::Running => {
                match sh.source.heartbeat(&job.job_id, job.token).await {
                    Ok(r) if r.cancelled => {
                        outcome = Outcome::Cancelled;
                        flag.store(true, Ordering::SeqCst);
                        cancel_tx.send_replace(true);
                        sh.logs.append(&job.job_id, job.token, b"[orrery] cancelled\n");
                        // Reported at once; the slot still waits for the work
                        // to stop before taking more.
                        let now = now_ms();
                        let mut run = report_base.clone();
                        run.finished_ms = now;
                        run.duration_ms = now.saturating_sub(started_ms);
                        report(sh, &job, Err(CANCELLED.to_string()), true, run).await;
                    }
                    Ok(_) => {}
                    Err(SourceError::Conflict(e)) => {
                        tracing::warn!(job = %job.job_id, attempt = job.token, error = %e, "lease lost; stopping the work");
                        outcome = Outcome::LeaseLost;
                        flag.store(true, Ordering::SeqCst);
                        cancel_tx.send_replace(true);
                        sh.logs.append(&job.job_id, job.token, b"[orrery] lease lost; work stopped\n");
                    }
                    Err(e) => {
                        // The lease may still be alive; if it is not, a later
                        // heartbeat says Conflict.
                        tracing::warn!(job = %job.job_id, error = %e, "heartbeat failed");
                    }
                }
            }
            _ = sample_tick.tick(), if sampling => {
                let inv = sh.gpus.clone();
                let uuids = gpus.clone();
                if let Ok(Some((used, util))) = tokio::task::spawn_blocking(move || inv.sample(&uuids)).await {
                    peak_mb = Some(peak_mb.map_or(used, |p| p.max(used)));
                    util_sum += util;
                    samples += 1;
                }
            }
        }
    };
    let finished_ms = now_ms();
    report_base.finished_ms = finished_ms;
    report_base.duration_ms = t0.elapsed().as_millis() as u64;
    report_base.exit_code = end.exit_code;
    report_base.gpu_peak_memory_mb = peak_mb;
    report_base.gpu_mean_utilization_pct = (samples > 0).then(|| util_sum / f64::from(samples));
    if outcome == Outcome::Running {
        let result = match end.result {
            Ok(v) => {
                let size = serde_json::to_vec(&v)
                    .map(|b| b.len())
                    .unwrap_or(usize::MAX);
                if size > sh.cfg.max_result_bytes {
                    Err(format!(
                        "result is {size} bytes, over the limit of {} bytes (max_result_bytes)",
                        sh.cfg.max_result_bytes
                    ))
                } else {
                    Ok(v)
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            sh.logs.append(
                &job.job_id,
                job.token,
                format!("[orrery] failed: {e}\n").as_bytes(),
            );
        }
        // The work has stopped, so its log is complete: end it before the
        // outcome is visible, so that whoever sees the job finished also
        // sees its log ended.
        sh.logs.end(&job.job_id, job.token);
        report(sh, &job, result, end.retry, report_base).await;
    }
    sh.alloc.release(&gpus, job.resources.shared_gpu);
    sh.cpus_used.fetch_sub(job.resources.cpus, Ordering::SeqCst);
    sh.logs.end(&job.job_id, job.token);
}

/// Completes or fails the attempt (for good when `!retry`), retrying while
/// the source is unavailable (a lost report would make the job run again
/// after its lease expires).
async fn report(
    sh: &Arc<Shared>,
    job: &Claimed,
    result: Result<Value, String>,
    retry: bool,
    run: RunReport,
) {
    let mut backoff = Duration::from_millis(200);
    for attempt in 0..12 {
        let r = match &result {
            Ok(v) => {
                sh.source
                    .complete(&job.job_id, job.token, v.clone(), run.clone())
                    .await
            }
            Err(e) if retry => {
                sh.source
                    .fail(&job.job_id, job.token, e.clone(), run.clone())
                    .await
            }
            Err(e) => {
                sh.source
                    .fail_permanently(&job.job_id, job.token, e.clone(), run.clone())
                    .await
            }
        };
        match r {
            Ok(()) => return,
            Err(SourceError::Conflict(e)) => {
                tracing::warn!(job = %job.job_id, attempt = job.token, error = %e, "report rejected: lease lost");
                return;
            }
            Err(e) => {
                tracing::warn!(job = %job.job_id, try_ = attempt, error = %e, "report failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(job = %job.job_id, attempt = job.token, "giving up reporting; the lease will expire and the job be retried");
}
