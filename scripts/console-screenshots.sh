#!/usr/bin/env bash
# Regenerates docs/console/*.png (shown in docs/console.md): the console's
# browser tests, taking a screenshot of each page as they go.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/test-console.sh --screenshots "$@"
