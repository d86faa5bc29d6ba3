#!/usr/bin/env bash
# Restores a backup (`orreryctl backup create --out FILE`) into a new
# Compose cluster: creates the project's containers and volumes without
# starting them, runs `orrery restore` for n1, n2 and n3 in the image,
# each into its own (empty) data volume, then starts the project and waits
# until it is healthy. The restored cluster has the backup's content, its
# users and tokens (use the backed-up cluster's token: a restored cluster
# writes no root.token), a new cluster id and the new project's
# certificates.
#
#   scripts/compose-restore.sh --from FILE -p PROJECT [-f COMPOSE_FILE]
#
# The project must not exist yet (a restore never writes into a running
# cluster). Published ports come from ORRERY_N1_PORT..ORRERY_N3_PORT as
# for `up` (defaults 27001..27003: choose others while the source runs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/compose-lib.sh"

from="" project="${COMPOSE_PROJECT_NAME:-}" file="${COMPOSE_FILE:-$here/../cluster/docker-compose.yml}"
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from="$2"; shift 2 ;;
        -p | --project-name) project="$2"; shift 2 ;;
        -f | --file) file="$2"; shift 2 ;;
        *) echo "usage: $0 --from FILE -p PROJECT [-f COMPOSE_FILE]" >&2; exit 2 ;;
    esac
done
[ -n "$from" ] && [ -f "$from" ] || { echo "--from FILE: a backup file is required" >&2; exit 2; }
[ -n "$project" ] || { echo "-p PROJECT is required" >&2; exit 2; }
dc() { "${COMPOSE[@]}" -p "$project" -f "$file" "$@"; }

if [ -n "$(dc ps -a -q 2>/dev/null)" ]; then
    echo "project $project exists already: restore into a new project" >&2
    exit 1
fi
image="${ORRERY_IMAGE:-orrery:local}"
# The image runs as its own user, who must be able to read the file: a
# world-readable copy in a directory of its own is what gets mounted.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
install -m 644 "$from" "$stage/backup"

# The certificates first (a one-shot service the nodes depend on), then
# the nodes' containers, network and volumes without starting them: the
# volumes get the names and labels Compose gives them. (Compose v1 waits
# for `service_completed_successfully` even under --no-start.)
dc up -d certs
compose_wait 120 -p "$project" -f "$file"
dc up --no-start n1 n2 n3
for i in 1 2 3; do
    volume="$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/var/lib/orrery/data"}}{{.Name}}{{end}}{{end}}' \
        "$(dc ps -a -q "n$i")")"
    [ -n "$volume" ] || { echo "n$i has no data volume" >&2; exit 1; }
    echo "== orrery restore --id $i into volume $volume"
    # The backup is mounted read-only; the image's user must be able to read it.
    docker run --rm --network none \
        -v "$volume:/var/lib/orrery/data" -v "$stage:/backup:ro" "$image" \
        restore --from /backup/backup --data-dir /var/lib/orrery/data --id "$i" \
        --members 1@n1,2@n2,3@n3 --client-port 7001 --peer-port 7101
done
# cluster/compose-env.sh then knows not to wait for a root token.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/orrery-compose/$project"
mkdir -p "$cache" && touch "$cache/restored"
dc up -d
compose_wait 180 -p "$project" -f "$file"
echo "restored cluster $project is healthy"
