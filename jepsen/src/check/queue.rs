//! The queue checker (for the job-queue workload).
//!
//! Operations: `enqueue` (ok value: the job id), `claim` (ok value
//! `{"job": id, "token": t}`), `complete` (invoke value `{"job": id,
//! "token": t}`), and a final `read` whose ok value is
//! `{"pending": [ids], "completed": [ids]}`.
//!
//! Every acknowledged enqueue must be completed exactly once or still be
//! pending at the final read; no job may be completed under two different
//! tokens (two leases); no completion or claim may name a job never
//! enqueued.

use crate::history::{canonical, f, Op, OpType, Process};
use crate::results::{CheckerReport, Validity};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Clone, Debug, Serialize)]
pub struct QueueResult {
    /// The verdict (`"unknown"` without a final read).
    pub valid: Validity,
    pub enqueued: usize,
    pub completed: usize,
    /// Acknowledged jobs neither completed nor pending at the end.
    pub lost: Vec<String>,
    /// Jobs completed (ok) under more than one token.
    pub duplicated: Vec<String>,
    /// Claims, completions, or final-read entries of jobs never enqueued
    /// (not even by an enqueue of unknown outcome that reported an id).
    /// (Only reported when there are more of them than enqueues of
    /// unknown outcome without an id, which may each have created one.)
    pub unknown_jobs: Vec<String>,
    /// Job ids never acknowledged by an enqueue but explained by enqueues
    /// of unknown outcome.
    pub unattributed: usize,
}

/// Checks a queue history (see the module documentation).
pub fn check(history: &[Op]) -> Result<QueueResult, String> {
    let mut pending: HashMap<u64, &Op> = HashMap::new();
    let mut enq_ok = BTreeSet::new();
    let mut enq_any = BTreeSet::new();
    let mut completions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Every job id seen outside an enqueue's result, checked at the end
    // (a claim may be recorded before the enqueue's reply).
    let mut seen = BTreeSet::new();
    // Enqueues whose outcome is unknown and that reported no id: each may
    // have created one job the history never names.
    let mut anonymous = 0usize;
    let mut final_read: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
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
            (f::ENQUEUE, OpType::Ok) => {
                let id = canonical(&op.value);
                enq_ok.insert(id.clone());
                enq_any.insert(id);
            }
            (f::ENQUEUE, OpType::Info) => {
                if op.value.is_null() {
                    anonymous += 1;
                } else {
                    enq_any.insert(canonical(&op.value));
                }
            }
            (f::CLAIM, OpType::Ok) => {
                seen.insert(canonical(&op.value["job"]));
            }
            (f::COMPLETE, OpType::Ok) => {
                let job = canonical(&inv.value["job"]);
                seen.insert(job.clone());
                completions
                    .entry(job)
                    .or_default()
                    .insert(canonical(&inv.value["token"]));
            }
            (f::READ, OpType::Ok) => {
                let ids = |k: &str| -> Result<BTreeSet<String>, String> {
                    Ok(op.value[k]
                        .as_array()
                        .ok_or_else(|| format!("final read needs {k:?}: {}", op.describe()))?
                        .iter()
                        .map(canonical)
                        .collect())
                };
                final_read = Some((ids("pending")?, ids("completed")?));
            }
            _ => {}
        }
    }
    anonymous += pending.values().filter(|i| i.f == f::ENQUEUE).count();
    if let Some((pend, done)) = &final_read {
        seen.extend(pend.iter().chain(done).cloned());
    }
    let mut unknown_jobs: BTreeSet<String> = seen.difference(&enq_any).cloned().collect();
    // Up to `anonymous` ids are explained by enqueues of unknown outcome.
    let mut unattributed = 0;
    if unknown_jobs.len() <= anonymous {
        unattributed = unknown_jobs.len();
        unknown_jobs.clear();
    }
    let duplicated: Vec<String> = completions
        .iter()
        .filter(|(_, tokens)| tokens.len() > 1)
        .map(|(j, _)| j.clone())
        .collect();
    let lost: Vec<String> = match &final_read {
        Some((pend, done)) => enq_ok
            .iter()
            .filter(|j| !pend.contains(*j) && !done.contains(*j) && !completions.contains_key(*j))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let valid = if !lost.is_empty() || !duplicated.is_empty() || !unknown_jobs.is_empty() {
        Validity::False
    } else if final_read.is_none() {
        Validity::Unknown
    } else {
        Validity::True
    };
    Ok(QueueResult {
        valid,
        enqueued: enq_ok.len(),
        completed: completions.len(),
        lost: lost.into_iter().take(100).collect(),
        duplicated: duplicated.into_iter().take(100).collect(),
        unknown_jobs: unknown_jobs.into_iter().take(100).collect(),
        unattributed,
    })
}

impl CheckerReport for QueueResult {
    fn validity(&self) -> Validity {
        self.valid
    }
}
