//! Cluster version 5 in the policy state machine: settings (shadow
//! version, run retention), runs with extras, pruning, and the snapshot
//! format with and without the extension.

use crate::store::*;
use crate::store_ext::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `PolicyState` exactly as cluster versions 1-4 declare it: what old
/// nodes encode and decode.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct OldPolicyState {
    policies: BTreeMap<String, Policy>,
    names: BTreeMap<String, String>,
    versions: BTreeMap<(String, u32), Version>,
    sources: BTreeMap<String, DataSource>,
    runs: BTreeMap<String, Run>,
}

fn cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn run(id: &str, policy: &str, version: u32, status: RunStatus, created: u64) -> Run {
    Run {
        id: id.into(),
        policy_id: policy.into(),
        version,
        status,
        run_key: None,
        input: "{}".into(),
        output: Some("1".into()),
        trace: "[]".into(),
        error: None,
        created_ms: created,
        finished_ms: (status != RunStatus::Running).then_some(created),
    }
}

/// A policy `p` with versions 1 and 2 (1 live).
fn catalog() -> PolicyState {
    let mut s = PolicyState::default();
    s.apply(PolicyCommand::CreatePolicy {
        id: "p".into(),
        name: "pol".into(),
        description: String::new(),
        now_ms: 1,
    });
    for _ in 0..2 {
        s.apply(PolicyCommand::CreateVersion {
            policy_id: "p".into(),
            graph: "{}".into(),
            created_by: "t".into(),
            activate: false,
            now_ms: 2,
        });
    }
    s
}

fn set(
    s: &mut PolicyState,
    shadow: Option<Option<u32>>,
    ret: Option<Option<u64>>,
) -> PolicyResponse {
    s.apply(PolicyCommand::SetPolicySettings {
        id: "p".into(),
        shadow_version: shadow,
        run_retention_ms: ret,
        now_ms: 9,
    })
}

#[test]
fn a_state_that_never_used_version_5_snapshots_in_the_old_format() {
    let mut s = catalog();
    s.apply(PolicyCommand::PutRun {
        run: run("r1", "p", 1, RunStatus::Succeeded, 5),
    });
    let bytes = s.snapshot().unwrap();
    let (old, used): (OldPolicyState, usize) =
        bincode::serde::decode_from_slice(&bytes, cfg()).unwrap();
    assert_eq!(used, bytes.len(), "no trailer");
    assert_eq!(bincode::serde::encode_to_vec(&old, cfg()).unwrap(), bytes);
    assert_eq!(PolicyState::restore(&bytes).unwrap(), s);
    // Settings set and then cleared leave nothing behind either.
    set(&mut s, Some(Some(2)), Some(Some(1000)));
    assert_ne!(s.snapshot().unwrap(), bytes);
    set(&mut s, Some(None), Some(None));
    // Only updated_ms differs from `bytes`: same length, old decoder reads it.
    let b2 = s.snapshot().unwrap();
    let (_, used): (OldPolicyState, usize) = bincode::serde::decode_from_slice(&b2, cfg()).unwrap();
    assert_eq!(used, b2.len());
}

#[test]
fn old_snapshot_bytes_restore() {
    let mut old = OldPolicyState::default();
    let r = run("r1", "p", 1, RunStatus::Failed, 5);
    old.runs.insert(r.id.clone(), r.clone());
    let bytes = bincode::serde::encode_to_vec(&old, cfg()).unwrap();
    let s = PolicyState::restore(&bytes).unwrap();
    assert_eq!(
        s.query(&PolicyQuery::RunFull { id: "r1".into() }),
        PolicyQueryResult::RunFull(Some(Box::new(RunRecord {
            run: r,
            ext: RunExt::default()
        })))
    );
    // The run index is rebuilt: a prune finds the run.
    let mut s = s;
    assert_eq!(
        s.apply(PolicyCommand::PruneRuns {
            now_ms: 100,
            default_retention_ms: 10,
            retention: vec![],
            max: 10
        }),
        PolicyResponse::RunsPruned(1)
    );
}

fn shadowed_state() -> PolicyState {
    let mut s = catalog();
    let want = PolicySettings {
        shadow_version: Some(2),
        run_retention_ms: Some(50),
    };
    assert!(matches!(
        set(&mut s, Some(Some(2)), Some(Some(50))),
        PolicyResponse::PolicySettings(ps) if ps.1 == want
    ));
    s.apply(PolicyCommand::PutRunV2 {
        run: run("r1", "p", 1, RunStatus::Succeeded, 5),
        ext: RunExt {
            shadow: Some(ShadowResult {
                version: 2,
                output: Some("2".into()),
                error: None,
                would_enqueue: vec!["q1 -> work".into()],
            }),
            termination: Some(StoredTermination {
                status: "approved".into(),
                reason: Some("ok".into()),
            }),
        },
    });
    s
}

#[test]
fn the_extension_round_trips_and_old_decoders_still_read_the_base() {
    let s = shadowed_state();
    let bytes = s.snapshot().unwrap();
    let back = PolicyState::restore(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.snapshot().unwrap(), bytes);
    let (old, used): (OldPolicyState, usize) =
        bincode::serde::decode_from_slice(&bytes, cfg()).unwrap();
    assert!(used < bytes.len());
    assert_eq!(old.runs.len(), 1);
    assert_eq!(&bytes[used..used + MAGIC.len()], MAGIC);
}

#[test]
fn a_damaged_trailer_is_refused() {
    let bytes = shadowed_state().snapshot().unwrap();
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert!(PolicyState::restore(&bad).unwrap_err().contains("checksum"));
    let mut junk = catalog().snapshot().unwrap();
    junk.extend_from_slice(b"garbage!");
    assert!(PolicyState::restore(&junk).is_err());
}

#[test]
fn settings_are_validated_and_the_shadow_cannot_be_archived() {
    let mut s = catalog();
    assert!(matches!(
        set(&mut s, Some(Some(7)), None),
        PolicyResponse::Rejected(_)
    ));
    assert!(matches!(
        set(&mut s, None, Some(Some(0))),
        PolicyResponse::Rejected(_)
    ));
    s.apply(PolicyCommand::ArchiveVersion {
        policy_id: "p".into(),
        version: 2,
        now_ms: 3,
    });
    assert!(matches!(
        set(&mut s, Some(Some(2)), None),
        PolicyResponse::Conflict(_)
    ));
    s.apply(PolicyCommand::CreateVersion {
        policy_id: "p".into(),
        graph: "{}".into(),
        created_by: "t".into(),
        activate: false,
        now_ms: 4,
    });
    assert!(matches!(
        set(&mut s, Some(Some(3)), None),
        PolicyResponse::PolicySettings(..)
    ));
    let r = s.apply(PolicyCommand::ArchiveVersion {
        policy_id: "p".into(),
        version: 3,
        now_ms: 5,
    });
    assert!(matches!(r, PolicyResponse::Conflict(m) if m.contains("shadow")));
    assert_eq!(s.settings("p").shadow_version, Some(3));
    assert_eq!(
        s.query(&PolicyQuery::PolicyFull {
            id_or_name: "pol".into()
        }),
        PolicyQueryResult::PolicyFull(Some((
            s.query(&PolicyQuery::Policy { id: "p".into() })
                .policy()
                .unwrap(),
            s.settings("p")
        )))
    );
    s.apply(PolicyCommand::DeletePolicy { id: "p".into() });
    assert!(s.settings("p").is_default());
    assert!(s.ext.is_empty());
}

trait AsPolicy {
    fn policy(self) -> Option<Policy>;
}
impl AsPolicy for PolicyQueryResult {
    fn policy(self) -> Option<Policy> {
        match self {
            PolicyQueryResult::Policy(p) => p,
            _ => None,
        }
    }
}

fn full(s: &PolicyState, f: RunFilterExt) -> Vec<String> {
    match s.query(&PolicyQuery::RunsFull(f)) {
        PolicyQueryResult::RunsFull(r) => r.into_iter().map(|r| r.run.id).collect(),
        other => panic!("{other:?}"),
    }
}

fn filter() -> RunFilterExt {
    RunFilterExt {
        base: RunFilter {
            policy_id: None,
            version: None,
            status: None,
            before: None,
            limit: 100,
        },
        since_ms: None,
        until_ms: None,
        outcome: None,
        shadowed: false,
    }
}

#[test]
fn full_run_listing_filters_by_time_outcome_and_shadow() {
    let mut s = shadowed_state();
    s.apply(PolicyCommand::PutRun {
        run: run("r2", "p", 2, RunStatus::Failed, 20),
    });
    s.apply(PolicyCommand::PutRun {
        run: run("r3", "p", 1, RunStatus::Succeeded, 30),
    });
    assert_eq!(full(&s, filter()), ["r3", "r2", "r1"]);
    assert_eq!(
        full(
            &s,
            RunFilterExt {
                since_ms: Some(20),
                ..filter()
            }
        ),
        ["r3", "r2"]
    );
    assert_eq!(
        full(
            &s,
            RunFilterExt {
                until_ms: Some(20),
                ..filter()
            }
        ),
        ["r1"]
    );
    assert_eq!(
        full(
            &s,
            RunFilterExt {
                since_ms: Some(6),
                until_ms: Some(30),
                ..filter()
            }
        ),
        ["r2"]
    );
    assert_eq!(
        full(
            &s,
            RunFilterExt {
                outcome: Some("approved".into()),
                ..filter()
            }
        ),
        ["r1"]
    );
    assert!(full(
        &s,
        RunFilterExt {
            outcome: Some("declined".into()),
            ..filter()
        }
    )
    .is_empty());
    assert_eq!(
        full(
            &s,
            RunFilterExt {
                shadowed: true,
                ..filter()
            }
        ),
        ["r1"]
    );
    let mut f = filter();
    f.base.version = Some(1);
    f.base.status = Some(RunStatus::Succeeded);
    assert_eq!(full(&s, f), ["r3", "r1"]);
    // A plain PutRun of a running run's end drops stale extras.
    s.apply(PolicyCommand::PutRun {
        run: run("r4", "p", 1, RunStatus::Running, 40),
    });
    assert_eq!(
        full(
            &s,
            RunFilterExt {
                base: status_running(),
                ..filter()
            }
        ),
        ["r4"]
    );
}

fn status_running() -> RunFilter {
    RunFilter {
        policy_id: None,
        version: None,
        status: Some(RunStatus::Running),
        before: None,
        limit: 100,
    }
}

#[test]
fn prune_honours_per_policy_retention_and_keeps_running_runs() {
    let mut s = PolicyState::default();
    for (id, p, st, t) in [
        ("a1", "a", RunStatus::Succeeded, 10),
        ("a2", "a", RunStatus::Running, 11),
        ("a3", "a", RunStatus::Failed, 90),
        ("b1", "b", RunStatus::Succeeded, 10),
        ("b2", "b", RunStatus::Succeeded, 60),
    ] {
        s.apply(PolicyCommand::PutRunV2 {
            run: run(id, p, 1, st, t),
            ext: RunExt {
                shadow: None,
                termination: Some(StoredTermination {
                    status: "x".into(),
                    reason: None,
                }),
            },
        });
    }
    let cmd = |max| PolicyCommand::PruneRuns {
        now_ms: 100,
        default_retention_ms: 50,
        retention: vec![("b".into(), 20)],
        max,
    };
    assert!(s.prune_due(100, 50, &[("b".into(), 20)]));
    let mut copy = PolicyState::restore(&s.snapshot().unwrap()).unwrap();
    assert_eq!(s.apply(cmd(1)), PolicyResponse::RunsPruned(1));
    assert_eq!(s.apply(cmd(10)), PolicyResponse::RunsPruned(2));
    let left: Vec<_> = s.runs.keys().cloned().collect();
    assert_eq!(left, ["a2", "a3"]);
    assert!(!s.ext.runs.contains_key("a1") && !s.ext.runs.contains_key("b2"));
    assert!(!s.prune_due(100, 50, &[("b".into(), 20)]));
    // A restored copy prunes exactly the same.
    copy.apply(cmd(1));
    copy.apply(cmd(10));
    assert_eq!(copy.snapshot().unwrap(), s.snapshot().unwrap());
}

proptest! {
    /// Pruning against a model: after any sequence of writes, prunes
    /// (bounded by `max`) and snapshot/restores, the runs left are those
    /// the model keeps, and two replicas agree byte for byte.
    #[test]
    fn prune_matches_a_model(
        ops in proptest::collection::vec((0u8..4, 0u8..3, 0u64..200, 0u8..3, 1u32..4), 1..60),
        rets in proptest::collection::vec(proptest::option::of(1u64..120), 3),
        default in 1u64..120,
    ) {
        let retention: Vec<(String, u64)> = rets
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (format!("p{i}"), r)))
            .collect();
        let keep_for = |p: &str| retention.iter().find(|(q, _)| q == p).map_or(default, |(_, r)| *r);
        let mut s = PolicyState::default();
        let mut model: BTreeMap<String, Run> = BTreeMap::new();
        let mut now = 0u64;
        for (n, (op, pol, t, st, max)) in ops.into_iter().enumerate() {
            match op {
                0 | 1 => {
                    let status = [RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed][st as usize];
                    let r = run(&format!("r{n:04}"), &format!("p{pol}"), 1, status, now + t);
                    s.apply(PolicyCommand::PutRunV2 { run: r.clone(), ext: RunExt::default() });
                    model.insert(r.id.clone(), r);
                }
                2 => {
                    now += t;
                    // Prune to the end, `max` at a time.
                    loop {
                        let r = s.apply(PolicyCommand::PruneRuns {
                            now_ms: now,
                            default_retention_ms: default,
                            retention: retention.clone(),
                            max,
                        });
                        match r {
                            PolicyResponse::RunsPruned(k) if k < max => break,
                            PolicyResponse::RunsPruned(_) => {}
                            other => prop_assert!(false, "{other:?}"),
                        }
                    }
                    model.retain(|_, r| {
                        r.status == RunStatus::Running || r.created_ms + keep_for(&r.policy_id) > now
                    });
                    prop_assert!(!s.prune_due(now, default, &retention));
                }
                _ => {
                    let back = PolicyState::restore(&s.snapshot().unwrap()).unwrap();
                    prop_assert_eq!(&back, &s);
                    s = back;
                }
            }
            prop_assert_eq!(s.runs.keys().collect::<Vec<_>>(), model.keys().collect::<Vec<_>>());
        }
    }
}
