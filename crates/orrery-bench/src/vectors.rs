//! `orrery-bench vectors`: load a data set into a vector collection on a
//! local cluster (TLS and tokens, as users run it), wait until the index
//! of every shard is ready on every replica (the build time), measure the
//! nodes' memory per point, then sweep ef: recall@10 against exact ground
//! truth, queries/s and latency for several client counts, linearizable
//! and `consistency=stale`; then filtered cells at 10 % and 1 %
//! selectivity. The data set is real embeddings prepared by
//! `scripts/vectors_data.py` (`--data DIR`), or synthetic clusters
//! (`--synthetic`). See scripts/bench-vectors.sh.

use crate::cluster::LocalCluster;
use crate::machine::{self, round3};
use crate::vectors_cells::{self as cells, Cell, Target};
use crate::vectors_data::{self as data, Dataset};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct VectorArgs {
    /// Directory holding the `orrery` binary [default: this executable's directory].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// A data set written by scripts/vectors_data.py (real embeddings with
    /// cached exact ground truth). Without it, --synthetic is required.
    #[arg(long, conflicts_with = "synthetic")]
    pub data: Option<PathBuf>,
    /// Synthetic clustered vectors (--n x --dim, --queries) instead of --data.
    #[arg(long)]
    pub synthetic: bool,
    /// Points to generate (--synthetic).
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Dimensions (--synthetic).
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Queries (--synthetic; with --data, the file decides). Every cell
    /// runs each query once.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 16, 32, 64, 128, 256])]
    pub ef: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    pub clients: Vec<usize>,
    /// Consistency levels of the sweep: linearizable (the default of the
    /// API) and stale.
    #[arg(long, value_delimiter = ',', default_values = ["linearizable", "stale"])]
    pub consistency: Vec<String>,
    /// ef of the filtered cells.
    #[arg(long, default_value_t = 64)]
    pub filter_ef: usize,
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Shard groups of the cluster (`cluster init`); the collection takes
    /// the API's default shard count (1) unless
    /// --collection-shards is given.
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    #[arg(long)]
    pub collection_shards: Option<u32>,
    /// Points per upsert request.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Write the synthetic set (vectors and unfiltered truth) here, for
    /// the hnswlib baseline.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

pub async fn run(args: VectorArgs) -> Result<()> {
    if args.queries == 0 || args.batch == 0 || args.batch > 10_000 {
        bail!("--queries must be positive and --batch 1..=10000");
    }
    for c in &args.consistency {
        if c != "linearizable" && c != "stale" {
            bail!("--consistency takes linearizable and/or stale, not {c}");
        }
    }
    let (bin, data_root) = crate::node_binary_and_data_root(&args.bin_dir, &args.data_root)?;
    let ds = match (&args.data, args.synthetic) {
        (Some(d), _) => {
            eprintln!("reading {} ...", d.display());
            data::load_dir(d)?
        }
        (None, true) => {
            if args.n == 0 || args.dim == 0 {
                bail!("--n and --dim must be positive");
            }
            eprintln!(
                "generating {} x {} clustered vectors and their exact neighbours ...",
                args.n, args.dim
            );
            data::synthetic(args.n, args.dim, args.queries, args.seed)
        }
        (None, false) => bail!("give --data DIR (scripts/vectors_data.py) or --synthetic"),
    };
    if let Some(d) = &args.dump {
        data::dump(d, &ds)?;
    }
    let mut cluster = LocalCluster::spawn(&bin, args.nodes, &data_root, false)?;
    let r = measure(&mut cluster, &args, &ds).await;
    if r.is_err() {
        for i in 0..cluster.nodes.len() {
            eprintln!(
                "--- node {} log (tail) ---\n{}",
                cluster.nodes[i].id,
                cluster.log_tail(i, 15)
            );
        }
    }
    cluster.shutdown(Duration::from_secs(15));
    r
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let r = http.post(url).json(body).send().await?;
    let s = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !s.is_success() {
        bail!("POST {url}: {s} {v}");
    }
    Ok(v)
}

/// Resident memory of a process in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn measure(cluster: &mut LocalCluster, args: &VectorArgs, ds: &Dataset) -> Result<()> {
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    cluster.form(args.shards, Duration::from_secs(120)).await?;
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| crate::access::base(&n.addr))
        .collect();
    let pids = cluster.pids();
    let http = crate::access::http_client()?;
    let n = ds.base.len();
    let mut create = json!({"name": "bench", "dim": ds.dim, "metric": "l2", "m": args.m,
                            "ef_construction": args.ef_construction});
    if let Some(s) = args.collection_shards {
        create["shards"] = json!(s);
    }
    let def = post(&http, &format!("{}/v1/collections", urls[0]), &create).await?;
    println!(
        "{}",
        json!({"bench": "vectors", "machine": machine::full(), "source": ds.source, "nodes": args.nodes,
               "cluster_shards": args.shards, "collection_shards": def["shards"], "n": n, "dim": ds.dim,
               "queries": ds.queries.len(), "metric": "l2", "m": args.m, "ef_construction": args.ef_construction,
               "protocol": "http", "shard_leaders": cluster.shard_leaders().await.ok(),
               "build": if cfg!(debug_assertions) { "debug" } else { "release" }})
    );
    let rss0: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();

    eprintln!("loading {n} points ...");
    let cpu_of = |pids: &[u32]| -> Vec<f64> {
        pids.iter()
            .map(|p| crate::machine::cpu_seconds(&p.to_string()).unwrap_or(0.0))
            .collect()
    };
    let cpu_before = cpu_of(&pids);
    let start = Instant::now();
    for (b, chunk) in ds.base.chunks(args.batch).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let id = b * args.batch + j;
                json!({"id": id, "vector": v, "payload": {"bucket": id % 100}})
            })
            .collect();
        let url = format!("{}/v1/collections/bench/points", urls[b % urls.len()]);
        let r = http
            .put(&url)
            .json(&json!({"points": points}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "upsert batch {b}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        eprint!("\r  {} / {n}", b * args.batch + chunk.len());
    }
    let load_s = start.elapsed().as_secs_f64();
    eprintln!();
    // Indexing continues after the writes return: each node reports its
    // own replicas' index states; wait until all are ready on every node.
    let mut ready_s: Vec<Option<f64>> = vec![None; urls.len()];
    let mut last = Value::Null;
    while ready_s.iter().any(Option::is_none) {
        for (i, url) in urls.iter().enumerate() {
            if ready_s[i].is_some() {
                continue;
            }
            let v: Value = http
                .get(format!("{url}/v1/collections/bench"))
                .send()
                .await?
                .json()
                .await?;
            let states = v["shard_states"].as_array().cloned().unwrap_or_default();
            let ready = !states.is_empty()
                && v["points"].as_u64() == Some(n as u64)
                && states.iter().all(|s| {
                    s["index"] == "ready" && s["indexed_entries"].as_u64() >= s["points"].as_u64()
                });
            if ready {
                ready_s[i] = Some(start.elapsed().as_secs_f64());
            }
            last = v;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("indexes not ready after an hour: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_s: Vec<f64> = ready_s.into_iter().flatten().collect();
    let rss1: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
    // CPU each node spent from the first write to index ready (receiving,
    // replicating, applying and indexing): on a machine where the nodes
    // share the cores, the build's cost that the sharing does not blur.
    let build_cpu_s: Vec<f64> = cpu_of(&pids)
        .iter()
        .zip(&cpu_before)
        .map(|(a, b)| round3(a - b))
        .collect();
    let mean_cpu = build_cpu_s.iter().sum::<f64>() / build_cpu_s.len().max(1) as f64;
    let indexed_s = ready_s.iter().copied().fold(0.0, f64::max);
    let bytes_per_point: Vec<f64> = rss0
        .iter()
        .zip(&rss1)
        .map(|(a, b)| round3((b.saturating_sub(*a) * 1024) as f64 / n as f64))
        .collect();
    // Who leads what: a linearizable search reads the catalog on the
    // placement leader and each collection shard on its leader, so whether
    // client 0's node (node 1) leads them decides how many forwards a
    // one-client search makes.
    let status: Value = http
        .get(format!("{}/v1/cluster/status", urls[0]))
        .send()
        .await?
        .json()
        .await?;
    let leaders: Vec<Value> = status["groups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|g| json!({"group": g["name"], "leader": g["leader"]}))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("leaders: {}", Value::Array(leaders.clone()));
    // Every node holds a replica of every shard of the collection (3
    // nodes, replication 3), so each builds indexes over all n points.
    println!(
        "{}",
        json!({"phase": "load", "points": n, "load_s": round3(load_s),
               "points_per_s": round3(n as f64 / load_s), "indexed_s": round3(indexed_s),
               "ready_s_per_node": ready_s.iter().map(|s| round3(*s)).collect::<Vec<_>>(),
               "inserts_per_s_per_node": round3(n as f64 / indexed_s),
               "build_cpu_s_per_node": build_cpu_s,
               "inserts_per_node_cpu_s": round3(n as f64 / mean_cpu.max(1e-9)),
               "rss_before_mib": rss0.iter().map(|k| k / 1024).collect::<Vec<_>>(),
               "rss_after_mib": rss1.iter().map(|k| k / 1024).collect::<Vec<_>>(),
               "rss_bytes_per_point_per_node": bytes_per_point, "leaders": leaders})
    );

    let target = Target {
        http: &http,
        urls: &urls,
        collection: "bench",
        pids: &pids,
    };
    // Warm up: connections (TLS handshakes) for every client, caches.
    let warm = Cell {
        ef: args.ef[0],
        clients: args.clients.iter().copied().max().unwrap_or(1),
        consistency: None,
        filter: None,
    };
    let nwarm = ds.queries.len().min(200);
    cells::run(&target, &warm, &ds.queries[..nwarm], &ds.truth[..nwarm]).await?;
    for consistency in &args.consistency {
        let c = (consistency == "stale").then_some("stale");
        for &ef in &args.ef {
            for &clients in &args.clients {
                let cell = Cell {
                    ef,
                    clients,
                    consistency: c,
                    filter: None,
                };
                let line = cells::run(&target, &cell, &ds.queries, &ds.truth).await?;
                println!("{line}");
                cluster.check_alive()?;
            }
        }
    }
    for (f, truth) in data::filter_cells().iter().zip(&ds.filtered_truth) {
        for &clients in &args.clients {
            let cell = Cell {
                ef: args.filter_ef,
                clients,
                consistency: None,
                filter: Some((f.name, &f.json)),
            };
            let mut line = cells::run(&target, &cell, &ds.queries, truth).await?;
            line["selectivity"] = json!(f.selectivity);
            println!("{line}");
        }
    }
    let rss2: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
    println!(
        "{}",
        json!({"phase": "end", "rss_after_searches_mib": rss2.iter().map(|k| k / 1024).collect::<Vec<_>>(),
               "loadavg": machine::loadavg()})
    );
    Ok(())
}
