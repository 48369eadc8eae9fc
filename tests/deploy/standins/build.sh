#!/usr/bin/env bash
# Builds local stand-ins for the upstream images that docker-compose.yml and
# docker-compose.scale.yml name, where no image registry can be reached: a Debian root filesystem
# made with debootstrap, plus Debian packages and the livekit-server and livekit-sip binaries that
# scripts/install_deps.sh builds, each with its upstream image's entrypoint, command, user and
# workdir (see each Dockerfile here), tagged with the upstream names so that the compose files run
# unchanged. They are the test harness's, not the deployment's.
# Cached: the root filesystem as a tarball by suite in the cache folder, each image in the engine
# with a label carrying the hash of its recipe (rebuilt when the recipe or a binary changes).
# Usage: tests/deploy/standins/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cache=${PERSONA_CACHE_DIR:-$HOME/.cache/persona-dispatcher}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base="persona-standin/debian:$suite"
pin() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$root/provisioning/server_config.py"; }
livekit_server_version=${LIVEKIT_SERVER_VERSION:-$(pin LIVEKIT_SERVER_VERSION)}
livekit_sip_version=${LIVEKIT_SIP_VERSION:-$(pin LIVEKIT_SIP_VERSION)}
mkdir -p "$cache/standins" "$cache/log"

# ---- the Debian root filesystem ----------------------------------------------------------------
rootfs="$cache/standins/debian-$suite-rootfs.tar"
if [ ! -f "$rootfs" ]; then
  started=$SECONDS
  work=$(mktemp -d)
  echo "making the Debian $suite root filesystem with debootstrap (once)" >&2
  debootstrap --variant=minbase --include=ca-certificates "$suite" "$work/rootfs" "$mirror" \
    >"$cache/log/debootstrap-$suite.log" 2>&1 || {
    echo "error: debootstrap failed (log: $cache/log/debootstrap-$suite.log)" >&2
    rm -rf "$work"
    exit 1
  }
  cat >"$work/rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
SOURCES
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -cf "$rootfs.tmp" .
  mv "$rootfs.tmp" "$rootfs"
  rm -rf "$work"
  echo "made the root filesystem in $((SECONDS - started)) s" >&2
fi

recipe_label=persona.standin.recipe
current_recipe() { docker image inspect -f "{{index .Config.Labels \"$recipe_label\"}}" "$1" 2>/dev/null || true; }

rootfs_hash=$(sha256sum "$rootfs" | cut -c1-16)
if [ "$(current_recipe "$base")" != "$rootfs_hash" ]; then
  docker import --change "LABEL $recipe_label=$rootfs_hash" --change 'CMD ["bash"]' \
    "$rootfs" "$base" >/dev/null
fi

# ---- the stand-ins ------------------------------------------------------------------------------
# build_standin TAG DOCKERFILE [FILE...]: builds TAG from DOCKERFILE with FILEs in its context,
# unless the image there was built from the same recipe (the Dockerfile, the files, the base).
build_standin() {
  local tag=$1 dockerfile=$2 recipe context started=$SECONDS
  shift 2
  recipe=$(cat "$here/$dockerfile" "$@" <(echo "$rootfs_hash") | sha256sum | cut -c1-16)
  [ "$(current_recipe "$tag")" = "$recipe" ] && return 0
  context=$(mktemp -d)
  cp "$@" "$context/" 2>/dev/null || true
  cp "$here/$dockerfile" "$context/Dockerfile"
  echo "building the stand-in $tag" >&2
  # The host's network for the build: the stand-ins fetch Debian packages the way this machine
  # does (and carry its CA bundle, so that pip inside them does too).
  if ! docker build --network host --label "$recipe_label=$recipe" --build-arg "BASE=$base" \
    -t "$tag" "$context" >"$cache/log/standin-${tag//[\/:]/_}.log" 2>&1; then
    echo "error: the stand-in $tag did not build (log: $cache/log/standin-${tag//[\/:]/_}.log)" >&2
    rm -rf "$context"
    exit 1
  fi
  rm -rf "$context"
  echo "built the stand-in $tag in $((SECONDS - started)) s" >&2
}

bin="$cache/bin"
for b in "livekit-server-$livekit_server_version" "livekit-sip-$livekit_sip_version"; do
  [ -x "$bin/$b" ] || { echo "error: $bin/$b is missing: run scripts/install_deps.sh" >&2; exit 1; }
done
# Copies with fixed names, so that each Dockerfile names its file without a version.
staging="$cache/standins/staging"
mkdir -p "$staging"
cp "$bin/livekit-server-$livekit_server_version" "$staging/livekit-server"
cp "$bin/livekit-sip-$livekit_sip_version" "$staging/livekit-sip"
cp /etc/ssl/certs/ca-certificates.crt "$staging/ca-certificates.crt"

build_standin python:3.11-slim python.Dockerfile "$staging/ca-certificates.crt"
build_standin redis:7-alpine redis.Dockerfile "$here/redis-entrypoint.sh"
build_standin haproxy:2.6 haproxy.Dockerfile "$here/haproxy-entrypoint.sh"
build_standin "livekit/livekit-server:$livekit_server_version" livekit-server.Dockerfile \
  "$staging/livekit-server"
build_standin "livekit/sip:$livekit_sip_version" livekit-sip.Dockerfile "$staging/livekit-sip"
