//! Our HNSW alone on a data set of `scripts/vectors_data.py` (the GloVe
//! files `scripts/bench-vectors.sh` measures through the cluster), in one
//! process, for work on the index itself:
//!
//! ```sh
//! d=$(.venv-bench/bin/python scripts/vectors_data.py --n 100000 --queries 1000)
//! cargo run --release -p orrery-vector --example index_glove -- $d [threads] [ef,ef,..]
//! ```
//!
//! Builds in batches of 8192 (as the indexer sends them) on a rayon pool
//! of `threads` (default 1), with m 16 and ef_construction 200, l2; prints
//! inserts/s by wall time and by this process's CPU time (`/proc`: the
//! figure a shared machine disturbs least); then per ef, one thread, one
//! query at a time: recall@10 against the exact truth, the median latency
//! and the CPU µs per query.

use orrery_vector::hnsw::Hnsw;
use orrery_vector::index::AnnIndex;
use orrery_vector::Metric;
use std::time::Instant;

fn floats(path: &str) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// This process's user + system CPU seconds (clock ticks of 10 ms).
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = a.first() else {
        eprintln!("usage: index_glove DIR [threads] [ef,..]");
        std::process::exit(2);
    };
    let threads: usize = a.get(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    let efs: Vec<usize> = a
        .get(2)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 32, 64, 128]);
    let meta = std::fs::read_to_string(format!("{dir}/meta.json")).expect("meta.json");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("meta.json");
    let dim = meta["dim"].as_u64().expect("dim") as usize;
    let base = floats(&format!("{dir}/base.f32"));
    let queries = floats(&format!("{dir}/queries.f32"));
    let truth: Vec<u32> = std::fs::read(format!("{dir}/truth.u32"))
        .expect("truth")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let pts: Vec<(usize, Vec<f32>)> = base
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (i, v.to_vec()))
        .collect();
    let n = pts.len();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let idx = Hnsw::new(Metric::L2, 16, 200, n);
    let (t, c) = (Instant::now(), cpu_s());
    pool.install(|| {
        for chunk in pts.chunks(8192) {
            idx.insert_batch(chunk);
        }
    });
    let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c);
    println!(
        "build n {n} dim {dim} threads {threads}: {wall:.2} s wall, {cpu:.2} s CPU; \
         {:.0} inserts/s wall, {:.0} inserts per CPU second",
        n as f64 / wall,
        n as f64 / cpu.max(0.01)
    );
    for ef in efs {
        let mut lat = Vec::new();
        let mut hit = 0;
        let c = cpu_s();
        // Three passes, so that the CPU clock's 10 ms ticks average out.
        for pass in 0..3 {
            for (qi, q) in queries.chunks_exact(dim).enumerate() {
                let s = Instant::now();
                let got = idx.search(q, 10, ef, &|_| true);
                lat.push(s.elapsed().as_secs_f64() * 1e3);
                if pass == 0 {
                    let t = &truth[qi * 10..qi * 10 + 10];
                    hit += got.iter().filter(|g| t.contains(&(**g as u32))).count();
                }
            }
        }
        let nq = queries.len() / dim;
        let cpu_us = (cpu_s() - c) * 1e6 / (3 * nq) as f64;
        lat.sort_by(f64::total_cmp);
        println!(
            "ef {ef:4}: recall@10 {:.3}  p50 {:.4} ms  {cpu_us:.1} CPU µs per query",
            hit as f64 / (10 * nq) as f64,
            lat[lat.len() / 2]
        );
    }
}
