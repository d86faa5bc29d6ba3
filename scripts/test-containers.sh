#!/usr/bin/env bash
# The container tests: builds the image (scripts/docker-image.sh), brings
# cluster/docker-compose.yml up under a project of its own, waits until it
# is healthy, runs tests/containers.rs against it (kill, partition, pause,
# rolling restart onto a rebuilt image, read-back), and always removes the
# project with its volumes (`down -v`).
#
# Environment: ORRERY_PORT_BASE (published client ports BASE+1..BASE+3;
# default 27100), ORRERY_KEEP_PROJECT=1 leaves the project up for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compose-lib.sh

t0=$(date +%s)
scripts/docker-image.sh
t_image=$(($(date +%s) - t0))

base=${ORRERY_PORT_BASE:-27100}
export COMPOSE_PROJECT_NAME="orrery-ctest-$$"
export COMPOSE_FILE="$PWD/cluster/docker-compose.yml"
export ORRERY_N1_PORT=$((base + 1)) ORRERY_N2_PORT=$((base + 2)) ORRERY_N3_PORT=$((base + 3))
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}"

cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "== container logs (last 40 lines each)" >&2
        "${COMPOSE[@]}" logs --no-color --tail 40 >&2 || true
    fi
    if [ "${ORRERY_KEEP_PROJECT:-0}" = 1 ]; then
        echo "left up: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME COMPOSE_FILE=$COMPOSE_FILE" >&2
    else
        "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
        rm -rf "$XDG_CACHE_HOME/orrery-compose/$COMPOSE_PROJECT_NAME"
        # Images this run left untagged (the one the roll replaced); only
        # ours carry the org.orrery.build label.
        docker image prune -f --filter label=org.orrery.build >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT

t1=$(date +%s)
echo "== ${COMPOSE[*]} up -d (project $COMPOSE_PROJECT_NAME, ports $ORRERY_N1_PORT..$ORRERY_N3_PORT)"
"${COMPOSE[@]}" up -d
compose_wait 180
t_up=$(($(date +%s) - t1))
echo "cluster healthy after ${t_up}s"
eval "$(cluster/compose-env.sh)"
echo "ORRERY_ENDPOINTS=$ORRERY_ENDPOINTS"
# The host's orreryctl reaches the cluster with only those variables.
"${CARGO_TARGET_DIR:-target}/${ORRERY_IMAGE_PROFILE:-release}/orreryctl" members list

t2=$(date +%s)
ORRERY_CONTAINER_TESTS=1 ORRERY_COMPOSE="${COMPOSE[*]}" \
    ORRERY_REBUILD_IMAGE="ORRERY_SKIP_CARGO=1 ORRERY_IMAGE_BUILD=roll-$$ $PWD/scripts/docker-image.sh" \
    cargo test --locked -p orrery --test containers -- --nocapture
t_test=$(($(date +%s) - t2))
echo "container tests: image ${t_image}s, up ${t_up}s, tests ${t_test}s"
