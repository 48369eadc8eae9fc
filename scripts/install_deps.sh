#!/usr/bin/env bash
# Installs everything the service and its tests need, idempotently:
#   - a virtualenv in .venv with the project and its dev extras;
#   - the pinned livekit-server, built once with `go install` and cached outside the checkout;
#   - for SIP calls: Debian's redis-server, sipp (sip-tester) and the cgo libraries livekit-sip
#     links (apt-get, as root, only when one is missing), and the pinned livekit-sip, cached too.
# Usage: scripts/install_deps.sh [--python-only | --no-sip]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# The pins live in config/server_config.py; the environment may override them.
pin() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" config/server_config.py; }
LIVEKIT_SERVER_VERSION=${LIVEKIT_SERVER_VERSION:-$(pin LIVEKIT_SERVER_VERSION)}
LIVEKIT_SIP_VERSION=${LIVEKIT_SIP_VERSION:-$(pin LIVEKIT_SIP_VERSION)}
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
install_go_binary() {  # name version module [env...]
  local name=$1 version=$2 module=$3 target="$cache/bin/$1-$2"
  shift 3
  if [ ! -x "$target" ]; then
    echo "building $name $version (takes a few minutes, once)" >&2
    local gobin
    gobin=$(mktemp -d)
    if ! env "$@" GOBIN="$gobin" GOFLAGS=-buildvcs=false go install "$module@$version"; then
      echo "could not build $name $version with go install; an executable placed at $target" \
        "is used as is" >&2
      rm -rf "$gobin"
      return 1
    fi
    mv "$gobin"/* "$target.tmp"
    mv "$target.tmp" "$target"
    rm -rf "$gobin"
  fi
  echo "$target"
}
install_go_binary livekit-server "$LIVEKIT_SERVER_VERSION" github.com/livekit/livekit-server/cmd/server \
  >/dev/null || exit 1

[ "${1:-}" = "--no-sip" ] && exit 0

# ---- SIP: Redis, sipp, livekit-sip ------------------------------------------------------------
# Debian packages: redis-server (livekit-server's SIP API and livekit-sip share it), sip-tester
# (sipp, the SIP client of the e2e tests) and what livekit-sip's cgo audio code links against.
sip_packages=(redis-server sip-tester pkg-config libopus-dev libopusfile-dev libsoxr-dev)
missing=()
for p in "${sip_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run this script as root)" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The Debian package starts a system-wide redis on 6379; tests start their own on a free port.

# Only the e2e tests (`scripts/test.sh -m e2e`) need livekit-sip, so a failed build is a warning:
# the Go module proxy reachable here refuses github.com/livekit/sip and its media-sdk (403).
if ! install_go_binary livekit-sip "$LIVEKIT_SIP_VERSION" github.com/livekit/sip/cmd/livekit-sip \
  CGO_ENABLED=1 >/dev/null; then
  echo "warning: livekit-sip is not installed; the e2e SIP tests (-m e2e) cannot run" >&2
fi
