#!/usr/bin/env bash
# Builds the node and the benchmark in release mode, then offers a 3-node
# cluster PUTs open-loop at 1x, 2x and 4x its measured capacity: offered vs
# served, shed (503 overloaded), p99 of the served, nodes' peak RSS.
# Arguments go to `orrery-bench overload`, e.g. `--factors 1,4,8`.
# JSON lines go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p orrery -p orrery-bench >&2
exec "${CARGO_TARGET_DIR:-target}/release/orrery-bench" overload "$@"
