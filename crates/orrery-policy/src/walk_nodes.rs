//! The evaluation of the node types added with cluster version 4 (see
//! [`crate::graph_nodes`]): a decision table's rows, a terminate node's
//! reason, and a sub-policy's run of another policy.

use crate::eval::{check_input, key_text, to_cel, Effects, TraceEntry};
use crate::graph::{Compiled, CompiledKind, Expression};
use crate::limits::MAX_SUB_POLICY_DEPTH;
use crate::plan::Scope;
use crate::walk::{entry, eval, evaluate_in, Nesting};
use cel::{Context, Value};
use serde_json::{json, Map, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The rows of a decision table that match, and the value of each column:
/// `first`: the first matching row's values, else the default's, else
/// null; `collect`: per column the list of the matching rows' values in
/// row order, else a one-element list of the default's value, else `[]`.
pub(crate) fn table(
    ctx: &Context,
    collect: bool,
    rows: &[(Expression, Vec<Expression>)],
    default: Option<&[Expression]>,
    columns: &[String],
) -> Result<(Vec<usize>, Vec<Value>), String> {
    let mut matched = Vec::new();
    for (i, (when, _)) in rows.iter().enumerate() {
        match eval(ctx, when) {
            Ok(Value::Bool(true)) => {
                matched.push(i);
                if !collect {
                    break;
                }
            }
            Ok(Value::Bool(false)) => {}
            Ok(other) => {
                return Err(format!(
                    "rules[{i}].when {:?} is not a bool: {other:?}",
                    when.source
                ))
            }
            Err(e) => return Err(format!("rules[{i}].when: {e}")),
        }
    }
    let values = |outs: &[Expression], what: &str| -> Result<Vec<Value>, String> {
        outs.iter()
            .zip(columns)
            .map(|(e, c)| eval(ctx, e).map_err(|err| format!("{what}.{c}: {err}")))
            .collect()
    };
    let vals = match (matched.is_empty(), default, collect) {
        (true, Some(d), false) => values(d, "default")?,
        (true, Some(d), true) => values(d, "default")?
            .into_iter()
            .map(|v| Value::List(Arc::new(vec![v])))
            .collect(),
        (true, None, false) => vec![Value::Null; columns.len()],
        (true, None, true) => (0..columns.len())
            .map(|_| Value::List(Arc::new(Vec::new())))
            .collect(),
        (false, _, false) => values(
            &rows[matched[0]].1,
            &format!("rules[{}].output", matched[0]),
        )?,
        (false, _, true) => {
            let mut lists: Vec<Vec<Value>> = vec![Vec::with_capacity(matched.len()); columns.len()];
            for &i in &matched {
                let row = values(&rows[i].1, &format!("rules[{i}].output"))?;
                for (l, v) in lists.iter_mut().zip(row) {
                    l.push(v);
                }
            }
            lists
                .into_iter()
                .map(|l| Value::List(Arc::new(l)))
                .collect()
        }
    };
    Ok((matched, vals))
}

/// A terminate node's reason: a string as it is, `null` as none, any other
/// value as JSON text.
pub(crate) fn reason(ctx: &Context, reason: Option<&Expression>) -> Result<Option<String>, String> {
    let Some(e) = reason else {
        return Ok(None);
    };
    match eval(ctx, e).map_err(|err| format!("reason: {err}"))? {
        Value::Null => Ok(None),
        v => key_text(&v)
            .map(Some)
            .map_err(|err| format!("reason: {err}")),
    }
}

/// A sub_policy node about to run its child.
pub(crate) struct SubCall<'a> {
    pub(crate) c: &'a Arc<Compiled>,
    pub(crate) at: usize,
    /// The child's input, as the node's `input` mapped it.
    pub(crate) input: Result<Map<String, Json>, String>,
    pub(crate) started: u64,
    pub(crate) t: Instant,
    /// The parent's deadline: the child gets what is left of it.
    pub(crate) deadline: Instant,
    pub(crate) nest: &'a Nesting,
}

/// Runs the child policy of a sub_policy node and binds its result:
/// `{output, termination, version}` (the child's output, or `null` when a
/// terminate node ended it, then its termination). Returns the next node
/// or the error and whether it is the deadline's, the node's trace entry
/// (the child's trace nested in it) and the time spent waiting (resolving
/// the child, and the child's own waits).
pub(crate) async fn sub_policy(
    call: SubCall<'_>,
    fx: &dyn Effects,
    scope: &mut Scope,
) -> (Result<Option<usize>, (String, bool)>, TraceEntry, Duration) {
    let SubCall {
        c,
        at,
        input,
        started,
        t,
        deadline,
        nest,
    } = call;
    let node = &c.nodes[at];
    let mut io = Duration::ZERO;
    let mut children = Vec::new();
    let r = run_child(c, at, input, deadline, nest, fx, &mut io, &mut children).await;
    let mut te = entry(&node.id, node.kind_name, started, t);
    te.children = children;
    let r = r.and_then(|bound| {
        for &slot in &c.plan.writes[at] {
            scope.set(slot, to_cel(&bound)).map_err(|e| (e, false))?;
        }
        te.output = Some(bound);
        Ok(node.next)
    });
    if let Err((e, _)) = &r {
        te.error = Some(e.clone());
    }
    (r, te, io)
}

#[allow(clippy::too_many_arguments)]
async fn run_child(
    c: &Arc<Compiled>,
    at: usize,
    input: Result<Map<String, Json>, String>,
    deadline: Instant,
    nest: &Nesting,
    fx: &dyn Effects,
    io: &mut Duration,
    children: &mut Vec<TraceEntry>,
) -> Result<Json, (String, bool)> {
    let node = &c.nodes[at];
    let CompiledKind::SubPolicy {
        policy, version, ..
    } = &node.kind
    else {
        return Err(("internal: not a sub_policy node".into(), false));
    };
    let input = input.map_err(|e| (e, false))?;
    if nest.depth + 1 > MAX_SUB_POLICY_DEPTH {
        return Err((
            format!(
                "sub_policy runs are nested more than {MAX_SUB_POLICY_DEPTH} deep (policies that run each other in a cycle?)"
            ),
            false,
        ));
    }
    let waited = Instant::now();
    let resolved = fx.sub_policy(policy, *version).await;
    *io += waited.elapsed();
    let (v, child) = resolved.map_err(|e| (format!("policy {policy:?}: {e}"), false))?;
    let child_input = check_input(&child, &Json::Object(input)).map_err(|e| {
        (
            format!("the input of policy {policy:?} version {v}: {e}"),
            false,
        )
    })?;
    // What is left of the parent's deadline, moved by the wait above
    // (which does not count against it).
    let left = (deadline + waited.elapsed()).saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(("past the deadline".into(), true));
    }
    let nested = Nesting {
        depth: nest.depth + 1,
        path: format!("{}{}/", nest.path, node.id),
    };
    let (o, child_io) = evaluate_in(&child, child_input, fx, left, nested).await;
    *io += child_io;
    *children = o.trace;
    if let Some(e) = o.error {
        if o.timed_out {
            return Err((e, true));
        }
        return Err((format!("policy {policy:?} version {v} failed: {e}"), false));
    }
    Ok(json!({
        "output": o.output,
        "termination": o.termination,
        "version": v,
    }))
}
