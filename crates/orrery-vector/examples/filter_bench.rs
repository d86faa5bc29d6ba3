//! Filtered search on one shard replica, in one process: unfiltered index
//! search against a 1 %-selective filter answered through the payload
//! index, and the same filter written so the index cannot answer it (a
//! `should` clause: every point's payload is tested, as before payload
//! indexes) — all on the same data in the same run.
//!
//! ```sh
//! cargo run --release -p orrery-vector --example filter_bench -- [N] [DIM] [QUERIES]
//! ```
//!
//! Defaults: 100 000 points of 64 dimensions around 100 centres, 500
//! queries, k = 10, ef = 64; payload `{"bucket": i % 100, "tag": ...}`, so
//! `bucket == b` selects 1 %. Recall@10 is measured against exact search
//! (`exact: true`) with the same filter.

use orrery_vector::{Metric, Point, PointId, SearchRequest, Vector, VectorCommand, VectorState};
use serde_json::json;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn req(q: &[f32], filter: Option<serde_json::Value>, exact: bool) -> SearchRequest {
    SearchRequest {
        collection: "c".into(),
        uid: 1,
        metric: Metric::L2,
        vector: q.to_vec(),
        k: 10,
        ef: 64,
        exact,
        filter: filter.map(|f| f.to_string()),
        with_payload: false,
        with_vector: false,
    }
}

fn main() {
    let (n, dim, nq) = (arg(1, 100_000), arg(2, 64), arg(3, 500));
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f32>> = (0..100)
        .map(|_| (0..dim).map(|_| r.next() * 4.0).collect())
        .collect();
    let mut point = |i: usize| -> Vec<f32> {
        centres[i % 100]
            .iter()
            .map(|c| c + 0.25 * r.next())
            .collect()
    };
    let base: Vec<Vec<f32>> = (0..n).map(&mut point).collect();
    let queries: Vec<Vec<f32>> = (0..nq).map(|i| point(i * 7 + 3)).collect();

    let mut s = VectorState::default();
    let t = Instant::now();
    for (chunk_no, chunk) in base.chunks(5000).enumerate() {
        let points = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = chunk_no * 5000 + j;
                Point {
                    id: PointId::Num(i as u64),
                    vector: Vector(v.clone()),
                    // `bucket` is independent of the cluster (i % 100 picks
                    // the centre, so use another stride).
                    payload: json!({"bucket": (i / 100) % 100, "tag": format!("t{}", i % 7)})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                }
            })
            .collect();
        s.apply(
            chunk_no as u64 + 2,
            VectorCommand::Upsert {
                collection: "c".into(),
                uid: 1,
                metric: Metric::L2,
                m: 16,
                ef_construction: 200,
                points,
            },
        );
    }
    loop {
        let info = s.shard_info("c", 1);
        if info.index == "ready" && info.indexed_entries >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let build_s = t.elapsed().as_secs_f64();
    println!(
        "orrery-vector filter_bench: {n} points, dim {dim}, {nq} queries, k 10, ef 64; index built in {build_s:.1} s; {} cores",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );

    // Restart: the index saved with a snapshot and loaded on restore,
    // against the rebuild a restore without a dump starts.
    let dump_dir = std::env::temp_dir().join(format!("orrery-filter-bench-{}", std::process::id()));
    orrery_vector::persist::set_dir(dump_dir.clone()).expect("dump dir");
    let snap = s.snapshot().expect("snapshot");
    let t = Instant::now();
    while std::fs::read_dir(&dump_dir).map_or(0, |d| d.count()) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let saved = t.elapsed();
    let bytes: u64 = std::fs::read_dir(&dump_dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let t = Instant::now();
    let restored = VectorState::restore(&snap).expect("restore");
    let ready_in = t.elapsed();
    println!(
        "restart: index dump {:.1} MB saved in {:.2} s; restore with the dump ready in {:.2} s (state {:?}); without it, a rebuild ({:.1} s above)",
        bytes as f64 / 1e6,
        saved.as_secs_f64(),
        ready_in.as_secs_f64(),
        restored.shard_info("c", 1).index,
        build_s
    );
    let _ = std::fs::remove_dir_all(&dump_dir);

    type FilterOf = Box<dyn Fn(usize) -> Option<serde_json::Value>>;
    let filters: [(&str, FilterOf); 3] = [
        ("unfiltered", Box::new(|_| None)),
        (
            "1% filter, payload index (must)",
            Box::new(|i| Some(json!({"must": [{"key": "bucket", "match": i % 100}]}))),
        ),
        (
            "1% filter, scanned (should)",
            Box::new(|i| Some(json!({"should": [{"key": "bucket", "match": i % 100}]}))),
        ),
    ];
    for (name, f) in filters.iter() {
        // Truth first (exact search, same filter), then the timed pass.
        let truth: Vec<Vec<PointId>> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let (hits, _) = s.search(&req(q, f(i), true)).expect("exact search");
                hits.into_iter().map(|h| h.id).collect()
            })
            .collect();
        let t = Instant::now();
        let mut found = 0usize;
        let mut wanted = 0usize;
        for (i, q) in queries.iter().enumerate() {
            let (hits, _) = s.search(&req(q, f(i), false)).expect("search");
            wanted += truth[i].len();
            found += hits.iter().filter(|h| truth[i].contains(&h.id)).count();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name:36} {:>9.0} queries/s (1 thread)  recall@10 {:.3}",
            nq as f64 / secs,
            found as f64 / wanted.max(1) as f64
        );
    }
}
