"""Fixtures for the agent's integration tests: a real livekit-server and the worker process.

The worker runs `python -m agent` with the fake model stack; its record of every LLM request and
spoken line is `agent_worker.env["AGENT_FAKE_LLM_LOG"]`, its transcript `TRANSCRIPT_PATH` (read
them with `tests.agent.helpers.wait_for_records`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from livekit import api

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.services import LiveKitServer, start_livekit_server
from tests.harness.calls import livekit_api


@pytest.fixture(scope="module")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    server = start_livekit_server(log_path=tmp_path_factory.mktemp("livekit") / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def agent_worker(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentWorker]:
    """One worker for the module. Its persona wait (5 s) is what the no-persona test sits
    through, and the margin a persona written after the agent connected has on a busy machine."""
    worker = start_agent_worker(
        livekit_server, tmp_path_factory.mktemp("agent"), AGENT_PERSONA_WAIT_S="5"
    )
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def fake_llm_log(agent_worker: AgentWorker) -> Path:
    return Path(agent_worker.env["AGENT_FAKE_LLM_LOG"])


@pytest.fixture
def transcript_log(agent_worker: AgentWorker) -> Path:
    return Path(agent_worker.env["TRANSCRIPT_PATH"])


@pytest.fixture
async def lk_api(livekit_server: LiveKitServer) -> AsyncIterator[api.LiveKitAPI]:
    lk = livekit_api(livekit_server)
    try:
        yield lk
    finally:
        await lk.aclose()


@pytest.fixture
def room_name() -> str:
    return f"call-{uuid.uuid4().hex[:8]}"
