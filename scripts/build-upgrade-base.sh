#!/usr/bin/env bash
# Builds the `orrery` binary of the release the upgrade test starts from
# (the commit in tests/upgrade-base), once, and caches it:
#
#   ${ORRERY_UPGRADE_CACHE:-$HOME/.cache/orrery-upgrade}/<commit>/orrery
#
# A cached binary is reused; delete it to rebuild. The build uses a target
# directory of its own under the cache (ORRERY_UPGRADE_TARGET_DIR overrides),
# so it never disturbs the current build; that target directory (several
# GB) is deleted once the binary is cached, unless
# ORRERY_UPGRADE_KEEP_TARGET=1 keeps it for a faster rebuild at a later
# base commit (a full disk failed a CI run). Prints the binary's path on
# its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

commit="$(grep -v '^#' tests/upgrade-base | tr -d '[:space:]')"
case "$commit" in
    [0-9a-f][0-9a-f][0-9a-f][0-9a-f]*) ;;
    *) echo "tests/upgrade-base holds no commit hash" >&2; exit 1 ;;
esac
cache="${ORRERY_UPGRADE_CACHE:-$HOME/.cache/orrery-upgrade}"
out="$cache/$commit/orrery"
target="${ORRERY_UPGRADE_TARGET_DIR:-$cache/target}"
drop_target() {
    if [ "${ORRERY_UPGRADE_KEEP_TARGET:-0}" != 1 ] && [ -d "$target" ]; then
        rm -rf "$target"
    fi
}
if [ -x "$out" ]; then
    drop_target
    echo "upgrade base $commit: cached"
    echo "$out"
    exit 0
fi

# A shallow CI checkout may lack the commit.
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "fetching $commit"
    git fetch --quiet --depth 1 origin "$commit"
fi

src="$(mktemp -d "${TMPDIR:-/tmp}/orrery-upgrade-base.XXXXXX")"
trap 'rm -rf "$src"' EXIT
git -C "$repo" archive "$commit" | tar -x -C "$src"

echo "building orrery at $commit in $src (target dir $target)"
start=$(date +%s)
# No debug info: the binary is stripped anyway, and it halves the build.
(cd "$src" && CARGO_TARGET_DIR="$target" CARGO_PROFILE_DEV_DEBUG=0 cargo build --locked -p orrery --bin orrery)
echo "built in $(( $(date +%s) - start )) s"

mkdir -p "$cache/$commit"
cp "$target/debug/orrery" "$out.tmp"
# Debug info is most of a debug binary (~400 MB): the cache keeps ~10x less.
strip "$out.tmp" 2>/dev/null || true
mv "$out.tmp" "$out"
drop_target
echo "$out"
