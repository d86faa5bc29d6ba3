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
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Clone, Debug, Serialize)]
pub struct QueueResult {
    pub valid: Value,
    pub enqueued: usize,
    pub completed: usize,
    /// Acknowledged jobs neither completed nor pending at the end.
    pub lost: Vec<String>,
    /// Jobs completed (ok) under more than one token.
    pub duplicated: Vec<String>,
    /// Claims or completions of jobs never enqueued (even as unknown).
    pub unknown_jobs: Vec<String>,
}

pub fn check(history: &[Op]) -> Result<QueueResult, String> {
    let mut pending: HashMap<u64, &Op> = HashMap::new();
    let mut enq_ok = BTreeSet::new();
    let mut enq_any = BTreeSet::new();
    let mut completions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unknown_jobs = BTreeSet::new();
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
            (f::ENQUEUE, OpType::Info) if !op.value.is_null() => {
                enq_any.insert(canonical(&op.value));
            }
            (f::CLAIM, OpType::Ok) => {
                let job = canonical(&op.value["job"]);
                if !enq_any.contains(&job) {
                    unknown_jobs.insert(job);
                }
            }
            (f::COMPLETE, OpType::Ok) => {
                let job = canonical(&inv.value["job"]);
                if !enq_any.contains(&job) {
                    unknown_jobs.insert(job.clone());
                }
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
        Value::Bool(false)
    } else if final_read.is_none() {
        Value::String("unknown".into())
    } else {
        Value::Bool(true)
    };
    Ok(QueueResult {
        valid,
        enqueued: enq_ok.len(),
        completed: completions.len(),
        lost: lost.into_iter().take(100).collect(),
        duplicated: duplicated.into_iter().take(100).collect(),
        unknown_jobs: unknown_jobs.into_iter().take(100).collect(),
    })
}
