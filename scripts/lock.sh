#!/usr/bin/env bash
# Resolves the lock files from pyproject.toml's ranges: requirements/image.lock (what the image
# installs: the service and both model stacks) and requirements/dev.lock (that and the dev tools:
# what scripts/install_deps.sh installs for CI and developers). Universal (any platform, Python
# 3.11 and up) and hashed. Run after changing a dependency, and commit both files;
# `--upgrade` moves every pin to the newest version the ranges admit.
set -euo pipefail
cd "$(dirname "$0")/.."
compile() {  # output extras...
  local out=$1
  shift
  .venv/bin/uv pip compile pyproject.toml "${@/#/--extra=}" --universal --python-version 3.11 \
    --generate-hashes --quiet --custom-compile-command "scripts/lock.sh" -o "$out" "${UV_ARGS[@]}"
}
UV_ARGS=()
[ "${1:-}" = "--upgrade" ] && UV_ARGS=(--upgrade)
compile requirements/image.lock openai pipeline
compile requirements/dev.lock openai pipeline dev
