#!/usr/bin/env bash
# Runs Orrery's whole test suite: formatting, lints, unit and property tests,
# and the integration tests that start real `orrery` processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# Integration tests start 1-4 node clusters each; two at a time keeps a
# 2-core machine from starving Raft heartbeats.
cargo test --workspace --locked -- --test-threads "${ORRERY_TEST_THREADS:-2}"
