//! A step's assembled params are held to the submit limit: a fan-in of
//! large results (or an oversized fan-out item) fails the step, and the
//! workflow with it, instead of enqueuing an oversized job.

use super::workflow::{complete, place, spec_all, start, step, wf};
use super::*;
use crate::workflow::{OnFailure, WorkflowState};

/// A JSON string result of about `n` bytes.
fn big(n: usize) -> String {
    format!("\"{}\"", "x".repeat(n))
}

fn two_big_roots(s: &mut QueueState, on_failure: OnFailure) -> JobId {
    let mut join = step("join", &["a", "b"]);
    join.on_failure = on_failure;
    let id = start(
        s,
        1,
        wf(vec![
            step("a", &[]),
            step("b", &[]),
            join,
            step("after", &["join"]),
        ]),
        10,
    );
    let roots = claim(s, 2, spec_all(), 10);
    assert_eq!(roots.len(), 2);
    // Each alone fits in a job's params; both together do not.
    let half = MAX_PARAMS_BYTES / 2 + 1000;
    for (n, j) in roots.iter().enumerate() {
        assert!(matches!(
            complete(s, 3 + n as u64, j, &big(half), 11),
            QueueResponse::Job(_)
        ));
    }
    id
}

#[test]
fn a_fan_in_over_the_params_limit_fails_the_workflow() {
    let mut s = QueueState::default();
    let id = two_big_roots(&mut s, OnFailure::FailWorkflow);
    let w = s.workflow(id).unwrap().workflow;
    assert_eq!(w.state, WorkflowState::Failed);
    let why = w.error.clone().unwrap();
    assert!(why.starts_with("step \"join\": its params"), "{why}");
    assert!(
        why.contains(&format!("limit for a job's params is {MAX_PARAMS_BYTES}")),
        "{why}"
    );
    assert!(w.steps[2].error.is_some() && w.steps[2].items.is_none());
    assert_eq!(s.jobs.len(), 2, "no job for the join");
    assert!(s.jobs.values().all(|j| j.params.len() <= MAX_PARAMS_BYTES));
    let round = QueueState::restore(&s.snapshot().unwrap()).unwrap();
    assert_eq!(round, s);
}

#[test]
fn with_continue_the_oversized_step_counts_as_failed_and_dependents_run() {
    let mut s = QueueState::default();
    let id = two_big_roots(&mut s, OnFailure::Continue);
    let next = claim(&mut s, 10, spec_all(), 12);
    assert_eq!(next.len(), 1);
    assert_eq!(place(&next[0]).unwrap().0, "after");
    let v: serde_json::Value = serde_json::from_str(&next[0].params).unwrap();
    assert_eq!(v["deps"]["join"], serde_json::Value::Null);
    complete(&mut s, 11, &next[0], "1", 13);
    assert_eq!(
        s.workflow(id).unwrap().workflow.state,
        WorkflowState::Succeeded
    );
}

#[test]
fn an_oversized_fan_out_item_fails_its_step() {
    let mut s = QueueState::default();
    let mut each = step("each", &["list"]);
    each.for_each = Some("list".into());
    // A list of one item: itself fits (once) as a dependency's value, but
    // each item's params carry the list and the item: twice the bytes.
    let id = start(&mut s, 1, wf(vec![step("list", &[]), each]), 10);
    let root = claim(&mut s, 2, spec_all(), 10).remove(0);
    let item = big(MAX_PARAMS_BYTES / 2 + 1000);
    complete(&mut s, 3, &root, &format!("[{item}]"), 11);
    let w = s.workflow(id).unwrap().workflow;
    assert_eq!(w.state, WorkflowState::Failed);
    assert!(w.error.unwrap().contains("step \"each\""));
    assert_eq!(s.jobs.len(), 1);
}
