#!/usr/bin/env bash
# Builds the container image `orrery:local` (cluster/Dockerfile) from a
# release build made here on the host.
#
# Only the two binaries and the Dockerfile go into the build context (a
# staging directory), never the repository or target/: the context stays a
# few tens of MB and the image build takes seconds.
#
# The Dockerfile starts FROM debian:bookworm-slim. Where no registry can be
# reached (this project's build machines), the script makes that base image
# itself: `debootstrap --variant=minbase bookworm` from Debian's package
# mirror, then `docker import`. The root file system tarball is cached in
# ${ORRERY_IMAGE_CACHE:-~/.cache/orrery-image}, so a machine whose engine
# lost its images re-imports it in seconds instead of bootstrapping again.
#
# Environment: ORRERY_IMAGE (default orrery:local), DEBIAN_MIRROR (default
# http://deb.debian.org/debian), ORRERY_SKIP_CARGO=1 to use the binaries
# already in target/release, ORRERY_IMAGE_BUILD=ID to label the image
# with a build id (the rolling-restart test rebuilds the image from the
# same binaries and needs a new image, not the cached one).
#
# ORRERY_IMAGE_PROFILE=debug builds the image from the debug binaries
# instead (what `cargo test` builds anyway): scripts/test.sh uses it so that
# CI does not pay for a second, release build of the whole workspace. Users
# and benchmarks get the release image (the default).
#
# `scripts/docker-image.sh --base-only` makes sure the base image exists
# and stops there.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${ORRERY_IMAGE:-orrery:local}"
base="debian:bookworm-slim"
cache="${ORRERY_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orrery-image}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
target_dir="${CARGO_TARGET_DIR:-target}"
profile="${ORRERY_IMAGE_PROFILE:-release}"
case "$profile" in
release) cargo_profile=(--release); bin_dir="$target_dir/release" ;;
debug) cargo_profile=(); bin_dir="$target_dir/debug" ;;
*) echo "ORRERY_IMAGE_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
sudo_=""
[ "$(id -u)" -ne 0 ] && sudo_="sudo"

# Seconds since $1 (an epoch second), for the timings printed at the end.
since() { echo $(($(date +%s) - $1)); }

base_only=0
[ "${1:-}" = --base-only ] && base_only=1

t0=$(date +%s)
if [ "${ORRERY_SKIP_CARGO:-0}" != 1 ] && [ "$base_only" = 0 ]; then
    echo "== cargo build ($profile: orrery, orreryctl)"
    cargo build "${cargo_profile[@]}" --locked -p orrery --bins
fi
t_build=$(since "$t0")
if [ "$base_only" = 0 ]; then
    for b in orrery orreryctl; do
        [ -x "$bin_dir/$b" ] || { echo "missing $bin_dir/$b" >&2; exit 1; }
    done
fi

t1=$(date +%s)
if ! docker image inspect "$base" >/dev/null 2>&1; then
    # A registry, when there is one, is the quickest and the canonical base.
    if docker pull "$base" >/dev/null 2>&1; then
        echo "pulled $base"
    else
        tarball="$cache/bookworm-minbase.tar"
        if [ ! -s "$tarball" ]; then
            command -v debootstrap >/dev/null 2>&1 || {
                echo "$base is missing, no registry answers, and debootstrap is not installed" \
                    "(apt-get install debootstrap)" >&2
                exit 1
            }
            echo "== debootstrap --variant=minbase bookworm ($mirror)"
            mkdir -p "$cache"
            rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
            # debootstrap needs root (chroot, device nodes); the rootfs is
            # removed again once it is in the tarball.
            trap '$sudo_ rm -rf "$rootfs"' EXIT
            $sudo_ debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
                tail -20 "$cache/debootstrap.log" >&2
                exit 1
            }
            # What slim leaves out and an image does not need: apt lists,
            # caches, docs and man pages.
            $sudo_ rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
                "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
                "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
            $sudo_ tar -C "$rootfs" --numeric-owner -cf "$tarball.part" .
            mv "$tarball.part" "$tarball"
            $sudo_ rm -rf "$rootfs"
            trap - EXIT
        fi
        echo "== docker import $tarball as $base"
        docker import --change 'CMD ["bash"]' "$tarball" "$base" >/dev/null
    fi
fi
t_base=$(since "$t1")
if [ "$base_only" = 1 ]; then
    echo "$base ready (${t_base}s)"
    exit 0
fi

t2=$(date +%s)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp cluster/Dockerfile "$ctx/Dockerfile"
# The release profile keeps line tables (file:line in panics); compressed,
# they cost a quarter of the space (the node binary: 240 MB -> ~70 MB).
for b in orrery orreryctl; do
    if command -v objcopy >/dev/null 2>&1; then
        objcopy --compress-debug-sections=zlib "$bin_dir/$b" "$ctx/$b"
    else
        cp "$bin_dir/$b" "$ctx/$b"
    fi
done
echo "== docker build -t $image ($(du -sh "$ctx" | cut -f1) context)"
revision=$(git describe --always --dirty 2>/dev/null || echo unknown)
# The output only matters when it fails (the legacy builder also warns
# that it is deprecated; BuildKit is not needed for this file).
docker build -t "$image" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.orrery.build=${ORRERY_IMAGE_BUILD:-}" "$ctx" >"$ctx/build.log" 2>&1 || {
    cat "$ctx/build.log" >&2
    exit 1
}
t_image=$(since "$t2")
echo "built $image: cargo ${t_build}s, base image ${t_base}s, docker build ${t_image}s"
