//! `orrery-bench vectors`: load a clustered dataset into a vector
//! collection on a local cluster, then sweep ef: recall@10 against exact
//! search, queries/s and latency for several client counts (REST).

use crate::cluster::LocalCluster;
use crate::machine::{self, round3};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct VectorArgs {
    /// Directory holding the `orrery` binary [default: this executable's directory].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Points to load.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Queries per (ef, clients) cell; recall uses the first 100.
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 32, 64, 128, 256])]
    pub ef: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    pub clients: Vec<usize>,
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    /// Points per upsert request.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Write the dataset as little-endian f32 files `base.f32` and
    /// `queries.f32` here (for the single-process baseline).
    #[arg(long)]
    pub dump: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

/// xorshift64*: the dataset is a pure function of the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// `n` points around 100 centres (and queries from the same distribution).
pub fn clustered(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut c = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f32>> = (0..100)
        .map(|_| (0..dim).map(|_| c.next()).collect())
        .collect();
    let mut r = Rng(seed.max(1));
    (0..n)
        .map(|i| {
            centres[i % 100]
                .iter()
                .map(|x| x + 0.3 * r.next())
                .collect()
        })
        .collect()
}

fn dump(path: &Path, data: &[Vec<f32>]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| path.display().to_string())?,
    );
    for v in data {
        for x in v {
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
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

fn ids(v: &Value) -> Vec<u64> {
    v["result"]
        .as_array()
        .map(|a| a.iter().filter_map(|h| h["id"].as_u64()).collect())
        .unwrap_or_default()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(args: VectorArgs) -> Result<()> {
    if args.n == 0 || args.dim == 0 || args.queries == 0 || args.batch == 0 || args.batch > 10_000 {
        bail!("--n, --dim, --queries must be positive and --batch 1..=10000");
    }
    let (bin, data_root) = crate::node_binary_and_data_root(&args.bin_dir, &args.data_root)?;
    eprintln!("generating {} x {} clustered vectors ...", args.n, args.dim);
    let base = clustered(args.n, args.dim, args.seed);
    let queries = clustered(args.queries, args.dim, args.seed + 1);
    if let Some(d) = &args.dump {
        std::fs::create_dir_all(d)?;
        dump(&d.join("base.f32"), &base)?;
        dump(&d.join("queries.f32"), &queries)?;
    }
    let mut cluster = LocalCluster::spawn(&bin, args.nodes, &data_root, false)?;
    let r = measure(&mut cluster, &args, base, queries).await;
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

async fn measure(
    cluster: &mut LocalCluster,
    args: &VectorArgs,
    base: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
) -> Result<()> {
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    cluster.form(args.shards, Duration::from_secs(120)).await?;
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| crate::access::base(&n.addr))
        .collect();
    let http = crate::access::http_client()?;
    println!(
        "{}",
        json!({"bench": "vectors", "machine": machine::brief(), "nodes": args.nodes, "shards": args.shards,
               "n": args.n, "dim": args.dim, "metric": "l2", "m": args.m, "ef_construction": args.ef_construction,
               "protocol": "http", "build": if cfg!(debug_assertions) { "debug" } else { "release" }})
    );
    post(&http, &format!("{}/v1/collections", urls[0]),
        &json!({"name": "bench", "dim": args.dim, "metric": "l2", "m": args.m, "ef_construction": args.ef_construction})).await?;

    eprintln!("loading ...");
    let start = Instant::now();
    for (b, chunk) in base.chunks(args.batch).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| json!({"id": b * args.batch + j, "vector": v}))
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
        eprint!(
            "\r  {} / {}",
            (b + 1) * args.batch.min(chunk.len().max(1)),
            args.n
        );
    }
    let load_s = start.elapsed().as_secs_f64();
    eprintln!();
    // Indexing continues after the writes return; measure until ready.
    loop {
        let v: Value = http
            .get(format!("{}/v1/collections/bench", urls[0]))
            .send()
            .await?
            .json()
            .await?;
        let ready = v["shard_states"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["index"] == "ready"));
        if ready {
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("indexes not ready after an hour: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let indexed_s = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"phase": "load", "points": args.n, "load_s": round3(load_s),
        "points_per_s": round3(args.n as f64 / load_s), "indexed_s": round3(indexed_s)})
    );

    eprintln!("exact ground truth ...");
    let nrecall = queries.len().min(100);
    let mut truth = Vec::new();
    for q in &queries[..nrecall] {
        let v = post(
            &http,
            &format!("{}/v1/collections/bench/search", urls[0]),
            &json!({"vector": q, "k": 10, "exact": true, "with_payload": false}),
        )
        .await?;
        truth.push(ids(&v).into_iter().collect::<HashSet<u64>>());
    }
    let queries = Arc::new(queries);
    for &ef in &args.ef {
        let mut hit = 0;
        for (q, t) in queries.iter().zip(&truth) {
            let v = post(
                &http,
                &format!("{}/v1/collections/bench/search", urls[0]),
                &json!({"vector": q, "k": 10, "ef": ef, "with_payload": false}),
            )
            .await?;
            hit += ids(&v).iter().filter(|i| t.contains(i)).count();
        }
        let recall = hit as f64 / (nrecall * 10) as f64;
        for &clients in &args.clients {
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let (http, queries) = (http.clone(), queries.clone());
                let url = format!("{}/v1/collections/bench/search", urls[c % urls.len()]);
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = c;
                    while i < queries.len() {
                        let s = Instant::now();
                        post(&http, &url, &json!({"vector": queries[i], "k": 10, "ef": ef, "with_payload": false})).await?;
                        lat.push(s.elapsed().as_secs_f64() * 1000.0);
                        i += clients;
                    }
                    Ok::<_, anyhow::Error>(lat)
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await??);
            }
            let secs = t0.elapsed().as_secs_f64();
            lat.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{}",
                json!({"phase": "search", "ef": ef, "clients": clients, "recall_at_10": round3(recall),
                "queries": lat.len(), "qps": round3(lat.len() as f64 / secs),
                "p50_ms": round3(pct(&lat, 0.5)), "p99_ms": round3(pct(&lat, 0.99))})
            );
        }
    }
    Ok(())
}
