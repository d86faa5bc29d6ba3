//! Index dumps: a restored replica loads its index instead of rebuilding,
//! finds the same neighbours, and refuses dumps that are damaged or do not
//! cover its points.

use super::*;
use crate::hnsw::Hnsw;
use serde_json::json;
use std::time::{Duration, Instant};

/// One dump directory for the whole test process (it is set once).
fn dir() -> &'static std::path::Path {
    static D: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let d = D.get_or_init(|| tempfile::tempdir().expect("tempdir"));
    persist::set_dir(d.path().to_path_buf()).expect("set_dir");
    d.path()
}

fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            (0..dim)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 2000) as f32 / 1000.0 - 1.0
                })
                .collect()
        })
        .collect()
}

fn state(name: &str, n: usize) -> VectorState {
    let mut s = VectorState::default();
    let points = vectors(n, 8, n as u64)
        .into_iter()
        .enumerate()
        .map(|(i, v)| Point {
            id: PointId::Num(i as u64),
            vector: Vector(v),
            payload: json!({"i": i}).as_object().cloned().unwrap_or_default(),
        })
        .collect();
    upsert(&mut s, name, 2, points);
    wait(&s, name, "ready", Duration::from_secs(60));
    s
}

/// Upserts `points` into collection `name` (uid 1, the tests' settings).
fn upsert(s: &mut VectorState, name: &str, index: u64, points: Vec<Point>) {
    s.apply(
        index,
        VectorCommand::Upsert {
            collection: name.into(),
            uid: 1,
            metric: Metric::L2,
            m: 16,
            ef_construction: 100,
            points,
        },
    );
}

fn wait(s: &VectorState, name: &str, want: &str, within: Duration) {
    let t = Instant::now();
    while s.shard_info(name, 1).index != want {
        assert!(t.elapsed() < within, "index of {name} not {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dump_file(name: &str, s: &VectorState) -> std::path::PathBuf {
    // This collection's own dump (another test's collection can hold the
    // same ids and revisions: looking for any file that covers the points
    // could find that one).
    let p = persist::path_for(dir(), name, &s.data[name]);
    let t = Instant::now();
    while !p.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "no dump of {name}");
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

fn search(s: &VectorState, name: &str, q: &[f32]) -> (Vec<PointId>, SearchMode) {
    let (hits, mode) = s
        .search(&SearchRequest {
            collection: name.into(),
            uid: 1,
            metric: Metric::L2,
            vector: q.to_vec(),
            k: 10,
            ef: 64,
            exact: false,
            filter: None,
            with_payload: false,
            with_vector: false,
        })
        .expect("search");
    (hits.into_iter().map(|h| h.id).collect(), mode)
}

#[test]
fn a_restored_replica_loads_its_index_at_once() {
    dir();
    let s = state("loads", 3000);
    let snap = s.snapshot().expect("snapshot");
    dump_file("loads", &s);
    let r = VectorState::restore(&snap).expect("restore");
    // Ready at once: loaded, not rebuilt (a rebuild starts as `building`).
    assert_eq!(r.shard_info("loads", 1).index, "ready");
    for q in vectors(20, 8, 99) {
        let (a, _) = search(&s, "loads", &q);
        let (b, mode) = search(&r, "loads", &q);
        assert_eq!(mode, SearchMode::Index);
        assert_eq!(a, b, "the loaded index answers as the saved one");
    }
    // And it keeps indexing what is applied after the restore.
    let mut r = r;
    r.apply(
        3,
        VectorCommand::Upsert {
            collection: "loads".into(),
            uid: 1,
            metric: Metric::L2,
            m: 16,
            ef_construction: 100,
            points: vec![Point {
                id: PointId::Num(99_999),
                vector: Vector(vec![9.0; 8]),
                payload: Default::default(),
            }],
        },
    );
    let t = Instant::now();
    loop {
        let (hits, mode) = search(&r, "loads", &[9.0; 8]);
        if mode == SearchMode::Index {
            assert_eq!(hits[0], PointId::Num(99_999));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn damaged_or_foreign_dumps_are_rebuilt_from() {
    dir();
    let s = state("damaged", 1500);
    let snap = s.snapshot().expect("snapshot");
    let path = dump_file("damaged", &s);
    let good = std::fs::read(&path).expect("read dump");
    // One flipped byte in the graph: the checksum refuses it.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&path, &bad).expect("write");
    assert!(
        persist::load("damaged", &s.data["damaged"]).is_none(),
        "a damaged dump is refused"
    );
    // So restore rebuilds (asserting `building` here would race a fast
    // rebuild of 1 500 points), and the rebuilt index answers.
    let r = VectorState::restore(&snap).expect("restore");
    wait(&r, "damaged", "ready", Duration::from_secs(60));
    for q in vectors(5, 8, 41) {
        assert_eq!(search(&r, "damaged", &q), search(&s, "damaged", &q));
    }
    // A dump that lacks a point of the state is refused.
    let mut more = s.data["damaged"].clone();
    more.points.insert(
        PointId::Num(123_456),
        Arc::new(StoredPoint {
            vector: Vector(vec![0.0; 8]),
            payload: Default::default(),
            rev: 7,
        }),
    );
    let err = persist::decode(&good, Metric::L2, &more)
        .err()
        .expect("refused");
    assert!(err.contains("123456"), "{err}");
    assert!(persist::decode(&good, Metric::Cosine, &s.data["damaged"]).is_err());
}

#[test]
fn graph_dump_round_trip_and_truncation() {
    let pts = vectors(500, 6, 5);
    let h = Hnsw::new(Metric::L2, 8, 50, pts.len());
    let items: Vec<(usize, Vec<f32>)> = pts.iter().cloned().enumerate().collect();
    crate::index::AnnIndex::insert_batch(&h, &items);
    let bytes = h.dump();
    let back = Hnsw::load(&bytes, Metric::L2).expect("load");
    for q in vectors(10, 6, 77) {
        let a = crate::index::AnnIndex::search(&h, &q, 5, 32, &|_| true);
        let b = crate::index::AnnIndex::search(&back, &q, 5, 32, &|_| true);
        assert_eq!(a, b);
    }
    for cut in [0, 3, bytes.len() / 3, bytes.len() - 1] {
        assert!(
            Hnsw::load(&bytes[..cut], Metric::L2).is_err(),
            "cut at {cut}"
        );
    }
}

/// A dump holds entries for points since overwritten or deleted, and two
/// for an id one upsert named twice; loaded, only each held point's
/// newest entry is alive (`tests_liveness.rs` for the live bookkeeping).
#[test]
fn a_loaded_dump_marks_its_stale_entries_dead() {
    dir();
    let name = "stale_entries";
    let mut s = state(name, 600);
    let points = (0..50u64)
        .chain([10])
        .map(|i| Point {
            id: PointId::Num(i),
            vector: Vector(vec![i as f32; 8]),
            payload: json!({"i": i}).as_object().cloned().unwrap_or_default(),
        })
        .collect();
    upsert(&mut s, name, 3, points);
    s.apply(
        4,
        VectorCommand::DeleteIds {
            collection: name.into(),
            uid: 1,
            ids: (50..60).map(PointId::Num).collect(),
        },
    );
    wait(&s, name, "ready", Duration::from_secs(60));
    assert_eq!(s.data[name].visibility_errors(), Vec::<String>::new());
    let snap = s.snapshot().expect("snapshot");
    dump_file(name, &s);
    let r = VectorState::restore(&snap).expect("restore");
    assert_eq!(r.shard_info(name, 1).index, "ready", "loaded, not rebuilt");
    let c = &r.data[name];
    assert_eq!(c.visibility_errors(), Vec::<String>::new());
    let h = c.index.as_ref().expect("index");
    let dead = h.shared.liveness.read().expect("liveness");
    let alive = dead
        .dead_at
        .iter()
        .filter(|d| **d == crate::index::ALIVE)
        .count();
    assert_eq!((dead.dead_at.len(), alive), (651, 590));
}
