#!/usr/bin/env bash
# Builds the Docker Compose v2 CLI plugin from the Go module proxy, once per version, and installs
# it as ~/.docker/cli-plugins/docker-compose. `go install module@version` refuses this module (its
# go.mod has exclude directives), so it is built in a writable copy of the downloaded module.
# Usage: tests/deploy/install_compose.sh   (COMPOSE_VERSION overrides the pin)
set -euo pipefail
version=${COMPOSE_VERSION:-v2.40.3}
cache=${PERSONA_CACHE_DIR:-$HOME/.cache/persona-dispatcher}
target="$cache/bin/docker-compose-$version"
plugin="$HOME/.docker/cli-plugins/docker-compose"
if [ ! -x "$target" ]; then
  started=$SECONDS
  mkdir -p "$cache/bin" "$cache/log"
  log="$cache/log/docker-compose-$version-build.log"
  echo "building docker compose $version (about 3 minutes on two cores, once; log: $log)" >&2
  module_dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v2@$version" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
  cp -r "$module_dir" "$work/compose"
  chmod -R u+w "$work/compose"
  (
    cd "$work/compose"
    go mod download
    CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
      -o "$target.tmp" ./cmd
  ) >"$log" 2>&1 || { echo "error: docker compose $version did not build (log: $log)" >&2; exit 1; }
  mv "$target.tmp" "$target"
  echo "built docker compose $version in $((SECONDS - started)) s" >&2
fi
mkdir -p "$(dirname "$plugin")"
if ! cmp -s "$target" "$plugin"; then
  install -m 0755 "$target" "$plugin"
fi
