//! One search cell of `orrery-bench vectors`: every query once, spread
//! over `clients` concurrent REST clients (client c talks to node
//! c % nodes), at one ef, consistency and filter. Reports recall@10 over
//! all the queries against the exact truth, queries/s, client-observed
//! p50/p99, the server's own `took_ms` (so the gap says what HTTP, TLS and
//! the client cost) and the CPU time the nodes and this client spent per
//! query (on a machine whose cores the nodes, the client and other work
//! share, CPU per query is the figure the load disturbs least).

use crate::machine::{cpu_seconds, round3};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

pub struct Cell<'a> {
    pub ef: usize,
    pub clients: usize,
    /// `None`: linearizable (the default); `Some("stale")`.
    pub consistency: Option<&'static str>,
    pub filter: Option<(&'a str, &'a Value)>,
}

pub struct Target<'a> {
    pub http: &'a reqwest::Client,
    /// Base URLs of the nodes.
    pub urls: &'a [String],
    pub collection: &'a str,
    /// Node process ids, for their CPU time.
    pub pids: &'a [u32],
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn cpu_total(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| cpu_seconds(&p.to_string()))
        .sum()
}

/// What one client saw: (query index, ids found, latency ms, took_ms).
type Seen = Vec<(usize, Vec<u64>, f64, f64)>;

/// Runs the cell; `truth[i]` are the exact ids for query `i`. Returns
/// the result line.
pub async fn run(
    t: &Target<'_>,
    cell: &Cell<'_>,
    queries: &[Vec<f32>],
    truth: &[Vec<u64>],
) -> Result<Value> {
    // Request bodies are made before the clock starts: the client shares
    // the cores with the nodes, and JSON encoding is not what is measured.
    let bodies: Arc<Vec<String>> = Arc::new(
        queries
            .iter()
            .map(|q| {
                let mut b = json!({"vector": q, "k": 10, "ef": cell.ef, "with_payload": false});
                if let Some((_, f)) = cell.filter {
                    b["filter"] = f.clone();
                }
                b.to_string()
            })
            .collect(),
    );
    let query = match cell.consistency {
        Some(c) => format!("?consistency={c}"),
        None => String::new(),
    };
    let (cpu0, self0) = (cpu_total(t.pids), cpu_seconds("self").unwrap_or(0.0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..cell.clients {
        let (http, bodies) = (t.http.clone(), bodies.clone());
        let url = format!(
            "{}/v1/collections/{}/search{query}",
            t.urls[c % t.urls.len()],
            t.collection
        );
        let clients = cell.clients;
        tasks.push(tokio::spawn(async move {
            let mut seen: Seen = Vec::new();
            let mut i = c;
            while i < bodies.len() {
                let s = Instant::now();
                let r = http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await?;
                let status = r.status();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                let ms = s.elapsed().as_secs_f64() * 1000.0;
                if !status.is_success() {
                    bail!("search: {status} {v}");
                }
                let ids = v["result"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|h| h["id"].as_u64()).collect())
                    .unwrap_or_default();
                seen.push((i, ids, ms, v["took_ms"].as_f64().unwrap_or(f64::NAN)));
                i += clients;
            }
            Ok::<_, anyhow::Error>(seen)
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, self1) = (cpu_total(t.pids), cpu_seconds("self").unwrap_or(0.0));
    let mut hit = 0usize;
    let mut want = 0usize;
    for (i, ids, _, _) in &seen {
        let exact: HashSet<u64> = truth[*i].iter().copied().collect();
        want += exact.len();
        hit += ids.iter().filter(|id| exact.contains(id)).count();
    }
    let mut lat: Vec<f64> = seen.iter().map(|s| s.2).collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let took: Vec<f64> = seen.iter().map(|s| s.3).filter(|x| x.is_finite()).collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let n = seen.len().max(1) as f64;
    let mut line = json!({
        "phase": if cell.filter.is_some() { "filtered" } else { "search" },
        "ef": cell.ef, "clients": cell.clients,
        "consistency": cell.consistency.unwrap_or("linearizable"),
        "recall_at_10": round3(hit as f64 / want.max(1) as f64),
        "queries": seen.len(), "qps": round3(seen.len() as f64 / secs),
        "p50_ms": round3(pct(&lat, 0.5)), "p99_ms": round3(pct(&lat, 0.99)),
        "mean_ms": round3(mean(&lat)), "server_took_ms": round3(mean(&took)),
        "node_cpu_ms_per_query": round3((cpu1 - cpu0) * 1000.0 / n),
        "client_cpu_ms_per_query": round3((self1 - self0) * 1000.0 / n),
    });
    if let Some((name, _)) = cell.filter {
        line["filter"] = json!(name);
    }
    Ok(line)
}
