//! Merged commands (the batch limit, time), settlements and pruning.

use super::*;

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
