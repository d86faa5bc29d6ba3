//! The walk of one evaluation: from the input node to the output it
//! reaches, a trace entry per node, under a deadline.
//!
//! The nodes between two waits (a lookup, an enqueue) are evaluated as one
//! stretch in one job handed to [`Effects::compute`] (the server's bounded
//! pool of CPU threads), never on the caller's task: a graph without
//! lookups is one job, one hop to the pool and back, however many nodes
//! it has. A stretch evaluates every node against one CEL context built
//! for it ([`Cel`]) and the run's slots ([`Scope`]). Lookups and job
//! submissions are awaited here. The deadline counts the time spent
//! evaluating and waiting for the pool, not the time a lookup or an
//! enqueue waits on the network: those have their own deadlines.

use crate::eval::{bucket, key_text, now_ms, to_cel, to_json, Effects, Outcome, TraceEntry};
use crate::graph::{Compiled, CompiledKind, CompiledNode, Expression, OnError};
use crate::plan::{Cel, Scope};
use crate::termination::Termination;
use crate::walk_nodes;
use cel::{Context, Value};
use futures::future::BoxFuture;
use serde_json::{Map, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn eval(ctx: &Context, e: &Expression) -> Result<Value, String> {
    Value::resolve(&e.checked, ctx).map_err(|err| format!("{:?}: {err}", e.source))
}

pub(crate) fn fields(
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

pub(crate) fn entry(id: &str, kind: &str, started: u64, t: Instant) -> TraceEntry {
    entry_at(id, kind, started, t, Instant::now())
}

/// A trace entry for a node that ran from `t` to `end`.
fn entry_at(id: &str, kind: &str, started: u64, t: Instant, end: Instant) -> TraceEntry {
    TraceEntry {
        id: id.to_string(),
        kind: kind.to_string(),
        started,
        duration_us: end.saturating_duration_since(t).as_micros() as u64,
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

pub(crate) fn timeout(budget: Duration, at: &str) -> String {
    format!(
        "evaluation_timeout: the run passed its deadline of {} ms at node {at:?}",
        budget.as_millis()
    )
}

const NO_OUTPUT: &str = "internal: the walk ended without an output";

/// The wall clock of a run, read once: a node's start in ms since the
/// epoch is the run's start plus the monotonic time since.
#[derive(Clone, Copy)]
struct Wall {
    ms: u64,
    at: Instant,
}

impl Wall {
    fn now() -> Wall {
        Wall {
            ms: now_ms(),
            at: Instant::now(),
        }
    }

    fn ms(self, t: Instant) -> u64 {
        self.ms + t.saturating_duration_since(self.at).as_millis() as u64
    }
}

/// A run between stretches: where it is and what it has assigned.
struct Walk {
    wall: Wall,
    scope: Scope,
    at: usize,
    /// Nodes visited: a graph is acyclic, so a walk visits each at most once.
    steps: usize,
}

/// How a run ended well: at an output node, or at a terminate node.
enum Done {
    Output(Json),
    Terminated(Termination),
}

/// Where a stretch stopped.
enum Stop {
    /// The run ended: its output, or its error and whether it timed out.
    End(Result<Done, (String, bool)>),
    /// The lookups starting at the current node need their sources: their
    /// key texts, and whether computing them passed the deadline.
    Lookups {
        keys: Vec<Result<String, String>>,
        past: bool,
    },
    /// The enqueue node at the current node needs its submission.
    Enqueue {
        params: Result<Map<String, Json>, String>,
        started: u64,
        t: Instant,
        past: bool,
    },
    /// The sub_policy node at the current node needs its child's run: the
    /// child's input as mapped.
    SubPolicy {
        input: Result<Map<String, Json>, String>,
        started: u64,
        t: Instant,
        past: bool,
    },
}

/// How a node that failed with `e` ends the run: past the deadline, it
/// failed because of it (its comprehension's deadline check).
fn fail(node: &CompiledNode, e: String, past: bool, budget: Duration) -> Stop {
    if past {
        Stop::End(Err((timeout(budget, &node.id), true)))
    } else {
        Stop::End(Err((format!("node {:?}: {e}", node.id), false)))
    }
}

/// How an ending node (output, terminate) ends the run: with what `done`
/// makes of its value (the trace entry's output and the outcome), or, when
/// its expressions failed, as [`fail`] says (`past`: the node ended past
/// the deadline); its trace entry is recorded either way.
fn end_run<T>(
    trace: &mut Vec<TraceEntry>,
    mut te: TraceEntry,
    node: &CompiledNode,
    r: Result<T, String>,
    past: bool,
    budget: Duration,
    done: impl FnOnce(T) -> (Option<Json>, Done),
) -> Stop {
    match r {
        Err(e) => {
            te.error = Some(e.clone());
            trace.push(te);
            fail(node, e, past, budget)
        }
        Ok(v) => {
            let (output, d) = done(v);
            te.output = output;
            trace.push(te);
            Stop::End(Ok(d))
        }
    }
}

fn next(w: &mut Walk, node: &CompiledNode) -> Option<Stop> {
    match node.next {
        Some(n) => {
            w.at = n;
            None
        }
        None => Some(Stop::End(Err((NO_OUTPUT.into(), false)))),
    }
}

/// Evaluates nodes from `w.at` until the run ends or waits on a lookup or
/// an enqueue, appending their trace entries to `trace`.
fn stretch(
    c: &Compiled,
    w: &mut Walk,
    deadline: Instant,
    budget: Duration,
    trace: &mut Vec<TraceEntry>,
) -> Stop {
    let mut cel = match Cel::new(deadline) {
        Ok(cel) => cel,
        Err(e) => return fail(&c.nodes[w.at], e, false, budget),
    };
    let plan = &c.plan;
    let wall = w.wall;
    loop {
        let node = &c.nodes[w.at];
        if w.steps > c.nodes.len() {
            return Stop::End(Err((NO_OUTPUT.into(), false)));
        }
        w.steps += 1;
        // Two clock reads per node (start, end): at 20 nodes a run, reading
        // the clocks more often was a tenth of a run's cost.
        let t = Instant::now();
        if t >= deadline {
            return Stop::End(Err((timeout(budget, &node.id), true)));
        }
        let started = wall.ms(t);
        let scope = &w.scope;
        let stop = match &node.kind {
            CompiledKind::Input { .. } => {
                trace.push(entry_at(&node.id, node.kind_name, started, t, t));
                next(w, node)
            }
            CompiledKind::Transform { assign } => {
                let vals = cel.with(plan, scope, |ctx| {
                    assign
                        .iter()
                        .map(|(name, e)| {
                            eval(ctx, e).map_err(|err| format!("assign.{name}: {err}"))
                        })
                        .collect::<Result<Vec<Value>, String>>()
                });
                let end = Instant::now();
                let past = end >= deadline;
                let mut te = entry_at(&node.id, node.kind_name, started, t, end);
                match vals.and_then(|v| v) {
                    Err(err) => {
                        te.error = Some(err.clone());
                        trace.push(te);
                        Some(fail(node, err, past, budget))
                    }
                    Ok(vals) => {
                        let mut shown = Map::new();
                        let mut set = Ok(());
                        for (((name, _), v), &slot) in
                            assign.iter().zip(vals).zip(&plan.writes[w.at])
                        {
                            shown.insert(name.clone(), to_json(&v).unwrap_or(Json::Null));
                            set = set.and(w.scope.set(slot, v));
                        }
                        te.output = Some(Json::Object(shown));
                        trace.push(te);
                        match set {
                            Ok(()) => next(w, node),
                            Err(e) => Some(fail(node, e, past, budget)),
                        }
                    }
                }
            }
            CompiledKind::Branch {
                conditions,
                default,
            } => {
                let chosen = cel.with(plan, scope, |ctx| {
                    for (e, target) in conditions {
                        match eval(ctx, e) {
                            Ok(Value::Bool(true)) => return Ok(*target),
                            Ok(Value::Bool(false)) => {}
                            Ok(other) => {
                                return Err(format!(
                                    "condition {:?} is not a bool: {other:?}",
                                    e.source
                                ))
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    Ok(*default)
                });
                let end = Instant::now();
                let past = end >= deadline;
                let mut te = entry_at(&node.id, node.kind_name, started, t, end);
                match chosen.and_then(|r| r) {
                    Ok(to) => {
                        te.branch = Some(c.nodes[to].id.clone());
                        trace.push(te);
                        w.at = to;
                        None
                    }
                    Err(e) => {
                        te.error = Some(e.clone());
                        trace.push(te);
                        Some(fail(node, e, past, budget))
                    }
                }
            }
            CompiledKind::Allocation { key, arms, total } => {
                let r = cel
                    .with(plan, scope, |ctx| eval(ctx, key))
                    .and_then(|v| v)
                    .and_then(|v| key_text(&v))
                    .and_then(|k| {
                        let b = bucket(&node.id, &k, *total);
                        arms.iter()
                            .find(|(_, cum, _)| b < *cum)
                            .or(arms.last())
                            .map(|(arm, _, to)| (arm.clone(), *to))
                            .ok_or_else(|| "no arm".to_string())
                    });
                let end = Instant::now();
                let past = end >= deadline;
                let mut te = entry_at(&node.id, node.kind_name, started, t, end);
                match r {
                    Ok((arm, to)) => {
                        te.arm = Some(arm);
                        te.branch = Some(c.nodes[to].id.clone());
                        trace.push(te);
                        w.at = to;
                        None
                    }
                    Err(e) => {
                        te.error = Some(e.clone());
                        trace.push(te);
                        Some(fail(node, e, past, budget))
                    }
                }
            }
            CompiledKind::Lookup { .. } => {
                let group = &plan.groups[w.at];
                let keys = cel.with(plan, scope, |ctx| {
                    group
                        .iter()
                        .map(|&i| match &c.nodes[i].kind {
                            CompiledKind::Lookup { key, .. } => {
                                eval(ctx, key).and_then(|v| key_text(&v))
                            }
                            _ => Err("internal: not a lookup".into()),
                        })
                        .collect()
                });
                let keys = keys.unwrap_or_else(|e| vec![Err(e)]);
                let past = Instant::now() >= deadline;
                Some(Stop::Lookups { keys, past })
            }
            CompiledKind::Enqueue { params, .. } => {
                let params = cel
                    .with(plan, scope, |ctx| fields(ctx, params, "params"))
                    .and_then(|p| p);
                let past = Instant::now() >= deadline;
                Some(Stop::Enqueue {
                    params,
                    started,
                    t,
                    past,
                })
            }
            CompiledKind::Output { fields: f } => {
                let out = cel
                    .with(plan, scope, |ctx| fields(ctx, f, "fields"))
                    .and_then(|o| o);
                let end = Instant::now();
                let te = entry_at(&node.id, node.kind_name, started, t, end);
                Some(end_run(
                    trace,
                    te,
                    node,
                    out,
                    end >= deadline,
                    budget,
                    |out| {
                        let out = Json::Object(out);
                        (Some(out.clone()), Done::Output(out))
                    },
                ))
            }
            CompiledKind::DecisionTable {
                collect,
                columns,
                rows,
                default,
            } => {
                let r = cel
                    .with(plan, scope, |ctx| {
                        walk_nodes::table(ctx, *collect, rows, default.as_deref(), columns)
                    })
                    .and_then(|r| r);
                let end = Instant::now();
                let past = end >= deadline;
                let mut te = entry_at(&node.id, node.kind_name, started, t, end);
                match r {
                    Err(e) => {
                        te.error = Some(e.clone());
                        trace.push(te);
                        Some(fail(node, e, past, budget))
                    }
                    Ok((matched, vals)) => {
                        let mut shown = Map::new();
                        let mut set = Ok(());
                        for ((name, v), &slot) in columns.iter().zip(vals).zip(&plan.writes[w.at]) {
                            shown.insert(name.clone(), to_json(&v).unwrap_or(Json::Null));
                            set = set.and(w.scope.set(slot, v));
                        }
                        te.output = Some(Json::Object(shown));
                        te.rows = Some(matched);
                        trace.push(te);
                        match set {
                            Ok(()) => next(w, node),
                            Err(e) => Some(fail(node, e, past, budget)),
                        }
                    }
                }
            }
            CompiledKind::Terminate { status, reason } => {
                let r = cel
                    .with(plan, scope, |ctx| walk_nodes::reason(ctx, reason.as_ref()))
                    .and_then(|r| r);
                let end = Instant::now();
                let te = entry_at(&node.id, node.kind_name, started, t, end);
                Some(end_run(
                    trace,
                    te,
                    node,
                    r,
                    end >= deadline,
                    budget,
                    |reason| {
                        let term = Termination {
                            status: status.clone(),
                            reason,
                        };
                        (serde_json::to_value(&term).ok(), Done::Terminated(term))
                    },
                ))
            }
            CompiledKind::SubPolicy { input, .. } => {
                let input = cel
                    .with(plan, scope, |ctx| fields(ctx, input, "input"))
                    .and_then(|p| p);
                let past = Instant::now() >= deadline;
                Some(Stop::SubPolicy {
                    input,
                    started,
                    t,
                    past,
                })
            }
        };
        if let Some(stop) = stop {
            return stop;
        }
    }
}

/// The instant a stretch must end by: `budget` of evaluation after
/// `begun`, not counting `io`.
fn deadline_of(begun: Instant, io: Duration, budget: Duration) -> Instant {
    begun
        .checked_add(io.saturating_add(budget))
        .unwrap_or(begun)
}

/// Evaluates `c` on an input already checked by
/// [`crate::eval::check_input`], within `budget` of evaluation time.
pub async fn evaluate(
    c: &Arc<Compiled>,
    input: Value,
    fx: &dyn Effects,
    budget: Duration,
) -> Outcome {
    evaluate_in(c, input, fx, budget, Nesting::default())
        .await
        .0
}

/// Where a run sits among sub-policy runs: how deep, and the path of
/// `sub_policy` node ids that led to it ("" for the top run), which
/// prefixes the node ids its enqueues submit with so that a child's
/// enqueue node never shares its dedupe key with the parent's.
#[derive(Clone, Default)]
pub(crate) struct Nesting {
    pub(crate) depth: usize,
    pub(crate) path: String,
}

/// [`evaluate`] at any depth: the outcome, and the time spent waiting on
/// lookups, submissions and policy resolutions (which a parent does not
/// count against its deadline either).
pub(crate) fn evaluate_in<'a>(
    c: &'a Arc<Compiled>,
    input: Value,
    fx: &'a dyn Effects,
    budget: Duration,
    nest: Nesting,
) -> BoxFuture<'a, (Outcome, Duration)> {
    Box::pin(async move {
        let mut io = Duration::ZERO;
        let o = walk(c, input, fx, budget, &nest, &mut io).await;
        (o, io)
    })
}

async fn walk(
    c: &Arc<Compiled>,
    input: Value,
    fx: &dyn Effects,
    budget: Duration,
    nest: &Nesting,
    io: &mut Duration,
) -> Outcome {
    let begun = Instant::now();
    let mut trace = Vec::new();
    let scope = match Scope::new(&c.plan, input) {
        Ok(s) => s,
        Err(e) => return failed(trace, e, false),
    };
    let mut w = Walk {
        wall: Wall::now(),
        scope,
        at: c.input,
        steps: 0,
    };
    // Time spent waiting on lookups and submissions (`io`): not evaluation.
    // The input node computes nothing: recorded here, not in a job.
    if let CompiledKind::Input { .. } = c.nodes[w.at].kind {
        let node = &c.nodes[w.at];
        if begun.elapsed() >= budget {
            return failed(trace, timeout(budget, &node.id), true);
        }
        w.steps += 1;
        trace.push(entry(&node.id, node.kind_name, now_ms(), Instant::now()));
        match node.next {
            Some(n) => w.at = n,
            None => return failed(trace, NO_OUTPUT.into(), false),
        }
    }
    loop {
        let deadline = deadline_of(begun, *io, budget);
        let at = w.at;
        let node = &c.nodes[at];
        if Instant::now() >= deadline {
            return failed(trace, timeout(budget, &node.id), true);
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        let cc = c.clone();
        let job = Box::new(move || {
            let mut w = w;
            let mut tr = Vec::new();
            let stop = stretch(&cc, &mut w, deadline, budget, &mut tr);
            let _ = tx.send((w, tr, stop));
        });
        let ran = fx.compute(job, deadline).await;
        let stop;
        (w, stop) = match (ran, rx.await) {
            (Ok(()), Ok((w, mut tr, stop))) => {
                trace.append(&mut tr);
                (w, stop)
            }
            (Err(e), _) if Instant::now() < deadline => {
                return failed(trace, format!("node {:?}: {e}", node.id), false)
            }
            _ => return failed(trace, timeout(budget, &node.id), true),
        };
        let node = &c.nodes[w.at];
        let step = match stop {
            Stop::End(Ok(done)) => {
                let (output, termination) = match done {
                    Done::Output(out) => (Some(out), None),
                    Done::Terminated(t) => (None, Some(t)),
                };
                return Outcome {
                    output,
                    trace,
                    error: None,
                    timed_out: false,
                    termination,
                };
            }
            Stop::End(Err((e, timed_out))) => return failed(trace, e, timed_out),
            Stop::Lookups { keys, past } => {
                let io_start = Instant::now();
                let r = lookups(c, w.at, keys, fx, &mut w.scope, &mut trace).await;
                *io += io_start.elapsed();
                (r, past)
            }
            Stop::Enqueue {
                params,
                started,
                t,
                past,
            } => {
                let io_start = Instant::now();
                let at = (started, t);
                let r = enqueue(c, w.at, params, fx, &mut w.scope, at, &nest.path).await;
                *io += io_start.elapsed();
                let (r, te) = r;
                trace.push(te);
                (r, past)
            }
            Stop::SubPolicy {
                input,
                started,
                t,
                past,
            } => {
                let deadline = deadline_of(begun, *io, budget);
                let call = walk_nodes::SubCall {
                    c,
                    at: w.at,
                    input,
                    started,
                    t,
                    deadline,
                    nest,
                };
                let (r, te, child_io) = walk_nodes::sub_policy(call, fx, &mut w.scope).await;
                *io += child_io;
                trace.push(te);
                match r {
                    // The child ran out of the time this run lent it.
                    Err((e, true)) => {
                        let _ = e;
                        return failed(trace, timeout(budget, &node.id), true);
                    }
                    Err((e, false)) => (Err(e), past),
                    Ok(n) => (Ok(n), past),
                }
            }
        };
        match step {
            (Ok(Some(n)), _) => w.at = n,
            (Ok(None), _) => return failed(trace, NO_OUTPUT.into(), false),
            (Err(_), true) => return failed(trace, timeout(budget, &node.id), true),
            (Err(e), false) => {
                let id = trace.last().map(|t| t.id.clone()).unwrap_or_default();
                return failed(trace, format!("node {id:?}: {e}"), false);
            }
        }
    }
}

/// Submits the job of the enqueue node `at`: the next node or why not,
/// and the node's trace entry.
async fn enqueue(
    c: &Compiled,
    at: usize,
    params: Result<Map<String, Json>, String>,
    fx: &dyn Effects,
    scope: &mut Scope,
    (started, t): (u64, Instant),
    path: &str,
) -> (Result<Option<usize>, String>, TraceEntry) {
    let node = &c.nodes[at];
    let CompiledKind::Enqueue {
        queue, kind, name, ..
    } = &node.kind
    else {
        let mut te = entry(&node.id, node.kind_name, started, t);
        te.error = Some("internal: not an enqueue".into());
        return (Err("internal: not an enqueue".into()), te);
    };
    let r = match params {
        Err(e) => Err(e),
        Ok(p) => fx
            .enqueue(
                &format!("{path}{}", node.id),
                queue,
                kind,
                Json::Object(p.clone()),
            )
            .await
            .map(|job| (job, p))
            .map_err(|e| format!("enqueue to {queue:?}: {e}")),
    };
    let mut te = entry(&node.id, node.kind_name, started, t);
    let r = r.and_then(|(job, p)| {
        let id = job.clone().map(Json::String).unwrap_or(Json::Null);
        if name.is_some() {
            for &slot in &c.plan.writes[at] {
                scope.set(slot, to_cel(&id))?;
            }
        }
        te.output = Some(serde_json::json!({
            "job_id": id,
            "queue": queue,
            "kind": kind,
            "params": Json::Object(p),
            "submitted": job.is_some(),
        }));
        Ok(node.next)
    });
    if let Err(e) = &r {
        te.error = Some(e.clone());
    }
    (r, te)
}

/// Runs the group of lookups starting at `at` concurrently and binds their
/// results; the next node, or the first failure not absorbed by an
/// `on_error`.
async fn lookups(
    c: &Compiled,
    at: usize,
    keys: Vec<Result<String, String>>,
    fx: &dyn Effects,
    scope: &mut Scope,
    trace: &mut Vec<TraceEntry>,
) -> Result<Option<usize>, String> {
    let group = &c.plan.groups[at];
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
        let CompiledKind::Lookup { on_error, .. } = &n.kind else {
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
        let bound = bound.and_then(|v| {
            for &slot in &c.plan.writes[i] {
                scope.set(slot, to_cel(&v))?;
            }
            Ok(v)
        });
        match bound {
            Ok(v) => {
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
