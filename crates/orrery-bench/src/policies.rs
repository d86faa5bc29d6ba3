//! `orrery-bench policies`: the evaluator alone, in process (see
//! [`crate::policy_eval`]); then, over REST against a local cluster, sync
//! run latency and throughput for a 20-node graph without external
//! lookups next to a KV PUT measured in the same run, and batch
//! evaluation throughput.

use crate::cluster::LocalCluster;
use crate::load::{Conn, Protocol};
use crate::machine::{self, round3};
use crate::{emit, interrupted, secs, unix_now};
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Directory holding the `orrery` binary [default: this executable's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seconds measured per client count.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    clients: Vec<usize>,
    /// Inputs per batch request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Batch requests measured.
    #[arg(long, default_value_t = 5)]
    batches: usize,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Directory in which the temporary data directory is created [default: $TMPDIR or /tmp].
    #[arg(long)]
    data_root: Option<PathBuf>,
    #[arg(long)]
    keep_data: bool,
    /// Only the in-process evaluator cell: no cluster.
    #[arg(long)]
    evaluator_only: bool,
}

/// input -> 16 transforms -> branch -> 2 outputs: 20 nodes.
pub fn graph() -> Value {
    let mut nodes = vec![
        json!({"id": "in", "type": "input", "config": {"fields": {"income": "number", "debt": "number", "age": "integer", "customer": "string"}}}),
    ];
    let mut edges = Vec::new();
    let mut prev = "in".to_string();
    for i in 0..16 {
        let id = format!("t{i}");
        let expr = if i == 0 {
            "input.debt / input.income".to_string()
        } else {
            format!("x{} * 1.01 + (input.age > 30 ? 0.01 : 0.02)", i - 1)
        };
        nodes.push(
            json!({"id": id, "type": "transform", "config": {"assign": {format!("x{i}"): expr}}}),
        );
        edges.push(json!({"from": prev, "to": id}));
        prev = id;
    }
    nodes.push(json!({"id": "br", "type": "branch"}));
    nodes.push(json!({"id": "deny", "type": "output", "config": {"fields": {"decision": "'deny'", "score": "x15"}}}));
    nodes.push(json!({"id": "approve", "type": "output", "config": {"fields": {"decision": "'approve'", "score": "x15"}}}));
    edges.push(json!({"from": prev, "to": "br"}));
    edges.push(json!({"from": "br", "to": "deny", "when": "x15 > 0.9 && input.customer != 'vip'"}));
    edges.push(json!({"from": "br", "to": "approve"}));
    json!({"nodes": nodes, "edges": edges})
}

pub fn input(i: usize) -> Value {
    json!({"income": 1000 + (i % 977), "debt": (i * 37) % 1500, "age": 18 + (i % 60), "customer": format!("c{i}")})
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let r = http.post(url).json(body).send().await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("POST {url}: {status} {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

fn pct(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(round3(sorted[i]))
}

/// PUT latencies in ms, sorted, of 256-byte values written one at a time
/// for `duration` over REST to the node at `addr` (the KV benchmark's HTTP
/// client, [`crate::load::Conn`]).
async fn kv_put_latencies(addr: &str, duration: Duration) -> Result<Vec<f64>> {
    let mut conn = Conn::connect(Protocol::Http, addr, Duration::from_secs(60)).await?;
    let value = vec![b'x'; 256];
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < duration {
        let t = Instant::now();
        conn.put(&format!("bench-policies-{i}"), &value).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        i += 1;
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

/// GET latencies in ms, sorted, of `url`, one at a time for `duration`.
async fn get_latencies(http: &reqwest::Client, url: &str, duration: Duration) -> Result<Vec<f64>> {
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        let r = http.get(url).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!("GET {url}: {status} {}", String::from_utf8_lossy(&body));
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

/// The anchor: zen-engine on the equivalent graph, checked to give
/// Orrery's outputs on every input before it is timed. Built only with
/// the `zen` feature (`scripts/bench-policies.sh` enables it): zen-engine
/// brings a JavaScript engine and swc, minutes of build that the test
/// suite does not need.
#[cfg(feature = "zen")]
fn anchor(inputs: &[Value], duration: Duration) -> Result<()> {
    let zen = crate::policy_zen::decision()?;
    let c = crate::policy_eval::compiled(&graph())?;
    let outputs = inputs
        .iter()
        .map(|i| crate::policy_eval::output(&c, i))
        .collect::<Result<Vec<_>>>()?;
    crate::policy_zen::check_equivalent(&zen, inputs, &outputs)?;
    eprintln!(
        "zen-engine (same outputs on all {} inputs) ...",
        inputs.len()
    );
    for trace in [false, true] {
        emit(&crate::policy_zen::zen_cell(&zen, inputs, duration, trace)?);
    }
    Ok(())
}

#[cfg(not(feature = "zen"))]
fn anchor(_inputs: &[Value], _duration: Duration) -> Result<()> {
    eprintln!(
        "zen-engine anchor not built: build orrery-bench with --features zen (scripts/bench-policies.sh does)"
    );
    Ok(())
}

pub async fn policies(args: PolicyArgs) -> Result<()> {
    let duration = secs(args.duration, "--duration")?;
    if duration.is_zero() || args.clients.contains(&0) || args.nodes == 0 || args.batch == 0 {
        bail!("--duration, --clients, --nodes and --batch must be positive");
    }
    eprintln!("evaluator alone, in process, {duration:?} per cell ...");
    let inputs: Vec<Value> = (0..args.batch).map(input).collect();
    emit(&crate::policy_eval::evaluator_cell(
        &graph(),
        &inputs,
        duration,
    )?);
    anchor(&inputs, duration)?;
    if args.evaluator_only {
        return Ok(());
    }
    let (bin, data_root) = crate::node_binary_and_data_root(&args.bin_dir, &args.data_root)?;
    eprintln!("starting {} nodes from {} ...", args.nodes, bin.display());
    let mut cluster = LocalCluster::spawn(&bin, args.nodes, &data_root, args.keep_data)?;
    let result = tokio::select! {
        r = run(&mut cluster, &args, duration) => r,
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
    eprintln!("stopping nodes ...");
    for line in cluster.shutdown(Duration::from_secs(15)) {
        eprintln!("  {line}");
    }
    result
}

async fn run(cluster: &mut LocalCluster, args: &PolicyArgs, duration: Duration) -> Result<()> {
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    eprintln!("forming the cluster ({} shards) ...", args.shards);
    cluster.form(args.shards, Duration::from_secs(180)).await?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let http = crate::access::http()
        .timeout(Duration::from_secs(60))
        .build()?;
    let base = crate::access::base(&addrs[0]);
    let p = post(
        &http,
        &format!("{base}/v1/policies"),
        &json!({"name": "bench"}),
    )
    .await?;
    let id = p["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no policy id"))?
        .to_string();
    post(
        &http,
        &format!("{base}/v1/policies/{id}/versions"),
        &json!({"graph": graph()}),
    )
    .await?;
    emit(&json!({
        "bench": "policies",
        "kind": "conditions",
        "time_unix": unix_now(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "nodes": args.nodes,
        "shards": args.shards,
        "graph_nodes": graph()["nodes"].as_array().map(|a| a.len()),
        "protocol": "http",
        "clients": args.clients,
        "duration_s": duration.as_secs_f64(),
        "batch": args.batch,
        "machine": machine::full(),
    }));

    // The reference for a sync run: one replicated write with one client,
    // as a run is one evaluation plus one replicated write of its record.
    eprintln!("KV PUT, 1 client, {duration:?} ...");
    let lat = kv_put_latencies(&addrs[0], duration).await?;
    emit(&json!({
        "bench": "policies",
        "kind": "result",
        "op": "kv_put",
        "clients": 1,
        "puts": lat.len(),
        "p50_ms": pct(&lat, 0.5),
        "p99_ms": pct(&lat, 0.99),
        "loadavg": machine::loadavg(),
    }));

    // What a sync run reads before it evaluates: the policy (its
    // allocation), as `GET /v1/policies/{id}` reads it.
    eprintln!("policy GET, 1 client, {duration:?} ...");
    let lat = get_latencies(&http, &format!("{base}/v1/policies/{id}"), duration).await?;
    emit(&json!({
        "bench": "policies",
        "kind": "result",
        "op": "policy_get",
        "clients": 1,
        "gets": lat.len(),
        "p50_ms": pct(&lat, 0.5),
        "p99_ms": pct(&lat, 0.99),
        "loadavg": machine::loadavg(),
    }));

    for &clients in &args.clients {
        cluster.check_alive()?;
        eprintln!("sync runs, {clients} clients, {duration:?} ...");
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = Vec::new();
        for c in 0..clients {
            let http = http.clone();
            let url = format!(
                "{}/v1/policies/{id}/runs",
                crate::access::base(&addrs[c % addrs.len()])
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut i = c * 1_000_000;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match post(&http, &url, &json!({"input": input(i)})).await {
                        Ok(v) if v["status"] == "succeeded" => {
                            lat.push(t.elapsed().as_secs_f64() * 1e3)
                        }
                        _ => errors += 1,
                    }
                    i += 1;
                }
                (lat, errors)
            }));
        }
        let mut lat = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await?;
            lat.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.total_cmp(b));
        emit(&json!({
            "bench": "policies",
            "kind": "result",
            "op": "sync_run",
            "clients": clients,
            "runs": lat.len(),
            "errors": errors,
            "seconds": round3(elapsed),
            "runs_per_s": round3(lat.len() as f64 / elapsed),
            "p50_ms": pct(&lat, 0.5),
            "p99_ms": pct(&lat, 0.99),
            "loadavg": machine::loadavg(),
        }));
    }

    eprintln!(
        "batch evaluation, {} x {} inputs ...",
        args.batches, args.batch
    );
    let inputs: Vec<Value> = (0..args.batch).map(input).collect();
    let body = json!({"inputs": inputs});
    let url = format!("{base}/v1/policies/{id}/runs/batch");
    post(&http, &url, &body).await?; // warm-up: compiles and caches the version
    let mut times = Vec::new();
    for _ in 0..args.batches {
        let t = Instant::now();
        let r = post(&http, &url, &body).await?;
        let n = r["results"].as_array().map(|a| a.len()).unwrap_or(0);
        if n != args.batch {
            bail!("batch returned {n} results for {} inputs", args.batch);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    emit(&json!({
        "bench": "policies",
        "kind": "result",
        "op": "batch",
        "inputs_per_request": args.batch,
        "requests": args.batches,
        "median_request_s": round3(median),
        "runs_per_s": round3(args.batch as f64 / median),
        "loadavg": machine::loadavg(),
    }));
    Ok(())
}
