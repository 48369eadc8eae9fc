#!/usr/bin/env bash
# Installs what the tests need (virtualenv, livekit-server, ...) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
exec .venv/bin/pytest "$@"
