//! Single operations: ids, backoff, claim order, dedupe, tokens, retries,
//! cancel, resources, shared GPUs, result size, the catalog and events.

use super::*;

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
