use super::*;
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

#[test]
fn ids_sort_by_time_and_name_their_shard() {
    let a = JobId::new(1_700_000_000_000, 3, 99);
    let b = JobId::new(1_700_000_000_001, 0, 5);
    assert!(a < b);
    let (ta, tb) = (a.to_string(), b.to_string());
    assert!(ta < tb, "text sorts as the number");
    let text = a.to_string();
    assert_eq!(text.len(), 26);
    // 12 digits of milliseconds, 4 of shard, 10 of sequence.
    assert_eq!(text, "018bcfe5680000030000000063");
    assert_eq!(JobId::parse(&text), Some(a));
    assert_eq!(a, text);
    assert_eq!(job_shard(&text), Some(3));
    assert_eq!(a.shard(), 3);
    assert_eq!(job_shard("nope"), None);
    assert_eq!(job_shard(&text.to_uppercase()), None);
    assert_eq!(job_shard(&format!("{text}0")), None);
    assert_eq!(job_shard(&format!("+{}", &text[1..])), None);
    // Stored as text: a snapshot written with String ids reads back.
    let enc = bincode::serde::encode_to_vec(a, bincode::config::standard()).unwrap();
    let as_string = bincode::serde::encode_to_vec(&text, bincode::config::standard()).unwrap();
    assert_eq!(enc, as_string);
    let back: JobId = bincode::serde::decode_from_slice(&as_string, bincode::config::standard())
        .unwrap()
        .0;
    assert_eq!(back, a);
    let bad = bincode::serde::encode_to_vec("zz", bincode::config::standard()).unwrap();
    assert!(
        bincode::serde::decode_from_slice::<JobId, _>(&bad, bincode::config::standard()).is_err()
    );
}

#[test]
fn backoff_grows_and_caps() {
    let b = Backoff {
        initial_ms: 100,
        multiplier_milli: 2000,
        max_ms: 500,
    };
    assert_eq!(b.delay_ms(1), 100);
    assert_eq!(b.delay_ms(2), 200);
    assert_eq!(b.delay_ms(3), 400);
    assert_eq!(b.delay_ms(4), 500);
    assert_eq!(b.delay_ms(60), 500);
}

#[test]
fn partition_limits_sum_to_the_limit() {
    let q = QueueSpec {
        name: "q".into(),
        partitions: 3,
        lease_s: 30,
        max_attempts: 3,
        backoff: Backoff::default(),
        concurrency_limit: Some(7),
        created_ms: 0,
    };
    let sum: u32 = (0..3).map(|p| q.partition_limit(p).unwrap()).sum();
    assert_eq!(sum, 7);
}

#[test]
fn priority_then_fifo_and_delay() {
    let mut s = QueueState::default();
    let low = enqueue(&mut s, 1, new_job("q", 0), 1000);
    let high = enqueue(&mut s, 2, new_job("q", 5), 1001);
    let mut delayed = new_job("q", 9);
    delayed.run_at_ms = Some(5000);
    let delayed = enqueue(&mut s, 3, delayed, 1002);
    let low2 = enqueue(&mut s, 4, new_job("q", 0), 1003);
    let got = claim(&mut s, 5, spec("w", 10), 2000);
    let ids: Vec<_> = got.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![high.id, low.id, low2.id]);
    assert!(got
        .iter()
        .all(|j| j.attempts == 1 && j.state == JobState::Running));
    let got = claim(&mut s, 6, spec("w", 10), 5000);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, delayed.id);
}

#[test]
fn dedupe_returns_the_existing_job() {
    let mut s = QueueState::default();
    let mut j = new_job("q", 0);
    j.dedupe_key = Some("k".into());
    let first = enqueue(&mut s, 1, j.clone(), 10);
    match s.apply(
        2,
        QueueCommand::Enqueue {
            shard: 2,
            job: j,
            now_ms: 11,
        },
    ) {
        QueueResponse::Enqueued { job, created } => {
            assert!(!created);
            assert_eq!(job.id, first.id);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stale_token_rejected_and_complete_at_most_once() {
    let mut s = QueueState::default();
    let j = enqueue(&mut s, 1, new_job("q", 0), 0);
    let c = claim(&mut s, 2, spec("a", 1), 0);
    assert_eq!(c[0].attempts, 1);
    // Lease (10 s) expires; another worker takes attempt 2.
    assert_eq!(
        s.apply(3, QueueCommand::ExpireLeases { now_ms: 10_000 }),
        QueueResponse::Expired(1)
    );
    let c2 = claim(&mut s, 4, spec("b", 1), 20_000);
    assert_eq!(c2[0].attempts, 2);
    let complete = |token| QueueCommand::Complete {
        job_id: j.id.to_string(),
        token,
        result: "1".into(),
        facts: RunFacts::default(),
        now_ms: 21_000,
    };
    assert!(matches!(
        s.apply(5, complete(1)),
        QueueResponse::Rejected(QueueError::StaleToken { .. })
    ));
    match s.apply(6, complete(2)) {
        QueueResponse::Job(j) => {
            assert_eq!(j.state, JobState::Succeeded);
            assert_eq!(j.result.as_deref(), Some("1"));
            assert_eq!(j.runs.len(), 2);
            assert_eq!(j.runs[0].outcome.map(Outcome::as_str), Some("expired"));
            assert_eq!(j.runs[1].outcome.map(Outcome::as_str), Some("succeeded"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.apply(7, complete(2)),
        QueueResponse::Rejected(QueueError::StaleToken { .. })
    ));
}

#[test]
fn retries_with_backoff_then_dead() {
    let mut s = QueueState::default();
    let j = enqueue(&mut s, 1, new_job("q", 0), 0);
    let mut now = 0;
    for attempt in 1..=3u32 {
        let c = claim(&mut s, 10 + attempt as u64 * 2, spec("w", 1), now);
        assert_eq!(c.len(), 1, "attempt {attempt}");
        let r = s.apply(
            11 + attempt as u64 * 2,
            QueueCommand::Fail {
                job_id: j.id.to_string(),
                token: attempt,
                error: "boom".into(),
                retry: true,
                facts: RunFacts::default(),
                now_ms: now,
            },
        );
        let QueueResponse::Job(job) = r else {
            panic!("{r:?}")
        };
        if attempt < 3 {
            assert_eq!(job.state, JobState::Queued);
            let delay = 100 << (attempt - 1);
            assert_eq!(job.run_at_ms, now + delay);
            // Not claimable before the backoff has passed.
            assert!(claim(&mut s, 100, spec("w", 1), now + delay - 1).is_empty());
            now += delay;
        } else {
            assert_eq!(job.state, JobState::Dead);
            assert_eq!(job.last_error.as_deref(), Some("boom"));
        }
    }
}

#[test]
fn cancel_queued_and_running() {
    let mut s = QueueState::default();
    let a = enqueue(&mut s, 1, new_job("q", 0), 0);
    let b = enqueue(&mut s, 2, new_job("q", 0), 0);
    let QueueResponse::Job(j) = s.apply(
        3,
        QueueCommand::Cancel {
            job_id: a.id.to_string(),
            now_ms: 1,
        },
    ) else {
        panic!()
    };
    assert_eq!(j.state, JobState::Cancelled);
    let c = claim(&mut s, 4, spec("w", 5), 2);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].id, b.id);
    s.apply(
        5,
        QueueCommand::Cancel {
            job_id: b.id.to_string(),
            now_ms: 3,
        },
    );
    assert_eq!(
        s.apply(
            6,
            QueueCommand::Heartbeat {
                job_id: b.id.to_string(),
                token: 1,
                now_ms: 4
            }
        ),
        QueueResponse::Heartbeat {
            cancelled: true,
            expires_ms: 10_004
        }
    );
    let QueueResponse::Job(j) = s.apply(
        7,
        QueueCommand::Fail {
            job_id: b.id.to_string(),
            token: 1,
            error: CANCELLED.into(),
            retry: true,
            facts: RunFacts::default(),
            now_ms: 5,
        },
    ) else {
        panic!()
    };
    assert_eq!(j.state, JobState::Cancelled);
    assert!(matches!(
        s.apply(
            8,
            QueueCommand::Cancel {
                job_id: "x".into(),
                now_ms: 6
            }
        ),
        QueueResponse::Rejected(QueueError::UnknownJob(_))
    ));
}

#[test]
fn resources_kinds_and_concurrency_limit() {
    let mut s = QueueState::default();
    let mut gpu = new_job("q", 5);
    gpu.resources.gpus = 1;
    gpu.resources.gpu_memory_mb = 8000;
    let gpu = enqueue(&mut s, 1, gpu, 0);
    let mut other = new_job("q", 0);
    other.kind = "other".into();
    enqueue(&mut s, 2, other, 0);
    let plain = enqueue(&mut s, 3, new_job("q", 0), 0);
    let plain2 = enqueue(&mut s, 4, new_job("q", 0), 0);
    let mut sp = spec("w", 10);
    sp.kinds = vec!["noop".into()];
    sp.partitions = vec![("q".into(), 0, Some(1))];
    // No GPU offered: the GPU job is skipped, the limit allows one job.
    let c = claim(&mut s, 5, sp.clone(), 1);
    assert_eq!(c.iter().map(|j| &j.id).collect::<Vec<_>>(), vec![&plain.id]);
    assert!(claim(&mut s, 6, sp.clone(), 1).is_empty());
    // Too little GPU memory, then enough (limit 3).
    sp.partitions = vec![("q".into(), 0, Some(3))];
    sp.free_gpus = vec![("GPU-a".into(), 4000)];
    let c = claim(&mut s, 7, sp.clone(), 1);
    assert_eq!(
        c.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&plain2.id]
    );
    sp.free_gpus = vec![("GPU-a".into(), 16000)];
    let c = claim(&mut s, 8, sp, 1);
    assert_eq!(c.iter().map(|j| &j.id).collect::<Vec<_>>(), vec![&gpu.id]);
}

/// GPUs that shared jobs hold are offered to shared jobs only; free GPUs
/// to both, and an exclusive job takes its free GPU out of the offer.
#[test]
fn shared_gpus_fit_shared_jobs_only() {
    let mut s = QueueState::default();
    let gpu_job = |shared: bool, prio: i32| {
        let mut j = new_job("q", prio);
        j.resources.gpus = 1;
        j.resources.shared_gpu = shared;
        j
    };
    let excl = enqueue(&mut s, 1, gpu_job(false, 9), 0);
    let sh1 = enqueue(&mut s, 2, gpu_job(true, 5), 0);
    let sh2 = enqueue(&mut s, 3, gpu_job(true, 5), 0);
    let claim_sharing = |s: &mut QueueState, idx, free: &[&str], shared: &[&str]| {
        let mut sp = spec("w", 10);
        sp.free_gpus = free.iter().map(|u| (u.to_string(), 16_000)).collect();
        let r = s.apply(
            idx,
            QueueCommand::ClaimSharing {
                spec: sp,
                shared_gpus: shared.iter().map(|u| (u.to_string(), 16_000)).collect(),
                now_ms: 1,
            },
        );
        match r {
            QueueResponse::Claimed(jobs) => jobs.into_iter().map(|j| j.id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        }
    };
    // Only a shared GPU on offer: both shared jobs take it, the exclusive
    // job (first by priority) does not.
    let mut t = s.clone();
    assert_eq!(
        claim_sharing(&mut t, 4, &[], &["GPU-a"]),
        vec![sh1.id, sh2.id]
    );
    // Not enough memory left on the shared GPU: nothing.
    let mut t = s.clone();
    let mut j = gpu_job(true, 0);
    j.resources.gpu_memory_mb = 20_000;
    let big = enqueue(&mut t, 4, j, 0);
    assert!(!claim_sharing(&mut t, 5, &[], &["GPU-a"]).contains(&big.id));
    // One free GPU: the exclusive job takes it, the shared jobs use the
    // shared one.
    assert_eq!(
        claim_sharing(&mut s, 4, &["GPU-b"], &["GPU-a"]),
        vec![excl.id, sh1.id, sh2.id]
    );
    // A plain claim never hands a shared job a GPU it was not offered.
    let mut s = QueueState::default();
    enqueue(&mut s, 1, gpu_job(true, 0), 0);
    assert!(claim(&mut s, 2, spec("w", 10), 1).is_empty());
}

#[test]
fn oversized_result_rejected() {
    let mut s = QueueState::default();
    let j = enqueue(&mut s, 1, new_job("q", 0), 0);
    claim(&mut s, 2, spec("w", 1), 0);
    let r = s.apply(
        3,
        QueueCommand::Complete {
            job_id: j.id.to_string(),
            token: 1,
            result: "x".repeat(MAX_RESULT_BYTES + 1),
            facts: RunFacts::default(),
            now_ms: 1,
        },
    );
    assert!(matches!(
        r,
        QueueResponse::Rejected(QueueError::ResultTooLarge(_))
    ));
    assert_eq!(
        s.job(&j.id.to_string()).map(|j| j.state),
        Some(JobState::Running)
    );
}

#[test]
fn catalog_and_events() {
    let mut s = QueueState::default();
    let q = QueueSpec {
        name: "q".into(),
        partitions: 2,
        lease_s: 30,
        max_attempts: 3,
        backoff: Backoff::default(),
        concurrency_limit: None,
        created_ms: 5,
    };
    assert!(matches!(
        s.apply(1, QueueCommand::CreateQueue(q.clone())),
        QueueResponse::QueueCreated(_)
    ));
    assert!(matches!(
        s.apply(2, QueueCommand::CreateQueue(q)),
        QueueResponse::Rejected(QueueError::QueueExists(_))
    ));
    assert_eq!(
        s.apply(3, QueueCommand::DeleteQueue { name: "q".into() }),
        QueueResponse::QueueDeleted
    );
    let j = enqueue(&mut s, 4, new_job("q", 0), 7);
    claim(&mut s, 5, spec("w", 1), 8);
    let ev = s.events_since(0, 100);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].kind, "enqueued");
    assert_eq!(ev[1].kind, "claimed");
    assert_eq!(ev[1].job_id, j.id);
    assert_eq!(s.events_since(1, 100).len(), 1);
    assert!(s.events_since(2, 100).is_empty());
}

// ---------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Enqueue {
        prio: i32,
        dedupe: Option<u8>,
        delay: u64,
        /// Index into [`KINDS`] and [`QUEUES`].
        kind: usize,
        queue: usize,
    },
    Claim {
        max: u32,
        worker: u8,
        /// Index into [`CLAIM_KINDS`].
        kinds: usize,
    },
    Heartbeat {
        job: usize,
        token: u32,
    },
    Complete {
        job: usize,
        token: u32,
    },
    Fail {
        job: usize,
        token: u32,
        retry: bool,
    },
    Cancel {
        job: usize,
    },
    Expire,
    Tick(u64),
    EnqueueMany {
        prios: Vec<i32>,
    },
    CompleteMany {
        items: Vec<(usize, u32)>,
    },
    /// Forget jobs that finished more than `age` ms ago, at most `max`.
    Prune {
        age: u64,
        max: u32,
    },
    /// Completions, then a claim, in one command.
    Settle {
        items: Vec<(usize, u32)>,
        max: u32,
        worker: u8,
    },
    /// A claim offering `free` free GPUs and `shared` GPUs held by shared jobs.
    ClaimSharing {
        max: u32,
        worker: u8,
        kinds: usize,
        free: u8,
        shared: u8,
    },
}

const KINDS: [&str; 2] = ["noop", "other"];
const QUEUES: [&str; 2] = ["q", "r"];
const CLAIM_KINDS: [&[&str]; 4] = [&[], &["noop"], &["other"], &["noop", "other"]];

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (-2i32..3, prop::option::of(0u8..3), prop::sample::select(vec![0u64, 0, 500, 5000]), 0usize..2, 0usize..2)
            .prop_map(|(prio, dedupe, delay, kind, queue)| Op::Enqueue { prio, dedupe, delay, kind, queue }),
        3 => (1u32..4, 0u8..3, 0usize..4).prop_map(|(max, worker, kinds)| Op::Claim { max, worker, kinds }),
        1 => (0usize..8, 0u32..4).prop_map(|(job, token)| Op::Heartbeat { job, token }),
        2 => (0usize..8, 0u32..4).prop_map(|(job, token)| Op::Complete { job, token }),
        2 => (0usize..8, 0u32..4, any::<bool>()).prop_map(|(job, token, retry)| Op::Fail { job, token, retry }),
        1 => (0usize..8).prop_map(|job| Op::Cancel { job }),
        1 => Just(Op::Expire),
        2 => (0u64..15_000).prop_map(Op::Tick),
        1 => prop::collection::vec(-2i32..3, 0..5).prop_map(|prios| Op::EnqueueMany { prios }),
        1 => prop::collection::vec((0usize..8, 0u32..4), 0..5).prop_map(|items| Op::CompleteMany { items }),
        2 => (prop::collection::vec((0usize..8, 0u32..4), 0..4), 1u32..4, 0u8..3)
            .prop_map(|(items, max, worker)| Op::Settle { items, max, worker }),
        1 => (prop::sample::select(vec![0u64, 1, 2_000, 20_000]), 0u32..4)
            .prop_map(|(age, max)| Op::Prune { age, max }),
        1 => (1u32..4, 0u8..3, 0usize..4, 0u8..2, 0u8..3)
            .prop_map(|(max, worker, kinds, free, shared)| Op::ClaimSharing { max, worker, kinds, free, shared }),
    ]
}

/// The single command that one item of a bulk complete stands for.
fn single_complete(c: &Completion, now_ms: u64) -> QueueCommand {
    QueueCommand::Complete {
        job_id: c.job_id.clone(),
        token: c.token,
        result: c.result.clone(),
        facts: c.facts.clone(),
        now_ms,
    }
}

/// Completions of `(job index, token)` pairs; `None` before any job exists.
fn completions(items: &[(usize, u32)], ids: &[String]) -> Option<Vec<Completion>> {
    items
        .iter()
        .map(|(job, token)| {
            Some(Completion {
                job_id: ids.get(job % ids.len().max(1))?.clone(),
                token: *token,
                result: "{}".into(),
                facts: RunFacts::default(),
            })
        })
        .collect()
}

fn to_cmd(op: &Op, ids: &[String], now: u64) -> Option<QueueCommand> {
    let id = |i: usize| ids.get(i % ids.len().max(1)).cloned();
    Some(match op {
        Op::Enqueue {
            prio,
            dedupe,
            delay,
            kind,
            queue,
        } => {
            let mut j = new_job(QUEUES[*queue], *prio);
            j.kind = KINDS[*kind].into();
            j.dedupe_key = dedupe.map(|d| format!("k{d}"));
            j.run_at_ms = Some(now + delay);
            QueueCommand::Enqueue {
                shard: 1,
                job: j,
                now_ms: now,
            }
        }
        Op::Claim { max, worker, kinds } => QueueCommand::Claim {
            spec: ClaimSpec {
                kinds: CLAIM_KINDS[*kinds].iter().map(|k| k.to_string()).collect(),
                ..spec(&format!("w{worker}"), *max)
            },
            now_ms: now,
        },
        Op::Heartbeat { job, token } => QueueCommand::Heartbeat {
            job_id: id(*job)?,
            token: *token,
            now_ms: now,
        },
        Op::Complete { job, token } => QueueCommand::Complete {
            job_id: id(*job)?,
            token: *token,
            result: "{}".into(),
            facts: RunFacts::default(),
            now_ms: now,
        },
        Op::Fail { job, token, retry } => QueueCommand::Fail {
            job_id: id(*job)?,
            token: *token,
            error: "e".into(),
            retry: *retry,
            facts: RunFacts::default(),
            now_ms: now,
        },
        Op::Cancel { job } => QueueCommand::Cancel {
            job_id: id(*job)?,
            now_ms: now,
        },
        Op::Expire => QueueCommand::ExpireLeases { now_ms: now },
        Op::EnqueueMany { prios } => QueueCommand::EnqueueMany {
            shard: 1,
            jobs: prios.iter().map(|p| new_job("q", *p)).collect(),
            now_ms: now,
        },
        Op::CompleteMany { items } => QueueCommand::CompleteMany {
            items: completions(items, ids)?,
            now_ms: now,
        },
        Op::Settle { items, max, worker } => QueueCommand::Settle {
            work: vec![Settlement {
                completions: completions(items, ids)?,
                claim: spec(&format!("w{worker}"), *max),
            }],
            now_ms: now,
        },
        Op::Prune { age, max } => QueueCommand::Prune {
            before_ms: now.saturating_sub(*age),
            max: *max,
        },
        Op::ClaimSharing {
            max,
            worker,
            kinds,
            free,
            shared,
        } => QueueCommand::ClaimSharing {
            spec: ClaimSpec {
                kinds: CLAIM_KINDS[*kinds].iter().map(|k| k.to_string()).collect(),
                free_gpus: (0..*free).map(|i| (format!("GPU-f{i}"), 16_000)).collect(),
                ..spec(&format!("w{worker}"), *max)
            },
            shared_gpus: (0..*shared)
                .map(|i| (format!("GPU-s{i}"), 16_000))
                .collect(),
            now_ms: now,
        },
        Op::Tick(_) => return None,
    })
}

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

proptest! {
    /// Two replicas applying the same commands agree on every response and
    /// on the final state, also when one of them is snapshotted and restored
    /// at an arbitrary point; invariants hold after every command; a
    /// complete succeeds only with the token of the job's latest claim.
    #[test]
    fn deterministic_snapshot_safe_and_single_lease(ops in prop::collection::vec(arb_op(), 0..80), cut in 0usize..80) {
        let mut a = QueueState::default();
        let mut b = QueueState::default();
        // A follower: the same commands, applied without building answers.
        let mut c = QueueState::default();
        let mut ids: Vec<String> = Vec::new();
        let mut now = 1_000u64;
        let mut latest_token: BTreeMap<String, u32> = BTreeMap::new();
        let mut completed: BTreeMap<String, u32> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let idx = i as u64 + 1;
            if i == cut {
                b = QueueState::restore(&b.snapshot().unwrap()).unwrap();
                prop_assert_eq!(&a, &b);
            }
            if let Op::Tick(d) = op { now += d; continue; }
            let Some(cmd) = to_cmd(op, &ids, now) else { continue };
            let before = a.clone();
            let ra = a.apply(idx, cmd.clone());
            let rb = b.apply(idx, cmd.clone());
            prop_assert_eq!(&ra, &rb);
            let rc = c.apply_unobserved(idx, cmd.clone());
            prop_assert_eq!(&rc, &unobserved(&ra));
            prop_assert_eq!(&c, &a);
            check_invariants(&a)?;
            // A bulk complete is the same as its items one by one.
            if let QueueCommand::CompleteMany { items, now_ms } = &cmd {
                let mut one_by_one = before.clone();
                let rs: Vec<QueueResponse> = items
                    .iter()
                    .map(|c| one_by_one.apply(idx, single_complete(c, *now_ms)))
                    .collect();
                prop_assert_eq!(&ra, &QueueResponse::Many(rs));
                prop_assert_eq!(&one_by_one, &a);
            }
            // A settle is the same as its completions, then its claim.
            if let QueueCommand::Settle { work, now_ms } = &cmd {
                let mut one_by_one = before.clone();
                let mut rs = Vec::new();
                for w in work {
                    let done = one_by_one.apply(idx, QueueCommand::CompleteMany {
                        items: w.completions.clone(),
                        now_ms: *now_ms,
                    });
                    let QueueResponse::Many(mut items) = done else {
                        return Err(TestCaseError::fail(format!("{done:?}")));
                    };
                    items.push(one_by_one.apply(idx, QueueCommand::Claim { spec: w.claim.clone(), now_ms: *now_ms }));
                    rs.push(QueueResponse::Many(items));
                }
                prop_assert_eq!(&ra, &QueueResponse::Many(rs));
                prop_assert_eq!(&one_by_one, &a);
            }
            // Jobs here ask for no GPUs, so a claim offering GPUs (free or
            // shared) changes nothing: it is the plain claim.
            if let QueueCommand::ClaimSharing { spec, now_ms, .. } = &cmd {
                let mut plain = before.clone();
                let rp = plain.apply(idx, QueueCommand::Claim { spec: spec.clone(), now_ms: *now_ms });
                prop_assert_eq!(&rp, &ra);
                prop_assert_eq!(&plain, &a);
            }
            // Bulk responses are checked item by item, as the single commands.
            let pairs: Vec<(QueueCommand, QueueResponse)> = match (&cmd, &ra) {
                (QueueCommand::Settle { work, now_ms }, QueueResponse::Many(rs)) => {
                    let mut pairs = Vec::new();
                    for (w, r) in work.iter().zip(rs) {
                        let QueueResponse::Many(items) = r else {
                            return Err(TestCaseError::fail(format!("{r:?}")));
                        };
                        prop_assert_eq!(items.len(), w.completions.len() + 1);
                        for (c, r) in w.completions.iter().zip(items) {
                            pairs.push((single_complete(c, *now_ms), r.clone()));
                        }
                        pairs.push((
                            QueueCommand::Claim { spec: w.claim.clone(), now_ms: *now_ms },
                            items[w.completions.len()].clone(),
                        ));
                    }
                    pairs
                }
                (QueueCommand::CompleteMany { items, now_ms }, QueueResponse::Many(rs)) => {
                    prop_assert_eq!(items.len(), rs.len());
                    items
                        .iter()
                        .zip(rs)
                        .map(|(c, r)| (single_complete(c, *now_ms), r.clone()))
                        .collect()
                }
                (QueueCommand::EnqueueMany { jobs, .. }, QueueResponse::Many(rs)) => {
                    prop_assert_eq!(jobs.len(), rs.len());
                    rs.iter().map(|r| (cmd.clone(), r.clone())).collect()
                }
                _ => vec![(cmd.clone(), ra.clone())],
            };
            for (cmd, ra) in &pairs {
            match (cmd, ra) {
                (_, QueueResponse::Enqueued { job, created: true }) => {
                    prop_assert!(!ids.contains(&job.id.to_string()), "job id {} given twice", job.id);
                    ids.push(job.id.to_string());
                }
                (QueueCommand::Claim { spec, .. } | QueueCommand::ClaimSharing { spec, .. }, QueueResponse::Claimed(jobs)) => {
                    // The claim takes exactly what a naive scan of every
                    // queued job in (priority desc, id) order would: the
                    // per-(queue, kind) buckets change nothing but the cost.
                    let mut model = before.clone();
                    model.apply(idx, QueueCommand::ExpireLeases { now_ms: now });
                    let mut want: Vec<&Job> = model
                        .jobs
                        .values()
                        .filter(|j| j.state == JobState::Queued && j.run_at_ms <= now)
                        .filter(|j| spec.kinds.is_empty() || spec.kinds.iter().any(|k| **k == *j.kind))
                        .map(|j| &**j)
                        .collect();
                    want.sort_by_key(|j| (-(j.priority as i64), j.id));
                    let want: Vec<JobId> = want.iter().take(spec.max as usize).map(|j| j.id).collect();
                    let got: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
                    prop_assert_eq!(got, want);
                    for j in jobs {
                        let prev = latest_token.insert(j.id.to_string(), j.attempts).unwrap_or(0);
                        prop_assert_eq!(j.attempts, prev + 1);
                        prop_assert_eq!(before.job(&j.id.to_string()).map(|j| j.state), Some(JobState::Queued));
                    }
                }
                (QueueCommand::Complete { job_id, token, .. }, QueueResponse::Job(j)) => {
                    prop_assert_eq!(Some(token), latest_token.get(job_id));
                    prop_assert_eq!(before.job(job_id).map(|j| j.state), Some(JobState::Running));
                    prop_assert_eq!(j.state, JobState::Succeeded);
                    *completed.entry(job_id.clone()).or_default() += 1;
                }
                _ => {}
            }
            }
            now += 1;
        }
        prop_assert_eq!(&a, &b);
        prop_assert!(completed.values().all(|n| *n == 1));
    }
}

/// What [`QueueState::apply_unobserved`] answers where `apply` answered `r`:
/// no jobs, everything else the same.
fn unobserved(r: &QueueResponse) -> QueueResponse {
    match r {
        QueueResponse::Enqueued { .. } | QueueResponse::Job(_) => QueueResponse::Unobserved,
        QueueResponse::Claimed(_) => QueueResponse::Claimed(Vec::new()),
        QueueResponse::Many(rs) => QueueResponse::Many(rs.iter().map(unobserved).collect()),
        other => other.clone(),
    }
}

/// Applies `cmd` at `idx` and records the ids of jobs it created.
fn apply_noting_ids(
    s: &mut QueueState,
    idx: u64,
    cmd: QueueCommand,
    ids: &mut Vec<String>,
) -> QueueResponse {
    let r = s.apply(idx, cmd);
    let mut note = |r: &QueueResponse| {
        if let QueueResponse::Enqueued { job, created: true } = r {
            ids.push(job.id.to_string());
        }
    };
    match &r {
        QueueResponse::Many(rs) => rs.iter().for_each(&mut note),
        other => note(other),
    }
    r
}

proptest! {
    /// Group commit changes nothing but job ids: a burst of concurrent
    /// commands merged by `coalesce::merge`, applied as the merged entries
    /// and split back, gives every request the response it would have had
    /// applied alone (in the merged order), and the same final state, once
    /// the ids of created jobs are renamed (they come from the log index,
    /// and merged entries use fewer indexes; the renaming keeps their order,
    /// which is what claims sort by).
    #[test]
    fn merged_burst_equals_one_by_one(
        prefix in prop::collection::vec(arb_op(), 0..40),
        burst in prop::collection::vec(arb_op(), 1..24),
    ) {
        let mut s = QueueState::default();
        let mut ids: Vec<String> = Vec::new();
        let mut now = 1_000u64;
        let mut idx = 0u64;
        for op in &prefix {
            if let Op::Tick(d) = op { now += d; continue; }
            let Some(cmd) = to_cmd(op, &ids, now) else { continue };
            idx += 1;
            apply_noting_ids(&mut s, idx, cmd, &mut ids);
        }
        now += 1;
        let cmds: Vec<QueueCommand> = burst.iter().filter_map(|op| to_cmd(op, &ids, now)).collect();
        prop_assume!(!cmds.is_empty());
        let merged = coalesce::merge(cmds.clone());
        // Every request is answered exactly once.
        let mut answered: Vec<usize> = merged.iter().flat_map(|m| m.slots.iter().map(|(i, _)| *i)).collect();
        answered.sort();
        prop_assert_eq!(answered, (0..cmds.len()).collect::<Vec<_>>());

        let mut via_merge = s.clone();
        let mut merged_ids = Vec::new();
        let mut got: BTreeMap<usize, QueueResponse> = BTreeMap::new();
        let mut order = Vec::new();
        for (j, m) in merged.into_iter().enumerate() {
            let r = apply_noting_ids(&mut via_merge, idx + 1 + j as u64, m.cmd, &mut merged_ids);
            let rs = coalesce::split(r, &m.slots);
            prop_assert_eq!(rs.len(), m.slots.len());
            for ((i, _), r) in m.slots.iter().zip(rs) {
                order.push(*i);
                got.insert(*i, r);
            }
        }
        let mut alone = s.clone();
        let mut alone_ids = Vec::new();
        let mut want: BTreeMap<usize, QueueResponse> = BTreeMap::new();
        for (k, i) in order.iter().enumerate() {
            let r = apply_noting_ids(&mut alone, idx + 1 + k as u64, cmds[*i].clone(), &mut alone_ids);
            want.insert(*i, r);
        }
        prop_assert_eq!(merged_ids.len(), alone_ids.len());
        let mut sorted = merged_ids.clone();
        sorted.sort();
        prop_assert_eq!(&sorted, &merged_ids, "merged ids out of order");
        let rename = |text: String| {
            merged_ids.iter().zip(&alone_ids).fold(text, |t, (m, a)| t.replace(m.as_str(), a.as_str()))
        };
        prop_assert_eq!(rename(format!("{got:?}")), format!("{want:?}"));
        prop_assert_eq!(rename(format!("{via_merge:?}")), format!("{alone:?}"));
        check_invariants(&via_merge)?;
    }
}

#[test]
fn merging_respects_the_batch_limit_and_takes_the_latest_time() {
    let one = |now| QueueCommand::Enqueue {
        shard: 1,
        job: new_job("q", 0),
        now_ms: now,
    };
    let mut cmds: Vec<QueueCommand> = (0..MAX_BATCH as u64 + 5).map(one).collect();
    cmds.push(QueueCommand::ExpireLeases { now_ms: 7 });
    let merged = coalesce::merge(cmds);
    let sizes: Vec<usize> = merged
        .iter()
        .map(|m| match &m.cmd {
            QueueCommand::EnqueueMany { jobs, now_ms, .. } => {
                let latest = m.slots.iter().map(|(i, _)| *i as u64).max().unwrap();
                assert_eq!(*now_ms, latest, "the merged time is the latest stamped");
                jobs.len()
            }
            QueueCommand::ExpireLeases { .. } => 0,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![MAX_BATCH, 0, 5]);
    // A lone command is proposed as it is.
    let merged = coalesce::merge(vec![one(3)]);
    assert_eq!(merged.len(), 1);
    assert!(matches!(merged[0].cmd, QueueCommand::Enqueue { .. }));
    assert_eq!(merged[0].slots, vec![(0, None)]);
    // A refusal of the whole merged command reaches every request.
    let r = QueueResponse::Rejected(QueueError::BatchTooLarge(9));
    let slots = vec![
        (0, Some(coalesce::Slot::One)),
        (1, Some(coalesce::Slot::Many(2))),
    ];
    assert_eq!(coalesce::split(r.clone(), &slots), vec![r.clone(), r]);
}

/// A settlement applies its completions before its claim: with a
/// concurrency limit of one, the job it completes frees the slot that its
/// claim takes, and merging two settlements keeps each one's order.
#[test]
fn settle_completes_before_it_claims() {
    let mut s = QueueState::default();
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = s.apply(
            i + 1,
            QueueCommand::Enqueue {
                shard: 1,
                job: new_job("q", 0),
                now_ms: 1_000,
            },
        );
        let QueueResponse::Enqueued { job, .. } = r else {
            panic!("{r:?}")
        };
        ids.push(job.id);
    }
    let limited = |w: &str| ClaimSpec {
        partitions: vec![("q".into(), 0, Some(1))],
        ..spec(w, 1)
    };
    let QueueResponse::Claimed(first) = s.apply(
        10,
        QueueCommand::Claim {
            spec: limited("w1"),
            now_ms: 1_001,
        },
    ) else {
        panic!("claim")
    };
    assert_eq!(first.len(), 1);
    let done = |id: &JobId| Completion {
        job_id: id.to_string(),
        token: 1,
        result: "{}".into(),
        facts: RunFacts::default(),
    };
    // Alone, the limit refuses a second claim.
    let QueueResponse::Claimed(none) = s.clone().apply(
        11,
        QueueCommand::Claim {
            spec: limited("w2"),
            now_ms: 1_002,
        },
    ) else {
        panic!("claim")
    };
    assert!(none.is_empty());
    // Two settlements merged: w1 completes its job and takes the next; w2
    // then completes an unknown token (rejected) and finds the slot taken.
    let merged = coalesce::merge(vec![
        QueueCommand::Settle {
            work: vec![Settlement {
                completions: vec![done(&first[0].id)],
                claim: limited("w1"),
            }],
            now_ms: 1_002,
        },
        QueueCommand::Settle {
            work: vec![Settlement {
                completions: vec![Completion {
                    token: 9,
                    ..done(&ids[2])
                }],
                claim: limited("w2"),
            }],
            now_ms: 1_003,
        },
    ]);
    assert_eq!(merged.len(), 1, "{merged:?}");
    let m = merged.into_iter().next().unwrap();
    let rs = coalesce::split(s.apply(11, m.cmd), &m.slots);
    let [QueueResponse::Many(a), QueueResponse::Many(b)] = rs.as_slice() else {
        panic!("{rs:?}")
    };
    let [QueueResponse::Many(a)] = a.as_slice() else {
        panic!("{a:?}")
    };
    let [QueueResponse::Many(b)] = b.as_slice() else {
        panic!("{b:?}")
    };
    assert!(matches!(&a[0], QueueResponse::Job(j) if j.state == JobState::Succeeded));
    let QueueResponse::Claimed(next) = &a[1] else {
        panic!("{a:?}")
    };
    assert_eq!(next.len(), 1, "the completion freed the slot first");
    assert_ne!(next[0].id, first[0].id);
    assert!(matches!(
        &b[0],
        QueueResponse::Rejected(QueueError::StaleToken { .. })
    ));
    assert!(matches!(&b[1], QueueResponse::Claimed(j) if j.is_empty()));
    check_invariants(&s).unwrap();
}

/// Pruning forgets only jobs that finished before the cut, oldest first and
/// at most `max`; their dedupe keys are freed; snapshots rebuild the index.
#[test]
fn prune_forgets_old_finished_jobs_only() {
    let mut s = QueueState::default();
    let mut idx = 0;
    let mut enqueue = |s: &mut QueueState, key: Option<&str>, now: u64| {
        idx += 1;
        let mut job = new_job("q", 0);
        job.dedupe_key = key.map(str::to_string);
        match s.apply(
            idx,
            QueueCommand::Enqueue {
                shard: 1,
                job,
                now_ms: now,
            },
        ) {
            QueueResponse::Enqueued { job, created } => (job.id.to_string(), created),
            other => panic!("{other:?}"),
        }
    };
    let (a, _) = enqueue(&mut s, Some("k"), 1_000);
    let (b, _) = enqueue(&mut s, None, 1_000);
    let (c, _) = enqueue(&mut s, None, 1_000);
    let (queued, _) = enqueue(&mut s, None, 1_000);
    for id in [&a, &b, &c] {
        s.apply(
            100,
            QueueCommand::Cancel {
                job_id: id.clone(),
                now_ms: 2_000 + (id == &c) as u64 * 5_000,
            },
        );
    }
    assert_eq!(s.oldest_finished(), Some(2_000));
    // a and b finished at 2 000, c at 7 000: a cut at 5 000, one at a time.
    assert_eq!(
        s.apply(
            101,
            QueueCommand::Prune {
                before_ms: 5_000,
                max: 1
            }
        ),
        QueueResponse::Pruned(1)
    );
    assert_eq!(
        s.apply(
            102,
            QueueCommand::Prune {
                before_ms: 5_000,
                max: 10
            }
        ),
        QueueResponse::Pruned(1)
    );
    assert_eq!(
        s.apply(
            103,
            QueueCommand::Prune {
                before_ms: 5_000,
                max: 10
            }
        ),
        QueueResponse::Pruned(0)
    );
    assert!(s.job(&a).is_none() && s.job(&b).is_none());
    assert_eq!(s.job(&c).map(|j| j.state), Some(JobState::Cancelled));
    assert_eq!(s.job(&queued).map(|j| j.state), Some(JobState::Queued));
    assert_eq!(s.oldest_finished(), Some(7_000));
    // The dedupe key of the forgotten job makes a new job.
    let (again, created) = enqueue(&mut s, Some("k"), 8_000);
    assert!(created && again != a);
    // Restored from a snapshot, the state (with its index) is the same.
    let restored = QueueState::restore(&s.snapshot().unwrap()).unwrap();
    assert_eq!(restored, s);
    assert_eq!(restored.oldest_finished(), Some(7_000));
    check_invariants(&s).unwrap();
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
