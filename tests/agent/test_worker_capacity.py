"""How many jobs the worker takes at once, and the options it is built with (no server)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from livekit.agents import AgentServer

from agent.worker import JobCapacity, JobEntrypoint, create_server
from config.agent_settings import load_agent_settings

pytestmark = pytest.mark.unit

LIVEKIT = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "s" * 32,
    "AGENT_STACK": "fake",
}


class FakeServer:
    def __init__(self) -> None:
        self.active_jobs: list[object] = []


class FakeRequest:
    """A job request whose acceptance takes until `started` is set (the job starting)."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.started = asyncio.Event()
        self.answer: str | None = None
        self.terminate: bool | None = None

    async def accept(self) -> None:
        self.answer = "accepted"
        await self.started.wait()
        self.server.active_jobs.append(self)

    async def reject(self, *, terminate: bool = True) -> None:
        self.answer, self.terminate = "rejected", terminate


async def test_a_burst_is_taken_up_to_max_jobs_counting_jobs_still_starting() -> None:
    """Twelve requests at once on an idle worker with room for ten: ten accepted while none has
    started yet, two refused without terminating, so livekit-server may offer them elsewhere."""
    server = FakeServer()
    capacity = JobCapacity(10)
    capacity.server = server  # type: ignore[assignment]
    requests = [FakeRequest(server) for _ in range(12)]
    tasks = [asyncio.create_task(capacity(r)) for r in requests]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert [r.answer for r in requests].count("accepted") == 10
    refused = [r for r in requests if r.answer == "rejected"]
    assert len(refused) == 2
    assert all(r.terminate is False for r in refused)
    for r in requests:
        r.started.set()
    await asyncio.gather(*tasks)
    assert len(server.active_jobs) == 10
    late = FakeRequest(server)
    await capacity(late)  # type: ignore[arg-type]
    assert late.answer == "rejected"


def options(server: AgentServer) -> dict[str, Any]:
    return {
        "threshold": server._load_threshold,
        "idle": server._num_idle_processes,
        "preload": server._preload_modules,
        "gated": server._request_fnc is not None,
    }


def test_worker_counts_jobs_itself_when_max_jobs_is_set() -> None:
    settings = load_agent_settings({**LIVEKIT, "AGENT_MAX_JOBS": "25"})
    server = create_server(settings)
    assert options(server) == {
        "threshold": math.inf,
        "idle": settings.idle_processes,
        "preload": [JobEntrypoint.__module__, "agent.warmup"],
        "gated": True,
    }


def test_worker_keeps_the_cpu_load_check_without_max_jobs() -> None:
    server = create_server(load_agent_settings(LIVEKIT))
    assert options(server)["threshold"] == 0.7
    assert options(server)["gated"] is False
