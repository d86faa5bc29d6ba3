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
//! `info` reads constrain nothing and are dropped, as are `info` writes and
//! cas whose new value nothing observes ([`prune_unobserved`]).
//!
//! A violation comes with the smallest failing window (see [`Window`] and
//! `smallest_window`). Everything is bounded by a step budget: when it runs
//! out the key's verdict is `"unknown"`.

use crate::history::{canonical, f, Op, OpType, Process};
use crate::results::{CheckerReport, Validity};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
    /// The key.
    pub key: String,
    /// `false`, or `"unknown"` when the search budget ran out.
    pub valid: Validity,
    /// Operations of the key that the search considered (after dropping
    /// `fail`ed ones, `info` reads, and unobserved `info` writes).
    pub ops: usize,
    /// For a violation: the smallest failing window (see [`Window`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// The smallest failing window of a key: a set of operations that is not
/// linearizable from any value the register could have held before them.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// History indexes of the window's operations (their invocations), in
    /// invocation order.
    pub indexes: Vec<u64>,
    /// The window's history records, rendered (invocation and completion
    /// of each operation; a completion after `failing_completion` is shown
    /// but the operation counts as still pending).
    pub lines: Vec<String>,
    /// The history index of the completion at which the key's history
    /// first stops being linearizable: the shortest failing prefix ends
    /// here.
    pub failing_completion: u64,
    /// The completion index through which the key's history is still
    /// linearizable (the previous completion), if any.
    pub linearizable_through: Option<u64>,
    /// The values the register may hold after that linearizable prefix
    /// (`null`: absent), over all its linearizations; at most 20, `None`
    /// if the enumeration ran out of budget.
    pub states_after_linearizable_prefix: Option<Vec<Value>>,
    /// The initial values the window was checked from (it fails from
    /// every one): absent, and every value written by an operation that
    /// may have taken effect before the window's first completed
    /// operation was invoked (at most 50 listed).
    pub states_before: Vec<Value>,
}

/// The linearizability checker's report.
#[derive(Clone, Debug, Serialize)]
pub struct LinearResult {
    /// `false` if any key is not linearizable, else `"unknown"` if any
    /// key's search ran out of budget, else `true`.
    pub valid: Validity,
    /// Number of keys.
    pub keys: usize,
    /// Number of register operations considered, over all keys.
    pub ops: usize,
    /// Keys that are not linearizable (windows computed for the first 10).
    pub failures: Vec<KeyResult>,
    /// Keys whose search ran out of budget.
    pub unknown_keys: Vec<String>,
}

impl CheckerReport for LinearResult {
    fn validity(&self) -> Validity {
        self.valid
    }
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
    /// Some linearization exists.
    Linearizable,
    /// No linearization exists.
    NotLinearizable,
    /// The search budget ran out first.
    Unknown,
}

#[derive(Clone, Copy)]
enum Ev {
    Call(usize),
    Ret(usize),
}

/// Drops `info` writes and cas (unknown outcome, hence optional) whose new
/// value nothing ever observes: no `ok` read returns it and no `ok` cas (or
/// kept `info` cas) expects it. Such an operation can be removed from any
/// linearization without invalidating it (after it only a write could be
/// linearized anyway), so dropping it preserves the verdict while keeping
/// the search from trying every subset of a partition's timed-out writes.
pub fn prune_unobserved(ops: &[RegOp]) -> Vec<RegOp> {
    let mut observed: HashSet<&str> = HashSet::new();
    for o in ops {
        if o.complete_index.is_some() {
            match &o.kind {
                RegKind::Read(Some(v)) | RegKind::Cas(v, _) => {
                    observed.insert(v);
                }
                _ => {}
            }
        }
    }
    loop {
        let before = observed.len();
        for o in ops {
            if let (None, RegKind::Cas(e, n)) = (o.complete_index, &o.kind) {
                if observed.contains(n.as_str()) {
                    observed.insert(e);
                }
            }
        }
        if observed.len() == before {
            break;
        }
    }
    ops.iter()
        .filter(|o| match (&o.kind, o.complete_index) {
            (RegKind::Write(n) | RegKind::Cas(_, n), None) => observed.contains(n.as_str()),
            _ => true,
        })
        .cloned()
        .collect()
}

/// Checks `ops` from initial state `init` within `budget` search steps.
pub fn check_ops(ops: &[RegOp], init: &State, budget: u64) -> Outcome {
    search(ops, init, budget, None)
}

/// Every value the register can hold after `ops` (from `init`), over all
/// their linearizations (pending and `info` operations taking effect or
/// not). Empty when `ops` is not linearizable; `None` when the budget ran
/// out.
pub fn final_states(ops: &[RegOp], init: &State, budget: u64) -> Option<BTreeSet<State>> {
    let mut out = BTreeSet::new();
    match search(ops, init, budget, Some(&mut out)) {
        Outcome::Unknown => None,
        _ => Some(out),
    }
}

/// The Wing–Gong / Lowe search. With `collect`, does not stop at the first
/// linearization but records the final state of every one (the memo keeps
/// this finite) and reports whether any was found.
fn search(
    ops: &[RegOp],
    init: &State,
    budget: u64,
    mut collect: Option<&mut BTreeSet<State>>,
) -> Outcome {
    let n = ops.len();
    if n == 0 {
        if let Some(c) = collect {
            c.insert(init.clone());
        }
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
    let mut found = false;

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
        let backtrack = if cur == none {
            // Only calls without returns (info operations) are left: they
            // may never have taken effect.
            match collect.as_deref_mut() {
                None => return Outcome::Linearizable,
                Some(c) => {
                    c.insert(state.clone());
                    found = true;
                    true
                }
            }
        } else {
            match evs[cur] {
                Ev::Call(i) => {
                    let mut advanced = false;
                    if let Some(ns) = step(&state, &ops[i].kind) {
                        linearized[i / 64] |= 1 << (i % 64);
                        if cache.insert((linearized.clone(), ns.clone())) {
                            stack.push((cur, std::mem::replace(&mut state, ns)));
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
                    false
                }
                // An operation returned before being linearized.
                Ev::Ret(_) => true,
            }
        };
        if backtrack {
            // Undo the last choice and try the next candidate after it.
            let Some((pos, s)) = stack.pop() else {
                return if found {
                    Outcome::Linearizable
                } else {
                    Outcome::NotLinearizable
                };
            };
            let Ev::Call(i) = evs[pos] else {
                unreachable!("only calls are pushed");
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

fn state_json(s: &State) -> Value {
    s.as_deref()
        .map(|v| serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())))
        .unwrap_or(Value::Null)
}

/// The key's operations as of history index `t`: those invoked by then,
/// with completions after `t` treated as pending (unknown outcome) and
/// reads still pending dropped.
fn prefix(ops: &[RegOp], t: u64) -> Vec<RegOp> {
    let v: Vec<RegOp> = ops
        .iter()
        .filter(|o| o.invoke_index <= t)
        .map(|o| {
            let mut o = o.clone();
            if o.complete_index.is_some_and(|c| c > t) {
                o.complete_index = None;
            }
            o
        })
        .filter(|o| o.complete_index.is_some() || !matches!(o.kind, RegKind::Read(_)))
        .collect();
    prune_unobserved(&v)
}

/// The smallest failing window of a non-linearizable key.
///
/// 1. The shortest prefix by completion that is already not linearizable
///    (binary search: a prefix of a linearizable history is linearizable).
/// 2. Shrink it from the front: drop the `c` earliest-invoked operations
///    (those that completed; still-pending ones stay) when every completed
///    operation left is invoked after all dropped ones completed, as long
///    as what is left fails from every value in `states_before` (absent,
///    or written by an operation invoked before the first completed
///    operation left). Soundness: in a linearization of the prefix, the
///    dropped operations come before every completed operation left, and
///    the value at that point is in `states_before`; pending operations
///    left that took effect earlier can be left out (they are optional).
///    Failing is monotone in `c` (a failing cut implies every earlier
///    cut fails), so the largest such `c` is found by binary search.
fn smallest_window(ops: &[RegOp], budget: u64) -> Window {
    let mut completions: Vec<u64> = ops.iter().filter_map(|o| o.complete_index).collect();
    completions.sort_unstable();
    let (mut lo, mut hi) = (0usize, completions.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi) / 2;
        if check_ops(&prefix(ops, completions[mid]), &None, budget) == Outcome::NotLinearizable {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let failing_completion = completions.get(lo).copied().unwrap_or(0);
    let window = match completions.get(lo) {
        Some(&t) => prefix(ops, t),
        None => ops.to_vec(),
    };
    let linearizable_through = lo.checked_sub(1).map(|i| completions[i]);
    let states_after_linearizable_prefix = match linearizable_through {
        Some(t) => final_states(&prefix(ops, t), &None, budget)
            .map(|s| s.iter().take(20).map(state_json).collect()),
        None => Some(vec![Value::Null]),
    };

    let kept = |c: usize| -> Vec<RegOp> {
        let (before, after) = window.split_at(c);
        let v: Vec<RegOp> = before
            .iter()
            .filter(|o| o.complete_index.is_none())
            .chain(after)
            .cloned()
            .collect();
        prune_unobserved(&v)
    };
    // Valid cuts: every completed operation before the cut completed
    // before any completed operation after it was invoked.
    let mut cuts: Vec<usize> = Vec::new();
    let mut first_invoke_after = vec![u64::MAX; window.len() + 1];
    for c in (0..window.len()).rev() {
        first_invoke_after[c] = first_invoke_after[c + 1];
        if window[c].complete_index.is_some() {
            first_invoke_after[c] = window[c].invoke_index;
        }
    }
    let mut last_done_before = 0u64;
    for c in 1..window.len() {
        if let Some(d) = window[c - 1].complete_index {
            last_done_before = last_done_before.max(d);
        }
        if first_invoke_after[c] != u64::MAX && last_done_before < first_invoke_after[c] {
            cuts.push(c);
        }
    }
    // The values the register may hold at a cut: absent, or written by an
    // operation invoked before the first completed operation after it.
    let inits = |c: usize| -> BTreeSet<State> {
        let limit = first_invoke_after[c];
        let mut s: BTreeSet<State> = BTreeSet::new();
        s.insert(None);
        for o in window.iter().filter(|o| o.invoke_index < limit) {
            if let RegKind::Write(v) | RegKind::Cas(_, v) = &o.kind {
                s.insert(Some(v.clone()));
            }
        }
        s
    };
    let fails = |c: usize| {
        let k = kept(c);
        inits(c)
            .iter()
            .all(|s| check_ops(&k, s, budget) == Outcome::NotLinearizable)
    };
    // Largest cut that still fails (cuts[..a] fail, cuts[a..] don't).
    let (mut a, mut b) = (0usize, cuts.len());
    while a < b {
        let mid = (a + b) / 2;
        if fails(cuts[mid]) {
            a = mid + 1;
        } else {
            b = mid;
        }
    }
    let (small, states_before) = if a > 0 {
        (kept(cuts[a - 1]), inits(cuts[a - 1]))
    } else {
        (window.clone(), BTreeSet::from([None]))
    };
    Window {
        indexes: small.iter().map(|o| o.invoke_index).collect(),
        lines: small.iter().flat_map(|o| o.lines.clone()).collect(),
        failing_completion,
        linearizable_through,
        states_after_linearizable_prefix,
        states_before: states_before.iter().take(50).map(state_json).collect(),
    }
}

/// Checks every key of a register history, each within `budget_per_key`
/// search steps (the window search of a failing key gets the same budget
/// per sub-search).
pub fn check(history: &[Op], budget_per_key: u64) -> Result<LinearResult, String> {
    let by_key = register_ops(history)?;
    let mut failures = Vec::new();
    let mut unknown = Vec::new();
    let mut total = 0;
    for (key, ops) in &by_key {
        let ops = prune_unobserved(ops);
        total += ops.len();
        match check_ops(&ops, &None, budget_per_key) {
            Outcome::Linearizable => {}
            Outcome::Unknown => unknown.push(key.clone()),
            Outcome::NotLinearizable => {
                let window = (failures.len() < 10).then(|| smallest_window(&ops, budget_per_key));
                failures.push(KeyResult {
                    key: key.clone(),
                    valid: Validity::False,
                    ops: ops.len(),
                    window,
                });
            }
        }
    }
    let valid = if !failures.is_empty() {
        Validity::False
    } else if !unknown.is_empty() {
        Validity::Unknown
    } else {
        Validity::True
    };
    Ok(LinearResult {
        valid,
        keys: by_key.len(),
        ops: total,
        failures,
        unknown_keys: unknown,
    })
}
