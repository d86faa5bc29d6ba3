//! [`QueueState::query`]: each read answers what the state holds, and the
//! encoding of queries and answers (they travel between nodes) is pinned.

use super::*;

fn partitions(q: &str) -> ClaimSpec {
    ClaimSpec {
        partitions: vec![(q.into(), 0, None)],
        ..spec("w", 1)
    }
}

fn claimable(s: &QueueState, q: &JobsQuery) -> bool {
    match s.query(q) {
        JobsQueryResult::Claimable(yes) => yes,
        other => panic!("{other:?}"),
    }
}

#[test]
fn query_answers_what_the_state_holds() {
    let mut s = QueueState::default();
    let q = QueueSpec {
        name: "q".into(),
        partitions: 1,
        lease_s: 30,
        max_attempts: 3,
        backoff: Backoff::default(),
        concurrency_limit: None,
        created_ms: 5,
    };
    s.apply(1, QueueCommand::CreateQueue(q.clone()));
    let gpu = GpuRecord {
        uuid: "GPU-1".into(),
        index: 0,
        name: "H100".into(),
        memory_total_mb: 80_000,
        memory_used_mb: 0,
        utilization_pct: 0,
        temperature_c: 30,
        compute_capability: "9.0".into(),
    };
    s.apply(
        2,
        QueueCommand::ReportGpus {
            node: 3,
            gpus: vec![gpu.clone()],
            now_ms: 6,
        },
    );
    let a = enqueue(&mut s, 3, new_job("q", 0), 10);
    let b = enqueue(&mut s, 4, new_job("r", 0), 11);
    let c = enqueue(&mut s, 5, new_job("q", 0), 12);
    assert_eq!(claim(&mut s, 6, partitions("q"), 20)[0].id, a.id);

    assert_eq!(
        s.query(&JobsQuery::Catalog),
        JobsQueryResult::Catalog {
            queues: vec![q],
            gpus: BTreeMap::from([(
                3,
                GpuReport {
                    reported_ms: 6,
                    gpus: vec![gpu],
                }
            )]),
        }
    );

    let JobsQueryResult::Job(Some(job)) = s.query(&JobsQuery::Job(a.id.to_string())) else {
        panic!("job {} not found", a.id);
    };
    assert_eq!(job.state, JobState::Running);
    assert_eq!(Some(&*job), s.job(&a.id.to_string()));
    assert_eq!(
        s.query(&JobsQuery::Job("nope".into())),
        JobsQueryResult::Job(None)
    );
    assert_eq!(
        s.query(&JobsQuery::Job(JobId::new(1, 2, 3).to_string())),
        JobsQueryResult::Job(None)
    );

    let list =
        |queue: Option<&str>, state, after: Option<JobId>, limit| match s.query(&JobsQuery::List {
            queue: queue.map(String::from),
            state,
            after: after.map(|id| id.to_string()),
            limit,
        }) {
            JobsQueryResult::List(jobs) => jobs.into_iter().map(|j| j.id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
    assert_eq!(list(None, None, None, 10), vec![a.id, b.id, c.id]);
    assert_eq!(list(Some("q"), None, None, 10), vec![a.id, c.id]);
    assert_eq!(
        list(None, Some(JobState::Queued), None, 10),
        vec![b.id, c.id]
    );
    assert_eq!(
        list(Some("q"), Some(JobState::Running), None, 10),
        vec![a.id]
    );
    assert_eq!(list(None, None, Some(a.id), 10), vec![b.id, c.id]);
    assert_eq!(list(None, None, None, 2), vec![a.id, b.id]);
    assert!(list(Some("r"), Some(JobState::Succeeded), None, 10).is_empty());

    assert_eq!(
        s.query(&JobsQuery::Counts("q".into())),
        JobsQueryResult::Counts(
            BTreeMap::from([(JobState::Queued, 1), (JobState::Running, 1)]),
            Some(12)
        )
    );
    assert_eq!(
        s.query(&JobsQuery::Counts("r".into())),
        JobsQueryResult::Counts(BTreeMap::from([(JobState::Queued, 1)]), Some(11))
    );
    assert_eq!(
        s.query(&JobsQuery::Counts("none".into())),
        JobsQueryResult::Counts(BTreeMap::new(), None)
    );

    let events = |since, limit| match s.query(&JobsQuery::Events { since, limit }) {
        JobsQueryResult::Events(ev) => ev,
        other => panic!("{other:?}"),
    };
    let kinds: Vec<String> = events(0, 100).iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(kinds, ["enqueued", "enqueued", "enqueued", "claimed"]);
    assert_eq!(events(0, 2).len(), 2);
    let last = events(3, 100);
    assert_eq!(last.len(), 1);
    assert_eq!((&*last[0].kind, last[0].job_id), ("claimed", a.id));
    assert_eq!(events(0, 100), s.events_since(0, 100));

    // b and c are queued.
    assert!(claimable(
        &s,
        &JobsQuery::Claimable {
            spec: spec("w", 1),
            now_ms: 20,
        }
    ));
    // Nobody runs the kind asked for.
    assert!(!claimable(
        &s,
        &JobsQuery::Claimable {
            spec: ClaimSpec {
                kinds: vec!["other".into()],
                ..spec("w", 1)
            },
            now_ms: 20,
        }
    ));
    // Queue q's one partition allows one running job: a.
    assert!(!claimable(
        &s,
        &JobsQuery::Claimable {
            spec: ClaimSpec {
                partitions: vec![("q".into(), 0, Some(1))],
                ..spec("w", 1)
            },
            now_ms: 20,
        }
    ));
    // a's lease (30 s from 20) has ended by then: the claim would expire it.
    assert!(claimable(
        &s,
        &JobsQuery::Claimable {
            spec: ClaimSpec {
                partitions: vec![("q".into(), 0, Some(1))],
                ..spec("w", 1)
            },
            now_ms: 10_020,
        }
    ));

    // A shared-GPU job fits only the GPUs shared jobs hold, when no free
    // GPU is offered.
    let mut g = new_job("g", 0);
    g.resources = Resources {
        gpus: 1,
        gpu_memory_mb: 1000,
        cpus: 0,
        shared_gpu: true,
    };
    enqueue(&mut s, 7, g, 21);
    assert!(!claimable(
        &s,
        &JobsQuery::Claimable {
            spec: partitions("g"),
            now_ms: 22,
        }
    ));
    assert!(claimable(
        &s,
        &JobsQuery::ClaimableSharing {
            spec: partitions("g"),
            shared_gpus: vec![("GPU-1".into(), 2000)],
            now_ms: 22,
        }
    ));
    assert!(!claimable(
        &s,
        &JobsQuery::ClaimableSharing {
            spec: partitions("g"),
            shared_gpus: vec![("GPU-1".into(), 500)],
            now_ms: 22,
        }
    ));
}

/// Queries and answers travel between nodes as bincode (the standard
/// configuration, as `orrery_storage::encode` writes them after its
/// checksum): their variant indexes, field order and types are the format.
#[test]
fn query_encoding_is_stable() {
    let config = bincode::config::standard();
    let q = JobsQuery::List {
        queue: Some("q".into()),
        state: Some(JobState::Running),
        after: None,
        limit: 50,
    };
    let bytes = bincode::serde::encode_to_vec(&q, config).unwrap();
    // Variant 2; Some, "q"; Some, Running (variant 1); None; 50.
    assert_eq!(bytes, [2, 1, 1, b'q', 1, 1, 0, 50]);
    let (back, _): (JobsQuery, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(back, q);

    let r = JobsQueryResult::Claimable(true);
    let bytes = bincode::serde::encode_to_vec(&r, config).unwrap();
    // Variant 5; true.
    assert_eq!(bytes, [5, 1]);
    let (back, _): (JobsQueryResult, usize) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(back, r);
}
