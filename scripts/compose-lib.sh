# Sourced by the scripts that drive cluster/docker-compose.yml: picks the
# Compose command and waits for a project's containers to be healthy.
#
# Compose v2 (`docker compose`) is used when present, else v1.29
# (`docker-compose`, what Debian 12 packages). v1 has no `up --wait`, so
# compose_wait polls what `up -d --wait` waits for: every one-shot service
# exited 0 and every service with a health check healthy.

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    COMPOSE=(docker-compose)
fi

# compose_wait TIMEOUT_S ARGS...: ARGS select the project (-p, -f).
compose_wait() {
    local timeout=$1 deadline id state health code pending
    shift
    deadline=$(($(date +%s) + timeout))
    while :; do
        pending=()
        for id in $("${COMPOSE[@]}" "$@" ps -a -q); do
            read -r state health code < <(docker inspect -f \
                '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")
            case "$state/$health" in
                exited/none)
                    if [ "$code" != 0 ]; then
                        echo "container $id exited with $code" >&2
                        docker logs --tail 20 "$id" >&2
                        return 1
                    fi ;;
                running/healthy | running/none) ;;
                *) pending+=("$(docker inspect -f '{{.Name}}' "$id"):$state/$health") ;;
            esac
        done
        [ "${#pending[@]}" -eq 0 ] && return 0
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "not healthy after ${timeout}s: ${pending[*]}" >&2
            return 1
        fi
        sleep 2
    done
}
