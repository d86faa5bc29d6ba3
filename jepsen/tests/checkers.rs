//! The checkers on hand-written good and bad histories, and a property
//! test: histories generated from a sequential execution are always judged
//! linearizable, and planting a read of a never-written value always makes
//! them invalid.

use orrery_jepsen::check::{check_history, linear, queue, set};
use orrery_jepsen::history::{f, HistoryBuilder, Op};
use proptest::prelude::*;
use serde_json::{json, Value};

const K: Option<&str> = Some("k");

fn reg_valid(h: &[Op]) -> Value {
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
    assert_eq!(reg_valid(&h.build()), json!(true));
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
    assert_eq!(reg_valid(&h.build()), json!(true));
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
    assert_eq!(reg_valid(&late.build()), json!(true));

    let mut never = HistoryBuilder::new();
    never
        .invoke(0, f::WRITE, K, json!(1))
        .info(0, f::WRITE, K, json!(1));
    never
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, Value::Null);
    assert_eq!(reg_valid(&never.build()), json!(true));

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
    assert_eq!(reg_valid(&flicker.build()), json!(false));
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
    assert_eq!(r.valid, json!(false));
    assert_eq!(r.failures[0].key, "k");
    // The smallest window: the write of 2 and the stale read (the write of
    // 1 is explained away by "any prior state").
    assert_eq!(r.failures[0].window_indexes, Some(vec![2, 4]));
}

#[test]
fn lost_write_and_phantom_value_are_caught() {
    let mut lost = HistoryBuilder::new();
    lost.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    lost.invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, Value::Null);
    assert_eq!(reg_valid(&lost.build()), json!(false));

    let mut phantom = HistoryBuilder::new();
    phantom
        .invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    phantom
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(9));
    assert_eq!(reg_valid(&phantom.build()), json!(false));

    // A failed write must not be visible.
    let mut failed = HistoryBuilder::new();
    failed
        .invoke(0, f::WRITE, K, json!(1))
        .fail(0, f::WRITE, K, json!(1));
    failed
        .invoke(1, f::READ, K, Value::Null)
        .ok(1, f::READ, K, json!(1));
    assert_eq!(reg_valid(&failed.build()), json!(false));
}

#[test]
fn cas_against_the_wrong_value_is_caught() {
    let mut h = HistoryBuilder::new();
    h.invoke(0, f::WRITE, K, json!(1))
        .ok(0, f::WRITE, K, json!(1));
    h.invoke(0, f::CAS, K, json!([5, 6]))
        .ok(0, f::CAS, K, json!([5, 6]));
    assert_eq!(reg_valid(&h.build()), json!(false));
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
    assert_eq!(r.valid, json!(false));
    let w = r.failures[0].window_indexes.clone().unwrap();
    assert!(w.contains(&3) && w.contains(&5), "window {w:?}");
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
    assert_eq!((r.valid, r.keys), (json!(true), 2));
}

#[test]
fn search_budget_gives_unknown_not_a_hang() {
    // Many concurrent info writes and a read of an unwritten value: the
    // search must explore a lot before failing; a tiny budget says unknown.
    let mut h = HistoryBuilder::new();
    for p in 0..12 {
        h.invoke(p, f::WRITE, K, json!(p));
    }
    for p in 0..12 {
        h.info(p, f::WRITE, K, json!(p));
    }
    h.invoke(100, f::READ, K, Value::Null)
        .ok(100, f::READ, K, json!(99));
    assert_eq!(
        linear::check(&h.build(), 10).unwrap().valid,
        json!("unknown")
    );
    assert_eq!(
        linear::check(&h.build(), 10_000_000).unwrap().valid,
        json!(false)
    );
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
    assert_eq!((r.valid, r.recovered), (json!(true), 1));

    let mut lost = base();
    lost.invoke(3, f::READ, None, Value::Null)
        .ok(3, f::READ, None, json!([3]));
    let r = set::check(&lost.build()).unwrap();
    assert_eq!(
        (r.valid, r.lost.clone()),
        (json!(false), vec!["1".to_string()])
    );

    let mut phantom = base();
    phantom
        .invoke(3, f::READ, None, Value::Null)
        .ok(3, f::READ, None, json!([1, 2]));
    let r = set::check(&phantom.build()).unwrap();
    assert_eq!(r.valid, json!(false));
    assert_eq!(r.failed_but_present, vec!["2".to_string()]);

    let mut unexpected = base();
    unexpected
        .invoke(3, f::READ, None, Value::Null)
        .ok(3, f::READ, None, json!([1, 7]));
    assert_eq!(set::check(&unexpected.build()).unwrap().valid, json!(false));

    assert_eq!(set::check(&base().build()).unwrap().valid, json!("unknown"));
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
    assert_eq!(queue::check(&good.build()).unwrap().valid, json!(true));

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
        (json!(false), vec!["\"j2\"".to_string()])
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
    assert_eq!(r.valid, json!(false));
    assert_eq!(r.duplicated, vec!["\"j1\"".to_string()]);
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
fn generated(seq: &[(u8, u8)], spans: &[(u16, u16)]) -> Vec<Op> {
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
        let mut ret = Op::new(Process::Client(p), OpType::Ok, fname, ret_v).with_key(key);
        ret.time = ret_t;
        events.push((inv_t, 0, inv));
        events.push((ret_t, 1, ret));
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
        victim in 0usize..40,
    ) {
        let h = generated(&seq, &spans);
        prop_assert_eq!(reg_valid(&h), json!(true));
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
            prop_assert_eq!(reg_valid(&bad), json!(false));
        }
    }
}
