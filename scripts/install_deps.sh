#!/usr/bin/env bash
# Installs everything the service and its tests need, idempotently:
#   - a virtualenv in .venv with the project and the locked versions of its dev extras;
#   - the pinned livekit-server, built once with `go install` and cached outside the checkout;
#   - the pinned FerretDB (the tests' MongoDB), built from the Go module proxy, cached too;
#   - for SIP calls and scaling out: Debian's redis-server, sipp (sip-tester), haproxy and the cgo
#     libraries livekit-sip links (apt-get, as root, only when one is missing), and the pinned
#     livekit-sip, cached too:
#     `go install`, or where the Go module proxy refuses it, built from LIVEKIT_SIP_SOURCE.
# Usage: scripts/install_deps.sh [--python-only | --no-sip]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# The pins live in provisioning/server_config.py; the environment may override them.
pin() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" provisioning/server_config.py; }
LIVEKIT_SERVER_VERSION=${LIVEKIT_SERVER_VERSION:-$(pin LIVEKIT_SERVER_VERSION)}
LIVEKIT_SIP_VERSION=${LIVEKIT_SIP_VERSION:-$(pin LIVEKIT_SIP_VERSION)}
cache=${PERSONA_CACHE_DIR:-$HOME/.cache/persona-dispatcher}
mkdir -p "$cache/bin"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml requirements/dev.lock | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  started=$SECONDS
  .venv/bin/pip install --quiet --upgrade pip
  # The locked versions (requirements/dev.lock, from scripts/lock.sh), then the project over them
  # (which installs nothing the lock satisfies; a dependency added to pyproject.toml but not yet
  # locked still comes, and tests/test_lock.py says to run scripts/lock.sh).
  .venv/bin/pip install --quiet --require-hashes -r requirements/dev.lock
  .venv/bin/pip install --quiet -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
  echo "installed the Python environment in $((SECONDS - started)) s" >&2
fi
[ "${1:-}" = "--python-only" ] && exit 0

# go install builds from the Go module proxy; the result is cached by version.
install_go_binary() {  # name version module [env...]
  local name=$1 version=$2 module=$3 target="$cache/bin/$1-$2"
  shift 3
  if [ ! -x "$target" ]; then
    echo "building $name $version (takes a few minutes, once)" >&2
    local gobin started=$SECONDS
    gobin=$(mktemp -d)
    if ! env "$@" GOBIN="$gobin" GOFLAGS=-buildvcs=false go install "$module@$version"; then
      echo "go install could not build $name $version" >&2
      rm -rf "$gobin"
      return 1
    fi
    mv "$gobin"/* "$target.tmp"
    mv "$target.tmp" "$target"
    rm -rf "$gobin"
    echo "built $name $version with go install in $((SECONDS - started)) s" >&2
  fi
  echo "$target"
}
install_go_binary livekit-server "$LIVEKIT_SERVER_VERSION" github.com/livekit/livekit-server/cmd/server \
  >/dev/null || { echo "error: livekit-server $LIVEKIT_SERVER_VERSION could not be built" >&2; exit 1; }

# FerretDB: the MongoDB (wire protocol, over SQLite) of the call-store tests, cached by version.
FERRETDB_VERSION=${FERRETDB_VERSION:-$(pin FERRETDB_VERSION)}
ferretdb_target="$cache/bin/ferretdb-$FERRETDB_VERSION"
if [ ! -x "$ferretdb_target" ]; then
  started=$SECONDS
  mkdir -p "$cache/log"
  ferretdb_log="$cache/log/ferretdb-$FERRETDB_VERSION-build.log"
  echo "building ferretdb $FERRETDB_VERSION (a minute or two, once; log: $ferretdb_log)" >&2
  bash scripts/build_ferretdb.sh "$FERRETDB_VERSION" "$ferretdb_target" >"$ferretdb_log" 2>&1 \
    || { echo "error: $(tail -n 1 "$ferretdb_log") (full log: $ferretdb_log)" >&2; exit 1; }
  echo "built ferretdb $FERRETDB_VERSION in $((SECONDS - started)) s" >&2
fi

[ "${1:-}" = "--no-sip" ] && exit 0

# ---- SIP and scaling out: Redis, sipp, HAProxy, livekit-sip ------------------------------------
# Debian packages: redis-server (livekit-server's SIP API and distributed mode, livekit-sip and
# the dispatchers' shared persona cache use it), sip-tester (sipp, the SIP client of the e2e
# tests), haproxy (the load balancer in front of dispatcher replicas, in the distributed tests and
# benchmarks) and what livekit-sip's cgo audio code links against.
sip_packages=(redis-server sip-tester haproxy pkg-config libopus-dev libopusfile-dev libsoxr-dev)
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
# The Debian package starts a system-wide redis on 6379, which nothing here uses: the tests start
# their own on free ports, the dev command its own on 6380.

# livekit-sip: `go install` first. The Go module proxy reachable from some machines refuses
# github.com/livekit/sip and two modules it pins (media-sdk, protocol); there it is built from the
# unmodified public sources in LIVEKIT_SIP_SOURCE (checksums verified), cached by version too.
sip_source=${LIVEKIT_SIP_SOURCE:-$root/../shared/third_party/livekit-sip}
sip_target="$cache/bin/livekit-sip-$LIVEKIT_SIP_VERSION"
if [ ! -x "$sip_target" ]; then
  started=$SECONDS
  mkdir -p "$cache/log"
  sip_log="$cache/log/livekit-sip-$LIVEKIT_SIP_VERSION-build.log"
  : >"$sip_log"
  echo "building livekit-sip $LIVEKIT_SIP_VERSION (takes a few minutes, once; log: $sip_log)" >&2
  if install_go_binary livekit-sip "$LIVEKIT_SIP_VERSION" github.com/livekit/sip/cmd/livekit-sip \
    CGO_ENABLED=1 >>"$sip_log" 2>&1; then
    how="with go install"
  elif [ -f "$sip_source/SHA256SUMS" ]; then
    bash scripts/build_livekit_sip.sh "$sip_source" "$LIVEKIT_SIP_VERSION" "$sip_target" \
      >>"$sip_log" 2>&1 || {
      echo "error: $(tail -n 1 "$sip_log") (full log: $sip_log)" >&2
      exit 1
    }
    how="from $sip_source"
  else
    echo "error: go install refused livekit-sip $LIVEKIT_SIP_VERSION and there is no source" \
      "in $sip_source (set LIVEKIT_SIP_SOURCE; log: $sip_log)" >&2
    exit 1
  fi
  echo "built livekit-sip $LIVEKIT_SIP_VERSION $how in $((SECONDS - started)) s" >&2
fi

# ---- Prometheus and promtool: the alert rules' checks and the real-Prometheus test ------------
# Debian's prometheus package carries both; installing it would start a system service, so its two
# binaries are taken out of the .deb (`dpkg-deb -x`) and cached by the version pinned in
# provisioning/server_config.py (the one Debian bookworm ships).
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-$(pin PROMETHEUS_VERSION)}
if [ ! -x "$cache/bin/promtool-$PROMETHEUS_VERSION" ] || [ ! -x "$cache/bin/prometheus-$PROMETHEUS_VERSION" ]; then
  prom_tmp=$(mktemp -d)
  (cd "$prom_tmp" && { apt-get download prometheus || { apt-get update -qq && apt-get download prometheus; }; }) >&2
  deb=$(ls "$prom_tmp"/prometheus_*.deb)
  case "$deb" in
    */prometheus_"$PROMETHEUS_VERSION"+*) ;;
    *) echo "error: Debian offers $(basename "$deb"), not prometheus $PROMETHEUS_VERSION" >&2; exit 1 ;;
  esac
  dpkg-deb -x "$deb" "$prom_tmp/x"
  for b in prometheus promtool; do
    cp "$prom_tmp/x/usr/bin/$b" "$cache/bin/$b-$PROMETHEUS_VERSION.tmp"
    mv "$cache/bin/$b-$PROMETHEUS_VERSION.tmp" "$cache/bin/$b-$PROMETHEUS_VERSION"
  done
  rm -rf "$prom_tmp"
  echo "took prometheus and promtool $PROMETHEUS_VERSION from Debian's package" >&2
fi
