#!/usr/bin/env bash
# Builds the node and the benchmark in release mode, then runs the job-queue
# benchmark on a local 3-node cluster (16 producers, 16 workers, a no-op
# kind claimed over REST). Arguments go to `orrery-bench jobs`, e.g.
# `scripts/bench-jobs.sh --duration 5`. JSON lines go to stdout:
#   scripts/bench-jobs.sh | tee bench-jobs.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p orrery -p orrery-bench >&2
exec "${CARGO_TARGET_DIR:-target}/release/orrery-bench" jobs "$@"
