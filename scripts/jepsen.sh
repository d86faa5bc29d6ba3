#!/usr/bin/env bash
# Runs Orrery's fault-injection suite (jepsen/). Needs root, util-linux's
# unshare, iptables and libfaketime (apt-get install iptables faketime); the harness puts
# itself in a private network namespace, so the host's firewall is never
# touched.
#
#   scripts/jepsen.sh ci                 # short profile (~9 min), what CI runs
#   scripts/jepsen.sh full               # long profile for release testing
#   scripts/jepsen.sh test [options...]  # one test, options as orrery-jepsen test
#
# Exits non-zero if any test is invalid (or, for the expected-invalid run,
# if the checker failed to notice the planted anomaly). Results are under
# jepsen/store/ (jepsen/store/latest is the newest).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-ci}"
shift || true

# Debug builds are fast enough for the harness's rates and are what
# `cargo test` already built; ORRERY_JEPSEN_RELEASE=1 uses release builds.
if [ "${ORRERY_JEPSEN_RELEASE:-0}" = 1 ]; then
    cargo build --release --locked -p orrery -p orrery-jepsen >&2
    bin="${CARGO_TARGET_DIR:-target}/release"
else
    cargo build --locked -p orrery -p orrery-jepsen >&2
    bin="${CARGO_TARGET_DIR:-target}/debug"
fi
jepsen="$bin/orrery-jepsen"

failures=()

# run NAME EXPECT args...: EXPECT is "valid" or "invalid".
run() {
    local name="$1" expect="$2"
    shift 2
    echo "== jepsen $name: $*" >&2
    local rc=0
    "$jepsen" test "$@" || rc=$?
    if [ "$expect" = valid ] && [ "$rc" -ne 0 ]; then
        failures+=("$name (exit $rc; expected valid)")
    elif [ "$expect" = invalid ] && [ "$rc" -ne 1 ]; then
        failures+=("$name (exit $rc; expected the checker to report invalid)")
    fi
}

case "$profile" in
    ci)
        common=(--nodes 3 --time-limit 30 --concurrency 8 --rate 60 --seed 42)
        run register-partition valid --workload register --nemesis partition "${common[@]}"
        # Every run above and below is on TLS with tokens; this one checks
        # that --insecure nodes still work (short: a smoke run).
        run register-kill-insecure valid --workload register --nemesis kill --insecure \
            --nodes 3 --time-limit 15 --concurrency 8 --rate 60 --seed 42
        run set-kill valid --workload set --nemesis kill "${common[@]}"
        run register-pause valid --workload register --nemesis pause "${common[@]}"
        # Nodes the membership nemesis adds receive replicas by rebalancing
        # (results.json counts the moves: rebalance_moves) while it also
        # removes leaders: the set and queue workloads must stay valid.
        run set-membership valid --workload set --nemesis membership "${common[@]}"
        run queue-membership valid --workload queue --nemesis membership "${common[@]}"
        # Nodes added under load that stay and must receive replicas by
        # rebalancing, while partitions or kills strike in turn (results.json:
        # rebalance.all_received_replicas; a node left empty 60 s after
        # healing makes the run unknown). ~40 s each.
        run set-rebalance valid --workload set --nemesis rebalance,partition "${common[@]}"
        run register-rebalance valid --workload register --nemesis rebalance,kill \
            --nodes 3 --time-limit 25 --concurrency 8 --rate 60 --seed 42
        run queue-rebalance valid --workload queue --nemesis rebalance,partition \
            --nodes 3 --time-limit 25 --concurrency 8 --rate 60 --seed 42
        run register-all valid --workload register --nemesis all "${common[@]}"
        run queue-kill valid --workload queue --nemesis kill "${common[@]}"
        # Workflows (a -> {b, c} -> d) run by the test's processes as external
        # workers while nodes are killed: order, exactly once, none lost (~45 s).
        run workflow-kill valid --workload workflow --nemesis kill "${common[@]}"
        # Clock faults and kills in turn (clock, kill, …, then heal; ~40 s):
        # nodes restarted with libfaketime must stay under the harness's
        # control, so every stop-clock, kill and heal really stops them (it
        # checks, and fails the run if an orrery of the test outlives it).
        run register-clock-kill valid --workload register --nemesis clock,kill --nemesis-interval 4 \
            --nodes 3 --time-limit 25 --concurrency 8 --rate 60 --seed 42
        # Power cuts (a minority, or every node at once) through the
        # orrery-faultfs mounts under each node's data directory: what a
        # node did not fsync is gone when it restarts (~30 s each).
        run set-power valid --workload set --nemesis power --nemesis-interval 4 \
            --nodes 3 --time-limit 20 --concurrency 8 --rate 60 --seed 42
        run register-power valid --workload register --nemesis power --nemesis-interval 4 \
            --nodes 3 --time-limit 20 --concurrency 8 --rate 60 --seed 42
        # ... and they must bite: with the write-ahead log's fsync turned
        # off (a test-only knob), the same cuts lose acknowledged writes.
        ORRERY_TEST_SKIP_FSYNC=1 run set-power-skip-fsync invalid --workload set --nemesis power \
            --nemesis-interval 4 --nodes 3 --time-limit 20 --concurrency 8 --rate 60 --seed 42
        # The checkers must bite: stale reads under partitions are not
        # linearizable, and the checker has to say so.
        run register-stale-partition invalid --workload register --nemesis partition \
            --read-consistency stale --nodes 3 --time-limit 30 --concurrency 10 --rate 100 --seed 7
        # Leader leases are safe only while they are shorter than the
        # followers' (orrery_raft::lease): one far longer lets a leader cut
        # off in a minority serve stale reads, and the checker must say so.
        ORRERY_TEST_UNSAFE_READ_LEASE=1 ORRERY_READ_LEASE_MS=60000 \
            run register-lease-partition invalid --workload register --nemesis partition \
            --nodes 3 --time-limit 30 --concurrency 10 --rate 100 --seed 7
        ;;
    full)
        for nem in partition kill pause membership clock loss power all rebalance,partition rebalance,kill; do
            for wl in register set queue workflow; do
                run "$wl-$nem" valid --workload "$wl" --nemesis "$nem" --nodes 5 --time-limit 120 --concurrency 10 --rate 80
            done
        done
        run register-stale-partition invalid --workload register --nemesis partition \
            --read-consistency stale --nodes 5 --time-limit 60 --concurrency 10 --rate 100
        ;;
    test)
        exec "$jepsen" test "$@"
        ;;
    *)
        echo "usage: scripts/jepsen.sh ci|full|test [options]" >&2
        exit 2
        ;;
esac

if [ "${#failures[@]}" -gt 0 ]; then
    echo "jepsen: FAILED:" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "jepsen: all $profile tests as expected" >&2
