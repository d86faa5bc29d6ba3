#!/usr/bin/env bash
# Prints, as shell `export` lines, what a client on this host needs to talk
# to the Compose cluster of cluster/docker-compose.yml:
#
#   eval "$(cluster/compose-env.sh)"            # or: cluster/compose-env.sh -p NAME
#   orreryctl status
#   curl --cacert "$ORRERY_CA_CERT" -H "Authorization: Bearer $ORRERY_TOKEN" \
#        "https://${ORRERY_ENDPOINTS%%,*}/v1/kv/greeting"
#
# ORRERY_ENDPOINTS: the published client addresses of n1..n3 (what
# `compose port` reports, so ORRERY_N1_PORT.. overrides are followed);
# ORRERY_CA_CERT: the cluster CA, copied out of the certs volume to
# ${XDG_CACHE_HOME:-~/.cache}/orrery-compose/PROJECT/ca.crt; ORRERY_TOKEN: the
# root token from n1's root token file. The project is -p NAME, else
# COMPOSE_PROJECT_NAME, else Compose's default (the compose file's
# directory name, `cluster`). `docker cp` reads the files, so it works
# while a node is stopped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

project="${COMPOSE_PROJECT_NAME:-}"
file="${COMPOSE_FILE:-$here/docker-compose.yml}"
while [ $# -gt 0 ]; do
    case "$1" in
        -p | --project-name) project="$2"; shift 2 ;;
        -f | --file) file="$2"; shift 2 ;;
        *) echo "usage: $0 [-p PROJECT] [-f COMPOSE_FILE]" >&2; exit 2 ;;
    esac
done
# COMPOSE_FILE may list several files separated by `:` (as Compose reads
# it): every one is passed, and the first names the project.
IFS=: read -r -a files <<<"$file"
# Compose's own default project name: the (first) compose file's
# directory, lowercased, without characters a project name cannot hold.
if [ -z "$project" ]; then
    project=$(basename "$(cd "$(dirname "${files[0]}")" && pwd)" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9_-')
fi
fargs=()
for f in "${files[@]}"; do fargs+=(-f "$f"); done

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi
dc() { "${compose[@]}" -p "$project" "${fargs[@]}" "$@"; }

container() {
    local id
    id=$(dc ps -q "$1" 2>/dev/null | head -1)
    [ -n "$id" ] || { echo "no container for service $1 in project $project" >&2; exit 1; }
    echo "$id"
}
# `docker cp CONTAINER:FILE -` writes a tar stream; this prints the file.
read_file() { docker cp "$1:$2" - | tar -xO; }

endpoints=()
for n in n1 n2 n3; do
    addr=$(dc port "$n" 7001 2>/dev/null || true)
    [ -n "$addr" ] && endpoints+=("${addr/0.0.0.0/127.0.0.1}")
done
[ "${#endpoints[@]}" -gt 0 ] || { echo "project $project has no published node ports (is it up?)" >&2; exit 1; }

n1=$(container n1)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/orrery-compose/$project"
mkdir -p "$cache"
read_file "$n1" /var/lib/orrery/certs/n1/ca.crt >"$cache/ca.crt.part"
mv "$cache/ca.crt.part" "$cache/ca.crt"
# A cluster restored from a backup (scripts/compose-restore.sh) writes no
# root token: it keeps the backed-up cluster's users and tokens.
token=$(read_file "$n1" /var/lib/orrery/data/root.token 2>/dev/null | tr -d '[:space:]' || true)
if [ -z "$token" ] && [ -e "$cache/restored" ]; then
    echo "# restored cluster: set ORRERY_TOKEN to a token of the backed-up cluster" >&2
else
    [ -n "$token" ] || { echo "n1 has no root token yet (the cluster is still forming?)" >&2; exit 1; }
fi

# ORRERY_ENDPOINT (one node) would win over ORRERY_ENDPOINTS in orreryctl.
echo "unset ORRERY_ENDPOINT"
echo "export ORRERY_ENDPOINTS=$(IFS=,; echo "${endpoints[*]}")"
printf 'export ORRERY_CA_CERT=%q\n' "$cache/ca.crt"
[ -z "$token" ] || printf 'export ORRERY_TOKEN=%q\n' "$token"
