//! Our HNSW against exact search (every metric, with filters), against
//! inputs that overflow, with arbitrary ids, and under concurrent inserts
//! and searches.

use super::Hnsw;
use crate::index::AnnIndex;
use crate::Metric;
use std::sync::Arc;

/// xorshift64*, so every run sees the same data.
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

/// `n` points around 20 centres (clustered data is where weak graphs fail).
fn clustered(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = Rng(seed);
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dim).map(|_| r.next()).collect())
        .collect();
    (0..n)
        .map(|i| centres[i % 20].iter().map(|c| c + 0.3 * r.next()).collect())
        .collect()
}

fn exact(
    metric: Metric,
    pts: &[(usize, Vec<f32>)],
    q: &[f32],
    k: usize,
    keep: &dyn Fn(usize) -> bool,
) -> Vec<usize> {
    let mut s: Vec<(f32, usize)> = pts
        .iter()
        .filter(|(id, _)| keep(*id))
        .map(|(id, v)| (metric.score(q, v), *id))
        .collect();
    s.sort_by(|a, b| {
        let o = a.0.total_cmp(&b.0);
        if metric.higher_is_better() {
            o.reverse()
        } else {
            o
        }
    });
    s.into_iter().take(k).map(|(_, id)| id).collect()
}

fn recall(
    idx: &Hnsw,
    metric: Metric,
    pts: &[(usize, Vec<f32>)],
    queries: &[Vec<f32>],
    ef: usize,
    keep: &dyn Fn(usize) -> bool,
) -> f64 {
    let (mut hit, mut want) = (0, 0);
    for q in queries {
        let got = idx.search(q, 10, ef, keep);
        assert!(
            got.iter().all(|id| keep(*id)),
            "a refused id came back: {got:?}"
        );
        let truth = exact(metric, pts, q, 10, keep);
        want += truth.len();
        hit += truth.iter().filter(|t| got.contains(t)).count();
    }
    hit as f64 / want.max(1) as f64
}

#[test]
fn recall_against_exact_search_for_every_metric_and_filter() {
    let mut data = clustered(4060, 24, 7);
    // Queries from the same distribution as the points.
    let queries = data.split_off(4000);
    // Ids are sparse and not in slot order, as after the indexer remaps.
    let pts: Vec<(usize, Vec<f32>)> = data
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i * 7 + 1_000_003, v))
        .collect();
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let idx = Hnsw::new(metric, 16, 100, pts.len());
        for chunk in pts.chunks(1000) {
            idx.insert_batch(chunk);
        }
        assert_eq!(idx.len(), pts.len());
        // Filtered maximum-inner-product search is the weak spot of any
        // HNSW (the true answers are a few long vectors the filter may
        // refuse); hnsw_rs measured 0.918 and 0.788 on this very data.
        let (want_half, want_tenth) = match metric {
            Metric::Dot => (0.85, 0.7),
            _ => (0.95, 0.95),
        };
        let all = recall(&idx, metric, &pts, &queries, 64, &|_| true);
        assert!(all >= 0.95, "{metric:?}: recall {all}");
        // Half the points (by id parity) refused: walked through, never returned.
        let half = recall(&idx, metric, &pts, &queries, 64, &|id| id % 2 == 0);
        assert!(half >= want_half, "{metric:?}: filtered recall {half}");
        // One in ten.
        let tenth = recall(&idx, metric, &pts, &queries, 128, &|id| id % 10 == 3);
        assert!(tenth >= want_tenth, "{metric:?}: 10% filter recall {tenth}");
        // A filter refusing everything returns nothing.
        assert!(idx.search(&queries[0], 10, 64, &|_| false).is_empty());
    }
}

#[test]
fn small_batches_build_the_same_graph_every_time() {
    let pts: Vec<(usize, Vec<f32>)> = clustered(300, 8, 3).into_iter().enumerate().collect();
    let build = || {
        let idx = Hnsw::new(Metric::L2, 8, 50, 0);
        for c in pts.chunks(10) {
            idx.insert_batch(c);
        }
        idx
    };
    let (a, b) = (build(), build());
    for q in clustered(20, 8, 5) {
        assert_eq!(
            a.search(&q, 10, 20, &|_| true),
            b.search(&q, 10, 20, &|_| true)
        );
    }
}

#[test]
fn huge_finite_vectors_and_odd_queries_never_panic() {
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let idx = Hnsw::new(metric, 4, 16, 0);
        assert!(idx.search(&[1.0, 2.0], 5, 10, &|_| true).is_empty());
        let pts: Vec<(usize, Vec<f32>)> = (0..300)
            .map(|i| {
                let s = if i % 2 == 0 { 1e30 } else { -1e30 };
                (i, vec![s, -s, i as f32, s * 0.5])
            })
            .collect();
        idx.insert_batch(&pts);
        for q in [
            vec![1e30, 1e30, -1e30, 1e30],
            vec![0.0; 4],
            vec![1.0],
            vec![1.0; 9],
        ] {
            let hits = idx.search(&q, 10, 32, &|_| true);
            assert!(
                hits.len() <= 10 && hits.iter().all(|h| *h < 300),
                "{metric:?}: {hits:?}"
            );
        }
        assert!(idx.search(&[1.0; 4], 0, 32, &|_| true).is_empty());
    }
}

#[test]
fn an_id_inserted_twice_is_reported_once() {
    let idx = Hnsw::new(Metric::L2, 8, 32, 0);
    let pts: Vec<(usize, Vec<f32>)> = (0..100).map(|i| (i, vec![i as f32, 0.0])).collect();
    idx.insert_batch(&pts);
    idx.insert_batch(&[(5, vec![5.0, 0.0])]);
    let got = idx.search(&[5.0, 0.0], 3, 32, &|_| true);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], 5);
    assert_eq!(got.iter().filter(|i| **i == 5).count(), 1, "{got:?}");
}

#[test]
fn searches_run_while_batches_insert() {
    let mut data = clustered(6050, 16, 11);
    let queries = data.split_off(6000);
    let pts: Vec<(usize, Vec<f32>)> = data.into_iter().enumerate().collect();
    let idx = Arc::new(Hnsw::new(Metric::L2, 12, 64, 0));
    let writer = {
        let (idx, pts) = (idx.clone(), pts.clone());
        std::thread::spawn(move || {
            for c in pts.chunks(500) {
                idx.insert_batch(c);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (idx, queries) = (idx.clone(), queries.clone());
            std::thread::spawn(move || {
                let mut searches = 0;
                while idx.len() < 6000 || searches < 50 {
                    let q = &queries[searches % queries.len()];
                    let got = idx.search(q, 10, 32, &|id| id % 2 == t);
                    assert!(got.len() <= 10);
                    assert!(got.iter().all(|id| *id < 6000 && id % 2 == t), "{got:?}");
                    searches += 1;
                }
                searches
            })
        })
        .collect();
    writer.join().expect("writer");
    for r in readers {
        assert!(r.join().expect("reader") >= 50);
    }
    let r = recall(&idx, Metric::L2, &pts, &queries, 64, &|_| true);
    assert!(r >= 0.95, "recall after concurrent build {r}");
}
