//! One test: set up the cluster, run clients and nemesis, heal, final
//! reads, check, and write the results directory.

use crate::db::{default_bin_dir, Db};
use crate::history::{Op, OpType};
use crate::nemesis::{schedule_name, Nemesis, NemesisKind};
use crate::procs::{is_could_not_run, Cleanup, CleanupOnDrop, CouldNotRun, Procs};
use crate::recorder::Recorder;
use crate::stats;
use crate::workload::{Client, Generator, ReadConsistency, Request, Workload};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Clone, Debug, clap::Args)]
pub struct TestOpts {
    /// What the clients do.
    #[arg(long, value_enum, default_value = "register")]
    pub workload: Workload,
    /// Which faults to inject; several, comma-separated, are taken in
    /// turn (`clock,kill`: a clock fault, then a kill, then a clock fault…).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        num_args = 1,
        default_value = "partition"
    )]
    pub nemesis: Vec<NemesisKind>,
    /// Seconds of client operations (before healing and final reads).
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Cluster size (3 or 5 is usual).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Concurrent client processes.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Consistency of reads: `stale` is expected to come out invalid under
    /// partitions.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub read_consistency: ReadConsistency,
    /// Random seed for operations and faults [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Target rate of client operations per second, all processes together.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Shards at cluster init.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Seconds between faults, and how long each fault lasts.
    #[arg(long, default_value_t = 5)]
    pub nemesis_interval: u64,
    /// Seconds to wait after healing before the final reads.
    #[arg(long, default_value_t = 5)]
    pub recovery: u64,
    /// Client request timeout in ms.
    #[arg(long, default_value_t = 3000)]
    pub op_timeout_ms: u64,
    /// Directory with the `orrery` and `orreryctl` binaries [default: ours].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where test directories go [default: jepsen/store of this checkout].
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Keep the nodes' data directories even when the test is valid.
    #[arg(long)]
    pub keep_data: bool,
    /// Run the nodes with --insecure (no TLS, no tokens). By default the
    /// suite makes its own CA and node certificates and uses the root token.
    #[arg(long)]
    pub insecure: bool,
}

pub fn default_store() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("store")
}

/// `20261122T101502` (UTC).
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn make_test_dir(store: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    let base = format!("{name}-{}", timestamp());
    let mut dir_name = base.clone();
    let mut n = 1;
    while store.join(&dir_name).exists() {
        dir_name = format!("{base}-{n}");
        n += 1;
    }
    let dir = store.join(&dir_name);
    std::fs::create_dir_all(&dir)?;
    let latest = store.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink(&dir_name, &latest);
    Ok(dir)
}

/// The outcome of a test.
pub struct Outcome {
    pub dir: PathBuf,
    /// `true`, `false` or `"unknown"`.
    pub valid: Value,
    /// Node processes found running after the harness's own stops (each
    /// killed then): the harness had lost track of them, so the run failed.
    pub leftover_processes: Vec<String>,
    /// No node process of this test is running any more.
    pub processes_cleaned: bool,
}

impl Outcome {
    /// The exit code: 0 valid, 1 invalid or unknown, 2 when node processes
    /// outlived the harness's stops (whatever the checker said).
    pub fn exit_code(&self) -> i32 {
        if !self.leftover_processes.is_empty() || !self.processes_cleaned {
            2
        } else {
            i32::from(self.valid != Value::Bool(true))
        }
    }
}

/// What the test phases hand to [`run_test`] to finish `results.json`.
struct Finished {
    valid: Value,
    results: Value,
    notes: Vec<String>,
}

/// SIGINT, SIGTERM and SIGHUP, watched from before the first node starts
/// (from then on they no longer kill the harness outright: it cleans up).
struct Interrupts {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Interrupts {
    fn watch() -> Interrupts {
        let watch = |name: &str, k: SignalKind| {
            signal(k)
                .map_err(|e| eprintln!("orrery-jepsen: cannot watch {name}: {e}"))
                .ok()
        };
        Interrupts {
            int: watch("SIGINT", SignalKind::interrupt()),
            term: watch("SIGTERM", SignalKind::terminate()),
            hup: watch("SIGHUP", SignalKind::hangup()),
        }
    }

    /// The name of the first of the signals to arrive.
    async fn recv(&mut self) -> &'static str {
        async fn one(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.int) => "SIGINT",
            _ = one(&mut self.term) => "SIGTERM",
            _ = one(&mut self.hup) => "SIGHUP",
        }
    }
}

fn cleanup_json(c: &Cleanup) -> (Vec<String>, Value, Value) {
    let list: Vec<String> = c
        .leftovers
        .iter()
        .map(|p| format!("{} {}", p.pid, p.cmdline.join(" ")))
        .collect();
    let json_list = Value::Array(c.leftovers.iter().map(|p| p.to_json()).collect());
    (list, json_list, json!(c.processes_cleaned()))
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    gen: Arc<Generator>,
    client: Arc<Client>,
    rec: Arc<Recorder>,
    live: Arc<RwLock<Vec<u64>>>,
    next_process: Arc<AtomicU64>,
    mean_delay: Duration,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = next_process.fetch_add(1, Ordering::Relaxed);
    // Queue workload: the lease this process holds, completed next.
    let mut held: Option<(String, u64)> = None;
    // Workflow workload: the step job this process holds (its claim).
    let mut held_step: Option<Value> = None;
    while !*stop.borrow() {
        let d = mean_delay.mul_f64(rng.gen_range(0.0..2.0));
        tokio::time::sleep(d).await;
        if *stop.borrow() {
            break;
        }
        let node = {
            let l = live.read().unwrap_or_else(|p| p.into_inner());
            match l.choose(&mut rng) {
                Some(&n) => n,
                None => continue,
            }
        };
        // A held job is completed on its own or, half of the time, inside
        // the next claim (a settlement), so both paths meet the faults.
        let req = match (held.take(), held_step.take()) {
            (Some((job, token)), _) if rng.gen_bool(0.5) => Request::Settle { job, token },
            (Some((job, token)), _) => Request::Complete { job, token },
            (None, Some(claimed)) => Request::CompleteStep { claimed },
            (None, None) => gen.next(&mut rng),
        };
        let (kind, value) = invoke_and_complete(&client, &rec, &req, process, node).await;
        if let (Request::ClaimStep, OpType::Ok) = (&req, kind) {
            held_step = Some(value.clone());
        }
        if let (Request::Claim, OpType::Ok) = (&req, kind) {
            if let (Some(job), Some(token)) = (value["job"].as_str(), value["token"].as_u64()) {
                held = Some((job.to_string(), token));
            }
        }
        // The job a settlement's claim took, recorded as a claim of its own
        // (this process's next operation). After an unknown outcome the
        // process retires below and the lease simply expires.
        if let (Request::Settle { .. }, OpType::Ok | OpType::Fail) = (&req, kind) {
            let c = &value["claimed"];
            if let (Some(job), Some(token)) = (c["job"].as_str(), c["token"].as_u64()) {
                let inv = rec.record(Request::Claim.invoke(process, node));
                rec.record(
                    Op::new(process, OpType::Ok, inv.f.clone(), c.clone())
                        .with_node(format!("n{node}")),
                );
                held = Some((job.to_string(), token));
            }
        }
        if kind == OpType::Info {
            held = None;
            held_step = None;
            // Its operation may still be in flight: a process with an
            // unknown outcome never issues another operation.
            process = next_process.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn invoke_and_complete(
    client: &Client,
    rec: &Recorder,
    req: &Request,
    process: u64,
    node: u64,
) -> (OpType, Value) {
    let inv = rec.record(req.invoke(process, node));
    let (kind, value, error) = client.perform(req, node).await;
    let mut done =
        Op::new(process, kind, inv.f.clone(), value.clone()).with_node(format!("n{node}"));
    done.key = inv.key.clone();
    done.error = error;
    rec.record(done);
    (kind, value)
}

/// Reads `req` until it succeeds on some node, for at most `budget`.
async fn final_read(
    client: &Client,
    rec: &Recorder,
    req: Request,
    nodes: &[u64],
    next_process: &AtomicU64,
    budget: Duration,
) -> bool {
    let deadline = Instant::now() + budget;
    let process = next_process.fetch_add(1, Ordering::Relaxed);
    let mut i = 0;
    while Instant::now() < deadline {
        let node = nodes[i % nodes.len()];
        i += 1;
        if invoke_and_complete(client, rec, &req, process, node)
            .await
            .0
            == OpType::Ok
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// Runs one test. Whatever happens (a normal end, an error, a panic,
/// SIGINT/SIGTERM/SIGHUP), every node process it started is killed before
/// it returns, and any `orrery` of this test found still running after the
/// harness's own stops fails the run (`leftover_processes` in
/// `results.json`).
pub async fn run_test(o: TestOpts) -> Result<Outcome> {
    if o.nodes < 1 || o.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    if o.concurrency == 0 || o.rate <= 0.0 {
        bail!("--concurrency and --rate must be positive");
    }
    let seed = o.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut interrupts = Interrupts::watch();
    let store = o.store.clone().unwrap_or_else(default_store);
    let nemesis_name = schedule_name(&o.nemesis);
    let dir = make_test_dir(
        &store,
        &format!("{}-{}", o.workload.name(), nemesis_name.replace(',', "+")),
    )?;
    eprintln!(
        "orrery-jepsen: test directory {} (seed {seed})",
        dir.display()
    );
    let opts = json!({
        "workload": o.workload.name(), "nemesis": nemesis_name, "time_limit": o.time_limit,
        "nodes": o.nodes, "concurrency": o.concurrency,
        "read_consistency": format!("{:?}", o.read_consistency).to_lowercase(),
        "seed": seed, "rate": o.rate, "shards": o.shards, "nemesis_interval": o.nemesis_interval,
        "recovery": o.recovery, "op_timeout_ms": o.op_timeout_ms, "insecure": o.insecure,
    });
    std::fs::write(dir.join("opts.json"), serde_json::to_vec_pretty(&opts)?)?;

    let bin_dir = o.bin_dir.clone().unwrap_or_else(default_bin_dir);
    let mut db = Db::new(bin_dir, dir.clone(), o.nodes, o.shards, o.insecure)?;
    if o.nemesis
        .iter()
        .any(|k| matches!(k, NemesisKind::Clock | NemesisKind::All))
    {
        // Before any node starts: a missing library is not a mid-test surprise.
        db.libfaketime()?;
    }
    if o.nemesis.contains(&NemesisKind::Power) {
        db.use_faultfs()?;
    }
    let procs: Arc<Procs> = db.procs();
    let guard = CleanupOnDrop(&procs);
    let result = tokio::select! {
        r = run_phases(&o, seed, &dir, db) => r,
        sig = interrupts.recv() => Err(anyhow::anyhow!(CouldNotRun(format!("interrupted by {sig}")))),
    };
    // The test's tasks may still run (an interrupted nemesis): `cleanup`
    // first refuses any further start, then kills.
    let cleanup = procs.cleanup();
    // (The guard's own cleanup, now, finds nothing left to do.)
    drop(guard);
    let (leftover_list, leftover_json, cleaned) = cleanup_json(&cleanup);
    let leftover_note = (!cleanup.leftovers.is_empty()).then(|| {
        format!(
            "{} node process(es) of this test were still running after the harness stopped its nodes \
             (it had lost track of them; killed now): {}",
            cleanup.leftovers.len(),
            leftover_list.join("; ")
        )
    });
    if let Some(n) = &leftover_note {
        eprintln!("orrery-jepsen: {n}");
    }
    let mut fin = match result {
        Ok(f) => f,
        Err(e) => {
            let mut notes: Vec<String> = leftover_note.into_iter().collect();
            notes.insert(0, format!("{e:#}"));
            let results = json!({
                "valid": "unknown",
                "workload": o.workload.name(),
                "nemesis": nemesis_name,
                "seed": seed,
                "error": format!("{e:#}"),
                "notes": notes,
                "leftover_processes": leftover_json,
                "processes_cleaned": cleaned,
            });
            let _ = std::fs::write(
                dir.join("results.json"),
                serde_json::to_vec_pretty(&results).unwrap_or_default(),
            );
            return Err(e);
        }
    };
    if let Some(n) = leftover_note {
        // The faults the history records are not the ones that happened.
        fin.notes.push(n);
        if fin.valid == json!(true) {
            fin.valid = json!("unknown");
        }
    }
    // A node that finds, on restart, less in its log than it had made
    // durable and acknowledged (its durability manifest says so) refuses to
    // start: acknowledged data was lost even though no client read could
    // show it (the node serves nothing). That is invalid, not unknown.
    let lost_durable = count_in_node_logs(&dir, "lost durable state");
    if lost_durable > 0 {
        fin.notes.push(format!(
            "{lost_durable} node start(s) refused because the node lost durable state \
             (acknowledged log entries gone after a power cut)"
        ));
        fin.valid = json!(false);
    }
    if let Value::Object(m) = &mut fin.results {
        m.insert("lost_durable_state".into(), json!(lost_durable));
        m.insert("valid".into(), fin.valid.clone());
        m.insert("notes".into(), json!(fin.notes));
        m.insert("leftover_processes".into(), leftover_json);
        m.insert("processes_cleaned".into(), cleaned.clone());
        // Replica moves the placement leaders started (rebalancing onto
        // nodes the membership nemesis added), from the node logs.
        m.insert(
            "rebalance_moves".into(),
            json!(count_in_node_logs(&dir, "rebalance: moving a replica")),
        );
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&fin.results)?,
    )?;
    let outcome = Outcome {
        dir,
        valid: fin.valid,
        leftover_processes: leftover_list,
        processes_cleaned: cleaned == json!(true),
    };
    // Node data stays for inspection unless the run passed.
    if !o.keep_data && outcome.exit_code() == 0 {
        let _ = std::fs::remove_dir_all(outcome.dir.join("data"));
    }
    Ok(outcome)
}

/// Setup, clients and nemesis, heal, final reads, stop, check.
async fn run_phases(o: &TestOpts, seed: u64, dir: &Path, mut db: Db) -> Result<Finished> {
    if let Err(e) = db.setup().await {
        db.stop_all().await;
        return Err(e.context("setting up the cluster"));
    }
    eprintln!("orrery-jepsen: cluster of {} nodes up", o.nodes);
    if o.workload == Workload::Workflow {
        if let Err(e) = db.wait_version(7).await {
            db.stop_all().await;
            return Err(e.context("waiting for cluster version 7 (workflows)"));
        }
    }
    if matches!(o.workload, Workload::Queue | Workload::Workflow) {
        if let Err(e) = db.create_queue().await {
            db.stop_all().await;
            return Err(e.context("creating the test queue"));
        }
    }

    let history_path = dir.join("history.jsonl");
    let rec = Arc::new(Recorder::create(&history_path)?);
    let run_prefix = format!("jepsen/{seed:x}");
    let gen = Arc::new(Generator::new(o.workload, &run_prefix, o.concurrency));
    let client = Arc::new(Client::new(
        Duration::from_millis(o.op_timeout_ms),
        o.read_consistency,
        &run_prefix,
        &db.access,
    )?);
    let live = Arc::new(RwLock::new(db.ids()));
    let next_process = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mean_delay = Duration::from_secs_f64(o.concurrency as f64 / o.rate);

    let mut workers = Vec::new();
    for i in 0..o.concurrency {
        workers.push(tokio::spawn(client_loop(
            gen.clone(),
            client.clone(),
            rec.clone(),
            live.clone(),
            next_process.clone(),
            mean_delay,
            seed.wrapping_add(i as u64 + 1),
            stop_rx.clone(),
        )));
    }
    let mut nemesis = Nemesis::new(
        o.nemesis.clone(),
        db,
        rec.clone(),
        StdRng::seed_from_u64(seed),
        live.clone(),
    );
    let interval = Duration::from_secs(o.nemesis_interval.max(1));
    let nem_stop = stop_rx.clone();
    let mut nem_task = tokio::spawn(async move {
        let r = nemesis.run(interval, nem_stop).await;
        (nemesis, r)
    });

    // The nemesis returns early only when the harness lost control of a
    // node: then the test ends at once (the caller kills every node).
    let early = tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(o.time_limit)) => None,
        r = &mut nem_task => Some(r),
    };
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let joined = match early {
        Some(r) => r,
        None => nem_task.await,
    };
    let (mut nemesis, nem_result) = joined.context("nemesis task")?;
    if let Err(e) = nem_result {
        if is_could_not_run(&e) {
            return Err(e.context("nemesis"));
        }
        eprintln!("orrery-jepsen: nemesis error: {e:#}");
    }
    eprintln!("orrery-jepsen: healing; recovery {} s", o.recovery);
    let healed = match nemesis.heal_all().await {
        Err(e) if is_could_not_run(&e) => return Err(e.context("healing")),
        r => r,
    };
    tokio::time::sleep(Duration::from_secs(o.recovery)).await;

    let nodes = live.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut final_ok = healed.is_ok();
    match o.workload {
        Workload::Register => {
            let keys = gen.keys.lock().unwrap_or_else(|p| p.into_inner()).all();
            for key in keys {
                final_ok &= final_read(
                    &client,
                    &rec,
                    Request::Read { key },
                    &nodes,
                    &next_process,
                    Duration::from_secs(20),
                )
                .await;
            }
        }
        Workload::Set | Workload::Queue | Workload::Workflow => {
            let read = match o.workload {
                Workload::Queue => Request::ReadQueue,
                Workload::Workflow => Request::ReadWorkflows,
                _ => Request::ReadSet,
            };
            final_ok &= final_read(
                &client,
                &rec,
                read,
                &nodes,
                &next_process,
                Duration::from_secs(30),
            )
            .await;
        }
    }
    // Nodes the rebalance nemesis added: did they receive replicas?
    let rebalance = nemesis.rebalance_report(Duration::from_secs(60)).await;
    nemesis.db.stop_all().await;

    let (ops, write_err) = rec.finish();
    eprintln!("orrery-jepsen: {} history records; checking", ops.len());
    let checked = crate::check::check_file(&history_path, o.workload.name())
        .map_err(|e| anyhow::anyhow!("checking {}: {e}", history_path.display()))?;
    let mut valid = checked.get("valid").cloned().unwrap_or(json!("unknown"));
    let mut notes = Vec::new();
    if let Err(e) = &healed {
        notes.push(format!("healing failed: {e:#}"));
    }
    if !final_ok {
        notes.push("some final reads never succeeded: the cluster did not recover".to_string());
        if valid == json!(true) {
            valid = json!("unknown");
        }
    }
    if let Some(e) = write_err {
        notes.push(format!("writing the history failed: {e}"));
        valid = json!("unknown");
    }
    if let Some(r) = &rebalance {
        if r["all_received_replicas"] != json!(true) {
            notes.push(
                "nodes the rebalance nemesis added hold no replica 60 s after healing".to_string(),
            );
            if valid == json!(true) {
                valid = json!("unknown");
            }
        }
    }
    let summary = stats::summarize(&ops);
    if let Err(e) = stats::plot(&ops, &dir.join("latency-raw.png")) {
        notes.push(format!("plot: {e:#}"));
    }
    // `valid`, `notes` and the process fields are filled in by the caller.
    let results = json!({
        "workload": o.workload.name(),
        "nemesis": schedule_name(&o.nemesis),
        "seed": seed,
        "checker": checked,
        "stats": summary,
        "rebalance": rebalance,
    });
    Ok(Finished {
        valid,
        results,
        notes,
    })
}

/// Lines containing `needle` in the node logs (`n*.log`) of a test directory.
fn count_in_node_logs(dir: &std::path::Path, needle: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with('n') && name.ends_with(".log")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| text.lines().filter(|l| l.contains(needle)).count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(valid: Value, leftovers: &[&str], cleaned: bool) -> Outcome {
        Outcome {
            dir: PathBuf::new(),
            valid,
            leftover_processes: leftovers.iter().map(|s| s.to_string()).collect(),
            processes_cleaned: cleaned,
        }
    }

    #[test]
    fn leftover_processes_fail_the_run_whatever_the_verdict() {
        assert_eq!(outcome(json!(true), &[], true).exit_code(), 0);
        assert_eq!(outcome(json!(false), &[], true).exit_code(), 1);
        assert_eq!(outcome(json!("unknown"), &[], true).exit_code(), 1);
        let orphan = ["4242 /t/orrery serve --data-dir /s/x/data/n1"];
        assert_eq!(outcome(json!(true), &orphan, true).exit_code(), 2);
        // An expected-invalid run must not pass because of a leftover.
        assert_eq!(outcome(json!(false), &orphan, true).exit_code(), 2);
        assert_eq!(outcome(json!(true), &[], false).exit_code(), 2);
    }
}
