#!/usr/bin/env bash
# Fails if the gRPC stubs committed under clients/python/orrery/_proto differ
# from what grpcio-tools (the version pinned in clients/python/pyproject.toml)
# generates from proto/. Fix: `cd clients/python && python stubgen.py`.
#
#   PYTHON   the interpreter with grpcio-tools (default: python3)
set -euo pipefail
cd "$(dirname "$0")/../clients/python"
py="${PYTHON:-python3}"

want="$(sed -n 's/.*"grpcio-tools==\([0-9.]*\)".*/\1/p' pyproject.toml | head -1)"
have="$("$py" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
    echo "check-python-stubs: needs grpcio-tools==$want (found: ${have:-none}); pip install grpcio-tools==$want" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" stubgen.py --out "$tmp" >/dev/null
if ! diff -r -x __pycache__ "$tmp" orrery/_proto; then
    echo "check-python-stubs: the committed stubs differ from proto/; regenerate: cd clients/python && $py stubgen.py" >&2
    exit 1
fi
echo "check-python-stubs: the stubs match proto/"
