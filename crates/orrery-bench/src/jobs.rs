//! `orrery-bench jobs`: job-queue throughput on a local cluster, through
//! the REST API an external worker uses, with a no-op kind (no engine
//! claims it, so only the benchmark's workers do).
//!
//! Cells: enqueue throughput (`producers` clients POSTing one job per
//! request, then `batch` jobs per bulk request), a drain of the backlog,
//! then the full cycle (producers enqueue while `workers` claim and
//! complete): one job per request, and in batches (bulk submit, batch
//! claims, bulk complete). Claim latency is measured per claim request that
//! returned work.

use crate::cluster::LocalCluster;
use crate::machine::{self, round3};
use anyhow::{bail, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct JobsArgs {
    /// Directory holding the `orrery` binary [default: this executable's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seconds measured per cell.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent enqueuing clients.
    #[arg(long, default_value_t = 16)]
    producers: usize,
    /// Concurrent workers (claim + complete).
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Jobs per bulk submit, claim and bulk complete in the batch cells.
    #[arg(long, default_value_t = 16)]
    batch: u32,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 3)]
    shards: u32,
    /// Directory in which the temporary data directory is created [default: $TMPDIR or /tmp].
    #[arg(long)]
    data_root: Option<PathBuf>,
    #[arg(long)]
    keep_data: bool,
    /// Cells to run, comma-separated [default: all of enqueue, enqueue_batch, drain, cycle, cycle_batch].
    #[arg(long, value_delimiter = ',')]
    cells: Vec<String>,
    /// How workers report finished jobs: `with-claim` sends them in the
    /// next claim request (`complete`), `separate` in requests of their own
    /// (`POST /v1/jobs/{id}/complete`, or `POST /v1/jobs/complete` for a
    /// batch).
    #[arg(long, value_enum, default_value_t = Acks::WithClaim)]
    acks: Acks,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    WithClaim,
    Separate,
}

impl Acks {
    fn name(self) -> &'static str {
        match self {
            Acks::WithClaim => "with-claim",
            Acks::Separate => "separate",
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn opt3(x: Option<f64>) -> Value {
    x.map(round3).map(Value::from).unwrap_or(Value::Null)
}

struct Shared {
    http: reqwest::Client,
    addrs: Vec<String>,
    /// Node processes, for their CPU time.
    pids: Vec<u32>,
    stop: AtomicBool,
    enqueued: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    acks: Acks,
}

// The parts of the API's answers the benchmark reads. Typed, rather than
// parsed into `Value`s: the client shares the machine's two cores with the
// nodes, and building a `Value` of every returned job was most of its CPU.

/// `POST /v1/jobs/batch` and `POST /v1/jobs/complete`.
#[derive(Deserialize, Default)]
struct Counts {
    #[serde(default)]
    created: u64,
    #[serde(default)]
    completed: u64,
    #[serde(default)]
    failed: u64,
}

/// `POST /v1/queues/{q}/claim`.
#[derive(Deserialize)]
struct Claimed {
    #[serde(default)]
    jobs: Vec<ClaimedJob>,
    /// The outcome of the completions the request carried.
    #[serde(default)]
    completions: Option<Counts>,
}

#[derive(Deserialize)]
struct ClaimedJob {
    id: String,
    token: Value,
}

impl ClaimedJob {
    fn completion(&self) -> Value {
        json!({"id": self.id, "token": self.token, "result": {"ok": true}})
    }
}

/// Enqueues until stopped: one job per POST /v1/jobs, or `batch` jobs per
/// POST /v1/jobs/batch.
async fn producer(s: Arc<Shared>, i: usize, batch: u32) {
    let addr = &s.addrs[i % s.addrs.len()];
    let one = format!("{}/v1/jobs", crate::access::base(addr));
    let bulk = format!("{}/v1/jobs/batch", crate::access::base(addr));
    let mut n = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        if batch <= 1 {
            n += 1;
            let body = json!({"queue": "bench", "kind": "bench.noop", "params": {"p": i, "n": n}});
            match s.http.post(&one).json(&body).send().await {
                Ok(r) if r.status().as_u16() == 201 => {
                    s.enqueued.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    s.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            continue;
        }
        let jobs: Vec<Value> = (0..batch)
            .map(|_| {
                n += 1;
                json!({"queue": "bench", "kind": "bench.noop", "params": {"p": i, "n": n}})
            })
            .collect();
        let r = s.http.post(&bulk).json(&json!({"jobs": jobs})).send().await;
        let v: Option<Counts> = match r {
            Ok(r) if r.status().as_u16() == 200 => r.json().await.ok(),
            _ => None,
        };
        match v {
            Some(v) => {
                s.enqueued.fetch_add(v.created, Ordering::Relaxed);
                s.errors.fetch_add(v.failed, Ordering::Relaxed);
            }
            None => {
                s.errors.fetch_add(batch as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Claims (batch `max`) and completes until stopped; returns claim
/// latencies (ms). With `Acks::WithClaim` the claimed jobs are completed
/// by the next claim request; otherwise with `max > 1` in one bulk request,
/// and one by one with `max == 1`.
async fn worker(s: Arc<Shared>, i: usize, max: u32) -> Vec<f64> {
    if s.acks == Acks::WithClaim {
        return settling_worker(s, i, max).await;
    }
    let addr = &s.addrs[i % s.addrs.len()];
    let claim_url = format!("{}/v1/queues/bench/claim", crate::access::base(addr));
    let bulk_url = format!("{}/v1/jobs/complete", crate::access::base(addr));
    let mut lat = Vec::new();
    while !s.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let body = json!({"worker_id": format!("bench-{i}"), "wait_s": 1, "max": max});
        let r = match s.http.post(&claim_url).json(&body).send().await {
            Ok(r) => r,
            Err(_) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        if r.status().as_u16() == 204 {
            continue;
        }
        if r.status().as_u16() != 200 {
            s.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let jobs = match r.json::<Claimed>().await {
            Ok(v) => v.jobs,
            Err(_) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        if max > 1 {
            let completions: Vec<Value> = jobs.iter().map(ClaimedJob::completion).collect();
            let r = s
                .http
                .post(&bulk_url)
                .json(&json!({"completions": completions}))
                .send()
                .await;
            let v: Option<Counts> = match r {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
            match v {
                Some(v) => {
                    s.completed.fetch_add(v.completed, Ordering::Relaxed);
                    s.errors.fetch_add(v.failed, Ordering::Relaxed);
                }
                None => {
                    s.errors.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                }
            }
            continue;
        }
        for j in jobs {
            let url = format!("{}/v1/jobs/{}/complete", crate::access::base(addr), j.id);
            let body = json!({"token": j.token, "result": {"ok": true}});
            match s.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    s.completed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    s.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    lat
}

/// A worker that reports the jobs it finished in its next claim request:
/// one request per batch of jobs.
async fn settling_worker(s: Arc<Shared>, i: usize, max: u32) -> Vec<f64> {
    let addr = &s.addrs[i % s.addrs.len()];
    let claim_url = format!("{}/v1/queues/bench/claim", crate::access::base(addr));
    let mut lat = Vec::new();
    let mut done: Vec<Value> = Vec::new();
    while !s.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let body = json!({
            "worker_id": format!("bench-{i}"),
            "wait_s": 1,
            "max": max,
            "complete": std::mem::take(&mut done),
        });
        let v: Option<Claimed> = match s.http.post(&claim_url).json(&body).send().await {
            Ok(r) if r.status().as_u16() == 200 => r.json().await.ok(),
            _ => None,
        };
        let Some(v) = v else {
            s.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let c = v.completions.unwrap_or_default();
        s.completed.fetch_add(c.completed, Ordering::Relaxed);
        s.errors.fetch_add(c.failed, Ordering::Relaxed);
        if v.jobs.is_empty() {
            continue;
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        done = v.jobs.iter().map(ClaimedJob::completion).collect();
    }
    lat
}

/// Group-commit requests and entries, forwarded requests, and the
/// AppendEntries RPCs the nodes received and the entries those carried,
/// summed over the nodes (zeros if a node did not answer).
async fn counters(s: &Shared) -> [f64; 7] {
    let names = [
        "orrery_group_commit_requests_total",
        "orrery_group_commit_entries_total",
        "orrery_forwarded_total",
        "orrery_peer_append_entries_rpcs_total",
        "orrery_peer_appended_entries_total",
        "orrery_wal_appends_total",
        "orrery_wal_syncs_total",
    ];
    crate::cluster::metric_totals(&s.http, &s.addrs, names)
        .await
        .unwrap_or([0.0; 7])
}

async fn cell(
    s: &Arc<Shared>,
    name: &str,
    producers: usize,
    workers: usize,
    (max, enqueue_batch): (u32, u32),
    dur: Duration,
    base: &Value,
) -> Value {
    s.stop.store(false, Ordering::Relaxed);
    s.enqueued.store(0, Ordering::Relaxed);
    s.completed.store(0, Ordering::Relaxed);
    s.errors.store(0, Ordering::Relaxed);
    let before = counters(s).await;
    let cpu_before = cpu_times(s);
    let start = Instant::now();
    let ps: Vec<_> = (0..producers)
        .map(|i| tokio::spawn(producer(s.clone(), i, enqueue_batch)))
        .collect();
    let ws: Vec<_> = (0..workers)
        .map(|i| tokio::spawn(worker(s.clone(), i, max)))
        .collect();
    tokio::time::sleep(dur).await;
    s.stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let enq = s.enqueued.load(Ordering::Relaxed);
    let done = s.completed.load(Ordering::Relaxed);
    let cpu_after = cpu_times(s);
    for p in ps {
        let _ = p.await;
    }
    let mut lat = Vec::new();
    for w in ws {
        if let Ok(mut l) = w.await {
            lat.append(&mut l);
        }
    }
    let after = counters(s).await;
    let [requests, entries, forwarded, append_rpcs, appended, wal_appends, wal_syncs] =
        std::array::from_fn(|i| after[i] - before[i]);
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut v = base.clone();
    v["cell"] = json!(name);
    v["producers"] = json!(producers);
    v["workers"] = json!(workers);
    v["claim_batch"] = json!(max);
    if workers > 0 {
        v["acks"] = json!(s.acks.name());
    }
    v["enqueue_batch"] = json!(enqueue_batch);
    v["seconds"] = json!(round3(elapsed));
    v["enqueued_per_s"] = json!(round3(enq as f64 / elapsed));
    v["completed_per_s"] = json!(round3(done as f64 / elapsed));
    v["claims"] = json!(lat.len());
    v["claim_p50_ms"] = opt3(pct(&lat, 0.5));
    v["claim_p99_ms"] = opt3(pct(&lat, 0.99));
    v["errors"] = json!(s.errors.load(Ordering::Relaxed));
    // How much group commit merged: queue writes per log entry.
    v["writes_per_entry"] = if entries > 0.0 {
        json!(round3(requests / entries))
    } else {
        Value::Null
    };
    v["forwarded_per_s"] = json!(round3(forwarded / elapsed));
    // What the peer transport carried: AppendEntries RPCs (heartbeats
    // included) the followers received, and entries per RPC.
    v["append_rpcs_per_s"] = json!(round3(append_rpcs / elapsed));
    v["entries_per_append"] = if append_rpcs > 0.0 {
        json!(round3(appended / append_rpcs))
    } else {
        Value::Null
    };
    // The write-ahead logs' fsyncs, all nodes together, and the log
    // appends (of any group) each one made durable.
    v["fsyncs_per_s"] = json!(round3(wal_syncs / elapsed));
    v["appends_per_fsync"] = if wal_syncs > 0.0 {
        json!(round3(wal_appends / wal_syncs))
    } else {
        Value::Null
    };
    // CPU the nodes and this client used in the cell: on a machine the
    // nodes and the client share, throughput alone hides which side a
    // change made cheaper. Per job: enqueued or completed, whichever the
    // cell did more of.
    if let (Some((n0, c0)), Some((n1, c1))) = (cpu_before, cpu_after) {
        let jobs = enq.max(done).max(1) as f64;
        v["node_cpu_s"] = json!(round3(n1 - n0));
        v["client_cpu_s"] = json!(round3(c1 - c0));
        v["node_cpu_us_per_job"] = json!(round3((n1 - n0) * 1e6 / jobs));
    }
    v
}

/// CPU seconds used so far by all nodes together, and by this client.
fn cpu_times(s: &Shared) -> Option<(f64, f64)> {
    let mut nodes = 0.0;
    for pid in &s.pids {
        nodes += machine::cpu_seconds(&pid.to_string())?;
    }
    Some((nodes, machine::cpu_seconds("self")?))
}

pub async fn run(args: JobsArgs) -> Result<()> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    if args.nodes == 0 || args.producers == 0 || args.workers == 0 || args.batch == 0 {
        bail!("--nodes, --producers, --workers and --batch must be positive");
    }
    let (bin, data_root) = crate::node_binary_and_data_root(&args.bin_dir, &args.data_root)?;
    eprintln!("starting {} nodes from {} ...", args.nodes, bin.display());
    let mut cluster = LocalCluster::spawn(&bin, args.nodes, &data_root, args.keep_data)?;
    let r = run_cells(&mut cluster, &args).await;
    if r.is_err() {
        for i in 0..cluster.nodes.len() {
            eprintln!(
                "--- node {} log (tail) ---\n{}",
                cluster.nodes[i].id,
                cluster.log_tail(i, 15)
            );
        }
    }
    for line in cluster.shutdown(Duration::from_secs(15)) {
        eprintln!("  {line}");
    }
    r
}

async fn run_cells(cluster: &mut LocalCluster, args: &JobsArgs) -> Result<()> {
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    cluster.form(args.shards, Duration::from_secs(120)).await?;
    let http = crate::access::http()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(256)
        .build()?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    // Queue creation waits for shard leaders after formation.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .post(format!("{}/v1/queues", crate::access::base(&addrs[0])))
            .json(&json!({"name": "bench", "lease_s": 30}))
            .send()
            .await?;
        if r.status().as_u16() == 201 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "creating the queue: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Leadership moves to the preferred leaders a few seconds after
    // formation; measuring before that would measure the hand-over.
    let fair = (args.shards as usize).div_ceil(args.nodes);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let leaders = cluster.shard_leaders().await.unwrap_or_default();
        let spread =
            !leaders.contains_key("unknown") && leaders.values().all(|n| *n as usize <= fair);
        if spread {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("shard leadership still uneven ({leaders:?}); measuring anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let base = json!({
        "bench": "jobs",
        "machine": machine::brief(),
        "nodes": args.nodes,
        "shards": args.shards,
        "protocol": "http",
        "kind": "bench.noop",
    });
    println!(
        "{}",
        json!({"bench": "jobs", "machine": machine::full(), "nodes": args.nodes, "shards": args.shards})
    );
    let s = Arc::new(Shared {
        http,
        addrs,
        pids: cluster.pids(),
        stop: AtomicBool::new(false),
        enqueued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        acks: args.acks,
    });
    let dur = Duration::from_secs_f64(args.duration);
    let (p, w, b) = (args.producers, args.workers, args.batch);
    // (name, what it does, producers, workers, (claim batch, enqueue batch))
    let all = [
        ("enqueue", "enqueue only", p, 0, (1, 1)),
        ("enqueue_batch", "bulk enqueue only", p, 0, (1, b)),
        (
            "drain",
            "drain (claim + complete, no producers)",
            0,
            w,
            (1, 1),
        ),
        ("cycle", "full cycle, single claims", p, w, (1, 1)),
        (
            "cycle_batch",
            "full cycle, bulk submits, batch claims, bulk completes",
            p,
            w,
            (b, b),
        ),
    ];
    for c in &args.cells {
        if !all.iter().any(|a| a.0 == c) {
            bail!(
                "unknown cell {c:?}; cells are enqueue, enqueue_batch, drain, cycle, cycle_batch"
            );
        }
    }
    for (name, what, producers, workers, batches) in all {
        if !args.cells.is_empty() && !args.cells.iter().any(|c| c == name) {
            continue;
        }
        let leaders = cluster.shard_leaders().await.ok();
        eprintln!("{what} (shard leaders: {leaders:?}) ...");
        println!(
            "{}",
            cell(&s, name, producers, workers, batches, dur, &base).await
        );
    }
    Ok(())
}
