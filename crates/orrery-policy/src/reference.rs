//! The evaluator as it was before compiled plans (one CEL context and one
//! job per node, the scope cloned for each): the reference the property
//! test holds the evaluator of [`crate::walk`] to. Test builds only.
//!
//! The walk of one evaluation: from the input node to the output it
//! reaches, a trace entry per node, under a deadline.
//!
//! CEL is evaluated in jobs handed to [`Effects::compute`] (the server's
//! bounded blocking pool), never on the caller's task; lookups and job
//! submissions are awaited here. The deadline counts the time spent
//! evaluating and waiting for the pool, not the time a lookup or an
//! enqueue waits on the network: those have their own deadlines.

use crate::eval::{bucket, key_text, now_ms, to_cel, to_json, Effects, Outcome, TraceEntry};
use crate::graph::{Compiled, CompiledKind, Expression, OnError};
use crate::limits::TICK;
use cel::{Context, ExecutionError, ResolveResult, Value};
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The message of the error that ends an expression past its deadline.
const PAST_DEADLINE: &str = "the run passed its deadline";

#[derive(Clone)]
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

    /// The variables, and [`TICK`] failing from `deadline` on.
    fn context(&self, deadline: Instant) -> Result<Context<'static, 'static>, String> {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("input", self.input.clone());
        for (n, v) in &self.vars {
            ctx.add_variable_from_value(n.clone(), v.clone());
        }
        ctx.add_function(TICK, move || -> ResolveResult {
            if Instant::now() >= deadline {
                Err(ExecutionError::function_error(TICK, PAST_DEADLINE))
            } else {
                Ok(Value::Bool(true))
            }
        })
        .map_err(|e| format!("internal: {e:?}"))?;
        Ok(ctx)
    }
}

fn eval(ctx: &Context, e: &Expression) -> Result<Value, String> {
    Value::resolve(&e.checked, ctx).map_err(|err| format!("{:?}: {err}", e.source))
}

/// What the CPU part of a node computed.
enum Cpu {
    /// Transform: the values assigned, or the first failure.
    Assign(Result<Vec<(String, Value)>, String>),
    Branch(Result<usize, String>),
    /// Allocation: the arm and the node it leads to.
    Arm(Result<(String, usize), String>),
    /// Lookups: each one's key text.
    Keys(Vec<Result<String, String>>),
    /// Enqueue params and output fields.
    Fields(Result<Map<String, Json>, String>),
}

fn fields(
    ctx: &Context,
    list: &[(String, Expression)],
    what: &str,
) -> Result<Map<String, Json>, String> {
    let mut out = Map::new();
    for (name, e) in list {
        let v = eval(ctx, e)
            .and_then(|v| to_json(&v))
            .map_err(|err| format!("{what}.{name}: {err}"))?;
        out.insert(name.clone(), v);
    }
    Ok(out)
}

/// The CEL work of node `at` (and of the lookups `group` it starts).
fn cpu(c: &Compiled, at: usize, group: &[usize], scope: &Scope, deadline: Instant) -> Cpu {
    let ctx = match scope.context(deadline) {
        Ok(ctx) => ctx,
        Err(e) => return Cpu::Fields(Err(e)),
    };
    let node = &c.nodes[at];
    match &node.kind {
        CompiledKind::Transform { assign } => Cpu::Assign(
            assign
                .iter()
                .map(|(name, e)| {
                    eval(&ctx, e)
                        .map(|v| (name.clone(), v))
                        .map_err(|err| format!("assign.{name}: {err}"))
                })
                .collect(),
        ),
        CompiledKind::Branch {
            conditions,
            default,
        } => {
            for (e, target) in conditions {
                match eval(&ctx, e) {
                    Ok(Value::Bool(true)) => return Cpu::Branch(Ok(*target)),
                    Ok(Value::Bool(false)) => {}
                    Ok(other) => {
                        return Cpu::Branch(Err(format!(
                            "condition {:?} is not a bool: {other:?}",
                            e.source
                        )))
                    }
                    Err(err) => return Cpu::Branch(Err(err)),
                }
            }
            Cpu::Branch(Ok(*default))
        }
        CompiledKind::Allocation { key, arms, total } => {
            Cpu::Arm(eval(&ctx, key).and_then(|v| key_text(&v)).and_then(|k| {
                let b = bucket(&node.id, &k, *total);
                arms.iter()
                    .find(|(_, cum, _)| b < *cum)
                    .or(arms.last())
                    .map(|(arm, _, to)| (arm.clone(), *to))
                    .ok_or_else(|| "no arm".to_string())
            }))
        }
        CompiledKind::Lookup { .. } => Cpu::Keys(
            group
                .iter()
                .map(|&i| match &c.nodes[i].kind {
                    CompiledKind::Lookup { key, .. } => eval(&ctx, key).and_then(|v| key_text(&v)),
                    _ => Err("internal: not a lookup".into()),
                })
                .collect(),
        ),
        CompiledKind::Enqueue { params, .. } => Cpu::Fields(fields(&ctx, params, "params")),
        CompiledKind::Output { fields: f } => Cpu::Fields(fields(&ctx, f, "fields")),
        CompiledKind::Input { .. } => Cpu::Fields(Ok(Map::new())),
        // The reference is frozen: the node types added after it are
        // tested on their own (tests_nodes.rs).
        _ => Cpu::Fields(Err("not supported by the reference evaluator".into())),
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
        rows: None,
        children: Vec::new(),
    }
}

fn failed(trace: Vec<TraceEntry>, error: String, timed_out: bool) -> Outcome {
    Outcome {
        output: None,
        trace,
        error: Some(error),
        timed_out,
        termination: None,
    }
}

/// Consecutive lookups whose keys do not read each other's results: they
/// run concurrently.
fn lookup_group(c: &Compiled, at: usize) -> Vec<usize> {
    let mut group = vec![at];
    let mut names: Vec<&str> = Vec::new();
    if let CompiledKind::Lookup { name, .. } = &c.nodes[at].kind {
        names.push(name);
    }
    let mut nx = c.nodes[at].next;
    while let Some(n) = nx {
        match &c.nodes[n].kind {
            CompiledKind::Lookup { key, name, .. } if !names.iter().any(|d| reads(key, d)) => {
                group.push(n);
                names.push(name);
                nx = c.nodes[n].next;
            }
            _ => break,
        }
    }
    group
}

/// Evaluates `c` on an input already checked by
/// [`crate::eval::check_input`], within `budget` of evaluation time.
pub async fn evaluate(
    c: &Arc<Compiled>,
    input: Value,
    fx: &dyn Effects,
    budget: Duration,
) -> Outcome {
    let mut scope = Scope {
        input,
        vars: Vec::new(),
    };
    let mut trace = Vec::new();
    let mut at = c.input;
    let begun = Instant::now();
    // Time spent waiting on lookups and submissions: not evaluation.
    let mut io = Duration::ZERO;
    let timeout = |at: &str| {
        format!(
            "evaluation_timeout: the run passed its deadline of {} ms at node {at:?}",
            budget.as_millis()
        )
    };
    // A graph is acyclic, so a walk visits at most every node once.
    for _ in 0..=c.nodes.len() {
        let node = &c.nodes[at];
        let spent = begun.elapsed().saturating_sub(io);
        let Some(left) = budget.checked_sub(spent).filter(|d| !d.is_zero()) else {
            return failed(trace, timeout(&node.id), true);
        };
        let deadline = Instant::now() + left;
        let started = now_ms();
        let t = Instant::now();
        let group = match &node.kind {
            CompiledKind::Lookup { .. } => lookup_group(c, at),
            _ => Vec::new(),
        };
        let computed = if matches!(node.kind, CompiledKind::Input { .. }) {
            Cpu::Fields(Ok(Map::new()))
        } else {
            let (tx, rx) = futures::channel::oneshot::channel();
            let (cc, sc, g) = (c.clone(), scope.clone(), group.clone());
            let job = Box::new(move || {
                let _ = tx.send(cpu(&cc, at, &g, &sc, deadline));
            });
            let ran = fx.compute(job, deadline).await;
            match (ran, rx.await) {
                (Ok(()), Ok(out)) => out,
                (Err(e), _) if Instant::now() < deadline => {
                    return failed(trace, format!("node {:?}: {e}", node.id), false)
                }
                _ => return failed(trace, timeout(&node.id), true),
            }
        };
        let past = Instant::now() >= deadline;
        let step: Result<Option<usize>, String> = match (&node.kind, computed) {
            (CompiledKind::Input { .. }, _) => {
                trace.push(entry(&node.id, node.kind_name, started, t));
                Ok(node.next)
            }
            (CompiledKind::Transform { .. }, Cpu::Assign(vals)) => {
                let mut te = entry(&node.id, node.kind_name, started, t);
                match vals {
                    Err(err) => {
                        te.error = Some(err.clone());
                        trace.push(te);
                        Err(err)
                    }
                    Ok(vals) => {
                        let mut shown = Map::new();
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
            (CompiledKind::Branch { .. }, Cpu::Branch(chosen)) => {
                let mut te = entry(&node.id, node.kind_name, started, t);
                match &chosen {
                    Ok(to) => te.branch = Some(c.nodes[*to].id.clone()),
                    Err(e) => te.error = Some(e.clone()),
                }
                trace.push(te);
                chosen.map(Some)
            }
            (CompiledKind::Allocation { .. }, Cpu::Arm(r)) => {
                let mut te = entry(&node.id, node.kind_name, started, t);
                let r = r.map(|(arm, to)| {
                    te.arm = Some(arm);
                    te.branch = Some(c.nodes[to].id.clone());
                    Some(to)
                });
                if let Err(e) = &r {
                    te.error = Some(e.clone());
                }
                trace.push(te);
                r
            }
            (CompiledKind::Lookup { .. }, Cpu::Keys(keys)) => {
                let io_start = Instant::now();
                let r = lookups(c, &group, keys, fx, &mut scope, &mut trace).await;
                io += io_start.elapsed();
                r
            }
            (
                CompiledKind::Enqueue {
                    queue, kind, name, ..
                },
                Cpu::Fields(p),
            ) => {
                let io_start = Instant::now();
                let r = match p {
                    Err(e) => Err(e),
                    Ok(p) => fx
                        .enqueue(&node.id, queue, kind, Json::Object(p.clone()))
                        .await
                        .map(|job| (job, p))
                        .map_err(|e| format!("enqueue to {queue:?}: {e}")),
                };
                io += io_start.elapsed();
                let mut te = entry(&node.id, node.kind_name, started, t);
                match r {
                    Ok((job, p)) => {
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
            (CompiledKind::Output { .. }, Cpu::Fields(out)) => {
                let mut te = entry(&node.id, node.kind_name, started, t);
                return match out {
                    Err(e) => {
                        te.error = Some(e.clone());
                        trace.push(te);
                        if past {
                            return failed(trace, timeout(&node.id), true);
                        }
                        failed(trace, format!("node {:?}: {e}", node.id), false)
                    }
                    Ok(out) => {
                        te.output = Some(Json::Object(out.clone()));
                        trace.push(te);
                        Outcome {
                            output: Some(Json::Object(out)),
                            trace,
                            error: None,
                            timed_out: false,
                            termination: None,
                        }
                    }
                };
            }
            _ => Err("internal: the evaluation of a node did not match its kind".into()),
        };
        match step {
            Ok(Some(next)) => at = next,
            Ok(None) => break,
            // An expression that failed past the deadline failed because
            // of it (its comprehension's deadline check).
            Err(_) if past => return failed(trace, timeout(&node.id), true),
            Err(e) => {
                let id = trace.last().map(|t| t.id.clone()).unwrap_or_default();
                return failed(trace, format!("node {id:?}: {e}"), false);
            }
        }
    }
    failed(
        trace,
        "internal: the walk ended without an output".into(),
        false,
    )
}

/// Runs a group of lookups concurrently and binds their results; the next
/// node, or the first failure not absorbed by an `on_error`.
async fn lookups(
    c: &Compiled,
    group: &[usize],
    keys: Vec<Result<String, String>>,
    fx: &dyn Effects,
    scope: &mut Scope,
    trace: &mut Vec<TraceEntry>,
) -> Result<Option<usize>, String> {
    let futs = group.iter().zip(&keys).map(|(&i, k)| {
        let started = now_ms();
        let t = Instant::now();
        async move {
            let r = match (&c.nodes[i].kind, k) {
                (CompiledKind::Lookup { source, .. }, Ok(k)) => fx.lookup(source, k).await,
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
                return Err(e);
            }
        }
    }
    r
}

/// Whether an expression reads the name `n`.
fn reads(e: &Expression, n: &str) -> bool {
    e.program.references().has_variable(n)
}
