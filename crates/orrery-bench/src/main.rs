//! `orrery-bench`: benchmarks against a local cluster of real `orrery`
//! processes. Results are JSON lines on stdout (the first one describes the
//! machine and the conditions); progress goes to stderr.
//!
//! ```text
//! orrery-bench kv --duration 5            # gRPC, 1/16/64 clients
//! orrery-bench kv --protocol http --clients 1,8
//! ```

mod access;
mod cluster;
mod jobs;
mod load;
mod machine;
mod overload;
mod policies;
mod policy_eval;
#[cfg(feature = "zen")]
mod policy_zen;
mod scaleout;
mod vectors;
mod vectors_cells;
mod vectors_data;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use cluster::LocalCluster;
use load::{CellSpec, Op, Protocol};
use machine::round3;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(name = "orrery-bench", version, about = "Benchmarks for Orrery")]
struct Cli {
    /// Run the cluster with --insecure (no TLS, no tokens), to measure what
    /// security costs in a paired run; by default it runs as users run it.
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Key-value PUT and linearizable GET throughput and latency on a local
    /// 3-node cluster, for several client counts.
    Kv(KvArgs),
    /// Job-queue enqueue and claim/complete throughput, claim latency
    /// (external workers over REST, a no-op kind).
    Jobs(jobs::JobsArgs),
    /// Policy runs: sync latency/throughput (20-node graph) and batch throughput.
    Policies(policies::PolicyArgs),
    /// Vector collections: load rate, recall@10 vs exact, qps and latency per ef.
    Vectors(vectors::VectorArgs),
    /// Scale-out: nodes added to a loaded cluster; time until they hold
    /// their share of replicas, state received, PUT latency meanwhile.
    Scaleout(scaleout::ScaleoutArgs),
    /// Overload: PUTs offered open-loop at 1x, 2x, 4x the measured
    /// capacity: served vs offered, shed (503 overloaded), p99, memory.
    Overload(overload::OverloadArgs),
}

#[derive(clap::Args)]
struct KvArgs {
    /// Directory holding the `orrery` binary [default: this executable's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seconds measured per (op, clients) cell.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Measure this many operations per cell instead of a fixed time
    /// (still stopped after --max-duration seconds).
    #[arg(long)]
    ops: Option<u64>,
    /// Cap on a cell's measured time with --ops, in seconds.
    #[arg(long, default_value_t = 120.0)]
    max_duration: f64,
    /// Seconds of unmeasured load before each cell's measurement starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent clients (one connection each), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    clients: Vec<usize>,
    /// Operations to measure, comma-separated: put, get.
    #[arg(long = "op", value_delimiter = ',', default_values = ["put", "get"])]
    op: Vec<String>,
    /// Client protocol: the gRPC Kv service (orrery-client) or REST.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// Size of every written value in bytes.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Keys written before the GET cells, which read them at random.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards to create at `cluster init`.
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Client i talks to node (i + offset) % nodes; with 1 client, 0 means
    /// node 1 (which leads every shard after init), 1 means a follower.
    #[arg(long, default_value_t = 0)]
    node_offset: usize,
    /// Directory in which the temporary data directory is created [default: $TMPDIR or /tmp].
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Keep the data directories and node logs after the run.
    #[arg(long)]
    keep_data: bool,
    /// Seconds after which one operation counts as failed.
    #[arg(long, default_value_t = 10.0)]
    op_timeout: f64,
}

/// The `orrery` binary (next to this one unless `--bin-dir` says
/// otherwise) and the directory for node data (created if missing).
pub(crate) fn node_binary_and_data_root(
    bin_dir: &Option<std::path::PathBuf>,
    data_root: &Option<std::path::PathBuf>,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let bin_dir = match bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .map(|p| p.to_path_buf())
            .ok_or_else(|| anyhow!("cannot tell this executable's directory; pass --bin-dir"))?,
    };
    let data_root = data_root.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&data_root)
        .with_context(|| format!("creating {}", data_root.display()))?;
    Ok((bin_dir.join("orrery"), data_root))
}

pub(crate) fn secs(s: f64, what: &str) -> Result<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        bail!("{what} must be a non-negative number of seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn emit(v: &Value) {
    println!("{v}");
}

fn opt3(x: Option<f64>) -> Value {
    x.map(round3).map(Value::from).unwrap_or(Value::Null)
}

pub(crate) async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn kv(args: KvArgs) -> Result<()> {
    let duration = secs(args.duration, "--duration")?;
    let max_duration = secs(args.max_duration, "--max-duration")?;
    let warmup = secs(args.warmup, "--warmup")?;
    let op_timeout = secs(args.op_timeout, "--op-timeout")?;
    if args.ops.is_none() && duration.is_zero() {
        bail!("--duration must be positive");
    }
    if args.nodes == 0 || args.clients.contains(&0) || args.value_bytes == 0 {
        bail!("--nodes, --clients and --value-bytes must be positive");
    }
    let ops: Vec<Op> = args
        .op
        .iter()
        .map(|o| match o.as_str() {
            "put" => Ok(Op::Put),
            "get" => Ok(Op::Get),
            other => Err(anyhow!("--op takes put and/or get, got {other:?}")),
        })
        .collect::<Result<_>>()?;
    let (bin, data_root) = node_binary_and_data_root(&args.bin_dir, &args.data_root)?;

    eprintln!("measuring fsync latency in {} ...", data_root.display());
    let fsync = machine::fsync_probe(&data_root, 100);

    eprintln!("starting {} nodes from {} ...", args.nodes, bin.display());
    let mut cluster = LocalCluster::spawn(&bin, args.nodes, &data_root, args.keep_data)?;
    let result = tokio::select! {
        r = run_kv(&mut cluster, &args, &ops, fsync, &bin, duration, max_duration, warmup, op_timeout) => r,
        _ = interrupted() => Err(anyhow!("interrupted")),
    };
    if result.is_err() {
        for i in 0..cluster.nodes.len() {
            eprintln!(
                "--- node {} log (tail) ---\n{}",
                cluster.nodes[i].id,
                cluster.log_tail(i, 15)
            );
        }
    }
    // Server-side trouble shows in the logs even when every request succeeded.
    for (id, count, lines) in cluster.log_problems(5) {
        if count > 0 {
            eprintln!("node {id}: {count} WARN/ERROR log lines, first ones:");
            for l in lines {
                eprintln!("  {l}");
            }
        }
    }
    eprintln!("stopping nodes ...");
    for line in cluster.shutdown(Duration::from_secs(15)) {
        eprintln!("  {line}");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_kv(
    cluster: &mut LocalCluster,
    args: &KvArgs,
    ops: &[Op],
    fsync: Value,
    bin: &std::path::Path,
    duration: Duration,
    max_duration: Duration,
    warmup: Duration,
    op_timeout: Duration,
) -> Result<()> {
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    eprintln!("forming the cluster ({} shards) ...", args.shards);
    cluster.form(args.shards, Duration::from_secs(180)).await?;
    let leaders = cluster.shard_leaders().await.ok();
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let version = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let http = crate::access::http()
        .timeout(Duration::from_secs(5))
        .build()?;

    emit(&json!({
        "bench": "kv",
        "kind": "conditions",
        "time_unix": unix_now(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "orrery": version,
        "protocol": args.protocol.name(),
        "nodes": args.nodes,
        "shards": args.shards,
        "shard_leaders": leaders,
        "value_bytes": args.value_bytes,
        "clients": args.clients,
        "ops": ops.iter().map(|o| o.name()).collect::<Vec<_>>(),
        "duration_s": if args.ops.is_some() { Value::Null } else { json!(duration.as_secs_f64()) },
        "ops_per_cell": args.ops,
        "warmup_s": warmup.as_secs_f64(),
        "get_keys": args.keys,
        "node_offset": args.node_offset,
        "machine": machine::full(),
        "data_dir": machine::filesystem_of(cluster.root()),
        "fsync_probe": fsync,
    }));

    if ops.contains(&Op::Get) {
        eprintln!("writing {} keys for the GET cells ...", args.keys);
        let conns = load::connect_all(
            args.protocol,
            &addrs,
            16.min(args.keys.max(1)),
            0,
            op_timeout,
        )
        .await?;
        load::preload(conns, args.keys, args.value_bytes).await?;
    }

    for &clients in &args.clients {
        for &op in ops {
            cluster.check_alive()?;
            let conns =
                load::connect_all(args.protocol, &addrs, clients, args.node_offset, op_timeout)
                    .await?;
            let mut per_node = vec![0usize; addrs.len()];
            for (node, _) in &conns {
                per_node[*node] += 1;
            }
            let spec = CellSpec {
                op,
                tag: format!("c{clients}"),
                warmup,
                duration: if args.ops.is_some() {
                    max_duration
                } else {
                    duration
                },
                ops: args.ops,
                value_bytes: args.value_bytes,
                get_keys: args.keys,
                op_timeout,
            };
            eprintln!(
                "{} x{clients} ({}): {} ...",
                op.name(),
                args.protocol.name(),
                match args.ops {
                    Some(n) => format!("{n} ops"),
                    None => format!("{:.1} s", duration.as_secs_f64()),
                }
            );
            let fwd_before = cluster.forwarded_total(&http).await;
            let r = load::run_cell(conns, &spec).await?;
            let fwd_after = cluster.forwarded_total(&http).await;
            let forwarded_frac = match (fwd_before, fwd_after) {
                (Some(a), Some(b)) if r.attempts > 0 => {
                    json!(round3(b.saturating_sub(a) as f64 / r.attempts as f64))
                }
                _ => Value::Null,
            };
            let n = r.latencies_ns.len() as u64;
            let el = r.elapsed.as_secs_f64();
            let line = json!({
                "bench": "kv",
                "op": op.name(),
                "protocol": args.protocol.name(),
                "clients": clients,
                "value_bytes": args.value_bytes,
                "ops": n,
                "duration_s": round3(el),
                "ops_per_s": if el > 0.0 { round3(n as f64 / el) } else { 0.0 },
                "p50_ms": opt3(r.pct_ms(0.50)),
                "p90_ms": opt3(r.pct_ms(0.90)),
                "p99_ms": opt3(r.pct_ms(0.99)),
                "max_ms": opt3(r.pct_ms(1.0)),
                "mean_ms": opt3(r.mean_ms()),
                "errors": r.errors,
                "warmup_errors": r.warmup_errors,
                "error_samples": r.error_samples,
                "ops_per_s_by_second": r.per_second,
                "clients_per_node": per_node,
                "forwarded_frac": forwarded_frac,
                "loadavg_1m": machine::loadavg().map(|l| l[0]),
                "machine": machine::brief(),
            });
            emit(&line);
            eprintln!(
                "  {:.0} ops/s, p50 {} ms, p99 {} ms, {} errors",
                line["ops_per_s"].as_f64().unwrap_or(0.0),
                line["p50_ms"],
                line["p99_ms"],
                r.errors
            );
        }
    }
    Ok(())
}

// The client shares the cores with the nodes it measures; the same
// allocator as the node keeps its own overhead down.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    access::configure(cli.insecure);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Kv(args) => kv(args).await,
            Cmd::Jobs(args) => jobs::run(args).await,
            Cmd::Policies(args) => policies::policies(args).await,
            Cmd::Vectors(args) => vectors::run(args).await,
            Cmd::Scaleout(args) => scaleout::run(args).await,
            Cmd::Overload(args) => overload::run(args).await,
        }
    });
    // Workers left behind by an interrupted cell must not outlive the run.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
