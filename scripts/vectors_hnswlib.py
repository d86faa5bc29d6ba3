#!/usr/bin/env python3
"""hnswlib baseline of scripts/bench-vectors.sh, on the data set the cluster
was measured on (a directory from vectors_data.py or `orrery-bench vectors
--dump`): one process, same l2 metric, M and ef_construction.

Build: once on 1 thread and once on all cores (inserts/s), the index's
saved size per point and the process RSS growth per point. Search with the
1-thread-built graph, per ef: on 1 thread one query per call (as one
client sends them), and on all cores one batched knn_query over the whole
query set; recall@10 against the exact truth and queries/s (passes over
the query set are repeated for at least --min-seconds). JSON lines.
    vectors_hnswlib.py DIR --m 16 --efc 200 --ef 10,16,32,64,128
"""
import argparse, json, os, tempfile, time
import numpy as np
import hnswlib


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def timed_passes(fn, min_s):
    """Runs fn() until min_s have passed (at least once); (passes, seconds)."""
    t, passes = time.perf_counter(), 0
    while True:
        fn()
        passes += 1
        el = time.perf_counter() - t
        if el >= min_s:
            return passes, el


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--ef", default="10,16,32,64,128,256")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    a = ap.parse_args()
    meta = json.load(open(os.path.join(a.dir, "meta.json")))
    dim = meta["dim"]
    base = np.fromfile(os.path.join(a.dir, "base.f32"), dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(os.path.join(a.dir, "queries.f32"), dtype="<f4").reshape(-1, dim)
    truth = np.fromfile(os.path.join(a.dir, "truth.u32"), dtype="<u4").reshape(-1, 10)
    n, cores = len(base), os.cpu_count() or 1
    ids = np.arange(n)

    def build(threads):
        idx = hnswlib.Index(space="l2", dim=dim)
        idx.init_index(max_elements=n, M=a.m, ef_construction=a.efc, random_seed=100)
        idx.set_num_threads(threads)
        t = time.perf_counter()
        idx.add_items(base, ids, num_threads=threads)
        return idx, time.perf_counter() - t

    rss0 = rss_bytes()
    idx, build1 = build(1)
    rss1 = rss_bytes()
    _, build_all = build(cores)
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "index.bin")
        idx.save_index(p)
        size = os.path.getsize(p)
    print(json.dumps({"baseline": "hnswlib", "version": getattr(hnswlib, "__version__", "0.8.0"),
                      "n": n, "dim": dim, "m": a.m, "ef_construction": a.efc, "cores": cores,
                      "build_s_1thread": round(build1, 3), "inserts_per_s_1thread": round(n / build1, 1),
                      "build_s_allcores": round(build_all, 3), "inserts_per_s_allcores": round(n / build_all, 1),
                      "index_bytes_per_point": round(size / n, 1),
                      "rss_bytes_per_point": round((rss1 - rss0) / n, 1)}), flush=True)
    for ef in [int(x) for x in a.ef.split(",")]:
        idx.set_ef(max(ef, 10))
        # 1 thread, one query per call.
        found, lat = [], []
        for q in queries:
            s = time.perf_counter()
            labels, _ = idx.knn_query(q, k=10, num_threads=1)
            lat.append((time.perf_counter() - s) * 1000)
            found.append(labels[0])
        r1 = recall(found, truth)

        def one_pass():
            for q in queries:
                idx.knn_query(q, k=10, num_threads=1)

        passes, secs = timed_passes(one_pass, a.min_seconds)
        lat.sort()
        print(json.dumps({"baseline": "hnswlib", "threads": 1, "ef": ef, "recall_at_10": round(r1, 3),
                          "qps": round(passes * len(queries) / secs, 1),
                          "p50_ms": round(lat[len(lat) // 2], 4),
                          "p99_ms": round(lat[int((len(lat) - 1) * 0.99)], 4)}), flush=True)
        # All cores, the query set as one batch.
        labels, _ = idx.knn_query(queries, k=10, num_threads=cores)
        ra = recall(labels, truth)
        passes, secs = timed_passes(lambda: idx.knn_query(queries, k=10, num_threads=cores), a.min_seconds)
        print(json.dumps({"baseline": "hnswlib", "threads": cores, "ef": ef, "recall_at_10": round(ra, 3),
                          "qps": round(passes * len(queries) / secs, 1)}), flush=True)


if __name__ == "__main__":
    main()
