#!/usr/bin/env bash
# Builds the node and the benchmark in release mode, then runs the KV
# benchmark on a local 3-node cluster. Arguments go to `orrery-bench kv`,
# e.g. `scripts/bench-kv.sh --duration 5` or `--protocol http`.
# JSON lines go to stdout, progress to stderr:
#   scripts/bench-kv.sh --duration 5 | tee bench-kv.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p orrery -p orrery-bench >&2
exec "${CARGO_TARGET_DIR:-target}/release/orrery-bench" kv "$@"
