//! Workflows: unit tests, the snapshot extension, and a property test
//! against a model that reads only the jobs (their params name their step
//! and item), never the workflow's own bookkeeping.

use super::*;
use crate::workflow::{OnFailure, StepSpec, WorkflowSpec, WorkflowState};
use serde_json::Value;

pub(super) fn step(name: &str, deps: &[&str]) -> StepSpec {
    StepSpec {
        name: name.into(),
        kind: "noop".into(),
        params: "{}".into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        for_each: None,
        on_failure: OnFailure::FailWorkflow,
        priority: 0,
        resources: Resources::default(),
    }
}

pub(super) fn wf(steps: Vec<StepSpec>) -> WorkflowSpec {
    WorkflowSpec {
        queue: "q".into(),
        partition: 0,
        input: "{\"in\":1}".into(),
        steps,
        submitted_by: None,
        max_attempts: 2,
        lease_s: 10,
        backoff: Backoff {
            initial_ms: 0,
            multiplier_milli: 1000,
            max_ms: 0,
        },
    }
}

pub(super) fn start(s: &mut QueueState, idx: u64, spec: WorkflowSpec, now: u64) -> JobId {
    match s.apply(
        idx,
        QueueCommand::StartWorkflow {
            shard: 3,
            spec,
            now_ms: now,
        },
    ) {
        QueueResponse::Workflow(w) => w.workflow.id,
        other => panic!("{other:?}"),
    }
}

/// (step, index) of a workflow job, from its params.
pub(super) fn place(j: &Job) -> Option<(String, Option<u64>)> {
    let v: Value = serde_json::from_str(&j.params).ok()?;
    let step = v["workflow"]["step"].as_str()?.to_string();
    Some((step, v["index"].as_u64()))
}

pub(super) fn complete(
    s: &mut QueueState,
    idx: u64,
    j: &Job,
    result: &str,
    now: u64,
) -> QueueResponse {
    s.apply(
        idx,
        QueueCommand::Complete {
            job_id: j.id.to_string(),
            token: j.attempts,
            result: result.into(),
            facts: RunFacts::default(),
            now_ms: now,
        },
    )
}

#[test]
fn invalid_workflows_name_the_step() {
    let mut cyc = wf(vec![step("a", &["b"]), step("b", &["a"])]);
    assert!(cyc.validate().unwrap_err().contains("cycle"));
    cyc.steps[0].depends_on = vec!["zz".into()];
    assert!(cyc
        .validate()
        .unwrap_err()
        .contains("\"a\": depends on unknown step \"zz\""));
    let mut fe = wf(vec![step("a", &[]), step("b", &[])]);
    fe.steps[1].for_each = Some("a".into());
    assert!(fe.validate().unwrap_err().contains("\"b\": for_each"));
    let dup = wf(vec![step("a", &[]), step("a", &[])]);
    assert!(dup.validate().unwrap_err().contains("twice"));
    let mut s = QueueState::default();
    let r = s.apply(
        1,
        QueueCommand::StartWorkflow {
            shard: 0,
            spec: wf(vec![step("a", &["a"])]),
            now_ms: 5,
        },
    );
    assert!(matches!(
        r,
        QueueResponse::Rejected(QueueError::InvalidWorkflow(_))
    ));
    assert!(s.jobs.is_empty());
}

#[test]
fn fan_out_and_fan_in_pass_results() {
    let mut s = QueueState::default();
    let mut each = step("each", &["list"]);
    each.for_each = Some("list".into());
    let spec = wf(vec![
        step("list", &[]),
        each,
        step("sum", &["each", "list"]),
    ]);
    let id = start(&mut s, 1, spec, 100);
    assert_eq!(id.shard(), 3);
    let jobs = claim(&mut s, 2, spec_all(), 100);
    assert_eq!(jobs.len(), 1, "only the root is claimable");
    complete(&mut s, 3, &jobs[0], "[10,20,30]", 101);
    let items = claim(&mut s, 4, spec_all(), 102);
    assert_eq!(items.len(), 3);
    for (n, j) in items.iter().enumerate() {
        let v: Value = serde_json::from_str(&j.params).unwrap();
        assert_eq!(v["index"], n as u64);
        assert_eq!(v["item"], 10 * (n as u64 + 1));
        assert_eq!(v["input"]["in"], 1);
        assert_eq!(v["deps"]["list"], serde_json::json!([10, 20, 30]));
    }
    for (n, j) in items.iter().enumerate() {
        assert!(claim(&mut s, 10 + n as u64, spec_all(), 103).is_empty());
        complete(&mut s, 20 + n as u64, j, &format!("{{\"r\":{n}}}"), 104);
    }
    let fin = claim(&mut s, 30, spec_all(), 105);
    assert_eq!(fin.len(), 1);
    let v: Value = serde_json::from_str(&fin[0].params).unwrap();
    assert_eq!(
        v["deps"]["each"],
        serde_json::json!([{"r":0},{"r":1},{"r":2}])
    );
    complete(&mut s, 31, &fin[0], "7", 106);
    let w = s.workflow(id).unwrap().workflow;
    assert_eq!(w.state, WorkflowState::Succeeded);
    let round = QueueState::restore(&s.snapshot().unwrap()).unwrap();
    assert_eq!(round, s);
}

pub(super) fn spec_all() -> ClaimSpec {
    spec("w", 1000)
}

#[test]
fn failure_follows_on_failure_and_cancel_stops_the_rest() {
    // continue: the dependent runs with null.
    let mut s = QueueState::default();
    let mut a = step("a", &[]);
    a.on_failure = OnFailure::Continue;
    let id = start(&mut s, 1, wf(vec![a, step("b", &["a"])]), 10);
    let j = claim(&mut s, 2, spec_all(), 10).remove(0);
    s.apply(
        3,
        QueueCommand::Fail {
            job_id: j.id.to_string(),
            token: j.attempts,
            error: "x".into(),
            retry: false,
            facts: RunFacts::default(),
            now_ms: 11,
        },
    );
    let b = claim(&mut s, 4, spec_all(), 12).remove(0);
    let v: Value = serde_json::from_str(&b.params).unwrap();
    assert_eq!(v["deps"]["a"], Value::Null);
    assert_eq!(
        s.workflow(id).unwrap().workflow.state,
        WorkflowState::Running
    );
    // fail_workflow (the default): the sibling is cancelled, b never made.
    let mut s = QueueState::default();
    let id = start(
        &mut s,
        1,
        wf(vec![step("a", &[]), step("c", &[]), step("b", &["a"])]),
        10,
    );
    let j = claim(&mut s, 2, spec("w", 1), 10).remove(0);
    s.apply(
        3,
        QueueCommand::Fail {
            job_id: j.id.to_string(),
            token: j.attempts,
            error: "x".into(),
            retry: false,
            facts: RunFacts::default(),
            now_ms: 11,
        },
    );
    assert_eq!(
        s.workflow(id).unwrap().workflow.state,
        WorkflowState::Failed
    );
    assert!(s.jobs.values().all(|j| j.state.is_terminal()));
    assert_eq!(s.jobs.len(), 2);
    // cancel: queued jobs end, running ones are asked to stop.
    let mut s = QueueState::default();
    let id = start(
        &mut s,
        1,
        wf(vec![step("a", &[]), step("c", &[]), step("b", &["a"])]),
        10,
    );
    let run = claim(&mut s, 2, spec("w", 1), 10).remove(0);
    s.apply(
        3,
        QueueCommand::CancelWorkflow {
            id: id.to_string(),
            now_ms: 11,
        },
    );
    assert!(claim(&mut s, 4, spec_all(), 12).is_empty());
    assert!(s.jobs[&run.id].cancel_requested);
    complete(&mut s, 5, &run, "1", 13);
    assert_eq!(s.jobs.len(), 2, "nothing is created after a cancel");
    let again = s.apply(
        6,
        QueueCommand::CancelWorkflow {
            id: id.to_string(),
            now_ms: 14,
        },
    );
    assert!(matches!(again, QueueResponse::Workflow(_)));
}

/// Snapshots without workflows keep the base format byte for byte (the
/// pinned `snapshot_format_is_stable` covers that); with workflows they
/// carry the extension, pinned here, and older snapshots still decode.
#[test]
fn workflow_snapshot_extension_is_stable() {
    const PINNED: &[u8] = include_bytes!("../testdata/queue-snapshot-workflows-v1.bin");
    let mut s = QueueState::default();
    let mut each = step("each", &["list"]);
    each.for_each = Some("list".into());
    start(
        &mut s,
        1,
        wf(vec![step("list", &[]), each]),
        1_700_000_000_000,
    );
    let j = claim(&mut s, 2, spec_all(), 1_700_000_000_001).remove(0);
    complete(&mut s, 3, &j, "[1,2]", 1_700_000_000_002);
    let bytes = s.snapshot().unwrap();
    if std::env::var_os("ORRERY_WRITE_GOLDEN").is_some() {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/testdata/queue-snapshot-workflows-v1.bin"
            ),
            &bytes,
        )
        .unwrap();
    }
    assert_eq!(bytes, PINNED, "the workflow snapshot encoding changed");
    let restored = QueueState::restore(PINNED).unwrap();
    assert_eq!(restored, s);
    assert_eq!(restored.wf_jobs, s.wf_jobs);
    let old = QueueState::restore(include_bytes!("../testdata/queue-snapshot-v1.bin")).unwrap();
    assert!(old.workflows.is_empty());
    // Bytes after the jobs that are not the extension are refused.
    let mut bad = QueueState::default().snapshot().unwrap();
    bad.extend_from_slice(b"junk");
    assert!(QueueState::restore(&bad).is_err());
}

// ---- the property test ----

#[derive(Clone, Debug)]
struct Dag {
    /// Per step: dependencies (earlier steps), for_each (index into deps),
    /// continue on failure.
    steps: Vec<(Vec<usize>, Option<usize>, bool)>,
}

fn dag() -> impl Strategy<Value = Dag> {
    prop::collection::vec(
        (
            prop::collection::vec(0usize..8, 0..3),
            prop::option::of(0usize..3),
            prop::bool::weighted(0.3),
        ),
        1..6,
    )
    .prop_map(|raw| Dag {
        steps: raw
            .into_iter()
            .enumerate()
            .map(|(i, (deps, fe, cont))| {
                let mut d: Vec<usize> = if i == 0 {
                    vec![]
                } else {
                    deps.into_iter().map(|x| x % i).collect()
                };
                d.sort_unstable();
                d.dedup();
                let fe = fe.filter(|f| *f < d.len()).map(|f| d[f]);
                (d, fe, cont)
            })
            .collect(),
    })
}

fn spec_of(d: &Dag) -> WorkflowSpec {
    let name = |i: usize| format!("s{i}");
    wf(d.steps
        .iter()
        .enumerate()
        .map(|(i, (deps, fe, cont))| StepSpec {
            name: name(i),
            depends_on: deps.iter().map(|x| name(*x)).collect(),
            for_each: fe.map(name),
            on_failure: if *cont {
                OnFailure::Continue
            } else {
                OnFailure::FailWorkflow
            },
            ..step("x", &[])
        })
        .collect())
}

#[derive(Clone, Debug)]
enum WOp {
    /// Claim up to n jobs.
    Claim(u32),
    /// Complete the running job (by position), with a result array of len.
    Complete(usize, usize),
    /// The same, through a `Settle` (as group commit sends it).
    Settle(usize, usize),
    /// Complete the running job with a large result (a string of
    /// `BIG` bytes): two of them in what a step receives exceed the
    /// params limit, one does not.
    CompleteBig(usize),
    /// Fail the running job (retry or not).
    Fail(usize, bool),
    /// Cancel a live job of the workflow.
    CancelJob(usize),
    CancelWorkflow,
    /// Time passes: leases expire.
    Expire,
    Snapshot,
}

fn wop() -> impl Strategy<Value = WOp> {
    prop_oneof![
        4 => (1u32..4).prop_map(WOp::Claim),
        4 => (0usize..8, 0usize..4).prop_map(|(j, n)| WOp::Complete(j, n)),
        2 => (0usize..8, 0usize..4).prop_map(|(j, n)| WOp::Settle(j, n)),
        2 => (0usize..8).prop_map(WOp::CompleteBig),
        2 => (0usize..8, any::<bool>()).prop_map(|(j, r)| WOp::Fail(j, r)),
        1 => (0usize..8).prop_map(WOp::CancelJob),
        1 => Just(WOp::CancelWorkflow),
        1 => Just(WOp::Expire),
        2 => Just(WOp::Snapshot),
    ]
}

/// The model's view of a step, from the jobs alone: its jobs by item.
fn jobs_of<'a>(s: &'a QueueState, name: &str) -> Vec<&'a Job> {
    s.jobs
        .values()
        .map(|j| &**j)
        .filter(|j| place(j).is_some_and(|(n, _)| n == name))
        .collect()
}

/// The value a step passes on, per the model: the result of its one job,
/// or its items' results as an array.
fn model_value(s: &QueueState, d: &Dag, i: usize) -> Option<Value> {
    let jobs = jobs_of(s, &format!("s{i}"));
    let res = |j: &Job| {
        j.result
            .as_deref()
            .filter(|_| j.state == JobState::Succeeded)
            .map(|r| serde_json::from_str(r).unwrap())
            .unwrap_or(Value::Null)
    };
    match d.steps[i].1 {
        Some(_) => Some(Value::Array(jobs.iter().map(|j| res(j)).collect())),
        None => jobs.first().map(|j| res(j)),
    }
}

/// Bytes of a big result: one fits in a job's params, two do not (the
/// rest of what a step of these DAGs receives is under 1 KiB).
const BIG: usize = 150_000;

fn bigs(v: &Value) -> usize {
    match v {
        Value::String(t) if t.len() >= BIG => 1,
        Value::Array(a) => a.iter().map(bigs).sum(),
        _ => 0,
    }
}

/// Whether step `i`'s params would exceed the limit, per the model: two
/// big results among its dependencies' values, or a big fan-out item
/// (which is in the dependencies' values too, and then again as `item`).
fn oversized(s: &QueueState, d: &Dag, i: usize) -> bool {
    let value = |j: usize| model_value(s, d, j).unwrap_or(Value::Null);
    let head: usize = d.steps[i].0.iter().map(|&j| bigs(&value(j))).sum();
    head >= 2
        || d.steps[i]
            .1
            .is_some_and(|f| matches!(value(f), Value::Array(a) if a.iter().any(|x| bigs(x) > 0)))
}

/// How many jobs step `i` should have once created, per the model (None:
/// the step fails without jobs).
fn expected_items(s: &QueueState, d: &Dag, i: usize) -> Option<usize> {
    if oversized(s, d, i) {
        return None;
    }
    match d.steps[i].1 {
        None => Some(1),
        Some(f) => match model_value(s, d, f)? {
            Value::Array(a) => Some(a.len()),
            _ => None,
        },
    }
}

/// Done (every job terminal, all expected jobs there) and acceptable to
/// dependents (succeeded, or the step may fail).
fn model_ok(s: &QueueState, d: &Dag, i: usize) -> bool {
    let jobs = jobs_of(s, &format!("s{i}"));
    let Some(n) = expected_items(s, d, i) else {
        return d.steps[i].2;
    };
    jobs.len() == n
        && jobs.iter().all(|j| j.state.is_terminal())
        && (d.steps[i].2 || jobs.iter().all(|j| j.state == JobState::Succeeded))
}

fn check_model(
    s: &QueueState,
    d: &Dag,
    wid: JobId,
    seen: &mut BTreeSet<(String, u64)>,
    created: &mut BTreeSet<JobId>,
    ended_at: &mut Option<usize>,
) -> Result<(), TestCaseError> {
    let w = &s.workflows[&wid];
    for j in s.jobs.values() {
        let (name, idx) = place(j).ok_or_else(|| TestCaseError::fail("a job without a place"))?;
        let i: usize = name[1..].parse().unwrap();
        prop_assert!(
            j.params.len() <= MAX_PARAMS_BYTES,
            "{name}: params of {} bytes",
            j.params.len()
        );
        if created.insert(j.id) {
            // New: each step item exactly once, and never before its deps.
            prop_assert!(
                seen.insert((name.clone(), idx.unwrap_or(u64::MAX))),
                "{name}[{idx:?}] created twice"
            );
            for dep in &d.steps[i].0 {
                prop_assert!(
                    model_ok(s, d, *dep),
                    "{name} created before s{dep} was done: {:?}",
                    jobs_of(s, &format!("s{dep}"))
                );
            }
            prop_assert!(
                ended_at.is_none(),
                "{name} created after the workflow ended"
            );
        }
        if w.state != WorkflowState::Running {
            prop_assert!(
                j.state != JobState::Queued,
                "a queued job after the workflow ended"
            );
        }
        if j.state.is_terminal() && j.state != JobState::Succeeded && !d.steps[i].2 {
            prop_assert!(
                w.state == WorkflowState::Failed || w.state == WorkflowState::Cancelled,
                "a failure that fails the workflow did not"
            );
        }
    }
    if w.state != WorkflowState::Running && ended_at.is_none() {
        *ended_at = Some(created.len());
    }
    if w.state == WorkflowState::Succeeded {
        for i in 0..d.steps.len() {
            prop_assert!(model_ok(s, d, i), "succeeded with s{i} not done");
        }
    }
    Ok(())
}

fn running(s: &QueueState) -> Vec<Job> {
    s.jobs
        .values()
        .filter(|j| j.state == JobState::Running)
        .map(|j| (**j).clone())
        .collect()
}

fn result_of(n: usize) -> String {
    format!(
        "[{}]",
        (0..n).map(|x| x.to_string()).collect::<Vec<_>>().join(",")
    )
}

fn cmd_of(op: &WOp, s: &QueueState, wid: JobId, now: u64) -> Option<QueueCommand> {
    let run = running(s);
    let pick = |j: usize| run.get(j % run.len().max(1)).cloned();
    let completion = |j: &Job, n: usize| Completion {
        job_id: j.id.to_string(),
        token: j.attempts,
        result: result_of(n),
        facts: RunFacts::default(),
    };
    Some(match op {
        WOp::Claim(n) => QueueCommand::Claim {
            spec: spec("w", *n),
            now_ms: now,
        },
        WOp::Complete(j, n) => QueueCommand::CompleteMany {
            items: vec![completion(&pick(*j)?, *n)],
            now_ms: now,
        },
        WOp::CompleteBig(j) => QueueCommand::CompleteMany {
            items: vec![Completion {
                result: format!("\"{}\"", "b".repeat(BIG)),
                ..completion(&pick(*j)?, 0)
            }],
            now_ms: now,
        },
        WOp::Settle(j, n) => QueueCommand::Settle {
            work: vec![Settlement {
                completions: vec![completion(&pick(*j)?, *n)],
                claim: spec("w", 1),
            }],
            now_ms: now,
        },
        WOp::Fail(j, retry) => {
            let j = pick(*j)?;
            QueueCommand::Fail {
                job_id: j.id.to_string(),
                token: j.attempts,
                error: "e".into(),
                retry: *retry,
                facts: RunFacts::default(),
                now_ms: now,
            }
        }
        WOp::CancelJob(j) => {
            let live: Vec<&JobId> = s
                .jobs
                .iter()
                .filter(|(_, j)| !j.state.is_terminal())
                .map(|(id, _)| id)
                .collect();
            QueueCommand::Cancel {
                job_id: live.get(j % live.len().max(1))?.to_string(),
                now_ms: now,
            }
        }
        WOp::CancelWorkflow => QueueCommand::CancelWorkflow {
            id: wid.to_string(),
            now_ms: now,
        },
        WOp::Expire => QueueCommand::ExpireLeases {
            now_ms: now + 60_000,
        },
        WOp::Snapshot => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn workflows_follow_their_dag(
        d in dag(),
        ops in prop::collection::vec(wop(), 0..60),
        big_every in prop::option::of(1usize..4),
    ) {
        let mut a = QueueState::default();
        let mut b = QueueState::default();
        let mut now = 1_000u64;
        let cmd = QueueCommand::StartWorkflow { shard: 1, spec: spec_of(&d), now_ms: now };
        b.apply_unobserved(1, cmd.clone());
        let wid = match a.apply(1, cmd) { QueueResponse::Workflow(w) => w.workflow.id, o => panic!("{o:?}") };
        let (mut seen, mut created, mut ended) = (BTreeSet::new(), BTreeSet::new(), None);
        check_model(&a, &d, wid, &mut seen, &mut created, &mut ended)?;
        let mut idx = 1;
        // The random operations, then a drive to the end: claim and
        // complete everything (results of 2 items, or every `big_every`-th
        // a big one) until nothing is left.
        let drive = (0..120).flat_map(|n| {
            let done = match big_every {
                Some(k) if n % k == 0 => WOp::CompleteBig(0),
                _ => WOp::Complete(0, 2),
            };
            [WOp::Claim(100), done]
        });
        for op in ops.into_iter().chain(drive) {
            now += 1_000;
            if let WOp::Snapshot = op {
                b = QueueState::restore(&b.snapshot().map_err(TestCaseError::fail)?).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&a, &b);
                continue;
            }
            let Some(cmd) = cmd_of(&op, &a, wid, now) else { continue };
            let now_cmd = if let QueueCommand::ExpireLeases { now_ms } = &cmd { *now_ms } else { now };
            now = now.max(now_cmd);
            idx += 1;
            a.apply(idx, cmd.clone());
            b.apply_unobserved(idx, cmd);
            prop_assert_eq!(&a, &b, "replicas differ after {:?}", op);
            check_invariants(&a)?;
            check_model(&a, &d, wid, &mut seen, &mut created, &mut ended)?;
        }
        let w = &a.workflows[&wid];
        prop_assert!(w.state != WorkflowState::Running, "never finished: {:?}", w);
        prop_assert!(a.jobs.values().all(|j| j.state.is_terminal()));
    }
}
