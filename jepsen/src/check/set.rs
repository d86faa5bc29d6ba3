//! The set checker: unique adds, then final reads of the whole set.
//!
//! Every `ok` add must be in the final read (else it was lost); no `fail`
//! add may be in it (it was reported as not done); `info` adds may or may
//! not be; an element never added must not appear. The final read is the
//! last `ok` read in the history.

use crate::history::{canonical, f, Op, OpType, Process};
use crate::results::{CheckerReport, Validity};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

#[derive(Clone, Debug, Serialize)]
pub struct SetResult {
    /// The verdict (`"unknown"` without a final read).
    pub valid: Validity,
    pub attempted: usize,
    pub acknowledged: usize,
    /// Acknowledged adds missing from the final read.
    pub lost: Vec<String>,
    pub lost_count: usize,
    /// Failed adds present in the final read.
    pub failed_but_present: Vec<String>,
    /// Elements present that were never added.
    pub unexpected: Vec<String>,
    /// Adds with unknown outcome that are present.
    pub recovered: usize,
    pub final_read_size: usize,
}

fn truncated(v: BTreeSet<String>) -> Vec<String> {
    v.into_iter().take(100).collect()
}

/// Checks a set history against its last `ok` read (see the module
/// documentation); `"unknown"` without one.
pub fn check(history: &[Op]) -> Result<SetResult, String> {
    let mut pending: HashMap<u64, &Op> = HashMap::new();
    let (mut attempted, mut ok, mut failed, mut info) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    let mut final_read: Option<BTreeSet<String>> = None;
    for op in history {
        let Process::Client(p) = op.process else {
            continue;
        };
        if op.kind == OpType::Invoke {
            if op.f == f::ADD {
                attempted.insert(canonical(&op.value));
            }
            pending.insert(p, op);
            continue;
        }
        let Some(inv) = pending.remove(&p) else {
            return Err(format!("completion without invocation: {}", op.describe()));
        };
        match inv.f.as_str() {
            f::ADD => {
                let e = canonical(&inv.value);
                match op.kind {
                    OpType::Ok => ok.insert(e),
                    OpType::Fail => failed.insert(e),
                    _ => info.insert(e),
                };
            }
            f::READ if op.kind == OpType::Ok => {
                let items = op
                    .value
                    .as_array()
                    .ok_or_else(|| format!("set read must return an array: {}", op.describe()))?;
                final_read = Some(items.iter().map(canonical).collect());
            }
            _ => {}
        }
    }
    for inv in pending.values() {
        if inv.f == f::ADD {
            info.insert(canonical(&inv.value));
        }
    }
    let Some(read) = final_read else {
        return Ok(SetResult {
            valid: Validity::Unknown,
            attempted: attempted.len(),
            acknowledged: ok.len(),
            lost: vec![],
            lost_count: 0,
            failed_but_present: vec![],
            unexpected: vec![],
            recovered: 0,
            final_read_size: 0,
        });
    };
    let lost: BTreeSet<String> = ok.difference(&read).cloned().collect();
    let failed_present: BTreeSet<String> = failed.intersection(&read).cloned().collect();
    let unexpected: BTreeSet<String> = read.difference(&attempted).cloned().collect();
    let recovered = info.intersection(&read).count();
    let valid = lost.is_empty() && failed_present.is_empty() && unexpected.is_empty();
    Ok(SetResult {
        valid: Validity::from_bool(valid),
        attempted: attempted.len(),
        acknowledged: ok.len(),
        lost_count: lost.len(),
        lost: truncated(lost),
        failed_but_present: truncated(failed_present),
        unexpected: truncated(unexpected),
        recovered,
        final_read_size: read.len(),
    })
}

impl CheckerReport for SetResult {
    fn validity(&self) -> Validity {
        self.valid
    }
}
