//! Overload: what a 3-node cluster does when offered more than it can
//! serve. First its capacity is measured closed-loop (PUTs over REST);
//! then PUTs are offered open-loop (at a fixed rate, whatever the answers)
//! at 1×, 2× and 4× that capacity. Per step: offered and served rates, how
//! many were shed (503 `overloaded`) and how fast, how many passed the
//! nodes' request deadline (503 `timeout`), p50/p99 of the served, other
//! errors, and the nodes' peak resident memory.

use crate::cluster::LocalCluster;
use crate::load::{self, CellSpec, Op, Protocol};
use crate::machine::{self, round3};
use crate::{emit, interrupted, node_binary_and_data_root, secs, unix_now};
use anyhow::{anyhow, bail, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct OverloadArgs {
    /// Directory holding the `orrery` binary [default: this executable's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seconds per step.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Closed-loop clients that measure the capacity (too few understate
    /// it: the cluster's group commit serves more clients faster).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Multiples of the capacity offered, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    factors: Vec<f64>,
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Directory in which the temporary data directory is created [default: $TMPDIR or /tmp].
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Keep the data directories and node logs after the run.
    #[arg(long)]
    keep_data: bool,
}

pub async fn run(args: OverloadArgs) -> Result<()> {
    if args.clients == 0 || args.factors.iter().any(|f| *f <= 0.0) {
        bail!("--clients and every --factors value must be positive");
    }
    let step = secs(args.duration, "--duration")?;
    let (bin, data_root) = node_binary_and_data_root(&args.bin_dir, &args.data_root)?;
    let mut cluster = LocalCluster::spawn(&bin, 3, &data_root, args.keep_data)?;
    let result = tokio::select! {
        r = measure(&mut cluster, &args, step) => r,
        _ = interrupted() => Err(anyhow!("interrupted")),
    };
    if result.is_err() {
        eprintln!("node 1 log tail:\n{}", cluster.log_tail(0, 20));
    }
    cluster.shutdown(Duration::from_secs(10));
    result
}

/// Everything one open-loop step saw.
#[derive(Default)]
struct Seen {
    served_ms: Vec<f64>,
    shed_ms: Vec<f64>,
    timed_out: u64,
    other: u64,
    samples: Vec<String>,
}

async fn measure(cluster: &mut LocalCluster, args: &OverloadArgs, step: Duration) -> Result<()> {
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    cluster.form(8, Duration::from_secs(120)).await?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let conns = load::connect_all(
        Protocol::Http,
        &addrs,
        args.clients,
        0,
        Duration::from_secs(30),
    )
    .await?;
    let spec = CellSpec {
        op: Op::Put,
        tag: "capacity".into(),
        warmup: Duration::from_secs(2),
        duration: step,
        ops: None,
        value_bytes: args.value_bytes,
        get_keys: 0,
        op_timeout: Duration::from_secs(30),
    };
    let cap = load::run_cell(conns, &spec).await?;
    let capacity = cap.latencies_ns.len() as f64 / cap.elapsed.as_secs_f64().max(1e-3);
    emit(&json!({
        "bench": "overload", "step": "capacity", "clients": args.clients,
        "ops_per_s": round3(capacity), "p99_ms": cap.pct_ms(0.99).map(round3),
        "errors": cap.errors, "machine": machine::brief(), "at": unix_now(),
    }));
    if capacity < 1.0 {
        bail!("the cluster served under one PUT a second; nothing to overload");
    }
    // Open loop: several clients (HTTP/2 caps the streams of one
    // connection), each request in a task of its own.
    let http: Vec<reqwest::Client> = (0..16)
        .map(|_| {
            crate::access::http()
                .timeout(Duration::from_secs(30))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let pids = cluster.pids();
    for &f in &args.factors {
        let rate = capacity * f;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let value = load::value(args.value_bytes, 7);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        let mut tasks = Vec::new();
        let mut peak_rss = 0u64;
        let mut n = 0u64;
        while start.elapsed() < step {
            let due = start + interval.mul_f64(n as f64);
            tokio::time::sleep_until(due.into()).await;
            let client = http[n as usize % http.len()].clone();
            let url = format!(
                "{}/v1/kv/overload/{n}",
                crate::access::base(&addrs[n as usize % addrs.len()])
            );
            let (seen, value) = (seen.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client.put(url).body(value).send().await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let (status, body) = match r {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                match status {
                    200 => s.served_ms.push(ms),
                    503 if body.contains("\"overloaded\"") => s.shed_ms.push(ms),
                    503 if body.contains("\"timeout\"") => s.timed_out += 1,
                    _ => {
                        s.other += 1;
                        if s.samples.len() < 3 {
                            s.samples.push(format!(
                                "{status}: {}",
                                body.chars().take(160).collect::<String>()
                            ));
                        }
                    }
                }
            }));
            n += 1;
            if n.is_multiple_of(256) {
                peak_rss = peak_rss.max(rss_kib(&pids));
            }
        }
        let offered_for = start.elapsed();
        for t in tasks {
            let _ = t.await;
        }
        peak_rss = peak_rss.max(rss_kib(&pids));
        let mut s = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
        s.served_ms.sort_by(f64::total_cmp);
        s.shed_ms.sort_by(f64::total_cmp);
        emit(&json!({
            "bench": "overload", "step": format!("{f}x"),
            "offered_per_s": round3(n as f64 / offered_for.as_secs_f64()),
            "served_per_s": round3(s.served_ms.len() as f64 / offered_for.as_secs_f64()),
            "served": s.served_ms.len(), "shed": s.shed_ms.len(), "timed_out": s.timed_out, "other_errors": s.other,
            "served_p50_ms": pct(&s.served_ms, 0.5), "served_p99_ms": pct(&s.served_ms, 0.99),
            "shed_p99_ms": pct(&s.shed_ms, 0.99),
            "nodes_peak_rss_mib": round3(peak_rss as f64 / 1024.0),
            "error_samples": s.samples, "machine": machine::brief(), "at": unix_now(),
        }));
    }
    Ok(())
}

fn pct(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(round3(sorted[i]))
}

/// The summed resident memory of `pids`, in KiB (from /proc).
fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}
