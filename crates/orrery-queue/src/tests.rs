use super::*;
use crate::tally::Tally;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn new_job(queue: &str, priority: i32) -> NewJob {
    NewJob {
        queue: queue.into(),
        partition: 0,
        kind: "noop".into(),
        params: "{}".into(),
        priority,
        run_at_ms: None,
        resources: Resources::default(),
        dedupe_key: None,
        submitted_by: None,
        max_attempts: 3,
        lease_s: 10,
        backoff: Backoff {
            initial_ms: 100,
            multiplier_milli: 2000,
            max_ms: 1000,
        },
    }
}

fn spec(worker: &str, max: u32) -> ClaimSpec {
    ClaimSpec {
        worker_id: worker.into(),
        node: 1,
        kinds: vec![],
        partitions: vec![],
        free_gpus: vec![],
        free_cpus: None,
        max,
        lease_s: None,
    }
}

fn enqueue(s: &mut QueueState, idx: u64, job: NewJob, now: u64) -> Job {
    match s.apply(
        idx,
        QueueCommand::Enqueue {
            shard: 2,
            job,
            now_ms: now,
        },
    ) {
        QueueResponse::Enqueued { job, .. } => *job,
        other => panic!("{other:?}"),
    }
}

fn claim(s: &mut QueueState, idx: u64, spec: ClaimSpec, now: u64) -> Vec<Job> {
    match s.apply(idx, QueueCommand::Claim { spec, now_ms: now }) {
        QueueResponse::Claimed(j) => j,
        other => panic!("{other:?}"),
    }
}

// The test modules, by concern; the helpers above and below are theirs.
mod bulk;
mod model_check;
mod query;
mod unit;
mod workflow;
mod workflow_limits;

const KINDS: [&str; 2] = ["noop", "other"];
const QUEUES: [&str; 2] = ["q", "r"];
const CLAIM_KINDS: [&[&str]; 4] = [&[], &["noop"], &["other"], &["noop", "other"]];

/// Structural invariants: one live lease per running job and none otherwise,
/// the indexes agree with the jobs, at most one successful run per job.
fn check_invariants(s: &QueueState) -> Result<(), TestCaseError> {
    let mut running: BTreeMap<(Name, u32), u32> = BTreeMap::new();
    let mut leases = 0;
    for j in s.jobs.values() {
        let open_runs = j.runs.iter().filter(|r| r.finished_ms.is_none()).count();
        let succeeded = j
            .runs
            .iter()
            .filter(|r| r.outcome.map(Outcome::as_str) == Some("succeeded"))
            .count();
        prop_assert!(succeeded <= 1, "job {} completed {succeeded} times", j.id);
        prop_assert_eq!(succeeded == 1, j.state == JobState::Succeeded);
        prop_assert_eq!(j.runs.len() as u32, j.attempts);
        if j.state == JobState::Running {
            prop_assert!(j.lease.is_some());
            prop_assert_eq!(open_runs, 1);
            leases += 1;
            *running.entry((j.queue.clone(), j.partition)).or_default() += 1;
        } else {
            prop_assert!(j.lease.is_none());
            prop_assert_eq!(open_runs, 0);
        }
        prop_assert_eq!(
            j.state == JobState::Queued,
            s.ready
                .get(&(j.queue.clone(), j.kind.clone()))
                .is_some_and(|b| b.contains(&(-(j.priority as i64), j.id)))
        );
    }
    prop_assert!(
        s.ready.values().all(|b| !b.is_empty()),
        "empty ready bucket kept"
    );
    // The finished index is exactly the finished jobs, by finish time.
    let finished: BTreeSet<(u64, JobId)> = s
        .jobs
        .values()
        .filter(|j| j.state.is_terminal())
        .map(|j| (j.finished_ms.unwrap_or(u64::MAX), j.id))
        .collect();
    prop_assert_eq!(&s.finished, &finished);
    // The per-queue tally is exactly the jobs, and a queue's counts are
    // what a scan of its jobs gives.
    prop_assert_eq!(&s.tally, &Tally::of(s.jobs.values().map(|j| &**j)));
    for q in QUEUES {
        let mut counts = BTreeMap::new();
        let mut oldest: Option<u64> = None;
        for j in s.jobs.values().filter(|j| &*j.queue == q) {
            *counts.entry(j.state).or_default() += 1;
            if j.state == JobState::Queued {
                oldest = Some(oldest.map_or(j.created_ms, |o| o.min(j.created_ms)));
            }
        }
        prop_assert_eq!(s.counts(q), (counts, oldest));
    }
    // Listing queued or running jobs (from the live index), of one queue or
    // of all, is the scan's answer, page by page.
    for q in [None, Some(QUEUES[0]), Some(QUEUES[1])] {
        for st in [JobState::Queued, JobState::Running] {
            let scan: Vec<JobId> = s
                .jobs
                .values()
                .filter(|j| q.is_none_or(|q| &*j.queue == q) && j.state == st)
                .map(|j| j.id)
                .collect();
            let mut paged = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = s.list(q, Some(st), cursor.as_deref(), 2);
                paged.extend(page.iter().map(|j| j.id));
                match page.last() {
                    Some(j) if page.len() == 2 => cursor = Some(j.id.to_string()),
                    _ => break,
                }
            }
            prop_assert_eq!(paged, scan);
        }
    }
    // A dedupe key names a job that still exists.
    prop_assert!(
        s.dedupe.values().all(|id| s.jobs.contains_key(id)),
        "dedupe key of a forgotten job"
    );
    prop_assert_eq!(s.leases.len(), leases);
    prop_assert_eq!(&s.running, &running);
    prop_assert_eq!(
        s.ready.values().map(|b| b.len()).sum::<usize>(),
        s.jobs
            .values()
            .filter(|j| j.state == JobState::Queued)
            .count()
    );
    Ok(())
}

// ---------------------------------------------------------------------
// The snapshot format
// ---------------------------------------------------------------------

/// A state that uses every field of the snapshot: a queue, a GPU report,
/// jobs in every state (with dedupe keys, resources, results, errors,
/// runs with facts, a live lease, a requested cancel), events and a prune.
fn golden_state() -> QueueState {
    let mut s = QueueState::default();
    let mut idx = 0;
    let mut apply = |s: &mut QueueState, cmd: QueueCommand| {
        idx += 1;
        s.apply(idx, cmd)
    };
    apply(
        &mut s,
        QueueCommand::CreateQueue(QueueSpec {
            name: "q".into(),
            partitions: 2,
            lease_s: 30,
            max_attempts: 2,
            backoff: Backoff::default(),
            concurrency_limit: Some(8),
            created_ms: 1,
        }),
    );
    apply(
        &mut s,
        QueueCommand::ReportGpus {
            node: 1,
            gpus: vec![GpuRecord {
                uuid: "GPU-1".into(),
                index: 0,
                name: "Test GPU".into(),
                memory_total_mb: 16_000,
                memory_used_mb: 100,
                utilization_pct: 3,
                temperature_c: 40,
                compute_capability: "8.0".into(),
            }],
            now_ms: 2,
        },
    );
    let ids = |r: QueueResponse| -> Vec<String> {
        match r {
            QueueResponse::Enqueued { job, .. } => vec![job.id.to_string()],
            QueueResponse::Many(items) => items
                .into_iter()
                .filter_map(|r| match r {
                    QueueResponse::Enqueued { job, .. } => Some(job.id.to_string()),
                    _ => None,
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    };
    let mut gpu = new_job("q", 2);
    gpu.dedupe_key = Some("k".into());
    gpu.submitted_by = Some("alice".into());
    gpu.params = "{\"x\":1}".into();
    gpu.resources = Resources {
        gpus: 1,
        gpu_memory_mb: 100,
        cpus: 2,
        shared_gpu: false,
    };
    let a = ids(apply(
        &mut s,
        QueueCommand::Enqueue {
            shard: 1,
            job: gpu,
            now_ms: 10,
        },
    ))[0]
        .clone();
    let b = ids(apply(
        &mut s,
        QueueCommand::Enqueue {
            shard: 1,
            job: new_job("q", 1),
            now_ms: 11,
        },
    ))[0]
        .clone();
    let mut later = new_job("q", 0);
    later.run_at_ms = Some(1_000_000);
    let c = ids(apply(
        &mut s,
        QueueCommand::Enqueue {
            shard: 1,
            job: later,
            now_ms: 12,
        },
    ))[0]
        .clone();
    let mut other = new_job("q", 0);
    other.kind = "other".into();
    other.partition = 1;
    let many = ids(apply(
        &mut s,
        QueueCommand::EnqueueMany {
            shard: 1,
            jobs: vec![other.clone(), other.clone(), other],
            now_ms: 13,
        },
    ));
    let mut w1 = spec("w1", 3);
    w1.free_gpus = vec![("GPU-1".into(), 1000)];
    w1.free_cpus = Some(8);
    w1.partitions = vec![("q".into(), 0, Some(4)), ("q".into(), 1, Some(4))];
    apply(
        &mut s,
        QueueCommand::Claim {
            spec: w1,
            now_ms: 20,
        },
    );
    apply(
        &mut s,
        QueueCommand::Cancel {
            job_id: c.clone(),
            now_ms: 25,
        },
    );
    apply(
        &mut s,
        QueueCommand::Complete {
            job_id: a.clone(),
            token: 1,
            result: "{\"ok\":true}".into(),
            facts: RunFacts {
                gpu_uuids: vec!["GPU-1".into()],
                exit_code: Some(0),
                duration_ms: Some(7),
                gpu_peak_memory_mb: Some(90),
                gpu_mean_utilization_centi: Some(4_250),
            },
            now_ms: 30,
        },
    );
    apply(
        &mut s,
        QueueCommand::Fail {
            job_id: b.clone(),
            token: 1,
            error: "boom \"quoted\"".into(),
            retry: true,
            facts: RunFacts::default(),
            now_ms: 31,
        },
    );
    apply(
        &mut s,
        QueueCommand::Heartbeat {
            job_id: many[0].clone(),
            token: 1,
            now_ms: 32,
        },
    );
    apply(
        &mut s,
        QueueCommand::Cancel {
            job_id: many[0].clone(),
            now_ms: 34,
        },
    );
    apply(&mut s, QueueCommand::ExpireLeases { now_ms: 100_000 });
    apply(
        &mut s,
        QueueCommand::Settle {
            work: vec![Settlement {
                completions: vec![],
                claim: spec("w2", 2),
            }],
            now_ms: 100_001,
        },
    );
    apply(
        &mut s,
        QueueCommand::Fail {
            job_id: b.clone(),
            token: 2,
            error: "for good".into(),
            retry: false,
            facts: RunFacts::default(),
            now_ms: 100_002,
        },
    );
    apply(
        &mut s,
        QueueCommand::CompleteMany {
            items: vec![Completion {
                job_id: many[2].clone(),
                token: 1,
                result: "null".into(),
                facts: RunFacts::default(),
            }],
            now_ms: 100_003,
        },
    );
    apply(
        &mut s,
        QueueCommand::Prune {
            before_ms: 26,
            max: 1,
        },
    );
    s
}

/// Snapshots written by earlier versions must restore: the bytes of
/// [`golden_state`] are pinned in `testdata/`. A change to the in-memory
/// types that changes these bytes needs a versioned snapshot format.
/// (`ORRERY_WRITE_GOLDEN=1` rewrites the file, for a deliberate new format.)
#[test]
fn snapshot_format_is_stable() {
    const PINNED: &[u8] = include_bytes!("testdata/queue-snapshot-v1.bin");
    let s = golden_state();
    check_invariants(&s).unwrap();
    let states: BTreeSet<JobState> = s.jobs.values().map(|j| j.state).collect();
    assert_eq!(
        states.len(),
        5,
        "the golden state lost a job state: {states:?}"
    );
    assert!(s.jobs.values().any(|j| j.lease.is_some()));
    assert!(s.jobs.values().any(|j| j.runs.len() > 1));
    assert!(s.jobs.values().any(|j| j.cancel_requested));
    let bytes = s.snapshot().unwrap();
    if std::env::var_os("ORRERY_WRITE_GOLDEN").is_some() {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/testdata/queue-snapshot-v1.bin"
            ),
            &bytes,
        )
        .unwrap();
    }
    assert_eq!(bytes, PINNED, "the snapshot encoding changed");
    let restored = QueueState::restore(PINNED).unwrap();
    assert_eq!(restored, s);
    assert_eq!(restored.snapshot().unwrap(), PINNED);
}
