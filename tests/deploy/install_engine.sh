#!/usr/bin/env bash
# Installs and starts what tests/deploy/ runs on: Debian's Docker engine (docker.io), debootstrap
# (the stand-in images' root filesystem) and the Compose v2 CLI plugin; then builds the stand-ins
# for the upstream images the compose files name (tests/deploy/standins/build.sh). Idempotent:
# every step is skipped when its result is there, the slow ones are cached by version outside the
# checkout. Usage: tests/deploy/install_engine.sh   (as root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PERSONA_CACHE_DIR:-$HOME/.cache/persona-dispatcher}
mkdir -p "$cache/log"

packages=(docker.io debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# dockerd: started here when nothing answers on its socket (no init system starts it on these
# machines). Every service of the compose files uses the host's network and the images are built
# on it too, so the engine makes no bridge and touches no iptables.
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: $cache/log/dockerd.log)" >&2
  setsid dockerd --bridge=none --iptables=false --ip-masq=false \
    >>"$cache/log/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || {
    echo "error: dockerd did not answer within 60 s (log: $cache/log/dockerd.log)" >&2
    exit 1
  }
fi

bash "$here/install_compose.sh"
bash "$here/standins/build.sh"
