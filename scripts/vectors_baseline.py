#!/usr/bin/env python3
"""Single-process faiss baseline for scripts/bench-ann.sh: faiss IndexHNSWFlat
(1 thread) on the same vectors (little-endian f32 files written by
`orrery-bench vectors --dump DIR`). Prints JSON lines: build time, and per
ef recall@10 against brute force and queries/s."""
import json, sys, time
import numpy as np
import faiss

d, dim, m, efc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
efs = [int(x) for x in sys.argv[5].split(",")]
base = np.fromfile(f"{d}/base.f32", dtype="<f4").reshape(-1, dim)
queries = np.fromfile(f"{d}/queries.f32", dtype="<f4").reshape(-1, dim)
faiss.omp_set_num_threads(1)
flat = faiss.IndexFlatL2(dim)
flat.add(base)
_, truth = flat.search(queries, 10)
idx = faiss.IndexHNSWFlat(dim, m)
idx.hnsw.efConstruction = efc
t = time.perf_counter()
idx.add(base)
build = time.perf_counter() - t
print(json.dumps({"baseline": "faiss IndexHNSWFlat", "threads": 1, "n": len(base), "dim": dim,
                  "m": m, "ef_construction": efc, "build_s": round(build, 3)}))
for ef in efs:
    idx.hnsw.efSearch = max(ef, 10)
    t = time.perf_counter()
    lat = []
    found = []
    for q in queries:
        s = time.perf_counter()
        _, ids = idx.search(q.reshape(1, -1), 10)
        lat.append((time.perf_counter() - s) * 1000)
        found.append(ids[0])
    secs = time.perf_counter() - t
    recall = np.mean([len(set(f) & set(tr)) / 10 for f, tr in zip(found, truth)])
    lat.sort()
    print(json.dumps({"baseline": "faiss", "ef": ef, "clients": 1, "recall_at_10": round(float(recall), 3),
                      "qps": round(len(queries) / secs, 3), "p50_ms": round(lat[len(lat) // 2], 3),
                      "p99_ms": round(lat[int((len(lat) - 1) * 0.99)], 3)}))
