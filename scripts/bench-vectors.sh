#!/usr/bin/env bash
# Vector benchmark: builds the node and the benchmark in release mode, loads
# N clustered vectors (default 100 000 x 128) into a collection on a local
# 3-node cluster, and for an ef sweep reports recall@10 against exact search,
# queries/s and p50/p99 with 1 and 16 clients (JSON lines on stdout). Then
# runs a single-process faiss HNSW baseline (1 thread; installed with pip
# into .venv-bench) on the same vectors, and prints the qps ratio per ef.
#   scripts/bench-vectors.sh [--n 20000 --dim 64 ...] | tee bench-vectors.jsonl
# Arguments go to `orrery-bench vectors`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p orrery -p orrery-bench >&2
dump=$(mktemp -d)
trap 'rm -rf "$dump"' EXIT
out="$dump/orrery.jsonl"
"${CARGO_TARGET_DIR:-target}/release/orrery-bench" vectors --dump "$dump" "$@" | tee "$out"
# The same parameters as the run (defaults unless given).
dim=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["dim"])' "$out")
m=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["m"])' "$out")
efc=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["ef_construction"])' "$out")
efs=$(python3 -c 'import json,sys; print(",".join(sorted({str(json.loads(l)["ef"]) for l in open(sys.argv[1]) if "\"ef\"" in l}, key=int)))' "$out")
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench >&2
  .venv-bench/bin/pip install --quiet faiss-cpu numpy >&2
fi
.venv-bench/bin/python scripts/vectors_baseline.py "$dump" "$dim" "$m" "$efc" "$efs" | tee "$dump/base.jsonl"
python3 - "$out" "$dump/base.jsonl" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if '"phase": "search"' in l or '"phase":"search"' in l]
base = {j["ef"]: j for j in map(json.loads, open(sys.argv[2])) if "ef" in j}
for o in ours:
    if o["clients"] == 1 and o["ef"] in base:
        b = base[o["ef"]]
        print(json.dumps({"ratio": "faiss_qps / orrery_qps (1 client)", "ef": o["ef"],
                          "orrery_qps": o["qps"], "faiss_qps": b["qps"], "ratio_value": round(b["qps"] / o["qps"], 2),
                          "orrery_recall": o["recall_at_10"], "faiss_recall": b["recall_at_10"]}))
PY
