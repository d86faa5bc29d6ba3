//! Keyed runs recorded once (cluster version 6): `PutRunOnce` against a
//! model, with snapshots and restores (the key index is derived) and
//! retention in between.

use crate::store::*;
use crate::store_ext::RunExt;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn keyed(id: u64, policy: &str, key: &str, input: u8, status: RunStatus) -> Run {
    Run {
        id: format!("{id:012x}k{:016x}", 0),
        policy_id: policy.into(),
        version: 1,
        status,
        run_key: Some(key.into()),
        input: format!("{{\"n\":{input}}}"),
        output: None,
        trace: "[]".into(),
        error: None,
        created_ms: id,
        finished_ms: (status != RunStatus::Running).then_some(id),
    }
}

fn once(run: Run) -> PolicyCommand {
    PolicyCommand::PutRunOnce {
        run,
        ext: RunExt::default(),
    }
}

#[test]
fn a_key_is_recorded_once_and_answers_with_its_run() {
    let mut s = PolicyState::default();
    let first = keyed(1, "p", "order-1", 0, RunStatus::Succeeded);
    assert_eq!(s.apply(once(first.clone())), PolicyResponse::RunStored);
    // A retry (a later id, the same input) gets the first run back and
    // writes nothing.
    let before = s.clone();
    match s.apply(once(keyed(2, "p", "order-1", 0, RunStatus::Succeeded))) {
        PolicyResponse::RunExisting(r) => assert_eq!(r.run, first),
        other => panic!("{other:?}"),
    }
    assert_eq!(s, before);
    // Another input under the key is a conflict, also writing nothing.
    assert!(matches!(
        s.apply(once(keyed(3, "p", "order-1", 1, RunStatus::Succeeded))),
        PolicyResponse::Conflict(m) if m.contains("order-1")
    ));
    assert_eq!(s, before);
    // The same key under another policy is another run.
    assert_eq!(
        s.apply(once(keyed(4, "q", "order-1", 1, RunStatus::Succeeded))),
        PolicyResponse::RunStored
    );
    // A key is needed; an id taken under another key is refused.
    let mut unkeyed = keyed(5, "p", "x", 0, RunStatus::Succeeded);
    unkeyed.run_key = None;
    assert!(matches!(
        s.apply(once(unkeyed)),
        PolicyResponse::Rejected(_)
    ));
    let mut clash = keyed(1, "p", "order-2", 0, RunStatus::Succeeded);
    clash.id = first.id.clone();
    assert!(matches!(s.apply(once(clash)), PolicyResponse::Conflict(_)));
    // The index survives a snapshot (it is rebuilt from the runs).
    let r = PolicyState::restore(&s.snapshot().unwrap()).unwrap();
    assert_eq!(r, s);
    assert_eq!(r.run_by_key("p", "order-1"), Some(&first));
}

#[test]
fn a_running_keyed_run_finishes_under_its_key_and_pruning_frees_it() {
    let mut s = PolicyState::default();
    let running = keyed(1, "p", "k", 0, RunStatus::Running);
    assert_eq!(s.apply(once(running.clone())), PolicyResponse::RunStored);
    // The async job's final write is a plain PutRun of the same id.
    let done = keyed(1, "p", "k", 0, RunStatus::Succeeded);
    s.apply(PolicyCommand::PutRun { run: done.clone() });
    assert_eq!(s.run_by_key("p", "k"), Some(&done));
    // Retention forgets the run, and its key with it.
    s.apply(PolicyCommand::PruneRuns {
        now_ms: 1_000,
        default_retention_ms: 10,
        retention: vec![],
        max: 10,
    });
    assert_eq!(s.run_by_key("p", "k"), None);
    assert_eq!(s, PolicyState::restore(&s.snapshot().unwrap()).unwrap());
    assert_eq!(
        s.apply(once(keyed(2_000, "p", "k", 1, RunStatus::Succeeded))),
        PolicyResponse::RunStored
    );
}

#[derive(Clone, Debug)]
enum Op {
    Once { t: u64, key: u8, input: u8 },
    Prune { now: u64 },
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..200, 0u8..4, 0u8..2).prop_map(|(t, key, input)| Op::Once { t, key, input }),
        1 => (0u64..300).prop_map(|now| Op::Prune { now }),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every answer is the model's: the first run recorded for a key is
    /// the one every later attempt gets (same input) or conflicts with
    /// (another input), until retention forgets it; the state equals its
    /// restored snapshot throughout.
    #[test]
    fn keyed_runs_match_a_model(ops in prop::collection::vec(op(), 0..60)) {
        let mut s = PolicyState::default();
        // key -> (id, input, created)
        let mut model: BTreeMap<String, (String, String, u64)> = BTreeMap::new();
        for o in ops {
            match o {
                Op::Once { t, key, input } => {
                    let key = format!("k{key}");
                    let mut run = keyed(t, "p", &key, input, RunStatus::Succeeded);
                    // Distinct ids per key, as the server's hashes make them.
                    run.id = format!("{t:012x}k{:016x}", key.len() as u64 * 1000 + u64::from(key.as_bytes()[1]));
                    let taken = s.runs.contains_key(&run.id);
                    let got = s.apply(once(run.clone()));
                    match model.get(&key) {
                        Some((id, inp, _)) if *inp == run.input => {
                            prop_assert!(matches!(&got, PolicyResponse::RunExisting(r) if &r.run.id == id), "{:?}", got);
                        }
                        Some(_) => prop_assert!(matches!(got, PolicyResponse::Conflict(_)), "{:?}", got),
                        None if taken => prop_assert!(matches!(got, PolicyResponse::Conflict(_)), "{:?}", got),
                        None => {
                            prop_assert_eq!(got, PolicyResponse::RunStored);
                            model.insert(key, (run.id.clone(), run.input.clone(), t));
                        }
                    }
                }
                Op::Prune { now } => {
                    s.apply(PolicyCommand::PruneRuns { now_ms: now, default_retention_ms: 100, retention: vec![], max: 1_000 });
                    model.retain(|_, (_, _, created)| now < *created + 100);
                }
                Op::Snapshot => {
                    let r = PolicyState::restore(&s.snapshot().unwrap()).unwrap();
                    prop_assert_eq!(&r, &s);
                    s = r;
                }
            }
            for (key, (id, _, _)) in &model {
                prop_assert_eq!(s.run_by_key("p", key).map(|r| &r.id), Some(id));
            }
        }
    }
}
