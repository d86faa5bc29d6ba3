//! The data set of `orrery-bench vectors`: real embeddings prepared by
//! `scripts/vectors_data.py` (a directory of little-endian files, with
//! exact ground truth computed there once and cached), or the old
//! synthetic clusters (`--synthetic`), whose ground truth is computed
//! here by brute force.
//!
//! Every point `i` carries the payload `{"bucket": i % 100}`, so the
//! filters `bucket < 10` and `bucket == 3` select 10 % and 1 % of it.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// The filtered cells: a name, the filter (REST JSON) and which buckets
/// it selects (for the brute-force truth).
pub struct FilterCell {
    pub name: &'static str,
    pub selectivity: f64,
    pub json: Value,
    pub keep: fn(u64) -> bool,
}

pub fn filter_cells() -> Vec<FilterCell> {
    vec![
        FilterCell {
            name: "bucket<10",
            selectivity: 0.10,
            json: serde_json::json!({"must": [{"key": "bucket", "range": {"lt": 10}}]}),
            keep: |i| i % 100 < 10,
        },
        FilterCell {
            name: "bucket==3",
            selectivity: 0.01,
            json: serde_json::json!({"must": [{"key": "bucket", "match": 3}]}),
            keep: |i| i % 100 == 3,
        },
    ]
}

pub struct Dataset {
    /// What the vectors are, for the result lines.
    pub source: String,
    pub dim: usize,
    pub base: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    /// The exact 10 nearest base ids of every query (l2), unfiltered.
    pub truth: Vec<Vec<u64>>,
    /// The same under each of [`filter_cells`], in that order.
    pub filtered_truth: Vec<Vec<Vec<u64>>>,
}

fn read_f32(path: &Path, dim: usize) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    if bytes.len() % (4 * dim) != 0 {
        bail!(
            "{}: {} bytes is not a whole number of {dim}-dim f32 rows",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(4 * dim)
        .map(|row| {
            row.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect())
}

/// `rows` rows of 10 little-endian u32 ids.
fn read_truth(path: &Path, rows: usize) -> Result<Vec<Vec<u64>>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    if bytes.len() != rows * 10 * 4 {
        bail!("{}: expected {rows} x 10 u32 ids", path.display());
    }
    Ok(bytes
        .chunks_exact(40)
        .map(|row| {
            row.chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
                .collect()
        })
        .collect())
}

/// A directory written by `scripts/vectors_data.py`: `meta.json`,
/// `base.f32`, `queries.f32`, `truth.u32`, `truth_b10.u32`, `truth_b3.u32`.
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    let meta: Value = serde_json::from_slice(
        &std::fs::read(dir.join("meta.json"))
            .with_context(|| format!("{}/meta.json", dir.display()))?,
    )?;
    let dim = meta["dim"].as_u64().context("meta.json: dim")? as usize;
    let base = read_f32(&dir.join("base.f32"), dim)?;
    let queries = read_f32(&dir.join("queries.f32"), dim)?;
    let truth = read_truth(&dir.join("truth.u32"), queries.len())?;
    let filtered_truth = ["truth_b10.u32", "truth_b3.u32"]
        .iter()
        .map(|f| read_truth(&dir.join(f), queries.len()))
        .collect::<Result<_>>()?;
    Ok(Dataset {
        source: meta["source"].as_str().unwrap_or("unknown").to_string(),
        dim,
        base,
        queries,
        truth,
        filtered_truth,
    })
}

/// xorshift64*: the synthetic data set is a pure function of the seed.
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

/// `n` points around 100 centres (and queries from the same distribution).
pub fn clustered(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut c = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f32>> = (0..100)
        .map(|_| (0..dim).map(|_| c.next()).collect())
        .collect();
    let mut r = Rng(seed.max(1));
    (0..n)
        .map(|i| {
            centres[i % 100]
                .iter()
                .map(|x| x + 0.3 * r.next())
                .collect()
        })
        .collect()
}

/// The ids of the 10 base points nearest to `q` (l2) among those `keep`
/// accepts, nearest first (ties by id).
fn exact_top10(base: &[Vec<f32>], q: &[f32], keep: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut d: Vec<(f32, u64)> = base
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i as u64))
        .map(|(i, v)| {
            (
                v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(),
                i as u64,
            )
        })
        .collect();
    let k = 10.min(d.len());
    if k == 0 {
        return Vec::new();
    }
    d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.truncate(k);
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().map(|(_, i)| i).collect()
}

pub fn synthetic(n: usize, dim: usize, queries: usize, seed: u64) -> Dataset {
    let base = clustered(n, dim, seed);
    let queries = clustered(queries, dim, seed + 1);
    let truth = queries
        .par_iter()
        .map(|q| exact_top10(&base, q, |_| true))
        .collect();
    let filtered_truth = filter_cells()
        .iter()
        .map(|f| {
            queries
                .par_iter()
                .map(|q| exact_top10(&base, q, f.keep))
                .collect()
        })
        .collect();
    Dataset {
        source: format!("synthetic: {n} x {dim}, 100 clusters, seed {seed}"),
        dim,
        base,
        queries,
        truth,
        filtered_truth,
    }
}

/// Writes `base.f32` and `queries.f32` (and the unfiltered truth as
/// `truth.u32`) for a baseline run on the synthetic set.
pub fn dump(dir: &Path, d: &Dataset) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, rows) in [("base.f32", &d.base), ("queries.f32", &d.queries)] {
        let path = dir.join(name);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| path.display().to_string())?,
        );
        for v in rows {
            for x in v {
                f.write_all(&x.to_le_bytes())?;
            }
        }
        f.flush()?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("truth.u32"))?);
    for row in &d.truth {
        for &i in row {
            f.write_all(&(i as u32).to_le_bytes())?;
        }
    }
    f.flush()?;
    std::fs::write(
        dir.join("meta.json"),
        serde_json::json!({"source": d.source, "dim": d.dim, "n": d.base.len(),
                           "queries": d.queries.len(), "metric": "l2"})
        .to_string(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brute-force truth is the true nearest set, nearest first, and a
    /// filtered truth holds only points its filter accepts.
    #[test]
    fn exact_truth_is_nearest_and_filtered() {
        let d = synthetic(2000, 8, 20, 7);
        let dist = |q: &[f32], i: u64| -> f32 {
            d.base[i as usize]
                .iter()
                .zip(q)
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        };
        for (qi, q) in d.queries.iter().enumerate() {
            let t = &d.truth[qi];
            assert_eq!(t.len(), 10);
            let worst = dist(q, t[9]);
            assert!(t.windows(2).all(|w| dist(q, w[0]) <= dist(q, w[1])));
            let closer = (0..d.base.len() as u64)
                .filter(|&i| dist(q, i) < worst)
                .count();
            assert!(closer <= 9, "{closer} points are closer than the 10th");
            for (f, ft) in filter_cells().iter().zip(&d.filtered_truth) {
                assert_eq!(ft[qi].len(), 10);
                assert!(ft[qi].iter().all(|&i| (f.keep)(i)), "{}", f.name);
            }
        }
    }
}
