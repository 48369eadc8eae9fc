#!/usr/bin/env bash
# Builds FerretDB (a MongoDB wire-protocol server over an embedded SQLite store, pure Go) from the
# Go module proxy: the tests' MongoDB. `go install ...@VERSION` builds a binary that panics at
# start, because the module ships without build/version/version.txt; so the module is downloaded,
# copied somewhere writable, given that file, and built there.
# Usage: scripts/build_ferretdb.sh VERSION TARGET
# On failure the last line printed says why.
set -euo pipefail
version=$1
target=$2

fail() { echo "ferretdb $version: $*"; exit 1; }

module=github.com/FerretDB/FerretDB
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
dir=$(go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -d "$dir" ] || fail "go mod download $module@$version found nothing"
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
echo "$version" >"$work/src/build/version/version.txt"
cd "$work/src"
echo "building ferretdb $version"
CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o "$work/ferretdb" ./cmd/ferretdb \
  || fail "go build failed"
"$work/ferretdb" --version >/dev/null 2>&1 || fail "the built executable does not run"
mkdir -p "$(dirname "$target")"
mv "$work/ferretdb" "$target.tmp"
mv "$target.tmp" "$target"
echo "built $target"
