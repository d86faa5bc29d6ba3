//! The workflow checker on hand-written histories: a valid run, and one
//! history per violation (a step claimed before its dependency completed
//! — the negative control —, a job completed twice, a step run as two
//! jobs, a lost workflow), plus the unknown-outcome rules.

use orrery_jepsen::check::{check_history, workflow};
use orrery_jepsen::history::{f, HistoryBuilder, Op};
use orrery_jepsen::results::Validity;
use serde_json::{json, Value};

const W: &str = "w1";

fn job(step: &str) -> String {
    format!("j-{step}")
}

fn claimed(step: &str, token: u64) -> Value {
    json!({"job": job(step), "token": token, "workflow": W, "step": step})
}

fn claim(h: &mut HistoryBuilder, p: u64, step: &str) {
    h.invoke(p, f::CLAIM, None, Value::Null)
        .ok(p, f::CLAIM, None, claimed(step, 1));
}

fn complete(h: &mut HistoryBuilder, p: u64, step: &str) {
    let v = claimed(step, 1);
    h.invoke(p, f::COMPLETE, None, v.clone())
        .ok(p, f::COMPLETE, None, v);
}

fn start(h: &mut HistoryBuilder, p: u64, id: &str) {
    h.invoke(p, workflow::START, None, Value::Null)
        .ok(p, workflow::START, None, json!(id));
}

fn final_read(h: &mut HistoryBuilder, states: &[(&str, &str)]) {
    let wfs: serde_json::Map<String, Value> = states
        .iter()
        .map(|(id, s)| (id.to_string(), json!({"state": s, "steps": {}})))
        .collect();
    h.invoke(99, f::READ, None, Value::Null)
        .ok(99, f::READ, None, json!({"workflows": wfs}));
}

/// A correct run of the diamond: a, then b and c, then d.
fn good() -> HistoryBuilder {
    let mut h = HistoryBuilder::new();
    start(&mut h, 0, W);
    claim(&mut h, 1, "a");
    complete(&mut h, 1, "a");
    claim(&mut h, 2, "b");
    claim(&mut h, 3, "c");
    complete(&mut h, 3, "c");
    complete(&mut h, 2, "b");
    claim(&mut h, 1, "d");
    complete(&mut h, 1, "d");
    h
}

fn verdict(h: &[Op]) -> workflow::WorkflowResult {
    workflow::check(h).expect("checks")
}

#[test]
fn a_correct_run_is_valid() {
    let mut h = good();
    final_read(&mut h, &[(W, "succeeded")]);
    let r = verdict(&h.build());
    assert_eq!(r.valid, Validity::True, "{r:?}");
    assert_eq!((r.started, r.claims, r.completed), (1, 4, 4));
    // Through the dispatcher too.
    let v = check_history(&h.build(), "workflow").unwrap();
    assert_eq!(v["valid"], true);
}

#[test]
fn a_step_claimed_before_its_dependency_completed_is_invalid() {
    // The negative control: b's job is handed out while a is still running.
    let mut h = HistoryBuilder::new();
    start(&mut h, 0, W);
    claim(&mut h, 1, "a");
    claim(&mut h, 2, "b");
    complete(&mut h, 1, "a");
    final_read(&mut h, &[(W, "running")]);
    let r = verdict(&h.build());
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.early.len(), 1, "{r:?}");
    assert!(r.early[0].starts_with("w1/b before a"), "{:?}", r.early);

    // d after b only: c's completion was never sent.
    let mut h = HistoryBuilder::new();
    start(&mut h, 0, W);
    claim(&mut h, 1, "a");
    complete(&mut h, 1, "a");
    claim(&mut h, 2, "b");
    claim(&mut h, 3, "c");
    complete(&mut h, 2, "b");
    claim(&mut h, 2, "d");
    complete(&mut h, 3, "c");
    final_read(&mut h, &[(W, "running")]);
    let r = verdict(&h.build());
    assert_eq!(r.valid, Validity::False);
    assert!(r.early[0].starts_with("w1/d before c"), "{:?}", r.early);
}

#[test]
fn a_completion_in_flight_or_of_unknown_outcome_may_have_taken_effect() {
    // a's completion is acknowledged after b was claimed: it took effect
    // before its reply.
    let mut h = HistoryBuilder::new();
    start(&mut h, 0, W);
    claim(&mut h, 1, "a");
    let v = claimed("a", 1);
    h.invoke(1, f::COMPLETE, None, v.clone());
    claim(&mut h, 2, "b");
    h.ok(1, f::COMPLETE, None, v.clone());
    final_read(&mut h, &[(W, "running")]);
    assert_eq!(verdict(&h.build()).valid, Validity::True);

    // Unknown outcome (info), or no reply at all: allowed too.
    for answered in [true, false] {
        let mut h = HistoryBuilder::new();
        start(&mut h, 0, W);
        claim(&mut h, 1, "a");
        h.invoke(1, f::COMPLETE, None, v.clone());
        if answered {
            h.info(1, f::COMPLETE, None, v.clone());
        }
        claim(&mut h, 2, "b");
        final_read(&mut h, &[(W, "running")]);
        assert_eq!(verdict(&h.build()).valid, Validity::True, "{answered}");
    }

    // A completion that failed certainly did not happen.
    let mut h = HistoryBuilder::new();
    start(&mut h, 0, W);
    claim(&mut h, 1, "a");
    h.invoke(1, f::COMPLETE, None, v.clone())
        .fail(1, f::COMPLETE, None, v);
    claim(&mut h, 2, "b");
    final_read(&mut h, &[(W, "running")]);
    assert_eq!(verdict(&h.build()).valid, Validity::False);
}

#[test]
fn a_step_run_twice_is_invalid() {
    // The same job completed under two leases.
    let mut h = good();
    let again = claimed("d", 2);
    h.invoke(4, f::COMPLETE, None, again.clone())
        .ok(4, f::COMPLETE, None, again);
    final_read(&mut h, &[(W, "succeeded")]);
    let r = verdict(&h.build());
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.duplicated, vec![job("d")]);

    // One step handed out as two jobs.
    let mut h = good();
    h.invoke(4, f::CLAIM, None, Value::Null).ok(
        4,
        f::CLAIM,
        None,
        json!({"job": "j-other", "token": 1, "workflow": W, "step": "c"}),
    );
    final_read(&mut h, &[(W, "succeeded")]);
    let r = verdict(&h.build());
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.split, vec!["w1/c".to_string()]);
}

#[test]
fn an_acknowledged_workflow_missing_at_the_end_is_lost() {
    let mut h = good();
    start(&mut h, 5, "w2");
    // An unacknowledged start may or may not exist.
    h.invoke(6, workflow::START, None, Value::Null)
        .info(6, workflow::START, None, Value::Null);
    final_read(&mut h, &[(W, "succeeded")]);
    let r = verdict(&h.build());
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.lost, vec!["w2".to_string()]);

    // Still running at the end is fine; without a final read: unknown.
    let mut h = good();
    start(&mut h, 5, "w2");
    let without = verdict(&h.build());
    assert_eq!(without.valid, Validity::Unknown);
    final_read(&mut h, &[(W, "succeeded"), ("w2", "running")]);
    let r = verdict(&h.build());
    assert_eq!(r.valid, Validity::True, "{r:?}");
    assert_eq!(r.final_states["running"], 1);
}

#[test]
fn a_claim_of_a_step_the_dag_lacks_is_malformed() {
    let mut h = good();
    h.invoke(4, f::CLAIM, None, Value::Null).ok(
        4,
        f::CLAIM,
        None,
        json!({"job": "j-z", "token": 1, "workflow": W, "step": "z"}),
    );
    final_read(&mut h, &[(W, "succeeded")]);
    assert_eq!(verdict(&h.build()).valid, Validity::False);
}
