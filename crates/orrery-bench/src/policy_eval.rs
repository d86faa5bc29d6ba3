//! The in-process cell of `orrery-bench policies`: Orrery's evaluator
//! alone, no HTTP, no cluster, on the same 20-node graph and inputs as the
//! REST cells. Each run checks its input (JSON to CEL) and evaluates the
//! compiled graph, trace included, as the server does.

use crate::machine::{self, round3};
use anyhow::{anyhow, bail, Result};
use orrery_policy::eval::{check_input, evaluate, NoEffects};
use orrery_policy::graph::{compile, parse_graph, Catalog, Compiled};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest deadline a node allows by default: a preempted thread
/// must not turn into a failed run.
const BUDGET: Duration = Duration::from_millis(orrery_policy::limits::DEFAULT_MAX_DEADLINE_MS);

/// One run; false when it failed (past its deadline on a loaded machine).
fn one(c: &Arc<Compiled>, input: &Value, budget: Duration) -> Result<bool> {
    let v = check_input(c, input).map_err(|e| anyhow!("input: {e}"))?;
    let o = futures::executor::block_on(evaluate(c, v, &NoEffects, budget));
    Ok(o.error.is_none())
}

/// `graph`, parsed and compiled as the server compiles a version.
pub fn compiled(graph: &Value) -> Result<Arc<Compiled>> {
    let g = parse_graph(graph).map_err(|e| anyhow!("graph: {e}"))?;
    compile(&g, &Catalog::default()).map_err(|e| anyhow!("graph: {e}"))
}

/// The output of one run of `c` on `input` (an error when it failed).
#[cfg(feature = "zen")]
pub fn output(c: &Arc<Compiled>, input: &Value) -> Result<Value> {
    let v = check_input(c, input).map_err(|e| anyhow!("input: {e}"))?;
    let o = futures::executor::block_on(evaluate(c, v, &NoEffects, BUDGET));
    match (o.output, o.error) {
        (Some(out), None) => Ok(out),
        (_, e) => bail!("the graph fails on {input}: {e:?}"),
    }
}

fn pct_us(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(round3(sorted[i]))
}

/// Runs/s on one thread (with per-run latency) and on every core, for
/// `duration` each.
pub fn evaluator_cell(graph: &Value, inputs: &[Value], duration: Duration) -> Result<Value> {
    let c = compiled(graph)?;
    let budget = BUDGET;
    for i in inputs.iter().take(100) {
        if !one(&c, i, budget)? {
            bail!("the graph fails on {i}");
        }
    }
    let mut errors = 0usize;

    // One thread: latency per run.
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < duration {
        let t = Instant::now();
        errors += usize::from(!one(&c, &inputs[n % inputs.len()], budget)?);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
    }
    let single = n as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));

    // Every core: rayon over chunks of the inputs until the time is up.
    use rayon::prelude::*;
    let start = Instant::now();
    let mut runs = 0usize;
    while start.elapsed() < duration {
        errors += inputs
            .par_iter()
            .map(|i| one(&c, i, budget).map(|ok| usize::from(!ok)))
            .sum::<Result<usize>>()?;
        runs += inputs.len();
    }
    let all = runs as f64 / start.elapsed().as_secs_f64();
    Ok(json!({
        "bench": "policies",
        "kind": "result",
        "op": "evaluator",
        "engine": "orrery",
        "threads": rayon::current_num_threads(),
        "runs_per_s_1_thread": round3(single),
        "p50_us_1_thread": pct_us(&lat, 0.5),
        "p99_us_1_thread": pct_us(&lat, 0.99),
        "runs_per_s": round3(all),
        "errors": errors,
        "loadavg": machine::loadavg(),
    }))
}
