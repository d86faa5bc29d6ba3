//! The evaluator: walks a compiled graph from its input to the output it
//! reaches, recording a trace entry per node.
//!
//! Evaluation is async only because lookups are: everything else is plain
//! CEL on in-memory values. Lookups go through [`Effects`], which the server
//! implements (kv, http) and tests implement with maps.

use crate::graph::{Compiled, CompiledKind, Expression, FieldType, OnError};
use crate::PolicyError;
use cel::{Context, Value};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Side effects a graph may have: reading a data source, submitting a job.
pub trait Effects: Send + Sync {
    /// The value the data source `source` holds under `key`, or why not.
    fn lookup<'a>(&'a self, source: &'a str, key: &'a str) -> BoxFuture<'a, Result<Json, String>>;

    /// Submits a job of `kind` with `params` to `queue` for the graph node
    /// `node`: the job id, `None` when these effects only evaluate (batches
    /// and backtests submit nothing), or why it failed.
    fn enqueue<'a>(
        &'a self,
        node: &'a str,
        queue: &'a str,
        kind: &'a str,
        params: Json,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        let _ = (node, kind, params);
        Box::pin(async move { Err(format!("queue {queue:?} is not available here")) })
    }
}

/// Effects for graphs without lookups (and for benchmarks): any lookup fails.
pub struct NoEffects;

impl Effects for NoEffects {
    fn lookup<'a>(&'a self, source: &'a str, _key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        Box::pin(async move { Err(format!("data source {source:?} is not available here")) })
    }
}

/// One node's part in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Wall-clock start, ms since the Unix epoch.
    pub started: u64,
    pub duration_us: u64,
    /// What the node produced: assigned names, a lookup's result, the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    /// The node a branch or allocation went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The allocation arm taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of evaluating a graph on one input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub output: Option<Json>,
    pub trace: Vec<TraceEntry>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// JSON to CEL. Integers stay integers, other numbers are doubles; fields
/// the input node declares as `number` are always doubles (see
/// [`check_input`]) so that `input.debt / input.income` divides as users
/// expect whatever JSON spelled the numbers.
pub fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(m) => {
            let h: HashMap<String, Value> = m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            Value::from(h)
        }
    }
}

pub fn to_json(v: &Value) -> Result<Json, String> {
    v.json()
        .map_err(|e| format!("value cannot be represented in JSON: {e:?}"))
}

/// The text a value hashes or looks up as: strings as they are, anything
/// else as JSON.
fn key_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        other => Ok(to_json(other)?.to_string()),
    }
}

/// The query vector of a `vector` lookup from its key text (the key
/// expression's value as JSON): a list of numbers, or an object holding
/// that list under `field`.
pub fn vector_query(key: &str, field: &str) -> Result<Vec<f32>, String> {
    let v: Json = serde_json::from_str(key).map_err(|_| {
        format!("the key must be a list of numbers or an object with a {field:?} list, got {key:?}")
    })?;
    let list = match &v {
        Json::Array(a) => a,
        Json::Object(m) => match m.get(field) {
            Some(Json::Array(a)) => a,
            Some(other) => {
                return Err(format!(
                    "the key's {field:?} must be a list of numbers, got {other}"
                ))
            }
            None => return Err(format!("the key object has no {field:?} field")),
        },
        other => {
            return Err(format!(
                "the key must be a list of numbers or an object with a {field:?} list, got {other}"
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .map(|f| f as f32)
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("query vector[{i}] must be a finite number, got {x}"))
        })
        .collect()
}

/// Checks a run's input against the input node and converts it to CEL.
pub fn check_input(c: &Compiled, input: &Json) -> Result<Value, PolicyError> {
    let node = &c.nodes[c.input];
    let CompiledKind::Input { fields } = &node.kind else {
        return Err(PolicyError::Internal("input node is not an input".into()));
    };
    let obj = input
        .as_object()
        .ok_or_else(|| PolicyError::Input("the input must be a JSON object".into()))?;
    let mut out: HashMap<String, Value> = obj.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
    for (name, ty, optional) in fields {
        let Some(v) = obj.get(name) else {
            if *optional {
                continue;
            }
            return Err(PolicyError::Input(format!(
                "input.{name} is required ({})",
                ty.name()
            )));
        };
        if v.is_null() && *optional {
            continue;
        }
        let ok = match ty {
            FieldType::Number => v.is_number(),
            FieldType::Integer => v.is_i64(),
            FieldType::String => v.is_string(),
            FieldType::Bool => v.is_boolean(),
            FieldType::Object => v.is_object(),
            FieldType::Array => v.is_array(),
        };
        if !ok {
            return Err(PolicyError::Input(format!(
                "input.{name} must be of type {}, got {v}",
                ty.name()
            )));
        }
        if *ty == FieldType::Number {
            out.insert(name.clone(), Value::Float(v.as_f64().unwrap_or(f64::NAN)));
        }
    }
    Ok(Value::from(out))
}

/// A stable bucket in `0..total` for `key`, salted so that independent
/// splits do not send the same keys to the same side.
pub fn bucket(salt: &str, key: &str, total: u64) -> u64 {
    let mut bytes = Vec::with_capacity(salt.len() + key.len() + 1);
    bytes.extend_from_slice(salt.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    // FNV-1a mixes its last bytes weakly into the high bits; a splitmix64
    // finaliser spreads every input bit before the modulo.
    let mut z = orrery_types::stable_hash(&bytes);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if total == 0 {
        0
    } else {
        z % total
    }
}

/// Picks from `(choice, weight)` pairs by a stable hash of `key`; `None`
/// when every weight is 0.
pub fn pick<'a, T>(salt: &str, key: &str, weighted: &'a [(T, u64)]) -> Option<&'a T> {
    let total: u64 = weighted.iter().map(|(_, w)| *w).sum();
    if total == 0 {
        return None;
    }
    let b = bucket(salt, key, total);
    let mut acc = 0;
    for (t, w) in weighted {
        acc += *w;
        if b < acc {
            return Some(t);
        }
    }
    None
}

struct Scope {
    input: Value,
    vars: Vec<(String, Value)>,
}

impl Scope {
    fn set(&mut self, name: &str, v: Value) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => self.vars.push((name.to_string(), v)),
        }
    }

    fn context(&self) -> Context<'_, '_> {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("input", self.input.clone());
        for (n, v) in &self.vars {
            ctx.add_variable_from_value(n.clone(), v.clone());
        }
        ctx
    }

    fn eval(&self, ctx: &Context, e: &Expression) -> Result<Value, String> {
        e.program
            .execute(ctx)
            .map_err(|err| format!("{:?}: {err}", e.source))
    }
}

fn entry(id: &str, kind: &str, started: u64, t: Instant) -> TraceEntry {
    TraceEntry {
        id: id.to_string(),
        kind: kind.to_string(),
        started,
        duration_us: t.elapsed().as_micros() as u64,
        output: None,
        branch: None,
        arm: None,
        error: None,
    }
}

/// Evaluates `c` on an input already checked by [`check_input`].
pub async fn evaluate(c: &Compiled, input: Value, fx: &dyn Effects) -> Outcome {
    let mut scope = Scope {
        input,
        vars: Vec::new(),
    };
    let mut trace = Vec::new();
    let mut at = c.input;
    // A graph is acyclic, so a walk visits at most every node once.
    for _ in 0..=c.nodes.len() {
        let node = &c.nodes[at];
        let started = now_ms();
        let t = Instant::now();
        let step: Result<Option<usize>, String> = match &node.kind {
            CompiledKind::Input { .. } => {
                trace.push(entry(&node.id, node.kind_name, started, t));
                Ok(node.next)
            }
            CompiledKind::Transform { assign } => {
                let ctx = scope.context();
                let mut vals = Vec::with_capacity(assign.len());
                let mut failed = None;
                for (name, e) in assign {
                    match scope.eval(&ctx, e) {
                        Ok(v) => vals.push((name.clone(), v)),
                        Err(err) => {
                            failed = Some(format!("assign.{name}: {err}"));
                            break;
                        }
                    }
                }
                drop(ctx);
                let mut te = entry(&node.id, node.kind_name, started, t);
                match failed {
                    Some(err) => {
                        te.error = Some(err.clone());
                        trace.push(te);
                        Err(err)
                    }
                    None => {
                        let mut shown = serde_json::Map::new();
                        for (n, v) in vals {
                            shown.insert(n.clone(), to_json(&v).unwrap_or(Json::Null));
                            scope.set(&n, v);
                        }
                        te.output = Some(Json::Object(shown));
                        trace.push(te);
                        Ok(node.next)
                    }
                }
            }
            CompiledKind::Branch {
                conditions,
                default,
            } => {
                let ctx = scope.context();
                let mut chosen = Ok(*default);
                for (e, target) in conditions {
                    match scope.eval(&ctx, e) {
                        Ok(Value::Bool(true)) => {
                            chosen = Ok(*target);
                            break;
                        }
                        Ok(Value::Bool(false)) => {}
                        Ok(other) => {
                            chosen =
                                Err(format!("condition {:?} is not a bool: {other:?}", e.source));
                            break;
                        }
                        Err(err) => {
                            chosen = Err(err);
                            break;
                        }
                    }
                }
                let mut te = entry(&node.id, node.kind_name, started, t);
                match &chosen {
                    Ok(to) => te.branch = Some(c.nodes[*to].id.clone()),
                    Err(e) => te.error = Some(e.clone()),
                }
                trace.push(te);
                chosen.map(Some)
            }
            CompiledKind::Allocation { key, arms, total } => {
                let ctx = scope.context();
                let r = scope.eval(&ctx, key).and_then(|v| key_text(&v)).map(|k| {
                    let b = bucket(&node.id, &k, *total);
                    arms.iter().find(|(_, cum, _)| b < *cum).or(arms.last())
                });
                let mut te = entry(&node.id, node.kind_name, started, t);
                let r = match r {
                    Ok(Some((arm, _, to))) => {
                        te.arm = Some(arm.clone());
                        te.branch = Some(c.nodes[*to].id.clone());
                        Ok(Some(*to))
                    }
                    Ok(None) => Err("no arm".to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = &r {
                    te.error = Some(e.clone());
                }
                trace.push(te);
                r
            }
            CompiledKind::Lookup { .. } => {
                // Consecutive lookups whose keys do not read each other's
                // results run concurrently.
                let mut group = vec![at];
                let mut names: Vec<&str> = Vec::new();
                if let CompiledKind::Lookup { name, .. } = &node.kind {
                    names.push(name);
                }
                let mut nx = node.next;
                while let Some(n) = nx {
                    match &c.nodes[n].kind {
                        CompiledKind::Lookup { key, name, .. }
                            if !names.iter().any(|d| reads(key, d)) =>
                        {
                            group.push(n);
                            names.push(name);
                            nx = c.nodes[n].next;
                        }
                        _ => break,
                    }
                }
                let ctx = scope.context();
                let keys: Vec<Result<String, String>> = group
                    .iter()
                    .map(|&i| match &c.nodes[i].kind {
                        CompiledKind::Lookup { key, .. } => {
                            scope.eval(&ctx, key).and_then(|v| key_text(&v))
                        }
                        _ => Err("internal: not a lookup".into()),
                    })
                    .collect();
                drop(ctx);
                let futs = group.iter().zip(&keys).map(|(&i, k)| {
                    let started = now_ms();
                    let t = Instant::now();
                    async move {
                        let r = match (&c.nodes[i].kind, k) {
                            (CompiledKind::Lookup { source, .. }, Ok(k)) => {
                                fx.lookup(source, k).await
                            }
                            (_, Err(e)) => Err(format!("key: {e}")),
                            _ => Err("internal: not a lookup".into()),
                        };
                        (i, started, t, r)
                    }
                });
                let results = futures::future::join_all(futs).await;
                let mut r = Ok(None);
                for (i, started, t, res) in results {
                    let n = &c.nodes[i];
                    let CompiledKind::Lookup { name, on_error, .. } = &n.kind else {
                        continue;
                    };
                    let mut te = entry(&n.id, n.kind_name, started, t);
                    let bound = match (res, on_error) {
                        (Ok(v), _) => Ok(v),
                        (Err(e), OnError::Fail) => Err(e),
                        (Err(e), OnError::Skip) => {
                            te.error = Some(format!("{e} (skipped)"));
                            Ok(Json::Null)
                        }
                        (Err(e), OnError::Default(d)) => {
                            te.error = Some(format!("{e} (default used)"));
                            Ok(d.clone())
                        }
                    };
                    match bound {
                        Ok(v) => {
                            scope.set(name, to_cel(&v));
                            te.output = Some(v);
                            trace.push(te);
                            r = Ok(n.next);
                        }
                        Err(e) => {
                            te.error = Some(e.clone());
                            trace.push(te);
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
            CompiledKind::Enqueue {
                queue,
                kind,
                params,
                name,
            } => {
                let ctx = scope.context();
                let mut p = serde_json::Map::new();
                let mut failed = None;
                for (pn, e) in params {
                    match scope.eval(&ctx, e).and_then(|v| to_json(&v)) {
                        Ok(v) => {
                            p.insert(pn.clone(), v);
                        }
                        Err(err) => {
                            failed = Some(format!("params.{pn}: {err}"));
                            break;
                        }
                    }
                }
                drop(ctx);
                let r = match failed {
                    Some(e) => Err(e),
                    None => fx
                        .enqueue(&node.id, queue, kind, Json::Object(p.clone()))
                        .await
                        .map_err(|e| format!("enqueue to {queue:?}: {e}")),
                };
                let mut te = entry(&node.id, node.kind_name, started, t);
                match r {
                    Ok(job) => {
                        let id = job.clone().map(Json::String).unwrap_or(Json::Null);
                        if let Some(n) = name {
                            scope.set(n, to_cel(&id));
                        }
                        te.output = Some(serde_json::json!({
                            "job_id": id,
                            "queue": queue,
                            "kind": kind,
                            "params": Json::Object(p),
                            "submitted": job.is_some(),
                        }));
                        trace.push(te);
                        Ok(node.next)
                    }
                    Err(e) => {
                        te.error = Some(e.clone());
                        trace.push(te);
                        Err(e)
                    }
                }
            }
            CompiledKind::Output { fields } => {
                let ctx = scope.context();
                let mut out = serde_json::Map::new();
                let mut failed = None;
                for (name, e) in fields {
                    match scope.eval(&ctx, e).and_then(|v| to_json(&v)) {
                        Ok(v) => {
                            out.insert(name.clone(), v);
                        }
                        Err(err) => {
                            failed = Some(format!("fields.{name}: {err}"));
                            break;
                        }
                    }
                }
                let mut te = entry(&node.id, node.kind_name, started, t);
                match failed {
                    Some(e) => {
                        te.error = Some(e.clone());
                        trace.push(te);
                        return Outcome {
                            output: None,
                            trace,
                            error: Some(format!("node {:?}: {e}", node.id)),
                        };
                    }
                    None => {
                        te.output = Some(Json::Object(out.clone()));
                        trace.push(te);
                        return Outcome {
                            output: Some(Json::Object(out)),
                            trace,
                            error: None,
                        };
                    }
                }
            }
        };
        match step {
            Ok(Some(next)) => at = next,
            Ok(None) => break,
            Err(e) => {
                let id = trace.last().map(|t| t.id.clone()).unwrap_or_default();
                return Outcome {
                    output: None,
                    trace,
                    error: Some(format!("node {id:?}: {e}")),
                };
            }
        }
    }
    Outcome {
        output: None,
        trace,
        error: Some("internal: the walk ended without an output".into()),
    }
}

/// Whether an expression reads the name `n`.
fn reads(e: &Expression, n: &str) -> bool {
    e.program.references().has_variable(n)
}

/// Evaluates many inputs in parallel; outcomes in input order.
pub fn evaluate_batch<F>(inputs: &[Json], run: F) -> Vec<Outcome>
where
    F: Fn(&Json) -> Outcome + Sync + Send,
{
    use rayon::prelude::*;
    inputs.par_iter().map(run).collect()
}
