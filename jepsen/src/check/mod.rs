//! Checkers: pure functions from a history to a verdict.

pub mod linear;
pub mod queue;
pub mod set;
pub mod workflow;

use crate::history::{read_jsonl, Op};
use serde_json::{json, Value};
use std::path::Path;

/// Search steps allowed per key before the linearizability checker says
/// "unknown" instead of running on.
pub const DEFAULT_BUDGET: u64 = 5_000_000;

/// Runs the checker for `workload` (`register`, `set`, `queue` or
/// `workflow`) on a
/// history; the result always has a `valid` field (`true`, `false` or
/// `"unknown"`).
pub fn check_history(history: &[Op], workload: &str) -> Result<Value, String> {
    check_history_with_budget(history, workload, DEFAULT_BUDGET)
}

/// [`check_history`] with an explicit linearizability search budget (steps
/// per key; ignored by the set and queue checkers).
pub fn check_history_with_budget(
    history: &[Op],
    workload: &str,
    budget: u64,
) -> Result<Value, String> {
    let v = match workload {
        "register" => serde_json::to_value(linear::check(history, budget)?),
        "set" => serde_json::to_value(set::check(history)?),
        "queue" => serde_json::to_value(queue::check(history)?),
        "workflow" => serde_json::to_value(workflow::check(history)?),
        other => {
            return Err(format!(
                "unknown workload {other:?} (register, set, queue, workflow)"
            ))
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(json!({"valid": v["valid"].clone(), "workload": workload, "checker": v}))
}

/// [`check_history`] on a JSON Lines file.
pub fn check_file(path: impl AsRef<Path>, workload: &str) -> Result<Value, String> {
    let ops = read_jsonl(path).map_err(|e| e.to_string())?;
    check_history(&ops, workload)
}
