#!/usr/bin/env bash
# A local Orrery cluster on this machine, with embedded defaults.
#
#   scripts/cluster.sh up [N]   start N nodes (default 3) and form a cluster
#   scripts/cluster.sh status   cluster status (orreryctl status)
#   scripts/cluster.sh down     stop the nodes (SIGTERM, then SIGKILL)
#   scripts/cluster.sh clean    stop and delete all data
#
# Node i listens on 127.0.0.1:1700i (REST + gRPC) and 127.0.0.1:1710i (peers);
# data and logs go to $ORRERY_CLUSTER_DIR (default .orrery-cluster/).
# ORRERY_BIN=/path/to/dir uses prebuilt `orrery` and `orreryctl` binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${ORRERY_CLUSTER_DIR:-.orrery-cluster}"
cmd="${1:-up}"

bins() {
    if [ -n "${ORRERY_BIN:-}" ]; then
        bin="$ORRERY_BIN"
    else
        cargo build --quiet -p orrery
        bin="${CARGO_TARGET_DIR:-target}/debug"
    fi
    orrery="$bin/orrery"
    ctl="$bin/orreryctl"
}

running() {
    local pidfile="$dir/n$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start_node() {
    local i="$1"
    mkdir -p "$dir"
    local args=(serve --id "$i" --listen "127.0.0.1:$((17000 + i))"
        --peer-listen "127.0.0.1:$((17100 + i))" --data-dir "$dir/n$i")
    if [ "$i" -le 3 ] && [ -f "cluster/node$i.toml" ]; then
        args=(serve --config "cluster/node$i.toml" --data-dir "$dir/n$i")
    fi
    nohup "$orrery" "${args[@]}" >>"$dir/n$i.log" 2>&1 &
    echo $! >"$dir/n$i.pid"
    for _ in $(seq 1 100); do
        if curl -sf "http://127.0.0.1:$((17000 + i))/healthz" >/dev/null 2>&1; then
            return 0
        fi
        if ! running "$i"; then
            echo "node $i exited; see $dir/n$i.log" >&2
            tail -5 "$dir/n$i.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "node $i did not become healthy; see $dir/n$i.log" >&2
    return 1
}

case "$cmd" in
up)
    n="${2:-3}"
    if ! [[ "$n" =~ ^[1-9]$ ]]; then
        echo "usage: scripts/cluster.sh up [1-9]" >&2
        exit 2
    fi
    bins
    fresh=1
    for i in $(seq 1 "$n"); do
        if running "$i"; then
            echo "node $i already running (pid $(cat "$dir/n$i.pid"))"
            fresh=0
        else
            [ -d "$dir/n$i" ] && fresh=0
            start_node "$i"
            echo "node $i up: http://127.0.0.1:$((17000 + i))"
        fi
    done
    if [ "$fresh" = 1 ]; then
        "$ctl" --endpoint 127.0.0.1:17001 cluster init
        for i in $(seq 2 "$n"); do
            "$ctl" --endpoint 127.0.0.1:17001 members add "$i" \
                --addr "127.0.0.1:$((17000 + i))" --peer-addr "127.0.0.1:$((17100 + i))"
        done
    fi
    echo
    echo "Orrery is up ($n nodes). Try:"
    echo "  curl -XPUT localhost:17001/v1/kv/hello -d world"
    echo "  curl localhost:17002/v1/kv/hello"
    echo "  $ctl --endpoint 127.0.0.1:17001 status"
    echo "Logs: $dir/n*.log   Stop: scripts/cluster.sh down"
    ;;
status)
    bins
    "$ctl" --endpoint "${ORRERY_ENDPOINT:-127.0.0.1:17001}" status
    ;;
down)
    for pidfile in "$dir"/n*.pid; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    echo "stopped"
    ;;
clean)
    "$0" down
    rm -rf "$dir"
    echo "removed $dir"
    ;;
*)
    echo "usage: scripts/cluster.sh up [N] | status | down | clean" >&2
    exit 2
    ;;
esac
