#!/usr/bin/env bash
# The web console's browser tests (tests/console/): headless Chromium from
# Debian's packages (chromium, chromium-driver), driven by Selenium from
# PyPI, and a Firefox smoke test (firefox-esr, libnss3-tools; Marionette
# via marionette_driver from PyPI), pinned in tests/console/requirements.txt, venv cached under
# ${XDG_CACHE_HOME:-~/.cache}/orrery-venvs/console, against a secure
# 3-node cluster started here on ports of its own and torn down at the end.
#
#   scripts/test-console.sh [--screenshots] [pytest args...]
#
#   --screenshots   also write each page's screenshot to docs/console/*.png
#                   (what docs/console.md shows; scripts/console-screenshots.sh)
#   ORRERY_BIN      the directory holding orrery and orreryctl (default target/debug)
#   ORRERY_PORT_BASE  node i listens on BASE+i (default 20000)
#   PYTHON          the interpreter for the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export ORRERY_BIN="${ORRERY_BIN:-$root/target/debug}"
case "$ORRERY_BIN" in /*) ;; *) ORRERY_BIN="$root/$ORRERY_BIN" ;; esac
for b in orrery orreryctl; do
    [ -x "$ORRERY_BIN/$b" ] || { echo "test-console: no $ORRERY_BIN/$b (cargo build -p orrery, or set ORRERY_BIN)" >&2; exit 1; }
done
for b in chromium chromedriver; do
    command -v "$b" >/dev/null || { echo "test-console: no $b (apt-get install chromium chromium-driver)" >&2; exit 1; }
done

# Firefox (tests/console/test_firefox.py, over Marionette) runs when
# Debian's firefox-esr and certutil are here; otherwise its tests skip.
if ! command -v firefox-esr >/dev/null || ! command -v certutil >/dev/null; then
    echo "test-console: *** SKIPPING the Firefox tests: no firefox-esr or certutil (apt-get install firefox-esr libnss3-tools) ***" >&2
fi

if [ "${1:-}" = --screenshots ]; then
    shift
    export ORRERY_CONSOLE_SCREENSHOTS="$root/docs/console"
fi

venv="${XDG_CACHE_HOME:-$HOME/.cache}/orrery-venvs/console"
if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    "${PYTHON:-python3}" -m venv "$venv" || {
        echo "test-console: cannot make a venv (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/console/requirements.txt

export ORRERY_PORT_BASE="${ORRERY_PORT_BASE:-20000}"
export ORRERY_CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/orrery-console.XXXXXX")"
# Searchable (not readable) by others: command jobs of a root node run as
# nobody in a scratch dir under the nodes' data dirs.
chmod 711 "$ORRERY_CLUSTER_DIR"
cleanup() {
    scripts/cluster.sh down >/dev/null || true
    rm -rf "$ORRERY_CLUSTER_DIR"
}
trap cleanup EXIT
# The nodes run command jobs (the live-log test prints lines with sleeps);
# a node running as root runs them as nobody.
export ORRERY_ALLOW_COMMAND_JOBS=true ORRERY_WORKERS=2
[ "$(id -u)" -ne 0 ] || export ORRERY_COMMAND_USER=nobody
scripts/cluster.sh up >"$ORRERY_CLUSTER_DIR/up.log" 2>&1 || {
    cat "$ORRERY_CLUSTER_DIR/up.log" >&2
    tail -n 20 "$ORRERY_CLUSTER_DIR"/n*.log >&2
    exit 1
}
status=0
"$venv/bin/python" -m pytest -p no:cacheprovider -q --rootdir tests/console tests/console "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "test-console: failed; the nodes' last log lines:" >&2
    tail -n 15 "$ORRERY_CLUSTER_DIR"/n*.log >&2
fi
exit "$status"
