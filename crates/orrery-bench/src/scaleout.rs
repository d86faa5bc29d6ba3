//! Scale-out: how long new nodes take to receive their share of a loaded
//! cluster's replicas (rebalancing), how much state they receive, and what
//! clients see meanwhile (PUT latency before, during and after the moves).

use crate::cluster::LocalCluster;
use crate::load::{self, Conn, Protocol};
use crate::machine::{self, round3};
use crate::{emit, interrupted, node_binary_and_data_root, secs, unix_now};
use anyhow::{anyhow, bail, Result};
use orrery_client::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ScaleoutArgs {
    /// Directory holding the `orrery` binary [default: this executable's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Nodes in the cluster at first.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Nodes added under load.
    #[arg(long, default_value_t = 2)]
    add: usize,
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Keys written before the nodes are added.
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Concurrent PUT clients during the whole run.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of load measured before the nodes are added (and after the
    /// cluster is balanced).
    #[arg(long, default_value_t = 10.0)]
    steady: f64,
    /// Give up if the cluster is not balanced this long after the adds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Directory in which the temporary data directory is created [default: $TMPDIR or /tmp].
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Keep the data directories and node logs after the run.
    #[arg(long)]
    keep_data: bool,
}

/// One PUT: when it ended, how long it took, whether it succeeded.
type Sample = (Instant, u64, bool);

pub async fn run(args: ScaleoutArgs) -> Result<()> {
    if args.nodes == 0 || args.add == 0 || args.clients == 0 || args.value_bytes == 0 {
        bail!("--nodes, --add, --clients and --value-bytes must be positive");
    }
    let steady = secs(args.steady, "--steady")?;
    let timeout = secs(args.timeout, "--timeout")?;
    let (bin, data_root) = node_binary_and_data_root(&args.bin_dir, &args.data_root)?;
    let total = args.nodes + args.add;
    eprintln!("starting {total} nodes from {} ...", bin.display());
    let mut cluster = LocalCluster::spawn(&bin, total, &data_root, args.keep_data)?;
    let result = tokio::select! {
        r = measure(&mut cluster, &args, steady, timeout) => r,
        _ = interrupted() => Err(anyhow!("interrupted")),
    };
    if result.is_err() {
        eprintln!("node 1 log tail:\n{}", cluster.log_tail(0, 20));
    }
    cluster.shutdown(Duration::from_secs(10));
    result
}

async fn measure(
    cluster: &mut LocalCluster,
    args: &ScaleoutArgs,
    steady: Duration,
    timeout: Duration,
) -> Result<()> {
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    eprintln!(
        "forming a {}-node cluster ({} shards) ...",
        args.nodes, args.shards
    );
    cluster
        .form_members(args.shards, args.nodes, Duration::from_secs(180))
        .await?;
    let members: Vec<String> = cluster.nodes[..args.nodes]
        .iter()
        .map(|n| n.addr.clone())
        .collect();
    let op_timeout = Duration::from_secs(10);
    emit(&json!({
        "bench": "scaleout", "kind": "conditions", "time_unix": unix_now(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "nodes": args.nodes, "add": args.add, "shards": args.shards, "keys": args.keys,
        "value_bytes": args.value_bytes, "clients": args.clients,
        "machine": machine::full(), "data_dir": machine::filesystem_of(cluster.root()),
    }));

    eprintln!(
        "writing {} keys of {} bytes ...",
        args.keys, args.value_bytes
    );
    let conns = load::connect_all(Protocol::Grpc, &members, 16, 0, op_timeout).await?;
    load::preload(conns, args.keys, args.value_bytes).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let conns = load::connect_all(Protocol::Grpc, &members, args.clients, 0, op_timeout).await?;
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(w, (_, conn))| {
            tokio::spawn(put_loop(
                conn,
                w,
                args.value_bytes,
                stop.clone(),
                op_timeout,
            ))
        })
        .collect();

    let t0 = Instant::now();
    tokio::time::sleep(steady).await;
    let t_add = Instant::now();
    eprintln!("adding {} nodes under load ...", args.add);
    for i in args.nodes..args.nodes + args.add {
        cluster.add_member(i, Duration::from_secs(120)).await?;
    }
    let mut c = Client::connect_with(&cluster.nodes[0].addr, &crate::access::grpc()).await?;
    let deadline = t_add + timeout;
    let t_done = loop {
        if let Ok(r) = c.rebalance().await {
            if r.balanced && r.moving.is_empty() && !r.paused {
                break Instant::now();
            }
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!("not balanced {timeout:?} after the adds");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let balance_s = (t_done - t_add).as_secs_f64();
    eprintln!("balanced {balance_s:.1} s after the first add");
    tokio::time::sleep(steady).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Sample> = Vec::new();
    let mut error_samples: Vec<String> = Vec::new();
    for w in workers {
        let (s, e) = w.await?;
        samples.extend(s);
        for m in e {
            if error_samples.len() < 5 && !error_samples.contains(&m) {
                error_samples.push(m);
            }
        }
    }

    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let http = crate::access::http()
        .timeout(Duration::from_secs(5))
        .build()?;
    let moves = crate::cluster::metric_totals(&http, &addrs, ["orrery_rebalance_moves_total"])
        .await
        .map(|[m]| m);
    // What the new nodes received: log entries appended (replication) and
    // snapshots installed (when the log was already compacted).
    let (mut log_bytes, mut snapshot_bytes, mut chunks) = (0.0, 0.0, 0.0);
    for a in &addrs[args.nodes..] {
        let text = http
            .get(format!("{}/metrics", crate::access::base(a)))
            .send()
            .await?
            .text()
            .await?;
        log_bytes += sum_metric(&text, "orrery_raft_log_appended_bytes_total{");
        snapshot_bytes += sum_metric(&text, "orrery_raft_snapshot_bytes{");
        chunks += sum_metric(&text, "orrery_peer_install_snapshot_rpcs_total ");
    }
    let mut replicas: BTreeMap<u64, usize> = BTreeMap::new();
    for s in c.shards().await? {
        for r in s.replicas {
            *replicas.entry(r).or_default() += 1;
        }
    }
    let phase = |from: Instant, to: Instant| phase_stats(&samples, from, to);
    emit(&json!({
        "bench": "scaleout", "kind": "result",
        "data_bytes_before": args.keys * args.value_bytes,
        "balanced_after_s": round3(balance_s),
        "moves": moves,
        "new_nodes_received": {"log_bytes": log_bytes, "snapshot_bytes": snapshot_bytes,
                               "snapshot_chunks": chunks},
        "replicas_per_node": replicas,
        "before": phase(t0 + Duration::from_secs(1), t_add),
        "during": phase(t_add, t_done),
        "after": phase(t_done, t_done + steady),
        "error_samples": error_samples,
        "machine_after": machine::brief(),
    }));
    Ok(())
}

/// Sums every sample line of a metric (all label sets) in Prometheus text.
fn sum_metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

async fn put_loop(
    mut conn: Conn,
    w: usize,
    value_bytes: usize,
    stop: Arc<AtomicBool>,
    op_timeout: Duration,
) -> (Vec<Sample>, Vec<String>) {
    let v = load::value(value_bytes, w as u64 + 11);
    let mut out = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("bench/scale/w{w}/{seq}");
        let t = Instant::now();
        let r = tokio::time::timeout(op_timeout, conn.put(&key, &v)).await;
        let done = Instant::now();
        let ok = matches!(r, Ok(Ok(())));
        let msg = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {op_timeout:?}")),
        };
        if let Some(m) = msg {
            if errors.len() < 3 && !errors.contains(&m) {
                errors.push(m);
            }
        }
        out.push((done, (done - t).as_nanos() as u64, ok));
        if !ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (out, errors)
}

/// PUTs that ended in [from, to): count, rate, failures, p50/p99 (ms).
fn phase_stats(samples: &[Sample], from: Instant, to: Instant) -> Value {
    let mut lat: Vec<u64> = Vec::new();
    let mut failed = 0u64;
    for (at, ns, ok) in samples {
        if *at >= from && *at < to {
            if *ok {
                lat.push(*ns);
            } else {
                failed += 1;
            }
        }
    }
    lat.sort_unstable();
    let secs = to.saturating_duration_since(from).as_secs_f64();
    let pct = |q: f64| -> Value {
        if lat.is_empty() {
            return Value::Null;
        }
        let rank = ((lat.len() as f64) * q).ceil() as usize;
        json!(round3(lat[rank.clamp(1, lat.len()) - 1] as f64 / 1e6))
    };
    json!({
        "seconds": round3(secs),
        "ops": lat.len(),
        "ops_per_s": if secs > 0.0 { json!(round3(lat.len() as f64 / secs)) } else { Value::Null },
        "failed": failed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    })
}
