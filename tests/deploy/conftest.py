"""Each run of tests/deploy/ keeps its own logs and figures in var/log/deploy/."""

from __future__ import annotations

import pytest

from devstack.logs import clear_logs
from tests.deploy.compose import LOG_DIR


@pytest.fixture(scope="session", autouse=True)
def fresh_log_dir() -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    clear_logs(LOG_DIR, "*.log", "*.jsonl")
