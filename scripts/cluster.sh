#!/usr/bin/env bash
# A local Orrery cluster on this machine, with embedded defaults.
#
#   scripts/cluster.sh up [N]   start N nodes (default 3, at most 9) and form a cluster
#   scripts/cluster.sh status   cluster status (orreryctl status)
#   scripts/cluster.sh down     stop the nodes (SIGTERM, then SIGKILL after 5 s)
#   scripts/cluster.sh clean    down, then delete all data and logs
#
# Node i listens on 127.0.0.1:1700i (REST + gRPC) and 127.0.0.1:1710i (peers).
# Data, logs (n<i>.log) and pid files (n<i>.pid) go to $ORRERY_CLUSTER_DIR
# (default .orrery-cluster/ in the repository root).
# With N=3 the nodes start from cluster/node<i>.toml; otherwise from flags.
#
# Environment:
#   ORRERY_BIN           prebuilt binaries: a directory holding `orrery` and
#                        `orreryctl`, or the path of `orrery` (orreryctl next
#                        to it). Unset: `cargo build -p orrery` (debug).
#   ORRERY_CLUSTER_DIR   where data, logs and pid files go.
#   ORRERY_SHARDS        shard count for `cluster init` (default 8).
#   ORRERY_PORT_BASE     node i listens on BASE+i (client) and BASE+100+i
#                        (peers); default 17000. Tests of the client
#                        libraries start their clusters on ports of their own.
#
# `up` is safe to repeat: running nodes are left alone, stopped ones are
# restarted on their data, the cluster is initialised only if node 1 is not,
# and nodes that are not members yet are added.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${ORRERY_CLUSTER_DIR:-.orrery-cluster}"
cmd="${1:-up}"

base="${ORRERY_PORT_BASE:-17000}"
client_addr() { echo "127.0.0.1:$((base + $1))"; }
peer_addr() { echo "127.0.0.1:$((base + 100 + $1))"; }

bins() {
    if [ -n "${ORRERY_BIN:-}" ]; then
        if [ -d "$ORRERY_BIN" ]; then
            orrery="$ORRERY_BIN/orrery"
        else
            orrery="$ORRERY_BIN"
        fi
        ctl="$(dirname "$orrery")/orreryctl"
    else
        cargo build --quiet -p orrery
        orrery="${CARGO_TARGET_DIR:-target}/debug/orrery"
        ctl="${CARGO_TARGET_DIR:-target}/debug/orreryctl"
    fi
    for b in "$orrery" "$ctl"; do
        [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 1; }
    done
}

# Whether node $1's pid file names a live process (a zombie left by kill -9
# does not count).
running() {
    local pidfile="$dir/n$1.pid" stat
    [ -f "$pidfile" ] || return 1
    stat="$(ps -o stat= -p "$(cat "$pidfile")" 2>/dev/null)" || return 1
    [ -n "$stat" ] && [[ "$stat" != Z* ]]
}

# The cluster's CA (created once) and node $1's certificate, for the
# loopback addresses the nodes listen on. ca.key stays in $dir/ca.
certs() {
    local i="$1"
    [ -f "$dir/ca/ca.crt" ] || "$ctl" certs create-ca --certs-dir "$dir/ca" >/dev/null
    [ -f "$dir/certs/n$i/node.crt" ] ||
        "$ctl" certs create-node --certs-dir "$dir/ca" --out "$dir/certs/n$i" 127.0.0.1 localhost >/dev/null
}

# orreryctl and curl trust the cluster CA and send the root token (once
# `cluster init` has printed it into $dir/root.token).
export ORRERY_CA_CERT="$dir/ca/ca.crt"
token() { cat "$dir/root.token" 2>/dev/null || true; }

start_node() {
    local i="$1" n="$2"
    local args
    certs "$i"
    if [ "$n" = 3 ] && [ "$base" = 17000 ]; then
        # --data-dir overrides the file so that ORRERY_CLUSTER_DIR is honoured.
        args=(serve --config "cluster/node$i.toml" --data-dir "$dir/n$i")
    else
        args=(serve --id "$i" --listen "$(client_addr "$i")"
            --peer-listen "$(peer_addr "$i")" --data-dir "$dir/n$i")
    fi
    args+=(--certs-dir "$dir/certs/n$i")
    nohup "$orrery" "${args[@]}" >>"$dir/n$i.log" 2>&1 </dev/null &
    echo $! >"$dir/n$i.pid"
    for _ in $(seq 1 100); do
        if curl -sf --cacert "$ORRERY_CA_CERT" "https://$(client_addr "$i")/healthz" >/dev/null 2>&1; then
            return 0
        fi
        if ! running "$i"; then
            echo "node $i exited; last lines of $dir/n$i.log:" >&2
            tail -5 "$dir/n$i.log" >&2
            rm -f "$dir/n$i.pid"
            return 1
        fi
        sleep 0.1
    done
    echo "node $i did not answer /healthz within 10 s; see $dir/n$i.log" >&2
    return 1
}

# Whether node 1 belongs to an initialised cluster.
initialised() {
    local code
    [ -s "$dir/root.token" ] || return 1
    code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ORRERY_CA_CERT" \
        -H "Authorization: Bearer $(token)" "https://$(client_addr 1)/v1/cluster")"
    [ "$code" = 200 ]
}

# Whether node $1 is a member. (Output captured first: grep -q in a pipe
# would close it early, and orreryctl fails on a broken pipe.)
is_member() {
    local members
    members="$(ORRERY_TOKEN="$(token)" "$ctl" --endpoint "$(client_addr 1)" --json members list)" || return 1
    grep -q "\"id\": $1," <<<"$members"
}

case "$cmd" in
up)
    n="${2:-3}"
    if ! [[ "$n" =~ ^[1-9]$ ]]; then
        echo "usage: scripts/cluster.sh up [1-9]" >&2
        exit 2
    fi
    bins
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do
        if running "$i"; then
            echo "node $i already running (pid $(cat "$dir/n$i.pid"))"
        else
            start_node "$i" "$n"
            echo "node $i started (pid $(cat "$dir/n$i.pid")): https://$(client_addr "$i")"
        fi
    done
    if initialised; then
        echo "cluster already initialised"
    else
        init="$("$ctl" --endpoint "$(client_addr 1)" --json cluster init --shards "${ORRERY_SHARDS:-8}")"
        # The root token is printed once; keep it where only we can read it.
        (umask 077 && sed -n 's/.*"root_token": "\(orr_[^"]*\)".*/\1/p' <<<"$init" >"$dir/root.token")
        echo "cluster initialised; root token saved in $dir/root.token"
    fi
    export ORRERY_TOKEN="$(token)"
    for i in $(seq 2 "$n"); do
        if ! is_member "$i"; then
            "$ctl" --endpoint "$(client_addr 1)" members add "$i" \
                --addr "$(client_addr "$i")" --peer-addr "$(peer_addr "$i")"
        fi
    done
    cat <<EOF

Orrery is up: $n nodes, REST and gRPC on 127.0.0.1:$((base + 1))..$((base + n)).
TLS with the cluster CA, and a root token (an admin: keep it safe):
  export ORRERY_CA_CERT=$dir/ca/ca.crt
  export ORRERY_TOKEN=\$(cat $dir/root.token)
  curl --cacert \$ORRERY_CA_CERT -H "Authorization: Bearer \$ORRERY_TOKEN" -XPUT https://localhost:$((base + 1))/v1/kv/hello -d world
  curl --cacert \$ORRERY_CA_CERT -H "Authorization: Bearer \$ORRERY_TOKEN" https://$(client_addr "$n" | sed 's/127.0.0.1/localhost/')/v1/kv/hello
  $ctl --endpoint $(client_addr 1) status
Make tokens with less power: $ctl auth tokens create --name app --role writer
Logs: $dir/n*.log   Stop: scripts/cluster.sh down   Delete data: scripts/cluster.sh clean
EOF
    ;;
status)
    bins
    ORRERY_TOKEN="${ORRERY_TOKEN:-$(token)}" "$ctl" --endpoint "${ORRERY_ENDPOINT:-$(client_addr 1)}" status
    ;;
down)
    stopped=0
    for pidfile in "$dir"/n*.pid; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -KILL "$pid" 2>/dev/null; then
                echo "$(basename "$pidfile" .pid) (pid $pid) did not stop in 5 s; killed"
            fi
            stopped=$((stopped + 1))
        fi
        rm -f "$pidfile"
    done
    echo "stopped $stopped node(s)"
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
