//! Property tests: random command sequences against the invariants, and
//! merged (group-committed) bursts against the same commands one by one.

use super::*;

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
