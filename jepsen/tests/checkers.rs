//! The checkers on hand-written good and bad histories, and a property
//! test: histories generated from a sequential execution are always judged
//! linearizable, and planting a read of a never-written value always makes
//! them invalid.

use orrery_jepsen::check::{check_history, linear, queue, set};
use orrery_jepsen::history::{f, HistoryBuilder, Op};
use orrery_jepsen::results::Validity;
use proptest::prelude::*;
use serde_json::{json, Value};

const K: Option<&str> = Some("k");

fn reg_valid(h: &[Op]) -> Validity {
    linear::check(h, 1_000_000).unwrap().valid
}

#[test]
fn sequential_register_history_is_linearizable() {
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::READ, K, Value::Null)
        .ok(0, f::READ, K, Value::Null);
    h.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    h.invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(1));
    h.invoke(1, f::CAS, K, json!([1, 2]))
        .ok(1, f::CAS, K, json!([1, 2]));
    h.invoke(0, f::CAS, K, json!([1, 3]))
        .fail(0, f::CAS, K, json!([1, 3]));
    h.invoke(0, f::READ, K, Value::Null)
        .ok(0, f::READ, K, json!(2));
    assert_eq!(reg_valid(&h.build()), Validity::True);
}

#[test]
fn overlapping_operations_may_take_effect_in_either_order() {
    // w1 and w2 overlap; reads after both see 1, which requires w2 < w1.
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, K, json!(1));
    h.invoke(1, f::WRITE, K, json!(2));
    h.ok(1, f::WRITE, K, json!(2));
    h.ok(0, f::WRITE, K, json!(1));
    h.invoke(2, f::READ, K, Value::Null)
        .ok(2, f::READ, K, json!(1));
    assert_eq!(reg_valid(&h.build()), Validity::True);
}

#[test]
fn info_write_may_take_effect_late_or_never() {
    let mut late = HistoryBuilder::new();
    late.invoke(0, f::WRITE, K, json!(1))
        .info(0, f::WRITE, K, json!(1));
    late.invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, Value::Null);
    late.invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(1));
    assert_eq!(reg_valid(&late.build()), Validity::True);

    let mut never = HistoryBuilder::new();
    never
        .invoke(0, f::WRITE, K, json!(1))
        .info(0, f::WRITE, K, json!(1));
    never
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, Value::Null);
    assert_eq!(reg_valid(&never.build()), Validity::True);

    // But once seen, it cannot be un-seen.
    let mut flicker = HistoryBuilder::new();
    flicker
        .invoke(0, f::WRITE, K, json!(1))
        .info(0, f::WRITE, K, json!(1));
    flicker
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(1));
    flicker
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, Value::Null);
    assert_eq!(reg_valid(&flicker.build()), Validity::False);
}

#[test]
fn stale_read_after_completed_write_is_caught() {
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    h.invoke(0, f::WRITE, K, json!(2))
        .ok(0, f::WRITE, K, json!(2));
    h.invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(1));
    let r = linear::check(&h.build(), 1_000_000).unwrap();
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.failures[0].key, "k");
    // The smallest window: the write of 2 and the stale read (the write of
    // 1 is explained away by "any prior state").
    assert_eq!(
        r.failures[0].window.as_ref().map(|w| w.indexes.clone()),
        Some(vec![2, 4])
    );
}

#[test]
fn lost_write_and_phantom_value_are_caught() {
    let mut lost = HistoryBuilder::new();
    lost.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    lost.invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, Value::Null);
    assert_eq!(reg_valid(&lost.build()), Validity::False);

    let mut phantom = HistoryBuilder::new();
    phantom
        .invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    phantom
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(9));
    assert_eq!(reg_valid(&phantom.build()), Validity::False);

    // A failed write must not be visible.
    let mut failed = HistoryBuilder::new();
    failed
        .invoke(0, f::WRITE, K, json!(1))
        .fail(0, f::WRITE, K, json!(1));
    failed
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(1));
    assert_eq!(reg_valid(&failed.build()), Validity::False);
}

#[test]
fn cas_against_the_wrong_value_is_caught() {
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    h.invoke(0, f::CAS, K, json!([5, 6]))
        .ok(0, f::CAS, K, json!([5, 6]));
    assert_eq!(reg_valid(&h.build()), Validity::False);
}

#[test]
fn violation_visible_only_across_overlapping_operations() {
    // Two reads overlap a write; one sees the new value and completes
    // before the other, which then sees the old one: each read alone is
    // fine, together they are not.
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, K, json!(0))
        .ok(0, f::WRITE, K, json!(0));
    h.invoke(0, f::WRITE, K, json!(1)); // 2
    h.invoke(1, f::READ, K, Value::Null); // 3
    h.ok(1, f::READ, K, json!(1)); // 4
    h.invoke(2, f::READ, K, Value::Null); // 5
    h.ok(2, f::READ, K, json!(0)); // 6
    h.ok(0, f::WRITE, K, json!(1)); // 7
    let r = linear::check(&h.build(), 1_000_000).unwrap();
    assert_eq!(r.valid, Validity::False);
    // The smallest window: the write of 1 (pending when the second read
    // completes) and both reads; the write of 0 is covered by "any prior
    // value".
    let w = r.failures[0].window.clone().unwrap();
    assert_eq!(w.indexes, vec![2, 3, 5]);
    assert_eq!(w.failing_completion, 6);
    assert_eq!(w.linearizable_through, Some(4));
    assert_eq!(w.states_after_linearizable_prefix, Some(vec![json!(1)]));
    assert_eq!(w.states_before, vec![Value::Null, json!(0), json!(1)]);
    assert_eq!(
        w.lines,
        vec![
            "#2 p0 invoke write k 1",
            "#7 p0 ok write k -> 1",
            "#3 p1 invoke read k",
            "#4 p1 ok read k -> 1",
            "#5 p2 invoke read k",
            "#6 p2 ok read k -> 0",
        ]
    );
}

#[test]
fn keys_are_checked_independently() {
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, Some("a"), json!(1))
        .ok(0, f::WRITE, Some("a"), json!(1));
    h.invoke(0, f::READ, Some("b"), Value::Null)
        .ok(0, f::READ, Some("b"), Value::Null);
    h.invoke(0, f::READ, Some("a"), Value::Null)
        .ok(0, f::READ, Some("a"), json!(1));
    let r = linear::check(&h.build(), 1_000).unwrap();
    assert_eq!((r.valid, r.keys), (Validity::True, 2));
}

#[test]
fn search_budget_gives_unknown_not_a_hang() {
    // Concurrent info writes, each value read by a concurrent read (so
    // every write took effect before the reads completed), then reads of
    // 0 and then 1 (impossible: no write is left to change the value in
    // between). The search must explore before failing; a tiny budget says
    // unknown. (With 12 writes and reads even 10 M steps say unknown: the
    // Wing–Gong search is exponential in concurrency.)
    let mut h = HistoryBuilder::new();
    for p in 0..6 {
        h.invoke(p, f::WRITE, K, json!(p));
    }
    for p in 0..6 {
        h.invoke(100 + p, f::READ, K, Value::Null);
    }
    for p in 0..6 {
        h.ok(100 + p, f::READ, K, json!(p));
    }
    for p in 0..6 {
        h.info(p, f::WRITE, K, json!(p));
    }
    h.invoke(200, f::READ, K, Value::Null)
        .ok(200, f::READ, K, json!(0));
    h.invoke(200, f::READ, K, Value::Null)
        .ok(200, f::READ, K, json!(1));
    h.invoke(200, f::READ, K, Value::Null)
        .ok(200, f::READ, K, json!(0));
    assert_eq!(
        linear::check(&h.build(), 10).unwrap().valid,
        Validity::Unknown
    );
    let r = linear::check(&h.build(), 10_000_000).unwrap();
    assert_eq!(r.valid, Validity::False);
    // The window ends with the reads of 0 and 1 (the third read is not
    // needed: the prefix through the read of 1 already fails).
    let w = r.failures[0].window.clone().unwrap();
    assert!(w.indexes.ends_with(&[24, 26]), "{:?}", w.indexes);
}

#[test]
fn unobserved_info_writes_do_not_blow_up_the_search() {
    // 40 timed-out writes nobody ever reads: 2^40 subsets if the search
    // tried them; pruned, the history is checked instantly.
    let mut h = HistoryBuilder::new();
    for p in 0..40 {
        h.invoke(p, f::WRITE, K, json!(p));
    }
    h.invoke(100, f::WRITE, K, json!(1000))
        .ok(100, f::WRITE, K, json!(1000));
    for p in 0..40 {
        h.info(p, f::WRITE, K, json!(p));
    }
    h.invoke(100, f::READ, K, Value::Null)
        .ok(100, f::READ, K, json!(1000));
    h.invoke(100, f::READ, K, Value::Null)
        .ok(100, f::READ, K, json!(77));
    let r = linear::check(&h.build(), 1_000_000).unwrap();
    assert_eq!(r.valid, Validity::False);
    let w = r.failures[0].window.clone().unwrap();
    assert_eq!(w.indexes, vec![84]);
}

#[test]
fn cas_ok_and_fail_and_info() {
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    // A cas that failed did not happen, even if its expectation held.
    h.invoke(1, f::CAS, K, json!([1, 5]))
        .fail(1, f::CAS, K, json!([1, 5]));
    // An info cas that takes effect later.
    h.invoke(2, f::CAS, K, json!([1, 2]))
        .info(2, f::CAS, K, json!([1, 2]));
    h.invoke(3, f::READ, K, Value::Null)
        .ok(3, f::READ, K, json!(1));
    h.invoke(3, f::CAS, K, json!([2, 3]))
        .ok(3, f::CAS, K, json!([2, 3]));
    h.invoke(3, f::READ, K, Value::Null)
        .ok(3, f::READ, K, json!(3));
    assert_eq!(reg_valid(&h.build()), Validity::True);

    let mut bad = h.clone();
    bad.invoke(4, f::READ, K, Value::Null)
        .ok(4, f::READ, K, json!(5));
    let r = linear::check(&bad.build(), 1_000_000).unwrap();
    assert_eq!(r.valid, Validity::False);
    // Reading the failed cas's value: the read alone is the window.
    assert_eq!(r.failures[0].window.clone().unwrap().indexes, vec![12]);
}

#[test]
fn results_wiring_and_histories_from_files() {
    use orrery_jepsen::check::check_file;
    use orrery_jepsen::results::Results;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let cases = [
        ("register-ok.jsonl", "register", json!(true)),
        ("register-stale.jsonl", "register", json!(false)),
        ("set-ok.jsonl", "set", json!(true)),
        ("set-lost.jsonl", "set", json!(false)),
        ("queue-ok.jsonl", "queue", json!(true)),
        ("queue-double.jsonl", "queue", json!(false)),
    ];
    for (file, workload, want) in cases {
        let v = check_file(dir.join(file), workload).unwrap();
        assert_eq!(v["valid"], want, "{file}: {v:#}");
    }
    let v = check_file(dir.join("register-stale.jsonl"), "register").unwrap();
    assert_eq!(
        v["checker"]["failures"][0]["window"]["indexes"],
        json!([4, 6])
    );

    let h = orrery_jepsen::history::read_jsonl(dir.join("register-ok.jsonl")).unwrap();
    let mut results = Results::new();
    results.add("linear", &linear::check(&h, 1_000).unwrap());
    assert_eq!(results.valid, Validity::True);
    let h = orrery_jepsen::history::read_jsonl(dir.join("set-lost.jsonl")).unwrap();
    results.add("set", &set::check(&h).unwrap());
    assert_eq!(results.valid, Validity::False);
}

#[test]
fn thousands_of_concurrent_ops_check_quickly() {
    // 4000 operations on one key, 10 clients, every op's interval contains
    // its linearization point; every 20th write times out (info) but took
    // effect. Must be judged linearizable well within the default budget.
    let n: u64 = 4000;
    let mut events: Vec<(u64, u8, Op)> = Vec::new();
    let mut value: Option<u64> = None;
    let mut rng = 12345u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut busy_until = [0u64; 10];
    let mut client_id = [0u64; 10];
    for i in 0..n {
        let point = (i + 1) * 100;
        let c = (i % 10) as usize;
        let start = point - next() % 90;
        let start = start.max(busy_until[c] + 1);
        let start = start.min(point);
        let end = point + next() % 400;
        busy_until[c] = end;
        let p = client_id[c] * 10 + c as u64;
        let write = next().is_multiple_of(2);
        let (fname, inv_v, ret_v) = if write {
            value = Some(i);
            (f::WRITE, json!(i), json!(i))
        } else {
            (f::READ, Value::Null, json!(value))
        };
        let info = write && i.is_multiple_of(20);
        use orrery_jepsen::history::OpType;
        events.push((
            start,
            0,
            Op::new(p, OpType::Invoke, fname, inv_v).with_key("k"),
        ));
        let kind = if info { OpType::Info } else { OpType::Ok };
        events.push((end, 1, Op::new(p, kind, fname, ret_v).with_key("k")));
        if info {
            client_id[c] += 1; // a fresh process replaces a crashed one
        }
    }
    events.sort_by_key(|e| (e.0, e.1));
    let h: Vec<Op> = events
        .into_iter()
        .enumerate()
        .map(|(i, (t, _, op))| op.at(i as u64, t))
        .collect();
    let t0 = std::time::Instant::now();
    let r = linear::check(&h, orrery_jepsen::check::DEFAULT_BUDGET).unwrap();
    assert_eq!(r.valid, Validity::True);
    assert!(t0.elapsed().as_secs() < 20, "took {:?}", t0.elapsed());
}

#[test]
fn set_checker_finds_lost_and_phantom_adds() {
    let base = || {
        let mut h = HistoryBuilder::new();
        h.invoke(0, f::ADD, None, json!(1))
            .ok(0, f::ADD, None, json!(1));
        h.invoke(1, f::ADD, None, json!(2))
            .fail(1, f::ADD, None, json!(2));
        h.invoke(2, f::ADD, None, json!(3))
            .info(2, f::ADD, None, json!(3));
        h
    };
    let mut good = base();
    good.invoke(3, f::READ, None, Value::Null)
        .ok(3, f::READ, None, json!([1, 3]));
    let r = set::check(&good.build()).unwrap();
    assert_eq!((r.valid, r.recovered), (Validity::True, 1));

    let mut lost = base();
    lost.invoke(3, f::READ, None, Value::Null)
        .ok(3, f::READ, None, json!([3]));
    let r = set::check(&lost.build()).unwrap();
    assert_eq!(
        (r.valid, r.lost.clone()),
        (Validity::False, vec!["1".to_string()])
    );

    let mut phantom = base();
    phantom
        .invoke(3, f::READ, None, Value::Null)
        .ok(3, f::READ, None, json!([1, 2]));
    let r = set::check(&phantom.build()).unwrap();
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.failed_but_present, vec!["2".to_string()]);

    let mut unexpected = base();
    unexpected
        .invoke(3, f::READ, None, Value::Null)
        .ok(3, f::READ, None, json!([1, 7]));
    assert_eq!(
        set::check(&unexpected.build()).unwrap().valid,
        Validity::False
    );

    assert_eq!(
        set::check(&base().build()).unwrap().valid,
        Validity::Unknown
    );
}

#[test]
fn queue_checker_finds_double_completion_and_lost_jobs() {
    let base = || {
        let mut h = HistoryBuilder::new();
        h.invoke(0, f::ENQUEUE, None, Value::Null)
            .ok(0, f::ENQUEUE, None, json!("j1"));
        h.invoke(0, f::ENQUEUE, None, Value::Null)
            .ok(0, f::ENQUEUE, None, json!("j2"));
        h.invoke(1, f::CLAIM, None, Value::Null).ok(
            1,
            f::CLAIM,
            None,
            json!({"job": "j1", "token": 1}),
        );
        h.invoke(1, f::COMPLETE, None, json!({"job": "j1", "token": 1}))
            .ok(1, f::COMPLETE, None, Value::Null);
        h
    };
    let mut good = base();
    good.invoke(2, f::READ, None, Value::Null).ok(
        2,
        f::READ,
        None,
        json!({"pending": ["j2"], "completed": ["j1"]}),
    );
    assert_eq!(queue::check(&good.build()).unwrap().valid, Validity::True);

    let mut lost = base();
    lost.invoke(2, f::READ, None, Value::Null).ok(
        2,
        f::READ,
        None,
        json!({"pending": [], "completed": ["j1"]}),
    );
    let r = queue::check(&lost.build()).unwrap();
    assert_eq!(
        (r.valid, r.lost.clone()),
        (Validity::False, vec!["\"j2\"".to_string()])
    );

    let mut dup = base();
    dup.invoke(3, f::COMPLETE, None, json!({"job": "j1", "token": 2}))
        .ok(3, f::COMPLETE, None, Value::Null);
    dup.invoke(2, f::READ, None, Value::Null).ok(
        2,
        f::READ,
        None,
        json!({"pending": ["j2"], "completed": ["j1"]}),
    );
    let r = queue::check(&dup.build()).unwrap();
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.duplicated, vec!["\"j1\"".to_string()]);
}

#[test]
fn queue_checker_unknown_jobs_and_unknown_outcomes() {
    let read = |h: &mut HistoryBuilder, pending: Value, completed: Value| {
        h.invoke(9, f::READ, None, Value::Null).ok(
            9,
            f::READ,
            None,
            json!({"pending": pending, "completed": completed}),
        );
    };
    // A claim recorded before the enqueue's reply is fine.
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::ENQUEUE, None, Value::Null);
    h.invoke(1, f::CLAIM, None, Value::Null).ok(
        1,
        f::CLAIM,
        None,
        json!({"job": "j1", "token": 1}),
    );
    h.ok(0, f::ENQUEUE, None, json!("j1"));
    read(&mut h, json!(["j1"]), json!([]));
    assert_eq!(queue::check(&h.build()).unwrap().valid, Validity::True);

    // An enqueue of unknown outcome may have created the pending job.
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::ENQUEUE, None, Value::Null)
        .info(0, f::ENQUEUE, None, Value::Null);
    read(&mut h, json!(["j7"]), json!([]));
    let r = queue::check(&h.build()).unwrap();
    assert_eq!((r.valid, r.unattributed), (Validity::True, 1));

    // ... but not two of them; and a completion of a job nobody enqueued.
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::ENQUEUE, None, Value::Null)
        .info(0, f::ENQUEUE, None, Value::Null);
    h.invoke(1, f::COMPLETE, None, json!({"job": "j8", "token": 1}))
        .ok(1, f::COMPLETE, None, Value::Null);
    read(&mut h, json!(["j7"]), json!(["j8"]));
    let r = queue::check(&h.build()).unwrap();
    assert_eq!(r.valid, Validity::False);
    assert_eq!(r.unknown_jobs, vec!["\"j7\"", "\"j8\""]);

    // A lost job: acknowledged, never completed, not pending.
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::ENQUEUE, None, Value::Null)
        .ok(0, f::ENQUEUE, None, json!(5));
    read(&mut h, json!([]), json!([]));
    let r = queue::check(&h.build()).unwrap();
    assert_eq!(
        (r.valid, r.lost.clone()),
        (Validity::False, vec!["5".into()])
    );
}

#[test]
fn check_history_dispatches_and_rejects_unknown_workloads() {
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    assert_eq!(
        check_history(&h.build(), "register").unwrap()["valid"],
        json!(true)
    );
    assert!(check_history(&h.build(), "bank").is_err());
}

/// A sequential register execution with random per-op intervals that each
/// contain the op's linearization point, interleaved into one history.
fn generated(seq: &[(u8, u8)], spans: &[(u16, u16)], infos: &[u8]) -> Vec<Op> {
    use orrery_jepsen::history::{OpType, Process};
    let mut value: Option<u64> = None;
    let mut events: Vec<(u64, u8, Op)> = Vec::new();
    for (i, ((kind, arg), (before, after))) in seq.iter().zip(spans).enumerate() {
        let point = (i as u64 + 1) * 1000;
        let (inv_t, ret_t) = (point - *before as u64 % 999, point + *after as u64 % 999);
        let p = i as u64;
        let key = "k";
        let (fname, inv_v, ret_v) = match kind % 3 {
            0 => (f::READ, Value::Null, json!(value)),
            1 => {
                let v = i as u64 * 10 + u64::from(*arg % 10);
                value = Some(v);
                (f::WRITE, json!(v), json!(v))
            }
            _ => {
                let cur = value.unwrap_or(0);
                if value.is_some() {
                    let v = i as u64 * 10 + 1;
                    value = Some(v);
                    (f::CAS, json!([cur, v]), json!([cur, v]))
                } else {
                    (f::READ, Value::Null, json!(value))
                }
            }
        };
        let mut inv = Op::new(Process::Client(p), OpType::Invoke, fname, inv_v).with_key(key);
        inv.time = inv_t;
        // Writes and cas may end `info` (they took effect, but the client
        // does not know); some extra `info` writes of fresh values never
        // take effect at all.
        let info = fname != f::READ && infos[i].is_multiple_of(4);
        let kind = if info { OpType::Info } else { OpType::Ok };
        let mut ret = Op::new(Process::Client(p), kind, fname, ret_v).with_key(key);
        ret.time = ret_t;
        events.push((inv_t, 0, inv));
        events.push((ret_t, 1, ret));
        if infos[i] % 5 == 1 {
            let q = 1000 + p;
            let mut inv = Op::new(
                Process::Client(q),
                OpType::Invoke,
                f::WRITE,
                json!(500_000 + i),
            )
            .with_key(key);
            inv.time = inv_t;
            let mut ret = Op::new(
                Process::Client(q),
                OpType::Info,
                f::WRITE,
                json!(500_000 + i),
            )
            .with_key(key);
            ret.time = ret_t;
            events.push((inv_t, 0, inv));
            events.push((ret_t, 1, ret));
        }
    }
    events.sort_by_key(|e| (e.0, e.1));
    events
        .into_iter()
        .enumerate()
        .map(|(i, (t, _, op))| op.at(i as u64, t))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_histories_are_linearizable_and_planted_reads_are_not(
        seq in proptest::collection::vec((0u8..3, 0u8..10), 1..40),
        spans in proptest::collection::vec((0u16..3000, 0u16..3000), 40),
        infos in proptest::collection::vec(0u8..20, 40),
        victim in 0usize..40,
    ) {
        let h = generated(&seq, &spans, &infos);
        prop_assert_eq!(reg_valid(&h), Validity::True);
        // Plant a never-written value into one ok read, if there is one.
        let mut bad = h.clone();
        let reads: Vec<usize> = bad
            .iter()
            .enumerate()
            .filter(|(_, o)| o.f == f::READ && o.kind == orrery_jepsen::history::OpType::Ok)
            .map(|(i, _)| i)
            .collect();
        if !reads.is_empty() {
            let i = reads[victim % reads.len()];
            bad[i].value = json!(999_999);
            prop_assert_eq!(reg_valid(&bad), Validity::False);
        }
    }
}
