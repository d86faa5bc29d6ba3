//! What a long search costs the writes of its group, in one process: the
//! state behind one `RwLock` as the state machine holds it, searcher
//! threads running exact searches, and a writer applying one-point
//! upserts (each under the write lock, as apply is). Paired, same data,
//! same run:
//!
//! * `idle`: no searches;
//! * `locked`: each search runs under the read lock (the design before
//!   views): a write waits for the searches in progress, and — std's
//!   `RwLock` queues new readers behind a waiting writer — they for it;
//! * `view`: each search takes its view under the read lock and runs
//!   after releasing it (what the node does now).
//!
//! ```sh
//! cargo run --release -p orrery-vector --example apply_lock -- [N] [DIM] [SEARCHERS] [SECS]
//! ```
//!
//! Defaults: 50 000 points of 128 dimensions, 2 searcher threads, 5 s per
//! mode; a write every millisecond. Write latency is from asking for the
//! write lock to the end of apply.

use orrery_vector::{Metric, Point, PointId, SearchRequest, Vector, VectorCommand, VectorState};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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
    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.next()).collect()
    }
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn upsert(points: Vec<Point>) -> VectorCommand {
    VectorCommand::Upsert {
        collection: "c".into(),
        uid: 1,
        metric: Metric::L2,
        m: 16,
        ef_construction: 64,
        points,
    }
}

fn point(id: u64, v: Vec<f32>) -> Point {
    Point {
        id: PointId::Num(id),
        vector: Vector(v),
        payload: json!({"g": id % 10})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

fn exact(q: Vec<f32>) -> SearchRequest {
    SearchRequest {
        collection: "c".into(),
        uid: 1,
        metric: Metric::L2,
        vector: q,
        k: 10,
        ef: 64,
        exact: true,
        filter: None,
        with_payload: false,
        with_vector: false,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Idle,
    Locked,
    View,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn run(
    state: &Arc<RwLock<VectorState>>,
    mode: Mode,
    n: usize,
    dim: usize,
    searchers: usize,
    secs: u64,
    index: &mut u64,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..if mode == Mode::Idle { 0 } else { searchers })
        .map(|t| {
            let (state, stop, searches) = (state.clone(), stop.clone(), searches.clone());
            std::thread::spawn(move || {
                let mut r = Rng(0x1234_5678 + t as u64);
                while !stop.load(Ordering::Relaxed) {
                    let req = exact(r.vector(dim));
                    let hits = match mode {
                        Mode::Locked => {
                            let s = state.read().unwrap_or_else(|p| p.into_inner());
                            s.search(&req).map(|(h, _)| h.len())
                        }
                        _ => {
                            let view = {
                                let s = state.read().unwrap_or_else(|p| p.into_inner());
                                s.view(&req)
                            };
                            view.map(|v| v.run().0.len())
                        }
                    };
                    assert_eq!(hits.ok(), Some(10));
                    searches.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let the searchers get going.
    std::thread::sleep(Duration::from_millis(200));
    searches.store(0, Ordering::Relaxed);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ *index);
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let id = (r.next().abs() * n as f32) as u64 % n as u64;
        let cmd = upsert(vec![point(id, r.vector(dim))]);
        *index += 1;
        let t = Instant::now();
        {
            let mut s = state.write().unwrap_or_else(|p| p.into_inner());
            s.apply(*index, cmd);
        }
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = searches.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    lat.sort();
    let name = match mode {
        Mode::Idle => "idle",
        Mode::Locked => "locked",
        Mode::View => "view",
    };
    println!(
        "{name:>6}: {:>5} writes, write p50 {:>7.3} ms  p99 {:>8.3} ms  max {:>8.3} ms; {:>6.1} exact searches/s",
        lat.len(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        done as f64 / elapsed
    );
}

fn main() {
    let (n, dim, searchers, secs) = (arg(1, 50_000), arg(2, 128), arg(3, 2), arg(4, 5) as u64);
    let mut r = Rng(42);
    let mut s = VectorState {
        // Exact searches only: no indexer threads competing for the cores.
        no_index: true,
        ..Default::default()
    };
    let t = Instant::now();
    let mut index = 0;
    for chunk in (0..n as u64).collect::<Vec<_>>().chunks(500) {
        index += 1;
        s.apply(
            index,
            upsert(chunk.iter().map(|i| point(*i, r.vector(dim))).collect()),
        );
    }
    println!(
        "{n} points × {dim}: loaded (apply, 500 a command) in {:.2} s; {searchers} searcher threads, {secs} s per mode",
        t.elapsed().as_secs_f64()
    );
    let state = Arc::new(RwLock::new(s));
    for mode in [
        Mode::Idle,
        Mode::Locked,
        Mode::View,
        Mode::Locked,
        Mode::View,
    ] {
        run(&state, mode, n, dim, searchers, secs, &mut index);
    }
}
