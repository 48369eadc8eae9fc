#!/usr/bin/env bash
# The main job on its embedded default: local dev livekit-server + dispatcher, file personas.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
exec .venv/bin/python -m scripts.dev "$@"
