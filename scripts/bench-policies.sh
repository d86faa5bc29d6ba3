#!/usr/bin/env bash
# Builds the node and the benchmark in release mode, then runs the policy
# benchmark: the evaluator alone in process (`--evaluator-only` stops
# there), then on a local 3-node cluster a KV PUT with 1 client, sync runs
# of a 20-node graph (no external lookups) with 1 and 16 clients, and
# batch evaluation.
# Arguments go to `orrery-bench policies`, e.g. `--duration 5 --clients 1,16`.
# JSON lines go to stdout, progress to stderr:
#   scripts/bench-policies.sh --duration 5 | tee bench-policies.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p orrery -p orrery-bench --features orrery-bench/zen >&2
exec "${CARGO_TARGET_DIR:-target}/release/orrery-bench" policies "$@"
