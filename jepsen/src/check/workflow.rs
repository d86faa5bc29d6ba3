//! The workflow checker (for the `workflow` workload).
//!
//! Every workflow is the diamond [`DAG`]: `a -> {b, c} -> d`, one job per
//! step. Operations: `start` (ok value: the workflow id), `claim` (ok value
//! `{"job", "token", "workflow", "step"}`, read from the claimed job's
//! params), `complete` (invoke value `{"job", "token", "workflow",
//! "step"}`), and a final `read` whose ok value is `{"workflows": {id:
//! {"state": s, "steps": {step: [job ids]}}}}` (every workflow with a job in
//! the queue, and every acknowledged one).
//!
//! Checked from the history alone:
//! - **order**: no step's job is claimed (the claim's completion) before a
//!   completion of each of its dependencies' jobs was invoked, one that did
//!   not fail. A dependency can only have succeeded through such a
//!   completion, so a claim that returns before any was even sent ran its
//!   step before its dependency finished.
//! - **exactly once**: no job is completed (ok) under two tokens, and no step
//!   of a workflow is claimed as two different jobs.
//! - **no loss**: every workflow acknowledged as started is in the final
//!   read, running or in a terminal state.

use crate::history::{canonical, f, Op, OpType, Process};
use crate::results::{CheckerReport, Validity};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Start of a workflow; ok value: its id.
pub const START: &str = "start";

/// The workload's workflow: each step and the steps it depends on.
pub const DAG: [(&str, &[&str]); 4] =
    [("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];

/// A string's text; any other value's canonical JSON.
fn text(v: &serde_json::Value) -> String {
    v.as_str().map(String::from).unwrap_or_else(|| canonical(v))
}

fn deps_of(step: &str) -> Option<&'static [&'static str]> {
    DAG.iter().find(|(s, _)| *s == step).map(|(_, d)| *d)
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkflowResult {
    /// The verdict (`"unknown"` without a final read).
    pub valid: Validity,
    /// Workflows acknowledged as started.
    pub started: usize,
    /// Per final state, how many workflows the final read found.
    pub final_states: BTreeMap<String, usize>,
    /// Step jobs claimed (ok) and completed (ok).
    pub claims: usize,
    pub completed: usize,
    /// Claims that returned before a completion of a dependency was sent:
    /// `"<workflow>/<step> before <dependency> (op <index>)"`.
    pub early: Vec<String>,
    /// Jobs completed (ok) under more than one token.
    pub duplicated: Vec<String>,
    /// `<workflow>/<step>` claimed as more than one job.
    pub split: Vec<String>,
    /// Acknowledged workflows missing from the final read.
    pub lost: Vec<String>,
    /// Claims of steps the DAG does not have, or without workflow/step.
    pub malformed: Vec<String>,
}

/// Checks a workflow history (see the module documentation).
pub fn check(history: &[Op]) -> Result<WorkflowResult, String> {
    let mut pending: HashMap<u64, &Op> = HashMap::new();
    let mut started = BTreeSet::new();
    // (workflow, step) -> index of the first invocation of a completion of
    // its job that did not fail (ok, info, or never answered).
    let mut completion_sent: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut claims: Vec<(String, String, u64)> = Vec::new();
    let mut step_jobs: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut tokens: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut malformed = Vec::new();
    let mut final_read: Option<&serde_json::Value> = None;
    let sent = |inv: &Op, map: &mut BTreeMap<(String, String), u64>| {
        let v = &inv.value;
        let key = (text(&v["workflow"]), text(&v["step"]));
        let e = map.entry(key).or_insert(inv.index);
        *e = (*e).min(inv.index);
    };
    for op in history {
        let Process::Client(p) = op.process else {
            continue;
        };
        if op.kind == OpType::Invoke {
            pending.insert(p, op);
            continue;
        }
        let Some(inv) = pending.remove(&p) else {
            return Err(format!("completion without invocation: {}", op.describe()));
        };
        match (inv.f.as_str(), op.kind) {
            (START, OpType::Ok) => {
                started.insert(text(&op.value));
            }
            (f::CLAIM, OpType::Ok) => {
                let v = &op.value;
                let (w, s) = (text(&v["workflow"]), text(&v["step"]));
                if v["workflow"].is_null() || deps_of(&s).is_none() {
                    malformed.push(op.describe());
                    continue;
                }
                step_jobs
                    .entry((w.clone(), s.clone()))
                    .or_default()
                    .insert(text(&v["job"]));
                claims.push((w, s, op.index));
            }
            (f::COMPLETE, kind) => {
                if kind != OpType::Fail {
                    sent(inv, &mut completion_sent);
                }
                if kind == OpType::Ok {
                    tokens
                        .entry(text(&inv.value["job"]))
                        .or_default()
                        .insert(text(&inv.value["token"]));
                }
            }
            (f::READ, OpType::Ok) => final_read = Some(&op.value),
            _ => {}
        }
    }
    // Completions never answered may have taken effect.
    for inv in pending.values().filter(|i| i.f == f::COMPLETE) {
        sent(inv, &mut completion_sent);
    }
    let mut early = Vec::new();
    for (w, s, at) in &claims {
        for d in deps_of(s).unwrap_or_default() {
            let ok = completion_sent
                .get(&(w.clone(), d.to_string()))
                .is_some_and(|i| i < at);
            if !ok {
                early.push(format!("{w}/{s} before {d} (op {at})"));
            }
        }
    }
    let duplicated: Vec<String> = tokens
        .iter()
        .filter(|(_, t)| t.len() > 1)
        .map(|(j, _)| j.clone())
        .collect();
    let split: Vec<String> = step_jobs
        .iter()
        .filter(|(_, j)| j.len() > 1)
        .map(|((w, s), _)| format!("{w}/{s}"))
        .collect();
    let mut final_states = BTreeMap::new();
    let mut lost = Vec::new();
    if let Some(read) = final_read {
        let wfs = read["workflows"]
            .as_object()
            .ok_or_else(|| "final read needs \"workflows\"".to_string())?;
        for w in wfs.values() {
            *final_states.entry(text(&w["state"])).or_insert(0usize) += 1;
        }
        let known = ["running", "succeeded", "failed", "cancelled"];
        lost = started
            .iter()
            .filter(|id| {
                !wfs.get(*id)
                    .is_some_and(|w| known.contains(&w["state"].as_str().unwrap_or_default()))
            })
            .cloned()
            .collect();
    }
    let bad = !early.is_empty()
        || !duplicated.is_empty()
        || !split.is_empty()
        || !lost.is_empty()
        || !malformed.is_empty();
    let valid = if bad {
        Validity::False
    } else if final_read.is_none() {
        Validity::Unknown
    } else {
        Validity::True
    };
    Ok(WorkflowResult {
        valid,
        started: started.len(),
        final_states,
        claims: claims.len(),
        completed: tokens.len(),
        early: early.into_iter().take(100).collect(),
        duplicated: duplicated.into_iter().take(100).collect(),
        split: split.into_iter().take(100).collect(),
        lost: lost.into_iter().take(100).collect(),
        malformed: malformed.into_iter().take(100).collect(),
    })
}

impl CheckerReport for WorkflowResult {
    fn validity(&self) -> Validity {
        self.valid
    }
}
