"""One real stack per test session (livekit-server, dispatcher, fake persona API)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from livekit import api

from devstack.agent_worker import AgentWorker, start_agent_worker
from devstack.logs import clear_logs
from devstack.processes import ROOT
from tests.harness.calls import SipCaller
from tests.harness.stack import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = ROOT / "var" / "log" / "integration"
    clear_logs(log_dir)
    s = start_stack(log_dir, tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def worker(stack: Stack) -> Iterator[AgentWorker]:
    """The agent worker (fake model stack) registered with the session's livekit-server."""
    w = start_agent_worker(stack.livekit, ROOT / "var" / "log" / "integration")
    yield w
    w.stop()


@pytest.fixture
def persona_api(stack: Stack) -> Iterator[Stack]:
    """The stack with the fake persona API reset to healthy before and after the test."""
    stack.persona_control()
    yield stack
    stack.persona_control()


@pytest.fixture
async def lk(stack: Stack) -> AsyncIterator[api.LiveKitAPI]:
    client = stack.api()
    yield client
    await client.aclose()


@pytest.fixture
async def callers() -> AsyncIterator[list[SipCaller]]:
    """SIP callers a test places (`place_sip_call`); each leaves its room afterwards."""
    joined: list[SipCaller] = []
    yield joined
    for c in joined:
        await c.leave()
