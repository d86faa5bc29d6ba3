//! The payload index against the filter it serves: every point that
//! matches a filter is among the index's candidates, through upserts that
//! overwrite payloads, deletes by id and by filter, and snapshot/restore;
//! and filtered search with the index gives exactly the brute-force answer.

use super::*;
use crate::payload_index::{Narrowed, PayloadIndex, MAX_KEYWORD};
use proptest::prelude::*;
use serde_json::json;

fn long() -> String {
    "x".repeat(MAX_KEYWORD + 1)
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["red", "green", "blue"]).prop_map(|s| json!(s)),
        Just(json!(long())),
        (-3i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec![-1.5f64, -0.0, 0.0, 0.5, 2.0]).prop_map(|x| json!(x)),
        any::<bool>().prop_map(|b| json!(b)),
    ]
}

fn arb_payload() -> impl Strategy<Value = Value> {
    (
        prop::option::of(arb_scalar()),
        prop::option::of(arb_scalar()),
        prop::option::of(prop::collection::vec(arb_scalar(), 0..3)),
        prop::option::of(arb_scalar()),
    )
        .prop_map(|(a, b, tags, nested)| {
            let mut m = serde_json::Map::new();
            if let Some(a) = a {
                m.insert("a".into(), a);
            }
            if let Some(b) = b {
                m.insert("b".into(), b);
            }
            if let Some(t) = tags {
                m.insert("tags".into(), Value::Array(t));
            }
            if let Some(n) = nested {
                m.insert("o".into(), json!({ "x": n }));
                // A key with a dot: never reachable by a filter path.
                m.insert("o.x".into(), json!("dotted"));
            }
            Value::Object(m)
        })
}

fn arb_condition() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["a", "b", "tags", "o.x", "missing"]);
    let range = (
        prop::option::of(-3.0f64..3.0),
        prop::option::of(-3.0f64..3.0),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter_map("a range needs a bound", |(lo, hi, lo_strict, hi_strict)| {
            let mut r = serde_json::Map::new();
            if let Some(lo) = lo {
                r.insert((if lo_strict { "gt" } else { "gte" }).into(), json!(lo));
            }
            if let Some(hi) = hi {
                r.insert((if hi_strict { "lt" } else { "lte" }).into(), json!(hi));
            }
            (!r.is_empty()).then_some(Value::Object(r))
        });
    (
        key,
        prop_oneof![
            arb_scalar().prop_map(|s| ("match", s)),
            prop::collection::vec(arb_scalar(), 1..3).prop_map(|l| ("any", Value::Array(l))),
            range.prop_map(|r| ("range", r)),
        ],
    )
        .prop_map(|(k, (op, v))| json!({ "key": k, op: v }))
}

fn arb_filter() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(arb_condition(), 0..3),
        prop::collection::vec(arb_condition(), 0..2),
        prop::collection::vec(arb_condition(), 0..2),
    )
        .prop_map(|(must, should, must_not)| {
            json!({ "must": must, "should": should, "must_not": must_not })
        })
}

#[derive(Clone, Debug)]
enum Op {
    Upsert(Vec<(u64, Value)>),
    Delete(Vec<u64>),
    DeleteFilter(Value),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u64..40, arb_payload()), 1..12).prop_map(Op::Upsert),
        1 => prop::collection::vec(0u64..40, 1..6).prop_map(Op::Delete),
        1 => arb_condition().prop_map(|c| Op::DeleteFilter(json!({ "must": [c] }))),
    ]
}

fn apply(s: &mut VectorState, index: u64, op: Op) {
    let cmd = match op {
        Op::Upsert(points) => VectorCommand::Upsert {
            collection: "c".into(),
            uid: 1,
            metric: Metric::L2,
            m: 16,
            ef_construction: 100,
            points: points
                .into_iter()
                .map(|(id, payload)| Point {
                    id: PointId::Num(id),
                    vector: Vector(vec![id as f32, (id % 7) as f32]),
                    payload: payload.as_object().cloned().unwrap_or_default(),
                })
                .collect(),
        },
        Op::Delete(ids) => VectorCommand::DeleteIds {
            collection: "c".into(),
            uid: 1,
            ids: ids.into_iter().map(PointId::Num).collect(),
        },
        Op::DeleteFilter(f) => VectorCommand::DeleteFilter {
            collection: "c".into(),
            uid: 1,
            filter: f.to_string(),
        },
    };
    s.apply(index, cmd);
}

/// The ids the index's candidates must include, and the answer search must
/// give: by brute force over the points.
fn check(s: &VectorState, filter: &Value) -> Result<(), TestCaseError> {
    let Some(c) = s.data.get("c") else {
        return Ok(());
    };
    let f = Filter::parse(filter).map_err(TestCaseError::fail)?;
    let matching: Vec<&PointId> = c
        .points
        .iter()
        .filter(|(_, p)| f.matches(&p.payload))
        .map(|(id, _)| id)
        .collect();
    // The maintained index and a fresh build of it (they may differ in
    // precision — a maintained one keeps paths whose points were deleted —
    // but both must name every matching point).
    let fresh = PayloadIndex::build(c.points.iter().map(|(id, p)| (id, &p.payload)));
    for ix in [&c.payload_index, &fresh] {
        match ix.candidates(&f, usize::MAX) {
            Narrowed::Few(ids) => {
                for id in &matching {
                    prop_assert!(
                        ids.contains(*id),
                        "{id:?} matches {filter} but is no candidate"
                    );
                }
            }
            Narrowed::Many => prop_assert!(false, "Many with an unbounded `few`"),
            Narrowed::Unknown => {}
        }
    }
    // Search through the index answers what brute force answers.
    let q = vec![3.3f32, 1.1];
    let req = SearchRequest {
        collection: "c".into(),
        uid: 1,
        metric: Metric::L2,
        vector: q.clone(),
        k: 5,
        ef: 64,
        exact: false,
        filter: Some(filter.to_string()),
        with_payload: false,
        with_vector: false,
    };
    let (hits, _) = s
        .search(&req)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut want: Vec<(f32, &PointId)> = matching
        .iter()
        .map(|id| (Metric::L2.score(&q, &c.points[*id].vector.0), *id))
        .collect();
    want.sort_by(|x, y| x.0.total_cmp(&y.0).then_with(|| x.1.cmp(y.1)));
    want.truncate(5);
    let got: Vec<&PointId> = hits.iter().map(|h| &h.id).collect();
    let want: Vec<&PointId> = want.into_iter().map(|(_, id)| id).collect();
    prop_assert_eq!(got, want, "filter {}", filter);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matching_points_are_always_candidates(
        ops in prop::collection::vec(arb_op(), 1..12),
        filters in prop::collection::vec(arb_filter(), 1..6),
    ) {
        let mut s = VectorState { no_index: true, ..Default::default() };
        for (i, op) in ops.into_iter().enumerate() {
            apply(&mut s, i as u64 + 2, op);
        }
        for f in &filters {
            check(&s, f)?;
        }
        // A restored replica builds the same index from the snapshot.
        let snap = s.snapshot().map_err(TestCaseError::fail)?;
        let restored = VectorState::restore_without_index(&snap).map_err(TestCaseError::fail)?;
        for f in &filters {
            check(&restored, f)?;
        }
    }
}

#[test]
fn negative_zero_and_ranges_at_the_edges() {
    let mut s = VectorState {
        no_index: true,
        ..Default::default()
    };
    apply(
        &mut s,
        2,
        Op::Upsert(vec![
            (1, json!({"n": -0.0})),
            (2, json!({"n": 0})),
            (3, json!({"n": 1})),
            (4, json!({"n": [5, "five"]})),
            (5, json!({"s": long()})),
        ]),
    );
    for f in [
        json!({"must": [{"key": "n", "match": 0}]}),
        json!({"must": [{"key": "n", "match": -0.0}]}),
        json!({"must": [{"key": "n", "range": {"gt": 0}}]}),
        json!({"must": [{"key": "n", "range": {"gte": 0, "lte": 0}}]}),
        json!({"must": [{"key": "n", "range": {"gt": 3, "lt": 1}}]}),
        json!({"must": [{"key": "n", "any": [5, "five"]}]}),
        json!({"must": [{"key": "s", "match": long()}]}),
    ] {
        check(&s, &f).unwrap();
    }
    let c = &s.data["c"];
    let f = Filter::parse(&json!({"must": [{"key": "n", "match": 0}]})).unwrap();
    match c.payload_index.candidates(&f, 100) {
        Narrowed::Few(ids) => assert_eq!(ids.len(), 2, "-0.0 and 0 are one value"),
        other => panic!("{other:?}"),
    }
    let long_match = Filter::parse(&json!({"must": [{"key": "s", "match": long()}]})).unwrap();
    assert!(matches!(
        c.payload_index.candidates(&long_match, 100),
        Narrowed::Unknown
    ));
}
