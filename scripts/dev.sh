#!/usr/bin/env bash
# The main job on its embedded default: Redis, local dev livekit-server, livekit-sip for a softphone
# on the LAN, dispatcher and agent worker, file personas (options: scripts/dev.sh --help).
set -euo pipefail
cd "$(dirname "$0")/.."
deps=()
for arg in "$@"; do
  [ "$arg" = "--no-sip" ] && deps=(--no-sip)
done
bash scripts/install_deps.sh "${deps[@]}"
exec .venv/bin/python -m scripts.dev "$@"
