#!/usr/bin/env bash
# The index alone, in one process: our HNSW against hnsw_rs (and faiss
# IndexHNSWFlat, 1 thread, when .venv-bench exists: see bench-vectors.sh)
# on the same clustered vectors. Arguments go to the example, e.g.
#   scripts/bench-ann.sh --n 100000 --dim 64 --ef 16,32,64,128 --threads 2
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p orrery-vector --features hnsw_rs --example ann_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/ann_bench"
dump="$(mktemp -d)"
trap 'rm -rf "$dump"' EXIT
"$bin" "$@" --dump "$dump"
if [ -x .venv-bench/bin/python ]; then
  # Same defaults as the example unless given.
  dim=64 m=16 efc=200 efs=16,32,64,128
  while [ $# -gt 1 ]; do
    case "$1" in
      --dim) dim=$2 ;; --m) m=$2 ;; --efc) efc=$2 ;; --ef) efs=$2 ;;
      --metric) [ "$2" = l2 ] || { echo "faiss baseline: l2 only" >&2; exit 0; } ;;
    esac
    shift 2
  done
  .venv-bench/bin/python scripts/vectors_baseline.py "$dump" "$dim" "$m" "$efc" "$efs"
fi
