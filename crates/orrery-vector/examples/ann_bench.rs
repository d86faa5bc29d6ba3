//! hnsw_rs against our HNSW on the same data, in one process:
//!
//! ```sh
//! cargo run --release -p orrery-vector --example ann_bench -- \
//!     [--n 100000] [--dim 64] [--queries 1000] [--m 16] [--efc 200] \
//!     [--ef 16,32,64,128] [--threads 2] [--metric l2] [--seed 1] \
//!     [--dump DIR] [--skip-hnsw-rs 1] [--centres 100] [--ood 1] [--batch 8192]
//! ```
//!
//! `--dump DIR` writes `base.f32` and `queries.f32` (little-endian f32) for
//! `scripts/vectors_baseline.py` (faiss); `scripts/bench-ann.sh` runs both.
//!
//! Data: N points around 100 centres (the clustered set of
//! tests/vectors.rs, scaled), queries drawn the same way (or, `--ood 1`,
//! around other centres, as tests/vectors.rs does). Reports, per
//! index, the build rate (inserts/s, batches of 8192 as the indexer sends
//! them, on a rayon pool of `--threads`), then for each ef the
//! single-thread queries/s and recall@10 against exact search.

use orrery_vector::hnsw::Hnsw;
use orrery_vector::hnsw_rs_index::HnswIndex;
use orrery_vector::index::AnnIndex;
use orrery_vector::Metric;
use rayon::prelude::*;
use std::time::Instant;

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

fn clustered(r: &mut Rng, centres: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            centres[i % centres.len()]
                .iter()
                .map(|c| c + 0.25 * r.next())
                .collect()
        })
        .collect()
}

struct Args {
    n: usize,
    dim: usize,
    queries: usize,
    m: usize,
    efc: usize,
    ef: Vec<usize>,
    threads: usize,
    metric: Metric,
    seed: u64,
    dump: Option<String>,
    skip_hnsw_rs: bool,
    centres: usize,
    ood: bool,
    batch: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        n: 100_000,
        dim: 64,
        queries: 1000,
        m: 16,
        efc: 200,
        ef: vec![16, 32, 64, 128],
        threads: 2,
        metric: Metric::L2,
        seed: 1,
        dump: None,
        skip_hnsw_rs: false,
        centres: 100,
        ood: false,
        batch: 8192,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let (k, val) = (
            &pair[0],
            pair.get(1).ok_or(format!("{} needs a value", pair[0]))?,
        );
        let num = || val.parse::<usize>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--n" => a.n = num()?,
            "--dim" => a.dim = num()?,
            "--queries" => a.queries = num()?,
            "--m" => a.m = num()?,
            "--efc" => a.efc = num()?,
            "--threads" => a.threads = num()?,
            "--seed" => a.seed = num()? as u64,
            "--batch" => a.batch = num()?.max(1),
            "--centres" => a.centres = num()?.max(1),
            "--ood" => a.ood = num()? != 0,
            "--dump" => a.dump = Some(val.clone()),
            "--skip-hnsw-rs" => a.skip_hnsw_rs = num()? != 0,
            "--metric" => a.metric = Metric::parse(val).ok_or("metric: cosine, l2 or dot")?,
            "--ef" => {
                a.ef = val
                    .split(',')
                    .map(|x| x.parse().map_err(|e| format!("--ef: {e}")))
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown flag {k}")),
        }
    }
    Ok(a)
}

fn exact(metric: Metric, pts: &[(usize, Vec<f32>)], q: &[f32]) -> Vec<usize> {
    let mut s: Vec<(f32, usize)> = pts.iter().map(|(i, v)| (metric.score(q, v), *i)).collect();
    s.sort_by(|a, b| {
        let o = a.0.total_cmp(&b.0);
        if metric.higher_is_better() {
            o.reverse()
        } else {
            o
        }
    });
    s.into_iter().take(10).map(|(_, i)| i).collect()
}

fn bench(
    name: &str,
    idx: &dyn AnnIndex,
    a: &Args,
    pts: &[(usize, Vec<f32>)],
    qs: &[Vec<f32>],
    truth: &[Vec<usize>],
    pool: &rayon::ThreadPool,
) {
    let t = Instant::now();
    pool.install(|| {
        for c in pts.chunks(a.batch) {
            idx.insert_batch(c);
        }
    });
    let build = t.elapsed().as_secs_f64();
    println!(
        "{name:8} build {:.2} s  {:.0} inserts/s ({} threads)",
        build,
        pts.len() as f64 / build,
        a.threads
    );
    for &ef in &a.ef {
        let t = Instant::now();
        let mut lat = Vec::with_capacity(qs.len());
        let got: Vec<Vec<usize>> = qs
            .iter()
            .map(|q| {
                let s = Instant::now();
                let r = idx.search(q, 10, ef, &|_| true);
                lat.push(s.elapsed().as_secs_f64() * 1000.0);
                r
            })
            .collect();
        let secs = t.elapsed().as_secs_f64();
        // The median is what a loaded machine disturbs least.
        lat.sort_by(f64::total_cmp);
        let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0.0);
        let hit: usize = got
            .iter()
            .zip(truth)
            .map(|(g, t)| t.iter().filter(|x| g.contains(x)).count())
            .sum();
        println!(
            "{name:8} ef {ef:4}  {:8.0} qps (1 thread)  p50 {p50:.3} ms  recall@10 {:.3}",
            qs.len() as f64 / secs,
            hit as f64 / (10 * qs.len()) as f64
        );
    }
}

fn dump(path: &str, data: &[Vec<f32>]) -> std::io::Result<()> {
    let bytes: Vec<u8> = data
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(path, bytes)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut r = Rng(a.seed.max(1));
    let centres: Vec<Vec<f32>> = (0..100)
        .map(|_| (0..a.dim).map(|_| r.next()).collect())
        .collect();
    let pts: Vec<(usize, Vec<f32>)> = clustered(&mut r, &centres, a.n)
        .into_iter()
        .enumerate()
        .collect();
    let qs = clustered(&mut r, &centres, a.queries);
    if let Some(d) = &a.dump {
        let base: Vec<Vec<f32>> = pts.iter().map(|(_, v)| v.clone()).collect();
        let written = std::fs::create_dir_all(d)
            .and_then(|_| dump(&format!("{d}/base.f32"), &base))
            .and_then(|_| dump(&format!("{d}/queries.f32"), &qs));
        if let Err(e) = written {
            eprintln!("--dump {d}: {e}");
            std::process::exit(1);
        }
    }
    let truth: Vec<Vec<usize>> = qs.par_iter().map(|q| exact(a.metric, &pts, q)).collect();
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("thread pool: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "n {} dim {} metric {} m {} ef_construction {} queries {}",
        a.n,
        a.dim,
        a.metric.name(),
        a.m,
        a.efc,
        a.queries
    );
    let ours = Hnsw::new(a.metric, a.m, a.efc, a.n);
    println!("ours: simd {}", ours.simd());
    bench("ours", &ours, &a, &pts, &qs, &truth, &pool);
    println!("ours: {:.0} bytes/point", ours.bytes() as f64 / a.n as f64);
    drop(ours);
    if a.skip_hnsw_rs {
        return;
    }
    let theirs = HnswIndex::new(a.metric, a.m, a.efc, a.n);
    bench("hnsw_rs", &theirs, &a, &pts, &qs, &truth, &pool);
}
