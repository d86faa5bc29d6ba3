//! The anchor of `orrery-bench policies`: GoRules ZEN (`zen-engine`, the
//! Rust decision engine issue 24 names) evaluating a decision graph
//! equivalent to [`crate::policies::graph`], in the same process, on the
//! same inputs, next to Orrery's evaluator alone.
//!
//! The equivalent graph in ZEN's JDM format: an `inputNode`, 16 chained
//! `expressionNode`s with `passThrough` (so each sees the input fields and
//! the earlier `x`s, as Orrery's transforms see the scope), a `switchNode`
//! whose first statement is the deny edge's condition and whose second
//! (empty) is the default edge, and on each branch an `expressionNode`
//! computing `{decision, score}` (what Orrery's output nodes compute)
//! before an `outputNode`: 22 nodes, as ZEN's outputs only pass data on.
//!
//! ZEN's numbers are decimals (`rust_decimal`), Orrery's CEL numbers are
//! doubles, so scores are compared to 1e-9 relative; decisions exactly.
//! `zen-engine` is a dependency of this benchmark only, never of the server.

use crate::machine::{self, round3};
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use zen_engine::model::GraphContent;
use zen_engine::{Decision, EvaluationOptions, Variable};

/// The JDM graph equivalent to [`crate::policies::graph`].
pub fn graph() -> Value {
    let mut nodes = vec![json!({"id": "in", "name": "in", "type": "inputNode", "content": {}})];
    let mut edges = Vec::new();
    let mut prev = "in".to_string();
    let edge = |edges: &mut Vec<Value>, from: &str, to: &str, handle: Option<&str>| {
        let id = format!("e{}", edges.len());
        edges.push(json!({"id": id, "sourceId": from, "targetId": to, "sourceHandle": handle}));
    };
    for i in 0..16 {
        let id = format!("t{i}");
        let expr = if i == 0 {
            "debt / income".to_string()
        } else {
            format!("x{} * 1.01 + (age > 30 ? 0.01 : 0.02)", i - 1)
        };
        nodes.push(
            json!({"id": id, "name": id, "type": "expressionNode", "content": {
                "passThrough": true,
                "expressions": [{"id": format!("x{i}"), "key": format!("x{i}"), "value": expr}],
            }}),
        );
        edge(&mut edges, prev.as_str(), id.as_str(), None);
        prev = id;
    }
    nodes.push(
        json!({"id": "br", "name": "br", "type": "switchNode", "content": {
            "hitPolicy": "first",
            "statements": [
                {"id": "to-deny", "condition": "x15 > 0.9 and customer != 'vip'"},
                {"id": "to-approve", "condition": ""},
            ],
        }}),
    );
    edge(&mut edges, prev.as_str(), "br", None);
    for (decision, handle) in [("deny", "to-deny"), ("approve", "to-approve")] {
        let fields = format!("{decision}-fields");
        nodes.push(
            json!({"id": fields, "name": fields, "type": "expressionNode", "content": {
                "expressions": [
                    {"id": "d", "key": "decision", "value": format!("'{decision}'")},
                    {"id": "s", "key": "score", "value": "x15"},
                ],
            }}),
        );
        nodes.push(json!({"id": decision, "name": decision, "type": "outputNode", "content": {}}));
        edge(&mut edges, "br", fields.as_str(), Some(handle));
        edge(&mut edges, fields.as_str(), decision, None);
    }
    json!({"nodes": nodes, "edges": edges})
}

/// The graph, parsed and with its expressions compiled once (as Orrery
/// compiles a version once).
pub fn decision() -> Result<Decision> {
    let content: GraphContent =
        serde_json::from_value(graph()).map_err(|e| anyhow!("zen graph: {e}"))?;
    let mut d = Decision::from(content);
    d.compile();
    d.validate().map_err(|e| anyhow!("zen graph: {e}"))?;
    Ok(d)
}

/// One evaluation: JSON input to ZEN's variables, the graph, the result
/// back to JSON. `trace` asks ZEN for its per-node trace, as Orrery's
/// evaluator always records one.
pub fn evaluate(d: &Decision, input: &Value, trace: bool) -> Result<Value> {
    let opts = EvaluationOptions {
        trace,
        ..EvaluationOptions::default()
    };
    let r = futures::executor::block_on(d.evaluate_with_opts(Variable::from(input), opts))
        .map_err(|e| anyhow!("zen: {e:?}"))?;
    Ok(r.result.to_value())
}

/// Whether two outputs `{decision, score}` agree: decisions exactly,
/// scores to 1e-9 relative (decimals against doubles).
pub fn same_output(orrery: &Value, zen: &Value) -> bool {
    let score = |v: &Value| v["score"].as_f64();
    let close = match (score(orrery), score(zen)) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => false,
    };
    close
        && orrery["decision"].is_string()
        && orrery["decision"] == zen["decision"]
        && orrery.as_object().map(|o| o.len()) == Some(2)
        && zen.as_object().map(|o| o.len()) == Some(2)
}

/// Fails unless ZEN's graph gives Orrery's output on every input.
pub fn check_equivalent(d: &Decision, inputs: &[Value], orrery: &[Value]) -> Result<()> {
    for (input, o) in inputs.iter().zip(orrery) {
        let z = evaluate(d, input, false)?;
        if !same_output(o, &z) {
            bail!("zen-engine and Orrery disagree on {input}: orrery {o}, zen {z}");
        }
    }
    Ok(())
}

fn pct_us(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(round3(sorted[i]))
}

/// Runs/s on one thread (with per-run latency) and on every core, for
/// `duration` each, like [`crate::policy_eval::evaluator_cell`].
pub fn zen_cell(d: &Decision, inputs: &[Value], duration: Duration, trace: bool) -> Result<Value> {
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < duration {
        let t = Instant::now();
        evaluate(d, &inputs[n % inputs.len()], trace)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
    }
    let single = n as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));

    use rayon::prelude::*;
    let start = Instant::now();
    let mut runs = 0usize;
    while start.elapsed() < duration {
        inputs
            .par_iter()
            .try_for_each(|i| evaluate(d, i, trace).map(drop))?;
        runs += inputs.len();
    }
    let all = runs as f64 / start.elapsed().as_secs_f64();
    Ok(json!({
        "bench": "policies",
        "kind": "result",
        "op": "evaluator",
        "engine": "zen-engine",
        "engine_version": zen_engine::ENGINE_VERSION,
        "trace": trace,
        "threads": rayon::current_num_threads(),
        "runs_per_s_1_thread": round3(single),
        "p50_us_1_thread": pct_us(&lat, 0.5),
        "p99_us_1_thread": pct_us(&lat, 0.99),
        "runs_per_s": round3(all),
        "errors": 0,
        "loadavg": machine::loadavg(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orrery_outputs(inputs: &[Value]) -> Vec<Value> {
        let c = crate::policy_eval::compiled(&crate::policies::graph()).unwrap();
        inputs
            .iter()
            .map(|i| crate::policy_eval::output(&c, i).unwrap())
            .collect()
    }

    #[test]
    fn zen_graph_gives_orrerys_outputs() {
        let inputs: Vec<Value> = (0..2_000).map(crate::policies::input).collect();
        let orrery = orrery_outputs(&inputs);
        // Both branches are taken, so the switch is exercised both ways.
        for d in ["deny", "approve"] {
            assert!(
                orrery.iter().any(|o| o["decision"] == d),
                "no {d} among the inputs"
            );
        }
        // A vip never gets deny, whatever its score.
        let vip = json!({"income": 1000, "debt": 1400, "age": 20, "customer": "vip"});
        let (vi, vo) = (vec![vip.clone()], orrery_outputs(&[vip]));
        assert_eq!(vo[0]["decision"], "approve");
        let d = decision().unwrap();
        check_equivalent(&d, &inputs, &orrery).unwrap();
        check_equivalent(&d, &vi, &vo).unwrap();
    }

    #[test]
    fn a_wrong_equivalent_is_caught() {
        let inputs: Vec<Value> = (0..200).map(crate::policies::input).collect();
        let orrery = orrery_outputs(&inputs);
        // A graph whose switch compares with another threshold.
        let mut g = graph();
        let text = g.to_string().replace("x15 > 0.9", "x15 > 0.8");
        g = serde_json::from_str(&text).unwrap();
        let content: GraphContent = serde_json::from_value(g).unwrap();
        let wrong = Decision::from(content);
        assert!(check_equivalent(&wrong, &inputs, &orrery).is_err());
        // And one off by a constant in a transform.
        let text = graph().to_string().replace("x14 * 1.01", "x14 * 1.02");
        let content: GraphContent = serde_json::from_str(&text).unwrap();
        assert!(check_equivalent(&Decision::from(content), &inputs, &orrery).is_err());
        assert!(!same_output(
            &json!({"decision": "deny", "score": 1.0}),
            &json!({"decision": "approve", "score": 1.0})
        ));
    }
}
