#!/usr/bin/env bash
# Tests the JavaScript client (clients/js) against a real secure 3-node
# cluster started here on free ports, with TLS (the cluster CA) and the
# root token, and removed afterwards.
#
#   scripts/test-js-client.sh [test files...]   (default: all of clients/js)
#
# Environment: ORRERY_BIN (a directory with orrery and orreryctl; default
# target/debug), ORRERY_KEEP_CLUSTER=1 to keep the cluster directory (logs)
# after a failure. Needs Node 20+ and curl; no npm packages.
#
# Node reads NODE_EXTRA_CA_CERTS only when it starts, so the CA is created
# first and the test runner is started with it.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v node >/dev/null || { echo "node (20 or newer) is required" >&2; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || { echo "node 20 or newer is required (found $(node --version))" >&2; exit 1; }

command -v curl >/dev/null || { echo "curl is required (scripts/cluster.sh uses it)" >&2; exit 1; }

export ORRERY_BIN="${ORRERY_BIN:-target/debug}"
[ -d "$ORRERY_BIN" ] || { echo "ORRERY_BIN=$ORRERY_BIN is not a directory (cargo build -p orrery, or set ORRERY_BIN)" >&2; exit 1; }
ORRERY_BIN="$(cd "$ORRERY_BIN" && pwd)"
for b in orrery orreryctl; do
    [ -x "$ORRERY_BIN/$b" ] || { echo "no $b in $ORRERY_BIN (cargo build -p orrery, or set ORRERY_BIN)" >&2; exit 1; }
done

# A port base whose client (B+1..B+3) and peer (B+101..B+103) ports are free.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
base=""
for _ in $(seq 1 50); do
    # Below the kernel's ephemeral range (32768-60999): no outgoing
    # connection can take a port between this check and the bind.
    b=$((20000 + (RANDOM % 125) * 100))
    free=1
    for p in $((b + 1)) $((b + 2)) $((b + 3)) $((b + 101)) $((b + 102)) $((b + 103)); do
        if in_use "$p"; then free=0; break; fi
    done
    if [ "$free" = 1 ]; then base="$b"; break; fi
done
[ -n "$base" ] || { echo "found no free port range" >&2; exit 1; }
export ORRERY_PORT_BASE="$base"

dir="$(mktemp -d "${TMPDIR:-/tmp}/orrery-js-client.XXXXXX")"
# command jobs run as `nobody` when the nodes run as root; it must reach
# its scratch directory under the data directory.
chmod 755 "$dir"
export ORRERY_CLUSTER_DIR="$dir"
# The log-stream test runs a `command` job.
export ORRERY_ALLOW_COMMAND_JOBS=true ORRERY_COMMAND_USER=nobody

status=1
cleanup() {
    if [ "$status" != 0 ]; then
        for log in "$dir"/n*.log; do
            [ -f "$log" ] && { echo "--- last lines of $log"; tail -15 "$log"; }
        done >&2
    fi
    if [ "$status" != 0 ] && [ "${ORRERY_KEEP_CLUSTER:-}" = 1 ]; then
        scripts/cluster.sh down >/dev/null 2>&1 || true
        echo "kept $dir" >&2
    else
        scripts/cluster.sh clean >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

"$ORRERY_BIN/orreryctl" certs create-ca --certs-dir "$dir/ca" >/dev/null
if ! scripts/cluster.sh up 3 >"$dir/up.log" 2>&1; then
    cat "$dir/up.log" >&2
    exit 1
fi

export NODE_EXTRA_CA_CERTS="$dir/ca/ca.crt"
export ORRERY_ENDPOINTS="https://127.0.0.1:$((base + 1)),https://127.0.0.1:$((base + 2)),https://127.0.0.1:$((base + 3))"
ORRERY_TOKEN="$(cat "$dir/root.token")"
export ORRERY_TOKEN
# One test file at a time: one of them stops nodes to provoke real 503s.
set +e
[ $# -gt 0 ] || set -- clients/js
node --test --test-concurrency=1 "$@"
status=$?
set -e
exit "$status"
