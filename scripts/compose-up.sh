#!/usr/bin/env bash
# `up -d --wait` for cluster/docker-compose.yml with either Compose: v2
# (`docker compose`) waits itself; with v1.29 (`docker-compose`, which has
# no --wait) this polls until the `certs` service exited 0 and every node is
# healthy. Arguments go to Compose before `up` (e.g. -p NAME).
#
#   scripts/compose-up.sh [-p NAME]   then   eval "$(cluster/compose-env.sh [-p NAME])"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compose-lib.sh

# COMPOSE_FILE may list several files separated by `:` (as Compose reads
# it), e.g. the base file and an override (docs/pipelines.md).
args=()
IFS=: read -r -a files <<<"${COMPOSE_FILE:-cluster/docker-compose.yml}"
for f in "${files[@]}"; do args+=(-f "$f"); done
args+=("$@")
if [ "${COMPOSE[0]} ${COMPOSE[1]:-}" = "docker compose" ]; then
    exec "${COMPOSE[@]}" "${args[@]}" up -d --wait
fi
"${COMPOSE[@]}" "${args[@]}" up -d
compose_wait "${ORRERY_COMPOSE_WAIT_S:-180}" "${args[@]}"
echo "cluster healthy"
