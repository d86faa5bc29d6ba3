#!/usr/bin/env bash
# Builds the node and the benchmark in release mode, then measures scale-out:
# a loaded 3-node cluster (8 PUT clients), 2 nodes added, the time until
# rebalancing gives every node its share of replicas, what the new nodes
# received, and PUT latency before, during and after the moves. Arguments
# go to `orrery-bench scaleout`, e.g. `scripts/bench-scaleout.sh --keys 50000`.
# JSON lines go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p orrery -p orrery-bench >&2
exec "${CARGO_TARGET_DIR:-target}/release/orrery-bench" scaleout "$@"
