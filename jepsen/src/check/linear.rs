//! Linearizability of per-key registers (read / write / cas), by the
//! Wing–Gong search with Lowe's memoisation (as in Porcupine and Knossos):
//! walk the history's call and return events, tentatively linearize any
//! pending call whose effect the model accepts, backtrack when a return is
//! reached whose operation is not linearized yet, and never revisit a
//! (linearized set, register value) configuration.
//!
//! Keys are independent (P-compositionality), so each key is checked alone.
//! `fail` operations did not happen and are dropped; `info` operations (and
//! operations without a completion) may take effect at any time after their
//! invocation, or never: they have no return event, and the search succeeds
//! once only such operations are left.

use crate::history::{canonical, f, Op, OpType, Process};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A register operation as the model sees it.
#[derive(Clone, Debug)]
pub struct RegOp {
    /// History index of the invocation.
    pub invoke_index: u64,
    /// History index of the completion (`None` for info / no completion).
    pub complete_index: Option<u64>,
    pub kind: RegKind,
    /// Rendered lines, for reports.
    pub lines: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegKind {
    /// Read that returned this value (`None`: absent).
    Read(Option<String>),
    Write(String),
    Cas(String, String),
}

type State = Option<String>;

fn step(state: &State, k: &RegKind) -> Option<State> {
    match k {
        RegKind::Read(v) => (state == v).then(|| state.clone()),
        RegKind::Write(v) => Some(Some(v.clone())),
        RegKind::Cas(e, n) => (state.as_deref() == Some(e.as_str())).then(|| Some(n.clone())),
    }
}

/// The outcome for one key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyResult {
    pub key: String,
    /// `true`, `false`, or `"unknown"` when the search budget ran out.
    pub valid: Value,
    pub ops: usize,
    /// For a violation: the smallest window of operations found that is
    /// not linearizable from any state the register could have had before
    /// it, as rendered history lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Vec<String>>,
    /// History indexes (invocations) of the window's operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_indexes: Option<Vec<u64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LinearResult {
    pub valid: Value,
    pub keys: usize,
    pub ops: usize,
    /// Keys that are not linearizable (at most 10 reported in full).
    pub failures: Vec<KeyResult>,
    pub unknown_keys: Vec<String>,
}

fn value_str(v: &Value) -> Option<String> {
    if v.is_null() {
        None
    } else {
        Some(canonical(v))
    }
}

/// Groups a history's register operations by key, pairing each invocation
/// with its process's next completion. Returns an error for malformed
/// histories (a completion without an invocation, a cas without a pair).
pub fn register_ops(history: &[Op]) -> Result<BTreeMap<String, Vec<RegOp>>, String> {
    let mut pending: HashMap<u64, &Op> = HashMap::new();
    let mut out: BTreeMap<String, Vec<RegOp>> = BTreeMap::new();
    let mut finish = |inv: &Op, done: Option<&Op>| -> Result<(), String> {
        let Some(key) = inv.key.clone() else {
            return Ok(());
        };
        let kind_done = done.map(|d| d.kind).unwrap_or(OpType::Info);
        if kind_done == OpType::Fail {
            return Ok(());
        }
        let kind = match inv.f.as_str() {
            f::READ => {
                if kind_done != OpType::Ok {
                    return Ok(()); // an unknown read constrains nothing
                }
                RegKind::Read(done.and_then(|d| value_str(&d.value)))
            }
            f::WRITE => RegKind::Write(
                value_str(&inv.value)
                    .ok_or_else(|| format!("write without value: {}", inv.describe()))?,
            ),
            f::CAS => match inv.value.as_array().map(|a| a.as_slice()) {
                Some([e, n]) => RegKind::Cas(canonical(e), canonical(n)),
                _ => {
                    return Err(format!(
                        "cas value must be [expected, new]: {}",
                        inv.describe()
                    ))
                }
            },
            _ => return Ok(()),
        };
        let mut lines = vec![inv.describe()];
        if let Some(d) = done {
            lines.push(d.describe());
        }
        out.entry(key).or_default().push(RegOp {
            invoke_index: inv.index,
            complete_index: done.filter(|d| d.kind == OpType::Ok).map(|d| d.index),
            kind,
            lines,
        });
        Ok(())
    };
    for op in history {
        let Process::Client(p) = op.process else {
            continue;
        };
        if op.kind == OpType::Invoke {
            if let Some(prev) = pending.insert(p, op) {
                return Err(format!(
                    "process {p} invoked {} while {} was pending",
                    op.describe(),
                    prev.describe()
                ));
            }
        } else {
            let inv = pending
                .remove(&p)
                .ok_or_else(|| format!("completion without invocation: {}", op.describe()))?;
            finish(inv, Some(op))?;
        }
    }
    let mut rest: Vec<&Op> = pending.into_values().collect();
    rest.sort_by_key(|o| o.index);
    for inv in rest {
        finish(inv, None)?;
    }
    for ops in out.values_mut() {
        ops.sort_by_key(|o| o.invoke_index);
    }
    Ok(out)
}

/// Search outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    NotLinearizable,
    Unknown,
}

#[derive(Clone, Copy)]
enum Ev {
    Call(usize),
    Ret(usize),
}

/// Checks `ops` from initial state `init` within `budget` search steps.
pub fn check_ops(ops: &[RegOp], init: &State, budget: u64) -> Outcome {
    let n = ops.len();
    if n == 0 {
        return Outcome::Linearizable;
    }
    // Events in real-time order: history indexes are real-time order.
    let mut evs: Vec<(u64, Ev)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        evs.push((o.invoke_index, Ev::Call(i)));
        if let Some(c) = o.complete_index {
            evs.push((c, Ev::Ret(i)));
        }
    }
    evs.sort_by_key(|e| e.0);
    let evs: Vec<Ev> = evs.into_iter().map(|e| e.1).collect();
    let m = evs.len();
    // Doubly linked list over event positions 0..m; m is the head
    // sentinel and m + 1 means "none".
    let none = m + 1;
    let mut nxt = vec![none; m + 1];
    let mut prv = vec![m; m + 1];
    {
        let mut last = m;
        for (i, p) in prv.iter_mut().enumerate().take(m) {
            nxt[last] = i;
            *p = last;
            last = i;
        }
        nxt[last] = none;
    }
    let mut ret_pos = vec![none; n];
    for (pos, e) in evs.iter().enumerate() {
        if let Ev::Ret(i) = e {
            ret_pos[*i] = pos;
        }
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = init.clone();
    let mut cur = nxt[m];
    let mut steps = 0u64;

    let unlink = |nxt: &mut Vec<usize>, prv: &mut Vec<usize>, p: usize| {
        let (a, b) = (prv[p], nxt[p]);
        nxt[a] = b;
        if b != none {
            prv[b] = a;
        }
    };
    let relink = |nxt: &mut Vec<usize>, prv: &mut Vec<usize>, p: usize| {
        let (a, b) = (prv[p], nxt[p]);
        nxt[a] = p;
        if b != none {
            prv[b] = p;
        }
    };

    loop {
        steps += 1;
        if steps > budget {
            return Outcome::Unknown;
        }
        if cur == none {
            // Only calls without returns (info operations) are left: they
            // may never have taken effect.
            return Outcome::Linearizable;
        }
        match evs[cur] {
            Ev::Call(i) => {
                let new_state = step(&state, &ops[i].kind);
                let mut advanced = false;
                if let Some(ns) = new_state {
                    linearized[i / 64] |= 1 << (i % 64);
                    if cache.insert((linearized.clone(), ns.clone())) {
                        stack.push((cur, state.clone()));
                        state = ns;
                        unlink(&mut nxt, &mut prv, cur);
                        if ret_pos[i] != none {
                            unlink(&mut nxt, &mut prv, ret_pos[i]);
                        }
                        cur = nxt[m];
                        advanced = true;
                    } else {
                        linearized[i / 64] &= !(1 << (i % 64));
                    }
                }
                if !advanced {
                    cur = nxt[cur];
                }
            }
            Ev::Ret(_) => {
                // An operation returned before being linearized: undo the
                // last choice and try the next candidate after it.
                let Some((pos, s)) = stack.pop() else {
                    return Outcome::NotLinearizable;
                };
                let Ev::Call(i) = evs[pos] else {
                    return Outcome::NotLinearizable;
                };
                linearized[i / 64] &= !(1 << (i % 64));
                state = s;
                if ret_pos[i] != none {
                    relink(&mut nxt, &mut prv, ret_pos[i]);
                }
                relink(&mut nxt, &mut prv, pos);
                cur = nxt[pos];
            }
        }
    }
}

/// The smallest failing window: the shortest prefix (by completion) that
/// is already not linearizable, then cut from the front at quiescent
/// points (every earlier operation completed before any later one began)
/// as long as the rest fails from every state the register could have had.
fn smallest_window(ops: &[RegOp], budget: u64) -> Vec<RegOp> {
    // Prefix by completion order: ops completed by the k-th completion, plus
    // ops invoked before it (still pending, so treated as unknown).
    let mut completions: Vec<u64> = ops.iter().filter_map(|o| o.complete_index).collect();
    completions.sort_unstable();
    let prefix = |t: u64| -> Vec<RegOp> {
        ops.iter()
            .filter(|o| o.invoke_index <= t)
            .map(|o| {
                let mut o = o.clone();
                if o.complete_index.is_some_and(|c| c > t) {
                    o.complete_index = None;
                }
                o
            })
            .filter(|o| o.complete_index.is_some() || !matches!(o.kind, RegKind::Read(_)))
            .collect()
    };
    let (mut lo, mut hi) = (0usize, completions.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi) / 2;
        if check_ops(&prefix(completions[mid]), &None, budget) == Outcome::NotLinearizable {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let window = match completions.get(lo) {
        Some(&t) => prefix(t),
        None => ops.to_vec(),
    };
    // Front cuts, latest first: the first that still fails is the smallest.
    let mut cuts: Vec<usize> = Vec::new();
    for c in 1..window.len() {
        let (before, after) = window.split_at(c);
        let first_invoke = after
            .iter()
            .map(|o| o.invoke_index)
            .min()
            .unwrap_or(u64::MAX);
        if before
            .iter()
            .all(|o| o.complete_index.is_some_and(|ci| ci < first_invoke))
        {
            cuts.push(c);
        }
    }
    for &c in cuts.iter().rev() {
        let (before, after) = window.split_at(c);
        let mut inits: Vec<State> = vec![None];
        for o in before {
            match &o.kind {
                RegKind::Write(v) | RegKind::Cas(_, v) => inits.push(Some(v.clone())),
                RegKind::Read(v) => inits.push(v.clone()),
            }
        }
        if inits
            .iter()
            .all(|s| check_ops(after, s, budget) == Outcome::NotLinearizable)
        {
            return after.to_vec();
        }
    }
    window
}

/// Checks every key of a register history.
pub fn check(history: &[Op], budget_per_key: u64) -> Result<LinearResult, String> {
    let by_key = register_ops(history)?;
    let mut failures = Vec::new();
    let mut unknown = Vec::new();
    let mut total = 0;
    for (key, ops) in &by_key {
        total += ops.len();
        match check_ops(ops, &None, budget_per_key) {
            Outcome::Linearizable => {}
            Outcome::Unknown => unknown.push(key.clone()),
            Outcome::NotLinearizable => {
                let (window, window_indexes) = if failures.len() < 10 {
                    let w = smallest_window(ops, budget_per_key);
                    (
                        Some(w.iter().flat_map(|o| o.lines.clone()).collect()),
                        Some(w.iter().map(|o| o.invoke_index).collect()),
                    )
                } else {
                    (None, None)
                };
                failures.push(KeyResult {
                    key: key.clone(),
                    valid: Value::Bool(false),
                    ops: ops.len(),
                    window,
                    window_indexes,
                });
            }
        }
    }
    let valid = if !failures.is_empty() {
        Value::Bool(false)
    } else if !unknown.is_empty() {
        Value::String("unknown".into())
    } else {
        Value::Bool(true)
    };
    Ok(LinearResult {
        valid,
        keys: by_key.len(),
        ops: total,
        failures,
        unknown_keys: unknown,
    })
}
