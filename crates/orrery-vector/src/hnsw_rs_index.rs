//! hnsw_rs behind [`AnnIndex`], kept only for the side-by-side benchmark
//! (`examples/ann_bench.rs`, feature `hnsw_rs`); the server uses our own
//! [`crate::hnsw::Hnsw`], which builds and searches several times faster.

use crate::index::AnnIndex;
use crate::Metric;
use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;

/// hnsw_rs requires distances >= 0 (it asserts). Cosine uses normalised
/// vectors and `1 - dot`; L2 the squared distance; dot a strictly
/// decreasing positive map of the inner product, so the order is exact.
#[derive(Clone, Copy)]
pub struct MetricDist(pub Metric);

impl Distance<f32> for MetricDist {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = self.raw(a, b);
        // Finite vectors can still overflow: a dot product of components
        // near 1e30 sums +inf and -inf to NaN, which hnsw_rs asserts on
        // (it would take the node down). NaN and infinities sort as the
        // farthest.
        if !d.is_finite() {
            f32::MAX
        } else {
            d
        }
    }
}

impl MetricDist {
    fn raw(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.0 {
            Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
            Metric::Cosine => (1.0 - crate::dot(a, b)).max(0.0),
            Metric::Dot => {
                let d = crate::dot(a, b);
                if d <= 0.0 {
                    1.0 - d
                } else {
                    1.0 / (1.0 + d)
                }
            }
        }
    }
}

pub struct HnswIndex {
    hnsw: Hnsw<'static, f32, MetricDist>,
    metric: Metric,
}

impl HnswIndex {
    /// `m` must already be validated (hnsw_rs exits the process above 256).
    pub fn new(metric: Metric, m: usize, ef_construction: usize, capacity: usize) -> Self {
        let m = m.clamp(2, crate::MAX_M);
        HnswIndex {
            hnsw: Hnsw::new(
                m,
                capacity.max(1024),
                16,
                ef_construction,
                MetricDist(metric),
            ),
            metric,
        }
    }

    fn prepare(&self, v: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::Cosine => crate::normalized(v),
            _ => v.to_vec(),
        }
    }
}

impl AnnIndex for HnswIndex {
    fn insert_batch(&self, items: &[(usize, Vec<f32>)]) {
        let prepared: Vec<(Vec<f32>, usize)> =
            items.iter().map(|(id, v)| (self.prepare(v), *id)).collect();
        if prepared.len() >= 64 {
            let refs: Vec<(&Vec<f32>, usize)> = prepared.iter().map(|(v, id)| (v, *id)).collect();
            self.hnsw.parallel_insert(&refs);
        } else {
            for (v, id) in &prepared {
                self.hnsw.insert((v.as_slice(), *id));
            }
        }
    }

    fn search(&self, q: &[f32], k: usize, ef: usize, keep: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let q = self.prepare(q);
        let filter = |id: &usize| keep(*id);
        self.hnsw
            .search_filter(&q, k, ef.max(k), Some(&filter))
            .into_iter()
            .map(|n| n.d_id)
            .collect()
    }
}
