#!/usr/bin/env bash
# Builds livekit-sip from the unmodified public source archives in SOURCE_DIR (sip, and the
# media-sdk and protocol revisions its go.mod pins), for machines whose Go module proxy refuses
# them. Checksums are verified first; everything else comes from the Go module proxy.
# Usage: scripts/build_livekit_sip.sh SOURCE_DIR VERSION TARGET
# On failure the last line printed says why.
set -euo pipefail
src=$(cd "$1" && pwd)
version=$2
target=$3

fail() { echo "livekit-sip $version: $*"; exit 1; }

sip_archive="$src/sip-$version.tar.gz"
[ -f "$sip_archive" ] || fail "no $sip_archive"
(cd "$src" && sha256sum --check --strict --quiet SHA256SUMS) \
  || fail "checksum mismatch in $src (sha256sum -c SHA256SUMS)"

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
for archive in "$src"/*.tar.gz; do
  grep -q " $(basename "$archive")\$" "$src/SHA256SUMS" || fail "$archive is not in SHA256SUMS"
  tar -xzf "$archive" -C "$work"
done
for dir in sip media-sdk protocol; do
  [ -f "$work/$dir/go.mod" ] || fail "the archives in $src hold no $dir/go.mod"
done

cd "$work/sip"
go mod edit -replace github.com/livekit/media-sdk=../media-sdk \
  -replace github.com/livekit/protocol=../protocol
echo "building livekit-sip $version from $src"
CGO_ENABLED=1 GOFLAGS=-buildvcs=false go build -trimpath -o "$work/livekit-sip" ./cmd/livekit-sip \
  || fail "go build failed (cgo needs pkg-config libopus-dev libopusfile-dev libsoxr-dev)"
"$work/livekit-sip" --help >/dev/null 2>&1 || fail "the built executable does not run"
mkdir -p "$(dirname "$target")"
mv "$work/livekit-sip" "$target.tmp"
mv "$target.tmp" "$target"
echo "built $target"
