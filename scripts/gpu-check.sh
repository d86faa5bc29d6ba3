#!/usr/bin/env bash
# GPU checks on a real NVIDIA GPU: the #[ignore]d tests of tests/gpu.rs
# (inventory against nvidia-smi, CUDA_VISIBLE_DEVICES, NVML run metrics,
# exclusive GPUs, waiting reasons, cancel of a running GPU job). They need
# an NVIDIA driver and python3 with a CUDA build of PyTorch; CI has no GPU.
#
#   scripts/gpu-check.sh            build and run here (cargo + GPU)
#   scripts/gpu-check.sh pack DIR   build here, put stripped binaries in DIR
#   scripts/gpu-check.sh run DIR    run the packed binaries (GPU machine, no cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

pack() {
    local dir=$1
    mkdir -p "$dir"
    cargo build --release --locked -p orrery --bin orrery --bin orreryctl
    local test_bin
    test_bin=$(cargo test --locked --test gpu --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
    [ -n "$test_bin" ] || { echo "error: could not build the gpu test binary" >&2; exit 1; }
    for b in target/release/orrery target/release/orreryctl "$test_bin"; do
        strip -o "$dir/$(basename "$b" | sed 's/^gpu-.*/gpu-tests/')" "$b"
    done
    ls -la "$dir"
}

run() {
    local dir
    dir=$(cd "$1" && pwd)
    nvidia-smi -L
    ORRERY_BIN_DIR=$dir "$dir/gpu-tests" --ignored --nocapture --test-threads 1
}

case "${1:-}" in
    pack) pack "${2:?usage: gpu-check.sh pack DIR}" ;;
    run) run "${2:?usage: gpu-check.sh run DIR}" ;;
    "") cargo test --locked --test gpu -- --ignored --nocapture --test-threads 1 ;;
    *) echo "usage: gpu-check.sh [pack DIR | run DIR]" >&2; exit 2 ;;
esac
