//! The evaluator: walks a compiled graph from its input to the output it
//! reaches, recording a trace entry per node.
//!
//! Evaluation is async only because lookups are: everything else is plain
//! CEL on in-memory values. Lookups go through [`Effects`], which the server
//! implements (kv, http) and tests implement with maps; so does the CEL work
//! itself ([`Effects::compute`]), which the server runs off its async
//! runtime. The walk itself is in [`crate::walk`].

use crate::graph::{Compiled, CompiledKind, FieldType};
use crate::termination::Termination;
use crate::{limits, PolicyError};
use cel::Value;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use crate::walk::evaluate;

/// A CPU-bound part of an evaluation, handed to [`Effects::compute`].
pub type Job = Box<dyn FnOnce() + Send + 'static>;

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

    /// Runs `job`, CEL evaluation that may use the CPU until `deadline`
    /// (it fails itself past it, see [`crate::limits`]). The server runs it
    /// on a bounded pool of blocking threads so that a costly expression
    /// never occupies an async worker; `Err` when it could not run it by
    /// `deadline` (the pool was busy) or it did not finish. The default
    /// runs it inline.
    fn compute<'a>(&'a self, job: Job, deadline: Instant) -> BoxFuture<'a, Result<(), String>> {
        let _ = deadline;
        job();
        Box::pin(async { Ok(()) })
    }

    /// The compiled version of the policy named `policy` that a
    /// `sub_policy` node runs: version `version` when the node pins one,
    /// otherwise the one the policy's traffic allocation picks for this
    /// run (the implementation knows the run's key). Returns the version
    /// number with it. The default knows no other policy.
    fn sub_policy<'a>(
        &'a self,
        policy: &'a str,
        version: Option<u32>,
    ) -> BoxFuture<'a, Result<(u32, Arc<Compiled>), String>> {
        let _ = version;
        Box::pin(async move { Err(format!("policy {policy:?} is not available here")) })
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
    /// A decision table's matching rows (0-based, in row order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<usize>>,
    /// A sub_policy node's run of its child: the child's own trace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TraceEntry>,
}

/// The result of evaluating a graph on one input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub output: Option<Json>,
    pub trace: Vec<TraceEntry>,
    pub error: Option<String>,
    /// The run failed because it passed its deadline (`error` says where).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Set when a `terminate` node ended the run (then `output` is `None`
    /// and the run succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<Termination>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

pub(crate) fn now_ms() -> u64 {
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
pub(crate) fn key_text(v: &Value) -> Result<String, String> {
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
    let size = serde_json::to_vec(input)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limits::MAX_INPUT_BYTES {
        return Err(PolicyError::TooLarge(format!(
            "the input is {size} bytes of JSON; at most {} are allowed",
            limits::MAX_INPUT_BYTES
        )));
    }
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

/// Evaluates many inputs in parallel; outcomes in input order.
pub fn evaluate_batch<F>(inputs: &[Json], run: F) -> Vec<Outcome>
where
    F: Fn(&Json) -> Outcome + Sync + Send,
{
    use rayon::prelude::*;
    inputs.par_iter().map(run).collect()
}
