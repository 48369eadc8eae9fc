#!/usr/bin/env bash
# Installs everything the service and its tests need, idempotently:
#   - a virtualenv in .venv with the project and its dev extras;
#   - the pinned livekit-server, built once with `go install` and cached outside the checkout.
# Usage: scripts/install_deps.sh [--python-only]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

LIVEKIT_SERVER_VERSION=${LIVEKIT_SERVER_VERSION:-v1.13.5}
cache=${PERSONA_CACHE_DIR:-$HOME/.cache/persona-dispatcher}
mkdir -p "$cache/bin"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
[ "${1:-}" = "--python-only" ] && exit 0

# go install builds from the Go module proxy; the result is cached by version.
install_go_binary() {  # name version module
  local name=$1 version=$2 module=$3 target="$cache/bin/$1-$2"
  if [ ! -x "$target" ]; then
    echo "building $name $version (takes a few minutes, once)" >&2
    local gobin
    gobin=$(mktemp -d)
    GOBIN="$gobin" GOFLAGS=-buildvcs=false go install "$module@$version"
    mv "$gobin"/* "$target.tmp"
    mv "$target.tmp" "$target"
    rm -rf "$gobin"
  fi
  echo "$target"
}
install_go_binary livekit-server "$LIVEKIT_SERVER_VERSION" github.com/livekit/livekit-server/cmd/server >/dev/null
