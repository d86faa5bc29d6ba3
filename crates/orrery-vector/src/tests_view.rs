//! Search views (`view.rs`) and the persistent point map under them: the
//! snapshot bytes are those of the `BTreeMap` state they replaced, and a
//! view answers as the state did when it was taken, whatever apply does
//! after.

use super::*;
use crate::tests::{arb_cmd, clustered, point, req, upsert, wait_ready};
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

/// The state exactly as it was declared before points moved to a
/// persistent map (derived, `#[serde(skip)]` fields do not serialize).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct LegacyCollection {
    uid: u64,
    metric: Option<Metric>,
    m: usize,
    ef_construction: usize,
    points: BTreeMap<PointId, StoredPoint>,
    last_rev: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct LegacyState {
    catalog: BTreeMap<String, CollectionConfig>,
    data: BTreeMap<String, LegacyCollection>,
}

fn legacy(s: &VectorState) -> LegacyState {
    LegacyState {
        catalog: s.catalog.clone(),
        data: s
            .data
            .iter()
            .map(|(name, c)| {
                let c = LegacyCollection {
                    uid: c.uid,
                    metric: c.metric,
                    m: c.m,
                    ef_construction: c.ef_construction,
                    points: c
                        .points
                        .iter()
                        .map(|(id, p)| (id.clone(), (**p).clone()))
                        .collect(),
                    last_rev: c.last_rev,
                };
                (name.clone(), c)
            })
            .collect(),
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
}

/// Encoding equal both ways: the new state writes the legacy bytes, and
/// each reads the other's.
fn assert_same_format(s: &VectorState) {
    let old = legacy(s);
    let bytes = s.snapshot().unwrap();
    assert_eq!(bytes, encode(&old), "snapshot bytes changed");
    let (read_old, _): (LegacyState, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(read_old, old);
    let back = VectorState::restore_without_index(&encode(&old)).unwrap();
    assert_eq!(&back, s);
}

#[test]
fn snapshot_format_is_the_btreemap_one_with_uuids_and_nested_payloads() {
    let mut s = VectorState {
        no_index: true,
        ..Default::default()
    };
    s.apply(
        3,
        VectorCommand::CreateCollection(crate::tests::cfg("c", 3, Metric::Cosine)),
    );
    let mut pts: Vec<Point> = (0..300)
        .map(|i| {
            point(
                i * 7,
                vec![i as f32, -1.5, 0.25],
                json!({"g": i % 5, "tags": ["a", i.to_string()], "o": {"x": i}}),
            )
        })
        .collect();
    for u in [
        "123e4567-e89b-12d3-a456-426614174000",
        "00000000-0000-0000-0000-000000000001",
    ] {
        pts.push(Point {
            id: PointId::parse_str(u).unwrap(),
            vector: Vector(vec![1.0, 2.0, f32::MIN_POSITIVE]),
            payload: json!({"u": u}).as_object().cloned().unwrap(),
        });
    }
    s.apply(4, upsert(3, Metric::Cosine, pts));
    s.apply(
        5,
        VectorCommand::DeleteIds {
            collection: "c".into(),
            uid: 3,
            ids: vec![PointId::Num(14), PointId::Num(700)],
        },
    );
    assert_same_format(&s);
    // An empty state and an empty collection, too.
    assert_same_format(&VectorState {
        no_index: true,
        ..Default::default()
    });
    s.apply(
        6,
        VectorCommand::DeleteFilter {
            collection: "c".into(),
            uid: 3,
            filter: json!({}).to_string(),
        },
    );
    assert!(s.data["c"].points.is_empty());
    assert_same_format(&s);
}

fn frozen(s: &VectorState) -> VectorState {
    // A deep copy through the snapshot bytes: a `clone` would share the
    // very maps the view shares.
    VectorState::restore_without_index(&encode(s)).unwrap()
}

proptest! {
    #[test]
    fn snapshot_format_is_the_btreemap_one(cmds in prop::collection::vec(arb_cmd(), 0..40)) {
        let mut s = VectorState { no_index: true, ..Default::default() };
        for (i, c) in cmds.into_iter().enumerate() {
            s.apply(i as u64 + 1, c);
        }
        assert_same_format(&s);
    }

    /// A view taken at some point answers, after any later commands, what
    /// a search of the state at that point answers (hits and mode alike).
    #[test]
    fn a_view_answers_for_its_moment(
        before in prop::collection::vec(arb_cmd(), 0..30),
        after in prop::collection::vec(arb_cmd(), 1..30),
        uid in 1u64..3,
        q in prop::collection::vec(-2.0f32..2.0, 2),
        k in 1usize..5,
        g in prop::option::of(0u64..3),
        exact in any::<bool>(),
    ) {
        let mut s = VectorState { no_index: true, ..Default::default() };
        let mut index = 0;
        for c in before {
            index += 1;
            s.apply(index, c);
        }
        let filter = g.map(|g| json!({"must": [{"key": "g", "match": g}]}));
        let r = SearchRequest { uid, with_vector: true, ..req(q, k, Metric::L2, filter, exact) };
        let view = s.view(&r).unwrap();
        let then = frozen(&s);
        for c in after {
            index += 1;
            s.apply(index, c);
        }
        prop_assert_eq!(view.run(), then.search(&r).unwrap());
    }
}

/// With the HNSW index: the index moves on (new points, overwrites and
/// deletes indexed after the view was taken) while the view still answers
/// from its own points only, through the index.
#[test]
fn a_view_searches_the_live_index_but_only_its_own_points() {
    let metric = Metric::L2;
    let data = clustered(1500, 8, 11);
    let mut s = VectorState::default();
    let pts: Vec<Point> = data
        .iter()
        .enumerate()
        .map(|(i, v)| point(i as u64, v.clone(), json!({"g": i % 2})))
        .collect();
    s.apply(1, upsert(1, metric, pts));
    wait_ready(&s);
    let queries: Vec<Vec<f32>> = data[..20].to_vec();
    let views: Vec<SearchView> = queries
        .iter()
        .map(|q| {
            let r = SearchRequest {
                with_vector: true,
                ..req(q.clone(), 10, metric, None, false)
            };
            s.view(&r).unwrap()
        })
        .collect();
    let then = frozen(&s);
    // Each query's own point is deleted, its neighbours moved far away,
    // and new points put exactly on the query: the live answer changes
    // completely. (Few enough changes that no rebuild starts.)
    s.apply(
        2,
        VectorCommand::DeleteIds {
            collection: "c".into(),
            uid: 1,
            ids: (0..20).map(PointId::Num).collect(),
        },
    );
    let moved: Vec<Point> = (20..200)
        .map(|i| point(i, vec![50.0; 8], json!({"g": 9})))
        .chain(
            queries
                .iter()
                .enumerate()
                .map(|(i, q)| point(10_000 + i as u64, q.clone(), json!({}))),
        )
        .collect();
    s.apply(3, upsert(1, metric, moved));
    wait_ready(&s);
    let (live, mode) = s
        .search(&req(queries[0].clone(), 1, metric, None, false))
        .unwrap();
    assert_eq!(mode, SearchMode::Index);
    assert_eq!(live[0].id, PointId::Num(10_000), "apply went on");

    let mut found = 0;
    let mut wanted = 0;
    for (v, q) in views.iter().zip(&queries) {
        let (hits, mode) = v.run();
        assert_eq!(mode, SearchMode::Index, "the view still uses the index");
        let exact = then
            .search(&SearchRequest {
                with_vector: true,
                ..req(q.clone(), 10, metric, None, true)
            })
            .unwrap()
            .0;
        let truth: HashSet<&PointId> = exact.iter().map(|h| &h.id).collect();
        for h in &hits {
            // Every hit is the view's point as it was: same vector, same
            // score, never a point written after the view.
            let p = then.get_point("c", 1, &h.id).expect("a point of the view");
            assert_eq!(h.vector.as_deref(), Some(&p.vector.0[..]));
            assert_eq!(h.score, metric.score(q, &p.vector.0));
            found += truth.contains(&h.id) as usize;
        }
        wanted += truth.len();
        assert_eq!(hits.len(), 10);
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.9, "recall {recall} over the view");
}
