//! Distances for the graph: SIMD kernels chosen once at runtime, and the
//! metric mapping to "smaller is closer".
//!
//! The mapping is order-equivalent to `MetricDist` (hnsw_rs_index.rs, the one
//! hnsw_rs used): cosine is `1 - dot` of normalised vectors, l2 the squared
//! distance, dot `-dot` (MetricDist's positive map of the inner product has
//! the same order, but `1 / (1 + d)` collapses distinct large products into
//! one float; the graph does not need distances to be positive). Anything
//! non-finite (finite components near 1e30 overflow to ±inf, or to NaN when
//! products of both signs meet) sorts as the farthest: `f32::MAX`.

use crate::Metric;

type Kernel = fn(&[f32], &[f32]) -> f32;

/// The distance of one metric with the best kernel this CPU has.
#[derive(Clone, Copy)]
pub struct Dist {
    metric: Metric,
    dot: Kernel,
    l2: Kernel,
    simd: bool,
}

impl Dist {
    pub fn new(metric: Metric) -> Dist {
        let (dot, l2, simd) = kernels();
        Dist {
            metric,
            dot,
            l2,
            simd,
        }
    }

    /// Smaller is closer; never NaN.
    #[inline]
    pub fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = match self.metric {
            Metric::L2 => (self.l2)(a, b),
            Metric::Cosine => 1.0 - (self.dot)(a, b),
            Metric::Dot => -(self.dot)(a, b),
        };
        if d.is_finite() {
            d
        } else {
            f32::MAX
        }
    }

    /// Whether the kernels in use are the AVX2+FMA ones (for reports).
    pub fn simd(&self) -> bool {
        self.simd
    }
}

fn kernels() -> (Kernel, Kernel, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return (avx::dot, avx::l2, true);
        }
    }
    (scalar_dot, scalar_l2, false)
}

/// Eight independent accumulators, so that the compiler can vectorise the
/// loop with whatever the baseline target offers (SSE2, NEON).
pub fn scalar_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for j in 0..8 {
            acc[j] += a[c * 8 + j] * b[c * 8 + j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s
}

pub fn scalar_l2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for j in 0..8 {
            let d = a[c * 8 + j] - b[c * 8 + j];
            acc[j] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        let d = a[i] - b[i];
        s += d * d;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    // These safe wrappers are only ever handed out by `kernels()` after
    // `is_x86_feature_detected!` confirmed AVX2 and FMA, which is what the
    // `target_feature` functions below require.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX2 and FMA were detected before this kernel was chosen.
        unsafe { dot_avx2(a, b) }
    }

    pub fn l2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: AVX2 and FMA were detected before this kernel was chosen.
        unsafe { l2_avx2(a, b) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads): i + 16 <= n and i + 8 <= n keep every
        // unaligned 8-lane load inside both slices.
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads): as in dot_avx2.
        while i + 16 <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            let d1 = _mm256_sub_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
            );
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            acc1 = _mm256_fmadd_ps(d1, d1, acc1);
            i += 16;
        }
        if i + 8 <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            let d = a[i] - b[i];
            s += d * d;
            i += 1;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD kernels agree with the scalar ones at every length around
    /// the 8- and 16-lane boundaries.
    #[test]
    fn kernels_agree_with_scalar() {
        let (dot, l2, _) = kernels();
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let (d, e) = (dot(&a, &b), scalar_dot(&a, &b));
            assert!(
                (d - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "dot n={n}: {d} vs {e}"
            );
            let (d, e) = (l2(&a, &b), scalar_l2(&a, &b));
            assert!(
                (d - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "l2 n={n}: {d} vs {e}"
            );
        }
    }

    #[test]
    fn overflow_sorts_farthest() {
        let a = [1e30f32, -1e30, 1e30, -1e30];
        let b = [1e30f32, 1e30, 1e30, 1e30];
        for m in [Metric::L2, Metric::Cosine, Metric::Dot] {
            let d = Dist::new(m);
            assert_eq!(d.eval(&a, &b), f32::MAX, "{m:?}");
        }
    }
}
